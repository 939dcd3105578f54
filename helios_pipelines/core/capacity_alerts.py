"""Capacity and scaling alerts as episodes: ``capacity_warning``, ``capacity_critical`` and
``scaling_recommended``, each fired once when its condition starts and resolved once when it ends.

Evaluated once per step per scaled service from what the service publishes (serving's watch passes
the readings in):

- ``capacity_warning`` / ``capacity_critical``: the forecast's upper bound, at its highest within the
  metric's longest forecast horizon, needs at least the configured share (``alerts.thresholds``) of
  what ``max_replicas`` can serve;
- ``scaling_recommended``: ``helios_desired_replicas`` differs from the current replica count by more
  than ``alerts.thresholds.scaling_step`` of it; it resolves when the workload has followed.

The episode change and its alert are written in one transaction (``alerts.enqueue``, the outbox);
the partial unique index on open episodes keeps one open per tenant, event and service even when
several replicas evaluate the same step (the loser re-reads and finds it open).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from helios_pipelines.core import alerts
from helios_pipelines.core.store import Store, Transaction
from helios_pipelines.core.store.schema import AlertEpisode
from helios_pipelines.core.tenants import TenantConfig

OPENED, RESOLVED = "opened", "resolved"


@dataclass(frozen=True)
class CapacityReading:
    """One scaled service at one step."""

    service: str
    share_of_max_capacity: float  # peak upper bound within the horizon / what max_replicas serve
    horizon: str  # the horizon the peak was looked for in, e.g. "1h"
    desired_replicas: int
    current_replicas: int | None


@dataclass(frozen=True)
class Condition:
    event: str
    service: str
    active: bool
    value: float  # what the episode's peak tracks
    summary: str
    details: dict


@dataclass(frozen=True)
class EpisodeChange:
    event: str
    service: str
    change: str  # opened or resolved
    episode_id: int


def conditions(tenant: TenantConfig, reading: CapacityReading) -> list[Condition]:
    """The three conditions of one reading, active or not."""
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


def record_readings(store: Store, tenant: TenantConfig, readings: list[CapacityReading], at: datetime,
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
        episode = store.open_alert_episode(session, customer.id, condition.event, condition.service)
        if condition.active and episode is None:
            episode = store.add_alert_episode(session, customer_id=customer.id, event=condition.event,
                                              subject=condition.service, opened_at=at, last_seen_at=at,
                                              peak=condition.value, description=condition.summary)
            changes.append(EpisodeChange(condition.event, condition.service, OPENED, episode.id))
            routed.append(_alert(tenant, episode, condition, alerts.TRIGGER, at))
        elif condition.active and at > episode.last_seen_at:
            episode.last_seen_at = at
            episode.peak = max(episode.peak, condition.value)
        elif not condition.active and episode is not None and at > episode.last_seen_at:
            episode.resolved_at = at
            changes.append(EpisodeChange(condition.event, condition.service, RESOLVED, episode.id))
            routed.append(_alert(tenant, episode, condition, alerts.RESOLVE, at))
    alerts.enqueue(store, session, tenant, routed, now)
    return changes


def _alert(tenant: TenantConfig, episode: AlertEpisode, condition: Condition, action: str, at: datetime) -> alerts.Alert:
    summary = episode.description if action == alerts.TRIGGER else f"{episode.description}: over"
    return alerts.Alert(
        tenant=tenant.id,
        event=condition.event,
        alert_key=f"{condition.event}/{tenant.id}/{condition.service}/{episode.id}",
        summary=summary,
        occurred_at=at,
        action=action,
        details=condition.details | {"episode_id": episode.id, "opened_at": episode.opened_at.isoformat()},
    )
