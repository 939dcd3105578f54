"""A scorecard after every event, without anybody asking (#19.1): a sensor sees a tenant's scheduled
event occurrence end (one of its YAML's, or one posted to the service and kept in the store) or one of
its learned recurring peaks' (``core.ml.peaks``, kept in its champion planner) and launches the
scorecard job for it; the job does what `helios events
scorecard` does (``core.ops.scorecard_store.score_event``): store the scorecard, log it to MLflow with its
plot, queue the summary line for the tenant's alert channels.

No ``from __future__ import annotations`` here: Dagster reads the op's parameter annotations at
definition time.
"""

import json
import time

import pandas as pd
from dagster import (
    Config,
    DefaultSensorStatus,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    job,
    op,
    sensor,
)

from helios_pipelines.core.ml.peaks import PeakSchedule
from helios_pipelines.core.ml.tracking import CHAMPION, registered_model_name
from helios_pipelines.core.ops import scorecard_store
from helios_pipelines.core.sources import make_source
from helios_pipelines.defs.automation import LiveAccuracyResource
from helios_pipelines.defs.partitions import tenant_partitions
from helios_pipelines.defs.resources import MetricsSourceResource, MLflowResource, TenantRegistryResource

# Events that ended this long ago or less are scored when the sensor first sees them: a week covers a
# Dagster daemon that was down over a weekend, and a first deployment scores last week's events.
LOOKBACK = pd.Timedelta("7D")
# The learned peaks change only when a new planner is promoted (a retrain, at most daily): the sensor
# keeps each tenant's in its cursor and asks the registry again after this long, not on every tick.
PEAKS_REFRESH_SECONDS = 3600


def learned_schedules(cursor: str | None, tenant_ids: list[str], tracker, wall_clock: float) -> tuple[dict, str]:
    """tenant id -> its champion planner's learned peaks (a PeakSchedule, or None), read from the registry
    for tenants not read in the last ``PEAKS_REFRESH_SECONDS``, and the cursor that remembers them."""
    kept = json.loads(cursor) if cursor else {}
    fresh = {}
    for tenant_id in tenant_ids:
        entry = kept.get(tenant_id)
        if entry is None or wall_clock - entry["read"] >= PEAKS_REFRESH_SECONDS:
            schedule = scorecard_store.learned_schedule(tracker, tenant_id)
            entry = {"read": wall_clock, "peaks": schedule.to_dict() if schedule else None}
        fresh[tenant_id] = entry
    schedules = {tenant_id: PeakSchedule.from_dict(entry["peaks"]) for tenant_id, entry in fresh.items()}
    return schedules, json.dumps(fresh, sort_keys=True)


class FinishedEvent(Config):
    event: str
    end: str  # the occurrence's end (ISO, UTC): the clock the scorecard is computed at


@op
def score_finished_event(context: OpExecutionContext, config: FinishedEvent, tenants: TenantRegistryResource,
                         mlflow_tracking: MLflowResource, live_accuracy: LiveAccuracyResource) -> Output[None]:
    tenant = tenants.tenant(context.partition_key)
    end = pd.Timestamp(config.end)
    store = live_accuracy.open_store()
    try:
        published = scorecard_store.score_event(tenant, config.event, end, make_source(tenant, now=end),
                                                mlflow_tracking.tracker(), store)
    finally:
        store.close()
    card = published.card
    context.log.info(card.summary())
    return Output(None, metadata={  # shown on the run's page in the Dagster UI
        "event": card.event, "start": card.start, "end": card.end, "service": card.service,
        "mlflow_run": published.mlflow_run or "", "summary": MetadataValue.md(card.summary()),
        "alert_channels": published.channels if published.channels is not None else 0,
        "alert_error": published.alert_error or "",
        **{k: float(v) for k, v in card.savings.items()},
    })


@job(partitions_def=tenant_partitions, tags={"helios/kind": "event_scorecard"})
def scorecard_job():
    score_finished_event()


@sensor(job=scorecard_job, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=300)
def event_end_sensor(context: SensorEvaluationContext, tenants: TenantRegistryResource,
                     metrics_source: MetricsSourceResource, live_accuracy: LiveAccuracyResource,
                     mlflow_tracking: MLflowResource):
    """One scorecard run per finished occurrence of a tenant's scheduled events (YAML or posted) or of
    its learned peaks (those no scheduled event covers) that has no stored scorecard; the run key names
    the occurrence, so Dagster launches it once however often this runs. A tenant without a champion planner yet (a new tenant, not trained) waits: a run
    launched now could only fail, and its used run key would keep the event from being scored later."""
    now = metrics_source.window_end()
    partitions = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    registry = tenants.registry()
    scaled = [tenant for tenant in map(registry.get, registry.ids) if tenant.id in partitions and tenant.scaling]
    tracker = mlflow_tracking.tracker()
    learned, cursor = learned_schedules(context.cursor, [t.id for t in scaled], tracker, time.time())
    context.update_cursor(cursor)
    store = live_accuracy.open_store()
    try:
        finished = [
            (tenant, occurrence)
            for tenant in scaled
            for occurrence in scorecard_store.finished_occurrences(
                tenant, now, LOOKBACK, scorecard_store.posted_events(store, tenant.id), learned[tenant.id])
            if not scorecard_store.scored(store, tenant, occurrence)
        ]
    finally:
        store.close()
    # The registry is asked whether the planner is trained only about tenants with an event to score.
    untrained = sorted(tenant_id for tenant_id in {t.id for t, _ in finished}
                       if tracker.version_by_alias(registered_model_name(tenant_id, "capacity_planner"), CHAMPION) is None)
    finished = [(tenant, occurrence) for tenant, occurrence in finished if tenant.id not in untrained]
    requests = [
        RunRequest(
            run_key=f"scorecard:{tenant.id}:{occurrence.name}:{occurrence.start.isoformat()}",
            partition_key=tenant.id,
            run_config={"ops": {"score_finished_event": {"config": {
                "event": occurrence.name, "end": occurrence.end.isoformat()}}}},
            tags={"helios/event": occurrence.name},
        )
        for tenant, occurrence in finished
    ]
    waiting = f"; not trained yet, so not scored until they are: {', '.join(untrained)}" if untrained else ""
    return requests or SkipReason(f"no event ended in the {LOOKBACK.days} days before {now:%Y-%m-%d %H:%M} UTC "
                                  f"without a scorecard{waiting}")
