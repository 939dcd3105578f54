"""``make bench-forecast``: every forecaster kind over a suite of real and simulated series (#18).

Method choices are judged on the suite's geometric mean and its worst series, never on one trace.
The suite: the two Azure VM-fleet columns, every NAB ``realAWSCloudwatch`` series used as forecast
data (CPU, network, disk, request counts), each demo tenant's forecast metrics from the simulator,
one series with a level shift and one with gaps (both derived, seeded, from series above). Every
series is on a 5-minute grid (a 1-minute tenant's metrics are averaged to 5 minutes: the same shapes
at a fifth of the benchmark's cost), forecast at 1 hour and at the longest horizon any tenant config
asks for.

Per series and horizon: each method's MASE, Helios' ratio to the best reference, Helios' 80 %
coverage, fit seconds per fold of Helios and of the plain direct XGBoost. Results are cached per
(series, horizon, method, variant) under ``--out`` so an ablation re-runs Helios only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd

from helios_pipelines.benchmarks.forecast import METHODS, load_series
from helios_pipelines.benchmarks.references import REFERENCES
from helios_pipelines.core.ml.evaluation import backtest
from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ml.models.forecasters import make_forecaster

STEP = "5min"
SUITE_METHODS = (*METHODS, *REFERENCES)
REFERENCE_METHODS = tuple(m for m in SUITE_METHODS if m != "helios")
COST_REFERENCE = "xgboost_direct"
SIM_END = "2026-10-15T00:00:00Z"


@dataclass(frozen=True)
class SuiteSeries:
    name: str
    kind: str  # real / simulated / derived
    timezone: str
    load: Callable[[], pd.Series]
    regions: tuple[tuple[str, float], ...] = ()  # a simulated tenant's players' time zones and shares
    events: tuple = ()  # a simulated tenant's scheduled events (known future inputs, as in production)
    drivers: tuple[tuple[str, Callable[[], pd.Series]], ...] = ()  # the tenant's drivers of the metric: name, loader


def _nab(path: Path) -> Callable[[], pd.Series]:
    return lambda: load_series(path, "timestamp", "value", STEP, "2024-01-01T00:00:00Z")


def _azure(shared: Path, column: str) -> Callable[[], pd.Series]:
    path = shared / "data" / "forecast" / "azure_vm_fleet_5min.csv"
    return lambda: load_series(path, "timestamp", column, STEP, "2024-01-01T00:00:00Z")


def _simulated(tenant_id: str, metric: str, days: int) -> Callable[[], pd.Series]:
    def load() -> pd.Series:
        from helios_pipelines.core.sources.simulator import Simulator
        from helios_pipelines.core.tenants import load_tenants

        tenant = load_tenants().get(tenant_id)
        stop = pd.Timestamp(SIM_END)
        frame = Simulator(tenant, now=stop).fetch(stop - pd.Timedelta(days=days), stop, [metric])
        return frame[metric].astype(float).resample(STEP).mean()

    return load


def _level_shift(base: Callable[[], pd.Series]) -> Callable[[], pd.Series]:
    """x1.5 from 80 % of the way in: inside the backtest's last quarter, beyond the training range."""

    def load() -> pd.Series:
        series = base().copy()
        series.iloc[int(len(series) * 0.8) :] *= 1.5
        return series

    return load


def _with_gaps(base: Callable[[], pd.Series], seed: int = 11) -> Callable[[], pd.Series]:
    """5 % of points missing at random plus three 3-hour outages, seeded."""

    def load() -> pd.Series:
        series = base().copy()
        rng = np.random.default_rng(seed)
        series.iloc[rng.choice(len(series), len(series) // 20, replace=False)] = np.nan
        for start in rng.choice(np.arange(len(series) // 10, len(series) - 40), 3, replace=False):
            series.iloc[start : start + 36] = np.nan
        return series

    return load


def suite(shared: Path) -> list[SuiteSeries]:
    from helios_pipelines.core.tenants import load_tenants

    members = [SuiteSeries(f"azure {c}", "real", "UTC", _azure(shared, c)) for c in ("cpu_usage", "assigned_mem")]
    for path in sorted((shared / "data" / "nab" / "data" / "realAWSCloudwatch").glob("*.csv")):
        members.append(SuiteSeries(f"nab {path.stem}", "real", "UTC", _nab(path)))
    for tenant in load_tenants().tenants.values():
        days = max(14, tenant.training.history_days)
        for metric in tenant.forecast_metrics:
            regions = tuple((r.timezone, r.share) for r in tenant.regions)
            events = tuple(e for e in tenant.events if not e.metrics or metric in e.metrics)
            drivers = tuple((d, _simulated(tenant.id, d, days)) for d in tenant.drivers_of(metric))
            # the tenant's events go in as its forecasters get them in production (#14.1)
            members.append(SuiteSeries(f"sim {tenant.id} {metric} +events", "simulated", tenant.timezone,
                                       _simulated(tenant.id, metric, days), regions, events, drivers))
    gaming = next((m for m in members if m.name.startswith("sim gaming-corp concurrent_users")), None)
    if gaming is not None:
        members.append(SuiteSeries("shift: sim gaming-corp concurrent_users x1.5", "derived", gaming.timezone,
                                   _level_shift(gaming.load), gaming.regions))
    members.append(SuiteSeries("gaps: azure cpu_usage", "derived", "UTC", _with_gaps(_azure(shared, "cpu_usage"))))
    return members


def suite_horizons() -> list[int]:
    """1 hour and the longest horizon any tenant config asks for, in minutes."""
    from helios_pipelines.core.tenants import load_tenants

    longest = max(
        (max(t.metrics[m].forecast.horizons) for t in load_tenants().tenants.values() for m in t.forecast_metrics),
        default=60,
    )
    return sorted({60, int(longest)})


def make_method(method: str, horizon: int, timezone: str, seed: int, options: dict):
    if method in REFERENCES:
        return REFERENCES[method](step=STEP, max_horizon=horizon, timezone=timezone, seed=seed, **options)
    return make_forecaster(method, step=STEP, max_horizon=horizon, timezone=timezone, seed=seed, **options)


def label(method: str, variant: str) -> str:
    """How a method's results are keyed: ``helios[no-blend]`` for an ablation, else its kind."""
    return f"{method}[{variant}]" if variant else method


def _run_one(task: tuple) -> tuple[str, dict]:
    key, series, method, horizon, folds, timezone, seed, options, drivers = task
    options = dict(options)
    if options.get("events"):
        options["events"] = EventSchedule(list(options["events"]))
    started = time.perf_counter()
    try:
        result = backtest(lambda: make_method(method, horizon, timezone, seed, options), series, horizon, folds,
                          levels=(0.8,), drivers=drivers)
    except (ValueError, RuntimeError) as exc:
        return key, {"error": f"{type(exc).__name__}: {exc}"}
    return key, {
        "mase": result.metrics["mase"],
        "coverage_80": result.metrics["coverage_80"],
        "fit_seconds": result.fit_seconds,
        "per_fold_mase": [f["mase"] for f in result.folds],
        "total_seconds": time.perf_counter() - started,
    }


def run_suite(members, horizons, folds, methods, variants: dict, out: Path, jobs: int, seed: int = 42,
              echo=click.echo) -> dict:
    """{(series, horizon): {method: result}}, computing only what the cache under ``out`` lacks."""
    out.mkdir(parents=True, exist_ok=True)
    # One file per run label, so an ablation can run beside the main run; the table reads them all.
    tag = "_".join(label(m, v) for m, (v, _) in sorted(variants.items()) if v)
    cache_path = out / (f"suite_{folds}folds_{tag}.json" if tag else f"suite_{folds}folds.json")
    own = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    cache = {}
    for path in sorted(out.glob(f"suite_{folds}folds*.json")):
        cache |= json.loads(path.read_text())
    tasks, loaded = [], {}
    # Method by method over every series: the table fills evenly, the slow references come last.
    for method in methods:
        for minutes in horizons:
            horizon = max(1, int(pd.Timedelta(minutes=minutes) / pd.Timedelta(STEP)))
            variant, options = variants.get(method, ("", {}))
            for member in members:
                key = f"{member.name}|{minutes}|{label(method, variant)}"
                if key in cache:
                    continue
                if member.name not in loaded:
                    loaded[member.name] = member.load()
                extra = dict(options)
                if extra.pop("tenant_regions", False) and member.regions:
                    extra["regions"] = [list(r) for r in member.regions]
                if member.events:
                    extra["events"] = member.events
                drivers = None
                if extra.pop("tenant_drivers", False) and member.drivers:
                    # the other metrics it may read, as the pipeline gives them (#18.3)
                    extra["drivers"] = [name for name, _ in member.drivers]
                    drivers = pd.DataFrame({name: load() for name, load in member.drivers})
                tasks.append((key, loaded[member.name], method, horizon, folds, member.timezone, seed, extra,
                              drivers))
    echo(f"{len(tasks)} backtests to run ({len(cache)} cached in {cache_path})")
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for done, (key, result) in enumerate(pool.map(_run_one, tasks), 1):
            cache[key] = own[key] = result
            cache_path.write_text(json.dumps(own, indent=1))
            shown = result.get("error") or f"MASE {result['mase']:.3f} cov {result['coverage_80']:.2f} " \
                f"fit {np.mean(result['fit_seconds']):.1f}s"
            echo(f"[{done}/{len(tasks)}] {key}: {shown}")
    return cache


def _geomean(values) -> float:
    values = [v for v in values if np.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else math.nan


def suite_table(cache: dict, members, horizons, helios_label: str, folds: int) -> tuple[str, dict]:
    rows, ratios, coverages, cost_ratios = [], [], [], []
    for minutes in horizons:
        for member in members:
            results = {k.split("|")[2]: v for k, v in cache.items() if k.startswith(f"{member.name}|{minutes}|")}
            helios = results.get(helios_label, {})
            # references as they are (ablations of helios or prophet, labelled ``kind[...]``, are not)
            refs = {m: r["mase"] for m, r in results.items()
                    if m in REFERENCE_METHODS and "mase" in r and np.isfinite(r["mase"])}
            if "mase" not in helios or not refs:
                continue
            best = min(refs, key=refs.get)
            ratio = helios["mase"] / refs[best] if refs[best] > 0 else math.nan
            fit = float(np.mean(helios["fit_seconds"]))
            cost = results.get(COST_REFERENCE, {})
            cost_fit = float(np.mean(cost["fit_seconds"])) if "fit_seconds" in cost else math.nan
            ratios.append(ratio)
            coverages.append(helios["coverage_80"])
            cost_ratios.append(fit / cost_fit if cost_fit > 0 else math.nan)
            xgbd = results.get(COST_REFERENCE, {}).get("mase", math.nan)
            rows.append(
                f"| {member.name} | {minutes} | {best} {refs[best]:.3f} | {xgbd:.3f} | {helios['mase']:.3f} "
                f"| {'**' if ratio > 1 else ''}{ratio:.2f}{'**' if ratio > 1 else ''} | {helios['coverage_80']:.2f} "
                f"| {fit:.1f} | {cost_fit:.1f} |"
            )
    summary = {
        "series": len(ratios),
        "geomean_ratio": _geomean(ratios),
        "worst_ratio": float(np.nanmax(ratios)) if ratios else math.nan,
        "above_1": int(np.sum(np.array(ratios) > 1)),
        "mean_coverage": float(np.mean(coverages)) if coverages else math.nan,
        "min_coverage": float(np.min(coverages)) if coverages else math.nan,
        "geomean_fit_ratio": _geomean(cost_ratios),
    }
    header = [
        f"| series | horizon min | best reference (MASE) | xgboost_direct | {helios_label} | ratio | cov 80 | fit s/fold | xgboost_direct fit s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    footer = (
        f"\n{summary['series']} series, {folds} folds each. Geometric mean of the ratio **{summary['geomean_ratio']:.3f}**, "
        f"worst **{summary['worst_ratio']:.2f}**, {summary['above_1']} series above 1.0; 80 % coverage "
        f"mean **{summary['mean_coverage']:.3f}**, lowest **{summary['min_coverage']:.2f}**; fit time per fold "
        f"**{summary['geomean_fit_ratio']:.2f} x** the direct XGBoost's (geometric mean).\n"
    )
    return "\n".join(header + rows) + "\n" + footer, summary


def method_table(cache: dict, members, minutes: int) -> str:
    """Every method's MASE per series (the reference for each design decision)."""
    labels = sorted({k.split("|")[2] for k in cache}, key=lambda m: (m.startswith("helios"), m))
    lines = ["| series | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for member in members:
        cells = []
        for label in labels:
            r = cache.get(f"{member.name}|{minutes}|{label}", {})
            cells.append(f"{r['mase']:.3f}" if "mase" in r else ("err" if "error" in r else "-"))
        lines.append(f"| {member.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@click.command("forecast-suite")
@click.option("--shared", default="../shared", show_default=True, type=click.Path(path_type=Path))
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--methods", default=",".join(SUITE_METHODS), show_default=True)
@click.option("--series", "only", default="", help="comma-separated substrings: run only matching series")
@click.option("--variant", default="", help="label of an ablation of --variant-of (its options via --option)")
@click.option("--variant-of", default="helios", show_default=True, help="the method the ablation changes")
@click.option("--option", "options", multiple=True, help="key=JSON value passed to that method's constructor")
@click.option("--jobs", default=2, show_default=True)
@click.option("--out", default="bench/out/suite", show_default=True, type=click.Path(path_type=Path))
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path))
def forecast_suite(shared, folds, methods, only, variant, variant_of, options, jobs, out, markdown_path):
    """Backtest every method over the suite; print (and write) the per-series table and its summary."""
    members = suite(shared)
    if only:
        members = [m for m in members if any(s in m.name for s in only.split(","))]
    chosen = tuple(m for m in methods.split(",") if m)
    unknown = sorted(set(chosen) - set(SUITE_METHODS))
    if unknown:
        raise click.UsageError(f"unknown methods {unknown}; choose from {', '.join(SUITE_METHODS)}")
    parsed = {}
    for item in options:
        key, _, value = item.partition("=")
        parsed[key] = json.loads(value)
    horizons = suite_horizons()
    cache = run_suite(members, horizons, folds, chosen, {variant_of: (variant, parsed)}, out, jobs)
    helios_label = label("helios", variant if variant_of == "helios" else "")
    table, summary = suite_table(cache, members, horizons, helios_label, folds)
    click.echo(table)
    click.echo(json.dumps(summary))
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(table + "\n" + "\n".join(method_table(cache, members, m) for m in horizons))
        click.echo(f"wrote {markdown_path}")


if __name__ == "__main__":
    forecast_suite()
