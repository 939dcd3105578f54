"""Metrics the customer pushed to Helios (``source: {type: push}``), read from the Helios store (the
same ``HELIOS_DATABASE_URL`` the serving replicas write them to).

On the tenant's grid, the same rules as the files source: a sample counts for the first grid point at
or after it, the last one wins when several fall in one step, and grid points without a sample stay
NaN. Each label set pushed under a metric's series name is put on the grid on its own (a counter
becomes a per-second rate there, so a reset of one pod's counter is that pod's alone), then the label
sets are summed per grid point; a point where no label set has data stays NaN. The metric's ``query``
does not apply: to push something other than a sum, aggregate before pushing (a recording rule).
"""

from __future__ import annotations

import pandas as pd

from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.sources.base import MetricsSource, SourceError, counter_to_rate, grid
from helios_pipelines.core.tenants import MetricConfig, TenantConfig
from helios_pipelines.core.tenants.source_configs import PushSource


class PushedMetrics(MetricsSource):
    def __init__(self, tenant: TenantConfig, store: Store | None = None):
        super().__init__(tenant)
        if not isinstance(tenant.source, PushSource):
            raise TypeError(f"tenant '{tenant.id}' does not use the push source")
        self.store = store or Store()
        self.step = tenant.step_timedelta

    def fetch_series(self, metric: str, config: MetricConfig, index: pd.DatetimeIndex) -> pd.Series:
        if len(index) == 0:
            return pd.Series(dtype=float, index=index)
        # A counter needs the grid point before the window for its first rate.
        points = index.insert(0, index[0] - self.step) if config.kind == "counter" else index
        # Grid point t holds the samples of (t - step, t].
        start_ms = _ms(points[0] - self.step) + 1
        end_ms = _ms(points[-1]) + 1
        table = pd.DataFrame(self.store.pushed(self.tenant.id, config.series, start_ms, end_ms),
                             columns=["labels", "timestamp", "value"])
        if table.empty:
            raise SourceError(
                f"tenant '{self.tenant.id}', metric '{metric}': nothing pushed for series '{config.series}' "
                f"between {index[0]} and {index[-1]}; check the pushing side (remote_write or helios-agent) "
                f"and helios sources check"
            )
        on_grid = []
        for _, samples in table.groupby("labels", sort=False):
            stamps = pd.to_datetime(samples["timestamp"].to_numpy(), unit="ms", utc=True)
            values = pd.Series(samples["value"].to_numpy(), index=stamps)
            snapped = values.groupby(values.index.ceil(self.step)).last().reindex(points)
            on_grid.append(counter_to_rate(snapped, self.step).iloc[1:] if config.kind == "counter" else snapped)
        return pd.concat(on_grid, axis=1).sum(axis=1, min_count=1).reindex(index)

    def current_values(self, metrics: list[str] | None = None) -> dict[str, float]:
        names = metrics or list(self.tenant.metrics)
        values = {}
        for name in names:
            config = self.tenant.metrics[self.tenant.resolve_metric(name)]
            latest = self.store.latest_pushed(self.tenant.id, config.series)
            if latest is None:
                values[name] = float("nan")
                continue
            last = pd.Timestamp(latest, unit="ms", tz="UTC").ceil(self.step)
            recent = self.fetch_series(name, config, grid(last - 5 * self.step, last + self.step, self.step)).dropna()
            values[name] = float(recent.iloc[-1]) if len(recent) else float("nan")
        return values

    def list_metrics(self) -> list[str]:
        return self.store.pushed_series(self.tenant.id)


def _ms(moment: pd.Timestamp) -> int:
    return int(moment.value // 1_000_000)
