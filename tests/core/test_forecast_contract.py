"""One function scored and served: for every forecaster kind, the forecast the backtest scores is the
forecast the MLflow pyfunc returns and the forecast serving answers, for the same origin and events;
and the capacity planner is promoted like every other model.

Real components throughout: a files-source tenant, the backtest, an MLflow registry (the session's
HELIOS_HOME), the packaging code that assembles a bundle from champions, and the serving runtime.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.ml.evaluation import backtest, backtest_origins
from helios_pipelines.core.ml.models.forecasters import FORECASTERS
from helios_pipelines.core.ml.tracking import (
    CHAMPION,
    Tracker,
    history_example,
    naive_utc,
    registered_model_name,
)
from helios_pipelines.core.ml.training import forecaster_for, promote_capacity_planner, train_capacity_planner
from helios_pipelines.core.tenants import ScheduledEvent, TenantConfig
from serving.packaging import assemble_bundle, champion_pins
from serving.runtime import TenantRuntime

STEP = pd.Timedelta("5min")
HORIZON = 12  # one hour at 5 minutes
DAYS = 9
# A recurring event that runs through the backtest's last fold: every kind sees it in its history, and
# the forecast hour starts half-way into its ramp, so the multiplier varies across the forecast.
EVENT = {"name": "Evening Cup", "kind": "cup", "duration_hours": 3, "multiplier": 2.0, "repeat_days": 2,
         "ramp_minutes": 60}


def load_series() -> pd.Series:
    """Daily cycle plus noise at 5 minutes, a few missing points."""
    rng = np.random.default_rng(7)
    index = pd.date_range("2026-03-02", periods=DAYS * 288, freq=STEP, tz="UTC")
    hours = np.arange(index.size) / 12
    values = 100 + 30 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 3, index.size)
    values[rng.choice(index.size, 40, replace=False)] = np.nan
    return pd.Series(values, index=index)


def tenant_for(kind: str, csv, event_start: pd.Timestamp, promotion: str = "auto") -> TenantConfig:
    return TenantConfig.model_validate({
        "id": f"contract-{kind.replace('_', '-')}",
        "name": "contract",
        "step": "5min",
        "source": {"type": "files", "path": str(csv)},
        "metrics": {"load": {"series": "load", "forecast": {"horizons": ["1h"]}}},
        "events": [EVENT | {"start": event_start.isoformat()}],
        "scaling": [{"service": "api", "metric": "load", "capacity_per_replica": 50, "min_replicas": 1,
                     "max_replicas": 20}],
        "training": {"history_days": DAYS, "backtest_folds": 1, "promotion": promotion},
    })


@pytest.fixture(scope="module")
def series() -> pd.Series:
    return load_series()


@pytest.fixture(scope="module")
def setup(series, tmp_path_factory):
    """The CSV, the backtest's origin and an event whose ramp is under way at that origin."""
    folder = tmp_path_factory.mktemp("contract")
    csv = folder / "load.csv"
    series.rename("load").rename_axis("timestamp").reset_index().assign(
        timestamp=lambda f: f["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).to_csv(csv, index=False)
    origin = backtest_origins(len(series), HORIZON, 1)[0]
    first_target = series.index[origin]
    # Recurs every 2 days; its latest occurrence starts 30 minutes before the first forecast target.
    event_start = first_target - pd.Timedelta("30min") - pd.Timedelta(days=2 * 3)
    return csv, origin, event_start, folder


@pytest.mark.parametrize(("kind", "warm"), [(kind, False) for kind in sorted(FORECASTERS)] + [("helios", True)])
def test_backtest_pyfunc_and_serving_forecast_the_same_numbers(kind, warm, series, setup):
    """``warm``: the fold's model continues one fitted on the data to a day before the origin (a
    retrain's warm start, #20.2), and that continued model is what is scored, logged and served."""
    csv, origin, event_start, folder = setup
    tenant = tenant_for(f"{kind}-warm" if warm else kind, csv, event_start)
    base = forecaster_for(tenant, "load", kind).fit(series.iloc[: origin - 288]) if warm else None
    fitted = []

    def factory():
        model = forecaster_for(tenant, "load", kind)
        fitted.append(model.continue_from(base) if warm else model)
        return fitted[-1]

    result = backtest(factory, series, HORIZON, folds=1, levels=(0.8,))
    model = fitted[-1]
    assert not warm or model.warm_start_["warm"]
    first_target = series.index[origin]
    assert result.origins == [str(first_target)]

    tracker = Tracker()
    name = registered_model_name(tenant.id, "forecaster", "load")
    with tracker.start_run(tenant.id, f"contract {kind}"):
        version = tracker.log_model(model, name, alias=CHAMPION)
    history = series.iloc[:origin]
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}").predict(
        history.rename("load").rename_axis("timestamp").reset_index()
    )

    bundle = assemble_bundle(tenant, {k: v for k, v in champion_pins(tenant, tracker).items() if k != "planner"},
                             tracker, folder / f"bundle-{kind}")
    served = TenantRuntime(bundle).forecast("load", 60, now=first_target - STEP)

    pd.testing.assert_frame_equal(pyfunc, served, check_dtype=False)
    assert pd.DatetimeIndex(served["timestamp"])[0] == first_target
    # The backtest scored exactly this forecast: its MAE and coverage, recomputed by hand.
    actual = series.iloc[origin : origin + HORIZON].to_numpy()
    scored = np.isfinite(actual)
    error = np.abs(actual - served["yhat"].to_numpy())[scored]
    assert result.metrics["mae"] == pytest.approx(error.mean(), rel=1e-9)
    inside = (actual >= served["yhat_lower"].to_numpy()) & (actual <= served["yhat_upper"].to_numpy())
    assert result.metrics["coverage_80"] == pytest.approx(inside[scored].mean(), rel=1e-9)


@pytest.mark.parametrize("kind", ["seasonal_naive", "prophet"])
def test_a_posted_event_multiplies_the_served_forecast_of_a_kind_that_does_not_model_events(kind, series, setup):
    csv, origin, event_start, folder = setup
    tenant = tenant_for(kind, csv, event_start - pd.Timedelta(days=1))  # configured event out of the way
    model = forecaster_for(tenant, "load", kind).fit(series.iloc[:origin])
    tracker = Tracker()
    name = registered_model_name(tenant.id, "forecaster", "load")
    with tracker.start_run(tenant.id, f"posted {kind}"):
        tracker.log_model(model, name, alias=CHAMPION)
    runtime = TenantRuntime(assemble_bundle(
        tenant, {k: v for k, v in champion_pins(tenant, tracker).items() if k != "planner"}, tracker,
        folder / f"posted-{kind}"))
    now = series.index[origin] - STEP
    before = runtime.forecast("load", 60, now=now)
    runtime.post_event(ScheduledEvent(name="Launch", start=series.index[origin] - pd.Timedelta("1h"),
                                      duration_hours=4, multiplier=3.0))
    after = runtime.forecast("load", 60, now=now)
    # no ramp, running over the whole forecast hour: every value three times the unposted one
    np.testing.assert_allclose(after[["yhat", "yhat_lower", "yhat_upper"]].to_numpy(),
                               3.0 * before[["yhat", "yhat_lower", "yhat_upper"]].to_numpy())


def test_the_capacity_planner_waits_for_review_when_promotion_is_manual(setup):
    csv, _, event_start, _ = setup
    tracker = Tracker()
    manual = tenant_for("planner-manual", csv, event_start, promotion="manual")
    planner = train_capacity_planner(manual, tracker, {})
    record = promote_capacity_planner(manual, planner, tracker)

    name = registered_model_name(manual.id, "capacity_planner")
    assert not record.promoted and record.reason.startswith("manual review")
    assert tracker.version_by_alias(name, CHAMPION) is None
    # the same configuration again registers nothing new and still waits for review
    assert train_capacity_planner(manual, tracker, {})["version"] == planner["version"]

    auto = tenant_for("planner-auto", csv, event_start)
    record = promote_capacity_planner(auto, train_capacity_planner(auto, tracker, {}), tracker)
    assert record.promoted
    assert tracker.version_by_alias(registered_model_name(auto.id, "capacity_planner"), CHAMPION) is not None
    again = promote_capacity_planner(auto, train_capacity_planner(auto, tracker, {}), tracker)
    assert not again.promoted and again.reason == "configuration unchanged"


def test_a_forecast_from_its_drivers_is_the_one_backtested_logged_and_served(series, setup):
    """A tenant asking for drivers (``training.forecast_from_drivers``): Helios' forecaster of ``load``
    reads the past of ``users``, the metric its scaling follows, and the backtest, the pyfunc (given
    the drivers' columns beside the metric's) and serving forecast the same numbers from the same origin."""
    _, origin, event_start, folder = setup
    rng = np.random.default_rng(8)
    users = (series.ffill() * 40 + rng.normal(0, 60, series.size)).rename("users")
    csv = folder / "driven.csv"
    pd.concat([series.rename("load"), users], axis=1).rename_axis("timestamp").reset_index().assign(
        timestamp=lambda f: f["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).to_csv(csv, index=False)
    config = tenant_for("driven", csv, event_start).model_dump(mode="json")
    config["metrics"]["users"] = {"series": "users", "forecast": {"horizons": ["1h"]}}
    config["scaling"][0]["metric"] = "users"
    config["training"]["forecast_from_drivers"] = True
    tenant = TenantConfig.model_validate(config)
    drivers = users.to_frame()
    fitted = []

    def factory():
        fitted.append(forecaster_for(tenant, "load", "helios"))
        return fitted[-1]

    result = backtest(factory, series, HORIZON, folds=1, levels=(0.8,), drivers=drivers)
    model = fitted[-1]
    assert model.drivers == ("users",) and forecaster_for(tenant, "users", "helios").drivers == ()
    history = series.iloc[:origin]
    tracker = Tracker()
    name = registered_model_name(tenant.id, "forecaster", "load")
    with tracker.start_run(tenant.id, "contract driven"):
        version = tracker.log_model(model, name, alias=CHAMPION,
                                    input_example=history_example(history.rename("load"), model, drivers))
    # the pyfunc's input as MLflow's schema takes it: the metric's column, then its drivers', naive UTC
    frame = pd.concat([history.rename("load"), users.loc[history.index]], axis=1)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}").predict(
        frame.set_axis(naive_utc(frame.index)).rename_axis("timestamp").reset_index()
    )
    bundle = assemble_bundle(tenant, {k: v for k, v in champion_pins(tenant, tracker).items() if k != "planner"},
                             tracker, folder / "bundle-driven")
    served = TenantRuntime(bundle).forecast("load", 60, now=series.index[origin] - STEP)

    pd.testing.assert_frame_equal(pyfunc, served, check_dtype=False)
    actual = series.iloc[origin : origin + HORIZON].to_numpy()
    scored = np.isfinite(actual)
    error = np.abs(actual - served["yhat"].to_numpy())[scored]
    assert result.metrics["mae"] == pytest.approx(error.mean(), rel=1e-9)
    # ... and the drivers made a difference: the same model without them forecasts otherwise
    alone = forecaster_for(tenant.model_copy(update={"training": tenant.training.model_copy(
        update={"forecast_from_drivers": False})}), "load", "helios").fit(history)
    assert not np.allclose(alone.predict(HORIZON, history)["yhat"], served["yhat"])
