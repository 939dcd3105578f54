"""Metrics sources: build the one a tenant's config names."""

from __future__ import annotations

import pandas as pd

from helios_pipelines.core.sources.base import MetricsSource, SourceError
from helios_pipelines.core.tenants import TenantConfig


def make_source(tenant: TenantConfig, now: pd.Timestamp | None = None) -> MetricsSource:
    """The source behind ``tenant.source``; ``now`` pins the simulator's clock (tests, backfills)."""
    kind = tenant.source.type
    if kind == "simulator":
        from helios_pipelines.core.sources.simulator import Simulator

        return Simulator(tenant, now=now)
    raise SourceError(f"tenant '{tenant.id}': source type '{kind}' is not supported")


__all__ = ["MetricsSource", "SourceError", "make_source"]
