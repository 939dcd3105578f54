"""Deploys the tenant reports (``POST /annotations``), on the simulator: their blips page no one, their
regressions still page (issue 17 item 1).

For each simulated tenant the detector the pipeline trains is fitted on the training window, as in
``simulator_detection``'s drill; then, ``--deploys`` times (every 7 hours over the days after it), a
deploy at that time is scored on the history the service holds, up to ``AFTER`` past it, four ways:

- ``quiet``: the traffic as simulated (the episodes that would open anyway: the baseline);
- ``blip, unreported``: the latency metrics (those measured in seconds or milliseconds) five times
  higher for ``BLIP`` (at least one step), as pods restart;
- ``blip, reported``: the same, with the deploy reported with a ``WINDOW`` window;
- ``regression, reported``: the latency metrics three times higher from the deploy on, reported;
- ``scale-up``, where the tenant's utilisation metric is watched: the simulator's fleet doubled from
  then on (utilisation halves; the queue and latency its pressure drove follow), unreported and
  reported as a scaling from 4 to 8 replicas of that metric.

A deploy pages when an episode starts from it to ``AFTER`` after it. A regression is found when such an
episode names the deploy; its delay is from the deploy to the episode's start (the window, then the
tenant's recovery window less two rows: ``core/ml/changes.py``).

    python bench/change_drill.py --out bench/results/change_drill.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.changes import ChangeAnnotation
from helios_pipelines.core.ml.models.episodes import episodes
from helios_pipelines.core.ml.training import tenant_detector
from helios_pipelines.core.sources.simulator import Simulator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as `python bench/change_drill.py` or with -m
from results_notes import kept_notes  # noqa: E402
from simulator_detection import AS_OF, helios_home_restored, served_history, simulated_tenants  # noqa: E402

BLIP = pd.Timedelta("3min")
WINDOW = pd.Timedelta("15min")
AFTER = pd.Timedelta("3h")
LATENCY_UNITS = {"s", "ms"}


def paged(detector, frame: pd.DataFrame, deployed: pd.Timestamp, changes=()) -> list:
    """The episodes starting from ``deployed`` to ``AFTER`` after it, and the change each opened after."""
    scores = detector.score(frame, changes=changes)
    state = detector.alert_state(scores, frame, changes)
    found = [e for e in episodes(scores, state.state) if deployed <= e.start < deployed + AFTER]
    return [(e, state.after_change.at[e.start, e.first]) for e in found]


@contextmanager
def fleet_doubled_from(at: pd.Timestamp):
    """The simulator's fleet twice its size from ``at`` on. The simulator has no scaling action of its
    own (its injections are incidents, labelled as such), so its fleet model is wrapped here."""
    fleet = Simulator._fleet

    def doubled(simulator, index):
        replicas = fleet(simulator, index)
        return np.where(index >= at, 2 * replicas, replicas)

    Simulator._fleet = doubled
    try:
        yield
    finally:
        Simulator._fleet = fleet


def deploy_drill(tenant, deploys: int) -> dict:
    metrics = sorted(tenant.anomaly_metrics)
    utilization = next((s.utilization_metric for s in tenant.scaling if s.utilization_metric in metrics), None)
    latencies = [m for m in metrics if tenant.metrics[m].unit in LATENCY_UNITS]
    simulator = Simulator(tenant)
    detector = tenant_detector(tenant).fit(
        simulator.fetch(AS_OF - pd.Timedelta(days=tenant.training.history_days), AS_OF)[metrics])
    held = served_history(tenant, detector)
    blip = max(BLIP, tenant.step_timedelta)
    counts = {"quiet": 0, "blip, unreported": 0, "blip, reported": 0, "regression found": 0,
              "scale-up, unreported": 0, "scale-up, reported": 0}
    delays = []
    for hours in range(26, 26 + 7 * deploys, 7):
        deployed = AS_OF + pd.Timedelta(hours=hours)
        quiet = simulator.fetch(deployed - held, deployed + AFTER)[metrics]
        deploy = ChangeAnnotation(time=deployed.to_pydatetime(), time_end=(deployed + WINDOW).to_pydatetime(),
                                  tags=["deploy"], text=f"release {hours}")
        blipped = quiet.copy()
        blipped.loc[(quiet.index >= deployed) & (quiet.index < deployed + blip), latencies] *= 5
        regressed = quiet.copy()
        regressed.loc[quiet.index >= deployed, latencies] *= 3
        counts["quiet"] += len(paged(detector, quiet, deployed))
        counts["blip, unreported"] += len(paged(detector, blipped, deployed))
        counts["blip, reported"] += len(paged(detector, blipped, deployed, [deploy]))
        named = [e for e, cause in paged(detector, regressed, deployed, [deploy]) if cause == deploy.label]
        counts["regression found"] += bool(named)
        delays += [(named[0].start - deployed) / pd.Timedelta("1min")] if named else []
        if utilization is not None:
            with fleet_doubled_from(deployed):
                scaled = Simulator(tenant).fetch(deployed - held, deployed + AFTER)[metrics]
            scale = ChangeAnnotation(time=deployed.to_pydatetime(), tags=["scale"], replicas_before=4,
                                     replicas_after=8, metrics=[utilization])
            counts["scale-up, unreported"] += len(paged(detector, scaled, deployed))
            counts["scale-up, reported"] += len(paged(detector, scaled, deployed, [scale]))
    return {"tenant": tenant.id, "deploys": deploys, "latencies": latencies, "step": tenant.step,
            "utilization": utilization,
            "delay": float(np.median(delays)) if delays else float("nan")} | counts


def render(rows: list[dict]) -> list[str]:
    lines = [
        "# Reported deploys on the simulator (issue 17 item 1)", "",
        "Measured with `python bench/change_drill.py --out bench/results/change_drill.md` "
        f"(blip x5 for {BLIP.seconds // 60} minutes or a step, regression x3 lasting, reported window "
        f"{WINDOW.seconds // 60} minutes; pages: episodes starting from the deploy to {AFTER.seconds // 3600} hours "
        "after it).", "",
        "| tenant | step | deploys | latency metrics | pages, quiet | pages, blip unreported | pages, blip reported "
        "| regressions paged naming the deploy | median minutes from deploy to page "
        "| pages, scale-up unreported | pages, scale-up reported |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['tenant']} | {r['step']} | {r['deploys']} | {', '.join(r['latencies'])} | {r['quiet']} | "
                     f"{r['blip, unreported']} | {r['blip, reported']} | {r['regression found']}/{r['deploys']} | "
                     f"{r['delay']:g} | " + (f"{r['scale-up, unreported']} | {r['scale-up, reported']} |"
                                            if r["utilization"] else "(utilisation not watched) | |"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/change_drill.md"))
    parser.add_argument("--deploys", type=int, default=10)
    args = parser.parse_args()
    with helios_home_restored():
        os.environ["HELIOS_HOME"] = tempfile.mkdtemp(prefix="helios-deploys-")  # no injected incidents
        lines = render([deploy_drill(tenant, args.deploys) for tenant in simulated_tenants()])
    args.out.write_text("\n".join(lines) + "\n" + kept_notes(args.out))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
