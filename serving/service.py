"""The Helios BentoML service: /predict, /detect, /recommend for the tenants it is started with.

Started per tenant (the integration guide's sidecar option) with
``bentoml serve serving.service:HeliosService --arg tenants=gaming-corp``; the tenant's bundle
(its pinned champions) is declared at class level so ``bentoml build`` packs it into the Bento.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import bentoml
from bentoml.exceptions import InvalidArgument, NotFound
from pydantic import BaseModel, Field, field_validator

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


@bentoml.service(name="helios", traffic={"timeout": 30}, workers=1)
class HeliosService:
    bundles = [bentoml.models.BentoModel(tag) for tag in ARGUMENTS.bundle_tags()]

    def __init__(self) -> None:
        self.runtimes = {}
        for bundle in self.bundles:
            runtime = TenantRuntime(Path(bundle.stored.path))
            self.runtimes[runtime.tenant_id] = runtime

    def runtime(self, tenant: str | None) -> TenantRuntime:
        if tenant is None:
            if len(self.runtimes) == 1:
                return next(iter(self.runtimes.values()))
            raise InvalidArgument(f"name a tenant: {', '.join(sorted(self.runtimes))}")
        if tenant not in self.runtimes:
            raise NotFound(f"unknown tenant '{tenant}'")
        return self.runtimes[tenant]

    @bentoml.api(route="/predict")
    def predict(self, metric: str, horizon: int = Field(15, description="minutes ahead"), tenant: str | None = None) -> dict:
        """Forecast ``metric`` ``horizon`` minutes ahead: value, 80% bounds, target time, model version."""
        runtime = self.runtime(tenant)
        return _http_errors(lambda: runtime.predict(metric, horizon))

    @bentoml.api(route="/detect")
    def detect(
        self,
        metric: str | None = None,
        metrics: list[str] | None = None,
        points: list[Point] | None = None,
        tenant: str | None = None,
    ) -> dict:
        """Anomaly scores in [0, 1] for the latest point of each watched metric, or for given points."""
        runtime = self.runtime(tenant)
        names = ([metric] if metric else []) + list(metrics or [])
        given = [(p.timestamp, p.value) for p in points] if points else None
        return _http_errors(lambda: runtime.detect(names or None, given))

    @bentoml.api(route="/recommend")
    def recommend(
        self,
        service: str | None = None,
        metric: str | None = None,
        current_replicas: int | None = Field(None, ge=0),
        tenant: str | None = None,
    ) -> dict:
        """Replicas for a scaled service, with every step of the arithmetic."""
        runtime = self.runtime(tenant)
        return _http_errors(lambda: runtime.recommend(service or metric, current_replicas))
