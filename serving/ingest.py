"""Push endpoints: Prometheus remote-write and the JSON batch, stored per tenant in the Helios store.

- ``POST /api/v1/write``: Prometheus remote-write 1.0 (protobuf + snappy), answered 204.
- ``POST /ingest``: the JSON batch of ``core/ops/ingest.py`` (``Content-Encoding: gzip`` optional),
  answered 200 with how many samples were accepted and how many of them were new.
- ``GET /ingest/config``: what the key's tenant accepts (series, kinds, step, window, limits), so the
  helios-agent asks Helios instead of being configured twice.

Only tenants whose source is ``push`` may push (403 naming the tenant and its source otherwise).
Every route authenticates the tenant's API key (``X-API-Key``, or ``Authorization: Bearer`` as
Prometheus' remote_write sends it) before reading the body, through the service's one cached key
lookup (serving/auth.py ``KEYS``): without a valid key the answer is 401 and nothing is stored. The
tenant comes from the key alone; a client may name the tenant it expects in ``X-Helios-Customer`` and
is refused (403) when the key belongs to another, a guard against a mis-pasted key, never a way to
choose where data goes.

Samples go to the store (``HELIOS_DATABASE_URL``, core/ops/store/pushed.py), so every replica and the
pipeline's push source read what any replica accepted; a retried request stores nothing twice.

The tenants accepted and their metrics are the ones the process was started with (``serve``: the
service passes its bundles' tenant configs, which carry the series names pushes use; the store's
``customer_metrics`` holds logical names only). Nothing is read from ``configs/`` at request time:
the Bento does not pack it. A key of a tenant the process does not serve is refused (403).
Work that blocks (the store, decoding) runs in the thread pool, off the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from helios_pipelines.core.ops import ingest, plans
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.tenants import TenantConfig
from serving import auth

CUSTOMER_HEADER = "x-helios-customer"

router = APIRouter(tags=["ingest"])


@dataclass(frozen=True)
class Pusher:
    tenant: TenantConfig
    retention: timedelta


# The tenants this process accepts pushes for, by id: fixed at start-up by ``serve``.
_served: dict[str, TenantConfig] = {}


def serve(tenants: Iterable[TenantConfig]) -> None:
    """Accept pushes for ``tenants`` (the service calls this at start-up with its bundles' configs)."""
    _served.clear()
    _served.update({tenant.id: tenant for tenant in tenants})


@functools.cache
def _store() -> Store:
    return Store()


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


async def _authenticate(request: Request) -> Pusher:
    key = auth.presented_key(dict(request.scope.get("headers", [])))
    identity = await auth.KEYS.identity(key) if key else None
    if identity is None:
        raise _Refused(401, "a valid API key is required (X-API-Key header or Authorization: Bearer)",
                       {"WWW-Authenticate": "Bearer"})
    expected = request.headers.get(CUSTOMER_HEADER)
    if expected and expected != identity.slug:
        raise _Refused(403, f"the API key belongs to tenant '{identity.slug}', not '{expected[:80]}'")
    if identity.slug not in _served:
        raise _Refused(403, f"this service does not serve tenant '{identity.slug}'")
    return Pusher(_served[identity.slug], timedelta(days=plans.plan(identity.plan).retention_days))


async def _body(request: Request) -> bytes:
    """The raw body, refused (413) as soon as it passes the limit, without reading the rest."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > ingest.MAX_BODY_BYTES:
        raise ingest.IngestError(413, f"body of {declared} bytes; the limit is {ingest.MAX_BODY_BYTES}: send smaller batches")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > ingest.MAX_BODY_BYTES:
            raise ingest.IngestError(413, f"body over {ingest.MAX_BODY_BYTES} bytes: send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


def _store_batch(pusher: Pusher, pushed: list[ingest.PushedSeries]) -> tuple[int, int]:
    """Validates and stores; returns (samples accepted, samples new)."""
    batch = ingest.validate(pushed, pusher.tenant, pusher.retention, datetime.now(UTC))
    return batch.sample_count, _store().add_pushed(pusher.tenant.id, batch.series)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _handle(request: Request, media_type: str, decode, answer) -> Response:
    try:
        pusher = await _authenticate(request)
        source = pusher.tenant.source.type
        if source != "push":
            raise _Refused(403, f"tenant '{pusher.tenant.id}' reads its metrics from its '{source}' source, so Helios "
                                "does not accept pushes for it; pushes are for tenants with source: {type: push}")
        if _media_type(request) != media_type:
            raise ingest.IngestError(415, f"Content-Type must be {media_type}, got '{_media_type(request) or '(none)'}'")
        raw = await _body(request)
        encoding = request.headers.get("content-encoding")

        def decode_and_store() -> tuple[int, int]:
            return _store_batch(pusher, decode(ingest.decompress(raw, encoding)))

        return answer(*await run_in_threadpool(decode_and_store))
    except _Refused as refused:
        return JSONResponse({"error": refused.message}, status_code=refused.status, headers=refused.headers)
    except ingest.IngestError as error:
        return JSONResponse({"error": str(error)}, status_code=error.status)


@router.post("/api/v1/write", status_code=204)
async def remote_write(request: Request) -> Response:
    """Prometheus remote-write 1.0: a snappy-compressed protobuf WriteRequest."""
    return await _handle(
        request, ingest.REMOTE_WRITE_CONTENT_TYPE, ingest.decode_write_request, lambda accepted, new: Response(status_code=204)
    )


@router.post("/ingest")
async def ingest_json(request: Request) -> Response:
    """The JSON batch ``{"samples": [{"metric", "labels", "timestamp", "value"}, ...]}``."""
    return await _handle(
        request, ingest.JSON_CONTENT_TYPE, ingest.decode_json_batch,
        lambda accepted, new: JSONResponse({"accepted": accepted, "new": new, "duplicates": accepted - new}),
    )


@router.get("/ingest/config")
async def ingest_config(request: Request) -> Response:
    """What the key's tenant accepts: the agent reads its series, kinds and step from here."""
    try:
        pusher = await _authenticate(request)
    except _Refused as refused:
        return JSONResponse({"error": refused.message}, status_code=refused.status, headers=refused.headers)
    tenant = pusher.tenant
    return JSONResponse({
        "tenant": tenant.id,
        "source": tenant.source.type,
        "step_seconds": tenant.step_timedelta.total_seconds(),
        "history_days": tenant.training.history_days,
        "retention_days": pusher.retention.days,
        "max_future_seconds": ingest.MAX_FUTURE.total_seconds(),
        "max_samples_per_request": ingest.MAX_SAMPLES,
        "max_body_bytes": ingest.MAX_BODY_BYTES,
        "max_decoded_bytes": ingest.MAX_DECODED_BYTES,
        "max_labels_per_series": ingest.MAX_LABELS,
        "max_name_length": ingest.MAX_NAME_LENGTH,
        "max_label_value_length": ingest.MAX_LABEL_VALUE_LENGTH,
        "metrics": [
            {"name": name, "series": metric.series, "kind": metric.kind} for name, metric in tenant.metrics.items()
        ],
    })
