"""Capacity and scaling alerts as episodes: ``capacity_warning``, ``capacity_critical`` and
``scaling_recommended``, each fired once when its condition starts and resolved once when it ends.

Evaluated once per step per scaled service (and metric with levels) from what the service publishes (serving's watch passes
the readings in):

- ``capacity_warning`` / ``capacity_critical``: the forecast's upper bound, at its highest within the
  metric's longest forecast horizon, needs at least the configured share (``alerts.thresholds``) of
  what ``max_replicas`` can serve;
- ``scaling_recommended``: ``helios_desired_replicas`` differs from the current replica count by more
  than ``alerts.thresholds.scaling_step`` of it; it resolves when the workload has followed;
- per metric with levels (``warning_above`` / ``critical_above``, the guide's ``warning_threshold`` /
  ``critical_threshold`` and ``alert_threshold_ms``): ``capacity_warning`` / ``capacity_critical``
  while the metric is above the level: a forecast metric's upper bound at its highest within its
  longest horizon (as for services), any other metric's latest observed value. Its episodes are the
  metric's (subject: the metric's name), apart from any service's.

The episode change and its alert are written in one transaction (``alerts.enqueue``, the outbox);
the partial unique index on open episodes keeps one open per tenant, event and subject even when
several replicas evaluate the same step (the loser re-reads and finds it open).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from helios_pipelines.core.ops import alerts
from helios_pipelines.core.ops.store import Store, Transaction
from helios_pipelines.core.ops.store.schema import AlertEpisode
from helios_pipelines.core.tenants import TenantConfig
from helios_pipelines.core.tenants.base import format_horizon

OPENED, RESOLVED = "opened", "resolved"
RECENT_STEPS = 5  # a metric without a point in its last few steps has no level reading


@dataclass(frozen=True)
class CapacityReading:
    """One scaled service at one step."""

    service: str
    share_of_max_capacity: float  # peak upper bound within the horizon / what max_replicas serve
    horizon: str  # the horizon the peak was looked for in, e.g. "1h"
    desired_replicas: int
    current_replicas: int | None


@dataclass(frozen=True)
class LevelReading:
    """One metric with levels at one step."""

    metric: str
    value: float
    basis: str  # what the value is, e.g. "forecast upper bound within 1h" or "latest value"


@dataclass(frozen=True)
class Condition:
    event: str
    subject: str  # the service, or the metric of a level
    active: bool
    value: float  # what the episode's peak tracks
    summary: str
    details: dict


@dataclass(frozen=True)
class EpisodeChange:
    event: str
    subject: str
    change: str  # opened or resolved
    episode_id: int


def level_readings(tenant: TenantConfig, history: pd.DataFrame, forecast: Callable[[str, int], pd.DataFrame],
                   forecast_metrics: Collection[str]) -> list[LevelReading]:
    """Each metric with levels: the peak of its forecast's upper bound (``forecast(metric, minutes)``)
    within its longest horizon when it is among ``forecast_metrics``, else its latest value in
    ``history`` (none when its last few steps hold no point)."""
    readings = []
    for name, metric in sorted(tenant.level_metrics.items()):
        if name in forecast_metrics:
            longest = max(metric.forecast.horizons)
            readings.append(LevelReading(name, float(forecast(name, longest)["yhat_upper"].max()),
                                         f"forecast upper bound within {format_horizon(longest)}"))
            continue
        recent = history[name].iloc[-RECENT_STEPS:].dropna() if name in history else pd.Series(dtype=float)
        if not recent.empty:
            readings.append(LevelReading(name, float(recent.iloc[-1]), "latest value"))
    return readings


def _level_conditions(tenant: TenantConfig, reading: LevelReading) -> list[Condition]:
    metric = tenant.metrics[reading.metric]
    unit = f" {metric.unit}" if metric.unit else ""
    found = []
    for event, level, word in (("capacity_critical", metric.critical_above, "critical"),
                               ("capacity_warning", metric.warning_above, "warning")):
        if level is not None:
            found.append(Condition(
                event, reading.metric, reading.value > level, reading.value,
                f"{reading.metric}: {reading.basis} {reading.value:.4g}{unit} is above its {word} level {level:g}{unit}",
                {"metric": reading.metric, "value": round(reading.value, 6), "basis": reading.basis, "level": level}))
    return found


def conditions(tenant: TenantConfig, reading: CapacityReading | LevelReading) -> list[Condition]:
    """The conditions of one reading, active or not."""
    if isinstance(reading, LevelReading):
        return _level_conditions(tenant, reading)
    t = tenant.alerts.thresholds
    share, service = reading.share_of_max_capacity, reading.service
    capacity = {"service": service, "share_of_max_capacity": round(share, 4), "horizon": reading.horizon}
    found = [
        Condition("capacity_critical", service, share >= t.capacity_critical, share,
                  f"{service}: forecast needs {share:.0%} of max capacity within {reading.horizon} "
                  f"(critical at {t.capacity_critical:.0%})", capacity | {"threshold": t.capacity_critical}),
        Condition("capacity_warning", service, share >= t.capacity_warning, share,
                  f"{service}: forecast needs {share:.0%} of max capacity within {reading.horizon} "
                  f"(warning at {t.capacity_warning:.0%})", capacity | {"threshold": t.capacity_warning}),
    ]
    current, desired = reading.current_replicas, reading.desired_replicas
    if current is not None:
        step = abs(desired - current) / max(current, 1)
        found.append(Condition(
            "scaling_recommended", service, desired != current and step > t.scaling_step, float(desired),
            f"{service}: scale from {current} to {desired} replicas",
            {"service": service, "current_replicas": current, "desired_replicas": desired,
             "step": round(step, 4), "threshold": t.scaling_step}))
    return found


def record_readings(store: Store, tenant: TenantConfig, readings: list[CapacityReading | LevelReading], at: datetime,
                    now: datetime | None = None) -> list[EpisodeChange]:
    """Fold one step's readings into the tenant's episodes; route the alerts of those opened or resolved."""
    found = [c for reading in readings for c in conditions(tenant, reading)]
    # Another replica may open the same episode first: the next round re-reads it.
    return store.retry_on_conflict(lambda session: _record_once(store, session, tenant, found, at, now))


def _record_once(store: Store, session: Transaction, tenant: TenantConfig, found: list[Condition], at: datetime,
                 now: datetime | None) -> list[EpisodeChange]:
    customer = store.active_customer(session, tenant.id)
    changes, routed = [], []
    for condition in found:
        episode = store.open_alert_episode(session, customer.id, condition.event, condition.subject)
        if condition.active and episode is None:
            episode = store.add_alert_episode(session, customer_id=customer.id, event=condition.event,
                                              subject=condition.subject, opened_at=at, last_seen_at=at,
                                              peak=condition.value, description=condition.summary)
            changes.append(EpisodeChange(condition.event, condition.subject, OPENED, episode.id))
            routed.append(_alert(tenant, episode, condition, alerts.TRIGGER, at))
        elif condition.active and at > episode.last_seen_at:
            episode.last_seen_at = at
            episode.peak = max(episode.peak, condition.value)
        elif not condition.active and episode is not None and at > episode.last_seen_at:
            episode.resolved_at = at
            changes.append(EpisodeChange(condition.event, condition.subject, RESOLVED, episode.id))
            routed.append(_alert(tenant, episode, condition, alerts.RESOLVE, at))
    alerts.enqueue(store, session, tenant, routed, now)
    return changes


def _alert(tenant: TenantConfig, episode: AlertEpisode, condition: Condition, action: str, at: datetime) -> alerts.Alert:
    summary = episode.description if action == alerts.TRIGGER else f"{episode.description}: over"
    return alerts.Alert(
        tenant=tenant.id,
        event=condition.event,
        alert_key=f"{condition.event}/{tenant.id}/{condition.subject}/{episode.id}",
        summary=summary,
        occurred_at=at,
        action=action,
        details=condition.details | {"episode_id": episode.id, "opened_at": episode.opened_at.isoformat()},
    )
