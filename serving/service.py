"""The Helios BentoML service: /predict, /detect, /recommend for the tenants it is started with.

Started per tenant (the integration guide's sidecar option) with
``bentoml serve serving.service:HeliosService --arg tenants=gaming-corp``; the tenant's bundle
(its pinned champions) is declared at class level so ``bentoml build`` packs it into the Bento.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import bentoml
import pandas as pd
from bentoml.exceptions import InvalidArgument, NotFound
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from serving import promql
from serving.runtime import NotFoundError, RequestError, TenantRuntime


class ServiceArguments(BaseModel):
    tenants: str = Field(description="comma-separated tenant ids")
    bundles: str = Field("", description="comma-separated pinned bundle tags; default helios-<tenant>:latest")

    def bundle_tags(self) -> list[str]:
        tenants = [t.strip() for t in self.tenants.split(",") if t.strip()]
        pinned = [b.strip() for b in self.bundles.split(",") if b.strip()]
        by_tenant = {tag.split(":")[0].removeprefix("helios-"): tag for tag in pinned}
        return [by_tenant.get(t, f"helios-{t}:latest") for t in tenants]


ARGUMENTS = bentoml.use_arguments(ServiceArguments)


class Point(BaseModel):
    timestamp: datetime
    value: float

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("value must be a finite number")
        return value


def _http_errors(call):
    """Domain errors become 4xx responses that say what was wrong."""
    try:
        return call()
    except NotFoundError as exc:
        raise NotFound(str(exc)) from None
    except RequestError as exc:
        raise InvalidArgument(str(exc)) from None


def _query_time(raw: str | None) -> pd.Timestamp:
    """Prometheus accepts unix seconds (promtool) or RFC 3339 (KEDA); default now."""
    if raw is None or raw == "":
        return pd.Timestamp.now(tz="UTC")
    try:
        return pd.Timestamp(float(raw), unit="s", tz="UTC")
    except ValueError:
        pass
    try:
        stamp = pd.Timestamp(raw)
    except ValueError:
        raise promql.QueryError(f"cannot parse {raw!r} to a valid timestamp") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# Routes that need GET or form bodies (Prometheus' HTTP API, the guide's GET /predict) live here.
http = FastAPI(title="Helios Prometheus-compatible API")


@bentoml.service(name="helios", traffic={"timeout": 30}, workers=1)
@bentoml.asgi_app(http, path="/")
class HeliosService:
    bundles = [bentoml.models.BentoModel(tag) for tag in ARGUMENTS.bundle_tags()]

    def __init__(self) -> None:
        self.runtimes = {}
        for bundle in self.bundles:
            runtime = TenantRuntime(Path(bundle.stored.path))
            self.runtimes[runtime.tenant_id] = runtime
        self._gauges = None
        threading.Thread(target=self._publish_forever, name="helios-gauges", daemon=True).start()

    def samples(self, at: pd.Timestamp | None = None) -> list[promql.Sample]:
        return [s for runtime in self.runtimes.values() for s in runtime.samples(at)]

    def _publish_forever(self) -> None:
        """Keep Helios' series on /metrics (BentoML's prometheus registry) fresh, once per step."""
        import time

        import prometheus_client  # after BentoML set PROMETHEUS_MULTIPROC_DIR in this worker

        gauges: dict[str, prometheus_client.Gauge] = {}
        period = min(r.step.total_seconds() for r in self.runtimes.values())
        while True:
            try:
                for sample in self.samples():
                    if sample.name not in gauges:
                        gauges[sample.name] = prometheus_client.Gauge(
                            sample.name, sample.help or sample.name, sorted(sample.labels), multiprocess_mode="mostrecent"
                        )
                    gauges[sample.name].labels(**sample.labels).set(sample.value)
            except Exception:  # a failed refresh must not kill the publisher; the next step retries
                import logging

                logging.getLogger(__name__).exception("refreshing Helios gauges failed")
            time.sleep(max(15.0, period))

    @http.api_route("/api/v1/query", methods=["GET", "POST"])
    async def prometheus_query(self, request: Request) -> JSONResponse:
        """Prometheus' instant query over Helios' series: exactly one series or an error, never an
        empty success (KEDA would read that as 0 and scale to the minimum)."""
        params = dict(request.query_params)
        if request.method == "POST":
            params |= dict(await request.form())
        try:
            at = _query_time(params.get("time"))
            sample = promql.select_one(self.samples(at), params.get("query", ""))
        except promql.QueryError as error:
            status = 422 if error.error_type == "not_found" else 400
            return JSONResponse(promql.error_response(error), status_code=status)
        except (NotFoundError, RequestError) as error:
            return JSONResponse(promql.error_response(promql.QueryError(str(error), "execution")), status_code=422)
        return JSONResponse(promql.vector_response([sample], at.timestamp()))

    @http.get("/predict")
    def predict_get(self, metric: str, horizon: int = 15, tenant: str | None = None) -> JSONResponse:
        """The integration guide's GET /predict?metric=&horizon= (minutes)."""
        try:
            return JSONResponse(self.runtime(tenant).predict(metric, horizon))
        except NotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    def runtime(self, tenant: str | None) -> TenantRuntime:
        if tenant is None:
            if len(self.runtimes) == 1:
                return next(iter(self.runtimes.values()))
            raise RequestError(f"name a tenant: {', '.join(sorted(self.runtimes))}")
        if tenant not in self.runtimes:
            raise NotFoundError(f"unknown tenant '{tenant}'")
        return self.runtimes[tenant]

    @bentoml.api(route="/predict")
    def predict(self, metric: str, horizon: int = Field(15, description="minutes ahead"), tenant: str | None = None) -> dict:
        """Forecast ``metric`` ``horizon`` minutes ahead: value, 80% bounds, target time, model version."""
        return _http_errors(lambda: self.runtime(tenant).predict(metric, horizon))

    @bentoml.api(route="/detect")
    def detect(
        self,
        metric: str | None = None,
        metrics: list[str] | None = None,
        points: list[Point] | None = None,
        tenant: str | None = None,
    ) -> dict:
        """Anomaly scores in [0, 1] for the latest point of each watched metric, or for given points."""
        names = ([metric] if metric else []) + list(metrics or [])
        given = [(p.timestamp, p.value) for p in points] if points else None
        return _http_errors(lambda: self.runtime(tenant).detect(names or None, given))

    @bentoml.api(route="/recommend")
    def recommend(
        self,
        service: str | None = None,
        metric: str | None = None,
        current_replicas: int | None = Field(None, ge=0),
        tenant: str | None = None,
    ) -> dict:
        """Replicas for a scaled service, with every step of the arithmetic."""
        return _http_errors(lambda: self.runtime(tenant).recommend(service or metric, current_replicas))
