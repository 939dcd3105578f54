"""Pushing metrics into Helios: a real Prometheus remote-writing to the ingest service, the JSON batch,
keys, limits and bad input, and tenant isolation. The service is the ingest router under uvicorn in
its own process (see push_harness); samples land in its store, which the push source reads."""

from __future__ import annotations

import gzip
import json
import math
import shutil
import struct
import time
import uuid
from datetime import UTC, datetime

import cramjam
import httpx
import pandas as pd
import pytest
from sqlalchemy import text

from helios_pipelines.core.ops import ingest
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.sources import make_source
from helios_pipelines.core.sources.check import check_source
from helios_pipelines.core.tenants import TenantConfig
from tests.harness.push_harness import (
    REMOTE_WRITE_HEADERS,
    IngestService,
    PushTenants,
    RemoteWritingPrometheus,
    ScrapeTarget,
    remote_write_body,
)
from tests.harness.store_backends import NOW, add_customer, schema_url

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)

PLAYERS, CPU = "game_server_active_players", "container_cpu_usage_seconds_total"
STEP_MS = 60_000
STALE_NAN = struct.unpack("<d", struct.pack("<Q", ingest.STALE_NAN_BITS))[0]


def push_tenant(tenant_id: str, step: str = "1min") -> TenantConfig:
    return TenantConfig.model_validate({
        "id": tenant_id, "name": tenant_id.title(), "step": step, "source": {"type": "push"},
        "metrics": {
            "concurrent_users": {"series": PLAYERS, "forecast": {"horizons": ["15m"]}},
            "cpu_usage": {"series": CPU, "kind": "counter"},
        },
    })


def pulled_tenant(tenant_id: str) -> TenantConfig:
    """A tenant Helios reads from its Prometheus: it must not be able to push."""
    config = push_tenant(tenant_id).model_dump(mode="json")
    config["source"] = {"type": "prometheus", "url": "http://127.0.0.1:9"}
    return TenantConfig.model_validate(config)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory) -> PushTenants:
    ids = ["pushy", "rival", "limits", "keys"]
    configs = [push_tenant(t) for t in ids] + [push_tenant("remote", step="10s"), pulled_tenant("pulled")]
    return PushTenants(tmp_path_factory.mktemp("push"), configs)


@pytest.fixture(scope="module", autouse=True)
def _source_reads_the_services_store(tenants):
    """The push source (and ``stored``) read the store the ingest service writes to."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HELIOS_DATABASE_URL", tenants.database_url)
        yield


@pytest.fixture(scope="module")
def service(tenants, tmp_path_factory):
    running = IngestService(tenants, tmp_path_factory.mktemp("ingest") / "uvicorn.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(service):
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


def minute(offset: int = 0) -> int:
    """Unix ms of a whole minute ``offset`` minutes from 30 minutes ago (well inside every window)."""
    return (int(time.time() * 1000) // STEP_MS - 30 + offset) * STEP_MS


def post_json(http: httpx.Client, key: str, samples: list[dict], **headers) -> httpx.Response:
    return http.post("/ingest", content=json.dumps({"samples": samples}), headers={
        "X-API-Key": key, "Content-Type": "application/json", **headers})


def stored(tenant: str) -> dict[str, int]:
    store = Store()
    try:
        return {series: store.count_pushed(tenant, series) for series in store.pushed_series(tenant)}
    finally:
        store.close()


# ---- decoding ---------------------------------------------------------------------------------
def test_the_decoder_reads_what_an_independently_declared_protobuf_encoder_writes():
    body = remote_write_body([
        ({"__name__": PLAYERS, "pod": "a", "region": "eu"}, [(1_700_000_000_000, 12.5), (1_700_000_060_000, STALE_NAN)]),
        ({"__name__": CPU}, [(1_700_000_000_000, 3e9)]),
    ], metadata=2)
    decoded = ingest.decode_write_request(ingest.decompress(body, "snappy"))
    assert [(s.name, s.labels) for s in decoded] == [(PLAYERS, (("pod", "a"), ("region", "eu"))), (CPU, ())]
    assert decoded[0].samples[0] == (1_700_000_000_000, 12.5) and decoded[1].samples == [(1_700_000_000_000, 3e9)]
    assert ingest.is_stale_marker(decoded[0].samples[1][1]) and not ingest.is_stale_marker(float("nan"))
    assert ingest.decode_write_request(ingest.decompress(remote_write_body([], metadata=3), "snappy")) == []


# ---- (a) a real Prometheus remote-writes; the push tenant reads it on its grid -------------------
def test_prometheus_remote_write_reaches_the_push_source(service, tenants, prometheus_binaries, tmp_path):
    """Prometheus scrapes a target whose samples carry their own timestamps on a clock running 5x faster
    than the wall from the first scrape on (remote-write sends nothing older than its own start, and
    Helios nothing far ahead of now), so a few seconds cover several 10-second grid points. Values are
    functions of the grid point k a sample falls in, so the expected grid is exact: players 110 + k % 50
    (two pods), cpu a 7/s rate (pods at 5/s and 2/s)."""
    step_ms = 10_000
    first_scrape: list[int] = []

    def render(now_ms: int) -> str:
        first_scrape[:] = first_scrape or [now_ms]
        fake = first_scrape[0] + 5 * (now_ms - first_scrape[0])
        k = -(-fake // step_ms)
        return (
            f"# TYPE {PLAYERS} gauge\n{PLAYERS}{{pod=\"a\"}} {100 + k % 50} {fake}\n{PLAYERS}{{pod=\"b\"}} 10 {fake}\n"
            f"# TYPE {CPU} counter\n{CPU}{{pod=\"a\"}} {5 * 10 * k} {fake}\n{CPU}{{pod=\"b\"}} {2 * 10 * k} {fake}\n"
            f"# TYPE unrelated_gauge gauge\nunrelated_gauge 1 {fake}\n"
        )

    target = ScrapeTarget(render)
    prometheus = RemoteWritingPrometheus(
        tmp_path, target.address, f"{service.url}/api/v1/write", tenants.keys["remote"], keep=[PLAYERS, CPU]
    )
    store = Store()
    try:
        deadline = time.monotonic() + 60
        while not first_scrape or (store.latest_pushed("remote", CPU) or 0) < _ceil(first_scrape[0], step_ms) + 5 * step_ms:
            assert time.monotonic() < deadline, f"too little arrived: {prometheus.log.read_text()[-2000:]}"
            time.sleep(0.5)
    finally:
        store.close()
        prometheus.stop()
        target.stop()

    tenant = tenants.tenants["remote"]
    first_point = _ceil(first_scrape[0], step_ms) + step_ms
    start, end = (pd.Timestamp(first_point + i * step_ms, unit="ms", tz="UTC") for i in (0, 4))
    frame = make_source(tenant).fetch(start, end)
    ks = frame.index.asi8 // 1_000_000 // step_ms
    assert frame["concurrent_users"].tolist() == [110.0 + k % 50 for k in ks]
    assert frame["cpu_usage"].tolist() == pytest.approx([7.0] * 4)
    assert sorted(stored("remote")) == sorted([CPU, PLAYERS])  # `up` and the rest were relabelled away
    report = check_source(tenant, start, end)
    assert report.ok and [m.coverage for m in report.metrics] == [1.0, 1.0], report


def _ceil(milliseconds: int, step_ms: int) -> int:
    return -(-milliseconds // step_ms) * step_ms


# ---- the JSON batch ---------------------------------------------------------------------------
def test_json_batch_takes_every_timestamp_form_and_replays_add_nothing(http, tenants):
    key = tenants.keys["pushy"]
    t0 = minute()
    samples = [
        {"metric": "concurrent_users", "timestamp": t0, "value": 100},  # logical name, unix ms
        {"metric": PLAYERS, "timestamp": (t0 + STEP_MS) / 1000, "value": 101.5},  # series name, unix s
        {"metric": PLAYERS, "timestamp": datetime.fromtimestamp((t0 + 2 * STEP_MS) / 1000, UTC).isoformat(), "value": 99},
        {"metric": CPU, "labels": {"pod": "a"}, "timestamp": t0, "value": 0},
        {"metric": CPU, "labels": {"pod": "a"}, "timestamp": t0 + STEP_MS, "value": 600},
        {"metric": CPU, "labels": {"pod": "a"}, "timestamp": t0 + 2 * STEP_MS, "value": 60},  # a reset
    ]
    first = http.post("/ingest", content=gzip.compress(json.dumps({"samples": samples}).encode()), headers={
        "X-API-Key": key, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 6, "new": 6, "duplicates": 0}
    replay = post_json(http, key, samples)
    assert replay.json() == {"accepted": 6, "new": 0, "duplicates": 6}
    assert stored("pushy") == {PLAYERS: 3, CPU: 3}

    grid = make_source(tenants.tenants["pushy"]).fetch(pd.Timestamp(t0, unit="ms", tz="UTC"),
                                                       pd.Timestamp(t0 + 3 * STEP_MS, unit="ms", tz="UTC"))
    assert grid["concurrent_users"].tolist() == [100.0, 101.5, 99.0]
    assert math.isnan(grid["cpu_usage"].iloc[0]) and grid["cpu_usage"].tolist()[1:] == [10.0, 1.0]


# ---- (c) keys ---------------------------------------------------------------------------------
def test_a_wrong_or_missing_key_is_refused_and_nothing_is_stored(http, tenants):
    sample = [{"metric": PLAYERS, "timestamp": minute(), "value": 1}]
    body = remote_write_body([({"__name__": PLAYERS}, [(minute(), 1.0)])])
    wrong = tenants.keys["keys"][:-4] + "AAAA"
    refused = [
        post_json(http, wrong, sample),
        http.post("/ingest", content=json.dumps({"samples": sample}), headers={"Content-Type": "application/json"}),
        http.post("/api/v1/write", content=body, headers=REMOTE_WRITE_HEADERS | {"Authorization": f"Bearer {wrong}"}),
        http.post("/api/v1/write", content=body, headers=REMOTE_WRITE_HEADERS),
        http.get("/ingest/config", headers={"X-API-Key": "not-a-helios-key"}),
    ]
    assert [r.status_code for r in refused] == [401] * 5
    assert "valid API key" in refused[0].json()["error"] and refused[0].headers["WWW-Authenticate"] == "Bearer"
    other = post_json(http, tenants.keys["keys"], sample, **{"X-Helios-Customer": "rival"})
    assert other.status_code == 403 and "belongs to tenant 'keys', not 'rival'" in other.text
    assert stored("keys") == {}
    accepted = http.post("/api/v1/write", content=body,
                         headers=REMOTE_WRITE_HEADERS | {"Authorization": f"Bearer {tenants.keys['keys']}"})
    assert accepted.status_code == 204 and stored("keys") == {PLAYERS: 1}


# ---- (d) limits and bad input -----------------------------------------------------------------
def _json(samples: list[dict]) -> tuple[bytes, dict]:
    return json.dumps({"samples": samples}).encode(), {"Content-Type": "application/json"}


def _remote(series) -> tuple[bytes, dict]:
    return remote_write_body(series), REMOTE_WRITE_HEADERS


def _bad_input_cases() -> list:
    now = minute(30)
    far_future = now + 10 * STEP_MS
    too_old = now - 31 * 86_400_000
    one = {"metric": PLAYERS, "timestamp": now, "value": 1}
    return [
        ("unknown metric", "/ingest", _json([one, {**one, "metric": "mana_pool"}]), 422, "no metric 'mana_pool'"),
        ("unknown series", "/api/v1/write", _remote([({"__name__": "up"}, [(now, 1.0)])]), 422, "configured series"),
        ("NaN", "/api/v1/write", _remote([({"__name__": PLAYERS}, [(now, float("nan"))])]), 422, "not a finite number"),
        ("Inf", "/ingest", (b'{"samples": [{"metric": "%s", "timestamp": %d, "value": Infinity}]}' % (PLAYERS.encode(), now),
                            {"Content-Type": "application/json"}), 422, "not a finite number"),
        ("value as text", "/ingest", _json([{**one, "value": "12"}]), 422, "is not a number"),
        ("far future", "/ingest", _json([{**one, "timestamp": far_future}]), 422, "minutes ahead"),
        ("older than retention", "/api/v1/write", _remote([({"__name__": PLAYERS}, [(too_old, 1.0)])]), 422, "30-day retention"),
        ("out of order", "/api/v1/write", _remote([({"__name__": PLAYERS}, [(now, 1.0), (now - STEP_MS, 2.0)])]), 422, "out of order"),
        ("out of order json", "/ingest", _json([one, {**one, "timestamp": now - STEP_MS}]), 422, "out of order"),
        ("too many samples", "/ingest",
         _json([{**one, "labels": {"i": str(i)}} for i in range(ingest.MAX_SAMPLES + 1)]), 413, "the limit is 50000"),
        ("too many bytes", "/ingest", (b" " * (ingest.MAX_BODY_BYTES + 1), {"Content-Type": "application/json"}), 413, "limit"),
        ("malformed protobuf", "/api/v1/write", (bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff")),
                                                 REMOTE_WRITE_HEADERS), 400, "not a remote-write WriteRequest"),
        ("not snappy", "/api/v1/write", (b"\x00\x01garbage", REMOTE_WRITE_HEADERS), 400, "not snappy"),
        ("not JSON", "/ingest", (b"{samples: [", {"Content-Type": "application/json"}), 400, "not JSON"),
        ("tenant in payload", "/ingest", (json.dumps({"samples": [one], "tenant": "rival"}).encode(),
                                          {"Content-Type": "application/json"}), 400, "nothing else"),
        ("bad timestamp", "/ingest", _json([{**one, "timestamp": "yesterday"}]), 400, "RFC 3339"),
        ("wrong content type", "/api/v1/write", (remote_write_body([]), {"Content-Type": "text/plain"}), 415, "x-protobuf"),
        ("unknown encoding", "/ingest", (b"{}", {"Content-Type": "application/json", "Content-Encoding": "br"}), 415, "br"),
    ]


@pytest.mark.parametrize("name", [case[0] for case in _bad_input_cases()])
def test_limits_and_bad_input_get_a_clear_4xx_and_store_nothing(http, tenants, name):
    # Built when the test runs, not at collection: the time limits are relative to the server's now.
    _, path, (body, headers), status, words = next(c for c in _bad_input_cases() if c[0] == name)
    response = http.post(path, content=body, headers=headers | {"X-API-Key": tenants.keys["limits"]})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert stored("limits") == {}


def _many_samples_body(series: int, per_series: int, compact: bool = False) -> bytes:
    """``compact``: every sample is (0, 0.0), which protobuf encodes in 2 bytes, so a million samples
    fit in 2 MB and get past the decompressed-size limit to the sample count."""
    now = 0 if compact else minute()
    value = 0.0 if compact else 1.0
    return remote_write_body([({"__name__": PLAYERS, "pod": str(i)}, [(now + (not compact) * j, value)
                                                                      for j in range(per_series)])
                              for i in range(series)])


def _refused(http, tenants, path, body, headers) -> httpx.Response:
    return http.post(path, content=body, headers=headers | {"X-API-Key": tenants.keys["limits"]})


def test_a_snappy_body_that_inflates_past_the_limit_is_refused_before_it_is_inflated(http, tenants):
    """Issue #13.5: 2.9 MB of snappy announcing 60 MB of zeros used to cost 26-30 s of CPU."""
    bomb = bytes(cramjam.snappy.compress_raw(b"\0" * 60_000_000))
    assert len(bomb) < 3_000_000
    response = _refused(http, tenants, "/api/v1/write", bomb, REMOTE_WRITE_HEADERS)
    assert response.status_code == 413, response.text
    assert "decompresses to 60000000 bytes" in response.json()["error"]
    gzip_bomb = gzip.compress(b" " * (ingest.MAX_DECODED_BYTES + 1))
    response = _refused(http, tenants, "/ingest", gzip_bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    assert stored("limits") == {}


def test_a_write_over_the_sample_limit_is_refused_at_the_series_that_passes_it(http, tenants):
    """Issue #13.5: a 1,000,000-sample remote-write was decoded in full (5.8 s, +112 MiB) before its 413.
    Written plainly (18 MB) it is over the decompressed-size limit; written compactly (2 MB), counting
    stops at the series that passes 50,000 samples: 10,000 per series, so the sixth of 100."""
    plain = _refused(http, tenants, "/api/v1/write", _many_samples_body(100, 10_000), REMOTE_WRITE_HEADERS)
    assert plain.status_code == 413 and "more than the limit" in plain.json()["error"], plain.text
    compact = _refused(http, tenants, "/api/v1/write", _many_samples_body(100, 10_000, compact=True), REMOTE_WRITE_HEADERS)
    assert compact.status_code == 413, compact.text
    assert "passed at series 6 of 100" in compact.json()["error"]
    assert stored("limits") == {}


def test_the_sample_limit_is_checked_before_any_sample_is_converted(monkeypatch):
    converted = []
    monkeypatch.setattr(ingest, "PushedSeries", lambda *args: converted.append(args))
    data = ingest.decompress(_many_samples_body(1, ingest.MAX_SAMPLES + 1), "snappy")
    with pytest.raises(ingest.IngestError, match="passed at series 1 of 1"):
        ingest.decode_write_request(data)
    assert converted == []


def test_deeply_nested_json_is_a_400_not_a_500(http, tenants):
    """Issue #13.4: 100k nested '[' on /ingest answered 500 (a RecursionError)."""
    response = _refused(http, tenants, "/ingest", b"[" * 100_000, {"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "not JSON" in response.json()["error"] and "recursion" in response.json()["error"]
    again = post_json(http, tenants.keys["limits"], [{"metric": PLAYERS, "timestamp": "x", "value": 1}])
    assert again.status_code == 400, "the service kept answering after the nested body"
    assert stored("limits") == {}


def test_label_names_values_and_counts_are_capped_and_echoes_are_short(http, tenants):
    """Issue #13.8: unlimited label sizes were accepted."""
    one = {"metric": PLAYERS, "timestamp": minute(), "value": 1}
    cases = [
        ([{**one, "labels": {"pod": "x" * (ingest.MAX_LABEL_VALUE_LENGTH + 1)}}], "the value of label 'pod'"),
        ([{**one, "labels": {"p" * 1_000_000: "x"}}], "label name"),
        ([{**one, "labels": {f"l{i}": "x" for i in range(ingest.MAX_LABELS + 1)}}], f"the limit is {ingest.MAX_LABELS}"),
    ]
    for samples, words in cases:
        response = post_json(http, tenants.keys["limits"], samples)
        assert response.status_code == 422, response.text
        assert words in response.json()["error"] and len(response.text) < 1_000
    remote = _refused(http, tenants, "/api/v1/write", remote_write_body(
        [({"__name__": PLAYERS, **{f"l{i}": "x" for i in range(ingest.MAX_LABELS + 1)}}, [(minute(), 1.0)])]),
        REMOTE_WRITE_HEADERS)
    assert remote.status_code == 422 and f"the limit is {ingest.MAX_LABELS}" in remote.json()["error"]
    assert stored("limits") == {}


def test_a_tenant_whose_source_is_not_push_cannot_push(http, tenants):
    """Issue #13.8: pushes were accepted for tenants whose source is not push."""
    key = tenants.keys["pulled"]
    json_push = post_json(http, key, [{"metric": PLAYERS, "timestamp": minute(), "value": 1}])
    remote = http.post("/api/v1/write", content=remote_write_body([({"__name__": PLAYERS}, [(minute(), 1.0)])]),
                       headers=REMOTE_WRITE_HEADERS | {"Authorization": f"Bearer {key}"})
    for response in (json_push, remote):
        assert response.status_code == 403, response.text
        assert "tenant 'pulled'" in response.json()["error"] and "'prometheus' source" in response.json()["error"]
    assert stored("pulled") == {}


def test_metadata_only_requests_and_stale_markers_are_accepted(http, tenants):
    headers = REMOTE_WRITE_HEADERS | {"Authorization": f"Bearer {tenants.keys['rival']}"}
    assert http.post("/api/v1/write", content=remote_write_body([], metadata=2), headers=headers).status_code == 204
    stale = remote_write_body([({"__name__": PLAYERS, "pod": "gone"}, [(minute(20), 5.0), (minute(21), STALE_NAN)])])
    assert http.post("/api/v1/write", content=stale, headers=headers).status_code == 204
    assert stored("rival") == {PLAYERS: 1}


# ---- (e) isolation ----------------------------------------------------------------------------
def test_two_tenants_pushes_stay_apart(http, tenants):
    t0 = minute(24)
    for tenant, value in (("pushy", 1.0), ("rival", 2.0)):
        samples = [{"metric": PLAYERS, "timestamp": t0 + i * STEP_MS, "value": value, "labels": {"tenant": "rival"}}
                   for i in range(3)]
        assert post_json(http, tenants.keys[tenant], samples).status_code == 200
    window = pd.Timestamp(t0, unit="ms", tz="UTC"), pd.Timestamp(t0 + 3 * STEP_MS, unit="ms", tz="UTC")
    for tenant, value in (("pushy", 1.0), ("rival", 2.0)):
        column = make_source(tenants.tenants[tenant]).fetch(*window, metrics=["concurrent_users"])["concurrent_users"]
        assert column.tolist() == [value] * 3, tenant


# ---- (f) the store: what every replica and the pipeline read (#16.2) ------------------------------
def test_the_store_keeps_one_sample_per_series_label_set_and_timestamp(store):
    for tenant in ("acme", "rival"):
        add_customer(store, push_tenant(tenant))
    pod_a, pod_b = (("pod", "a"),), (("pod", "b"),)
    assert store.add_pushed("acme", {PLAYERS: {pod_a: [(1000, 1.0), (2000, 2.0)], pod_b: [(1000, 5.0)]},
                                     CPU: {(): [(1000, 3.0)]}}) == 4
    # A retried request adds nothing; a second value at a stored timestamp is not stored (first write wins).
    assert store.add_pushed("acme", {PLAYERS: {pod_a: [(2000, 9.0), (3000, 3.0)]}}) == 1
    assert store.add_pushed("rival", {PLAYERS: {pod_a: [(1000, 7.0)]}}) == 1
    assert store.pushed("acme", PLAYERS, 0, 10_000) == [
        ('pod="a"', 1000, 1.0), ('pod="a"', 2000, 2.0), ('pod="a"', 3000, 3.0), ('pod="b"', 1000, 5.0)]
    assert store.pushed("acme", PLAYERS, 1000, 3000) == [('pod="a"', 1000, 1.0), ('pod="a"', 2000, 2.0),
                                                         ('pod="b"', 1000, 5.0)]
    assert store.pushed("rival", PLAYERS, 0, 10_000) == [('pod="a"', 1000, 7.0)]
    assert (store.latest_pushed("acme", PLAYERS), store.latest_pushed("acme", "never_pushed")) == (3000, None)
    assert store.pushed_series("acme") == sorted([CPU, PLAYERS]) and store.pushed_series("rival") == [PLAYERS]


def test_a_full_size_request_is_stored_in_bulk_and_a_failed_write_stores_none_of_it(store, monkeypatch):
    """50,000 samples (the request limit) over 10,000 label sets: more rows than one statement may
    bind on either database. A write that fails after its label sets were written leaves nothing."""
    add_customer(store, push_tenant("acme"))
    full = {PLAYERS: {(("pod", str(i)),): [(1000 * j, float(i)) for j in range(1, 6)] for i in range(10_000)}}
    assert store.add_pushed("acme", full) == ingest.MAX_SAMPLES
    assert store.count_pushed("acme", PLAYERS) == ingest.MAX_SAMPLES
    statements = []
    real_insert = store.insert_ignoring_duplicates

    def lost_at_the_samples(session, model, rows, unique):
        statements.append(model.__tablename__)
        if model.__tablename__ == "push_samples":
            raise ConnectionError("the database went away")
        return real_insert(session, model, rows, unique)

    monkeypatch.setattr(store, "insert_ignoring_duplicates", lost_at_the_samples)
    with pytest.raises(ConnectionError):
        store.add_pushed("acme", {CPU: {(("pod", "new"),): [(j, 1.0) for j in range(10)]}})
    monkeypatch.undo()
    assert statements == ["push_series", "push_samples"]
    assert store.count_pushed("acme", CPU) == 0 and store.pushed_series("acme") == [PLAYERS]
    assert store.add_pushed("acme", {CPU: {(("pod", "new"),): [(1, 1.0)]}}) == 1  # the next write works


def test_retention_deletes_pushed_samples_older_than_the_plan_keeps(store):
    tenant = TenantConfig.model_validate(push_tenant("acme").model_dump(mode="json") | {"plan": "starter"})  # 7 days
    add_customer(store, tenant)
    day, now = 86_400_000, int(NOW.timestamp() * 1000)
    store.add_pushed("acme", {PLAYERS: {(): [(now - 8 * day, 1.0), (now - 6 * day, 2.0), (now, 3.0)]}})
    assert store.apply_retention(NOW)["acme"]["pushed_samples"] == 1
    assert [value for *_, value in store.pushed("acme", PLAYERS, 0, now + 1)] == [2.0, 3.0]


@pytest.fixture
def postgres_url(postgres_admin):
    schema = f"helios_push_{uuid.uuid4().hex[:12]}"
    with postgres_admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield schema_url(schema)
    with postgres_admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def test_a_sample_pushed_to_one_replica_is_the_others_and_the_pipelines_on_postgresql(postgres_url, tmp_path,
                                                                                        monkeypatch):
    """Issue #16.2: two ingest processes (two replicas' push endpoints) on one PostgreSQL store.
    What replica A accepted, replica B already holds (the same request replayed to B is all
    duplicates), and the pipeline's push source reads it: players summed over the two pods."""
    tenants = PushTenants(tmp_path, [push_tenant("shared")], postgres_url)
    replicas = [IngestService(tenants, tmp_path / f"{name}.log") for name in ("a", "b")]
    t0 = minute()
    samples = [{"metric": PLAYERS, "labels": {"pod": pod}, "timestamp": t0 + i * STEP_MS, "value": base + i}
               for pod, base in (("a", 100.0), ("b", 10.0)) for i in range(3)]
    try:
        with httpx.Client(base_url=replicas[0].url, timeout=30) as a, httpx.Client(base_url=replicas[1].url,
                                                                                 timeout=30) as b:
            assert post_json(a, tenants.keys["shared"], samples).json() == {"accepted": 6, "new": 6, "duplicates": 0}
            assert post_json(b, tenants.keys["shared"], samples).json() == {"accepted": 6, "new": 0, "duplicates": 6}
    finally:
        for replica in replicas:
            replica.stop()
    monkeypatch.setenv("HELIOS_DATABASE_URL", postgres_url)
    window = pd.Timestamp(t0, unit="ms", tz="UTC"), pd.Timestamp(t0 + 3 * STEP_MS, unit="ms", tz="UTC")
    frame = make_source(tenants.tenants["shared"]).fetch(*window, metrics=["concurrent_users"])
    assert frame["concurrent_users"].tolist() == [110.0, 112.0, 114.0]


def test_the_service_accepts_the_tenants_it_started_with_after_the_config_directory_is_gone(tmp_path):
    """Issue #16.2: serving never reads configs/ at request time (the Bento does not pack it). With the
    directory gone after start-up, a push of a tenant it started with is stored; a valid key of a
    tenant added to the store since is refused, naming that tenant."""
    tenants = PushTenants(tmp_path, [push_tenant("steady")])
    service = IngestService(tenants, tmp_path / "uvicorn.log")
    try:
        shutil.rmtree(tenants.config_dir)
        store = Store(tenants.database_url)
        late_key = add_customer(store, push_tenant("late"))
        store.close()
        sample = [{"metric": PLAYERS, "timestamp": minute(), "value": 1}]
        with httpx.Client(base_url=service.url, timeout=30) as http:
            accepted = post_json(http, tenants.keys["steady"], sample)
            assert accepted.status_code == 200 and accepted.json()["new"] == 1, accepted.text
            config = http.get("/ingest/config", headers={"X-API-Key": tenants.keys["steady"]})
            assert config.status_code == 200 and config.json()["tenant"] == "steady"
            refused = post_json(http, late_key, sample)
            assert refused.status_code == 403 and "tenant 'late'" in refused.json()["error"], refused.text
    finally:
        service.stop()
