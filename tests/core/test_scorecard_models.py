"""An event is scored with the forecaster and planner Helios had before it started (#19.1): never with a
champion whose fit saw the event's own actuals."""

from __future__ import annotations

import pandas as pd
import pytest

from helios_pipelines.core.ml.models.capacity import CapacityPlanner
from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, VersionTags, registered_model_name
from helios_pipelines.core.ml.training import forecaster_for
from helios_pipelines.core.ops.scorecard import find_occurrence
from helios_pipelines.core.ops.scorecard_models import models_before
from helios_pipelines.core.sources.simulator import Simulator
from helios_pipelines.core.tenants import TenantConfig
from tests.conftest import AS_OF

PROMOTED = {"promoted": True, "reason": "test"}


@pytest.fixture
def arena_registry(arena, mlflow_uri):
    return arena, Tracker(mlflow_uri)


def register(tracker: Tracker, arena, data_end: str, champion: bool) -> tuple[str, str]:
    """A promoted forecaster and planner trained on data ending at ``data_end``."""
    versions = []
    with tracker.start_run("arena", f"trained to {data_end}"):
        for model, name in [
            (SeasonalNaive(step=arena.step_timedelta, max_horizon=12, metric="concurrent_users").fit(
                pd.Series([1.0] * 300, index=pd.date_range(end=data_end, periods=300, freq="5min"))),
             registered_model_name("arena", "forecaster", "concurrent_users")),
            (CapacityPlanner.from_tenant(arena), registered_model_name("arena", "capacity_planner")),
        ]:
            version = tracker.log_model(model, name, tags=VersionTags(data_end=data_end, promotion=PROMOTED))
            if champion:
                tracker.set_alias(name, CHAMPION, version.version)
            versions.append(version.version)
    return versions[0], versions[1]


def test_the_version_promoted_before_the_event_scores_it_not_a_champion_trained_after(arena_registry):
    arena, tracker = arena_registry
    tournament = find_occurrence(arena, "Weekend Tournament", AS_OF)  # Saturday 2026-11-14, 14:00-22:00 UTC
    before = register(tracker, arena, "2026-11-14T03:00:00+00:00", champion=False)
    register(tracker, arena, "2026-11-19T03:00:00+00:00", champion=True)  # saw the tournament
    champion = CapacityPlanner.from_tenant(arena)
    models = models_before(arena, tournament, "concurrent_users", champion, tracker, Simulator(arena, now=AS_OF))
    assert models.scored_with == {
        "forecaster": f"arena_concurrent_users_forecaster v{before[0]} (trained on data to 2026-11-14 03:00 UTC)",
        "planner": f"arena_capacity_planner v{before[1]} (trained on data to 2026-11-14 03:00 UTC)",
    }


def test_without_a_version_from_before_the_event_the_champions_kind_is_refitted_an_hour_before_it(arena_registry):
    arena, tracker = arena_registry
    tournament = find_occurrence(arena, "Weekend Tournament", AS_OF)
    register(tracker, arena, "2026-11-19T03:00:00+00:00", champion=True)
    champion = CapacityPlanner.from_tenant(arena, peaks={"metric": "concurrent_users", "timezone": "Europe/Berlin"})
    models = models_before(arena, tournament, "concurrent_users", champion, tracker, Simulator(arena, now=AS_OF))
    # arena keeps 8 days of history; the refit's window ends at 13:00, an hour before the tournament.
    refit = "refitted on the 8 days to 2026-11-14 13:00 UTC: no version was trained before the event"
    assert models.scored_with == {"forecaster": f"seasonal_naive forecaster {refit}",
                                  "planner": f"capacity planner {refit}"}
    assert models.forecaster.kind == "seasonal_naive"
    assert models.planner.peaks == champion.peaks  # the learned peaks that named the occurrence are kept


def test_a_tenant_forecasting_from_its_drivers_gets_a_refit_that_read_their_history(arena_registry):
    """A refit fits as training does (``fit_forecaster``): for a tenant with ``forecast_from_drivers``,
    ``.fit(series)`` alone raised "their history was not given" and the event went unscored."""
    arena, tracker = arena_registry
    config = arena.model_dump(mode="json")
    config["metrics"]["cpu_usage"]["forecast"] = {"horizons": ["15m"]}  # players drive CPU (the scaling's metric)
    config["training"]["forecast_from_drivers"] = True
    driven = TenantConfig.model_validate(config)
    tournament = find_occurrence(driven, "Weekend Tournament", AS_OF)
    name = registered_model_name("arena", "forecaster", "cpu_usage")
    with tracker.start_run("arena", "champion trained after the event"):
        version = tracker.log_model(forecaster_for(driven, "cpu_usage", "helios"), name,
                                    tags=VersionTags(data_end="2026-11-19T03:00:00+00:00", promotion=PROMOTED))
    tracker.set_alias(name, CHAMPION, version.version)
    champion = CapacityPlanner.from_tenant(driven, peaks={"metric": "concurrent_users", "timezone": "Europe/Berlin"})
    models = models_before(driven, tournament, "cpu_usage", champion, tracker, Simulator(driven, now=AS_OF))
    refit = "refitted on the 8 days to 2026-11-14 13:00 UTC: no version was trained before the event"
    assert models.scored_with == {"forecaster": f"helios forecaster {refit}", "planner": f"capacity planner {refit}"}
    assert models.forecaster.kind == "helios" and models.forecaster.fitted_
    assert models.forecaster.drivers == ("concurrent_users",)
