"""Tenant isolation for the multi-tenant service: ``X-API-Key`` selects the tenant.

An ASGI middleware, so every route is covered the same way: BentoML's JSON endpoints, the
Prometheus-compatible API and ``/metrics``. Keys are looked up hashed and compared in constant time
by the store. With keys required:

- a request without a valid key gets 401 and reaches no handler;
- the key's tenant is put in the request state, and handlers answer for that tenant only (a
  ``tenant`` parameter naming another one is 403);
- ``/metrics`` is answered with the key's tenant's series only (BentoML's own registry holds every
  tenant's gauges, so it is never exposed to a tenant).

Health probes stay open: Kubernetes calls them without keys.

Key lookups are cached for ``KEY_CACHE_SECONDS`` (refusals too, so a flood of wrong keys costs one
lookup per key and period): a revoked or expired key, or a disabled customer, is refused at most that
long after the store says so. A lookup the cache misses runs in a worker thread, never on the event
loop. A key longer than any Helios issues is refused without a lookup. The process has one cache,
``KEYS``: this middleware and the push endpoints (serving/ingest.py) look keys up through it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import anyio
from cachetools import TTLCache

from serving.request_guard import reject

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
TENANT_METRICS_PATH = "/_helios/tenant-metrics"
KEY_CACHE_SECONDS = 30.0
KEY_CACHE_SIZE = 10_000
MAX_KEY_LENGTH = 256  # Helios' keys are about 60 characters
_MISSING = object()


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """``X-API-Key``, or a bearer token (what Prometheus' remote_write and Grafana send)."""
    key = headers.get(b"x-api-key")
    if key:
        return key.decode("latin-1").strip()
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


class KeyLookup:
    """Who an API key belongs to, from the store, each answer (a refusal too) kept ``KEY_CACHE_SECONDS``."""

    def __init__(self, store=None, timer: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._identities = TTLCache(maxsize=KEY_CACHE_SIZE, ttl=KEY_CACHE_SECONDS, timer=timer)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe; test clients run loops in threads

    @property
    def store(self):
        if self._store is None:
            from helios_pipelines.core.ops.store import Store

            self._store = Store()
        return self._store

    async def identity(self, key: str):
        """Who ``key`` belongs to (None: nobody), from the cache or the store (read in a worker thread)."""
        digest = hashlib.sha256(key.encode()).digest()
        with self._lock:
            found = self._identities.get(digest, _MISSING)
        if found is _MISSING:
            found = await anyio.to_thread.run_sync(self.store.authenticate, key)
            with self._lock:
                self._identities[digest] = found
        return found


KEYS = KeyLookup()  # the process's key cache (its store is opened on the first lookup)


class TenantAuthMiddleware:
    def __init__(self, app, served: str = "", keys: KeyLookup | None = None) -> None:
        self.app = app
        self.served = frozenset(t for t in served.split(",") if t)
        self.keys = keys or KEYS

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = presented_key(dict(scope.get("headers", [])))
        if key and len(key) > MAX_KEY_LENGTH:
            await reject(send, 401, f"the API key is {len(key)} characters; Helios keys have at most {MAX_KEY_LENGTH}")
            return
        if not key:
            await reject(send, 401, "no API key: send the tenant's key as X-API-Key (or Authorization: Bearer)")
            return
        identity = await self.keys.identity(key)
        if identity is None:
            await reject(send, 401, "the API key sent (X-API-Key or Authorization: Bearer) is not valid: "
                                    "unknown, revoked or expired, or its customer is disabled")
            return
        if identity.slug not in self.served:
            await reject(send, 403, f"this service does not serve tenant '{identity.slug}'")
            return
        scope.setdefault("state", {})["tenant"] = identity.slug
        if scope["path"] == "/metrics":
            scope = dict(scope, path=TENANT_METRICS_PATH, raw_path=TENANT_METRICS_PATH.encode())
        await self.app(scope, receive, send)
