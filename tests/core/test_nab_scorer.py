"""The NAB scorer against every worked number of section 10 of ../shared/data/nab/SCORING.md."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helios_pipelines.benchmarks import nab

STANDARD = nab.PROFILES["standard"]
# A 10-row window at rows 100..109 of a file whose probation (P = 30) ends well before it.
N_ROWS, LEFT, RIGHT = 200, 100, 109


def one_file(detections: list[int]) -> nab.LabelledFile:
    scores = np.zeros(N_ROWS)
    scores[detections] = 1.0
    return nab.LabelledFile("f.csv", scores, ((LEFT, RIGHT),))


def test_true_positive_normaliser():
    assert nab.TP_NORMALISER == pytest.approx(0.9866142981514305, abs=1e-15)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.9866142981514305, abs=1e-15)
    assert nab.scaled_sigmoid(3.01) == -1.0


@pytest.mark.parametrize(
    ("row_in_window", "expected"),
    [(0, 1.0), (5, 0.8597925669), (9, 0.2482415498)],
    ids=["first row", "sixth row", "last row"],
)
def test_value_of_first_detection_in_a_ten_row_window(row_in_window, expected):
    assert nab.raw_score([one_file([LEFT + row_in_window])], STANDARD, 0.5) == pytest.approx(expected, abs=1e-10)


def test_missed_window_costs_a_fn_and_only_the_first_detection_counts():
    assert nab.raw_score([one_file([])], STANDARD, 0.5) == -1.0
    later_too = nab.raw_score([one_file([LEFT + 5, LEFT + 6, RIGHT])], STANDARD, 0.5)
    assert later_too == pytest.approx(0.8597925669, abs=1e-10)


@pytest.mark.parametrize(
    ("rows_after", "expected"),
    [(1, -0.0297931830), (9, -0.1085275728), (27, -0.1099999327), (28, -0.11), (60, -0.11)],
)
def test_false_positive_after_a_window(rows_after, expected):
    # The window is missed (-1) so the detection's own value is the rest.
    total = nab.raw_score([one_file([RIGHT + rows_after])], STANDARD, 0.5)
    assert total - (-1.0) == pytest.approx(expected, abs=1e-10)


def test_false_positive_before_the_first_window_costs_full_a_fp_and_every_one_counts():
    total = nab.raw_score([one_file([50, 51, 52])], STANDARD, 0.5)
    assert total - (-1.0) == pytest.approx(3 * -0.11)


def test_probation_rows_are_ignored_and_sized_as_documented():
    assert [nab.probation_rows(n) for n in (4032, 10320, 1243)] == [604, 750, 186]
    assert nab.raw_score([one_file([0, 29])], STANDARD, 0.5) == -1.0


def full_corpus_of_null_detector() -> list[nab.LabelledFile]:
    """58 files and 116 windows, like NAB's corpus, scored by a detector that says 0.5 everywhere."""
    return [nab.LabelledFile(f"f{i}.csv", np.full(N_ROWS, 0.5), ((40, 49), (120, 129))) for i in range(58)]


def test_null_detector_on_full_corpus_scores_zero_in_every_profile():
    results = nab.score_all_profiles(full_corpus_of_null_detector())
    assert [results[p].raw for p in nab.PROFILES] == [-116, -116, -232]
    assert [results[p].score for p in nab.PROFILES] == [0, 0, 0]
    assert all(r.threshold == nab.NO_DETECTION_THRESHOLD for r in results.values())


@pytest.mark.parametrize(
    ("profile", "raw", "expected"),
    [
        ("standard", 46.6344501971, 70.1011),
        ("reward_low_FP_rate", 30.4310725171, 63.1168),
        ("reward_low_FN_rate", 26.6344501971, 74.3202),
    ],
)
def test_normalisation_of_numenta_full_corpus_totals(profile, raw, expected):
    assert nab.normalised_score(raw, 116, nab.PROFILES[profile]) == pytest.approx(expected, abs=5e-5)


def test_subset_baselines_come_from_its_own_window_count():
    result = nab.sweep([one_file([LEFT])] * 36, nab.PROFILES["reward_low_FN_rate"])
    assert (result.null, result.perfect, result.score) == (-72, 36, 100.0)


def test_sweep_finds_the_global_optimum_and_prefers_the_higher_threshold_on_ties():
    rng = np.random.default_rng(7)
    files = []
    for i in range(6):
        scores = rng.uniform(0, 0.8, N_ROWS).round(2)
        scores[LEFT + i] = 0.9
        files.append(nab.LabelledFile(f"f{i}.csv", scores, ((LEFT, RIGHT),)))
    for profile in nab.PROFILES.values():
        result = nab.sweep(files, profile)
        candidates = sorted({s for f in files for s in f.scores[f.probation :]} | {1.1}, reverse=True)
        brute = [nab.raw_score(files, profile, t) for t in candidates]
        assert result.raw == pytest.approx(max(brute), abs=1e-9)
        assert result.threshold == candidates[int(np.argmax(brute))]


def test_windows_map_to_first_matching_row_without_reordering():
    stamps = pd.to_datetime(["2014-03-09 02:00", "2014-03-09 03:00", "2014-03-09 03:00", "2014-03-09 04:00"])
    windows = [["2014-03-09 03:00:00.000000", "2014-03-09 04:00:00.000000"]]
    assert nab.window_rows(stamps, windows) == [(1, 3)]
    with pytest.raises(ValueError, match="matches no row"):
        nab.window_rows(stamps, [["2014-03-09 05:00", "2014-03-09 06:00"]])


def test_scores_outside_unit_interval_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nab.LabelledFile("bad.csv", np.array([0.1, np.nan]), ())
