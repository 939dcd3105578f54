"""MLflow naming and experiments, against a real MLflow store."""

import ast
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import text

from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive
from helios_pipelines.core.ml.tracking import CHALLENGER, CHAMPION, Tracker, VersionTags
from tests.harness.store_backends import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]


def test_an_experiment_another_step_created_first_is_reused(mlflow_uri, monkeypatch):
    """The multiprocess executor runs a tenant's detector and candidates side by side; both may find
    no experiment and try to create it. The one that loses the race uses the winner's."""
    winner = Tracker(mlflow_uri).experiment_id("duel")
    loser = Tracker(mlflow_uri)
    looked_up = []
    real_lookup = loser.client.get_experiment_by_name

    def lookup_racing_the_winner(name):
        looked_up.append(name)
        return None if len(looked_up) == 1 else real_lookup(name)  # the first look came before the winner's create

    monkeypatch.setattr(loser.client, "get_experiment_by_name", lookup_racing_the_winner)
    assert loser.experiment_id("duel") == winner
    assert looked_up == ["helios/duel", "helios/duel"]


def test_a_tracking_uri_as_the_platforms_secret_writes_it_reaches_mlflow_on_postgresql(postgres_admin, tmp_path):
    """The README and the platform's Secret give MLFLOW_TRACKING_URI as postgresql://...: SQLAlchemy 2.1
    reads that as psycopg 3, which Helios does not install, so it must reach the psycopg2 Helios ships."""
    database = f"helios_mlflow_{uuid.uuid4().hex[:10]}"
    admin = postgres_admin.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        server = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
        tracker = Tracker(f"postgresql://postgres@{server}/{database}", artifact_root=tmp_path.as_uri())
        experiment = tracker.experiment_id("duel")
        assert tracker.client.get_experiment(experiment).name == "helios/duel"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{database}" WITH (FORCE)'))


def _registered_version(tracker: Tracker, name: str) -> str:
    """A bare registered version (no model logged: only its tags matter here)."""
    tracker.client.create_registered_model(name)
    return tracker.client.create_model_version(name, source="file:///nowhere").version


def test_version_tags_are_stored_as_the_mlflow_ui_shows_them_and_read_back_typed(mlflow_uri):
    tracker = Tracker(mlflow_uri)
    version = _registered_version(tracker, "duel_players_forecaster")
    tracker.tag_version("duel_players_forecaster", version, VersionTags(
        kind="prophet", source="push", backtest={"mase": 0.8}, backtest_mase="0.8000",
        promotion={"promoted": True, "reason": "beats the champion"}))
    stored = tracker.client.get_model_version("duel_players_forecaster", version).tags
    assert stored == {"kind": "prophet", "source": "push", "backtest": '{"mase": 0.8}', "backtest_mase": "0.8000",
                      "promotion": '{"promoted": true, "reason": "beats the champion"}'}
    tags = tracker.get_version("duel_players_forecaster", version).tags
    assert (tags.kind, tags.backtest, tags.promotion["promoted"], tags.review) == ("prophet", {"mase": 0.8}, True, None)


def test_a_later_tagging_step_keeps_the_earlier_tags_and_rolled_back_can_be_taken_off(mlflow_uri):
    tracker = Tracker(mlflow_uri)
    version = _registered_version(tracker, "duel_anomaly_detector")
    tracker.tag_version("duel_anomaly_detector", version, VersionTags(kind="ensemble", evaluation={"recall": 1.0}))
    tracker.tag_version("duel_anomaly_detector", version, VersionTags(rolled_back=True))
    tags = tracker.get_version("duel_anomaly_detector", version).tags
    assert (tags.kind, tags.evaluation, tags.rolled_back) == ("ensemble", {"recall": 1.0}, True)
    tracker.tag_version("duel_anomaly_detector", version, VersionTags(rolled_back=False))
    assert "rolled_back" not in tracker.client.get_model_version("duel_anomaly_detector", version).tags
    assert tracker.get_version("duel_anomaly_detector", version).tags.kind == "ensemble"


def test_a_structured_tag_edited_by_hand_into_non_json_reads_as_missing_and_foreign_tags_are_ignored():
    tags = VersionTags.from_tags({"kind": "xgboost", "backtest": "{cut at 5000 chars", "evaluation": "[1, 2]",
                                  "owner": "set in the MLflow UI"})
    assert (tags.kind, tags.backtest, tags.evaluation) == ("xgboost", None, None)


# Reading or writing a version's tags anywhere but core/ml/tracking.py bypasses the schema.
_RAW_VERSION_TAG_CALLS = {"set_model_version_tag", "delete_model_version_tag", "get_model_version",
                          "get_model_version_by_alias", "search_model_versions"}


def test_version_tags_are_written_and_parsed_only_through_the_schema():
    offenders = []
    for package in ("helios_pipelines", "serving"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "helios_pipelines/core/ml/tracking.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in _RAW_VERSION_TAG_CALLS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {node.attr}")
                # tags.get("kind") / tags["kind"]: a raw tag dict read by key
                looked_up = node.value if isinstance(node, ast.Subscript) else (
                    node.value if isinstance(node, ast.Attribute) and node.attr == "get" else None)
                if isinstance(looked_up, ast.BoolOp):  # (version.tags or {}).get("kind")
                    looked_up = looked_up.values[0]
                if isinstance(looked_up, ast.Attribute) and looked_up.attr == "tags" or (
                        isinstance(looked_up, ast.Name) and looked_up.id == "tags"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} reads a raw tag")
    assert not offenders, "use VersionTags (core/ml/tracking.py):\n" + "\n".join(offenders)


def test_a_step_that_fails_after_registering_and_is_retried_leaves_one_version(mlflow_uri):
    """Issue #16 (faults): a step registers its model and then fails (as when its worker dies after
    registering); Dagster's retry policy runs it again, twice. Each run leaves exactly one version, its
    last attempt's, holding the challenger alias; a later run leaves the earlier run's version alone."""
    from dagster import AssetExecutionContext, RetryPolicy, asset, materialize

    from helios_pipelines.defs.resources import MLflowResource

    name = "duel_players_forecaster"
    index = pd.date_range("2026-11-17", periods=3 * 288, freq="5min", tz="UTC")
    model = SeasonalNaive(step="5min", max_horizon=12, metric="players").fit(
        pd.Series(np.arange(len(index), dtype=float), index=index))

    @asset(retry_policy=RetryPolicy(max_retries=2))
    def forecaster(context: AssetExecutionContext, mlflow_tracking: MLflowResource) -> str:
        tracker = mlflow_tracking.tracker()
        with tracker.start_run("duel", "forecaster players"):
            version = tracker.log_model(model, name)
        if context.retry_number < 2:
            raise RuntimeError("the worker died after registering")
        return version.version

    runs = [materialize([forecaster], resources={"mlflow_tracking": MLflowResource(tracking_uri=mlflow_uri)})
            for _ in range(2)]
    assert all(run.success for run in runs)
    tracker = Tracker(mlflow_uri)
    assert [(v.version, v.tags.dagster_run) for v in tracker.versions(name)] == [
        (run.output_for_node("forecaster"), run.run_id) for run in runs]
    assert tracker.version_by_alias(name, CHALLENGER).version == runs[1].output_for_node("forecaster")


def test_a_retry_keeps_an_earlier_attempts_version_that_an_alias_or_a_promotion_decision_holds(mlflow_uri):
    """What a retry discards is only what nothing refers to: a version serving (an alias) or judged
    (a promotion decision, e.g. a rejected challenger of a re-executed run) stays."""
    tracker = Tracker(mlflow_uri, dagster_run="run-1")
    index = pd.date_range("2026-11-17", periods=3 * 288, freq="5min", tz="UTC")
    model = SeasonalNaive(step="5min", max_horizon=12, metric="players").fit(
        pd.Series(np.arange(len(index), dtype=float), index=index))
    name = "duel_players_forecaster"
    with tracker.start_run("duel", "forecaster players"):
        served = tracker.log_model(model, name).version
        tracker.set_alias(name, CHAMPION, served)
        judged = tracker.log_model(model, name).version
        tracker.tag_version(name, judged, VersionTags(promotion={"promoted": False, "reason": "worse"}))
        orphan = tracker.log_model(model, name).version
        last = tracker.log_model(model, name).version
    assert [v.version for v in tracker.versions(name)] == [served, judged, last]
    assert orphan not in (served, judged, last)


def test_logging_a_model_prints_nothing_and_keeps_mlflows_registration_lines_in_the_debug_log(mlflow_uri, capsys, caplog):
    """Issue #20.5: a newcomer's `helios run` shows one line per asset; MLflow's own "Successfully
    registered model" and "Created version" lines go to the log, not the terminal."""
    index = pd.date_range("2026-11-17", periods=3 * 288, freq="5min", tz="UTC")
    model = SeasonalNaive(step="5min", max_horizon=12, metric="players").fit(
        pd.Series(np.arange(len(index), dtype=float), index=index))
    tracker = Tracker(mlflow_uri)
    capsys.readouterr()
    with caplog.at_level("DEBUG", logger="helios_pipelines.core.ml.tracking"), tracker.start_run("duel", "quiet"):
        version = tracker.log_model(model, "duel_players_forecaster")
    printed = capsys.readouterr()
    assert "registered model" not in printed.err + printed.out
    assert "Created version" not in printed.err + printed.out
    assert f"Created version '{version.version}' of model 'duel_players_forecaster'." in caplog.messages
