"""`helios models list|compare|promote|rollback` against a temporary MLflow registry holding
seasonal-naive models logged by the Tracker, as the pipeline would have left them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from helios_pipelines.cli import main
from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive
from helios_pipelines.core.ml.review import HISTORY_TAG, champion_history
from helios_pipelines.core.ml.tracking import (
    CHALLENGER,
    CHAMPION,
    Tracker,
    VersionTags,
    registered_model_name,
)
from tests.conftest import FIXTURE_TENANTS

TENANT = "arena"
NAME = registered_model_name(TENANT, "forecaster", "concurrent_users")
# (MASE, promoted by the pipeline): v1 and v2 were promoted automatically, v3 waits for review.
VERSIONS = [(0.91, True), (0.84, True), (0.78, False)]


def _series() -> pd.Series:
    index = pd.date_range("2026-11-01", periods=3 * 24, freq="1h", tz="UTC")
    return pd.Series(100 + 10 * np.sin(np.arange(len(index)) * 2 * np.pi / 24), index=index)


@pytest.fixture(scope="module")
def seeded_registry(tmp_path_factory):
    """A registry as three training runs leave it; built once, copied for every test."""
    root = tmp_path_factory.mktemp("registry")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
    model = SeasonalNaive(step="1h", max_horizon=4, metric="concurrent_users").fit(_series())
    for mase, promoted in VERSIONS:
        with tracker.start_run(TENANT, "forecaster concurrent_users"):
            version = tracker.log_model(model, NAME, tags=VersionTags(
                metric="concurrent_users",
                data_start="2026-11-01 00:00:00+00:00",
                data_end="2026-11-03 23:00:00+00:00",
                source="simulator",
                backtest={"mase": mase, "smape": mase / 10, "coverage_80": 0.8},
                baseline_backtest={"mase": 1.0, "smape": 0.1, "coverage_80": 0.7},
            ))
        reason = "beats the champion" if promoted else "manual review: would promote (beats the champion)"
        tracker.tag_version(NAME, version.version, VersionTags(promotion={"promoted": promoted, "reason": reason}))
        if promoted:
            tracker.set_alias(NAME, CHAMPION, version.version)
    return root / "mlflow.db"


@pytest.fixture
def tracker(seeded_registry, tmp_path, monkeypatch) -> Tracker:
    database = tmp_path / "mlflow.db"
    shutil.copy(seeded_registry, database)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    return Tracker()


def helios(*args: str):
    result = CliRunner().invoke(main, ["--config-dir", str(FIXTURE_TENANTS), "models", *args])
    return result


def champion(tracker: Tracker) -> str:
    return tracker.version_by_alias(NAME, CHAMPION).version


def test_list_shows_champion_and_challenger_with_their_backtest_numbers(tracker):
    result = helios("list", TENANT)
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line.split() for line in result.output.splitlines() if line.startswith(NAME)}
    assert lines[CHAMPION][2:6] == ["2", "seasonal_naive", "0.840", "0.084"]
    assert lines[CHALLENGER][2:6] == ["3", "seasonal_naive", "0.780", "0.078"]


def test_compare_puts_the_challenger_beside_the_champion(tracker):
    result = helios("compare", TENANT, "concurrent_users")
    assert result.exit_code == 0, result.output
    rows = {line[2:20].strip(): line[20:].split() for line in result.output.splitlines() if line.startswith("  ")}
    assert rows["version"] == ["2", "3"]
    assert rows["backtest MASE"] == ["0.840", "0.780"]
    assert rows["baseline MASE"] == ["1.000", "1.000"]
    assert rows["interval coverage"] == ["0.80", "0.80"]
    assert rows["source"] == ["simulator", "simulator"]
    assert "2026-11-01" in " ".join(rows["data window"])
    assert "manual review: would promote" in result.output


def test_promote_moves_champion_to_the_challenger_and_records_who_and_why(tracker):
    result = helios("promote", TENANT, "concurrent_users", "--by", "ana", "--reason", "reviewed the plot")
    assert result.exit_code == 0, result.output
    assert champion(tracker) == "3"
    review = tracker.get_version(NAME, "3").tags.review
    assert (review["action"], review["by"], review["reason"]) == ("promoted", "ana", "reviewed the plot")
    assert champion_history(tracker, NAME) == ["1", "2", "3"]
    assert "promoted by ana: reviewed the plot" in helios("compare", TENANT, NAME).output


def test_rollback_is_one_command_and_goes_further_back_each_time(tracker):
    helios("promote", TENANT, NAME, "--by", "ana", "--reason", "looks better")
    result = helios("rollback", TENANT, "concurrent_users", "--by", "sre", "--reason", "live MASE doubled")
    assert result.exit_code == 0, result.output
    assert champion(tracker) == "2"
    # v2 was promoted by the pipeline, not by hand: the history still knows v1 came before it.
    assert helios("rollback", TENANT, NAME, "--by", "sre", "--reason", "v2 too").exit_code == 0
    assert champion(tracker) == "1"
    assert json.loads(tracker.client.get_registered_model(NAME).tags[HISTORY_TAG]) == ["1"]
    third = helios("rollback", TENANT, NAME, "--by", "sre", "--reason", "again")
    assert third.exit_code == 1 and "no previous champion" in third.output
    assert champion(tracker) == "1"


def test_a_rolled_back_version_can_be_promoted_again_by_version(tracker):
    helios("rollback", TENANT, NAME, "--by", "sre", "--reason", "regression")
    assert champion(tracker) == "1"
    assert helios("promote", TENANT, NAME, "--version", "2", "--by", "ana", "--reason", "fixed upstream").exit_code == 0
    assert champion(tracker) == "2"
    assert not tracker.get_version(NAME, "2").tags.rolled_back
    assert "rolled_back" not in tracker.client.get_model_version(NAME, "2").tags  # the tag itself is gone
    assert champion_history(tracker, NAME) == ["1", "2"]


def test_refusals_leave_the_champion_where_it_was(tracker):
    unknown_version = helios("promote", TENANT, NAME, "--version", "9", "--reason", "typo")
    assert unknown_version.exit_code == 1
    already = helios("promote", TENANT, NAME, "--version", "2", "--reason", "again")
    assert already.exit_code == 1 and "already the champion" in already.output
    unknown_model = helios("compare", TENANT, "queue_length")
    assert unknown_model.exit_code == 1 and NAME in unknown_model.output
    no_reason = helios("rollback", TENANT, NAME)
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    assert champion(tracker) == "2"
