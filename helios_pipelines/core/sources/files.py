"""Metrics from a CSV or Parquet file: one timestamp column, one column per series (the config's
``series`` names), counters cumulative as a monitoring system stores them.

A sample counts for the first grid point at or after it (the value a scrape at that moment would
see; the last sample wins when several fall in one step), so files written at irregular moments
still land on the tenant's grid. Grid points with no sample stay NaN.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from helios_pipelines.core.sources.base import MetricsSource, SourceError, counter_to_rate, grid
from helios_pipelines.core.tenants import MetricConfig, TenantConfig
from helios_pipelines.core.tenants.source_configs import FilesSource

READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


class MetricFiles(MetricsSource):
    def __init__(self, tenant: TenantConfig):
        super().__init__(tenant)
        if not isinstance(tenant.source, FilesSource):
            raise TypeError(f"tenant '{tenant.id}' does not use the files source")
        self.config: FilesSource = tenant.source
        self.path = Path(self.config.path).expanduser()
        self.step = tenant.step_timedelta
        self._table: pd.DataFrame | None = None

    # ---- MetricsSource ------------------------------------------------------------------------
    def fetch_series(self, metric: str, config: MetricConfig, index: pd.DatetimeIndex) -> pd.Series:
        if len(index) == 0:
            return pd.Series(dtype=float, index=index)
        if config.kind == "counter":
            # One point before the window so its first rate is defined.
            extended = index.insert(0, index[0] - self.step)
            return counter_to_rate(self._on_grid(metric, config, extended), self.step).iloc[1:]
        return self._on_grid(metric, config, index)

    def current_values(self, metrics: list[str] | None = None) -> dict[str, float]:
        last = self.table().index.max()
        frame = self.fetch(last - 5 * self.step, last + self.step, metrics)
        return {
            name: float(frame[name].dropna().iloc[-1]) if frame[name].notna().any() else float("nan")
            for name in frame
        }

    def list_metrics(self) -> list[str]:
        return sorted(self.table().columns)

    # ---- the file -----------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """The whole file, indexed by UTC time (read once)."""
        if self._table is None:
            self._table = self._read()
        return self._table

    def _read(self) -> pd.DataFrame:
        where = f"tenant '{self.tenant.id}': file {self.path}"
        reader = READERS.get(self.path.suffix.lower())
        if reader is None:
            raise SourceError(f"{where}: unknown format; use .csv, .parquet or .pq")
        if not self.path.is_file():
            raise SourceError(f"{where} does not exist")
        try:
            raw = reader(self.path)
        except Exception as exc:  # each reader has its own error types; all mean "unreadable"
            raise SourceError(f"{where} could not be read: {exc}") from exc
        column = self.config.time_column
        if column not in raw.columns:
            raise SourceError(
                f"{where} has no time column '{column}'; columns: {', '.join(map(str, raw.columns))}"
            )
        try:
            if self.config.time_unit == "iso":
                times = pd.to_datetime(raw[column], utc=True)  # timestamps without an offset are UTC
            else:
                times = pd.to_datetime(raw[column], unit=self.config.time_unit, utc=True)
        except (ValueError, TypeError) as exc:
            raise SourceError(
                f"{where}: column '{column}' is not time_unit {self.config.time_unit}: {exc}"
            ) from exc
        table = raw.drop(columns=[column]).set_index(pd.DatetimeIndex(times, name="timestamp"))
        return table.sort_index(kind="stable")

    def _on_grid(self, metric: str, config: MetricConfig, index: pd.DatetimeIndex) -> pd.Series:
        table = self.table()
        if config.series not in table.columns:
            raise SourceError(
                f"tenant '{self.tenant.id}', metric '{metric}': file {self.path} has no column '{config.series}'; "
                f"columns: {', '.join(map(str, table.columns))}"
            )
        values = pd.to_numeric(table[config.series], errors="coerce")
        bad = values.isna() & table[config.series].notna()
        if bad.any():
            raise SourceError(
                f"tenant '{self.tenant.id}', metric '{metric}': column '{config.series}' of {self.path} holds "
                f"{int(bad.sum())} non-numeric values, e.g. {table[config.series][bad].iloc[0]!r} at {values.index[bad][0]}"
            )
        values = values.dropna()
        snapped = values.groupby(values.index.ceil(self.step)).last()
        return snapped.reindex(grid(index[0], index[-1] + self.step, self.step))
