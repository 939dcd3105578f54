"""Schedules and sensors: keep the tenant partitions in step with the registry, retrain each tenant on
its cadence and when its champions stop fitting, and rebuild its Bento when a champion changes.

No ``from __future__ import annotations`` here: Dagster reads the resource parameters' annotations at
definition time and needs the classes, not strings.
"""

import json
from datetime import timedelta

import pandas as pd
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    ConfigurableResource,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from helios_pipelines.core.ml.drift import (
    Profile,
    RetrainingReasons,
    decayed_metrics,
    drifted_metrics,
    profile_window,
)
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, VersionTags, registered_model_name
from helios_pipelines.core.tenants import TenantConfig, TenantRegistry
from helios_pipelines.defs.assets import ALL_ASSETS, tenant_bento
from helios_pipelines.defs.partitions import tenant_partitions
from helios_pipelines.defs.resources import MetricsSourceResource, MLflowResource, TenantRegistryResource

training_job = define_asset_job(
    "tenant_training_job",
    selection=ALL_ASSETS,
    description="The whole Helios loop for one tenant: fetch, validate, features, train, promote, package.",
)
bento_job = define_asset_job(
    "tenant_bento_job",
    selection=AssetSelection.assets(tenant_bento),
    description="Repack a tenant's Bento from its current champions (after a promotion or a rollback).",
)
# How much recent data the drift check compares with the champion's training window: one day alone
# swings with the weekday (a weekday lacks the weekend's top decile), three days mostly do not.
DRIFT_WINDOW = timedelta(days=3)
TRIGGER_TAG = "helios/trigger"


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
        run_requests=[
            RunRequest(job_name=training_job.name, partition_key=t, run_key=f"onboard-{t}", tags={TRIGGER_TAG: "onboarding"})
            for t in added
        ],
        dynamic_partitions_requests=requests,
    )


# ---- retraining on each tenant's cadence ---------------------------------------------------------
def schedule_name(tenant_id: str) -> str:
    return "retrain_" + tenant_id.replace("-", "_")


def retraining_schedule(tenant: TenantConfig) -> ScheduleDefinition:
    """The tenant's ``training.cron`` (UTC) as a schedule of the training job for its partition."""

    @schedule(
        name=schedule_name(tenant.id),
        cron_schedule=tenant.training.cron,
        execution_timezone="UTC",
        job=training_job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Retrain {tenant.name} ({tenant.id}) on its configured cadence.",
        tags={"customer": tenant.id},
    )
    def _retrain(context: ScheduleEvaluationContext):
        # A tenant removed from the registry stays scheduled until the next reload: skip it then.
        if not context.instance.has_dynamic_partition(tenant_partitions.name, tenant.id):
            return SkipReason(f"tenant '{tenant.id}' is not a partition (removed from the registry?)")
        return RunRequest(partition_key=tenant.id, tags={TRIGGER_TAG: "schedule"})

    return _retrain


def retraining_schedules(registry: TenantRegistry) -> list[ScheduleDefinition]:
    """One schedule per tenant, built when the code location loads. A tenant added later is onboarded
    by ``tenant_registry_sensor`` at once and gets its schedule at the next reload."""
    return [retraining_schedule(registry.get(tenant_id)) for tenant_id in registry.ids]


# ---- rebuilding a Bento when a champion changes ---------------------------------------------------
def last_packing(context: SensorEvaluationContext, tenant_id: str) -> tuple[str | None, int | None]:
    """The BentoML model tag of the tenant's latest ``tenant_bento`` materialisation and that event's
    storage id (None, None before the first)."""
    found = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("tenant_bento"), asset_partitions=[tenant_id]), limit=1
    ).records
    if not found:
        return None, None
    entry = found[0].asset_materialization.metadata.get("bento_model")
    return (entry.value if entry is not None else None), found[0].storage_id


@sensor(job=bento_job, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=120)
def champion_change_sensor(context: SensorEvaluationContext, tenants: TenantRegistryResource, mlflow_tracking: MLflowResource):
    """Repack a tenant's Bento when one of its champions changes (a manual promotion or a rollback;
    a training run packs its own). The cursor holds every tenant's champion versions, so the event
    log is read only for tenants whose champions moved since the last evaluation."""
    from serving.packaging import PackagingError, bento_model_name, bundle_version, champion_pins

    seen = json.loads(context.cursor) if context.cursor else {}
    registry, tracker = tenants.registry(), mlflow_tracking.tracker()
    partitions = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    current, requests = {}, []
    for tenant_id in registry.ids:
        if tenant_id not in partitions:
            continue
        tenant = registry.get(tenant_id)
        try:
            pins = champion_pins(tenant, tracker)
        except PackagingError:
            continue  # not every model has a champion yet: nothing to pack
        current[tenant_id] = {pin["name"]: pin["version"] for pin in pins.values()}
        if seen.get(tenant_id) == current[tenant_id]:
            continue
        wanted = f"{bento_model_name(tenant_id)}:{bundle_version(pins, tenant)}"
        packed, packing = last_packing(context, tenant_id)
        if packed != wanted:
            context.log.info(f"{tenant_id}: champions {current[tenant_id]} are not packed yet ({wanted})")
            # Dagster never launches a run key its sensor used before: keyed by the model alone, champions
            # promoted again after a rollback would never be repacked. Keyed by the packing they follow
            # too, a re-evaluation of the same change (a daemon restarted mid-tick) still asks once.
            requests.append(RunRequest(partition_key=tenant_id, run_key=f"bento-{wanted}-after-{packing}",
                                       tags={TRIGGER_TAG: "champion_change"}))
    return SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True))


# ---- retraining when the champions stop fitting ---------------------------------------------------
class LiveAccuracyResource(ConfigurableResource):
    """Live MASE per forecast metric from the prediction feedback loop in the Helios store:
    ``database_url``, or the embedded store under HELIOS_HOME (the local setup, which the local
    service records into), migrated on first use as the service does."""

    database_url: str | None = None

    def open_store(self):
        """The Helios store (the embedded one migrated in place); the caller closes it."""
        from helios_pipelines.core.ops.store import Store, database_url

        store = Store(self.database_url or database_url())
        if not self.database_url:
            from helios_pipelines.core.ops.migrations import upgrade

            upgrade(store.url)
        return store

    def live_mase(self, tenant_id: str, now: pd.Timestamp) -> dict[str, float]:
        """The worst horizon's MASE of each metric over the last day."""
        from helios_pipelines.core.ops.feedback import live_accuracy
        from helios_pipelines.core.ops.store import UnknownCustomerError

        store = self.open_store()
        try:
            rows = live_accuracy(store, tenant_id, window=timedelta(days=1), now=now.to_pydatetime())
        except UnknownCustomerError:
            return {}  # not served yet: no live predictions to judge by
        finally:
            store.close()
        worst: dict[str, float] = {}
        for row in rows:
            if row.mase is not None:
                worst[row.metric] = max(worst.get(row.metric, 0.0), row.mase)
        return worst


def champion_windows(tenant: TenantConfig, tracker: Tracker) -> dict[str, dict]:
    """metric -> the forecast champion's version, training window and backtest MASE."""
    found = {}
    for metric in tenant.forecast_metrics:
        champion = tracker.version_by_alias(registered_model_name(tenant.id, "forecaster", metric), CHAMPION)
        tags = champion.tags if champion else VersionTags()
        if tags.data_start is not None and tags.data_end is not None:
            found[metric] = {
                "version": champion.version,
                "window": [tags.data_start, tags.data_end],
                "backtest_mase": float((tags.backtest or {}).get("mase", float("nan"))),
            }
    return found


@sensor(job=training_job, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=3600)
def retraining_need_sensor(
    context: SensorEvaluationContext,
    tenants: TenantRegistryResource,
    metrics_source: MetricsSourceResource,
    mlflow_tracking: MLflowResource,
    live_accuracy: LiveAccuracyResource,
):
    """Retrain a tenant, out of schedule, when a forecast metric's recent days drifted from the window
    its champion was trained on, or its live MASE decayed past its backtest. The cursor keeps each
    champion's training-window profile, so that window is fetched once per champion."""
    profiles = json.loads(context.cursor) if context.cursor else {}
    registry, tracker = tenants.registry(), mlflow_tracking.tracker()
    partitions = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    now = metrics_source.window_end()
    kept, requests = {}, []
    for tenant_id in registry.ids:
        if tenant_id not in partitions:
            continue
        tenant = registry.get(tenant_id)
        champions = champion_windows(tenant, tracker)
        if not champions:
            continue
        source = metrics_source.source(tenant)
        reference = {}
        for metric, champion in champions.items():
            key = f"{metric}@{champion['version']}"
            cached = profiles.get(tenant_id, {}).get(key)
            if cached is None:
                start, end = (pd.Timestamp(t) for t in champion["window"])
                cached = {k: p.to_dict() for k, p in profile_window(source.fetch(start, end), [metric]).items()}.get(metric)
            if cached is not None:
                reference[metric] = Profile.from_dict(cached)
                kept.setdefault(tenant_id, {})[key] = cached
        recent = source.fetch(now - DRIFT_WINDOW, now) if reference else pd.DataFrame()
        reasons = RetrainingReasons(
            drifted=drifted_metrics(reference, recent),
            decayed=decayed_metrics(live_accuracy.live_mase(tenant_id, now), {m: c["backtest_mase"] for m, c in champions.items()}),
        )
        if reasons:
            context.log.info(f"{tenant_id}: {reasons.describe()}")
            champion_versions = "-".join(f"{m}@{c['version']}" for m, c in sorted(champions.items()))
            requests.append(RunRequest(
                partition_key=tenant_id,
                # Once per champion set and day: a retrain that keeps the champion does not loop.
                run_key=f"refit-{tenant_id}-{champion_versions}-{now.date()}",
                tags={TRIGGER_TAG: "drift_or_decay", "helios/reasons": reasons.describe()[:255]},
            ))
    return SensorResult(run_requests=requests, cursor=json.dumps(kept, sort_keys=True))


AUTOMATION_SENSORS = [tenant_registry_sensor, champion_change_sensor, retraining_need_sensor]
