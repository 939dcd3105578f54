"""Data quality: a Great Expectations suite built from the tenant's config, and a summary of it.

Blocking checks stop this tenant's training (a model trained on broken data is worse than none):
time strictly increasing, enough history, and coverage of every metric a model is trained on.
Range violations are reported but do not block: anomalies are exactly the values outside the usual
range, and the detector must see them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from helios_pipelines.core.tenants import TenantConfig

# Training on less than this much history gives no daily seasonality to learn from.
MIN_HISTORY = pd.Timedelta("2D")


@dataclass(frozen=True)
class CheckResult:
    name: str
    column: str | None
    success: bool
    blocking: bool
    observed: str
    expected: str

    @property
    def line(self) -> str:
        where = f"[{self.column}] " if self.column else ""
        verdict = "ok" if self.success else ("FAILED (blocking)" if self.blocking else "warning")
        return f"{verdict}: {self.name} {where}- observed {self.observed}; expected {self.expected}"


@dataclass(frozen=True)
class ValidationSummary:
    tenant: str
    rows: int
    start: str
    end: str
    coverage: dict[str, float]
    longest_gap_steps: dict[str, int]
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.blocking and not c.success]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.blocking and not c.success]

    @property
    def success(self) -> bool:
        return not self.blocking_failures

    def report(self) -> str:
        head = f"tenant '{self.tenant}': {self.rows} rows {self.start} .. {self.end}"
        failed = [c.line for c in self.checks if not c.success]
        return "\n".join([head, *failed]) if failed else head + ": all checks passed"

    def to_dict(self) -> dict:
        return asdict(self) | {"success": self.success}


def _longest_gap(values: pd.Series) -> int:
    missing = values.isna().to_numpy()
    if not missing.any():
        return 0
    # Lengths of runs of True.
    edges = np.diff(np.concatenate([[0], missing.astype(int), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())


def validate_metrics(frame: pd.DataFrame, tenant: TenantConfig) -> ValidationSummary:
    """Run the tenant's suite over the raw metrics frame (UTC index, a column per logical metric)."""
    import great_expectations as gx  # 3-7 s to import: only where validation runs, never in serving
    import great_expectations.expectations as gxe

    step = tenant.step_timedelta
    data = frame.reset_index(names="timestamp")
    min_rows = int(MIN_HISTORY / step)
    trained = set(tenant.forecast_metrics) | set(tenant.anomaly_metrics)

    expectations: list[tuple[gxe.Expectation, bool]] = [
        (gxe.ExpectTableRowCountToBeBetween(min_value=min_rows), True),
        (gxe.ExpectColumnValuesToBeIncreasing(column="timestamp", strictly=True), True),
    ]
    missing_columns = [name for name in tenant.metrics if name not in frame.columns]
    for name, metric in tenant.metrics.items():
        if name in missing_columns:
            continue
        expectations.append(
            (gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=metric.min_coverage), name in trained)
        )
        if metric.min_value is not None or metric.max_value is not None:
            expectations.append(
                (
                    gxe.ExpectColumnValuesToBeBetween(
                        column=name, min_value=metric.min_value, max_value=metric.max_value, mostly=0.99
                    ),
                    False,
                )
            )

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # GX's documented switch (``progress_bars`` in a project's config): no "Calculating Metrics" bar per
    # validation on the terminal of `helios run` (#20.5); the result is in the asset's metadata.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(f"{tenant.id}_metrics")
    batch = source.add_dataframe_asset("raw_metrics").add_batch_definition_whole_dataframe("window")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{tenant.id}_suite"))
    blocking_by_id = {}
    for expectation, blocking in expectations:
        added = suite.add_expectation(expectation)
        blocking_by_id[added.id] = blocking
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{tenant.id}_validation", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": data})

    checks = [
        CheckResult(
            name="column present",
            column=name,
            success=False,
            blocking=name in trained,
            observed="no such column in the fetched data",
            expected=f"series '{tenant.metrics[name].series}' from the source",
        )
        for name in missing_columns
    ]
    for item in result.results:
        config = item.expectation_config
        checks.append(
            CheckResult(
                name=config.type,
                column=config.kwargs.get("column"),
                success=bool(item.success),
                blocking=blocking_by_id.get(config.id, False),
                observed=_observed(item.result),
                expected=_expected(config.kwargs),
            )
        )
    coverage = {c: float(frame[c].notna().mean()) if len(frame) else 0.0 for c in frame.columns}
    return ValidationSummary(
        tenant=tenant.id,
        rows=len(frame),
        start=str(frame.index.min()),
        end=str(frame.index.max()),
        coverage=coverage,
        longest_gap_steps={c: _longest_gap(frame[c]) for c in frame.columns},
        checks=checks,
    )


def _observed(result: dict) -> str:
    if "observed_value" in result:
        return str(result["observed_value"])
    if "unexpected_percent" in result:
        return f"{result.get('unexpected_count', 0)} of {result.get('element_count', 0)} rows unexpected ({result['unexpected_percent']:.2f} %)"
    return "n/a"


def _expected(kwargs: dict) -> str:
    parts = []
    for key in ("min_value", "max_value", "mostly", "strictly"):
        if kwargs.get(key) is not None:
            parts.append(f"{key}={kwargs[key]}")
    return ", ".join(parts) or "n/a"
