"""The Helios BentoML service: /predict, /detect, /recommend, /events and /annotations for the tenants it
is started with.

Started per tenant (the integration guide's sidecar option) with
``bentoml serve serving.service:HeliosService --arg tenants=gaming-corp``; the tenant's bundle
(its pinned champions) is declared at class level so ``bentoml build`` packs it into the Bento.

This module only declares the service (its arguments, routes, fields and middlewares); what serves
is ``serving.host.Host``, created with the service. `bentoml serve` imports this module in two
processes, its arbiter, which reads the declaration to start the worker and then only supervises it,
and the worker; importing pandas, the models' libraries and the store here held some 120 MiB in the
arbiter for nothing, a fifth of the service's memory (bench/results/serve.md). tests/test_boundaries.py
checks that loading it imports none of them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import bentoml
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, field_validator

from serving.auth import TENANT_METRICS_PATH, TenantAuthMiddleware
from serving.request_guard import (
    MAX_HORIZON_MINUTES,
    MAX_METRICS_PER_DETECT,
    MAX_POINTS_PER_DETECT,
    POINT_YEARS,
    RequestGuard,
)
from serving.timeout import replace_bentoml_timeout

Name = Annotated[str, Field(min_length=1, max_length=200)]
TenantId = Annotated[str, Field(min_length=1, max_length=64)]


class ServiceArguments(BaseModel):
    tenants: str = Field(description="comma-separated tenant ids")
    bundles: str = Field("", description="comma-separated pinned bundle tags; default helios-<tenant>:latest")
    api_keys: bool = Field(False, description="require X-API-Key on every request (the multi-tenant mode)")

    def bundle_tags(self) -> list[str]:
        tenants = [t.strip() for t in self.tenants.split(",") if t.strip()]
        pinned = [b.strip() for b in self.bundles.split(",") if b.strip()]
        by_tenant = {tag.split(":")[0].removeprefix("helios-"): tag for tag in pinned}
        return [by_tenant.get(t, f"helios-{t}:latest") for t in tenants]


ARGUMENTS = bentoml.use_arguments(ServiceArguments)


class Point(BaseModel):
    timestamp: datetime
    value: float = Field(allow_inf_nan=False)

    @field_validator("timestamp")
    @classmethod
    def _plausible(cls, value: datetime) -> datetime:
        if not POINT_YEARS[0] <= value.year <= POINT_YEARS[1]:
            raise ValueError(f"timestamp must be between the years {POINT_YEARS[0]} and {POINT_YEARS[1]}")
        return value


def _authenticated(request) -> str | None:
    """The tenant the auth middleware found for this request's key (None when keys are off)."""
    return getattr(request.state, "tenant", None)


# Routes that need GET or form bodies (the guide's GET /predict, Prometheus' HTTP API) live here; the
# host adds the pushes', Prometheus API's and verdicts' routers when the worker creates the service.
http = FastAPI(title="Helios Prometheus-compatible API")


@http.exception_handler(RequestValidationError)
def _invalid_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
    """A query parameter out of its bounds is a 400 naming it (and the tenant asked about, where the key or
    the query names one), in the {"error": ...} shape of every other refusal (serving/errors.py); FastAPI's
    own answer was a 422 with a list under "detail"."""
    from serving.errors import invalid_fields, shown  # the worker's: errors.py imports the store

    tenant = _authenticated(request) or request.query_params.get("tenant")
    about = f"tenant {shown(tenant)}: " if tenant else ""
    return JSONResponse({"error": about + invalid_fields(error.errors(), sourced=True)}, status_code=400)


replace_bentoml_timeout()  # BentoML's keeps every request alive for the whole timeout (serving/timeout.py)


@bentoml.service(name="helios", traffic={"timeout": 30}, workers=1)
@bentoml.asgi_app(http, path="/")
class HeliosService:
    bundles = [bentoml.models.BentoModel(tag) for tag in ARGUMENTS.bundle_tags()]

    def __init__(self) -> None:
        from serving.host import Host  # in the worker only (the module docstring says why)

        self.host = Host([Path(bundle.stored.path) for bundle in self.bundles], http)

    @bentoml.on_shutdown
    def _flush_recorder(self) -> None:
        self.host.close()

    @http.get(TENANT_METRICS_PATH, include_in_schema=False)
    def tenant_metrics(self, request: Request) -> PlainTextResponse:
        """/metrics for an API key: that tenant's series only (the auth middleware routes here)."""
        return self.host.tenant_metrics(_authenticated(request))

    @http.get("/predict")
    def predict_get(
        self,
        request: Request,
        metric: Annotated[str, Query(min_length=1, max_length=200)],
        horizon: Annotated[int, Query(ge=1, le=MAX_HORIZON_MINUTES, description="minutes ahead")] = 15,
        tenant: Annotated[str | None, Query(max_length=64)] = None,
    ) -> JSONResponse:
        """The integration guide's GET /predict?metric=&horizon= (minutes); any other parameter is a 400
        naming it (ignored, ?horizon_minutes=60 was answered 15 minutes ahead)."""
        unknown = sorted(set(request.query_params) - {"metric", "horizon", "tenant"})
        return self.host.predict_get(metric, horizon, tenant, _authenticated(request), unknown)

    @http.get("/events/{name}/scorecard")
    def event_scorecard(self, request: Request, name: str, tenant: str | None = None) -> JSONResponse:
        """An event's scorecard once it is over (serving/answers/scorecards.py)."""
        return self.host.event_scorecard(name, tenant, _authenticated(request))

    @bentoml.api(route="/predict")
    async def predict(
        self,
        metric: Name,
        horizon: int = Field(15, strict=True, ge=1, le=MAX_HORIZON_MINUTES, description="minutes ahead"),
        tenant: TenantId | None = None,
        ctx: bentoml.Context = None,
    ) -> dict:
        """Forecast ``metric`` ``horizon`` minutes ahead: value, 80% bounds, target time, model version."""
        return await self.host.predict(ctx, metric, horizon, tenant, _authenticated(ctx.request))

    @bentoml.api(route="/detect")
    async def detect(
        self,
        metric: Name | None = None,
        metrics: Annotated[list[Name], Field(max_length=MAX_METRICS_PER_DETECT)] | None = None,
        points: Annotated[list[Point], Field(max_length=MAX_POINTS_PER_DETECT)] | None = None,
        record: bool = Field(False, strict=True, description="record anomalies among the points up to the last complete step"),
        tenant: TenantId | None = None,
        ctx: bentoml.Context = None,
    ) -> dict:
        """Anomaly scores in [0, 1] for the latest point of each watched metric, or for given points
        (a what-if: not recorded unless ``record``)."""
        names = ([metric] if metric else []) + list(metrics or [])
        given = [(p.timestamp, p.value) for p in points] if points else None
        return await self.host.detect(ctx, names, given, record, tenant, _authenticated(ctx.request))

    @bentoml.api(route="/recommend")
    async def recommend(
        self,
        service: Name | None = None,
        metric: Name | None = None,
        current_replicas: int | None = Field(None, strict=True, ge=0),
        tenant: TenantId | None = None,
        ctx: bentoml.Context = None,
    ) -> dict:
        """Replicas for a scaled service, with every step of the arithmetic."""
        return await self.host.recommend(ctx, service or metric, current_replicas, tenant, _authenticated(ctx.request))

    @bentoml.api(route="/events")
    def events(
        self,
        name: str,
        start: datetime,
        duration_hours: float = Field(strict=True),
        multiplier: float | None = Field(None, strict=True),
        expected_multiplier: float | None = Field(None, strict=True),
        kind: str = "",
        metrics: list[str] | None = None,
        ramp_minutes: float = Field(0.0, strict=True),
        tenant: TenantId | None = None,
        ctx: bentoml.Context = None,
    ) -> dict:
        """Post an upcoming scheduled event (the guide's name, start, duration, expected multiplier;
        optionally how long its traffic takes to build up and wind down). ScheduledEvent's rules
        (finite, bounded, ramps that fit) are checked before anything is kept.
        Kept in the store, so every replica of the tenant honours it."""
        given = {"multiplier": multiplier, "expected_multiplier": expected_multiplier}  # the guide's name too
        fields = {"name": name, "kind": kind, "start": start, "duration_hours": duration_hours,
                  "metrics": metrics or [], "ramp_minutes": ramp_minutes,
                  **{k: v for k, v in given.items() if v is not None}}
        return self.host.post_event(ctx, fields, tenant, _authenticated(ctx.request))

    @bentoml.api(route="/annotations")
    def annotations(
        self,
        time: datetime,
        timeEnd: datetime | None = None,
        time_end: datetime | None = None,
        tags: Annotated[list[str], Field(max_length=20)] | None = None,
        text: str = "",
        kind: str | None = Field(None, description="'deploy' or 'scale' (default: 'scale' when a tag says so)"),
        metrics: Annotated[list[Name], Field(max_length=100)] | None = None,
        replicas_before: int | None = Field(None, strict=True),
        replicas_after: int | None = Field(None, strict=True),
        dashboardUID: str | None = Field(None, description="Grafana's: accepted, not kept"),
        dashboardId: int | None = Field(None, description="Grafana's: accepted, not kept"),
        panelId: int | None = Field(None, description="Grafana's: accepted, not kept"),
        tenant: TenantId | None = None,
        ctx: bentoml.Context = None,
    ) -> dict:
        """Report a deploy or scaling action, in Grafana's annotation body as a CD step already sends it
        (the same body can go to Grafana and to Helios): the detector takes it as a known cause of
        alerts. ``time`` and ``timeEnd`` (or ``time_end``) are epoch milliseconds, as Grafana's, or ISO
        8601; without an end the change lasts the detector's level window (20 steps by default).
        ChangeAnnotation's rules (a window that ends after it starts, at most a few hours; replicas for a
        scale) are checked before anything is kept. Kept in the store, so every replica of the tenant honours it."""
        given = {"timeEnd": timeEnd, "time_end": time_end, "tags": tags, "kind": kind, "metrics": metrics,
                 "replicas_before": replicas_before, "replicas_after": replicas_after,
                 "dashboardUID": dashboardUID, "dashboardId": dashboardId, "panelId": panelId}
        fields = {"time": time, "text": text, **{k: v for k, v in given.items() if v is not None}}
        return self.host.post_change(ctx, fields, tenant, _authenticated(ctx.request))


def _refuse_unknown_keys(service) -> None:
    """A JSON body's key its endpoint does not have is a 400 naming it. BentoML builds each body's
    model from the method's signature with pydantic's default, which ignores unknown keys: a misspelt
    one was answered with its default (``{"metric": ..., "horizon_minutes": 60}`` for 15 minutes ahead)."""
    for method in service.apis.values():
        method.input_spec.model_config["extra"] = "forbid"
        method.input_spec.model_rebuild(force=True)


_refuse_unknown_keys(HeliosService)
HeliosService.add_asgi_middleware(RequestGuard)
if ARGUMENTS.api_keys:
    HeliosService.add_asgi_middleware(TenantAuthMiddleware, served=ARGUMENTS.tenants)
