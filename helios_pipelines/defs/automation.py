"""Schedules and sensors: keep the tenant partitions in step with the registry and retrain."""

from __future__ import annotations

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from helios_pipelines.defs.assets import ALL_ASSETS
from helios_pipelines.defs.partitions import tenant_partitions
from helios_pipelines.defs.resources import TenantRegistryResource

training_job = define_asset_job(
    "tenant_training_job",
    selection=ALL_ASSETS,
    description="The whole Helios loop for one tenant: fetch, validate, features, train, promote, package.",
)


def partition_changes(registered: list[str], existing: list[str]) -> tuple[list[str], list[str]]:
    """(to add, to remove) so the partitions equal the registry's valid tenants."""
    return sorted(set(registered) - set(existing)), sorted(set(existing) - set(registered))


@sensor(default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60)
def tenant_registry_sensor(context: SensorEvaluationContext, tenants: TenantRegistryResource):
    """A tenant added to (or removed from) the registry becomes (or stops being) a partition, and a
    new tenant gets its first training run, without a redeploy."""
    registry = tenants.registry()
    for error in registry.errors:
        context.log.error(str(error))
    existing = context.instance.get_dynamic_partitions(tenant_partitions.name)
    added, removed = partition_changes(registry.ids, existing)
    if not added and not removed:
        return SkipReason(f"partitions match the registry ({len(existing)} tenants)")
    requests = [tenant_partitions.build_add_request(added)] if added else []
    if removed:
        requests.append(tenant_partitions.build_delete_request(removed))
    return SensorResult(
        run_requests=[RunRequest(job_name=training_job.name, partition_key=t, run_key=f"onboard-{t}") for t in added],
        dynamic_partitions_requests=requests,
    )
