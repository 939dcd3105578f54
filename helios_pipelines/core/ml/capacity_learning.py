"""Capacity per replica and pod lead time learned from the tenant's own fleet series.

Capacity: a robust fit through the origin of load per replica (the driver metric over replicas)
against utilisation, ``load/replica = capacity x utilisation``: utilisation is a ratio of capacity,
so the slope is the load one replica carries at 100 %, and ``capacity x target`` the load at the
target utilisation (the planner's usable capacity). The slope is the median of the points' own
slopes (Theil-Sen through the origin): outliers (incidents, scrape glitches) move it little, and it
costs one median. Through the origin on purpose: the fleet works in a narrow utilisation band, where
a free intercept soaks up the noise and biases the slope (measured: 45.2 for a truth of 46).
The interval comes from a day-block bootstrap (days resampled with replacement, seeded). Its
backtest fits on the first 75 % of the window and predicts the last 25 %'s utilisation, against the
same prediction from the configured capacity.

Lead time: the p90 of pods' start-to-ready seconds (kube-state-metrics), bootstrap interval.

The configuration stays the prior and the guard rail: a learned value far from it is flagged for
review and not used; missing series are named and the configured value is used, visibly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from helios_pipelines.core.sources.base import MetricsSource, SourceError
from helios_pipelines.core.tenants import MetricConfig, ScalingTarget, TenantConfig

log = logging.getLogger(__name__)
# The replica history joins the metrics under this name (no logical metric can have it: it has a space).
REPLICAS_COLUMN = "current replicas"

# A learned capacity further than this from the configured one is flagged for review, not used.
CAPACITY_GUARD_RAIL = 0.25
# A measured p90 start-up time outside [configured / 3, configured x 3] is flagged for review.
STARTUP_GUARD_RAIL = 3.0
MIN_CAPACITY_POINTS = 500
MIN_POD_STARTS = 30
BOOTSTRAP_RESAMPLES = 200
START_QUANTILE = 0.9


@dataclass(frozen=True)
class FleetValue:
    """One value the planner uses, with where it came from."""

    name: str  # capacity_per_replica | startup_seconds
    value: float  # the value in use
    source: str  # "learned" or "config"
    config_value: float
    learned: float | None = None
    interval: tuple[float, float] | None = None  # 95 % bootstrap interval of the learned value
    points: int = 0  # observations behind the learned value
    review: bool = False  # learned but too far from the configuration to be used unreviewed
    note: str = ""
    backtest: dict | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval else None
        return out


def _column(history: pd.DataFrame | None, metric: str | None) -> pd.Series | None:
    if history is None or metric is None or metric not in history.columns:
        return None
    column = history[metric].astype(float)
    return column if column.notna().any() else None


def _missing(target: ScalingTarget, history: pd.DataFrame | None, keys: tuple[str, ...]) -> list[str]:
    """What the learning needs and does not have, by config key and metric or series name."""
    missing = []
    for key in keys:
        if key == "current_replicas":
            metric = target.current_replicas.series if target.current_replicas else None
            column = REPLICAS_COLUMN
        else:
            metric = target.metric if key == "metric" else getattr(target, key)
            column = metric
        if metric is None:
            missing.append(f"{key} (not configured)")
        elif _column(history, column) is None:
            missing.append(f"{key} '{metric}' (no data in the history)")
    return missing


def replica_history(source: MetricsSource, target: ScalingTarget, index: pd.DatetimeIndex) -> pd.Series | None:
    """The target's replica count over ``index`` from its ``current_replicas`` series (None when it
    has none configured or the source cannot give it: learning then names what it misses)."""
    if target.current_replicas is None or len(index) == 0:
        return None
    config = MetricConfig(series=target.current_replicas.series, query=target.current_replicas.query)
    try:
        return pd.to_numeric(source.fetch_series(f"{target.service} replicas", config, index), errors="coerce")
    except SourceError as exc:
        log.warning("replica history of '%s' not read: %s", target.service, exc)
        return None


def _robust_capacity(load_per_replica: np.ndarray, utilization: np.ndarray) -> float:
    """Load per replica at 100 % utilisation: the median slope through the origin."""
    return float(np.median(load_per_replica / utilization))


def _day_bootstrap(days: np.ndarray, statistic, rng: np.random.Generator) -> tuple[float, float]:
    """95 % interval of ``statistic(rows)`` over days resampled with replacement."""
    unique = np.unique(days)
    rows_of = {d: np.flatnonzero(days == d) for d in unique}
    values = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        rows = np.concatenate([rows_of[d] for d in rng.choice(unique, len(unique), replace=True)])
        value = statistic(rows)
        if np.isfinite(value):
            values.append(value)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def learn_capacity(target: ScalingTarget, configured: float, history: pd.DataFrame | None, seed: int = 42) -> FleetValue:
    """Capacity per replica of ``target`` from its driver, replicas and utilisation series."""
    missing = _missing(target, history, ("metric", "current_replicas", "utilization_metric"))
    if missing:
        return FleetValue("capacity_per_replica", configured, "config", configured,
                          note=f"configured value: learning it needs {', '.join(missing)}")
    frame = pd.concat(
        {"load": history[target.metric], "replicas": history[REPLICAS_COLUMN],
         "utilization": history[target.utilization_metric]}, axis=1
    ).astype(float).dropna()
    frame = frame[(frame["replicas"] > 0) & (frame["utilization"] > 0) & (frame["load"] >= 0)]
    if len(frame) < MIN_CAPACITY_POINTS:
        return FleetValue("capacity_per_replica", configured, "config", configured, points=len(frame),
                          note=f"configured value: {len(frame)} usable points of load, replicas and utilisation, "
                               f"{MIN_CAPACITY_POINTS} needed")
    x = (frame["load"] / frame["replicas"]).to_numpy()
    u = frame["utilization"].to_numpy()
    rng = np.random.default_rng(seed)

    def capacity(rows: np.ndarray) -> float:
        return _robust_capacity(x[rows], u[rows])

    learned = capacity(np.arange(len(frame)))
    days = (frame.index.asi8 // pd.Timedelta("1D").value) if isinstance(frame.index, pd.DatetimeIndex) else np.zeros(len(frame))
    interval = _day_bootstrap(days, capacity, rng)
    backtest = _capacity_backtest(x, u, configured)
    return _guarded("capacity_per_replica", learned, interval, len(frame), configured, backtest,
                    far=abs(learned / configured - 1) > CAPACITY_GUARD_RAIL,
                    rail=f"more than {CAPACITY_GUARD_RAIL:.0%} from", unit="")


def _capacity_backtest(x: np.ndarray, u: np.ndarray, configured: float) -> dict:
    """Fit on the first 75 %, predict the last 25 %'s utilisation: learned vs configured capacity."""
    split = int(len(x) * 0.75)
    early = _robust_capacity(x[:split], u[:split])
    held = u[split:]
    return {
        "holdout_points": int(len(held)),
        "utilization_mae_learned": float(np.mean(np.abs(x[split:] / early - held))),
        "utilization_mae_config": float(np.mean(np.abs(x[split:] / configured - held))),
        "capacity_first_75pct": early,
    }


def learn_startup(target: ScalingTarget, history: pd.DataFrame | None, seed: int = 42) -> FleetValue:
    """p90 of the pods' start-to-ready seconds, or the configured ``startup_seconds``."""
    configured = float(target.startup_seconds)
    missing = _missing(target, history, ("startup_metric",))
    if missing:
        return FleetValue("startup_seconds", configured, "config", configured,
                          note=f"configured value: measuring it needs {', '.join(missing)}")
    starts = history[target.startup_metric].astype(float).dropna()
    starts = starts[starts > 0]
    if len(starts) < MIN_POD_STARTS:
        return FleetValue("startup_seconds", configured, "config", configured, points=len(starts),
                          note=f"configured value: {len(starts)} pod starts observed, {MIN_POD_STARTS} needed")
    values = starts.to_numpy()
    rng = np.random.default_rng(seed)
    p90 = float(np.quantile(values, START_QUANTILE))
    days = starts.index.asi8 // pd.Timedelta("1D").value
    interval = _day_bootstrap(days, lambda rows: float(np.quantile(values[rows], START_QUANTILE)), rng)
    half = len(values) // 2
    backtest = {  # the p90 of the first half, and the share of the second half's starts it covers
        "p90_first_half": float(np.quantile(values[:half], START_QUANTILE)),
        "coverage_second_half": float(np.mean(values[half:] <= np.quantile(values[:half], START_QUANTILE))),
    }
    ratio = p90 / configured if configured > 0 else math.inf
    return _guarded("startup_seconds", p90, interval, len(values), configured, backtest,
                    far=not (1 / STARTUP_GUARD_RAIL <= ratio <= STARTUP_GUARD_RAIL),
                    rail=f"over {STARTUP_GUARD_RAIL:g}x away from", unit=" s")


def _guarded(name, learned, interval, points, configured, backtest, far: bool, rail: str, unit: str) -> FleetValue:
    shown = f"{learned:.4g}{unit} (95% interval {interval[0]:.4g}-{interval[1]:.4g}, {points:,} points)"
    if not np.isfinite(learned) or learned <= 0:
        return FleetValue(name, configured, "config", configured, None, None, points, True,
                          "configured value: the fit gave no positive value; flagged for review", backtest)
    if far:
        return FleetValue(name, configured, "config", configured, learned, interval, points, True,
                          f"configured {configured:g}{unit} kept: learned {shown} is {rail} it, flagged for review",
                          backtest)
    if backtest and backtest.get("utilization_mae_learned", 0) > backtest.get("utilization_mae_config", math.inf):
        return FleetValue(name, configured, "config", configured, learned, interval, points, True,
                          f"configured {configured:g}{unit} kept: learned {shown} predicts the held-out "
                          f"utilisation worse than it, flagged for review", backtest)
    return FleetValue(name, learned, "learned", configured, learned, interval, points, False,
                      f"learned {shown}; configured {configured:g}{unit} is the prior", backtest)


def learn_fleet(tenant: TenantConfig, history: pd.DataFrame | None,
                replicas: dict[str, pd.Series | None] | None = None) -> dict[str, dict[str, FleetValue]]:
    """Per scaling target: the capacity per replica and start-up seconds the planner uses, from the
    tenant's metrics history and each service's replica history (``replica_history``)."""
    seed = tenant.training.seed
    learned = {}
    for t in tenant.scaling:
        observed = history
        series = (replicas or {}).get(t.service)
        if history is not None and series is not None:
            observed = history.assign(**{REPLICAS_COLUMN: series.reindex(history.index)})
        learned[t.service] = {
            "capacity_per_replica": learn_capacity(t, tenant.capacity_per_replica(t), observed, seed),
            "startup_seconds": learn_startup(t, history, seed),
        }
    return learned


def learn_fleet_dicts(tenant: TenantConfig, history: pd.DataFrame | None, source: MetricsSource | None) -> dict:
    """``learn_fleet`` with replica histories read from ``source``, as the planner stores it (dicts)."""
    replicas = {}
    if history is not None and source is not None:
        replicas = {t.service: replica_history(source, t, pd.DatetimeIndex(history.index)) for t in tenant.scaling}
    return {service: {k: v.to_dict() for k, v in values.items()}
            for service, values in learn_fleet(tenant, history, replicas).items()}


def fleet_summary(fleet: dict) -> str:
    """One line per service: each value in use and its source, e.g. for a promotion record."""
    return "; ".join(
        f"{service}: " + ", ".join(f"{name} {v['value']:.4g} ({v['source']}{', review' if v['review'] else ''})"
                                   for name, v in values.items())
        for service, values in fleet.items()
    )


def fleet_metrics(fleet: dict) -> dict[str, float]:
    """MLflow metrics of the learned values: value in use, learned value and interval, backtest."""
    out = {}
    for service, values in fleet.items():
        for name, v in values.items():
            prefix = f"{service}.{name}"
            out[f"{prefix}.value"] = v["value"]
            if v["learned"] is not None:
                out[f"{prefix}.learned"] = v["learned"]
                out[f"{prefix}.interval_low"], out[f"{prefix}.interval_high"] = v["interval"]
            out |= {f"{prefix}.backtest.{k}": float(x) for k, x in (v["backtest"] or {}).items()}
    return {k: v for k, v in out.items() if math.isfinite(v)}
