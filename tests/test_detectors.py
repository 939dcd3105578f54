"""Contract table over every detector kind, plus the NAB benchmark on the shared data when present."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from helios_pipelines.core.models.base import SavableModel
from helios_pipelines.core.models.detectors import (
    COMBINED,
    DETECTORS,
    CombinedDetector,
    make_detector,
    nearest_earlier_distance,
)

METRICS = ["players", "cpu", "latency"]
DAY = 1440
NAB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


def synthetic(days: float, seed: int) -> pd.DataFrame:
    """Three correlated, daily-seasonal metrics at one minute."""
    rng = np.random.default_rng(seed)
    rows = int(days * DAY)
    index = pd.date_range("2026-01-01", periods=rows, freq="1min", tz="UTC")
    daily = np.sin(2 * np.pi * np.arange(rows) / DAY)
    players = 1000 + 400 * daily + rng.normal(0, 20, rows)
    return pd.DataFrame(
        {
            "players": players,
            "cpu": 0.02 * players + rng.normal(0, 1, rows),
            "latency": 40 + 0.005 * players + rng.normal(0, 1, rows),
        },
        index=index,
    )


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return synthetic(3, seed=1)


@pytest.fixture(scope="module")
def recent() -> pd.DataFrame:
    frame = synthetic(4, seed=2).iloc[-2 * DAY :]
    return frame


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def fitted(request, training):
    return make_detector(request.param, seed=7).fit(training)


def with_anomalies(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    broken = frame.copy()
    spike, shift = 600, 1800
    broken.iloc[spike, broken.columns.get_loc("latency")] += 60  # a latency spike
    broken.iloc[shift:, broken.columns.get_loc("players")] += 1500  # players jump to a new level
    broken.iloc[shift:, broken.columns.get_loc("cpu")] += 30
    return broken, [spike, shift]


def test_scores_are_in_unit_interval_with_warm_up_nan(fitted, recent):
    scores = fitted.score(recent)
    assert list(scores.columns) == METRICS + [COMBINED]
    assert scores.index.equals(recent.index)
    warm_up = fitted.min_history
    assert warm_up >= 1
    assert scores[COMBINED].iloc[: warm_up - 1].isna().all()
    scored = scores.iloc[warm_up:].to_numpy()
    assert np.isfinite(scored).all()
    assert ((scored >= 0) & (scored <= 1)).all()


def test_scoring_is_causal(fitted, recent):
    whole = fitted.score(recent)
    for end in (fitted.min_history + 3, 700, 1500):
        pd.testing.assert_frame_equal(fitted.score(recent.iloc[:end]), whole.iloc[:end])


def test_injected_spike_and_level_shift_are_flagged_and_normal_rows_mostly_not(fitted, recent):
    broken, anomalies = with_anomalies(recent)
    combined = fitted.score(broken)[COMBINED].to_numpy()
    for row in anomalies:
        assert combined[row] >= fitted.threshold, f"{fitted.kind} misses the anomaly at row {row}"
    normal = fitted.score(recent)[COMBINED].dropna()
    assert (normal >= fitted.threshold).mean() < 0.05


def test_save_load_round_trip_scores_identically(fitted, recent, tmp_path):
    loaded = SavableModel.load(fitted.save(tmp_path / fitted.kind))
    assert type(loaded) is type(fitted)
    pd.testing.assert_frame_equal(loaded.score(recent), fitted.score(recent))
    assert (tmp_path / fitted.kind / "helios_model.json").is_file()


def test_fitting_is_deterministic(fitted, training, recent):
    again = make_detector(fitted.kind, seed=7).fit(training)
    pd.testing.assert_frame_equal(again.score(recent), fitted.score(recent))


def test_bad_input_gets_a_clear_error(fitted, recent):
    with pytest.raises(KeyError, match="latency"):
        fitted.score(recent.drop(columns="latency"))
    with pytest.raises(ValueError, match="empty"):
        fitted.score(recent.iloc[:0])
    with pytest.raises(ValueError, match="unknown detector kind 'nope'"):
        make_detector("nope")


def test_gaps_score_nan_for_the_missing_metric_only(recent):
    detector = make_detector("robust_residual").fit(synthetic(3, seed=1))
    holey = recent.copy()
    holey.iloc[100, 0] = np.nan
    scores = detector.score(holey)
    assert np.isnan(scores.iloc[100, 0]) and np.isfinite(scores[COMBINED].iloc[100])


def test_scoring_two_days_of_eight_metrics_is_fast_enough_for_serving():
    wide = pd.concat([synthetic(4, seed=3).add_suffix(f"_{i}") for i in range(3)], axis=1).iloc[:, :8]
    detector = CombinedDetector().fit(wide.iloc[: 2 * DAY])
    recent_rows = wide.iloc[-2 * DAY :]
    detector.score(recent_rows)
    started = time.perf_counter()
    detector.score(recent_rows)
    # A generous bound for shared CI machines; it takes about 30 ms here.
    assert time.perf_counter() - started < 0.25


def test_alerts_follow_trigger_share_and_recovery_windows():
    detector = CombinedDetector(trigger_window=4, trigger_share=0.5, recovery_window=3)
    scores = pd.DataFrame({COMBINED: [0, 0.9, 0, 0.9, 0.9, 0, 0, 0.9, 0, 0, 0]})
    alerting = detector.alerts(scores)[COMBINED].tolist()
    assert alerting == [False, False, False, True, True, True, True, True, True, True, False]


def test_nearest_earlier_distance_uses_only_the_past_and_memory():
    values = np.array([5.0, 1.0, np.nan, 3.0, 2.5, 10.0])
    np.testing.assert_allclose(nearest_earlier_distance(values, np.array([])), [np.nan, 4, np.nan, 2, 0.5, 5])
    np.testing.assert_allclose(nearest_earlier_distance(values, np.array([0.0, 4.0])), [1, 1, np.nan, 1, 0.5, 5])


@pytest.mark.benchmark_data
@pytest.mark.skipif(not (NAB_DIR / "labels").is_dir(), reason="../shared/data/nab is absent")
def test_nab_benchmark_writes_every_row_in_file_order(tmp_path):
    from helios_pipelines.benchmarks.anomaly import anomaly

    result = CliRunner().invoke(
        anomaly,
        ["--data", str(NAB_DIR / "data"), "--labels", str(NAB_DIR / "labels" / "combined_windows.json"),
         "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("NAB standard=") and "reward_low_FP_rate=" in last and "reward_low_FN_rate=" in last
    name = "realAWSCloudwatch/ec2_network_in_5abac7.csv"  # has repeated timestamps
    source, written = pd.read_csv(NAB_DIR / "data" / name), pd.read_csv(tmp_path / name)
    assert list(written.columns) == ["timestamp", "value", "anomaly_score"]
    assert written["timestamp"].tolist() == source["timestamp"].tolist()
    assert written["anomaly_score"].between(0, 1).all()
