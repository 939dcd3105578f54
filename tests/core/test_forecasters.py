"""Forecaster contract (every kind), backtest arithmetic, events, calendar features, benchmark CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from helios_pipelines.core.ml.evaluation import backtest, decide_promotion
from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ml.features import build_feature_frame, calendar_features
from helios_pipelines.core.ml.models.base import FORECAST_COLUMNS, Forecaster, SavableModel
from helios_pipelines.core.ml.models.forecasters import FORECASTERS, make_forecaster
from helios_pipelines.core.ml.models.helios import HeliosForecaster
from helios_pipelines.core.ml.models.prometheus_functions import linear_trend
from helios_pipelines.core.tenants import ScheduledEvent

STEP = pd.Timedelta("5min")
HORIZON = 12
AZURE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "forecast" / "azure_vm_fleet_5min.csv"
)


def synthetic(days: float = 9, seed: int = 0, gaps: bool = True) -> pd.Series:
    """Daily and weekly cycles plus noise at 5 minutes, with scattered missing points and a gap."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-03-01", periods=int(days * 288), freq=STEP, tz="UTC")
    hours = np.arange(index.size) * STEP / pd.Timedelta("1h")
    values = (
        100 + 30 * np.sin(2 * np.pi * hours / 24) + 10 * (index.dayofweek >= 5) + rng.normal(0, 3, index.size)
    )
    series = pd.Series(values, index=index)
    if gaps:
        series[rng.choice(index.size, index.size // 50, replace=False)] = np.nan
        series.iloc[-500:-470] = np.nan  # a 2.5 hour outage
    return series


@pytest.fixture(scope="module")
def history() -> pd.Series:
    return synthetic()


# Smaller boosters keep the table fast; the contract does not depend on model size.
LIGHT = {
    "xgboost": {"n_estimators": 40, "max_train_rows": 4000},
    "helios": {"n_estimators": 60, "max_train_rows": 6000, "recursive_estimators": 40},
}


def light(kind: str, **kwargs) -> Forecaster:
    return make_forecaster(kind, step=STEP, max_horizon=HORIZON, seed=3, **LIGHT.get(kind, {}), **kwargs)


# ---- the contract, over every kind -------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FORECASTERS))
def test_forecaster_contract(kind, history, tmp_path):
    def fitted():
        return light(kind, metric="load").fit(history)

    model = fitted()
    forecast = model.predict(HORIZON, history)

    assert list(forecast.columns) == FORECAST_COLUMNS
    expected = pd.date_range(history.index[-1] + STEP, periods=HORIZON, freq=STEP)
    assert (pd.DatetimeIndex(forecast["timestamp"]) == expected).all()
    values = forecast[["yhat", "yhat_lower", "yhat_upper"]].to_numpy()
    assert np.isfinite(values).all()
    assert (forecast["yhat_lower"] <= forecast["yhat"]).all() and (
        forecast["yhat"] <= forecast["yhat_upper"]
    ).all()
    # a forecast of a series around 100 +- 40 that strays far from it is broken, not merely poor
    assert forecast["yhat"].between(20, 180).all()
    wider = model.predict(HORIZON, history, level=0.95)
    assert (
        wider["yhat_upper"] - wider["yhat_lower"] >= forecast["yhat_upper"] - forecast["yhat_lower"] - 1e-9
    ).all()

    loaded = SavableModel.load(model.save(tmp_path / kind))
    pd.testing.assert_frame_equal(loaded.predict(HORIZON, history), forecast)
    assert json.loads((tmp_path / kind / "helios_model.json").read_text())["kind"] == kind

    with pytest.raises(ValueError, match="beyond"):
        model.predict(HORIZON + 1, history)

    pd.testing.assert_frame_equal(fitted().predict(HORIZON, history), forecast)


@pytest.mark.parametrize("kind", sorted(FORECASTERS))
def test_predicts_from_recent_history_only(kind, history):
    """Serving passes only the last days: min_history must be enough, and honest."""
    model = light(kind).fit(history)
    assert model.min_history <= 8 * 288
    recent = history.iloc[-(model.min_history + 300) :]  # the extra 300 make up for the gaps
    forecast = model.predict(HORIZON, recent)
    assert np.isfinite(forecast["yhat"]).all()


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match="known kinds: .*helios"):
        make_forecaster("arima")


# ---- evaluation ---------------------------------------------------------------------------------


class ConstantForecaster(Forecaster):
    """Forecasts a constant with a fixed +-1 band, and records what it was shown."""

    kind = "constant"
    seen: list[pd.Timestamp] = []

    def __init__(self, value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.value = value

    def fit(self, history):
        ConstantForecaster.seen.append(history.index[-1])
        self.fitted_ = True
        return self

    def _predict(self, horizon, history, events, level):
        ConstantForecaster.seen.append(history.index[-1])
        index = self.future_index(history, horizon)
        yhat = np.full(horizon, self.value)
        return pd.DataFrame(
            {"timestamp": index, "yhat": yhat, "yhat_lower": yhat - 1, "yhat_upper": yhat + 1}
        )


def test_backtest_metrics_on_a_hand_made_case():
    # Two days at one hour: the one-day seasonal-naive in-sample error is |day2 - day1| = 4 everywhere.
    index = pd.date_range("2024-01-01", periods=48 + 8, freq="1h", tz="UTC")
    values = np.r_[np.zeros(24), np.full(24, 4.0), [0.5, 1.5, 3.0, np.nan, 0.5, 1.5, 3.0, np.nan]]
    series = pd.Series(values, index=index)
    result = backtest(lambda: ConstantForecaster(step="1h", max_horizon=4), series, horizon=4, folds=1)

    # one origin at the last 4 points: forecast 0 against 0.5, 1.5, 3.0 and a missing value
    assert result.origins == [str(index[-4])]
    assert result.metrics["n_scored"] == 3
    assert result.metrics["mae"] == pytest.approx((0.5 + 1.5 + 3.0) / 3)
    assert result.metrics["coverage_80"] == pytest.approx(1 / 3)  # only 0.5 is inside 0 +- 1
    # the scale comes from the training part (the first 52 points): |y[t] - y[t-24]|
    train = values[:52]
    scale = np.nanmean(np.abs(train[24:] - train[:-24]))
    assert result.metrics["mase"] == pytest.approx(((0.5 + 1.5 + 3.0) / 3) / scale)
    assert result.metrics["width_80"] == pytest.approx(2.0)
    assert result.final_step["n_scored"] == 0  # the last target is missing: nothing to score
    assert result.metrics["pinball"] > 0
    json.dumps(result.to_dict(), default=str)


def test_backtest_fits_never_see_data_after_the_origin(history):
    ConstantForecaster.seen.clear()
    result = backtest(
        lambda: ConstantForecaster(step=STEP, max_horizon=HORIZON), history, horizon=HORIZON, folds=4
    )
    origins = pd.DatetimeIndex(result.origins)
    assert len(origins) == 4 and origins[0] >= history.index[int(len(history) * 0.75)]
    assert origins[-1] == history.index[-HORIZON]
    # each fold: fit, predict at 80 %, predict at 95 %; all of them end right before the origin
    assert len(ConstantForecaster.seen) == 12
    for fold, origin in enumerate(origins):
        assert all(seen == origin - STEP for seen in ConstantForecaster.seen[3 * fold : 3 * fold + 3])


def test_promotion_needs_to_beat_champion_and_baseline():
    baseline = {"mase": 1.0}
    assert decide_promotion({"mase": 0.7}, None, baseline).promote
    assert decide_promotion({"mase": 0.7}, {"mase": 0.8}, baseline).promote
    lost = decide_promotion({"mase": 0.9}, {"mase": 0.8}, baseline)
    assert not lost.promote and "champion" in lost.reason and lost.champion == 0.8
    assert not decide_promotion({"mase": 1.1}, None, baseline).promote
    assert not decide_promotion({"mase": float("nan")}, None, baseline).promote
    assert decide_promotion({"metrics": {"mae": 2.0}}, None, {"metrics": {"mae": 3.0}}, metric="mae").promote
    assert json.dumps(decide_promotion({"mase": 0.7}, None, baseline).to_dict())


# ---- scheduled events ---------------------------------------------------------------------------


TOURNAMENT_STARTS = ("2024-03-02T14:00:00Z", "2024-03-06T14:00:00Z", "2024-03-14T14:00:00Z")


def tournaments(multiplier: float) -> EventSchedule:
    """Three 8-hour tournaments on irregular days, so no day or week lag of the series foretells them."""
    return EventSchedule(
        [
            ScheduledEvent(
                name=f"cup {i}", kind="tournament", start=start, duration_hours=8, multiplier=multiplier
            )
            for i, start in enumerate(TOURNAMENT_STARTS)
        ]
    )


def test_events_learned_from_past_occurrences_raise_the_forecast():
    # The tournaments triple the load; the history holds two and ends two hours before the third.
    plain = synthetic(days=16, seed=1, gaps=False)
    series = plain * tournaments(3.0).multiplier(plain.index)
    history = series[series.index < pd.Timestamp("2024-03-14T12:00:00Z")]
    horizon = 48  # 4 hours: across the third one's start at 14:00
    settings = {
        "step": STEP, "max_horizon": horizon, "seed": 1, "n_estimators": 100, "max_train_rows": 8000,
        "recursive_estimators": 60,
    }
    aware = HeliosForecaster(events=tournaments(1.5), **settings).fit(history)  # the configured 1.5 is wrong
    blind = HeliosForecaster(**settings).fit(history)

    assert aware.multipliers_["tournament"] == pytest.approx(3.0, rel=0.1)
    with_event = aware.predict(horizon, history)
    without = blind.predict(horizon, history)
    during = pd.DatetimeIndex(with_event["timestamp"]) >= pd.Timestamp(TOURNAMENT_STARTS[-1])
    assert (with_event["yhat"][during] > 2 * without["yhat"][during]).all()
    actual = series.reindex(pd.DatetimeIndex(with_event["timestamp"])).to_numpy()
    assert np.abs(actual - with_event["yhat"]).mean() < 0.5 * np.abs(actual - without["yhat"]).mean()


def test_an_event_whose_occurrences_disagree_widens_the_interval_where_it_is_in_force():
    """Two past tournaments lifted the load 2.5 x and 3.5 x: the next one's effect is uncertain by about
    log(3.5 / 2.5) (each occurrence against the other), and its 80 % interval widens by that much."""
    plain = synthetic(days=16, seed=1, gaps=False)
    series = plain.copy()
    for start, multiplier in zip(TOURNAMENT_STARTS[:2], (2.5, 3.5), strict=True):
        one = ScheduledEvent(name="cup", kind="tournament", start=start, duration_hours=8, multiplier=multiplier)
        series *= EventSchedule([one]).multiplier(plain.index)
    history = series[series.index < pd.Timestamp("2024-03-14T12:00:00Z")]
    horizon = 48
    model = HeliosForecaster(events=tournaments(3.0), step=STEP, max_horizon=horizon, seed=1, n_estimators=60,
                             max_train_rows=6000, recursive_estimators=40).fit(history)
    assert model.multiplier_spreads_["tournament"] == pytest.approx(np.log(3.5 / 2.5), rel=0.25)
    widened = model.predict(horizon, history, level=0.8)
    model.multiplier_spreads_ = {}
    certain = model.predict(horizon, history, level=0.8)
    np.testing.assert_allclose(widened["yhat"], certain["yhat"])
    during = pd.DatetimeIndex(widened["timestamp"]) >= pd.Timestamp(TOURNAMENT_STARTS[-1])
    assert during.any()
    np.testing.assert_allclose(widened[~during][["yhat_lower", "yhat_upper"]], certain[~during][["yhat_lower", "yhat_upper"]])
    assert (widened["yhat_upper"][during] > certain["yhat_upper"][during]).all()
    assert (widened["yhat_lower"][during] < certain["yhat_lower"][during]).all()
    # Learned from two occurrences, the spread has one degree of freedom: the upper bound moves by Student's
    # t 90 % quantile with 1 degree of freedom (3.078, from the table) times the spread, not the normal 1.282.
    spread = np.log(3.5 / 2.5)
    model.multiplier_spreads_ = {"tournament": spread}
    exact = model.predict(horizon, history, level=0.8)
    np.testing.assert_allclose(exact["yhat_upper"][during] / certain["yhat_upper"][during], np.exp(3.078 * spread),
                               rtol=1e-3)


def ramped_tournaments(multiplier: float, ramp_minutes: float) -> EventSchedule:
    return EventSchedule([
        ScheduledEvent(name=f"cup {i}", kind="tournament", start=start, duration_hours=3, multiplier=multiplier,
                       ramp_minutes=ramp_minutes)
        for i, start in enumerate(TOURNAMENT_STARTS)
    ])


def test_a_ramped_events_multiplier_is_learned_where_it_is_in_full_effect():
    """``event_full_effect`` (an ablation, off): three-hour tournaments ramping in and out over an hour each
    triple the load for one hour: that hour is where the multiplier applies whole, and the ramps (applied
    by the profile) do not pull the learned effect towards 1 (over the whole occurrence, ramps included,
    it came out 2.5 x)."""
    plain = synthetic(days=16, seed=1, gaps=False)
    series = plain * ramped_tournaments(3.0, 60).multiplier(plain.index)
    history = series[series.index < pd.Timestamp(TOURNAMENT_STARTS[-1])]
    model = HeliosForecaster(events=ramped_tournaments(3.0, 60), step=STEP, max_horizon=HORIZON, event_full_effect=True)
    multipliers, _, counts = model._learn_multipliers(history)
    assert counts == {"tournament": 2}
    assert multipliers["tournament"] == pytest.approx(3.0, rel=0.05)


def test_a_configured_multiplier_counts_as_one_occurrence_beside_the_learned_ones():
    """``event_prior`` (an ablation, off): two past tournaments tripled the load, the operator configured
    1.5: with the configuration worth one occurrence, the multiplier is (3 x 3 x 1.5) ** (1/3) = 2.38."""
    plain = synthetic(days=16, seed=1, gaps=False)
    series = plain * tournaments(3.0).multiplier(plain.index)
    history = series[series.index < pd.Timestamp(TOURNAMENT_STARTS[-1])]
    learned = HeliosForecaster(events=tournaments(1.5), step=STEP, max_horizon=HORIZON)
    assert learned._learn_multipliers(history)[0]["tournament"] == pytest.approx(3.0, rel=0.03)
    with_prior = HeliosForecaster(events=tournaments(1.5), step=STEP, max_horizon=HORIZON, event_prior=1)
    assert with_prior._learn_multipliers(history)[0]["tournament"] == pytest.approx(2.38, rel=0.03)


def test_an_event_never_seen_before_uses_its_configured_multiplier(history):
    model = light("helios").fit(history)
    origin = history.index[-1]
    launch = ScheduledEvent(name="launch", start=origin + STEP * 7, duration_hours=48, multiplier=5.0)
    plain = model.predict(HORIZON, history)
    boosted = model.predict(HORIZON, history, extra_events=[launch])
    np.testing.assert_allclose(boosted["yhat"][:6], plain["yhat"][:6])
    np.testing.assert_allclose(boosted["yhat"][6:], 5.0 * plain["yhat"][6:])


def test_a_ramped_event_builds_up_and_winds_down_and_a_ramp_longer_than_the_event_is_refused(history):
    model = light("helios").fit(history)
    origin = history.index[-1]
    launch = ScheduledEvent(name="launch", start=origin + STEP, duration_hours=HORIZON * STEP / pd.Timedelta("1h"),
                            multiplier=5.0, ramp_minutes=4 * STEP / pd.Timedelta("1min"))
    plain = model.predict(HORIZON, history)
    ramped = model.predict(HORIZON, history, extra_events=[launch])
    ratio = (ramped["yhat"] / plain["yhat"]).to_numpy()
    np.testing.assert_allclose(ratio[:5], [1.0, 2.0, 3.0, 4.0, 5.0])  # a quarter of the way each step
    np.testing.assert_allclose(ratio[-4:], [5.0, 4.0, 3.0, 2.0])  # and back down before the end
    with pytest.raises(ValidationError, match="ramp_minutes 300 twice over is longer than its 8 hours"):
        ScheduledEvent(name="cup", start=origin, duration_hours=8, multiplier=2.0, ramp_minutes=300)


# ---- features -----------------------------------------------------------------------------------


def test_calendar_follows_the_tenants_clock_across_daylight_saving():
    # New York moves from EST (UTC-5) to EDT (UTC-4) on 2024-03-10: 18:00 local is 23:00 UTC before
    # and 22:00 UTC after.
    index = pd.DatetimeIndex(
        ["2024-03-09T23:00Z", "2024-03-11T22:00Z", "2024-03-11T23:00Z", "2024-03-09T22:00Z"], tz="UTC"
    )
    frame = calendar_features(index, "America/New_York")
    assert frame["hour_sin"].iloc[0] == pytest.approx(frame["hour_sin"].iloc[1])
    assert frame["hour_cos"].iloc[0] == pytest.approx(frame["hour_cos"].iloc[1])
    assert frame["is_peak_hour"].tolist() == [1.0, 1.0, 1.0, 0.0]  # 18:00, 18:00, 19:00, 17:00 local
    assert frame["is_weekend"].tolist() == [1.0, 0.0, 0.0, 1.0]  # Saturday, Monday, Monday, Saturday

    regions = [("America/New_York", 0.6), ("Europe/Berlin", 0.4)]
    # 22:00 UTC on 2024-03-11 is 18:00 in New York and 23:00 in Berlin: everybody's evening
    assert calendar_features(index, "UTC", regions)["players_evening"].iloc[1] == pytest.approx(1.0)
    # 23:00 UTC on 2024-03-09 is 18:00 in New York, 00:00 in Berlin: only New York's players
    assert calendar_features(index, "UTC", regions)["players_evening"].iloc[0] == pytest.approx(0.6)


def test_feature_frame_is_causal_and_keeps_gaps():
    index = pd.date_range("2024-03-01", periods=600, freq="1min", tz="UTC")
    rng = np.random.default_rng(0)
    metrics = pd.DataFrame(
        {
            "queue_length": rng.uniform(0, 50, 600),
            "matches_in_progress": rng.integers(0, 5, 600).astype(float),
            "server_utilization": rng.uniform(0, 1, 600),
        },
        index=index,
    )
    metrics.iloc[100:105, 0] = np.nan
    schedule = EventSchedule(
        [ScheduledEvent(name="Cup", start="2024-03-01T05:00Z", duration_hours=1, multiplier=2)]
    )
    frame = build_feature_frame(metrics, "Europe/Berlin", [("Europe/Berlin", 1.0)], schedule)

    assert frame["queue_length"].iloc[100:105].isna().all()  # gaps stay gaps
    assert frame["event_cup"].sum() == 60
    assert {"queue_length_mean_1h", "queue_length_std_24h", "players_evening"} <= set(frame.columns)

    changed = metrics.copy()
    changed.iloc[400:, :] *= 10  # the future changes: nothing computed before it may move
    later = build_feature_frame(changed, "Europe/Berlin", [("Europe/Berlin", 1.0)], schedule)
    pd.testing.assert_frame_equal(frame.iloc[:400], later.iloc[:400])


# ---- the benchmark CLI --------------------------------------------------------------------------


@pytest.mark.slow  # a benchmark-sized run: the full tier (make test-fast skips it)
@pytest.mark.benchmark_data
@pytest.mark.skipif(not AZURE.exists(), reason="needs ../shared/data/forecast")
def test_benchmark_cli_on_azure(tmp_path):
    from helios_pipelines.benchmarks.forecast import forecast

    out = tmp_path / "bench.json"
    table = tmp_path / "forecast.md"
    args = [
        "--csv",
        str(AZURE),
        "--value-col",
        "cpu_usage",
        "--folds",
        "2",
        "--json",
        str(out),
        "--markdown",
        str(table),
    ]
    result = CliRunner().invoke(forecast, args + ["--methods", "seasonal_naive,holt,helios"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"seasonal_naive", "holt", "helios"}
    for scores in report["methods"].values():
        assert {"mae", "smape", "mase", "coverage_80", "coverage_95"} <= set(scores["metrics"])
        assert scores["final_step"]["n_scored"] == 2 and scores["mean_fit_seconds"] > 0
    assert report["summary"]["helios_mase"] < report["methods"]["seasonal_naive"]["metrics"]["mase"]
    assert set(report["helios_training"]["split"]) == {
        "events",
        "calibration_models",
        "calibration_errors",
        "final_models",
    }
    assert "| helios |" in table.read_text()


# ---- Prometheus' predict_linear -------------------------------------------------------------------


def test_predict_linear_fits_the_window_at_each_origin_leaving_missing_samples_out():
    values = np.array([9.0, 9.0, 1.0, np.nan, 3.0, 4.0])
    # the 4 points ending at position 5 hold 1, 3 and 4 at offsets -3, -1 and 0: the line 4 + x
    np.testing.assert_allclose(linear_trend(values, np.array([5]), 4, np.array([1, 2])), [[5.0, 6.0]])
    # a window with one sample: the last observed value, flat
    np.testing.assert_allclose(linear_trend(np.array([5.0, np.nan, 7.0]), np.array([2]), 2, np.array([1, 3])),
                               [[7.0, 7.0]])


def test_predict_linear_continues_a_straight_line():
    series = pd.Series(3.0 * np.arange(100), index=pd.date_range("2024-03-01", periods=100, freq=STEP, tz="UTC"))
    forecast = light("predict_linear").fit(series).predict(HORIZON, series)
    np.testing.assert_allclose(forecast["yhat"], 3.0 * np.arange(100, 100 + HORIZON))


# ---- helios' ensemble ---------------------------------------------------------------------------


def test_helios_blends_its_members_with_convex_weights_per_lead(history):
    model = light("helios").fit(history)
    # direct model, recursive one-step model, seasonal naive of the change over a day and a week
    assert model.weights_.shape == (HORIZON, 4)
    assert (model.weights_ >= 0).all()
    np.testing.assert_allclose(model.weights_.sum(axis=1), 1.0)
    assert model.residuals_.shape[1] == HORIZON
    # without the blend it is the direct model alone
    alone = light("helios", blend=False).fit(history)
    assert (alone.weights_[:, 0] == 1).all() and alone.recursive_ is None
    assert np.isfinite(alone.predict(HORIZON, history)["yhat"]).all()


def idle_between_bursts(days: float = 9, seed: int = 5) -> pd.Series:
    """Disk writes: zero at nine points in ten, bursts of 1e6-1e8 bytes lasting one to three steps."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-03-01", periods=int(days * 288), freq=STEP, tz="UTC")
    values = np.zeros(index.size)
    for start in rng.choice(index.size, index.size // 30, replace=False):
        values[start : start + rng.integers(1, 4)] = 10 ** rng.uniform(6, 8)
    return pd.Series(values, index=index)


def test_helios_keeps_the_blend_where_it_beats_the_simple_forecasts(history):
    assert light("helios").fit(history).fallback_ is None


def held_levels(days: float = 9, seed: int = 5) -> pd.Series:
    """A metric pinned at a level between rare jumps (a pool size, a replica count): levels of 20-80
    held for 1 to 12 hours."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-03-01", periods=int(days * 288), freq=STEP, tz="UTC")
    lengths = rng.integers(12, 145, index.size // 12)
    values = np.repeat(rng.uniform(20, 80, lengths.size), lengths)[: index.size]
    return pd.Series(values, index=index)


def test_helios_falls_back_to_the_last_value_on_a_metric_pinned_between_rare_jumps():
    """Every learned member adds noise of its own to a level that holds; on the calibration slice the
    last value does better than the blend, so it replaces the blend."""
    series = held_levels()
    model = light("helios").fit(series.iloc[:-12])
    assert model.fallback_ == "last"
    forecast = model.predict(HORIZON, series.iloc[:-12])
    level = series.iloc[-13]
    np.testing.assert_allclose(forecast["yhat"], level)


def test_helios_computes_no_member_of_the_blend_where_its_fallback_forecasts(monkeypatch):
    """The fallback replaces the blend, so predict computes none of its members (the direct model, a
    booster call per lead time for the recursive one)."""
    series = held_levels()
    model = light("helios").fit(series.iloc[:-12])
    assert model.fallback_ == "last"

    def no_members(*args, **kwargs):
        raise AssertionError("a member of the blend was computed")

    monkeypatch.setattr(model, "_members", no_members)
    forecast = model.predict(HORIZON, series.iloc[:-12])
    np.testing.assert_allclose(forecast["yhat"], series.iloc[-13])


def test_helios_interval_at_an_idle_disk_holds_the_idle_value():
    """Most hours of an idle disk have no change at all: the volatility floor comes from the origins
    that had some (a floor from all of them was zero, and so was every calm origin's interval), and a
    calm origin's interval from the calm origins' errors: an 80 % interval holds the idle value at
    least 80 % of the time."""
    series = idle_between_bursts()
    model = light("helios").fit(series.iloc[:-300])
    assert model.volatility_floor_ > 0
    values = series.to_numpy()
    idle = [p for p in range(len(series) - 300, len(series) - HORIZON) if not values[p - 12 : p + HORIZON + 1].any()]
    held = []
    for origin in idle[:: max(1, len(idle) // 20)]:
        forecast = model.predict(HORIZON, series.iloc[: origin + 1])
        held.append(((forecast["yhat_lower"] <= 0) & (forecast["yhat_upper"] >= 0)).mean())
    assert np.mean(held) >= 0.8


def test_helios_follows_a_level_shift_beyond_its_training_range():
    """A launch nobody posted triples the load: trees on raw levels cannot forecast above what they
    were trained on; Helios' members work on changes, so it follows the new level."""
    series = synthetic(days=9, seed=2, gaps=False)
    model = light("helios").fit(series.iloc[:-300])
    shifted = series.copy()
    shifted.iloc[-300:] *= 3.0
    history = shifted.iloc[:-200]  # 100 points (8 hours) into the new level
    forecast = model.predict(HORIZON, history)
    actual = shifted.iloc[-200 : -200 + HORIZON].to_numpy()
    assert np.abs(forecast["yhat"].to_numpy() / actual - 1).mean() < 0.15


def test_benchmark_cli_on_a_simulated_tenant(tmp_path):
    from helios_pipelines.benchmarks.forecast import forecast

    out = tmp_path / "sim.json"
    args = ["--tenant", "shopfast", "--value-col", "request_rate", "--days", "4", "--folds", "2"]
    result = CliRunner().invoke(forecast, args + ["--methods", "seasonal_naive,holt", "--json", str(out)])
    assert result.exit_code == 0, result.output
    exported = tmp_path / "sim_shopfast_request_rate.csv"
    frame = pd.read_csv(exported)
    assert list(frame.columns) == ["timestamp", "request_rate"] and len(frame) == 4 * 288
    report = json.loads(out.read_text())
    assert report["freq"] == "5min" and report["horizon_steps"] == 12
    assert report["methods"]["holt"]["metrics"]["n_scored"] > 0
    neither = CliRunner().invoke(forecast, ["--value-col", "x"])
    assert neither.exit_code != 0 and "exactly one of --csv and --tenant" in neither.output


def test_a_forecaster_pickled_before_the_volatility_bins_takes_every_calibration_error_for_every_interval():
    """A served champion saved before 09e630b has no fallback, event spreads or volatility bins: loaded,
    it forecasts as it did, which is what one bin (interval_bins=1) gives."""
    history = synthetic(days=10, seed=2, gaps=False)
    settings = dict(step=STEP, max_horizon=24, seed=1, n_estimators=60, max_train_rows=6000, recursive_estimators=40,
                    simple_fallback=False)
    one_bin = HeliosForecaster(interval_bins=1, **settings).fit(history)
    binned = HeliosForecaster(interval_bins=3, **settings).fit(history)
    state = {k: v for k, v in binned.__dict__.items()
             if k not in ("fallback_", "multiplier_spreads_", "volatility_edges_", "calibration_bins_")}
    saved_before = HeliosForecaster.__new__(HeliosForecaster)
    saved_before.__setstate__(state)
    pd.testing.assert_frame_equal(saved_before.predict(24, history, level=0.8), one_bin.predict(24, history, level=0.8))
