"""Which forecaster and planner score an event: the ones Helios had before it started.

A scorecard says what Helios' recommendations were worth, so it must grade forecasts Helios could have
made then. The champion at scoring time may have been trained after the event (a retrain that landed
during a two-day launch, a scorecard written days later, `make demo` training today and scoring last
Saturday's tournament): its fit saw the event's own actuals, and its replayed forecasts look better than
any Helios published. So an event is scored with the latest promoted version of each model whose
training window ended by the event's start; when there is none (the tenant was first trained after the
event), with the champion's kind refitted on the tenant's training window ending an hour before the
event and a planner learned from the same window, as ``bench/event_scorecards.py`` does. Either way
the scorecard says which (``Scorecard.scored_with``).

A version serves from its promotion to the next one; a long event that spans a retrain is scored with
the version from before it throughout (the forecasts after the retrain are graded as the earlier model
would have made them: never better than Helios could know).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from helios_pipelines.core.ml.events import Occurrence
from helios_pipelines.core.ml.tracking import (
    CHAMPION,
    RegisteredVersion,
    Tracker,
    load_helios_model,
    registered_model_name,
)
from helios_pipelines.core.tenants import TenantConfig

# A refit stands for the retrain that would have run before the event: its window ends this long before.
REFIT_BEFORE = pd.Timedelta("1h")


@dataclass(frozen=True)
class ScoringModels:
    forecaster: object
    planner: object
    scored_with: dict[str, str]  # "forecaster" / "planner" -> which version or refit, and why


def _utc(text: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def served_before(tracker: Tracker, name: str, start: pd.Timestamp) -> RegisteredVersion | None:
    """The latest version of ``name`` that was promoted (by the pipeline or a reviewer), not rolled
    back, and trained on data ending by ``start``."""
    def promoted(v: RegisteredVersion) -> bool:
        return not v.tags.rolled_back and bool((v.tags.promotion or {}).get("promoted")
                                               or (v.tags.review or {}).get("action") == "promote")

    found = [v for v in tracker.versions(name) if promoted(v) and v.tags.data_end and _utc(v.tags.data_end) <= start]
    return max(found, key=lambda v: int(v.version), default=None)


def _described(version: RegisteredVersion) -> str:
    return f"{version.name} v{version.version} (trained on data to {_utc(version.tags.data_end):%Y-%m-%d %H:%M} UTC)"


def refit_forecaster(tenant: TenantConfig, metric: str, kind: str, train: pd.DataFrame):
    """A ``kind`` forecaster of ``metric`` fitted on ``train`` as training fits one: with the drivers'
    history, for a forecaster that reads its drivers (``bench/event_scorecards.py`` fits this way too)."""
    from helios_pipelines.core.ml.models.base import fit_forecaster
    from helios_pipelines.core.ml.training import forecaster_for

    return fit_forecaster(forecaster_for(tenant, metric, kind), train[metric].astype(float), train)


def models_before(tenant: TenantConfig, occurrence: Occurrence, metric: str, champion_planner, tracker: Tracker,
                  source) -> ScoringModels:
    """The forecaster of ``metric`` and the planner Helios had before ``occurrence`` started (module
    docstring). A refit fits the champion forecaster's kind and keeps ``champion_planner``'s learned
    peaks (they named the occurrence)."""
    from helios_pipelines.core.ml.capacity_learning import learn_fleet_dicts
    from helios_pipelines.core.ml.models.capacity import CapacityPlanner
    from helios_pipelines.core.sources.simulator import history_window

    forecaster_name = registered_model_name(tenant.id, "forecaster", metric)
    planner_name = registered_model_name(tenant.id, "capacity_planner")
    forecaster_version = served_before(tracker, forecaster_name, occurrence.start)
    planner_version = served_before(tracker, planner_name, occurrence.start)
    forecaster = planner = train = None
    scored_with = {}
    trained_at = (occurrence.start - REFIT_BEFORE).floor(tenant.step_timedelta)
    refit = (f"refitted on the {tenant.training.history_days} days to {trained_at:%Y-%m-%d %H:%M} UTC: no version "
             f"was trained before the event")
    if forecaster_version is not None:
        forecaster = load_helios_model(forecaster_name, forecaster_version.version, tracker)
        scored_with["forecaster"] = _described(forecaster_version)
    if planner_version is not None:
        planner = load_helios_model(planner_name, planner_version.version, tracker)
        scored_with["planner"] = _described(planner_version)
    if forecaster is None or planner is None:
        train = source.fetch(*history_window(tenant, trained_at))
    if forecaster is None:
        kind = tracker.version_by_alias(forecaster_name, CHAMPION).tags.kind
        forecaster = refit_forecaster(tenant, metric, kind, train)
        scored_with["forecaster"] = f"{kind} forecaster {refit}"
    if planner is None:
        planner = CapacityPlanner.from_tenant(tenant, learn_fleet_dicts(tenant, train, source), champion_planner.peaks)
        scored_with["planner"] = f"capacity planner {refit}"
    return ScoringModels(forecaster, planner, scored_with)
