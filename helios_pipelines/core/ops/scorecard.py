"""An event's scorecard: what Helios' forecasts and recommendations were worth once the event is over.

Over an event occurrence (a scheduled event from the tenant's YAML or posted to the service, or a
learned recurring peak's: ``core.ml.peaks``), for a scaling target:

- forecast vs actual at the lead time (the forecast /recommend sized on): MAE, MASE (scale: the
  seasonal-naive in-sample MAE of the history before the event), peak error, timing error of the
  peak, coverage of the 80 % interval;
- replicas step by step: needed (the actual load over the usable capacity per replica), Helios'
  (``CapacityPlanner.recommend`` replayed on the forecasts, exactly as /recommend computes them,
  from its own previous answer), and a reactive HPA's on the same actuals (``reactive_hpa``: the
  HPA's documented arithmetic with the target's behaviour);
- per controller: under- and over-provisioned pod-minutes (ready replicas vs needed), minutes above
  the capacity-critical utilisation, pod-hours and their cost at the target's price per pod-hour.

Both controllers act on every step: Helios' answer at t (sized for t + lead) is applied at once, as
KEDA applies helios_desired_replicas; the HPA's desired count at t likewise. A replica asked for at t
serves from t + start-up (the planner's start-up seconds); one removed stops serving at once. The
reactive fleet and Helios both start from the needed count an hour before the event. Forecasts are replayed from origins every ``origin_every`` steps
(the served model refreshes every step; the replay bounds its cost and says how often it refreshed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.evaluation import mase_scale
from helios_pipelines.core.ml.events import EventSchedule, Occurrence
from helios_pipelines.core.ml.models.base import Forecaster
from helios_pipelines.core.ml.models.capacity import CapacityPlanner, demand_to_size
from helios_pipelines.core.ml.peaks import PeakSchedule
from helios_pipelines.core.tenants import ScalingTarget, ScheduledEvent, TenantConfig

# At most this many forecasts are replayed per event (origins spaced to fit).
MAX_REPLAYED_FORECASTS = 160
# The HPA's default tolerance: no scaling while current/target is within 10 %.
HPA_TOLERANCE = 0.1
# The reactive fleet settles on the actuals for this long before the event is scored.
WARM_UP = pd.Timedelta("1h")
# A scorecard's history for the MASE scale: one day before the event at least.
SEASON = pd.Timedelta("1D")
# A learned peak recurs at least weekly: its latest occurrence is found within this before now.
LEARNED_LOOKBACK = pd.Timedelta("8D")


class UnknownEventError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


class UnfinishedEventError(ValueError):
    pass


def find_occurrence(tenant: TenantConfig, name: str | None, now: pd.Timestamp,
                    posted: list[ScheduledEvent] = (), learned: PeakSchedule | None = None) -> Occurrence:
    """The latest occurrence of event ``name`` that has started by ``now`` (any event's, without a
    name): a scheduled event's (the tenant's YAML, ``posted``) or a learned peak's (``learned``, those
    not covered by a scheduled event). Unknown names: UnknownEventError naming the known ones; not ended
    yet: UnfinishedEventError."""
    events = [*tenant.events, *posted]
    peak_names = learned.names if learned else []
    known = sorted({e.name for e in events} | set(peak_names))
    if name is not None and name not in known:
        raise UnknownEventError(f"tenant '{tenant.id}' has no event '{name}'; events: {', '.join(known) or '(none)'}")
    chosen = [e for e in events if name is None or e.name == name]
    earliest = min((pd.Timestamp(e.start) for e in chosen), default=now)
    started = [o for o in EventSchedule(chosen).occurrences(earliest, now) if o.start <= now]
    if learned and (name is None or name in peak_names):
        started += [o for o in learned.occurrences(now - LEARNED_LOOKBACK, now, EventSchedule(events))
                    if (name is None or o.name == name) and o.start <= now]
    if not started:
        what = f"event '{name}'" if name else "no event"
        if name in peak_names:
            raise UnfinishedEventError(
                f"tenant '{tenant.id}': {what} has no occurrence of its own in the {LEARNED_LOOKBACK.days} days before "
                f"{now:%Y-%m-%d %H:%M} UTC (one that coincides with a scheduled event is that event's)")
        raise UnfinishedEventError(f"tenant '{tenant.id}': {what} has not started yet (now {now:%Y-%m-%d %H:%M} UTC)")
    if name is None:  # the last finished one, whatever its name
        finished = [o for o in started if o.end <= now]
        if not finished:
            raise UnfinishedEventError(f"tenant '{tenant.id}': no event has finished yet")
        return max(finished, key=lambda o: o.end)
    latest = max(started, key=lambda o: o.start)
    if latest.end > now:
        raise UnfinishedEventError(
            f"event '{name}' of tenant '{tenant.id}' is still running: it ends {latest.end:%Y-%m-%d %H:%M} UTC"
        )
    return latest


@dataclass
class ControllerFigures:
    under_provisioned_pod_minutes: float
    over_provisioned_pod_minutes: float
    minutes_above_threshold: float
    pod_hours: float
    cost: float


@dataclass
class Scorecard:
    tenant: str
    event: str
    kind: str
    start: str
    end: str
    service: str
    metric: str
    step_minutes: float
    lead_minutes: int
    capacity_per_replica: float
    capacity_source: str
    price_per_pod_hour: float
    threshold_utilization: float
    origin_every_steps: int
    forecast: dict  # mae, mase, peak_error, timing_error_minutes, coverage
    helios: ControllerFigures
    reactive: ControllerFigures
    savings: dict  # pod_hours_saved, cost_saved, under_pod_minutes_avoided, slo_minutes_avoided
    steps: list[dict] = field(default_factory=list)  # timestamp, actual, yhat, lower, upper, needed, helios, reactive
    # which forecaster and planner versions scored it, or that they were refitted before the event
    # (core.ops.scorecard_models); empty for scorecards written before it was recorded
    scored_with: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """As JSON allows it: a figure that is not a number (MASE without a scale, a step without a
        forecast) is None."""
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> Scorecard:
        def figures(values: dict) -> dict:
            return {k: math.nan if v is None else v for k, v in values.items()}

        return cls(**{**data, "forecast": figures(data["forecast"]), "savings": figures(data["savings"]),
                      "helios": ControllerFigures(**figures(data["helios"])),
                      "reactive": ControllerFigures(**figures(data["reactive"]))})

    def summary(self) -> str:
        h, r = self.helios, self.reactive
        return (
            f"{self.tenant} {self.event} ({self.start[:16]} - {self.end[:16]} UTC), {self.service}: forecast MASE "
            f"{self.forecast['mase']:.2f}, coverage {self.forecast['coverage']:.0%}; under-provisioned "
            f"{h.under_provisioned_pod_minutes:,.0f} pod-min vs {r.under_provisioned_pod_minutes:,.0f} reactive, "
            f"over-provisioned {h.over_provisioned_pod_minutes:,.0f} vs {r.over_provisioned_pod_minutes:,.0f}, "
            f"{h.minutes_above_threshold:,.0f} min above {self.threshold_utilization:.0%} vs "
            f"{r.minutes_above_threshold:,.0f}; {self.savings['pod_hours_saved']:+,.1f} pod-hours "
            f"({self.savings['cost_saved']:+,.2f} at {self.price_per_pod_hour:g}/pod-hour) vs a reactive HPA"
        )


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def reactive_hpa(actual: np.ndarray, usable: float, target: ScalingTarget, step: pd.Timedelta, start: int) -> np.ndarray:
    """Replicas a Kubernetes HPA on current utilisation asks for at each step, from ``start`` replicas.

    The HPA's documented arithmetic: desired = ceil(current x currentUtilisation / targetUtilisation),
    no change within the 10 % tolerance; the scale-up (scale-down) stabilisation window takes the
    lowest (highest) desired count over the window; policies cap a change at the target's percent per
    period; min/max replicas bound it. Utilisation is over the ready replicas (new ones serve after
    start-up), as the HPA sees it.
    """
    b = target.behaviour
    seconds = step.total_seconds()
    up_window = max(1, math.ceil(b.scale_up_window_s / seconds))
    down_window = max(1, math.ceil(b.scale_down_window_s / seconds))
    up_factor = (1 + b.scale_up_percent / 100) ** max(1.0, seconds / b.scale_up_period_s)
    down_factor = (1 - b.scale_down_percent / 100) ** max(1.0, seconds / b.scale_down_period_s)
    spec = np.empty(len(actual), dtype=int)
    desired_history: list[int] = []
    current = int(start)
    for i, load in enumerate(actual):
        ratio = load / (current * usable) if current else math.inf
        # current x (load / (current x per_replica)) / target = load / usable, without float noise.
        desired = current if abs(ratio - 1) <= HPA_TOLERANCE or not np.isfinite(load) else math.ceil(load / usable - 1e-9)
        desired_history.append(desired)
        if desired > current:
            desired = min(desired_history[-up_window:])
            desired = min(desired, math.floor(current * up_factor))
        elif desired < current:
            desired = max(desired_history[-down_window:])
            desired = max(desired, math.ceil(current * down_factor))
        current = min(max(int(desired), target.min_replicas), target.max_replicas)
        spec[i] = current
    return spec


def ready_replicas(spec: np.ndarray, startup_steps: int) -> np.ndarray:
    """Replicas serving at each step: new ones after ``startup_steps``, removed ones at once."""
    lagged = np.concatenate([np.full(startup_steps, spec[0]), spec[: len(spec) - startup_steps]]) if startup_steps else spec
    return np.minimum(spec, lagged[: len(spec)])


def _figures(ready: np.ndarray, spec: np.ndarray, needed: np.ndarray, actual: np.ndarray, per_replica: float,
             threshold: float, step_minutes: float, price: float) -> ControllerFigures:
    with np.errstate(divide="ignore", invalid="ignore"):
        utilization = actual / (ready * per_replica)
    pod_hours = float(spec.sum() * step_minutes / 60)
    return ControllerFigures(
        under_provisioned_pod_minutes=float(np.clip(needed - ready, 0, None).sum() * step_minutes),
        over_provisioned_pod_minutes=float(np.clip(ready - needed, 0, None).sum() * step_minutes),
        minutes_above_threshold=float((utilization > threshold).sum() * step_minutes),
        pod_hours=pod_hours,
        cost=pod_hours * price,
    )


def replay_forecasts(forecaster: Forecaster, series: pd.Series, decisions: pd.DatetimeIndex, lead_steps: int,
                     level: float, every: int, on_progress: Callable[[int, int], None] | None = None,
                     drivers: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each decision time d: the forecast of d + lead (yhat, lower, upper) and what the planner
    sizes on (``demand_to_size``, as /recommend takes it), from the forecast made at the latest
    origin <= d (from the ``drivers``' history too, for a forecaster that reads it)."""
    rows = []
    origins = decisions[::every]
    horizon = min(forecaster.max_horizon, every - 1 + lead_steps)
    for n, origin in enumerate(origins):
        frame = forecaster.predict(horizon, series[series.index <= origin], level=level, drivers=drivers)
        expected, upper = frame["yhat"].to_numpy(), frame["yhat_upper"].to_numpy()
        for i in range(every):
            position = n * every + i
            if position >= len(decisions):
                break
            row = frame.iloc[min(i + lead_steps, horizon) - 1]
            rows.append({"decision": decisions[position], "timestamp": row["timestamp"], "yhat": row["yhat"],
                         "lower": row["yhat_lower"], "upper": row["yhat_upper"],
                         "demand": demand_to_size(expected[i:], upper[i:], lead_steps)})
        if on_progress:
            on_progress(n + 1, len(origins))
    return pd.DataFrame(rows)


def event_scorecard(tenant: TenantConfig, occurrence: Occurrence, history: pd.DataFrame, forecaster: Forecaster,
                    planner: CapacityPlanner, service: str | None = None,
                    on_progress: Callable[[int, int], None] | None = None,
                    max_forecasts: int = MAX_REPLAYED_FORECASTS) -> Scorecard:
    """The scorecard of ``occurrence`` for ``service`` (the tenant's first scaling target by default)
    from ``history`` (the tenant's metrics, covering the forecaster's full history before the event
    and the event itself), the forecaster and the planner that served it."""
    target = planner.target(service) if service else next(iter(planner.targets.values()))
    step = tenant.step_timedelta
    step_minutes = step.total_seconds() / 60
    lead_minutes = planner.lead_time_minutes(target.service)
    lead_steps = max(1, math.ceil(pd.Timedelta(minutes=lead_minutes) / step))
    startup_steps = math.ceil(planner.startup_seconds(target.service) / step.total_seconds())
    per_replica = planner.capacity[target.service]
    usable = per_replica * target.target_utilization
    series = history[target.metric].astype(float)
    grid = pd.date_range(occurrence.start - WARM_UP, occurrence.end, freq=step, inclusive="left")
    actual = series.reindex(grid).interpolate(limit_direction="both").to_numpy()
    scored = grid >= occurrence.start
    if np.isnan(actual[scored]).all():
        raise ValueError(f"tenant '{tenant.id}': no {target.metric} data over event '{occurrence.name}'")
    needed = np.maximum(np.ceil(actual / usable - 1e-9), target.min_replicas).astype(int)

    # Helios at each step answers /recommend for the fleet at step + lead, from its previous answer;
    # KEDA applies the answer at once (scale-downs too), new replicas serve after start-up.
    every = max(1, math.ceil(len(grid) / max_forecasts))
    level = 2 * target.quantile - 1  # the upper bound of that central interval is the sized quantile
    sizing = replay_forecasts(forecaster, series, grid, lead_steps, level, every, on_progress, history)
    helios_spec = np.empty(len(grid), dtype=int)
    current = int(needed[0])
    for i, row in enumerate(sizing.itertuples()):
        current = planner.recommend(target.service, **row.demand, current_replicas=current).replicas
        helios_spec[i] = current
    helios_ready = ready_replicas(helios_spec, startup_steps)
    reactive_spec = reactive_hpa(actual, usable, target, step, start=int(needed[0]))
    reactive_ready = ready_replicas(reactive_spec, startup_steps)
    # Forecast quality: the 80 % interval of the forecast made a lead time before each scored step.
    if level == 0.8:
        interval = sizing.set_index("timestamp").reindex(grid[scored])
    else:
        interval = replay_forecasts(forecaster, series, grid[scored] - lead_steps * step, lead_steps, 0.8, every,
                                    drivers=history)
        interval = interval.set_index("timestamp").reindex(grid[scored])

    threshold = tenant.alerts.thresholds.capacity_critical
    price = target.price_per_pod_hour
    a, n = actual[scored], needed[scored]
    helios = _figures(helios_ready[scored], helios_spec[scored], n, a, per_replica, threshold, step_minutes, price)
    reactive = _figures(reactive_ready[scored], reactive_spec[scored], n, a, per_replica, threshold, step_minutes, price)

    yhat, lower, upper = (interval[c].to_numpy(dtype=float) for c in ("yhat", "lower", "upper"))
    before = series[(series.index < occurrence.start) & (series.index >= occurrence.start - 7 * SEASON)].to_numpy()
    scale = mase_scale(before, int(SEASON / step))
    mae = float(np.nanmean(np.abs(yhat - a)))
    stamps = grid[scored]
    forecast = {
        "mae": mae,
        "mase": mae / scale if scale and np.isfinite(scale) else float("nan"),
        "peak_error": float((np.nanmax(yhat) - np.nanmax(a)) / np.nanmax(a)),
        "timing_error_minutes": float((stamps[int(np.nanargmax(yhat))] - stamps[int(np.nanargmax(a))]) / pd.Timedelta("1min")),
        "coverage": float(np.mean((a >= lower) & (a <= upper))),
    }
    savings = {
        "pod_hours_saved": reactive.pod_hours - helios.pod_hours,
        "cost_saved": reactive.cost - helios.cost,
        "under_pod_minutes_avoided": reactive.under_provisioned_pod_minutes - helios.under_provisioned_pod_minutes,
        "slo_minutes_avoided": reactive.minutes_above_threshold - helios.minutes_above_threshold,
    }
    steps = [
        {"timestamp": t.isoformat(), "actual": float(v), "yhat": float(f), "lower": float(lo), "upper": float(up),
         "needed": int(nd), "helios": int(h), "reactive": int(r)}
        for t, v, f, lo, up, nd, h, r in zip(stamps, a, yhat, lower, upper, n, helios_ready[scored],
                                             reactive_ready[scored], strict=True)
    ]
    capacity_input = planner.inputs(target.service)["capacity_per_replica"]
    return Scorecard(
        tenant=tenant.id, event=occurrence.name, kind=occurrence.kind, start=occurrence.start.isoformat(),
        end=occurrence.end.isoformat(), service=target.service, metric=target.metric, step_minutes=step_minutes,
        lead_minutes=lead_minutes, capacity_per_replica=per_replica, capacity_source=capacity_input["source"],
        price_per_pod_hour=price, threshold_utilization=threshold, origin_every_steps=every, forecast=forecast,
        helios=helios, reactive=reactive, savings=savings, steps=steps,
    )
