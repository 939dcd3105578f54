"""Scheduled events on the simulator: a launch window forecast with and without the launch posted.

The gaming-corp tenant (1-minute data, weekly 8-hour tournaments) gets a one-off 48-hour launch that
nothing in its history foretells. Helios is fitted on the 14 days before the launch, as the pipeline
would train it, and then forecasts one hour ahead from origins every 10 minutes from an hour before
the launch to an hour into it (the ramp-up a scaler must be ready for; later, every forecaster has
seen the new level), each from the actual history up to that origin (as serving does):

- ``no events``: a forecaster that knows no schedule at all;
- ``tournaments only``: the tenant's configured schedule, the launch not posted;
- ``launch posted``: the same model, the launch passed to ``predict(extra_events=[...])`` as a
  tenant posts it through the API; the simulator realises a different effect than the configured
  multiplier (by design); the posted launch, like the tenant's tournaments, declares its 30-minute
  ramps (``ramp_minutes``).

Errors are over the forecast targets inside the launch window (and, for reference, all targets).
Run: ``python bench/forecast_events.py [--metric concurrent_users] [--markdown bench/results/forecast.md]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from helios_pipelines.core.ml.events import EventSchedule  # noqa: E402
from helios_pipelines.core.ml.models.forecasters import make_forecaster  # noqa: E402
from helios_pipelines.core.sources.simulator import Simulator  # noqa: E402
from helios_pipelines.core.tenants import ScheduledEvent, load_tenants  # noqa: E402

LAUNCH_START = pd.Timestamp("2026-10-15T14:00:00Z")  # a Thursday: no tournament that day
LAUNCH = ScheduledEvent(
    name="Season 6 Launch", kind="season_6_launch", start=LAUNCH_START, duration_hours=48, multiplier=3.0,
    ramp_minutes=30,
)
TRAIN_DAYS = 14


def run(metric: str, seed: int = 42) -> dict:
    tenant = load_tenants().get("gaming-corp")
    # The tenant's own schedule minus its configured launch (another date), plus ours.
    own = [e for e in tenant.events if e.repeat_days]
    tenant = tenant.model_copy(update={"events": [*own, LAUNCH]})
    step = tenant.step_timedelta
    horizon = int(pd.Timedelta("1h") / step)
    origins = pd.date_range(LAUNCH_START - pd.Timedelta("1h"), LAUNCH_START + pd.Timedelta("1h"), freq="10min")
    train_end = origins[0]
    frame = Simulator(tenant).fetch(train_end - pd.Timedelta(days=TRAIN_DAYS), origins[-1] + horizon * step)
    series = frame[metric].astype(float)
    regions = [(r.timezone, r.share) for r in tenant.regions]
    common = dict(step=step, max_horizon=horizon, timezone=tenant.timezone, regions=regions, metric=metric, seed=seed)

    started = time.perf_counter()
    blind = make_forecaster("helios", **common).fit(series[series.index < train_end])
    aware = make_forecaster("helios", events=EventSchedule(own), **common).fit(series[series.index < train_end])
    fit_seconds = (time.perf_counter() - started) / 2

    variants = {
        "no events": (blind, None),
        "tournaments only": (aware, None),
        "launch posted": (aware, [LAUNCH]),
    }
    ramp_end = LAUNCH_START + pd.Timedelta("30min")
    errors = {name: {"launch": [], "ramp": [], "after_ramp": [], "all": []} for name in variants}
    for origin in origins:
        history = series[series.index < origin]
        for name, (model, extra) in variants.items():
            forecast = model.predict(horizon, history, extra_events=extra)
            index = pd.DatetimeIndex(forecast["timestamp"])
            actual = series.reindex(index).to_numpy()
            ape = np.abs(forecast["yhat"].to_numpy() - actual) / np.abs(actual)
            inside = (index >= LAUNCH.start) & (index < LAUNCH.end)
            errors[name]["launch"].append(ape[inside])
            errors[name]["ramp"].append(ape[inside & (index < ramp_end)])
            errors[name]["after_ramp"].append(ape[inside & (index >= ramp_end)])
            errors[name]["all"].append(ape)
    results = {}
    for name, e in errors.items():
        launch, every = np.concatenate(e["launch"]), np.concatenate(e["all"])
        results[name] = {
            "launch_mape": float(np.nanmean(launch) * 100),
            "ramp_mape": float(np.nanmean(np.concatenate(e["ramp"])) * 100),
            "after_ramp_mape": float(np.nanmean(np.concatenate(e["after_ramp"])) * 100),
            "all_mape": float(np.nanmean(every) * 100),
            "n_launch": int(np.isfinite(launch).sum()),
        }
    realised = Simulator(tenant)._event_effect(pd.DatetimeIndex([LAUNCH_START + pd.Timedelta("6h")]))[0]
    return {
        "metric": metric,
        "origins": len(origins),
        "horizon_steps": horizon,
        "configured_multiplier": LAUNCH.multiplier,
        "realised_multiplier": float(realised),
        "learned_multipliers": aware.multipliers_,
        "fit_seconds": fit_seconds,
        "results": results,
    }


def markdown(report: dict) -> str:
    r = report["results"]
    lines = [
        f"### gaming-corp `{report['metric']}`: a one-off 48 h launch",
        "",
        f"Configured multiplier {report['configured_multiplier']:.1f}, realised by the simulator "
        f"{report['realised_multiplier']:.2f} (30-minute ramps); tournament multiplier learned from the "
        f"history: {', '.join(f'{k} {v:.2f}' for k, v in report['learned_multipliers'].items()) or 'none'}. "
        f"{report['origins']} origins every 10 min from 1 h before the launch to 1 h into it, "
        f"{report['horizon_steps']} steps each; one fit {report['fit_seconds']:.1f} s.",
        "",
        "| forecaster | MAPE, launch targets | in its 30-min ramp | after the ramp | all targets |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in r.items():
        lines.append(
            f"| {name} | {v['launch_mape']:.1f} % | {v['ramp_mape']:.1f} % | {v['after_ramp_mape']:.1f} % "
            f"| {v['all_mape']:.1f} % |"
        )
    posted, unposted = r["launch posted"], r["tournaments only"]
    lines += [
        "",
        f"Posting the launch cuts the launch-window error to **{posted['launch_mape'] / unposted['launch_mape']:.2f} x** "
        f"of not posting it, **{posted['after_ramp_mape'] / unposted['after_ramp_mape']:.2f} x** after the ramp.",
        "",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", action="append", help="logical metric(s); default concurrent_users and cpu_usage")
    parser.add_argument("--markdown", type=Path, help="append the tables here")
    args = parser.parse_args()
    for metric in args.metric or ["concurrent_users", "cpu_usage"]:
        report = run(metric)
        text = markdown(report)
        print(text)
        if args.markdown:
            with args.markdown.open("a") as out:
                out.write(text)


if __name__ == "__main__":
    main()
