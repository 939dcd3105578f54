"""The capacity model behind /recommend: from a forecast to a replica count, every step shown.

Sizing uses an upper forecast quantile at a horizon that covers the lead time (pod start-up plus
the scale-up stabilisation window): a replica asked for now only serves once it is up, and sizing
for the mean would under-provision half the time.

Scaling down keeps what the forecast needs until the lead time and no longer: a replica removed now
stops serving at once, one asked for now serves after the lead time, so a need further ahead is met
by scaling up again in time. A reactive HPA holds its largest recent count for its scale-down window
because it cannot see the next minutes; holding the largest upper quantile over the window after the
lead time as well paid for a peak that the forecast already covers (``demand_to_size``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.base import SavableModel
from helios_pipelines.core.sources.base import MetricsSource, SourceError, grid
from helios_pipelines.core.tenants import MetricConfig, ScalingTarget, TenantConfig
from helios_pipelines.core.tenants.alerting import AlertThresholds

log = logging.getLogger(__name__)

# No workload has more; a larger "current" count is a client's mistake, not a cluster to size from.
MAX_CURRENT_REPLICAS = 1_000_000


def demand_to_size(expected: np.ndarray, upper: np.ndarray, lead_steps: int) -> dict[str, float]:
    """What ``CapacityPlanner.recommend`` sizes on (its keyword arguments), from the median and the
    sized quantile's forecasts of the steps after now (``[0]`` is the next step's): each at the lead
    time, and its largest value from now until then (what a scale-down must keep). /recommend and
    the event scorecards' replay both take them from here."""
    expected = np.asarray(expected, dtype=float)[:lead_steps]
    upper = np.asarray(upper, dtype=float)[:lead_steps]
    return {"demand_upper": float(upper[-1]), "demand_upper_window_max": float(np.nanmax(upper)),
            "demand_expected": float(expected[-1]), "demand_expected_window_max": float(np.nanmax(expected))}


@dataclass(frozen=True)
class Step:
    name: str
    value: float
    explanation: str


@dataclass
class Recommendation:
    service: str
    metric: str
    replicas: int
    current_replicas: int | None
    horizon_minutes: int
    utilization_at_recommendation: float
    share_of_max_capacity: float
    capacity_warning: bool
    capacity_critical: bool
    input_anomalous: bool
    steps: list[Step] = field(default_factory=list)
    # capacity_per_replica and startup_seconds in use: value, source (learned | config), note, interval
    planner_inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class CapacityPlanner(SavableModel):
    kind: ClassVar[str] = "capacity_planner"
    capability: ClassVar[str] = "capacity_planner"
    # Per service, the capacity_per_replica / startup_seconds values in use and where they came from
    # (core.ml.capacity_learning.FleetValue.to_dict()); empty for a planner of configured values only,
    # as bundles saved before learning existed load with.
    fleet: dict[str, dict[str, dict]] = {}
    # The tenant's learned recurring peaks (core.ml.peaks.PeakSchedule, as a dict; why here: that
    # module's docstring); empty for planners saved before peaks were learned.
    peaks: dict = {}

    def __init__(self, targets: list[ScalingTarget], capacity: dict[str, float], thresholds: AlertThresholds,
                 fleet: dict[str, dict[str, dict]] | None = None, peaks: dict | None = None):
        self.targets = {t.service: t for t in targets}
        self.capacity = dict(capacity)
        self.thresholds = thresholds
        self.fleet = dict(fleet or {})
        self.peaks = dict(peaks or {})

    @classmethod
    def from_tenant(cls, tenant: TenantConfig, fleet: dict[str, dict[str, dict]] | None = None,
                    peaks: dict | None = None) -> CapacityPlanner:
        """The tenant's planner; ``fleet`` (core.ml.capacity_learning.learn_fleet, as dicts) overrides the
        configured capacity per replica and start-up seconds with the values it says are in use; ``peaks``
        are its learned recurring peaks (core.ml.peaks.learn_peaks, as a dict)."""
        fleet = fleet or {}
        return cls(
            targets=list(tenant.scaling),
            capacity={
                t.service: fleet.get(t.service, {}).get("capacity_per_replica", {}).get("value", tenant.capacity_per_replica(t))
                for t in tenant.scaling
            },
            thresholds=tenant.alerts.thresholds,
            fleet=fleet,
            peaks=peaks,
        )

    def manifest(self) -> dict:
        return super().manifest() | {
            "services": {name: t.model_dump() | {"capacity_per_replica": self.capacity[name]} for name, t in self.targets.items()},
            "thresholds": self.thresholds.model_dump(),
            "fleet": self.fleet,
            "peaks": self.peaks,
        }

    def inputs(self, service: str) -> dict[str, dict]:
        """The capacity per replica and start-up seconds ``service`` is planned with, and their source."""
        t = self.targets[service]
        configured = {
            "capacity_per_replica": {"value": self.capacity[service], "source": "config", "note": "configured value"},
            "startup_seconds": {"value": float(t.startup_seconds), "source": "config", "note": "configured value"},
        }
        return configured | self.fleet.get(service, {})

    def startup_seconds(self, service: str) -> float:
        return float(self.inputs(service)["startup_seconds"]["value"])

    def target(self, service_or_metric: str) -> ScalingTarget:
        if service_or_metric in self.targets:
            return self.targets[service_or_metric]
        for target in self.targets.values():
            if target.metric == service_or_metric:
                return target
        known = ", ".join(sorted(self.targets)) or "(none configured)"
        raise KeyError(f"no scaling target for '{service_or_metric}'; services: {known}")

    def lead_time_minutes(self, service: str) -> int:
        target = self.targets[service]
        return max(1, math.ceil((self.startup_seconds(service) + target.behaviour.scale_up_window_s) / 60))

    def share_of_max_capacity(self, service: str, demand: float) -> float:
        """Capacity alerts measure the ceiling: how much of what max_replicas can serve ``demand`` needs."""
        return demand / (self.targets[service].max_replicas * self.capacity[service])

    def recommend(
        self,
        service: str,
        demand_upper: float,
        demand_upper_window_max: float,
        current_replicas: int | None = None,
        input_anomalous: bool = False,
        quantile_label: str = "upper",
        demand_expected: float | None = None,
        demand_expected_window_max: float | None = None,
    ) -> Recommendation:
        """Replicas for ``service``: enough for the expected load at the target utilisation, and for
        the upper quantile at the capacity-critical utilisation.

        Headroom is counted once. The target utilisation is the room the operator keeps for load
        nobody forecast; the quantile ``q`` states the risk taken with forecast error: at most 1 - q
        of the time should the load push utilisation past ``capacity_critical`` (the SLO threshold
        the scorecards count minutes above). Sizing the upper quantile at the target utilisation
        paid for both at once: replicas for a load the forecast already said was unlikely, at a
        utilisation kept for surprises.

        ``demand_upper`` / ``demand_expected``: the upper quantile and the point forecast at the
        lead-time horizon; ``..._window_max``: their largest values from now until the lead time
        (``demand_to_size`` gives all four), which a scale-down keeps: replicas removed now cannot be back before
        then. All include the scheduled events in force (serving applies them to forecasters that
        do not model events). A caller with one forecast only (no point forecast) gives the upper
        quantile alone, and it is sized at the target utilisation as the expected load.
        """
        t = self.targets[service]
        b = t.behaviour
        if current_replicas is not None and not 0 <= current_replicas <= MAX_CURRENT_REPLICAS:
            raise ValueError(f"current_replicas must be between 0 and {MAX_CURRENT_REPLICAS}, got {current_replicas}")
        if demand_expected is None:
            demand_expected, demand_expected_window_max = demand_upper, demand_upper_window_max
        elif demand_expected_window_max is None:
            demand_expected_window_max = demand_expected
        per_replica = self.capacity[service]
        usable = per_replica * t.target_utilization
        critical = self.thresholds.capacity_critical
        inputs = self.inputs(service)
        lead = self.lead_time_minutes(service)
        steps = [
            Step("forecast", demand_upper, f"{quantile_label} forecast of {t.metric} at the lead time, scheduled events included"),
            Step("expected_forecast", demand_expected, f"point forecast of {t.metric} at the lead time"),
            Step("lead_time", lead, f"ceil(({self.startup_seconds(service):.4g} s pod start-up + "
                                    f"{b.scale_up_window_s} s scale-up window) / 60): start-up {inputs['startup_seconds']['note']}"),
        ]
        demand = demand_upper
        steps.append(
            Step(
                "usable_capacity_per_replica",
                usable,
                f"{per_replica:.4g} per replica ({inputs['capacity_per_replica']['note']}) x target utilisation {t.target_utilization:g}",
            )
        )

        def replicas_for(expected: float, upper: float) -> int:
            if usable <= 0:
                return t.max_replicas
            return max(math.ceil(expected / usable - 1e-9), math.ceil(upper / (per_replica * critical) - 1e-9))

        needed = replicas_for(demand_expected, demand_upper)
        steps.append(Step("replicas_for_forecast", needed,
                          f"max(ceil({demand_expected:.4g} / {usable:.4g}), ceil({demand_upper:.4g} / ({per_replica:.4g} x "
                          f"capacity_critical {critical:g}))): the point forecast at the target utilisation, "
                          f"the {quantile_label} under the critical one"))
        hold_for = replicas_for(demand_expected_window_max, demand_upper_window_max)
        desired = needed
        if current_replicas is not None and needed < current_replicas:
            # Keep what is needed until replicas asked for now could serve.
            desired = max(needed, min(current_replicas, hold_for))
            steps.append(
                Step(
                    "scale_down_stabilised",
                    desired,
                    f"max needed from now until the {lead} min lead time is {hold_for}",
                )
            )
        clamped = min(max(desired, t.min_replicas), t.max_replicas)
        steps.append(Step("clamped", clamped, f"within min {t.min_replicas} and max {t.max_replicas} replicas"))
        replicas = clamped
        if current_replicas is not None:
            if replicas > current_replicas:
                # HPA allows +scale_up_percent every scale_up_period_s; the lead time allows several periods.
                periods = max(1, (self.lead_time_minutes(service) * 60) // b.scale_up_period_s)
                reachable = math.floor(current_replicas * (1 + b.scale_up_percent / 100) ** periods)
                reachable = max(reachable, current_replicas + 1)
                replicas = min(replicas, reachable)
                steps.append(
                    Step(
                        "scale_up_rate_limited",
                        replicas,
                        f"+{b.scale_up_percent:g}% per {b.scale_up_period_s}s over {periods} periods from {current_replicas}",
                    )
                )
            elif replicas < current_replicas:
                floor = math.ceil(current_replicas * (1 - b.scale_down_percent / 100))
                replicas = max(replicas, min(floor, current_replicas - 1))
                steps.append(
                    Step(
                        "scale_down_rate_limited",
                        replicas,
                        f"-{b.scale_down_percent:g}% per {b.scale_down_period_s}s from {current_replicas}",
                    )
                )
        if input_anomalous and current_replicas is not None:
            replicas = max(replicas, current_replicas)
            steps.append(
                Step("anomaly_hold", replicas, "latest input looks anomalous: no scale-down on a possible glitch")
            )
        # Last, as the HPA does: a workload above max goes to max, below min to min, whatever the
        # rate limits or the hold would keep.
        replicas = min(max(replicas, t.min_replicas), t.max_replicas)
        steps.append(Step("bounded", replicas, f"the answer within min {t.min_replicas} and max {t.max_replicas} replicas"))
        utilization = demand / (replicas * per_replica) if replicas else math.inf
        steps.append(
            Step("utilization", utilization, f"{demand:.4g} / ({replicas} x {per_replica:g}) at the recommended size")
        )
        ceiling = self.share_of_max_capacity(service, demand)
        steps.append(
            Step("share_of_max_capacity", ceiling, f"{demand:.4g} / ({t.max_replicas} x {per_replica:g}) at max replicas")
        )
        return Recommendation(
            service=service,
            metric=t.metric,
            replicas=int(replicas),
            current_replicas=current_replicas,
            horizon_minutes=self.lead_time_minutes(service),
            utilization_at_recommendation=float(utilization),
            share_of_max_capacity=float(ceiling),
            capacity_warning=ceiling >= self.thresholds.capacity_warning,
            capacity_critical=ceiling >= self.thresholds.capacity_critical,
            input_anomalous=input_anomalous,
            steps=steps,
            planner_inputs=inputs,
        )


def observed_replicas(source: MetricsSource, target: ScalingTarget, end: pd.Timestamp, step: pd.Timedelta,
                      lookback_steps: int = 5) -> int | None:
    """The workload's replica count at the last complete step, read from the tenant's source with the
    target's ``current_replicas`` series; None when it has none configured, no recent point, or a
    value no workload can have (logged, never trusted)."""
    if target.current_replicas is None:
        return None
    config = MetricConfig(series=target.current_replicas.series, query=target.current_replicas.query)
    try:
        values = source.fetch_series(f"{target.service} replicas", config, grid(end - step * lookback_steps, end + step, step))
    except SourceError as exc:
        log.warning("replicas of '%s' not read: %s", target.service, exc)
        return None
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return None
    latest = float(values.iloc[-1])
    if not (math.isfinite(latest) and 0 <= latest <= MAX_CURRENT_REPLICAS):
        log.warning("replicas of '%s' read as %r: ignored", target.service, latest)
        return None
    return int(round(latest))
