"""The served fast path: a step's finished answers are cached and are the answers a fresh runtime
computes, and the request timeout that replaces BentoML's answers 504 and leaves no timer behind."""

import asyncio
import json

import bentoml
import pandas as pd
import pytest

from helios_pipelines.core.tenants import ScheduledEvent
from serving.runtime import NotFoundError, RequestError, TenantRuntime
from serving.timeout import RequestTimeout
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


async def _call(app, timeout: float) -> tuple[list[dict], int]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await RequestTimeout(app, timeout=timeout)({"type": "http", "method": "POST", "path": "/predict"}, receive, send)
    # asyncio drops cancelled timers lazily; what matters is that none is still armed.
    return sent, sum(not timer.cancelled() for timer in asyncio.get_running_loop()._scheduled)


def test_request_timeout_answers_504_and_cancels_its_timer():
    async def fast(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def stuck(scope, receive, send):
        await asyncio.sleep(60)

    sent, armed = asyncio.run(_call(fast, timeout=30))
    assert sent[0]["status"] == 200 and armed == 0  # no timer outlives the request

    sent, _ = asyncio.run(_call(stuck, timeout=0.05))
    assert sent[0]["status"] == 504
    assert json.loads(sent[1]["body"]) == {"error": "Not able to process the request in 0.05 seconds"}
