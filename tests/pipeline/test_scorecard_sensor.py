"""A scorecard after every event without anybody asking (#19.1): the sensor sees an occurrence end,
the job scores it with the served champions, stores it and logs it to MLflow; once only."""

from __future__ import annotations

import pandas as pd
from dagster import SkipReason, build_sensor_context
from mlflow import MlflowClient

from helios_pipelines.core.ops import scorecard_store
from helios_pipelines.core.ops.scorecard import find_occurrence
from helios_pipelines.defs.automation import LiveAccuracyResource
from helios_pipelines.defs.resources import MLflowResource
from helios_pipelines.defs.scorecards import event_end_sensor, scorecard_job
from tests.conftest import AS_OF, pipeline_resources


def test_a_finished_event_is_scored_stored_and_logged_once_by_the_sensor(
        trained_arena, dagster_instance, helios_home, arena, tmp_path, monkeypatch):
    assert trained_arena.success
    tracking_uri = f"sqlite:///{helios_home / 'mlflow.db'}"  # the session's registry, holding arena's champions
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path))  # scorecards and the store start empty here
    resources = pipeline_resources() | {"mlflow_tracking": MLflowResource(tracking_uri=tracking_uri),
                                        "live_accuracy": LiveAccuracyResource()}

    # AS_OF is Friday 2026-11-20 00:00 UTC; arena's weekly tournament (Saturdays 14:00, 8 hours) last
    # ended on 2026-11-14 at 22:00, within the sensor's week.
    requests = event_end_sensor(build_sensor_context(instance=dagster_instance, resources=resources))
    assert [(r.partition_key, r.run_config["ops"]["score_finished_event"]["config"]) for r in requests] == [
        ("arena", {"event": "Weekend Tournament", "end": "2026-11-14T22:00:00+00:00"})]

    result = scorecard_job.execute_in_process(run_config=requests[0].run_config, partition_key="arena",
                                              instance=dagster_instance, resources=resources)
    assert result.success
    card = scorecard_store.stored("arena", find_occurrence(arena, "Weekend Tournament", AS_OF))
    assert (pd.Timestamp(card.start), pd.Timestamp(card.end)) == (
        pd.Timestamp("2026-11-14T14:00Z"), pd.Timestamp("2026-11-14T22:00Z"))
    metadata = next(e.event_specific_data.metadata for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    run = MlflowClient(tracking_uri).get_run(metadata["mlflow_run"].value)
    assert run.data.tags["event"] == "Weekend Tournament"
    assert {a.path for a in MlflowClient(tracking_uri).list_artifacts(run.info.run_id)} >= {"scorecard.png", "scorecard.json"}

    again = event_end_sensor(build_sensor_context(instance=dagster_instance, resources=resources))
    assert isinstance(again, SkipReason)
