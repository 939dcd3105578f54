"""The served fast path: a step's finished answers are cached and are the answers a fresh runtime
computes."""

import bentoml
import pandas as pd
import pytest

from helios_pipelines.core.tenants import ScheduledEvent
from serving.runtime import NotFoundError, RequestError, TenantRuntime
from tests.conftest import AS_OF

NOW = AS_OF + pd.Timedelta("1D2h7min")  # inside a step, a live day after the training window


@pytest.fixture
def bundle(trained_arena) -> str:
    assert trained_arena.success
    return bentoml.models.get("helios-arena:latest").path


def test_a_steps_answers_are_cached_and_equal_a_fresh_computation(bundle):
    runtime = TenantRuntime(bundle)
    assert runtime.cached_answer("predict", "concurrent_users", 60, now=NOW) is None
    answer = runtime.predict("concurrent_users", 60, now=NOW)
    assert runtime.cached_answer("predict", "concurrent_users", 60, now=NOW) == answer
    assert runtime.cached_answer("predict", "concurrent_users", 60, now=NOW + runtime.step) is None
    answer["value"] = -1.0  # a caller's copy: the cache keeps its own
    assert runtime.cached_answer("predict", "concurrent_users", 60, now=NOW)["value"] != -1.0

    recommendations = [runtime.recommend("game-server", replicas, now=NOW) for replicas in (None, 5, 150)]
    fresh = [TenantRuntime(bundle).recommend("game-server", replicas, now=NOW) for replicas in (None, 5, 150)]
    assert recommendations == fresh
    assert runtime.cached_answer("recommend", "game-server", 150, now=NOW) == fresh[2]
    assert TenantRuntime(bundle).predict("concurrent_users", 60, now=NOW) == runtime.predict("concurrent_users", 60, now=NOW)


def test_errors_are_not_cached_and_a_posted_event_invalidates(bundle):
    runtime = TenantRuntime(bundle)
    with pytest.raises(NotFoundError):
        runtime.predict("no_such_metric", 60, now=NOW)
    with pytest.raises(RequestError):
        runtime.recommend("game-server", -1, now=NOW)
    assert runtime.cached_answer("recommend", "game-server", -1, now=NOW) is None

    before = runtime.predict("concurrent_users", 60, now=NOW)
    target = pd.Timestamp(before["target_time"])
    runtime.post_event(ScheduledEvent(name="Launch", start=(target - pd.Timedelta("1h")).to_pydatetime(),
                                      duration_hours=4, multiplier=3.0))
    assert runtime.cached_answer("predict", "concurrent_users", 60, now=NOW) is None
    after = runtime.predict("concurrent_users", 60, now=NOW)
    assert after["events"] == ["Launch"] and after["value"] > before["value"]
