"""Train one tenant end to end through Dagster in process and say where the time goes (#20.1).

Materialises every asset of the tenant's partition (fetch -> validate -> features -> candidates ->
detector -> capacity -> promotion -> Bento, `bentoml build` included) in process, on the embedded
defaults: the tenant's simulator source with the training window ending at ``--as-of``, MLflow,
Dagster and BentoML under a fresh temporary HELIOS_HOME (so no champion exists and nothing is
skipped). It records the wall time of each asset (Dagster's step durations), of each metric's
backtest per candidate (as training measured it) and each metric's backtest MASE per candidate, appends the run under ``--label`` to bench/results/train.json (a run of the same label
replaces it) and rewrites bench/results/train.md from every recorded run, keeping the hand notes
below its marker.

    .venv/bin/python bench/train_bench.py --label AFTER      # make bench-train LABEL=AFTER
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_notes import kept_notes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AS_OF = "2026-11-20T00:00:00+00:00"
TOLERANCE = 0.02  # MASE per metric within 2 % of the BEFORE run (#20.1)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its finished children (Stan, ``bentoml build``):
    on the shared machine the steadier figure, since other engineers' load stretches wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=REPO).stdout.strip()
    return found.stdout.strip() + ("+dirty" if dirty else "")


def run_pipeline(tenant_id: str, as_of: str, build_bento: bool) -> dict:
    """Materialise the tenant's partition; its figures as a JSON-able dict."""
    from dagster import DagsterInstance, materialize

    from helios_pipelines.defs.assets import ALL_ASSETS
    from helios_pipelines.defs.partitions import tenant_partitions
    from helios_pipelines.defs.resources import (
        BentoPackagerResource,
        MetricsSourceResource,
        MLflowResource,
        OperatorVerdictsResource,
        TenantRegistryResource,
    )

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(tenant_partitions.name, [tenant_id])
    resources = {
        "tenants": TenantRegistryResource(),
        "metrics_source": MetricsSourceResource(as_of=as_of),
        "mlflow_tracking": MLflowResource(),
        "packager": BentoPackagerResource(build_bento=build_bento),
        "operator_verdicts": OperatorVerdictsResource(),  # the temporary home's store: no verdicts
    }
    started, cpu_before = time.perf_counter(), cpu_seconds()
    result = materialize(ALL_ASSETS, partition_key=tenant_id, resources=resources, instance=instance,
                         raise_on_error=False)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    if not result.success:
        failures = [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        raise SystemExit(f"the pipeline failed for {tenant_id}: {failures}")
    assets = {e.step_key: e.event_specific_data.duration_ms / 1000
              for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    trained = result.output_for_node("forecast_candidates")

    metrics = {}
    for metric, t in trained.items():
        # each candidate's backtest wall time as training measured it (backtests of two metrics overlap)
        kinds = {kind: {"mase": scores["mase"], "seconds": t.seconds.get(kind)} for kind, scores in t.scores.items()}
        metrics[metric] = {"winner": t.winner, "mase": t.scores[t.winner]["mase"], "candidates": kinds,
                           "refit_seconds": t.fit_seconds}
    return {"wall_seconds": wall, "cpu_seconds": cpu, "assets": assets, "metrics": metrics}


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def render(runs: list[dict], notes: str) -> str:
    kinds = sorted({k for run in runs for m in run["metrics"].values() for k in m["candidates"]})
    assets = list(dict.fromkeys(a for run in runs for a in run["assets"]))
    lines = [
        "# Training benchmark",
        "",
        "`make bench-train LABEL=<label>` (`bench/train_bench.py`): one tenant's whole pipeline materialised by",
        "Dagster in process on the embedded defaults (simulator source, window ending at the run's `as of`,",
        "MLflow, Dagster and BentoML in a fresh temporary home, `bentoml build` included). Asset times are",
        "Dagster's step durations; a candidate's time is its whole rolling-origin backtest (every fold's fit",
        "and predict; BEFORE also its MLflow logging), the winner's refit is its fit on the whole window. Metrics",
        "are backtested side by side (two before ec9b48a, four since), so candidate times of different metrics",
        "overlap. The steps run in process, one after the other, as `helios run` executes a tenant",
        "(`execute_in_process`). CPU s: the process's threads and its children (Stan, `bentoml build`), the",
        "steadier figure under others' load (recorded from the 2026-12-01 03:00 runs on). The machine has 2",
        "cores and is shared: `uptime` is recorded with every run.",
        "",
        "## Runs",
        "",
        "| label | when (UTC) | commit | tenant | as of | wall s | CPU s | uptime before | uptime after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['label']} | {r['when']} | {r['commit']} | {r['tenant']} | {r['as_of']} | {r['wall_seconds']:.1f} "
              f"| {_fmt(r.get('cpu_seconds'))} | `{r['uptime_before']}` | `{r['uptime_after']}` |" for r in runs]
    lines += ["", "## Wall time per asset (s)", "", "| asset | " + " | ".join(r["label"] for r in runs) + " |",
              "|---|" + "---|" * len(runs)]
    lines += [f"| {a} | " + " | ".join(_fmt(r["assets"].get(a)) for r in runs) + " |" for a in assets]
    lines += ["| **total (materialise)** | " + " | ".join(f"**{r['wall_seconds']:.1f}**" for r in runs) + " |"]
    for run in runs:
        lines += ["", f"## {run['label']}: per metric and candidate", "",
                  "| metric | winner | " + " | ".join(f"{k} MASE | {k} s" for k in kinds) + " | winner refit s |",
                  "|---|---|" + "---|---|" * len(kinds) + "---|"]
        for metric, m in run["metrics"].items():
            cells = []
            for k in kinds:
                c = m["candidates"].get(k)
                cells += [f"{c['mase']:.4f}" if c else "-", _fmt(c["seconds"]) if c else "-"]
            lines.append(f"| {metric} | {m['winner']} | " + " | ".join(cells) + f" | {_fmt(m['refit_seconds'])} |")
    before = next((r for r in runs if r["label"] == "BEFORE"), None)
    if before is not None and len(runs) > 1:
        others = [r for r in runs if r is not before]
        lines += ["", "## Backtest MASE per metric (the winner's) against BEFORE", "",
                  f"Within {TOLERANCE:.0%} of BEFORE is the target (#20.1).", "",
                  "| metric | BEFORE | " + " | ".join(f"{r['label']} | change" for r in others) + " |",
                  "|---|---|" + "---|---|" * len(others)]
        for metric, m in before["metrics"].items():
            cells = []
            for r in others:
                now = r["metrics"].get(metric)
                if now is None:
                    cells += ["-", "-"]
                    continue
                change = now["mase"] / m["mase"] - 1
                flag = "" if abs(change) <= TOLERANCE else " **over 2 %**"
                cells += [f"{now['mase']:.4f} ({now['winner']})", f"{change:+.2%}{flag}"]
            lines.append(f"| {metric} | {m['mase']:.4f} ({m['winner']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="the run's name in the report (BEFORE, AFTER, ...)")
    parser.add_argument("--tenant", default="gaming-corp")
    parser.add_argument("--as-of", default=AS_OF, help="end of the training window")
    parser.add_argument("--no-bento-build", action="store_true", help="pack the BentoML model, skip `bentoml build`")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train.md")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="helios-train-bench-"))
    os.environ["HELIOS_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME", "BENTOML_HOME"):
        os.environ.pop(key, None)
    sys.path.insert(0, str(REPO))
    from helios_pipelines.core.settings import apply_local_defaults

    apply_local_defaults()
    before = uptime()
    figures = run_pipeline(args.tenant, args.as_of, not args.no_bento_build)
    record = {"label": args.label, "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "commit": commit(),
              "tenant": args.tenant, "as_of": args.as_of, "uptime_before": before, "uptime_after": uptime(),
              **figures}

    store = args.out.with_suffix(".json")
    runs = json.loads(store.read_text()) if store.exists() else []
    runs = [r for r in runs if r["label"] != args.label] + [record]
    store.write_text(json.dumps(runs, indent=1) + "\n")
    args.out.write_text(render(runs, kept_notes(args.out)))
    print(f"{args.label}: {figures['wall_seconds']:.1f} s wall, {figures['cpu_seconds']:.1f} s CPU; {args.out} and {store} updated")
    for asset, seconds in figures["assets"].items():
        print(f"  {asset:22} {seconds:7.1f} s")


if __name__ == "__main__":
    main()
