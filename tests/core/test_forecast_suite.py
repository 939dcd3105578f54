"""The forecast suite (#18): what it holds, its references, and the arithmetic of its summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.benchmarks.references import DirectXGBoost
from helios_pipelines.benchmarks.suite import _level_shift, _with_gaps, suite, suite_table

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def test_the_direct_xgboost_reads_the_12_latest_values_and_the_targets_day_and_week_lags():
    index = pd.date_range("2024-01-01", periods=400, freq="1h", tz="UTC")  # a Monday at midnight
    values = np.arange(400, dtype=float)
    model = DirectXGBoost(step="1h", max_horizon=6)
    # origin 200 (history is values[:200]), lead 3: the target is position 202
    row = model._features(values, index, np.array([200]), 3)[0]
    assert row[:12].tolist() == list(range(199, 187, -1))
    assert row[12] == 202 - 24 and row[13] == 202 - 168
    assert row[14] == 202 % 24 and row[15] == (202 // 24) % 7  # hour of day, day of week (Monday = 0)


def test_the_suite_summary_is_the_geometric_mean_worst_and_coverage_of_helios_against_the_best_reference():
    members = [type("M", (), {"name": name})() for name in ("a", "b")]
    cache = {
        "a|60|helios": {"mase": 0.5, "coverage_80": 0.8, "fit_seconds": [2.0, 2.0]},
        "a|60|xgboost_direct": {"mase": 1.0, "coverage_80": 0.5, "fit_seconds": [4.0, 4.0]},
        "a|60|holt": {"mase": 2.0, "coverage_80": 0.5, "fit_seconds": [0.1]},
        "b|60|helios": {"mase": 0.8, "coverage_80": 0.7, "fit_seconds": [8.0]},
        "b|60|xgboost_direct": {"mase": 0.9, "coverage_80": 0.5, "fit_seconds": [4.0]},
        "b|60|holt": {"mase": 0.4, "coverage_80": 0.5, "fit_seconds": [0.1]},
        "b|60|helios[ablation]": {"mase": 0.1, "coverage_80": 0.5, "fit_seconds": [0.1]},  # not a reference
    }
    _, summary = suite_table(cache, members, [60], "helios", folds=2)
    # ratios 0.5 / 1.0 and 0.8 / 0.4; fit ratios 2 / 4 and 8 / 4
    assert summary["geomean_ratio"] == pytest.approx(1.0)
    assert summary["worst_ratio"] == pytest.approx(2.0) and summary["above_1"] == 1
    assert summary["mean_coverage"] == pytest.approx(0.75) and summary["min_coverage"] == pytest.approx(0.7)
    assert summary["geomean_fit_ratio"] == pytest.approx(1.0)


def test_the_derived_series_shift_by_half_from_80_percent_and_lose_points_reproducibly():
    base = pd.Series(np.full(1000, 10.0), index=pd.date_range("2024-01-01", periods=1000, freq="5min", tz="UTC"))
    shifted = _level_shift(lambda: base)()
    assert (shifted.iloc[:800] == 10).all() and (shifted.iloc[800:] == 15).all()
    gappy = _with_gaps(lambda: base)()
    assert 0.05 <= gappy.isna().mean() <= 0.05 + 3 * 36 / 1000
    pd.testing.assert_series_equal(gappy, _with_gaps(lambda: base)())


@pytest.mark.skipif(not (SHARED / "data" / "nab").exists(), reason="needs ../shared data")
def test_the_suite_holds_azure_every_nab_cloudwatch_series_every_demo_forecast_metric_a_shift_and_gaps():
    names = [m.name for m in suite(SHARED)]
    nab = sorted((SHARED / "data" / "nab" / "data" / "realAWSCloudwatch").glob("*.csv"))
    assert {"azure cpu_usage", "azure assigned_mem"} <= set(names)
    assert {f"nab {p.stem}" for p in nab} <= set(names)
    assert "sim gaming-corp concurrent_users +events" in names and "sim shopfast request_rate +events" in names
    assert any(n.startswith("shift:") for n in names) and any(n.startswith("gaps:") for n in names)
    assert len(names) >= 12


def test_prophet_fits_quarter_hour_means_and_follows_the_tenants_clock_across_daylight_saving():
    """A load that peaks at 20:00 New York time every day, before and after the switch to summer time
    on 2026-03-08: forecast on the tenant's clock, the peak stays at 20:00 local (00:00 UTC after
    the switch, 01:00 UTC before it)."""
    from helios_pipelines.core.ml.models.forecasters import make_forecaster

    index = pd.date_range("2026-02-26", "2026-03-12 23:30", freq="1min", tz="UTC")
    local = index.tz_convert("America/New_York")
    hour = local.hour + local.minute / 60
    load = pd.Series(100 + 50 * np.exp(-((hour - 20) ** 2) / 2), index=index)
    origin = pd.Timestamp("2026-03-11 23:30", tz="UTC")  # 19:30 local, summer time
    history = load[load.index <= origin]
    model = make_forecaster("prophet", step="1min", max_horizon=60, timezone="America/New_York").fit(history)

    assert len(model.model_.history) <= len(history) // 15 + 1  # fitted on 15-minute means
    forecast = model.predict(60, history).set_index("timestamp")["yhat"]
    assert forecast.idxmax().tz_convert("America/New_York").hour in (19, 20)
    assert abs(forecast.idxmax() - pd.Timestamp("2026-03-12 00:00", tz="UTC")) <= pd.Timedelta("15min")
