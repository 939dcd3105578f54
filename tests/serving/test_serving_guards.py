"""The serving guards in process, where that is faithful: the API-key cache against a real store,
the connection-keeping error guard under a real uvicorn, and the per-tenant gauge refresh on two
tenants' real bundles."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from datetime import timedelta

import bentoml
import httpx
import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from helios_pipelines.core.ops.migrations import upgrade
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.tenants import TenantConfig, load_tenants
from serving import auth, ingest
from serving.auth import KEY_CACHE_SECONDS, KeyLookup, TenantAuthMiddleware
from serving.ingest import router as ingest_router
from serving.publisher import GaugeBoard, refresh
from serving.request_guard import RequestGuard
from serving.runtime import TenantRuntime
from tests.conftest import AS_OF, FIXTURE_TENANTS
from tests.harness.push_harness import PushTenants

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)

NOW = AS_OF + pd.Timedelta("1D2h7min")


# ---- 8. key lookups cached briefly, revocation within the stated bound --------------------------

async def _tenant_echo(scope, receive, send):
    body = scope["state"]["tenant"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_key_lookups_are_cached_and_a_revoked_key_is_refused_within_the_cache_period(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(store.url)
    store.sync_customers(load_tenants(FIXTURE_TENANTS))
    key = store.rotate_key("arena")
    lookups = []
    authenticate = store.authenticate
    store.authenticate = lambda presented: lookups.append(presented) or authenticate(presented)
    clock = [1000.0]
    app = TenantAuthMiddleware(_tenant_echo, served="arena", keys=KeyLookup(store, timer=lambda: clock[0]))

    async def get(presented: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://helios") as client:
            return await client.get("/predict", headers={"X-API-Key": presented})

    async def scenario():
        assert (await get(key)).text == "arena" and (await get(key)).text == "arena"
        assert len(lookups) == 1  # the second request was served from the cache
        store.rotate_key("arena", grace=timedelta(0))  # revokes the key at once in the store
        clock[0] += KEY_CACHE_SECONDS - 1
        assert (await get(key)).status_code == 200  # within the stated bound the cache still admits it
        clock[0] += 2
        assert (await get(key)).status_code == 401  # past it, the store's answer holds
        assert len(lookups) == 2
        for _ in range(3):
            assert (await get("hel_wrong_key")).status_code == 401
        assert len(lookups) == 3  # a wrong key is looked up once per period too

    asyncio.run(scenario())
    store.close()


def test_the_push_endpoints_look_keys_up_through_the_same_cache_as_the_auth_middleware(tmp_path, monkeypatch):
    """#14: serving/ingest.py authenticated every push with its own uncached store lookup."""
    pushy = TenantConfig.model_validate({"id": "pushy", "name": "Pushy", "step": "1min", "source": {"type": "push"},
                                         "metrics": {"players": {"series": "players_online", "forecast": {"horizons": ["15m"]}}}})
    tenants = PushTenants(tmp_path, [pushy])
    store = Store(tenants.database_url)
    lookups = []
    authenticate = store.authenticate
    store.authenticate = lambda presented: lookups.append(presented) or authenticate(presented)
    monkeypatch.setattr(auth, "KEYS", KeyLookup(store))
    monkeypatch.setattr(ingest, "_served", {})  # restored after the test
    ingest.serve([pushy])  # what the service does at start-up with its bundles' configs
    api = FastAPI()
    api.include_router(ingest_router)
    app = TenantAuthMiddleware(api, served="pushy")  # the service's stack when keys are required
    key = tenants.keys["pushy"]

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://helios") as client:
            for _ in range(3):
                answer = await client.get("/ingest/config", headers={"X-API-Key": key})
                assert answer.status_code == 200 and answer.json()["tenant"] == "pushy"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://helios") as client:
            assert (await client.get("/ingest/config", headers={"Authorization": f"Bearer {key}"})).status_code == 200
            assert (await client.get("/ingest/config", headers={"X-API-Key": "hel_wrong"})).status_code == 401
            assert (await client.get("/ingest/config", headers={"X-API-Key": "hel_wrong"})).status_code == 401

    asyncio.run(scenario())
    assert lookups == [key, "hel_wrong"]  # one store lookup per key: middleware and ingest share the cache
    store.close()


# ---- 4. an error never drops the keep-alive connection ------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _served(app):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", loop="asyncio",
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, thread, port


@pytest.mark.parametrize("guarded", [True, False])
def test_after_a_route_raises_the_next_request_on_the_connection_is_answered(guarded):
    """Starlette answers 500 and re-raises; uvicorn then closes the connection without saying so.
    Under the guard the same socket serves the next request (unguarded: the reproduction)."""
    api = FastAPI()

    @api.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    @api.get("/fine")
    def fine():
        return {"ok": True}

    server, thread, port = _served(RequestGuard(api) if guarded else api)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/boom")
        failed = connection.getresponse()
        failed.read()
        assert failed.status == 500
        time.sleep(0.2)  # the server's close, if any, has arrived
        if guarded:
            connection.request("GET", "/fine")
            assert connection.getresponse().status == 200
        else:
            with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
                connection.request("GET", "/fine")
                connection.getresponse()
    finally:
        connection.close()
        server.should_exit = True
        thread.join(timeout=10)


# ---- 2. one tenant's gauges fail alone and recover ---------------------------------------------

class _BrokenSource:
    def fetch(self, start, end):
        raise OSError("monitoring unreachable")


def test_one_tenants_failing_gauges_leave_the_others_fresh_and_recover_without_restart(trained_arena, duel_bundle):  # noqa: F811
    assert trained_arena.success
    arena = TenantRuntime(bentoml.models.get("helios-arena:latest").path)
    duel = TenantRuntime(bentoml.models.get(duel_bundle[1]).path)
    registry = CollectorRegistry()
    board = GaugeBoard(registry)
    working = duel.source
    duel.source = _BrokenSource()

    failed = refresh(board, [duel, arena], lambda runtime, now: runtime.samples(now), NOW)
    assert set(failed) == {"duel"}
    labels = {"metric": "concurrent_users", "horizon": "1h"}
    expected = arena.predict("concurrent_users", 60, now=NOW)["value"]
    assert registry.get_sample_value("helios_forecast_value", {"customer": "arena"} | labels) == pytest.approx(expected)
    assert registry.get_sample_value("helios_forecast_value", {"customer": "duel"} | labels) is None

    duel.source = working  # the tenant's monitoring is back: the next refresh publishes it
    assert refresh(board, [duel, arena], lambda runtime, now: runtime.samples(now), NOW) == {}
    assert registry.get_sample_value("helios_forecast_value", {"customer": "duel"} | labels) == pytest.approx(
        duel.predict("concurrent_users", 60, now=NOW)["value"])
