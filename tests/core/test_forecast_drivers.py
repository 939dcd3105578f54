"""The tenant's drivers as inputs of Helios' forecaster (#18.3): read only up to the origin, used where
they say something, refused with a message naming what is missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.core.ml.evaluation import backtest
from helios_pipelines.core.ml.models.base import fit_forecaster
from helios_pipelines.core.ml.models.forecasters import make_forecaster
from helios_pipelines.core.ml.models.helios_drivers import DRIVER_LAGS

STEP = pd.Timedelta("5min")
HORIZON = 12
LIGHT = {"n_estimators": 60, "max_train_rows": 6000, "recursive_estimators": 40}


def players_and_cpu(days: int = 9, seed: int = 0, delay: int = 6) -> tuple[pd.Series, pd.DataFrame]:
    """Players: a daily cycle plus a slow random wander; CPU follows the players ``delay`` steps later
    (the time a login takes to become a match), with noise of its own."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-03-01", periods=days * 288, freq=STEP, tz="UTC")
    hours = np.arange(index.size) / 12
    wander = np.convolve(rng.normal(0, 40, index.size), np.ones(12) / 12, mode="same").cumsum()
    players = 5000 + 2000 * np.sin(2 * np.pi * hours / 24) + wander - wander.mean()
    cpu = 2 + 0.002 * np.roll(players, delay) + rng.normal(0, 0.02, index.size)
    cpu[:delay] = np.nan
    return pd.Series(cpu, index=index, name="cpu_usage"), pd.DataFrame({"concurrent_users": players}, index=index)


def changed(frame: pd.DataFrame, rows, value) -> pd.DataFrame:
    """``frame`` with ``rows`` (a boolean mask) set to ``value`` (a scalar or a frame to copy them from)."""
    out = frame.copy()
    out.loc[rows] = value.loc[rows] if isinstance(value, pd.DataFrame) else value
    return out


def helios(**kwargs):
    return make_forecaster("helios", step=STEP, max_horizon=HORIZON, seed=3, metric="cpu_usage", **LIGHT, **kwargs)


@pytest.mark.parametrize("driver_forecast", [False, True])
def test_a_driver_value_after_the_origin_never_changes_the_forecast(driver_forecast):
    cpu, players = players_and_cpu()
    origin = len(cpu) - 100
    history = cpu.iloc[:origin]
    model = fit_forecaster(helios(drivers=["concurrent_users"], driver_forecast=driver_forecast), history, players)
    forecast = model.predict(HORIZON, history, drivers=players)
    after = players.index >= cpu.index[origin]
    for perturbed in (changed(players, after, players * 3.0), changed(players, after, np.nan)):
        pd.testing.assert_frame_equal(model.predict(HORIZON, history, drivers=perturbed), forecast)
    # ... and the past does change it: the driver is read
    earlier = changed(players, players.index < cpu.index[origin - 12], players * 1.5)
    assert not model.predict(HORIZON, history, drivers=earlier).equals(forecast)


def test_a_backtest_fold_forecasts_the_same_whatever_the_drivers_did_after_its_origin():
    cpu, players = players_and_cpu(days=8)
    earlier = changed(players, players.index < cpu.index[-HORIZON - 12], players * 0.5)

    def run(drivers):
        return backtest(lambda: helios(drivers=["concurrent_users"]), cpu, HORIZON, folds=1, levels=(0.8,),
                        drivers=drivers)

    # one fold, at the series' last origin: drivers changed from the origin on score the same, changed
    # before it (what the fold's model and forecast read) they do not
    late = changed(players, players.index >= cpu.index[-HORIZON], players * 0.5)
    assert run(players).metrics == run(late).metrics
    assert run(players).metrics != run(earlier).metrics


def test_the_driver_features_are_its_lags_its_implied_level_and_with_its_forecast_a_day_and_a_week_on():
    cpu, players = players_and_cpu()
    alone = helios().fit(cpu)
    with_lags = fit_forecaster(helios(drivers=["concurrent_users"], driver_forecast=False), cpu, players)
    with_forecast = fit_forecaster(helios(drivers=["concurrent_users"]), cpu, players)
    features = alone.booster_.num_features()
    # the lags at the origin, one, three, six steps and an hour before it, and the implied level
    assert with_lags.booster_.num_features() == features + len(DRIVER_LAGS) + 1 + 1 == features + 6
    # ... plus the driver's seasonal forecast of its change to the target, over a day and over a week
    assert with_forecast.booster_.num_features() == features + 8
    assert with_forecast.manifest()["drivers"] == ["concurrent_users"]


def test_a_tenant_asks_for_drivers_in_its_training_section_and_gets_the_metrics_its_scaling_follows():
    from helios_pipelines.core.ml.training import forecaster_for
    from helios_pipelines.core.tenants import load_tenants

    gaming = load_tenants().get("gaming-corp")
    assert gaming.training.forecast_from_drivers is False  # off by default: the suite showed no gain
    assert forecaster_for(gaming, "cpu_usage", "helios").drivers == ()
    asking = gaming.model_copy(update={"training": gaming.training.model_copy(update={"forecast_from_drivers": True})})
    # players drive CPU, requests and matches; players are driven by nothing the tenant measures
    for metric in ("cpu_usage", "http_requests", "matches_in_progress"):
        assert forecaster_for(asking, metric, "helios").drivers == ("concurrent_users",)
    assert forecaster_for(asking, "concurrent_users", "helios").drivers == ()
    assert forecaster_for(asking, "cpu_usage", "prophet").drivers == ()  # a kind that reads none


def test_a_metric_that_follows_its_driver_with_a_delay_is_forecast_better_from_it():
    cpu, players = players_and_cpu(delay=6)
    origins = np.arange(len(cpu) - 300, len(cpu) - HORIZON, 24)
    fitted_on = cpu.iloc[: origins[0]]
    alone = helios().fit(fitted_on)
    driven = fit_forecaster(helios(drivers=["concurrent_users"]), fitted_on, players)

    def error(model, **drivers):
        return np.mean([np.abs(model.predict(HORIZON, cpu.iloc[:o], **drivers)["yhat"].to_numpy()[:6]
                               - cpu.iloc[o : o + 6].to_numpy()).mean() for o in origins])

    # the first six lead times are already in the players' past (their wander is not in the CPU's):
    # at least a tenth less error
    assert error(driven, drivers=players) < 0.9 * error(alone)


def test_a_missing_driver_is_an_error_naming_the_metric_and_the_driver():
    cpu, players = players_and_cpu(days=3)
    model = helios(drivers=["concurrent_users", "http_requests"])
    with pytest.raises(ValueError, match=r"'cpu_usage'.*lacks \['http_requests'\]"):
        fit_forecaster(model, cpu, players)
    with pytest.raises(ValueError, match=r"'cpu_usage'.*not given"):
        fit_forecaster(model, cpu, None)


def test_a_kind_without_drivers_fits_and_forecasts_as_if_none_were_given():
    cpu, players = players_and_cpu(days=3)
    naive = make_forecaster("seasonal_naive", step=STEP, max_horizon=HORIZON, drivers=["concurrent_users"])
    assert naive.drivers == ()
    given = fit_forecaster(naive, cpu, players).predict(HORIZON, cpu, drivers=players)
    plain = make_forecaster("seasonal_naive", step=STEP, max_horizon=HORIZON).fit(cpu).predict(HORIZON, cpu)
    pd.testing.assert_frame_equal(given, plain)


def test_a_fit_with_drivers_does_not_continue_a_model_fitted_without_them():
    cpu, players = players_and_cpu(days=6)
    base = helios().fit(cpu.iloc[:-288])
    model = fit_forecaster(helios(drivers=["concurrent_users"]).continue_from(base), cpu, players)
    assert model.warm_start_["warm"] is False and "drivers" in model.warm_start_["refused"]
