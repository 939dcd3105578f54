"""Contract table over every detector kind, plus the NAB benchmark on the shared data when present."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ml.models.base import SavableModel
from helios_pipelines.core.ml.models.detectors import COMBINED, DETECTORS, CombinedDetector, make_detector
from helios_pipelines.core.ml.models.nearest import density_unit, k_distance, nearest_earlier_distance
from helios_pipelines.core.ml.models.relations import DRIVER_WINDOWS, Relations, in_transition
from helios_pipelines.core.ml.models.series_views import (
    held_for,
    mean_before,
    seasonal_difference,
    trailing_mean,
)
from helios_pipelines.core.tenants import ScheduledEvent

METRICS = ["players", "cpu", "latency"]
DAY = 1440
NAB_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"


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


@pytest.mark.parametrize("kind", ["rarity", "combined"])
def test_gaps_score_nan_for_the_missing_metric_only(recent, kind):
    detector = make_detector(kind).fit(synthetic(3, seed=1))
    holey = recent.copy()
    holey.iloc[100, 0] = np.nan
    scores = detector.score(holey)
    assert np.isnan(scores.iloc[100, 0]) and np.isfinite(scores[COMBINED].iloc[100])


def test_alerts_follow_trigger_share_and_recovery_windows():
    detector = CombinedDetector(trigger_window=4, trigger_share=0.5, recovery_window=3)
    scores = pd.DataFrame({COMBINED: [0, 0.9, 0, 0.9, 0.9, 0, 0, 0.9, 0, 0, 0]})
    alerting = detector.alerts(scores)[COMBINED].tolist()
    assert alerting == [False, False, False, True, True, True, True, True, True, True, False]


def test_nearest_earlier_distance_uses_only_the_past_and_memory():
    values = np.array([5.0, 1.0, np.nan, 3.0, 2.5, 10.0])
    np.testing.assert_allclose(nearest_earlier_distance(values, np.array([])), [np.nan, 4, np.nan, 2, 0.5, 5])
    np.testing.assert_allclose(nearest_earlier_distance(values, np.array([0.0, 4.0])), [1, 1, np.nan, 1, 0.5, 5])


def brute_force_nearest_earlier(column: np.ndarray, memory: np.ndarray) -> np.ndarray:
    out = np.full(column.size, np.nan)
    for row, value in enumerate(column):
        if np.isnan(value):
            continue
        earlier = np.r_[memory, column[:row][np.isfinite(column[:row])]]
        if earlier.size:
            out[row] = np.abs(earlier - value).min()
    return out


def test_nearest_earlier_distance_matches_brute_force_on_many_series_at_once():
    rng = np.random.default_rng(5)
    rows = 400
    matrix = np.column_stack(
        [
            rng.normal(size=rows),
            np.round(rng.normal(size=rows) * 2),  # many ties
            np.arange(rows, dtype=float),  # every value is a new maximum
            -np.arange(rows, dtype=float),  # every value is a new minimum
            np.cumsum(rng.normal(size=rows)),  # a drift
            np.where(rng.random(rows) < 0.1, np.nan, rng.exponential(size=rows)),  # gaps
        ]
    )
    memories = [np.sort(rng.normal(size=size)) for size in (0, 30, 5, 0, 200, 3)]
    got = nearest_earlier_distance(matrix, memories)
    for column in range(matrix.shape[1]):
        expected = brute_force_nearest_earlier(matrix[:, column], memories[column])
        np.testing.assert_allclose(got[:, column], expected, err_msg=f"column {column}")


def test_nearest_earlier_distance_within_a_window_sees_only_that_many_rows_before_each():
    rng = np.random.default_rng(8)
    rows = 300
    matrix = np.column_stack([
        rng.normal(size=rows),
        np.round(rng.normal(size=rows) * 2),  # many ties
        np.cumsum(rng.normal(size=rows)),  # a drift
        np.where(rng.random(rows) < 0.1, np.nan, rng.exponential(size=rows)),  # gaps
    ])
    memories = [np.sort(rng.normal(size=size)) for size in (0, 30, 5, 3)]
    for window in (1, 7, 64, 299, 500):
        got = nearest_earlier_distance(matrix, memories, window)
        for column in range(matrix.shape[1]):
            expected = [brute_force_nearest_earlier(matrix[max(0, row - window): row + 1, column],
                                                    memories[column])[-1] for row in range(rows)]
            np.testing.assert_allclose(got[:, column], expected, err_msg=f"window {window}, column {column}")


def ten_minute_frame(values: np.ndarray) -> pd.DataFrame:
    index = pd.date_range("2026-01-01", periods=values.size, freq="10min", tz="UTC")
    return pd.DataFrame({"m": values}, index=index)


def test_rarity_sees_a_missing_daily_peak_through_the_seasonal_view():
    day = 144  # rows of ten minutes
    rng = np.random.default_rng(3)
    clock = np.arange(8 * day) % day
    values = np.where((clock >= 60) & (clock < 90), 80.0, 20.0) + rng.normal(0, 1, 8 * day)
    values[6 * day + 60 : 6 * day + 90] = 20 + rng.normal(0, 1, 30)  # day 7 misses its peak
    frame = ten_minute_frame(values)
    detector = make_detector("rarity").fit(frame.iloc[: 4 * day])
    assert detector.manifest()["seasons_rows"] == {"m": day}
    score = detector.score(frame)["m"].to_numpy()
    assert np.nanmax(score[6 * day + 60 : 6 * day + 90]) >= detector.threshold
    assert np.nanmax(score[4 * day : 6 * day]) < detector.threshold  # normal days, peaks included


def test_an_incident_does_not_echo_a_season_later_through_the_seasonal_view():
    day = 144  # rows of ten minutes
    rng = np.random.default_rng(3)
    clock = np.arange(8 * day) % day
    values = np.where((clock >= 60) & (clock < 90), 80.0, 20.0) + rng.normal(0, 1, 8 * day)
    values[5 * day + 20 : 5 * day + 23] = 200.0  # an incident on day 6, at night
    frame = ten_minute_frame(values)
    detector = make_detector("rarity").fit(frame.iloc[: 4 * day])
    score = detector.score(frame)["m"].to_numpy()
    assert np.nanmax(score[5 * day + 20 : 5 * day + 23]) >= detector.threshold
    # Day 7 at that time is an ordinary night: unlike day 6 there, like day 5.
    assert np.nanmax(score[6 * day : 7 * day]) < detector.threshold


def test_the_detector_says_how_far_back_its_views_look_which_is_what_serving_holds():
    day = 144  # rows of ten minutes
    clock = np.arange(4 * day) % day
    noise = np.random.default_rng(3).normal(0, 1, 4 * day)
    frame = ten_minute_frame(np.where((clock >= 60) & (clock < 90), 80.0, 20.0) + noise)
    seasonal = make_detector("rarity").fit(frame)
    assert seasonal.manifest()["seasons_rows"] == {"m": day}
    # The two weeks of earlier rows that count as seen before, with their level and change windows.
    assert (seasonal.min_history, seasonal.full_history) == (20, 14 * day + 20)
    assert make_detector("rarity", use_season=False).fit(frame).full_history == 14 * day + 20
    related = CombinedDetector(drivers=["players"], forest_weight=0, rarity={"use_season": False})
    related.fit(_load_and_cpu(days=3))
    assert related.rarity.relations_ is not None and related.full_history == 14 * DAY + 20  # one-minute rows
    # Without a time index: the level and change windows, and every earlier row is remembered.
    plain = make_detector("rarity", use_season=False).fit(frame.reset_index(drop=True))
    assert plain.full_history == 20


def test_a_rows_score_does_not_depend_on_history_held_beyond_what_the_detector_reads():
    day = 144  # rows of ten minutes
    rng = np.random.default_rng(12)
    values = 50 + 10 * np.sin(2 * np.pi * np.arange(20 * day) / day) + rng.normal(0, 1, 20 * day)
    values[[2 * day + 7, 3 * day]] = [95.0, 5.0]  # excursions more than two weeks before the last day
    frame = ten_minute_frame(values)
    detector = make_detector("combined", seed=3, rarity={"use_season": False}).fit(ten_minute_frame(values[:5 * day]))
    last_day = frame.index >= frame.index[-day]
    held = frame.iloc[-(day + detector.full_history):]
    np.testing.assert_array_equal(detector.score(frame)[last_day].to_numpy(), detector.score(held)[-day:].to_numpy())


def test_a_recurring_value_is_news_again_once_its_last_sighting_is_two_weeks_back():
    day = 144  # rows of ten minutes
    rng = np.random.default_rng(4)
    values = 50 + rng.normal(0, 1, 20 * day)
    values[[day + 10, 2 * day, 16 * day + 10]] = 70.0  # one day apart, then 14 days and 10 rows later
    scores = make_detector("rarity").fit(ten_minute_frame(values[:day])).score(ten_minute_frame(values))["m"]
    assert scores.iloc[day + 10] >= 0.5 > scores.iloc[2 * day]
    assert scores.iloc[16 * day + 10] >= 0.5


def test_the_seasonal_difference_keeps_the_earlier_season_nearest_the_row():
    values = np.array([1.0, 5.0, 2.0, 3.0, 2.5, 9.0, np.nan, 1.0])
    # Season 2. Row 4: 2.5 - 2 = 0.5 one season back beats 2.5 - 1 = 1.5 two back; row 5: 9 - 5 = 4 two
    # back beats 9 - 3 = 6; row 7: 1 - 3 = -2 two back beats 1 - 9 = -8; the gap at row 6 stays a gap.
    np.testing.assert_allclose(seasonal_difference(values, 2, 2), [np.nan, np.nan, 1, -2, 0.5, 4, np.nan, -2])
    np.testing.assert_allclose(seasonal_difference(values, 2), [np.nan, np.nan, 1, -2, 0.5, 6, np.nan, -8])


def test_rarity_sees_denser_spikes_through_the_trailing_mean_though_each_value_is_known():
    values = np.zeros(3000)
    values[::100] = 20.0  # a spike every 100 rows
    values[2000:2200:5] = 20.0  # then one every 5 rows: no value is new, the level is
    frame = ten_minute_frame(values)
    detector = make_detector("rarity").fit(frame.iloc[:1000])
    score = detector.score(frame)["m"].to_numpy()
    assert np.nanmax(score[1000:2000]) < detector.threshold
    assert np.nanmax(score[2000:2200]) >= detector.threshold
    value_only = nearest_earlier_distance(values, np.array([0.0, 20.0]))
    assert np.nanmax(value_only[2000:2200]) == 0  # the value view alone cannot see it


def test_a_night_time_jump_inside_the_days_range_is_seen_through_the_change_view():
    day = 144  # rows of ten minutes
    rng = np.random.default_rng(5)
    clock = np.arange(8 * day) % day
    values = 100 + 80 * np.sin(2 * np.pi * clock / day) + rng.normal(0, 1, 8 * day)  # 20 at night, 180 by day
    night = 6 * day + 108  # three quarters into day 7: the trough
    values[night : night + 3] *= 4  # 80: four times the night, still far below the daily peak
    frame = ten_minute_frame(values)
    # No seasonal view (real days are less regular than this one): the value views and the change view.
    score = make_detector("rarity", use_season=False).fit(frame.iloc[: 4 * day]).score(frame)["m"].to_numpy()
    assert np.nanmax(score[night : night + 3]) >= 0.5
    assert np.nanmax(score[4 * day : 6 * day]) < 0.5
    unchanged = make_detector("rarity", use_season=False, use_change=False).fit(frame.iloc[: 4 * day])
    unchanged = unchanged.score(frame)["m"].to_numpy()
    assert np.nanmax(unchanged[night : night + 3]) < 0.5  # the value views alone cannot see it


def test_a_scrape_gap_does_not_blind_the_change_view_for_the_window_after_it():
    day = 144  # rows of ten minutes
    rng = np.random.default_rng(5)
    clock = np.arange(8 * day) % day
    values = 100 + 80 * np.sin(2 * np.pi * clock / day) + rng.normal(0, 1, 8 * day)  # 20 at night, 180 by day
    night = 6 * day + 108  # the trough of day 7
    values[night : night + 3] *= 4  # 80: inside the day's range, seen through the change view only
    values[night - 5 : night - 2] = np.nan  # a scrape gap of 3 rows, 15 % of the 20-row window before it
    detector = make_detector("rarity", use_season=False).fit(ten_minute_frame(values).iloc[: 4 * day])
    score = detector.score(ten_minute_frame(values))["m"].to_numpy()
    assert np.nanmax(score[night : night + 3]) >= 0.5
    assert np.nanmax(score[4 * day : 6 * day]) < 0.5


def test_trailing_means_use_the_observed_rows_of_a_window_that_is_at_least_the_required_share_observed():
    values = np.array([1.0, 2.0, np.nan, 4.0, np.nan, np.nan, 7.0])[:, None]
    # Windows of 4: (1, 2, -, 4) -> 7/3; (2, -, 4, -) -> 3; (-, 4, -, -) one of four observed; (4, -, -, 7) -> 5.5.
    np.testing.assert_allclose(trailing_mean(values, 4, 0.5).ravel(), [np.nan, np.nan, np.nan, 7 / 3, 3, np.nan, 5.5])
    assert np.isnan(trailing_mean(values, 4)).all()  # by default a gap leaves the window undefined
    # The mean of the rows before a row leaves the row out: the same windows, one row later.
    np.testing.assert_allclose(mean_before(values, 4, 0.5).ravel(), [np.nan, np.nan, np.nan, np.nan, 7 / 3, 3, np.nan])


def test_held_for_keeps_what_every_row_of_the_window_shares_and_nothing_across_a_change_of_sign():
    z = np.array([[1.0, -1.0], [3.0, 2.0], [6.0, np.nan], [-2.0, np.nan], [np.nan, np.nan], [5.0, 4.0]])
    np.testing.assert_array_equal(held_for(z, 2), [[1, -1], [1, 0], [3, np.nan], [0, np.nan], [np.nan, np.nan], [5, 4]])


def test_incidents_in_the_fit_history_do_not_teach_the_detector_they_are_normal():
    rng = np.random.default_rng(8)
    values = 50 + rng.normal(0, 1, 3000)
    values[[300, 700]] = 90.0  # two incidents while the detector learns
    values[2000] = 90.0  # the same again, live
    frame = ten_minute_frame(values)
    scores = {trim: make_detector("rarity", trim=trim).fit(frame.iloc[:1000]).score(frame.iloc[1000:])["m"].to_numpy()
              for trim in (0.0, 0.01)}
    assert scores[0.0][1000] < 0.5 <= scores[0.01][1000]
    assert np.nanmax(scores[0.01][:1000]) < 0.5


def test_a_recurring_value_is_news_once_and_a_higher_z_threshold_is_less_sensitive():
    rng = np.random.default_rng(4)
    values = 50 + rng.normal(0, 1, 2000)
    values[[1200, 1600]] = 70.0  # the same excursion twice
    frame = ten_minute_frame(values)
    scores = {z: make_detector("rarity", z_threshold=z).fit(frame.iloc[:1000]).score(frame)["m"] for z in (1, 2.5, 6)}
    detector_scores = scores[2.5].to_numpy()
    assert detector_scores[1200] >= 0.5 > detector_scores[1600]
    flagged = [(s >= 0.5).sum() for s in scores.values()]
    assert flagged == sorted(flagged, reverse=True) and flagged[0] > flagged[-1]


def test_k_distance_is_the_distance_to_the_kth_nearest_other_remembered_value():
    memory = np.array([0.0, 1.0, 3.0, 7.0, 8.0])
    # 0: 1 and 3 away -> 3; 1: 1, 2 -> 2; 3: 2, 3 -> 3; 7: 1, 4 -> 4; 8: 1, 5 -> 5
    assert k_distance(memory, 2).tolist() == [3.0, 2.0, 3.0, 4.0, 5.0]
    assert k_distance(memory, 10).tolist() == [8.0, 7.0, 5.0, 7.0, 8.0]  # k capped at the 4 others
    assert k_distance(np.array([5.0]), 2).size == 0
    unit = density_unit(np.array([-5.0, 2.1, 7.4, 100.0, np.nan]), memory, k_distance(memory, 2))
    assert unit[:4].tolist() == [3.0, 3.0, 4.0, 5.0]  # the k-distance of the nearest remembered value
    assert np.isnan(unit[4])


def test_the_value_view_sees_a_dip_out_of_a_tight_band_and_not_a_burst_past_a_sparse_top():
    rng = np.random.default_rng(11)
    values = 33.4 + rng.normal(0, 0.05, 2000)  # a tight band ...
    values[::25] = rng.uniform(40, 50, 80)  # ... with bursts that stretch the range to about 17
    burst = 1300
    values[burst] = values[:burst].max() + 0.9  # a little past the highest burst so far
    dip = 1600
    values[dip] = 31.5  # out of the band, inside the range's lowest 20 %
    frame = ten_minute_frame(values)
    detector = make_detector("rarity", use_change=False, use_season=False).fit(frame.iloc[:1000])
    scores = detector.score(frame)["m"].to_numpy()
    low, high = np.quantile(values[:1000], [0.01, 0.99])
    assert low - values[dip] < 0.15 * (high - low)  # by range alone: q < 0.15, a score below 0.43
    assert scores[dip] >= 0.5
    # By range alone the burst would score q / (q + 0.2) = 0.21 (q = 0.9 / (50 - 33)); the top is sparse.
    assert scores[burst] < 0.2


def test_a_held_level_is_not_mistaken_for_a_dense_one_however_many_distinct_values_the_history_has():
    """Past MEMORY_SIZE distinct values the memory is a quantile grid, where a level held for long (an
    idle 0) filled many quantiles: repeated, its k-distance was 0 and any step off it scored as rare.
    The same history with its bursts rounded to integers (few distinct values) or to 3 decimals (more
    than MEMORY_SIZE) must score a new value between the idle level and the bursts alike."""
    rng = np.random.default_rng(3)
    values = np.where(rng.random(20_000) < 0.6, 0.0, rng.uniform(30, 100, 20_000))
    scores = []
    for decimals in (0, 3):
        history = np.append(np.round(values, decimals), 10.0)
        detector = make_detector("rarity", use_change=False, use_season=False).fit(ten_minute_frame(history[:-1]))
        scores.append(detector.score(ten_minute_frame(history))["m"].to_numpy()[-1])
    assert scores[0] < 0.5 and scores[1] < 0.5
    assert abs(scores[0] - scores[1]) < 0.1


def test_a_detector_pickled_before_the_density_rarity_scores_as_it_did():
    """Its thresholds were calibrated on scores without the density term: a restart must not change
    what pages. The dip of the test above scores below 0.43 by range alone, at least 0.5 with density."""
    rng = np.random.default_rng(11)
    values = 33.4 + rng.normal(0, 0.05, 2000)
    values[::25] = rng.uniform(40, 50, 80)
    values[1600] = 31.5
    frame = ten_minute_frame(values)
    detector = make_detector("rarity", use_change=False, use_season=False).fit(frame.iloc[:1000])
    state = {k: v for k, v in detector.__dict__.items() if k not in ("value_views_", "spacing_")}
    pickled_before = type(detector).__new__(type(detector))
    pickled_before.__setstate__(state)
    assert detector.score(frame)["m"].to_numpy()[1600] >= 0.5
    assert pickled_before.score(frame)["m"].to_numpy()[1600] < 0.43


def test_onset_window_reports_a_persisting_shift_once():
    rng = np.random.default_rng(6)
    values = 10 + rng.normal(0, 0.5, 1500)
    values[1200:] += 30
    frame = ten_minute_frame(values)
    detector = CombinedDetector(onset_window=100).fit(frame.iloc[:1000])
    combined = detector.score(frame)[COMBINED].to_numpy()
    assert combined[1200] >= detector.threshold
    assert (combined[1201:1300] < detector.threshold).all()
    assert (detector.score(frame)["m"].to_numpy()[1200:1220] >= detector.threshold).any()


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


def _load_and_cpu(days=6, seed=5, event=None):
    """Players with a daily cycle (the driver, times a scheduled event's realised effect) and CPU that
    follows them: 1-minute rows."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-03-02", periods=days * 1440, freq="1min", tz="UTC")
    hours = (index.hour + index.minute / 60).to_numpy()
    players = 3000 + 2000 * np.sin(2 * np.pi * (hours - 9) / 24) + 60 * rng.standard_normal(len(index))
    if event is not None:
        # The realised effect is 90 % of the configured one, as a model's prior is never exact.
        players *= 1 + 0.9 * (EventSchedule([event]).multiplier(index).to_numpy() - 1)
    cpu = (2 + 0.002 * players) * (1 + 0.02 * rng.standard_normal(len(index)))
    return pd.DataFrame({"players": players, "cpu": cpu}, index=index)


def test_a_metric_leaving_its_relation_to_its_driver_is_anomalous_inside_its_own_range():
    frame = _load_and_cpu()
    test_day = frame.index >= frame.index[-1440]
    # CPU doubles at 04:00 of the last day, when players are near their trough: 2 x ~4 cores stays
    # below the ~12 cores of every evening, inside the metric's own range.
    incident = test_day & (frame.index.hour == 4) & (frame.index.minute < 20)
    frame.loc[incident, "cpu"] *= 2
    assert frame.loc[incident, "cpu"].max() < frame.loc[~test_day, "cpu"].max()
    detector = CombinedDetector(drivers=["players"], forest_weight=0).fit(frame[~test_day])
    assert detector.rarity.relations_.targets == ["cpu"]
    alerts = detector.alerts(detector.score(frame))
    assert alerts.loc[incident, "cpu"].iloc[1:].all()  # from its second row: a residual must hold two rows
    assert not alerts.loc[test_day & ~incident & (frame.index.hour != 4), "combined"].any()


def test_fitting_relations_leaves_every_blas_thread_count_as_it_was():
    # The relations' Huber fit runs scipy's BLAS on one thread (models/relations.py); the rest of the
    # process (numpy's sums, the forecasters' threads) must find the counts it had.
    from threadpoolctl import threadpool_info

    before = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info()]
    CombinedDetector(drivers=["players"], forest_weight=0).fit(_load_and_cpu(days=3))
    assert [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info()] == before


def test_one_row_out_of_a_relation_is_noise_and_two_rows_are_an_incident():
    frame = _load_and_cpu()
    test_day = frame.index >= frame.index[-1440]
    detector = CombinedDetector(drivers=["players"], forest_weight=0).fit(frame[~test_day])
    blip = test_day & (frame.index.hour == 4) & (frame.index.minute == 0)
    lasting = test_day & (frame.index.hour == 16) & (frame.index.minute < 2)
    frame.loc[blip | lasting, "cpu"] *= 2  # tens of sigma of the relation (2 % noise): one row, then two
    alerts = detector.alerts(detector.score(frame))["cpu"]
    assert not alerts[test_day & (frame.index.hour == 4)].any()
    assert alerts[lasting].tolist() == [False, True]  # alerting from the second row: one row of delay


def test_a_metric_far_outside_a_weak_relation_is_anomalous_even_where_its_own_history_has_seen_the_value():
    rng = np.random.default_rng(11)
    frame = _load_and_cpu()
    # Latency whose own noise (2 ms on about 33 ms) dominates its spread: players move it by 1-5 ms only.
    frame["latency"] = 30 + 0.001 * frame["players"] + 2 * rng.standard_normal(len(frame))
    test_day = frame.index >= frame.index[-1440]
    # Three +40 ms incidents of 20 minutes in the fit history, more rows than the 1 % trim leaves out:
    # to the univariate views, +40 ms is seen before.
    for day in (1, 2, 3):
        past = (frame.index.day == 2 + day) & (frame.index.hour == 10) & (frame.index.minute < 20)
        frame.loc[past, "latency"] += 40
    incident = test_day & (frame.index.hour == 10) & (frame.index.minute < 20)
    frame.loc[incident, "latency"] += 40
    detector = CombinedDetector(drivers=["players"], forest_weight=0).fit(frame[~test_day])
    assert not detector.rarity.relations_.replaces_["latency"]  # too weak to replace the views: it vetoes them
    # The relation's sigma is about 2 / 33 = 0.06 in log space and +40 ms is log(74 / 34) = 0.78, 13
    # sigma: beyond the 10 (2 x 2 x z threshold 2.5) where a weak relation's residual counts on its own.
    alerts = detector.alerts(detector.score(frame))
    assert alerts.loc[incident, "latency"].any()
    assert not alerts.loc[test_day & ~incident & (frame.index.hour != 10), "combined"].any()


def test_rows_in_transition_are_those_whose_known_multiplier_changed_within_the_look_back():
    multipliers = np.array([1, 1, 2, 2, 2, 2, 1, 1, 1, 1], dtype=float)[:, None]
    # Look-back of 2 rows: rows 2-3 see the step up, rows 6-7 the step down.
    assert in_transition(multipliers, 2).tolist() == [False, False, True, True, False, False, True, True, False, False]
    assert in_transition(None, 2) is None  # no events, no transitions


def test_a_relation_learns_from_its_history_how_much_less_certain_it_is_while_an_event_ramps():
    rng = np.random.default_rng(12)
    event = ScheduledEvent(name="Tournament", start=datetime(2026, 3, 3, 12, tzinfo=UTC), duration_hours=4,
                           multiplier=2.0, repeat_days=2, ramp_minutes=30)
    frame = _load_and_cpu(event=event)
    multipliers = EventSchedule([event]).multiplier(frame.index).to_numpy()[:, None]
    ramping = in_transition(multipliers, max(DRIVER_WINDOWS))
    # CPU's noise is 2 % of it, 4 % while an event ramps (and its lagged effect lasts): twice as wide.
    frame["cpu"] = (2 + 0.002 * frame["players"]) * (1 + np.where(ramping, 0.04, 0.02) * rng.standard_normal(len(frame)))
    aware = Relations(["players"]).fit(frame, ["cpu"], multipliers)
    assert 1.7 < aware.widen_["cpu"] < 2.4  # the median absolute residual there over elsewhere: 2 by construction
    unaware = Relations(["players"]).fit(frame, ["cpu"])
    assert unaware.widen_["cpu"] == 1.0
    ratio = aware.standardised_residuals(frame, multipliers)[:, 0] / unaware.standardised_residuals(frame)[:, 0]
    np.testing.assert_allclose(ratio[ramping], 1 / aware.widen_["cpu"])
    np.testing.assert_allclose(ratio[~ramping], 1.0)


def test_a_scheduled_event_is_an_expected_input_and_an_incident_during_it_is_still_found():
    start = pd.Timestamp("2026-03-07T12:00:00Z")  # noon of the last day
    event = ScheduledEvent(name="Tournament", start=start.to_pydatetime(), duration_hours=4, multiplier=2.5,
                           ramp_minutes=30)
    frame = _load_and_cpu(event=event)
    test_day = frame.index >= frame.index[-1440]
    outage = (frame.index >= start + pd.Timedelta("2h")) & (frame.index < start + pd.Timedelta("2h20min"))
    frame.loc[outage, ["players", "cpu"]] /= 3
    knowing = CombinedDetector(drivers=["players"], events=[event], forest_weight=0).fit(frame[~test_day])
    alerts = knowing.alerts(knowing.score(frame))["combined"]
    assert alerts[outage].any()
    assert not alerts[test_day & (frame.index < start + pd.Timedelta("2h"))].any()  # the ramp in is expected
    unaware = CombinedDetector(drivers=["players"], forest_weight=0).fit(frame[~test_day])
    assert unaware.alerts(unaware.score(frame))["combined"][test_day & (frame.index < start + pd.Timedelta("2h"))].any()


def test_a_season_is_found_in_a_history_of_exactly_two_seasons_with_a_few_scrape_gaps():
    # Two weeks of five-minute rows that repeat weekly (a weekend bump) with 10 scrape gaps (0.25 %):
    # 2,016 - 10 pairs a week apart are observed, over the 90 % of a season asked for. Before, any gap
    # in a history of exactly two seasons dropped the season (gaming-corp's 14 days: no season at all).
    from helios_pipelines.core.ml.models.series_views import detect_season

    week = 2016
    index = pd.date_range("2026-01-05", periods=2 * week, freq="5min", tz="UTC")
    values = np.where(index.dayofweek >= 5, 300.0, 100.0) + np.random.default_rng(2).normal(0, 5, 2 * week)
    values[np.arange(10) * 400 + 7] = np.nan
    assert detect_season(values, pd.Timedelta("5min")) == week
    values[: week // 5] = np.nan  # a fifth of the first week missing: too little to judge the season
    assert detect_season(values, pd.Timedelta("5min")) is None
