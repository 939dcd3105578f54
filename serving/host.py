"""What the Helios service does in the worker that serves: its tenants' runtimes, the store it records
to, the background publisher, and the answer behind every route. serving/service.py declares the
routes and creates this when BentoML creates the service; `bentoml serve`'s arbiter process imports
that module but never this one, so pandas, the models and the store are loaded by the worker only.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import bentoml
import pandas as pd
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from helios_pipelines.core.ml.changes import ChangeAnnotation
from helios_pipelines.core.ops.exposition import Sample, exposition
from helios_pipelines.core.ops.feedback import PredictionRecorder
from helios_pipelines.core.ops.migrations import upgrade
from helios_pipelines.core.ops.scorecard_store import scorecard_samples
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.tenants import ScheduledEvent
from serving import prometheus_api, publisher, verdicts
from serving.alert_routing import apply_alert_file
from serving.answers.scorecards import scorecard_response
from serving.detections import DetectionRecorder
from serving.errors import (
    DOMAIN_ERRORS,
    ForbiddenError,
    NotFoundError,
    RequestError,
    TenantUnavailableError,
    invalid_fields,
    shown,
    status_of,
)
from serving.ingest import router as ingest_router
from serving.ingest import serve as accept_pushes
from serving.posted_events import EventFeed
from serving.published import PublishedSeries
from serving.request_guard import MAX_METRICS_PER_DETECT
from serving.runtime import TenantRuntime

log = logging.getLogger(__name__)
T = TypeVar("T")


class _ClientErrorsUnlogged(logging.Filter):
    """BentoML answers a body that fails its endpoint's validation with a 400, and logged it at ERROR
    with the traceback: some 2.5 KB per bad request, so any client could fill the service log and page
    whoever watches its errors. The access log's line, with its 400, records the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ValidationError))


# The logger of BentoML's api_endpoint_wrapper (bentoml._internal.server.http_app.log_exception);
# filtered once per process, not once per Host (tests build many).
BENTOML_ENDPOINT_LOG = "bentoml._internal.server.http_app"
logging.getLogger(BENTOML_ENDPOINT_LOG).addFilter(_ClientErrorsUnlogged())


def _http_errors(call, ctx: bentoml.Context):
    """BentoML's routes: a domain error is answered ``{"error": message}`` with its status
    (serving/errors.py ``STATUS``); raised as BentoML's own exceptions, a 403's or 503's message would
    be blanked, and the caller must learn which tenant and what was wrong."""
    try:
        return call()
    except DOMAIN_ERRORS as exc:
        ctx.response.status_code = status_of(exc)
        return {"error": str(exc)}


def _json_errors(call: Callable[[], JSONResponse]) -> JSONResponse:
    """The plain FastAPI routes: the same answer as ``_http_errors``."""
    try:
        return call()
    except DOMAIN_ERRORS as exc:
        return JSONResponse({"error": str(exc)}, status_code=status_of(exc))


def _for_tenant(runtime: TenantRuntime, answer: Callable[[TenantRuntime], T]) -> T:
    """``answer(runtime)``; anything but a request error is this tenant's own failure (its source,
    a model): logged, and answered as this tenant's 503, so it never reads as the service's."""
    try:
        return answer(runtime)
    except DOMAIN_ERRORS:
        raise
    except Exception as exc:
        log.exception("tenant '%s' failed to answer", runtime.tenant_id)
        raise TenantUnavailableError(
            f"tenant '{runtime.tenant_id}' cannot answer right now ({type(exc).__name__}); "
            "other tenants are unaffected and the service log has the details"
        ) from exc


class Host:
    def __init__(self, bundle_dirs: list[Path], http: FastAPI) -> None:
        self.runtimes = {}
        for bundle_dir in bundle_dirs:
            runtime = TenantRuntime(bundle_dir)
            self.runtimes[runtime.tenant_id] = runtime
        accept_pushes(r.tenant for r in self.runtimes.values())  # pushes are checked against the bundles' configs
        # Served predictions and anomalies go to the Helios store (HELIOS_DATABASE_URL), off the hot path.
        self.store = Store()
        if self.store.url.startswith("sqlite"):
            upgrade(self.store.url)  # the embedded store migrates itself; production runs `helios db upgrade`
        self.recorder = PredictionRecorder(self.store)
        self.detections = DetectionRecorder(self.store)  # /detect's scores, written by the publisher's thread
        self.accuracy = publisher.LiveAccuracy(self.store)
        apply_alert_file(self.runtimes)  # the rendered alert ConfigMap, when the Deployment mounts one
        # Posted events and changes are kept in the store and polled, so every replica honours them
        # (serving/posted_events.py).
        self.events_feed = EventFeed(self.store, self.runtimes)
        self.events_feed.sync()
        threading.Thread(target=self.events_feed.poll_forever, name="helios-events", daemon=True).start()
        self._compute_limiter: anyio.CapacityLimiter | None = None
        # Each step's series, kept for range queries and past times (serving/published.py); the
        # publisher's gauges are the same record.
        self.published = PublishedSeries(lambda at, tenant: self.tenant_samples(self.runtimes[tenant], at),
                                         {t: r.step for t, r in self.runtimes.items()})
        http.include_router(ingest_router)  # pushed metrics: Prometheus remote_write and the agent's JSON batches
        http.include_router(prometheus_api.router)  # query, query_range, series, labels: KEDA and Grafana
        http.include_router(verdicts.router)  # operators' verdicts on anomaly episodes (serving/verdicts.py)
        prometheus_api.attach(http, prometheus_api.PrometheusAPI(self.published, self.compute_limiter))
        publisher.start(list(self.runtimes.values()), self.store, self.recorder, self.detections,
                        lambda runtime, now: self.published.current(runtime.tenant_id, now))
        # The loaded models, libraries and BentoML are a few hundred thousand long-lived objects: a
        # full garbage collection walking them took 100-300 ms every few seconds under load.
        # Frozen, they are left out of every collection.
        gc.collect()
        gc.freeze()

    def compute_limiter(self) -> anyio.CapacityLimiter:
        """One thread computes what the cache misses, as BentoML runs sync endpoints: concurrent
        requests at a step boundary wait for the first one's forecast instead of each computing it."""
        if self._compute_limiter is None:  # created on the event loop, which anyio requires
            self._compute_limiter = anyio.CapacityLimiter(1)
        return self._compute_limiter

    def close(self) -> None:
        self.detections.flush()
        self.recorder.close()

    async def _answer(self, ctx: bentoml.Context, cached, compute):
        """This step's finished answer straight from the event loop; anything else (a forecast to
        compute, an error to raise) in a worker thread, so the loop never waits on pandas. BentoML would
        run a sync endpoint in its one-thread pool even when the answer is a dict lookup."""
        answer = _http_errors(cached, ctx)
        if answer is None:
            answer = await anyio.to_thread.run_sync(_http_errors, compute, ctx, limiter=self.compute_limiter())
        return answer

    def runtime(self, tenant: str | None, authenticated: str | None = None) -> TenantRuntime:
        """The runtime a request is for: the API key's tenant when keys are on, else ``tenant``."""
        if authenticated is not None:
            if tenant is not None and tenant != authenticated:
                raise ForbiddenError(f"this API key belongs to tenant '{authenticated}', not {shown(tenant)}")
            tenant = authenticated
        if tenant is None:
            if len(self.runtimes) == 1:
                return next(iter(self.runtimes.values()))
            raise RequestError(f"name a tenant: {', '.join(sorted(self.runtimes))}")
        if tenant not in self.runtimes:
            raise NotFoundError(f"unknown tenant {shown(tenant)}")
        return self.runtimes[tenant]

    def tenant_samples(self, runtime: TenantRuntime, at: pd.Timestamp | None = None) -> list[Sample]:
        """A tenant's forecast, anomaly and recommendation series, plus the live accuracy of its served
        forecasts and its latest event scorecards (a small read of the store, once per step)."""
        scorecards = scorecard_samples(self.store, runtime.tenant_id, at) if runtime.planner is not None else []
        return runtime.samples(at) + self.accuracy.samples(runtime.tenant_id) + scorecards

    # ---- the routes' answers (serving/service.py) ----------------------------------------------
    def tenant_metrics(self, tenant: str | None) -> PlainTextResponse:
        """/metrics for an API key: that tenant's series only (the auth middleware routes here)."""
        if tenant is None:
            return PlainTextResponse("an API key is required\n", status_code=401)
        try:
            samples = _for_tenant(self.runtimes[tenant], lambda runtime: self.published.current(runtime.tenant_id))
        except TenantUnavailableError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=503)
        return PlainTextResponse(exposition(samples), media_type="text/plain; version=0.0.4")

    def predict_get(self, metric: str, horizon: int, tenant: str | None, authenticated: str | None,
                    unknown: list[str]) -> JSONResponse:
        def answer() -> JSONResponse:
            if unknown:
                raise RequestError(f"GET /predict takes metric, horizon (minutes) and tenant; unknown: "
                                   f"{', '.join(shown(name) for name in unknown[:8])}")
            return JSONResponse(self._predict(metric, horizon, tenant, authenticated))

        return _json_errors(answer)

    def event_scorecard(self, name: str, tenant: str | None, authenticated: str | None) -> JSONResponse:
        return _json_errors(lambda: scorecard_response(self.store, self.runtime(tenant, authenticated), name))

    async def predict(self, ctx: bentoml.Context, metric: str, horizon: int, tenant: str | None,
                      authenticated: str | None) -> dict:
        request = (metric, horizon, tenant, authenticated)
        return await self._answer(ctx, lambda: self._cached_predict(*request), lambda: self._predict(*request))

    async def detect(self, ctx: bentoml.Context, names: list[str], points, record: bool, tenant: str | None,
                     authenticated: str | None) -> dict:
        request = (names, points, record, tenant, authenticated)
        return await self._answer(ctx, lambda: self._cached_detect(*request), lambda: self._detect(*request))

    async def recommend(self, ctx: bentoml.Context, service: str | None, current_replicas: int | None,
                        tenant: str | None, authenticated: str | None) -> dict:
        return await self._answer(
            ctx,
            lambda: self.runtime(tenant, authenticated).cached_answer("recommend", service, current_replicas),
            lambda: _for_tenant(self.runtime(tenant, authenticated), lambda r: r.recommend(service, current_replicas)),
        )

    def post_event(self, ctx: bentoml.Context, fields: dict, tenant: str | None, authenticated: str | None) -> dict:
        """ScheduledEvent's rules (finite, bounded, ramps that fit) are checked before anything is kept."""
        return self._post(ctx, ScheduledEvent, fields, tenant, authenticated)

    def post_change(self, ctx: bentoml.Context, fields: dict, tenant: str | None, authenticated: str | None) -> dict:
        """ChangeAnnotation's rules (a window that ends after it starts, at most hours long; replicas for
        a scale) are checked before anything is kept."""
        return self._post(ctx, ChangeAnnotation, fields, tenant, authenticated)

    def _post(self, ctx: bentoml.Context, model: type[ScheduledEvent] | type[ChangeAnnotation], fields: dict,
              tenant: str | None, authenticated: str | None) -> dict:
        """What a tenant posts, validated by ``model``, kept in the store for every replica (serving/posted_events.py)."""

        def post() -> dict:
            runtime = self.runtime(tenant, authenticated)
            try:  # the model holds the rules
                posted = model(**fields)
            except ValidationError as exc:
                raise RequestError(f"tenant '{runtime.tenant_id}': {invalid_fields(exc.errors())}") from None
            return _for_tenant(runtime, lambda r: self.events_feed.post(r, posted))

        return _http_errors(post, ctx)

    def _predict(self, metric: str, horizon: int, tenant: str | None, authenticated: str | None) -> dict:
        result = _for_tenant(self.runtime(tenant, authenticated), lambda r: r.predict(metric, horizon))
        self.recorder.record(result)
        return result

    def _cached_predict(self, metric: str, horizon: int, tenant: str | None, authenticated: str | None) -> dict | None:
        result = self.runtime(tenant, authenticated).cached_answer("predict", metric, horizon)
        if result is not None:
            self.recorder.record(result)
        return result

    def _detect(self, names, points, record: bool, tenant: str | None, authenticated: str | None) -> dict:
        """The latest step's scores are queued for recording (anomaly episodes, alerts: serving/detections.py).
        Client points are a what-if: scored, and recorded only when the caller asks, and then only
        the points inside the scored window (up to the last complete step), never a future one."""
        if len(names) > MAX_METRICS_PER_DETECT:
            raise RequestError(f"metrics: at most {MAX_METRICS_PER_DETECT} per request, got {len(names)}")
        runtime = self.runtime(tenant, authenticated)
        result = _for_tenant(runtime, lambda r: r.detect(names or None, points))
        if points is None:
            self.detections.queue(runtime.tenant, result)
            return result
        recordable = []
        if record:
            end = runtime.step_end()
            recordable = [s for s in result["scores"] if pd.Timestamp(s["timestamp"]) <= end]
            if recordable:
                self.detections.write(runtime.tenant, result | {"scores": recordable})
        return result | {"recorded": len(recordable)}

    def _cached_detect(self, names, points, record: bool, tenant: str | None, authenticated: str | None) -> dict | None:
        if points is not None:
            return None  # a what-if is scored for the points given
        runtime = self.runtime(tenant, authenticated)
        result = runtime.cached_answer("detect", tuple(names))
        if result is not None:
            self.detections.queue(runtime.tenant, result)
        return result
