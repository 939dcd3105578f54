"""The embedded default source: a seeded, realistic simulation of a tenant's monitoring.

Every value is a deterministic function of (seed, series, timestamp): noise, gaps, counter resets and
injected anomalies are drawn per UTC day from generators keyed by the seed, so any window of the
same tenant gives the same numbers where windows overlap, and the service sees the same "live" data
the pipeline trained on. Ground truth of the injected anomalies is kept (``anomalies``) so detection
can be scored.

Two profiles:
- gaming: concurrent players follow each region's evening peak in its own time zone (DST included),
  weekends and scheduled events (with ramps) multiply them; matches, queue, server utilisation, CPU,
  memory, request rate, latency and database metrics all follow from the players.
- ecommerce: request rate with lunchtime and evening peaks, checkout latency and CPU following it.

Besides the seeded anomalies, an operator can inject an incident at a chosen time
(``helios simulator inject``, for a demo or a drill): incidents are kept in
``$HELIOS_HOME/simulator/<tenant>-incidents.json`` and every reader of the tenant's simulated
monitoring (the pipeline, the service) sees them, as it would see a real incident.

One module past 400 lines on purpose: every series is derived from the same simulated players and
fleet inside ``Simulator``; split across files, that one model of a customer would be read in pieces.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.events import EventSchedule, ramp_weight
from helios_pipelines.core.settings import helios_home
from helios_pipelines.core.sources.base import MetricsSource, counter_to_rate
from helios_pipelines.core.tenants import MetricConfig, SimulatorSource, TenantConfig

DAY = pd.Timedelta("1D")
RAMP = pd.Timedelta("30min")

# The simulated fleet's ground truth, so capacity and lead-time learning can be checked against it.
# Load one replica carries at 100 % utilisation (players for gaming, requests/s for ecommerce): set
# apart from the demo configs' 100 and 50 on purpose, as a customer's hand-set number would be.
TRUE_CAPACITY_PER_REPLICA = {"gaming": 92.0, "ecommerce": 46.0}
# Pod start-to-ready seconds are log-normal: median and log-scale spread per profile.
POD_START_MEDIAN_SECONDS = {"gaming": 110.0, "ecommerce": 70.0}
POD_START_SIGMA = 0.3
# Creations are reported this long after they happen, when their pods are ready (see the tenants' query).
POD_REPORT_DELAY = pd.Timedelta("10min")
# The utilisation the customer's reactive fleet aims at (its own HPA, not Helios).
FLEET_TARGET_UTILIZATION = {"gaming": 0.75, "ecommerce": 0.8}
MIN_FLEET = {"gaming": 5, "ecommerce": 2}


def true_pod_start_p90_seconds(profile: str) -> float:
    """The 90th percentile of the simulated pods' start-to-ready time (log-normal quantile)."""
    return POD_START_MEDIAN_SECONDS[profile] * float(np.exp(POD_START_SIGMA * 1.2815515655446004))


def _key(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _daily_rng(seed: int, stream: str, day: int) -> np.random.Generator:
    return np.random.default_rng([seed, _key(stream), day])


def _day_numbers(index: pd.DatetimeIndex) -> np.ndarray:
    return (index.asi8 // DAY.value).astype(np.int64)


@dataclass(frozen=True)
class InjectedAnomaly:
    metric: str  # logical metric most affected
    kind: str  # outage, latency_spike, queue_spike, cpu_spike, traffic_surge
    start: pd.Timestamp
    end: pd.Timestamp
    magnitude: float


# Anomaly kinds per profile: which series they hit and how (multiplicative effects).
ANOMALY_KINDS = {
    "gaming": ["outage", "latency_spike", "queue_spike", "cpu_spike"],
    "ecommerce": ["outage", "latency_spike", "cpu_spike", "traffic_surge"],
}
ANOMALY_TARGET_SERIES = {
    "outage": "players_or_requests",
    "latency_spike": "latency",
    "queue_spike": "game_server_queue_length",
    "cpu_spike": "container_cpu_usage_seconds_total",
    "traffic_surge": "players_or_requests",
}


def incidents_path(tenant_id: str) -> Path:
    return helios_home() / "simulator" / f"{tenant_id}-incidents.json"


def injected_incidents(tenant_id: str) -> list[InjectedAnomaly]:
    path = incidents_path(tenant_id)
    if not path.exists():
        return []
    return [
        InjectedAnomaly(i["metric"], i["kind"], pd.Timestamp(i["start"]), pd.Timestamp(i["end"]), float(i["magnitude"]))
        for i in json.loads(path.read_text())
    ]


def inject_incident(tenant: TenantConfig, kind: str, start: pd.Timestamp, minutes: int,
                    magnitude: float) -> InjectedAnomaly:
    """Add an incident of ``kind`` to the tenant's simulated monitoring (kept with the earlier ones)."""
    if not isinstance(tenant.source, SimulatorSource):
        raise ValueError(f"tenant '{tenant.id}' does not use the simulator source ({tenant.source.type})")
    kinds = ANOMALY_KINDS[tenant.source.profile]
    if kind not in kinds:
        raise ValueError(f"incident kind '{kind}' does not exist in the {tenant.source.profile} profile; kinds: {', '.join(kinds)}")
    if minutes <= 0 or magnitude <= 1:
        raise ValueError(f"an incident needs minutes > 0 and magnitude > 1, got {minutes} and {magnitude}")
    metric = Simulator(tenant)._anomaly_metric(kind)
    if metric is None:
        raise ValueError(f"tenant '{tenant.id}' has no metric a {kind} shows up in")
    step = tenant.step_timedelta
    start = pd.Timestamp(start)
    start = (start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")).ceil(step)
    incident = InjectedAnomaly(metric, kind, start, start + pd.Timedelta(minutes=minutes), float(magnitude))
    path = incidents_path(tenant.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = [{"metric": i.metric, "kind": i.kind, "start": i.start.isoformat(), "end": i.end.isoformat(),
             "magnitude": i.magnitude} for i in [*injected_incidents(tenant.id), incident]]
    # Written whole and renamed: a service reading the file mid-write sees the old list or the new one.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(kept, handle, indent=1)
    os.replace(handle.name, path)
    return incident


class Simulator(MetricsSource):
    def __init__(self, tenant: TenantConfig, now: pd.Timestamp | None = None):
        super().__init__(tenant)
        if not isinstance(tenant.source, SimulatorSource):
            raise TypeError(f"tenant '{tenant.id}' does not use the simulator source")
        self.config: SimulatorSource = tenant.source
        self.step = tenant.step_timedelta
        self.events = EventSchedule(tenant.events)
        self._now = now

    # ---- MetricsSource ------------------------------------------------------------------------
    def now(self) -> pd.Timestamp:
        now = self._now if self._now is not None else pd.Timestamp.now(tz="UTC")
        return pd.Timestamp(now).floor(self.step)

    def list_metrics(self) -> list[str]:
        return sorted(m.series for m in self.tenant.metrics.values())

    def fetch_series(self, metric: str, config: MetricConfig, index: pd.DatetimeIndex) -> pd.Series:
        if len(index) == 0:
            return pd.Series(dtype=float, index=index)
        if config.kind == "counter":
            # One extra point before the window so the first rate is defined.
            extended = index.insert(0, index[0] - self.step)
            native = self.native_frame(extended)[config.series]
            return counter_to_rate(native, self.step).iloc[1:]
        native = self.native_frame(index)
        if config.series not in native:
            # A series no tenant metric names (the scaled workload's replica count): simulated alike.
            series = pd.Series(self._series(config, index, self._drivers(index)), index=index)
            return series.mask(self._gap_mask(index))
        return native[config.series]

    def current_values(self, metrics: list[str] | None = None) -> dict[str, float]:
        end = self.now() + self.step
        frame = self.fetch(end - 5 * self.step, end, metrics)
        return {name: float(frame[name].dropna().iloc[-1]) if frame[name].notna().any() else float("nan") for name in frame}

    # ---- the simulation -----------------------------------------------------------------------
    def native_frame(self, index: pd.DatetimeIndex) -> pd.DataFrame:
        """Every configured series in the source's own form (counters cumulative), with gaps."""
        index = pd.DatetimeIndex(index)
        drivers = self._drivers(index)
        columns = {}
        for config in self.tenant.metrics.values():
            columns[config.series] = self._series(config, index, drivers)
        frame = pd.DataFrame(columns, index=index)
        frame[self._gap_mask(index)] = np.nan
        return frame

    def _noise(self, stream: str, index: pd.DatetimeIndex, smooth: int = 1) -> np.ndarray:
        """Standard-normal noise fixed per timestamp, optionally a moving average over ``smooth`` points."""
        step_ns = self.step.value
        first = index[0].value - (smooth - 1) * step_ns
        positions = np.arange(first, index[-1].value + step_ns, step_ns)
        days = positions // DAY.value
        out = np.empty(positions.size)
        per_day = DAY.value // step_ns
        for day in np.unique(days):
            block = _daily_rng(self.config.seed, stream, int(day)).standard_normal(per_day)
            mask = days == day
            slot = (positions[mask] - day * DAY.value) // step_ns
            out[mask] = block[slot]
        if smooth > 1:
            kernel = np.ones(smooth) / np.sqrt(smooth)  # keeps unit variance
            out = np.convolve(out, kernel, mode="valid")
        wanted = (index.asi8 - first) // step_ns - (smooth - 1)
        return out[wanted]

    def regional_profile(self, index: pd.DatetimeIndex) -> np.ndarray:
        """The demand's daily and weekly shape on the regions' clocks (no noise, growth or events): the
        ground truth a learned daily peak is checked against."""
        regions = self.tenant.regions or []
        zones = [(r.timezone, r.share) for r in regions] or [(self.tenant.timezone, 1.0)]
        total = np.zeros(len(index))
        for zone, share in zones:
            local = index.tz_convert(zone)
            hour = local.hour + local.minute / 60.0
            dow = local.dayofweek
            if self.config.profile == "gaming":
                # Trough at 05:00, evening peak around 21:00 local.
                daily = 0.55 - 0.40 * np.cos(2 * np.pi * (hour - 5) / 24) + 0.22 * np.exp(-((hour - 21) ** 2) / 6)
                weekly = np.where(dow >= 5, 1.18, np.where((dow == 4) & (hour >= 17), 1.10, 1.0))
            else:
                # Lunchtime and evening shopping peaks, quiet nights, busier Sundays.
                daily = (
                    0.25
                    + 0.55 * np.exp(-((hour - 12.5) ** 2) / 5)
                    + 0.75 * np.exp(-((hour - 20) ** 2) / 4)
                    + 0.15 * np.clip(np.sin(np.pi * (hour - 7) / 16), 0, None)
                )
                weekly = np.where(dow == 6, 1.15, np.where(dow == 5, 1.05, 1.0))
            total += share * daily * weekly
        return total

    def _event_effect(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Realised event multiplier with 30-minute ramps in and out.

        The realised effect of an event kind differs from the configured estimate (drawn once per
        kind from the seed), as it does in life: the forecaster has to learn it from past events.
        """
        effect = np.ones(len(index))
        if len(index) == 0:
            return effect
        for occ in self.events.occurrences(index[0] - RAMP, index[-1] + RAMP):
            realised_gap = np.random.default_rng([self.config.seed, _key("event", occ.kind)]).uniform(0.75, 1.05)
            peak = 1 + (occ.multiplier - 1) * realised_gap
            # The simulated world ramps every event over RAMP, whatever the config believes.
            effect *= 1 + (peak - 1) * ramp_weight(index, occ.start, occ.end, RAMP)
        return effect

    def anomalies(self, start: pd.Timestamp, end: pd.Timestamp) -> list[InjectedAnomaly]:
        """Ground truth of the anomalies injected in [start, end)."""
        found = []
        kinds = ANOMALY_KINDS[self.config.profile]
        first_day = int(pd.Timestamp(start).value // DAY.value) - 1
        last_day = int(pd.Timestamp(end).value // DAY.value)
        for day in range(first_day, last_day + 1):
            rng = _daily_rng(self.config.seed, "anomalies", day)
            for _ in range(rng.poisson(self.config.anomalies_per_week / 7)):
                kind = kinds[rng.integers(len(kinds))]
                begin = pd.Timestamp(day * DAY.value, tz="UTC") + pd.Timedelta(minutes=int(rng.integers(0, 1440)))
                begin = begin.ceil(self.step)
                length = pd.Timedelta(minutes=int(rng.integers(10, 40)))
                magnitude = float(rng.uniform(2.5, 4.0))
                metric = self._anomaly_metric(kind)
                if metric is not None and begin < end and begin + length > start:
                    found.append(InjectedAnomaly(metric, kind, begin, begin + length, magnitude))
        found += [i for i in injected_incidents(self.tenant.id) if i.start < end and i.end > start]
        return sorted(found, key=lambda a: a.start)

    def _anomaly_metric(self, kind: str) -> str | None:
        """The logical metric an anomaly kind shows up in first, if the tenant has one."""
        target = ANOMALY_TARGET_SERIES[kind]
        wanted = {
            "players_or_requests": ["game_server_active_players", "http_requests_total"],
            "latency": ["game_server_latency_ms", "checkout_request_duration_seconds", "http_request_duration_seconds"],
        }.get(target, [target])
        for series in wanted:
            for name, metric in self.tenant.metrics.items():
                if metric.series == series:
                    return name
        return None

    def _anomaly_effects(self, index: pd.DatetimeIndex) -> dict[str, np.ndarray]:
        effects = {kind: np.ones(len(index)) for kind in ("outage", "latency_spike", "queue_spike", "cpu_spike", "traffic_surge")}
        for anomaly in self.anomalies(index[0], index[-1] + self.step):
            inside = (index >= anomaly.start) & (index < anomaly.end)
            if anomaly.kind == "outage":
                effects["outage"][inside] *= 1 / anomaly.magnitude  # a region drops out
            else:
                effects[anomaly.kind][inside] *= anomaly.magnitude
        return effects

    def _demand(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Players (gaming) or requests per second (ecommerce) before any anomaly."""
        # Slow organic growth, a function of absolute time so overlapping windows agree.
        growth = 1 + 0.002 * (index.asi8 / DAY.value - 20000)
        base = self.config.base_players if self.config.profile == "gaming" else self.config.base_requests
        return (
            base
            * self.regional_profile(index)
            * self._event_effect(index)
            * np.clip(1 + 0.04 * self._noise("load", index, smooth=15), 0.5, None)
            * growth
            / 1.1
        )

    def _fleet(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Replicas of the customer's reactive fleet: sized on demand as it was ten minutes earlier
        (gaming; the lag a forecast removes) or on current requests, surges included (ecommerce)."""
        profile = self.config.profile
        if profile == "gaming":
            sized_for = self._demand(index - pd.Timedelta("10min"))
        else:
            effects = self._anomaly_effects(index)
            sized_for = self._demand(index) * effects["outage"] * effects["traffic_surge"]
        usable = TRUE_CAPACITY_PER_REPLICA[profile] * FLEET_TARGET_UTILIZATION[profile]
        return np.maximum(MIN_FLEET[profile], np.ceil(sized_for / usable))

    def _drivers(self, index: pd.DatetimeIndex) -> dict[str, np.ndarray]:
        anomalies = self._anomaly_effects(index)
        demand = self._demand(index) * anomalies["outage"] * anomalies["traffic_surge"]
        replicas = self._fleet(index)
        utilization = demand / (replicas * TRUE_CAPACITY_PER_REPLICA[self.config.profile])
        if self.config.profile == "gaming":
            players = demand
            requests = 0.05 * players
        else:
            requests = players = demand
        return {"players": players, "utilization": utilization, "requests": requests, "replicas": replicas, **anomalies}

    def _pod_start_to_ready(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Start-to-ready seconds of the pods created one ``POD_REPORT_DELAY`` before each step (NaN
        when the fleet did not grow then).

        Pods are created where the fleet grows; one step's new pods share one draw (same node pool,
        same image pull). Reporting creations a fixed delay later, when every pod is ready, gives one
        value per creation step, as the tenant's kube-state-metrics query does.
        """
        profile = self.config.profile
        created_at = index - POD_REPORT_DELAY
        fleet = self._fleet(created_at.insert(0, created_at[0] - self.step))
        created = np.diff(fleet) > 0
        seconds = POD_START_MEDIAN_SECONDS[profile] * np.exp(POD_START_SIGMA * self._noise("pod_start", created_at))
        # A pod not ready within the delay is stuck (an incident), not a start-up time.
        return np.where(created & (seconds < POD_REPORT_DELAY.total_seconds()), seconds, np.nan)

    def _series(self, config: MetricConfig, index: pd.DatetimeIndex, d: dict[str, np.ndarray]) -> np.ndarray:
        noise = self._noise(config.series, index, smooth=3)
        players, util, requests = d["players"], d["utilization"], d["requests"]
        pressure = np.clip(util - 0.7, 0, None)
        name = config.series
        if name == "game_server_active_players":
            value = players * (1 + 0.01 * noise)
        elif name == "game_server_matches_in_progress":
            value = players / 10 * (1 + 0.02 * noise)
        elif name == "game_server_queue_length":
            value = (0.004 * players * (1 + 25 * pressure) * (1 + 0.1 * noise)) * d["queue_spike"]
        elif name in ("game_server_utilization", "cpu_utilization_ratio"):
            value = util * (1 + 0.01 * noise)
        elif name == "kube_deployment_status_replicas":
            return d["replicas"].astype(float)  # kube-state-metrics' count of the reactive fleet: whole pods
        elif name == "kube_pod_start_to_ready_seconds":
            return self._pod_start_to_ready(index)
        elif name == "game_server_latency_ms":
            value = (28 + 160 * pressure**1.5 + 2.5 * noise) * d["latency_spike"]
        elif name in ("http_request_duration_seconds", "checkout_request_duration_seconds"):
            base = 0.35 if name.startswith("checkout") else 0.08
            value = (base + 0.6 * base * pressure + 0.04 * base * noise) * d["latency_spike"]
        elif name == "container_cpu_usage_seconds_total":
            cores = (2 + 0.0021 * players if self.config.profile == "gaming" else 1 + 0.01 * requests)
            return self._counter(config.series, index, cores * (1 + 0.03 * noise) * d["cpu_spike"])
        elif name == "http_requests_total":
            return self._counter(config.series, index, requests * (1 + 0.02 * noise))
        elif name == "container_memory_usage_bytes":
            value = 2.5e9 + 1.6e5 * players + 4e7 * noise
        elif name == "pg_stat_activity_count":
            value = np.round(18 + players / 600 + 1.5 * noise)
        elif name == "pg_database_size_bytes":
            days = index.asi8 / DAY.value
            value = 4.0e10 + 2.0e8 * (days - 20000) + 1e6 * noise
        else:
            # A series the simulator has no model for: a generic daily load-following gauge.
            value = 100 * (d["players"] / max(float(np.nanmean(d["players"])), 1e-9)) * (1 + 0.02 * noise)
            if config.kind == "counter":
                return self._counter(config.series, index, value)
        return np.clip(value, 0, None)

    def _counter(self, stream: str, index: pd.DatetimeIndex, rate: np.ndarray) -> np.ndarray:
        """A cumulative counter with the given per-second rate that resets when a process restarts.

        Each UTC day holds one restart at a seeded minute; the counter restarts from zero there. The
        value before the first restart in the window carries a deterministic offset, as a long-lived
        process's counter would.
        """
        increments = np.clip(rate, 0, None) * self.step.total_seconds()
        days = _day_numbers(index)
        reset_at = np.zeros(len(index), dtype=bool)
        for day in np.unique(days):
            minute = int(_daily_rng(self.config.seed, stream + "/reset", int(day)).integers(0, 1440))
            moment = pd.Timestamp(int(day) * DAY.value, tz="UTC") + pd.Timedelta(minutes=minute)
            reset_at |= index == moment.ceil(self.step)
        segment = np.cumsum(reset_at)
        counter = np.empty(len(index))
        for s in np.unique(segment):
            mask = segment == s
            offset = 0.0 if reset_at[mask][0] else 1e6 + (_key(stream) % 1000) * 1e3
            counter[mask] = offset + np.cumsum(increments[mask])
        return counter

    def _gap_mask(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Short scrape gaps (1-5 points) at seeded places; a gap hits every series of the target."""
        mask = np.zeros(len(index), dtype=bool)
        if self.config.gap_share == 0 or len(index) == 0:
            return mask
        per_day = int(DAY / self.step)
        expected = self.config.gap_share * per_day / 3
        days = _day_numbers(index)
        for day in np.unique(days):
            rng = _daily_rng(self.config.seed, "gaps", int(day))
            for _ in range(rng.poisson(expected)):
                start = pd.Timestamp(int(day) * DAY.value, tz="UTC") + self.step * int(rng.integers(0, per_day))
                length = int(rng.integers(1, 6))
                mask |= (index >= start) & (index < start + self.step * length)
        return mask


def history_window(tenant: TenantConfig, as_of: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of the training window ending at ``as_of`` (floored to the step)."""
    end = pd.Timestamp(as_of).floor(tenant.step_timedelta)
    return end - pd.Timedelta(days=tenant.training.history_days), end


