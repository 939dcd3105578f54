"""A scheduled retrain on a moved window, warm-started against fitted from scratch (#20.2).

Trains a tenant's forecasters (every candidate, as the pipeline does) under a fresh temporary
HELIOS_HOME on the simulator's window ending at ``--as-of`` and promotes them; then trains on the
window ``--shift`` later twice, against the same champions: with ``force`` (from scratch, today's
cost) and then as a scheduled retrain does (the data window alone changed, so the champion's Helios
boosters are continued). Prints, per metric, the wall seconds of Helios' backtest and refit and the
backtest MASE of each, and the wall and CPU seconds of each training (CPU seconds, every thread's, say
more than wall on a shared machine), as markdown for bench/results/train.md.

    nice -n 10 .venv/bin/python bench/warm_start_bench.py --tenant gaming-corp
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default="gaming-corp")
    parser.add_argument("--as-of", default="2026-11-20T00:00:00+00:00")
    parser.add_argument("--shift", default="1D", help="how far the retrain's window moved (a pandas offset)")
    args = parser.parse_args()
    os.environ["HELIOS_HOME"] = tempfile.mkdtemp(prefix="helios-warm-bench-")
    sys.path.insert(0, str(REPO))
    from helios_pipelines.core.settings import apply_local_defaults

    apply_local_defaults()  # OMP_WAIT_POLICY before xgboost loads, as `make` and `helios` set it

    import pandas as pd

    from helios_pipelines.core.ml.events import EventSchedule
    from helios_pipelines.core.ml.features import build_feature_frame
    from helios_pipelines.core.ml.tracking import Tracker
    from helios_pipelines.core.ml.training import promote_forecasters, train_forecasters
    from helios_pipelines.core.sources import make_source
    from helios_pipelines.core.tenants import load_tenants

    tenant = load_tenants().get(args.tenant)
    tracker = Tracker()

    def features(as_of: pd.Timestamp) -> pd.DataFrame:
        end = as_of.floor(tenant.step_timedelta)
        raw = make_source(tenant, now=as_of).fetch(end - pd.Timedelta(days=tenant.training.history_days), end)
        return build_feature_frame(raw, tenant.timezone, [(r.timezone, r.share) for r in tenant.regions],
                                   EventSchedule(tenant.events))

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def train(frame: pd.DataFrame, force: bool) -> tuple[dict, tuple[float, float]]:
        started, cpu_started = time.perf_counter(), cpu()
        trained = train_forecasters(tenant, frame, tracker, {}, force=force)
        return trained, (time.perf_counter() - started, cpu() - cpu_started)

    as_of = pd.Timestamp(args.as_of)
    uptime = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    first, first_wall = train(features(as_of), force=False)
    promote_forecasters(tenant, first, tracker)
    moved = features(as_of + pd.Timedelta(args.shift))
    cold, cold_wall = train(moved, force=True)
    warm, warm_wall = train(moved, force=False)
    uptime.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())

    print(f"{args.tenant}: champions trained on the window to {as_of}, retrained on the window {args.shift} later")
    print(f"uptime before: `{uptime[0]}`; after: `{uptime[1]}`\n")
    print("| metric | champion | warm: helios backtest s | refit s | helios MASE | winner | cold: helios backtest s "
          "| refit s | helios MASE | winner | warm start |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for metric in tenant.forecast_metrics:
        w, c = warm[metric], cold[metric]
        record = w.warm_start or {}
        print(f"| {metric} | {first[metric].winner} v{first[metric].version.version} "
              f"| {w.seconds.get('helios', 0):.1f} | {w.fit_seconds:.1f} | {w.scores['helios']['mase']:.4f} | {w.winner} "
              f"| {c.seconds.get('helios', 0):.1f} | {c.fit_seconds:.1f} | {c.scores['helios']['mase']:.4f} | {c.winner} "
              f"| {record.get('saved', w.fit_note)} |")
    for what, i in (("wall", 0), ("CPU", 1)):
        print(f"\nforecast training {what} s: first {first_wall[i]:.1f}, cold retrain {cold_wall[i]:.1f}, warm retrain "
              f"{warm_wall[i]:.1f} ({1 - warm_wall[i] / cold_wall[i]:.0%} saved)")


if __name__ == "__main__":
    main()
