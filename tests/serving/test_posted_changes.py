"""Changes posted through ``POST /annotations`` (issue 17) as the feed keeps them: in the store, in the
runtime of the replica that received them at once, in every other replica's after its next sync, and
nothing stored for a change that is refused. Two feeds, each with its own runtime of the arena bundle,
over one store are two replicas; tests/serving/test_serving.py posts over real HTTP."""

from datetime import timedelta

import bentoml
import pandas as pd
import pytest

from helios_pipelines.core.ml.changes import ChangeAnnotation
from helios_pipelines.core.ops.migrations import upgrade
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.tenants import load_tenants
from serving.answers import annotations
from serving.errors import NotFoundError, RequestError
from serving.posted_events import EventFeed
from serving.runtime import TenantRuntime
from tests.conftest import FIXTURE_TENANTS


@pytest.fixture
def bundle(trained_arena) -> str:
    assert trained_arena.success
    return bentoml.models.get("helios-arena:latest").path


@pytest.fixture
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'helios.db'}")
    upgrade(opened.url)
    opened.sync_customers(load_tenants(FIXTURE_TENANTS))
    yield opened
    opened.close()


def _replica(store: Store, bundle: str) -> tuple[EventFeed, TenantRuntime]:
    runtime = TenantRuntime(bundle)
    return EventFeed(store, {"arena": runtime}), runtime


def _deploy(ago: str = "1h", minutes: int = 20, **fields) -> ChangeAnnotation:
    """A deploy as Grafana's body says it: epoch milliseconds, a deploy tag, a dashboard to draw it on."""
    start = pd.Timestamp.now(tz="UTC").floor("1min") - pd.Timedelta(ago)
    millis = start.value // 10**6
    return ChangeAnnotation(**{"time": millis, "timeEnd": millis + minutes * 60_000, "tags": ["deploy"],
                               "text": "checkout v2.3", "dashboardUID": "ops", "panelId": 4} | fields)


def test_a_change_posted_to_one_replica_is_applied_there_at_once_and_on_another_after_its_sync(store, bundle):
    (feed_a, a), (feed_b, b) = _replica(store, bundle), _replica(store, bundle)
    change = _deploy()
    answer = feed_a.post(a, change)

    assert answer == {"tenant": "arena", "posted": change.model_dump(mode="json"),
                      "window_end": (change.time + timedelta(minutes=20)).isoformat()}
    assert answer["posted"]["kind"] == "deploy" and "dashboardUID" not in answer["posted"]
    assert a.posted_changes == [change] and a.events_version == 1
    assert b.posted_changes == []
    feed_b.sync()
    assert b.posted_changes == [change] and b.events_version == 1
    feed_b.sync()  # read once: the next look finds nothing new
    feed_a.sync()
    assert (a.posted_changes, b.posted_changes) == ([change], [change])
    assert [ChangeAnnotation.model_validate(stored) for _, stored in store.changes_after("arena")] == [change]


def test_a_change_without_an_end_is_answered_with_the_end_of_the_detectors_rows_for_it(store, bundle):
    feed, runtime = _replica(store, bundle)
    at = pd.Timestamp.now(tz="UTC").floor("5min") - pd.Timedelta("1h") + pd.Timedelta("2min")
    answer = feed.post(runtime, ChangeAnnotation(time=at.to_pydatetime(), tags=["deploy"]))
    # arena's step is 5 minutes and the detector's level window 20 rows: from the next step, 100 minutes.
    assert answer["window_end"] == (at + pd.Timedelta("3min") + pd.Timedelta("100min")).isoformat()


def test_a_replica_starting_later_reads_the_changes_stored_before_it(store, bundle):
    feed_a, a = _replica(store, bundle)
    feed_a.post(a, _deploy(ago="3h"))
    feed_a.post(a, _deploy(ago="1h", text="checkout v2.4"))
    feed_c, c = _replica(store, bundle)
    feed_c.sync()  # as Host does on start
    assert [change.text for change in c.posted_changes] == ["checkout v2.3", "checkout v2.4"]


def test_a_changes_metrics_are_kept_by_their_logical_names(store, bundle):
    """The detector's rule compares the logical names: a series name posted would never match."""
    feed, runtime = _replica(store, bundle)
    answer = feed.post(runtime, _deploy(metrics=["game_server_active_players"]))
    assert answer["posted"]["metrics"] == ["concurrent_users"]
    assert runtime.posted_changes[0].metrics == ["concurrent_users"]
    assert store.changes_after("arena")[0][1]["metrics"] == ["concurrent_users"]


def test_a_change_naming_an_unknown_metric_is_a_404_naming_it_and_nothing_is_stored(store, bundle):
    feed, runtime = _replica(store, bundle)
    with pytest.raises(NotFoundError, match="mana_pool"):
        feed.post(runtime, _deploy(metrics=["concurrent_users", "mana_pool"]))
    assert (store.changes_after("arena"), runtime.posted_changes) == ([], [])


def test_a_change_that_ended_before_the_detectors_history_is_refused_and_not_read_back(store, bundle):
    feed, runtime = _replica(store, bundle)
    old = _deploy(ago="60D")
    with pytest.raises(RequestError, match=r"tenant 'arena': time_end \(Grafana's timeEnd\) is before .* can explain no alert"):
        feed.post(runtime, old)
    assert store.changes_after("arena") == []
    # Stored back when it still mattered, it is not kept when a replica reads it now.
    store.add_change("arena", old.time, old.model_dump(mode="json"))
    recent = _deploy()
    feed.post(runtime, recent)
    assert runtime.posted_changes == [recent]
    assert len(store.changes_after("arena")) == 2


def test_a_scaling_after_the_detectors_training_is_kept_while_the_detector_divides_it_out(store, bundle):
    """Older than the history the detector reads, a scaling after its training still rescales the
    per-replica metrics it names (changes.rescaled): kept; a deploy then, or a scaling inside the
    training history, is refused."""
    feed, runtime = _replica(store, bundle)
    trained = runtime.detector.learned_until
    runtime.history_span = runtime.step_end() - (trained + pd.Timedelta("1D"))  # reads from a day after training

    def change(at: pd.Timestamp, **fields) -> ChangeAnnotation:
        return ChangeAnnotation(time=at.to_pydatetime(), time_end=(at + pd.Timedelta("10min")).to_pydatetime(), **fields)

    scaling = {"kind": "scale", "replicas_before": 4, "replicas_after": 8, "metrics": ["cpu_usage"]}
    kept = change(trained + pd.Timedelta("2h"), **scaling)
    feed.post(runtime, kept)
    for refused in (change(trained + pd.Timedelta("2h"), kind="deploy"), change(trained - pd.Timedelta("2h"), **scaling)):
        with pytest.raises(RequestError, match="the change can explain no alert"):
            feed.post(runtime, refused)
    assert runtime.posted_changes == [kept]
    assert len(store.changes_after("arena")) == 1


def test_a_tenants_changes_the_detector_still_reads_are_bounded_and_the_one_refused_is_not_stored(
        store, bundle, monkeypatch):
    monkeypatch.setattr(annotations, "MAX_POSTED_CHANGES", 2)
    feed, runtime = _replica(store, bundle)
    oldest, older, newest = _deploy(ago="3h"), _deploy(ago="2h"), _deploy(ago="1h")
    feed.post(runtime, oldest)
    feed.post(runtime, older)
    with pytest.raises(RequestError, match="tenant 'arena' already has 2 posted changes its detector still reads"):
        feed.post(runtime, newest)
    assert len(store.changes_after("arena")) == len(runtime.posted_changes) == 2
    # Once the oldest has left the history the detector reads, it no longer counts, and the runtime
    # drops it (the store keeps it).
    runtime.history_span = pd.Timedelta("150min")
    feed.post(runtime, newest)
    assert len(store.changes_after("arena")) == 3
    assert runtime.posted_changes == [older, newest]
