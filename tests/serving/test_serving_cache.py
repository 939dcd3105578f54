"""The served fast path: a step's finished answers are cached and are the answers a fresh runtime
computes; the publisher's refresh computes a step's answers before they are asked, so a request at a
step boundary is a cache lookup; /detect's recording waits off the request path for the publisher's
flush; and the request timeout that replaces BentoML's answers 504, leaves no timer behind, and is the
one `bentoml serve` runs."""

import asyncio
import json
import threading

import bentoml
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event

from helios_pipelines.core.ops.migrations import upgrade
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.tenants import ScheduledEvent, TenantRegistry
from serving import detections
from serving.answers import detect, predict, recommend
from serving.detections import DetectionRecorder
from serving.errors import NotFoundError, RequestError
from serving.publisher import GaugeBoard, refresh
from serving.runtime import TenantRuntime
from serving.step_cache import StepCache
from serving.timeout import RequestTimeout, replace_bentoml_timeout
from tests.conftest import AS_OF
from tests.harness.serve_harness import bentoml_serve

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


@pytest.fixture
def computed(monkeypatch) -> list[str]:
    """The answers computed (not read from the cache), by kind, in order."""
    calls: list[str] = []
    for module, name in ((predict, "predict"), (recommend, "recommend"), (detect, "detect")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _real=real, _name=name, **kwargs:
                            calls.append(_name) or _real(*args, **kwargs))
    return calls


ASKED = [("predict", "concurrent_users", 60), ("recommend", "game-server", 150), ("detect", ("cpu_usage",))]


def test_after_the_refresh_of_a_step_its_requests_are_answered_without_computing(bundle, computed):
    """#20.3: the clock is the ``now`` each call is given; the publisher's refresh runs just after a boundary."""
    runtime = TenantRuntime(bundle)
    board, series = GaugeBoard(CollectorRegistry()), lambda r, now: r.samples(now)
    t = NOW.floor(runtime.step)
    after = t + runtime.step  # the next boundary
    assert refresh(board, [runtime], series, now=t + pd.Timedelta("1s")) == {}
    runtime.predict("concurrent_users", 60, now=t)  # clients ask during step t: computed once
    runtime.recommend("game-server", 150, now=t)
    runtime.detect(["cpu_usage"], now=t)
    computed.clear()

    # At the boundary, before the refresh: step t's answers, looked up, nothing computed.
    stale = [runtime.cached_answer(kind, *request, now=after) for kind, *request in ASKED]
    assert all(answer is not None for answer in stale) and computed == []
    assert pd.Timestamp(stale[0]["origin"]) == t

    assert refresh(board, [runtime], series, now=after + pd.Timedelta("1s")) == {}
    assert computed  # the refresh computed step t+1's answers (and series), off the request path
    computed.clear()
    answers = [runtime.cached_answer(kind, *request, now=after + pd.Timedelta("30s")) for kind, *request in ASKED]
    assert all(answer is not None for answer in answers) and computed == []
    fresh = TenantRuntime(bundle)  # what a runtime computing at the request gives
    assert answers == [fresh.predict("concurrent_users", 60, now=after), fresh.recommend("game-server", 150, now=after),
                       fresh.detect(["cpu_usage"], now=after)]
    assert pd.Timestamp(answers[0]["origin"]) == after
    # Two steps on with no refresh (the publisher stuck): the request computes rather than answer older steps.
    assert runtime.cached_answer("predict", "concurrent_users", 60, now=after + 2 * runtime.step) is None


def test_detect_on_a_cached_step_writes_nothing_on_the_request_path_and_each_metric_once_at_the_flush(
        bundle, tmp_path, monkeypatch):
    """#20.4: what the service does for a /detect of the latest step (serving/service.py ``_cached_detect``)."""
    runtime = TenantRuntime(bundle)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(store.url)
    store.sync_customers(TenantRegistry({runtime.tenant.id: runtime.tenant}, []))
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))
    recorded: list[dict] = []
    real = detections.record_detection
    monkeypatch.setattr(detections, "record_detection", lambda store, tenant, result, detected_by:
                        recorded.append(result) or real(store, tenant, result, detected_by=detected_by))
    recorder = DetectionRecorder(store)
    runtime.detect(now=NOW)  # the step's scores, as the publisher's refresh computes them
    runtime.detect(["cpu_usage"], now=NOW)

    for names in [(), ("cpu_usage",)] * 20:
        recorder.queue(runtime.tenant, runtime.cached_answer("detect", names, now=NOW))
    assert statements == []  # 40 requests, no store access

    assert recorder.flush() == 3
    [result] = recorded  # one write for the tenant, each watched metric of the one step once
    step = NOW.floor(runtime.step).isoformat()
    assert sorted((s["metric"], s["timestamp"]) for s in result["scores"]) == [
        ("concurrent_users", step), ("cpu_usage", step), ("queue_length", step)]
    assert statements and recorder.flush() == 0  # written once; nothing left

    bounded = DetectionRecorder(store, max_pending=2)
    bounded.queue(runtime.tenant, runtime.cached_answer("detect", (), now=NOW))
    assert bounded.dropped == 1 and bounded.flush() == 2
    store.close()


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
    assert json.loads(sent[1]["body"]) == {
        "error": "POST /predict was not answered within 0.05 seconds (the service's traffic timeout)"}


@pytest.mark.slow
def test_bentoml_serve_runs_the_replacement_timeout(tmp_path):
    """Not a unit test of the class: a real `bentoml serve` with a 1 s traffic timeout answers a 3 s
    request with the replacement's own 504 (BentoML's says 'Not able to process the request')."""
    with bentoml_serve(tmp_path, service="tests.fixtures.timeout_service:Slow") as client:
        assert client.post("/wait", json={"seconds": 0}).json() == {"waited": 0}
        late = client.post("/wait", json={"seconds": 3})
        assert late.status_code == 504
        assert late.json() == {"error": "POST /wait was not answered within 1 seconds (the service's traffic timeout)"}


def test_the_timeout_patch_fails_loudly_when_bentoml_moves_its_middleware(monkeypatch):
    from bentoml._internal.server.http import traffic

    monkeypatch.delattr(traffic, "TimeoutMiddleware")
    with pytest.raises(RuntimeError, match="serving/timeout.py must follow it"):
        replace_bentoml_timeout()


def test_the_step_cache_keeps_the_newest_two_steps_each_bounded_least_recently_used_out():
    step = pd.Timedelta("1min")
    t0, t1, t2 = NOW.floor(step), NOW.floor(step) + step, NOW.floor(step) + 2 * step
    cache = StepCache(per_step=2, steps=2)
    for key in ("a", "b"):
        cache.put(t0, key, key.upper())
    assert cache.get(t0, "a") == "A"  # "a" is now the most recently used
    cache.put(t0, "c", "C")
    assert (cache.get(t0, "a"), cache.get(t0, "b"), cache.get(t0, "c")) == ("A", None, "C")
    cache.put(t1, "a", "A1")
    cache.put(t2, "a", "A2")  # a third step: the oldest goes
    assert cache.get(t0, "a") is None and cache.get(t1, "a") == "A1" and cache.get(t2, "a") == "A2"
    assert cache.put(t0, "late", "L") == "L" and cache.get(t0, "late") is None  # older than every kept step
    assert len(cache) == 2
    calls = []
    assert cache.get_or_compute(t2, "x", lambda: calls.append(1) or "X") == "X"
    assert cache.get_or_compute(t2, "x", lambda: calls.append(1) or "Y") == "X" and calls == [1]


def test_concurrent_misses_of_one_key_compute_it_once_and_every_caller_gets_that_result():
    """The publisher's refresh and a request asking for the same step at once: one computes, the other
    waits for its result (they computed side by side, sharing half-built frames)."""
    step = NOW.floor("1min")
    cache = StepCache()
    started, release, calls = threading.Event(), threading.Event(), []

    def slow_scores():
        calls.append(threading.current_thread().name)
        started.set()
        release.wait(5)
        return "scores"

    answers = []
    first = threading.Thread(target=lambda: answers.append(cache.get_or_compute(step, "scores", slow_scores)))
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=lambda: answers.append(cache.get_or_compute(step, "scores", slow_scores)))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waiting for the first computation, not running its own
    release.set()
    first.join(5), second.join(5)
    assert answers == ["scores", "scores"] and len(calls) == 1


def test_a_waiter_computes_its_own_when_the_first_computation_fails():
    step = NOW.floor("1min")
    cache = StepCache()
    started, release = threading.Event(), threading.Event()

    def failing():
        started.set()
        release.wait(5)
        raise RuntimeError("the source was down")

    errors, answers = [], []
    first = threading.Thread(target=lambda: _record(errors, lambda: cache.get_or_compute(step, "k", failing)))
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=lambda: answers.append(cache.get_or_compute(step, "k", lambda: "second")))
    second.start()
    release.set()
    first.join(5), second.join(5)
    assert [str(e) for e in errors] == ["the source was down"] and answers == ["second"]
    assert cache.get(step, "k") == "second"


def _record(errors: list, call) -> None:
    try:
        call()
    except RuntimeError as exc:
        errors.append(exc)


def test_a_cached_frame_has_its_lookup_tables_built_before_other_threads_read_it():
    """pandas builds an index's hash table on first lookup, and two threads building it at once can
    raise KeyError for a label that is there (pandas-dev/pandas#21150): what the cache shares is built."""
    index = pd.date_range(NOW.floor("1min"), periods=30, freq="1min")
    scores = pd.DataFrame({"players": range(30), "latency": range(30)}, index=index, dtype=float)
    alerts = scores > 10
    StepCache().put(NOW.floor("1min"), "scores", (scores, alerts))
    for frame in (scores, alerts):
        assert frame.index._engine.is_mapping_populated and frame.columns._engine.is_mapping_populated


def test_each_step_fetches_only_the_recent_day_and_its_history_is_the_whole_fetch(bundle):
    """serving/runtime.py ``_fetch_history``: the step before's history plus the refetched last day is
    exactly the window fetched whole, so every answer is unchanged; the source is asked for a day."""
    runtime = TenantRuntime(bundle)
    fetched: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    fetch = runtime.source.fetch
    runtime.source.fetch = lambda start, end, *rest: fetched.append((start, end)) or fetch(start, end, *rest)
    for k in range(4):
        at = NOW + k * runtime.step
        end = runtime.step_end(at)
        whole = fetch(end - runtime.history_span, end + runtime.step)
        pd.testing.assert_frame_equal(runtime.history(at), whole, check_freq=True)
    assert fetched[0] == (runtime.step_end(NOW) - runtime.history_span, runtime.step_end(NOW) + runtime.step)
    assert [end - start for start, end in fetched[1:]] == [pd.Timedelta("1D") + runtime.step] * 3
