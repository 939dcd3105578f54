import numpy as np
import pytest

from helios_pipelines.core.ml.validation import validate_metrics
from helios_pipelines.core.sources.simulator import Simulator, history_window
from tests.conftest import AS_OF


@pytest.fixture(scope="module")
def frame(arena):
    return Simulator(arena).fetch(*history_window(arena, AS_OF))


def test_clean_history_passes(arena, frame):
    summary = validate_metrics(frame, arena)
    assert summary.success, summary.report()
    assert summary.rows == 8 * 288
    assert summary.coverage["concurrent_users"] > 0.98


def test_low_coverage_of_a_trained_metric_blocks_and_names_it(arena, frame):
    broken = frame.copy()
    broken.iloc[: len(frame) // 3, broken.columns.get_loc("queue_length")] = np.nan
    summary = validate_metrics(broken, arena)
    assert not summary.success
    [failure] = summary.blocking_failures
    assert failure.column == "queue_length"
    assert "queue_length" in summary.report() and "FAILED (blocking)" in summary.report()
    assert summary.longest_gap_steps["queue_length"] >= len(frame) // 3


def test_a_missing_metric_and_shuffled_time_block(arena, frame):
    summary = validate_metrics(frame.drop(columns=["cpu_usage"]).iloc[::-1], arena)
    names = {(c.name, c.column) for c in summary.blocking_failures}
    assert ("column present", "cpu_usage") in names
    assert ("expect_column_values_to_be_increasing", "timestamp") in names


def test_out_of_range_values_warn_without_blocking(arena, frame):
    negative = frame.copy()
    negative.iloc[:100, negative.columns.get_loc("concurrent_users")] = -5.0
    summary = validate_metrics(negative, arena)
    assert summary.success
    assert [w.column for w in summary.warnings] == ["concurrent_users"]


def test_too_little_history_blocks(arena, frame):
    summary = validate_metrics(frame.iloc[:100], arena)
    assert [c.name for c in summary.blocking_failures] == ["expect_table_row_count_to_be_between"]
