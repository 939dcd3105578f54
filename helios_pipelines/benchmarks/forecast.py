"""``helios bench forecast``: every forecaster kind through the same rolling-origin backtest.

Works on any CSV with a time column and a value column. Time columns may hold datetimes or numbers;
numbers are seconds from the start of the trace (public traces such as Azure's publish offsets, not
dates), placed after ``--start-date``. The default start, 2024-01-01 00:00 UTC, is a Monday at
midnight, so a trace that starts at midnight keeps its hours of day. Irregular samples are averaged
onto the ``--freq`` grid; empty grid cells stay missing and are neither trained on nor scored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

from helios_pipelines.core.ml.evaluation import backtest
from helios_pipelines.core.ml.models.forecasters import make_forecaster

METHODS = (
    "seasonal_naive",
    "seasonal_naive_weekly",
    "predict_linear",
    "holt",
    "prophet",
    "xgboost",
    "helios",
)
REFERENCE_METHODS = tuple(m for m in METHODS if m != "helios")
DEFAULT_START = "2024-01-01T00:00:00Z"


def load_series(path: Path, time_col: str, value_col: str, freq: str, start_date: str) -> pd.Series:
    """The CSV's value column on a regular UTC grid at ``freq`` (mean of the samples in each cell)."""
    frame = pd.read_csv(path)
    for column in (time_col, value_col):
        if column not in frame.columns:
            raise click.UsageError(f"{path} has no column '{column}'; columns: {', '.join(frame.columns)}")
    raw_time = frame[time_col]
    if pd.api.types.is_numeric_dtype(raw_time):
        timestamps = pd.Timestamp(start_date) + pd.to_timedelta(raw_time.astype(float), unit="s")
    else:
        timestamps = pd.to_datetime(raw_time, utc=True)
    values = pd.to_numeric(frame[value_col], errors="coerce")
    series = pd.Series(values.to_numpy(dtype=float), index=pd.DatetimeIndex(timestamps)).sort_index()
    if series.index.tz is None:
        series.index = series.index.tz_localize("UTC")
    return series.resample(freq).mean()


def run_benchmark(
    series: pd.Series,
    freq: str,
    horizon: int,
    folds: int,
    timezone: str,
    methods: tuple[str, ...] = METHODS,
    seed: int = 42,
) -> dict[str, dict]:
    """Backtest each method; a method that cannot run on this series reports why instead."""
    results: dict[str, dict] = {}
    for method in methods:

        def factory(method=method):
            return make_forecaster(method, step=freq, max_horizon=horizon, timezone=timezone, seed=seed)

        started = time.perf_counter()
        try:
            result = backtest(factory, series, horizon=horizon, folds=folds)
        except (ValueError, RuntimeError) as exc:  # e.g. a week lag on a series shorter than a week
            results[method] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[method] = result.to_dict() | {"total_seconds": time.perf_counter() - started}
    return results


def summary(results: dict[str, dict]) -> dict:
    """Helios against the best reference method by MASE."""
    mase = {
        m: r["metrics"]["mase"]
        for m, r in results.items()
        if "metrics" in r and np.isfinite(r["metrics"]["mase"])
    }
    references = {m: v for m, v in mase.items() if m in REFERENCE_METHODS}
    if "helios" not in mase or not references:
        return {}
    best = min(references, key=references.get)
    return {
        "best_reference": best,
        "helios_mase": mase["helios"],
        "best_reference_mase": references[best],
        "helios_to_best_reference": mase["helios"] / references[best],
        "lowest_mase": min(mase, key=mase.get),
    }


PIPELINE_FOLDS = 3  # the tenant default (TrainingConfig.backtest_folds)


def helios_training_cost(series: pd.Series, freq: str, horizon: int, timezone: str, seed: int) -> dict:
    """What the pipeline spends on helios for one metric: its backtest (PIPELINE_FOLDS folds) and
    the final fit on the whole series, measured, with the final fit's time split."""

    def factory():
        return make_forecaster("helios", step=freq, max_horizon=horizon, timezone=timezone, seed=seed)

    started = time.perf_counter()
    backtest(factory, series, horizon=horizon, folds=PIPELINE_FOLDS)
    backtested = time.perf_counter()
    model = factory()
    model.fit(series)
    done = time.perf_counter()
    return {
        "pipeline_folds": PIPELINE_FOLDS,
        "pipeline_backtest_seconds": backtested - started,
        "fit_seconds": done - backtested,
        "candidate_seconds": done - started,
        "split": model.fit_seconds_,
    }


def markdown_section(report: dict) -> str:
    """The report as a Markdown section: a heading, the table and the training cost."""
    lines = [
        f"### {Path(report['csv']).name} `{report['value_col']}`",
        "",
        f"{report['points']} points at {report['freq']}, {report['missing_share']:.1%} missing; "
        f"horizon {report['horizon_minutes']} min ({report['horizon_steps']} steps), {report['folds']} folds.",
        "",
        "| method | MAE | sMAPE | MASE | MASE at H | cov 80 | cov 95 | fit s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, r in report["methods"].items():
        if "error" in r:
            lines.append(f"| {method} | not run: {r['error']} | | | | | | |")
            continue
        m, f = r["metrics"], r["final_step"]
        lines.append(
            f"| {method} | {m['mae']:.4g} | {m['smape']:.2f} | {m['mase']:.3f} | {f['mase']:.3f} "
            f"| {m['coverage_80']:.3f} | {m['coverage_95']:.3f} | {r['mean_fit_seconds']:.2f} |"
        )
    if report["summary"]:
        s = report["summary"]
        lines += [
            "",
            f"helios MASE {s['helios_mase']:.3f} = **{s['helios_to_best_reference']:.2f} x** the best reference "
            f"({s['best_reference']}, {s['best_reference_mase']:.3f}).",
        ]
    if report.get("helios_training"):
        t = report["helios_training"]
        split = ", ".join(f"{k} {v:.2f} s" for k, v in t["split"].items())
        lines += [
            "",
            f"helios candidate cost as the pipeline trains it: {t['pipeline_folds']}-fold backtest "
            f"{t['pipeline_backtest_seconds']:.1f} s + final fit {t['fit_seconds']:.1f} s = "
            f"**{t['candidate_seconds']:.1f} s** (the final fit: {split}); the {report['folds']}-fold "
            f"backtest above took {t['backtest_seconds']:.1f} s.",
        ]
    return "\n".join(lines) + "\n\n"


def format_table(results: dict[str, dict]) -> str:
    header = (
        f"{'method':<22}{'MAE':>12}{'sMAPE':>8}{'MASE':>7}{'MASE@H':>8}{'cov80':>7}{'cov95':>7}{'fit s':>8}"
    )
    lines = [header, "-" * len(header)]
    for method, r in results.items():
        if "error" in r:
            lines.append(f"{method:<22}  not run: {r['error']}")
            continue
        m, f = r["metrics"], r["final_step"]
        lines.append(
            f"{method:<22}{m['mae']:>12.4g}{m['smape']:>8.2f}{m['mase']:>7.3f}{f['mase']:>8.3f}"
            f"{m['coverage_80']:>7.3f}{m['coverage_95']:>7.3f}{r['mean_fit_seconds']:>8.2f}"
        )
    return "\n".join(lines)


def export_tenant(tenant_id: str, metric: str, days: float, end: str, path: Path) -> tuple[Path, str, str]:
    """A simulated tenant's history of one metric as a CSV (``timestamp``, ``<metric>``); its step and
    time zone."""
    from helios_pipelines.core.sources.simulator import Simulator
    from helios_pipelines.core.tenants import load_tenants

    tenant = load_tenants().get(tenant_id)
    if metric not in tenant.metrics:
        raise click.UsageError(f"tenant '{tenant_id}' has no metric '{metric}'; it has {', '.join(tenant.metrics)}")
    stop = pd.Timestamp(end)
    frame = Simulator(tenant, now=stop).fetch(stop - pd.Timedelta(days=days), stop, [metric])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[[metric]].rename_axis("timestamp").to_csv(path, date_format="%Y-%m-%dT%H:%M:%SZ")
    return path, f"{int(tenant.step_timedelta.total_seconds() // 60)}min", tenant.timezone


@click.command("forecast")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", help="instead of --csv: export this simulated tenant's history and benchmark it")
@click.option("--days", default=14.0, show_default=True, help="with --tenant: days of history")
@click.option("--end", default="2026-10-15T00:00:00Z", show_default=True, help="with --tenant: end of history")
@click.option("--time-col", default="timestamp", show_default=True)
@click.option("--value-col", required=True, help="the CSV's value column; with --tenant, the logical metric")
@click.option("--freq", default=None, help="grid step (pandas offset); default 5min, or the tenant's step")
@click.option("--horizon-minutes", default=60, show_default=True, type=click.IntRange(min=1))
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--timezone", default="UTC", show_default=True, help="the series' local clock, for calendar features"
)
@click.option(
    "--start-date", default=DEFAULT_START, show_default=True, help="start of a numeric (seconds) time column"
)
@click.option("--methods", default=",".join(METHODS), show_default=True, help="comma-separated subset")
@click.option("--seed", default=42, show_default=True)
@click.option(
    "--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), help="append a table here"
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write results here"
)
def forecast(
    csv_path,
    tenant,
    days,
    end,
    time_col,
    value_col,
    freq,
    horizon_minutes,
    folds,
    timezone,
    start_date,
    methods,
    seed,
    json_path,
    markdown_path,
):
    """Backtest every reference method and Helios' forecaster on one CSV column (or simulated tenant)."""
    if (csv_path is None) == (tenant is None):
        raise click.UsageError("give exactly one of --csv and --tenant")
    if tenant is not None:
        target = (json_path.parent if json_path else Path("bench/out")) / f"sim_{tenant}_{value_col}.csv"
        csv_path, tenant_freq, tenant_zone = export_tenant(tenant, value_col, days, end, target)
        time_col, freq = "timestamp", freq or tenant_freq
        timezone = tenant_zone if timezone == "UTC" else timezone
        click.echo(f"exported {tenant}:{value_col} ({days:g} days to {end}) to {csv_path}")
    freq = freq or "5min"
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    horizon = max(1, int(pd.Timedelta(minutes=horizon_minutes) / step))
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        raise click.UsageError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    series = load_series(csv_path, time_col, value_col, freq, start_date)
    click.echo(
        f"{csv_path.name}:{value_col}  {len(series)} points at {freq} "
        f"({series.isna().mean():.1%} missing), horizon {horizon} steps, {folds} folds"
    )
    results = run_benchmark(series, freq, horizon, folds, timezone, chosen, seed)
    click.echo(format_table(results))
    report = {
        "csv": str(csv_path),
        "value_col": value_col,
        "freq": freq,
        "horizon_minutes": horizon_minutes,
        "horizon_steps": horizon,
        "folds": folds,
        "points": len(series),
        "missing_share": float(series.isna().mean()),
        "summary": summary(results),
        "methods": results,
    }
    if "metrics" in results.get("helios", {}):
        cost = helios_training_cost(series, freq, horizon, timezone, seed)
        backtest_seconds = results["helios"]["total_seconds"]
        report["helios_training"] = cost | {"backtest_seconds": backtest_seconds}
        click.echo(
            f"helios candidate ({PIPELINE_FOLDS}-fold backtest + final fit): {cost['candidate_seconds']:.1f} s "
            f"= {cost['pipeline_backtest_seconds']:.1f} s + {cost['fit_seconds']:.1f} s; "
            + ", ".join(f"{k} {v:.2f} s" for k, v in cost["split"].items())
        )
    if report["summary"]:
        s = report["summary"]
        click.echo(
            f"helios MASE {s['helios_mase']:.3f} = {s['helios_to_best_reference']:.2f} x best reference "
            f"({s['best_reference']} {s['best_reference_mase']:.3f})"
        )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str))
        click.echo(f"wrote {json_path}")
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        with markdown_path.open("a") as out:
            out.write(markdown_section(report))
        click.echo(f"appended to {markdown_path}")


if (
    __name__ == "__main__"
):  # until `helios bench forecast` is mounted: python -m helios_pipelines.benchmarks.forecast
    forecast()
