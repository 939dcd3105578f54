"""What ``helios sources check <tenant>`` reports: can Helios reach the tenant's source, which
configured metrics exist there, and how much of the window each one covers, with its gaps.

Nothing raises for a problem with the source: every problem ends up in the report, worded so the
reader knows what to fix (a wrong URL, bad credentials, a query returning several series ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from helios_pipelines.core.sources import make_source
from helios_pipelines.core.sources.base import MetricsSource, SourceError, grid
from helios_pipelines.core.tenants import TenantConfig


@dataclass(frozen=True)
class Gap:
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive: the first grid point with data again (or the window's end)
    points: int


@dataclass(frozen=True)
class MetricCheck:
    name: str
    series: str
    listed: bool | None  # the series is among the source's metric names; None when a query names others
    coverage: float  # share of the grid holding data
    min_coverage: float
    gaps: list[Gap]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.coverage >= self.min_coverage


@dataclass(frozen=True)
class SourceReport:
    tenant: str
    source_type: str
    start: pd.Timestamp
    end: pd.Timestamp
    step: pd.Timedelta
    error: str | None = None  # the source as a whole: unreachable, bad credentials, not configured
    metrics: list[MetricCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and all(m.ok for m in self.metrics)


def check_source(
    tenant: TenantConfig, start: pd.Timestamp, end: pd.Timestamp, source: MetricsSource | None = None
) -> SourceReport:
    """Checks ``tenant``'s source over [start, end); ``source`` replaces the one its config builds."""
    index = grid(start, end, tenant.step_timedelta)
    report = dict(
        tenant=tenant.id,
        source_type=tenant.source.type,
        start=index[0] if len(index) else start,
        end=end,
        step=tenant.step_timedelta,
    )
    try:
        source = source or make_source(tenant)
        available = set(source.list_metrics())
    except SourceError as exc:
        return SourceReport(**report, error=str(exc))
    checks = []
    for name, config in tenant.metrics.items():
        listed = None if config.query else config.series in available
        try:
            values = source.fetch_series(name, config, index).reindex(index)
        except SourceError as exc:
            checks.append(MetricCheck(name, config.series, listed, 0.0, config.min_coverage, [], str(exc)))
            continue
        coverage = float(values.notna().mean()) if len(index) else 0.0
        checks.append(
            MetricCheck(name, config.series, listed, coverage, config.min_coverage, _gaps(values, end))
        )
    return SourceReport(**report, metrics=checks)


def _gaps(values: pd.Series, end: pd.Timestamp) -> list[Gap]:
    missing = values.isna()
    run = (missing != missing.shift()).cumsum()
    gaps = []
    for _, points in values.index[missing].to_series().groupby(run[missing]):
        after = values.index[values.index > points.iloc[-1]]
        gaps.append(Gap(points.iloc[0], after[0] if len(after) else pd.Timestamp(end), len(points)))
    return gaps


def format_report(report: SourceReport) -> str:
    """A table a person reads in a terminal, then the errors in full."""
    lines = [
        f"Source check for tenant '{report.tenant}' ({report.source_type}), "
        f"{report.start:%Y-%m-%d %H:%M} to {pd.Timestamp(report.end):%Y-%m-%d %H:%M} UTC, step {_span(report.step)}"
    ]
    if report.error:
        return "\n".join([*lines, f"FAILED: {report.error}"])
    header = ("metric", "series", "listed", "coverage", "needed", "gaps", "longest gap", "status")
    rows = [
        (
            m.name,
            m.series,
            {True: "yes", False: "NO", None: "(query)"}[m.listed],
            "-" if m.error else f"{m.coverage:.1%}",
            f"{m.min_coverage:.0%}",
            "-" if m.error else str(len(m.gaps)),
            _span(max((g.end - g.start for g in m.gaps), default=pd.Timedelta(0))) if m.gaps else "-",
            "ok" if m.ok else ("ERROR" if m.error else "LOW COVERAGE"),
        )
        for m in report.metrics
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        lines.append(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    errors = [m for m in report.metrics if m.error]
    if errors:
        lines.append("")
        lines.extend(f"{m.name}: {m.error}" for m in errors)
    good = sum(m.ok for m in report.metrics)
    lines.append(f"\n{good} of {len(report.metrics)} metrics ok")
    return "\n".join(lines)


def _span(delta: pd.Timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes >= 1440 and minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes >= 60 and minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}min" if minutes else f"{int(delta.total_seconds())}s"
