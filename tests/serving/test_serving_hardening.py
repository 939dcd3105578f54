"""Issue 13 on the serving side, against a real multi-tenant `bentoml serve` of two tenants with keys
(arena, and duel with cheap champions): no request stalls the service, poisons a tenant or fakes an
incident. Each test reproduces one finding of the issue."""

from __future__ import annotations

import http.client
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from helios_pipelines.core.ops.store.schema import Anomaly, OutboxRow
from helios_pipelines.core.sources.simulator import incidents_path
from tests.harness.serve_harness import bentoml_serve

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)


@pytest.fixture(scope="module")
def guarded_logs(tmp_path_factory):
    return tmp_path_factory.mktemp("guarded")  # the service's log is bentoml.log here


@pytest.fixture(scope="module")
def guarded(keys, guarded_logs):  # noqa: F811
    with bentoml_serve(guarded_logs, "--arg", "tenants=arena,duel", "--arg", "api_keys=true") as client:
        yield client


@pytest.fixture(scope="module")
def as_arena(guarded, keys):  # noqa: F811
    return {"X-API-Key": keys["arena"]}


@pytest.fixture(scope="module")
def as_duel(guarded, keys):  # noqa: F811
    return {"X-API-Key": keys["duel"]}


def _now() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


def _count(store, model, **where) -> int:
    with store.transaction() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return session.execute(query).scalar_one()


# ---- 2. validation before state ----------------------------------------------------------------

def _event(**change) -> dict:
    return {"name": "Cup", "start": (_now() + timedelta(days=60)).isoformat(), "duration_hours": 2,
            "multiplier": 2.0} | change


@pytest.mark.parametrize(("change", "field"), [
    ({"duration_hours": 1e300}, "duration_hours"),
    ({"multiplier": 1e308}, "multiplier"),
    ({"multiplier": float("inf")}, "multiplier"),  # json.dumps writes Infinity, which the JSON parser takes
    ({"ramp_minutes": 1e300}, "ramp_minutes"),
    ({"start": "3000-01-01T00:00:00Z"}, "start"),
    ({"duration_hours": True}, "duration_hours"),
])
def test_an_event_that_would_break_forecasts_is_refused_naming_the_field_and_never_stored(guarded, as_arena, change, field):
    refused = guarded.post("/events", content=json.dumps(_event(name=f"bad-{field}", **change)),
                           headers=as_arena | {"Content-Type": "application/json"})
    assert refused.status_code == 400, refused.text
    assert field in refused.text  # BentoML wraps a 400 as [{"error": ...}] or a pydantic "detail"
    posted = guarded.post("/events", json=_event(name="Harmless"), headers=as_arena)
    assert posted.status_code == 200, posted.text
    assert not [e for e in posted.json()["upcoming"] if e["name"].startswith("bad-")]
    for method, path, args in [("POST", "/predict", {"json": {"metric": "concurrent_users", "horizon": 60}}),
                               ("POST", "/recommend", {"json": {"service": "game-server"}}),
                               ("GET", "/metrics", {})]:
        response = guarded.request(method, path, headers=as_arena, **args)
        assert response.status_code == 200, (path, response.text)
    assert guarded.post("/predict", json={"metric": "concurrent_users", "horizon": 60}, headers=as_arena).json()["value"] > 0


def test_a_tenant_whose_source_fails_answers_its_own_error_and_recovers_without_restart(keys, tmp_path):  # noqa: F811
    """A corrupt incident file breaks duel's simulated source from the start (nothing of it is cached):
    duel answers its own 503, arena answers as usual, and duel recovers when the file is repaired."""
    path = incidents_path("duel")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    try:
        with bentoml_serve(tmp_path, "--arg", "tenants=arena,duel", "--arg", "api_keys=true") as service:
            as_arena, as_duel = {"X-API-Key": keys["arena"]}, {"X-API-Key": keys["duel"]}
            predict = {"metric": "concurrent_users", "horizon": 15}
            for path_, body in [("/predict", predict), ("/recommend", {"service": "game-server"})]:
                broken = service.post(path_, json=body, headers=as_duel)
                assert broken.status_code == 503, broken.text
                assert "tenant 'duel' cannot answer right now" in broken.text
                assert service.post(path_, json=body, headers=as_arena).status_code == 200
            query = {"query": 'helios_forecast_value{metric="concurrent_users", horizon="15m"}'}
            assert service.get("/api/v1/query", params=query, headers=as_arena).status_code == 200
            assert service.get("/metrics", headers=as_arena).status_code == 200
            assert service.get("/readyz").status_code == 200
            path.unlink()  # repaired: the next request fetches again
            recovered = service.post("/predict", json=predict, headers=as_duel)
            assert recovered.status_code == 200 and recovered.json()["tenant"] == "duel"
    finally:
        path.unlink(missing_ok=True)


# ---- 3. /detect with points is a what-if ------------------------------------------------------

def test_detect_with_points_is_scored_never_recorded_nor_alerted(guarded, as_duel, embedded_store):  # noqa: F811
    normal = guarded.post("/predict", json={"metric": "concurrent_users", "horizon": 15}, headers=as_duel).json()
    before = (_count(embedded_store, Anomaly), _count(embedded_store, OutboxRow))
    spike = [{"timestamp": (_now() + timedelta(minutes=5)).isoformat(), "value": normal["upper"] * 50}]
    body = guarded.post("/detect", json={"metric": "concurrent_users", "points": spike}, headers=as_duel).json()
    assert body["scores"][0]["anomalous"] is True and body["recorded"] == 0
    time.sleep(1)
    assert (_count(embedded_store, Anomaly), _count(embedded_store, OutboxRow)) == before


def test_detect_records_only_when_asked_and_never_a_future_point(guarded, as_duel, embedded_store):  # noqa: F811
    normal = guarded.post("/predict", json={"metric": "concurrent_users", "horizon": 15}, headers=as_duel).json()
    origin = datetime.fromisoformat(normal["origin"])
    ahead = [{"timestamp": (origin + timedelta(minutes=10)).isoformat(), "value": normal["upper"] * 50}]
    future = guarded.post("/detect", json={"metric": "concurrent_users", "points": ahead, "record": True}, headers=as_duel)
    assert future.status_code == 200 and future.json()["recorded"] == 0
    inside = [{"timestamp": origin.isoformat(), "value": normal["upper"] * 50}]
    before = _count(embedded_store, Anomaly)
    asked = guarded.post("/detect", json={"metric": "concurrent_users", "points": inside, "record": True}, headers=as_duel)
    assert asked.status_code == 200 and asked.json()["recorded"] == 1
    assert _count(embedded_store, Anomaly) >= before


# ---- 4. 4xx, not 500, and strict types --------------------------------------------------------

@pytest.mark.parametrize(("path", "body", "named"), [
    ("/predict", {"metric": "concurrent_users", "horizon": 2e8}, "horizon"),
    ("/predict", {"metric": "concurrent_users", "horizon": 10**18}, "horizon"),
    ("/predict", {"metric": "concurrent_users", "horizon": True}, "horizon"),
    ("/predict", {"metric": "concurrent_users", "horizon": "60"}, "horizon"),
    ("/recommend", {"service": "game-server", "current_replicas": True}, "current_replicas"),
    ("/recommend", {"service": "game-server", "current_replicas": "3"}, "current_replicas"),
    ("/detect", {"metric": "concurrent_users", "points": [{"timestamp": "3000-01-01T00:00:00Z", "value": 1}]}, "timestamp"),
    ("/detect", {"metric": "concurrent_users", "points": [{"timestamp": "1970-01-01T00:00:00Z", "value": 1}]}, "older"),
    ("/detect", {"metric": "concurrent_users", "points": [{"timestamp": "2100-01-01T00:00:00Z", "value": 1}]}, "ahead"),
])
def test_inputs_that_gave_500_answer_4xx_naming_the_problem(guarded, as_arena, path, body, named):
    response = guarded.post(path, json=body, headers=as_arena)
    assert 400 <= response.status_code < 500, response.text
    assert named in response.text


@pytest.mark.parametrize(("path", "body", "unknown"), [
    ("/predict", {"metric": "concurrent_users", "horizon_minutes": 60}, "horizon_minutes"),  # the answer's name
    ("/detect", {"metrc": "concurrent_users"}, "metrc"),
    ("/recommend", {"service": "game-server", "replicas": 300}, "replicas"),
    ("/events", {"name": "Typo", "start": "2030-01-01T00:00:00Z", "duration_hours": 1, "multiplier": 3,
                 "ramp_minute": 30}, "ramp_minute"),
    ("/annotations", {"time": "2030-01-01T00:00:00Z", "timeend": "2030-01-01T00:10:00Z"}, "timeend"),
])
def test_a_body_key_the_endpoint_does_not_have_is_a_400_naming_it(guarded, as_arena, path, body, unknown):
    """Ignored, a misspelt key was answered with its default: 15 minutes ahead for a 60-minute question,
    every metric for one, an event kept without its ramp."""
    response = guarded.post(path, json=body, headers=as_arena)
    assert response.status_code == 400, response.text
    assert unknown in response.text


def test_a_query_parameter_get_predict_does_not_have_is_a_400_naming_it(guarded, as_arena):
    """The guide's GET /predict ignored it: ?horizon_minutes=60 (the answer's name) was a 15-minute forecast."""
    response = guarded.get("/predict", params={"metric": "concurrent_users", "horizon_minutes": 60}, headers=as_arena)
    assert response.status_code == 400, response.text
    assert "horizon_minutes" in response.json()["error"]


def test_a_malformed_body_is_logged_as_its_400_not_as_a_server_error(guarded, guarded_logs, as_arena):
    """BentoML logged every body that failed validation at ERROR with its traceback (some 2.5 KB for a
    44-byte body): any client could fill the service log and page whoever watches its errors."""
    log = guarded_logs / "bentoml.log"
    before = log.read_text().count("Traceback")
    for body in (b'{"metric": "concurrent_users", "horizon": 60', b"[]", b'{"metric": "concurrent_users", "horizon": "60"}'):
        answered = guarded.post("/predict", content=body, headers=as_arena | {"Content-Type": "application/json"})
        assert answered.status_code == 400, answered.text
    assert guarded.get("/readyz").status_code == 200
    text = log.read_text()
    assert text.count("Traceback") == before
    assert text.count("path=/predict,type=application/json") >= 3  # each is in the access log, with its status


def test_get_predict_refuses_overflowing_horizons_with_a_400_naming_the_parameter(guarded, as_arena):
    for horizon in ("200000000", "1000000000000000000", "true", "0"):
        response = guarded.get("/predict", params={"metric": "concurrent_users", "horizon": horizon}, headers=as_arena)
        assert response.status_code == 400, response.text
        assert "query parameter 'horizon'" in response.json()["error"], response.text
    missing = guarded.get("/predict", params={"horizon": 15}, headers=as_arena)
    assert missing.status_code == 400
    assert missing.json()["error"] == "tenant 'arena': query parameter 'metric': Field required", missing.text


def test_an_error_never_drops_the_keep_alive_connection(guarded, as_arena):
    """After any answer, error or not, the next request on the same connection is answered (one
    socket: http.client reuses it and does not reconnect behind the test's back)."""
    connection = http.client.HTTPConnection(guarded.base_url.host, guarded.base_url.port, timeout=30)
    try:
        for method, path, body in [
            ("GET", "/api/v1/query?query=helios_forecast_value%7Bmetric%3D%22x%22%7D&time=nan", None),
            ("GET", "/predict?metric=concurrent_users&horizon=1e18", None),
            ("POST", "/detect", b'{"metric": "concurrent_users", "points": [{"timestamp": "x", "value": 1}]}'),
            ("POST", "/predict", b"[" * 10_000),
        ]:
            connection.request(method, path, body=body, headers=as_arena | {"Content-Type": "application/json"})
            answered = connection.getresponse()
            answered.read()
            assert answered.status < 500 or answered.getheader("connection") == "close", (path, answered.status)
            connection.request("GET", "/readyz")
            ready = connection.getresponse()
            assert ready.status == 200, path
            ready.read()
    finally:
        connection.close()


def test_an_echoed_value_is_truncated(guarded, as_arena):
    response = guarded.post("/predict", json={"metric": "m" * 100_000, "horizon": 15, "tenant": "t" * 100_000},
                            headers=as_arena)
    assert 400 <= response.status_code < 500 and len(response.content) < 2_000, response.text[:300]


# ---- 5. bounded work before limits --------------------------------------------------------------

def test_a_body_over_the_cap_is_refused_before_it_is_parsed(guarded, as_arena):
    huge = json.dumps({"metric": "concurrent_users", "points": [{"timestamp": "2026-01-01T00:00:00Z", "value": 1}] * 40_000})
    response = guarded.post("/detect", content=huge, headers=as_arena | {"Content-Type": "application/json"})
    assert response.status_code == 413 and "at most" in response.text


def test_headers_and_keys_over_their_caps_are_refused_without_a_lookup(guarded):
    assert guarded.get("/metrics", headers={"X-API-Key": "hel_" + "k" * 100_000}).status_code == 431
    too_long = guarded.get("/metrics", headers={"X-API-Key": "hel_" + "k" * 1_000})
    assert too_long.status_code == 401 and "at most 256" in too_long.text


def test_detect_refuses_too_many_metrics_and_points_before_computing(guarded, as_arena):
    names = guarded.post("/detect", json={"metrics": [f"m{i}" for i in range(30_000)]}, headers=as_arena)
    assert names.status_code in (400, 413), names.text
    several = guarded.post("/detect", json={"metrics": [f"m{i}" for i in range(100)]}, headers=as_arena)
    assert several.status_code == 400 and "metrics" in several.text
    now = _now().isoformat()
    points = guarded.post("/detect", json={"metric": "concurrent_users",
                                           "points": [{"timestamp": now, "value": 1}] * 2_000}, headers=as_arena)
    assert points.status_code == 400 and "points" in points.text


# ---- the property: any body shaped by an endpoint's schema, or hostile to it, gets no 5xx --------

KNOWN_NAMES = ["concurrent_users", "queue_length", "cpu_usage", "game-server", "arena", "duel"]
ANSWER_SECONDS = 10  # per request, on a shared 2-core machine
PROBE_SECONDS = 5


def _hostile():
    from hypothesis import strategies as st

    return st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
        st.text(max_size=300), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
        st.sampled_from(["3000-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "60", "true", "", "Infinity", 1e300, -1, 0]),
    )


def _shaped(kind: str):
    """Values of a field's type as the endpoint declares it (bounds ignored: both sides get tried)."""
    from hypothesis import strategies as st

    now = _now().replace(tzinfo=None)
    time = st.datetimes(min_value=now - timedelta(days=3), max_value=now + timedelta(days=3)).map(
        lambda d: d.isoformat() + "Z")
    return {
        "name": st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=20)),
        "names": st.lists(st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=10)), max_size=5),
        "int": st.integers(min_value=-10, max_value=10**6),
        "float": st.floats(min_value=-1e6, max_value=1e6),
        "bool": st.booleans(),
        "time": time,
        "points": st.lists(st.fixed_dictionaries({"timestamp": time, "value": st.floats(min_value=-1e6, max_value=1e6)}),
                           max_size=5),
    }[kind]


# Each JSON endpoint's fields and types, as serving/service.py declares them.
SCHEMAS = {
    "/predict": {"metric": "name", "horizon": "int", "tenant": "name"},
    "/detect": {"metric": "name", "metrics": "names", "points": "points", "record": "bool", "tenant": "name"},
    "/recommend": {"service": "name", "metric": "name", "current_replicas": "int", "tenant": "name"},
    "/events": {"name": "name", "start": "time", "duration_hours": "float", "multiplier": "float", "kind": "name",
                "metrics": "names", "ramp_minutes": "float", "tenant": "name"},
    "/annotations": {"time": "time", "timeEnd": "time", "time_end": "time", "tags": "names", "text": "name",
                     "kind": "name", "metrics": "names", "replicas_before": "int", "replicas_after": "int",
                     "dashboardUID": "name", "dashboardId": "int", "panelId": "int", "tenant": "name"},
}


def _body(path: str):
    from hypothesis import strategies as st

    fields = SCHEMAS[path]
    return st.fixed_dictionaries({}, optional={name: st.one_of(_shaped(kind), _hostile()) for name, kind in fields.items()})


def test_no_json_endpoint_answers_5xx_or_late_and_readyz_answers_throughout(guarded, as_duel):
    """As duel (cheap champions): the events and changes this posts are kept in the store, and arena's
    forecasts and alerts are what the other serving tests read."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    bodies = {path: _body(path) for path in SCHEMAS}
    probes, stop = [], threading.Event()

    def probe():
        with httpx.Client(base_url=guarded.base_url, timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                status = client.get("/readyz").status_code
                probes.append((status, time.monotonic() - started))
                stop.wait(0.1)

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(sorted(SCHEMAS)).flatmap(lambda path: st.tuples(st.just(path), bodies[path])))
    def no_server_error(request):
        path, body = request
        started = time.monotonic()
        response = guarded.post(path, content=json.dumps(body), headers=as_duel | {"Content-Type": "application/json"})
        elapsed = time.monotonic() - started
        assert response.status_code < 500, (path, body, response.status_code, response.text[:500])
        assert elapsed < ANSWER_SECONDS, (path, body, elapsed)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        no_server_error()
    finally:
        stop.set()
        prober.join()
    assert probes and all(status == 200 for status, _ in probes)
    assert max(seconds for _, seconds in probes) < PROBE_SECONDS
