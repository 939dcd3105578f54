"""A scorecard after every event without anybody asking (#19.1): the sensor sees an occurrence end
(the tenant's YAML event, one posted to the service and kept in the store, or a recurring peak its
champion planner learned), the job scores it with the served champions, stores it in the Helios store
and logs it to MLflow; once only."""

from __future__ import annotations

import pandas as pd
from dagster import SkipReason, build_sensor_context
from mlflow import MlflowClient

from helios_pipelines.core.ml.tracking import Tracker
from helios_pipelines.core.ops import scorecard_store
from helios_pipelines.core.ops.scorecard import find_occurrence
from helios_pipelines.core.tenants import ScheduledEvent, load_tenants
from helios_pipelines.defs.automation import LiveAccuracyResource
from helios_pipelines.defs.resources import MLflowResource
from helios_pipelines.defs.scorecards import event_end_sensor, scorecard_job
from tests.conftest import AS_OF, FIXTURE_TENANTS, pipeline_resources

# Posted on Wednesday for a 2-hour drill that ended on Wednesday 2026-11-18 at 12:00 UTC.
DRILL = {"name": "Server Drill", "kind": "drill", "start": "2026-11-18T10:00:00Z", "duration_hours": 2,
         "multiplier": 1.5}


def test_finished_yaml_and_posted_events_are_scored_stored_and_logged_once_by_the_sensor(
        trained_arena, dagster_instance, helios_home, arena, tmp_path, monkeypatch, mlflow_uri):
    assert trained_arena.success
    tracking_uri = f"sqlite:///{helios_home / 'mlflow.db'}"  # the session's registry, holding arena's champions
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path))  # the store starts empty here
    live_accuracy = LiveAccuracyResource()
    store = live_accuracy.open_store()
    store.sync_customers(load_tenants(FIXTURE_TENANTS))
    drill = ScheduledEvent.model_validate(DRILL)  # as POST /events stores it
    store.add_event("arena", drill.name, drill.start, drill.model_dump(mode="json"))
    resources = pipeline_resources() | {"mlflow_tracking": MLflowResource(tracking_uri=tracking_uri),
                                        "live_accuracy": live_accuracy}

    # Before arena is trained (an empty registry) its finished events wait, named, rather than fail.
    untrained = event_end_sensor(build_sensor_context(
        instance=dagster_instance, resources=resources | {"mlflow_tracking": MLflowResource(tracking_uri=mlflow_uri)}))
    assert isinstance(untrained, SkipReason) and "not trained yet" in untrained.skip_message
    assert "arena" in untrained.skip_message

    # AS_OF is Friday 2026-11-20 00:00 UTC; arena's weekly tournament (Saturdays 14:00, 8 hours) last
    # ended on 2026-11-14 at 22:00, within the sensor's week; the posted drill ended on the 18th. Arena's
    # 8 days of history hold a daily evening peak (its champion planner learned it: core.ml.peaks), which
    # ended on each day of the week but the tournament's Saturday (the scheduled event wins).
    learned = scorecard_store.learned_schedule(Tracker(tracking_uri), "arena")
    (daily,) = learned.peaks
    requests = event_end_sensor(build_sensor_context(instance=dagster_instance, resources=resources))
    asked = sorted((r.partition_key, r.run_config["ops"]["score_finished_event"]["config"]["event"],
                    r.run_config["ops"]["score_finished_event"]["config"]["end"][:10]) for r in requests)
    assert asked == sorted([("arena", "Server Drill", "2026-11-18"), ("arena", "Weekend Tournament", "2026-11-14")]
                           + [("arena", daily.name, day) for day in ("2026-11-13", "2026-11-15", "2026-11-16",
                                                                     "2026-11-17", "2026-11-18", "2026-11-19")])
    assert len({r.run_key for r in requests}) == len(requests)

    # The scheduled events and the latest learned-peak occurrence are scored.
    latest_peak = max((r for r in requests if r.tags["helios/event"] == daily.name),
                      key=lambda r: r.run_config["ops"]["score_finished_event"]["config"]["end"])
    scheduled = [r for r in requests if r.tags["helios/event"] != daily.name]
    for request in [*scheduled, latest_peak]:
        result = scorecard_job.execute_in_process(run_config=request.run_config, partition_key="arena",
                                                  instance=dagster_instance, resources=resources)
        assert result.success
    card = scorecard_store.stored(store, arena, find_occurrence(arena, "Weekend Tournament", AS_OF))
    assert (pd.Timestamp(card.start), pd.Timestamp(card.end)) == (
        pd.Timestamp("2026-11-14T14:00Z"), pd.Timestamp("2026-11-14T22:00Z"))
    drill = scorecard_store.stored(store, arena, find_occurrence(arena, "Server Drill", AS_OF,
                                                                 scorecard_store.posted_events(store, "arena")))
    assert (drill.kind, len(drill.steps)) == ("drill", 2 * 60 // 5)  # arena's step is 5 minutes
    # The learned peak's scorecard is addressed by its name, as GET /events/<name>/scorecard does.
    peak = scorecard_store.stored_scorecard(store, arena, daily.name, AS_OF, learned=learned)
    assert (peak.event, peak.kind, len(peak.steps)) == (daily.name, "learned_peak", daily.minutes // 5)
    assert peak.end == latest_peak.run_config["ops"]["score_finished_event"]["config"]["end"]
    metadata = next(e.event_specific_data.metadata for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    run = MlflowClient(tracking_uri).get_run(metadata["mlflow_run"].value)
    assert run.data.tags["event"] == daily.name and run.data.tags["event_kind"] == "learned_peak"
    assert {a.path for a in MlflowClient(tracking_uri).list_artifacts(run.info.run_id)} >= {"scorecard.png", "scorecard.json"}

    # The next tick asks for none of them again: only the learned-peak occurrences not scored yet.
    again = event_end_sensor(build_sensor_context(instance=dagster_instance, resources=resources))
    assert sorted(r.run_key for r in again) == sorted(r.run_key for r in requests if r.tags["helios/event"] == daily.name
                                                     and r.run_key != latest_peak.run_key)
    store.close()


def test_the_sensor_reads_a_tenants_learned_peaks_from_the_registry_at_most_once_an_hour(arena, mlflow_uri):
    from helios_pipelines.core.ml.models.capacity import CapacityPlanner
    from helios_pipelines.core.ml.peaks import LearnedPeak, PeakSchedule
    from helios_pipelines.core.ml.tracking import CHAMPION, VersionTags, registered_model_name
    from helios_pipelines.defs.scorecards import learned_schedules

    tracker = Tracker(mlflow_uri)
    schedules, cursor = learned_schedules(None, ["arena"], tracker, wall_clock=0.0)
    assert schedules == {"arena": None}  # no champion planner yet

    peaks = PeakSchedule("concurrent_users", arena.timezone, (LearnedPeak("day", "19:00", 120, 1.5, 0.9),), "1 learned peak")
    name = registered_model_name("arena", "capacity_planner")
    with tracker.start_run("arena", "capacity planner"):
        version = tracker.log_model(CapacityPlanner.from_tenant(arena, peaks=peaks.to_dict()), name,
                                    tags=VersionTags(peaks=peaks.to_dict()))
    tracker.set_alias(name, CHAMPION, version.version)

    # Within the hour the cursor's reading stands; after it the registry is asked again.
    assert learned_schedules(cursor, ["arena"], tracker, wall_clock=3599.0)[0] == {"arena": None}
    assert learned_schedules(cursor, ["arena"], tracker, wall_clock=3600.0)[0] == {"arena": peaks}
