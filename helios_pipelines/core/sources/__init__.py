"""Metrics sources: build the one a tenant's config names."""

from __future__ import annotations

import pandas as pd

from helios_pipelines.core.sources.base import MetricsSource, SourceError
from helios_pipelines.core.tenants import TenantConfig


def make_source(tenant: TenantConfig, now: pd.Timestamp | None = None) -> MetricsSource:
    """The source behind ``tenant.source``; ``now`` pins the clock of sources that read one.

    The simulator draws its "live" data up to ``now``; CloudWatch checks its retention against it.
    Each backend's client library is imported only when a tenant uses it.
    """
    kind = tenant.source.type
    if kind == "simulator":
        from helios_pipelines.core.sources.simulator import Simulator

        return Simulator(tenant, now=now)
    if kind == "files":
        from helios_pipelines.core.sources.files import MetricFiles

        return MetricFiles(tenant)
    if kind == "prometheus":
        from helios_pipelines.core.sources.prometheus import Prometheus

        return Prometheus(tenant)
    if kind == "datadog":
        from helios_pipelines.core.sources.datadog import Datadog

        return Datadog(tenant)
    if kind == "cloudwatch":
        from helios_pipelines.core.sources.cloudwatch import CloudWatch

        return CloudWatch(tenant, now=now)
    if kind == "push":
        from helios_pipelines.core.sources.push import PushedMetrics

        return PushedMetrics(tenant)
    raise SourceError(f"tenant '{tenant.id}': source type '{kind}' is not supported")


__all__ = ["MetricsSource", "SourceError", "make_source"]
