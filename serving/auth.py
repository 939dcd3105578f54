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
"""

from __future__ import annotations

import json

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
TENANT_METRICS_PATH = "/_helios/tenant-metrics"


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """``X-API-Key``, or a bearer token (what Prometheus' remote_write and Grafana send)."""
    key = headers.get(b"x-api-key")
    if key:
        return key.decode("latin-1").strip()
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


class TenantAuthMiddleware:
    def __init__(self, app, served: str = "") -> None:
        self.app = app
        self.served = frozenset(t for t in served.split(",") if t)
        self._store = None

    @property
    def store(self):
        if self._store is None:
            from helios_pipelines.core.store import Store

            self._store = Store()
        return self._store

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = presented_key(dict(scope.get("headers", [])))
        identity = self.store.authenticate(key) if key else None
        if identity is None:
            await _reject(send, 401, "a valid X-API-Key header is required")
            return
        if identity.slug not in self.served:
            await _reject(send, 403, f"this service does not serve tenant '{identity.slug}'")
            return
        scope.setdefault("state", {})["tenant"] = identity.slug
        if scope["path"] == "/metrics":
            scope = dict(scope, path=TENANT_METRICS_PATH, raw_path=TENANT_METRICS_PATH.encode())
        await self.app(scope, receive, send)


async def _reject(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
