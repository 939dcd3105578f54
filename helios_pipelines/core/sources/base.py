"""MetricsSource: what every metrics backend (simulator, files, Prometheus, Datadog, CloudWatch) offers.

``fetch`` returns one frame per tenant: a tz-aware UTC ``DatetimeIndex`` on the tenant's grid
(``start`` inclusive to ``end`` exclusive, every ``step``), one float column per logical metric.
Counters are already rates (per second), resets handled. Gaps stay NaN: a source never fills them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd

from helios_pipelines.core.tenants import MetricConfig, TenantConfig


class SourceError(RuntimeError):
    """A source that cannot deliver: the message says which tenant, metric and what to fix."""


def grid(start: pd.Timestamp, end: pd.Timestamp, step: pd.Timedelta) -> pd.DatetimeIndex:
    """The tenant's time grid: aligned to multiples of ``step`` since the epoch, UTC."""
    start = pd.Timestamp(start).tz_convert("UTC") if pd.Timestamp(start).tzinfo else pd.Timestamp(start, tz="UTC")
    end = pd.Timestamp(end).tz_convert("UTC") if pd.Timestamp(end).tzinfo else pd.Timestamp(end, tz="UTC")
    first = start.ceil(step)
    index = pd.date_range(first, end, freq=step, inclusive="left")
    index.freq = None  # keep frames comparable whatever the constructor set
    return index.rename("timestamp")


def counter_to_rate(values: pd.Series, step: pd.Timedelta) -> pd.Series:
    """Per-second rate of a cumulative counter, as Prometheus' rate() treats resets.

    A drop in the counter is a reset: the increase over that interval is the new value itself
    (the counter restarted from zero). A gap on either side of an interval leaves its rate NaN.
    """
    diff = values.diff()
    reset = diff < 0
    diff = diff.mask(reset, values)
    return (diff / step.total_seconds()).astype(float)


class MetricsSource(ABC):
    """One tenant's metrics backend."""

    def __init__(self, tenant: TenantConfig):
        self.tenant = tenant

    @abstractmethod
    def fetch_series(self, metric: str, config: MetricConfig, index: pd.DatetimeIndex) -> pd.Series:
        """One logical metric on ``index`` (counters already as per-second rates)."""

    @abstractmethod
    def current_values(self, metrics: list[str] | None = None) -> dict[str, float]:
        """Latest value of each metric (NaN where the source has none)."""

    @abstractmethod
    def list_metrics(self) -> list[str]:
        """Series names the backend holds (the source's own names, not logical ones)."""

    def fetch(
        self,
        start: pd.Timestamp,
        end: pd.Timestamp,
        metrics: list[str] | None = None,
    ) -> pd.DataFrame:
        names = metrics or list(self.tenant.metrics)
        index = grid(start, end, self.tenant.step_timedelta)
        columns = {}
        for name in names:
            config = self.tenant.metrics[self.tenant.resolve_metric(name)]
            series = self.fetch_series(name, config, index)
            columns[name] = series.reindex(index).astype(float)
        frame = pd.DataFrame(columns, index=index)
        frame.index.name = "timestamp"
        return frame.replace([np.inf, -np.inf], np.nan)
