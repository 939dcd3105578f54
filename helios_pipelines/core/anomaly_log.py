"""Anomalies as episodes: recorded once however often the detector is polled.

A detection result (``TenantRuntime.detect``'s answer, whether from ``/detect`` or from scheduled
detection) is folded into the store per tenant: an anomalous point opens an episode if none is open,
or extends the open one, which then names that metric too (the first one leads: it moved first; its
peak score and description follow its worst point); a normal point of one of its metrics after the
episode's last anomalous point closes it. The detector's own alert state already
applies the tenant's trigger and recovery windows, so "normal" here means "recovered".

Opening an episode routes an ``anomaly_detected`` trigger alert, closing it the matching resolve, in
the same transaction as the episode change (see ``alerts.enqueue``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from helios_pipelines.core import alerts, plans
from helios_pipelines.core.store import Store, StoreError
from helios_pipelines.core.store.schema import Anomaly, Customer, utcnow
from helios_pipelines.core.tenants import TenantConfig

OPENED, EXTENDED, RESOLVED = "opened", "extended", "resolved"
# A concurrent poller may open the same episode first; the unique index refuses the second, which
# then re-reads and extends. Two rounds settle it; the third is slack.
_CONFLICT_ROUNDS = 3


class UnknownAnomalyError(StoreError, KeyError):
    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class EpisodeChange:
    anomaly_id: int
    metric: str
    change: str  # opened, extended or resolved
    at: datetime
    score: float


def _describe(tenant: TenantConfig, metric: str, at: datetime, value: float | None, score: float, threshold: float) -> str:
    unit = tenant.metrics[metric].unit if metric in tenant.metrics else ""
    shown = "no value" if value is None else f"value {value:.6g}{' ' + unit if unit else ''}"
    return f"{metric} anomalous at {at.isoformat()}: {shown}, score {score:.2f} (threshold {threshold:.2f})"


_NAMED = "; metrics: "


def _named(metrics: list[str]) -> str:
    return _NAMED + ", ".join(metrics)


def episode_metrics(episode: Anomaly) -> list[str]:
    """Every metric of the episode, the one that moved first leading (kept in its description)."""
    if episode.description and _NAMED in episode.description:
        return episode.description.split(_NAMED, 1)[1].split(", ")
    return [episode.metric_name]


def _alert(tenant: TenantConfig, episode: Anomaly, action: str, at: datetime) -> alerts.Alert:
    verb = "recovered" if action == alerts.RESOLVE else "is anomalous"
    return alerts.Alert(
        tenant=tenant.id,
        event="anomaly_detected",
        alert_key=f"anomaly/{tenant.id}/{episode.metric_name}/{episode.id}",
        summary=f"{episode.metric_name} {verb} (peak score {episode.anomaly_score:.2f})",
        occurred_at=at,
        action=action,
        details={"anomaly_id": episode.id, "metric": episode.metric_name, "metrics": episode_metrics(episode),
                 "score": episode.anomaly_score,
                 "detected_at": episode.detected_at.isoformat(), "description": episode.description},
    )


def record_detection(store: Store, tenant: TenantConfig, result: dict, detected_by: str = "detect",
                     now: datetime | None = None) -> list[EpisodeChange]:
    """Fold a detection result into the tenant's episodes and route the alerts of those opened or closed."""
    # Step by step; within a step the anomalous points first (the highest score leading), so a metric
    # back to normal never closes an episode another metric still holds open at that step.
    points = sorted(
        (s for s in result["scores"] if s.get("score") is not None and not s.get("warming_up")),
        key=lambda s: (pd.Timestamp(s["timestamp"]), not s["anomalous"], -float(s["score"]), s["metric"]),
    )
    rounds = 0
    while True:
        try:
            return _record_once(store, tenant, points, float(result["threshold"]), detected_by, now)
        except IntegrityError:
            rounds += 1
            if rounds >= _CONFLICT_ROUNDS:
                raise


def _record_once(store: Store, tenant: TenantConfig, points: list[dict], threshold: float, detected_by: str,
                 now: datetime | None) -> list[EpisodeChange]:
    with store.transaction() as session:
        customer = store.active_customer(session, tenant.id)
        plans.require_feature(tenant.id, customer.plan, plans.ANOMALY_DETECTION)
        changes, routed = [], []
        for point in points:
            applied = _apply(session, customer.id, tenant, point, threshold, detected_by)
            if applied is None:
                continue
            change, episode = applied
            changes.append(change)
            if change.change in (OPENED, RESOLVED):
                action = alerts.TRIGGER if change.change == OPENED else alerts.RESOLVE
                routed.append(_alert(tenant, episode, action, change.at))
        alerts.enqueue(store, session, tenant, routed, now)
        return changes


def _apply(session, customer_id, tenant: TenantConfig, point: dict, threshold: float, detected_by: str):
    at = pd.Timestamp(point["timestamp"]).tz_convert("UTC").to_pydatetime()
    metric, score, value = point["metric"], float(point["score"]), point.get("value")
    # One episode per tenant: the metrics of one incident join the episode the first one opened.
    episode = session.scalar(select(Anomaly).where(
        Anomaly.customer_id == customer_id, Anomaly.resolved_at.is_(None)).order_by(Anomaly.detected_at).limit(1))
    if point["anomalous"]:
        if episode is None:
            episode = Anomaly(customer_id=customer_id, metric_name=metric, detected_at=at, last_seen_at=at,
                              anomaly_score=score, peak_value=value, detected_by=detected_by, acknowledged=False,
                              description=_describe(tenant, metric, at, value, score, threshold) + _named([metric]))
            session.add(episode)
            session.flush()
            return EpisodeChange(episode.id, metric, OPENED, at, score), episode
        named = episode_metrics(episode)
        if at <= episode.last_seen_at and score <= episode.anomaly_score and metric in named:
            return None  # a repeated poll of a point already folded in
        episode.last_seen_at = max(episode.last_seen_at, at)
        named = named + [metric] if metric not in named else named
        if score > episode.anomaly_score and metric == episode.metric_name:
            episode.anomaly_score, episode.peak_value = score, value
            episode.description = _describe(tenant, metric, at, value, score, threshold) + _named(named)
        else:
            episode.anomaly_score = max(episode.anomaly_score, score)
            episode.description = episode.description.split(_NAMED)[0] + _named(named)
        return EpisodeChange(episode.id, metric, EXTENDED, at, episode.anomaly_score), episode
    if episode is not None and at > episode.last_seen_at and metric in episode_metrics(episode):
        episode.resolved_at = at
        return EpisodeChange(episode.id, metric, RESOLVED, at, episode.anomaly_score), episode
    return None


def list_anomalies(store: Store, tenant_id: str | None = None, open_only: bool = False,
                   unacknowledged_only: bool = False, limit: int = 100) -> list[tuple[str, Anomaly]]:
    """(tenant id, anomaly) pairs, newest first."""
    with store.transaction() as session:
        query = select(Customer.slug, Anomaly).join(Customer, Customer.id == Anomaly.customer_id)
        if tenant_id:
            query = query.where(Anomaly.customer_id == store.customer(session, tenant_id).id)
        if open_only:
            query = query.where(Anomaly.resolved_at.is_(None))
        if unacknowledged_only:
            query = query.where(Anomaly.acknowledged.is_(False))
        return [tuple(row) for row in session.execute(query.order_by(Anomaly.detected_at.desc()).limit(limit))]


def acknowledge(store: Store, anomaly_id: int, by: str, tenant_id: str | None = None,
                now: datetime | None = None) -> Anomaly:
    """Mark an anomaly acknowledged. An API endpoint passes the caller's ``tenant_id`` so one tenant
    can never acknowledge another's anomaly (it gets the same not-found error as for a missing id)."""
    with store.transaction() as session:
        anomaly = session.get(Anomaly, anomaly_id)
        if anomaly is None or (tenant_id is not None and anomaly.customer_id != store.customer(session, tenant_id).id):
            owner = f" of tenant '{tenant_id}'" if tenant_id else ""
            raise UnknownAnomalyError(f"no anomaly {anomaly_id}{owner}")
        if not anomaly.acknowledged:
            anomaly.acknowledged, anomaly.acknowledged_at, anomaly.acknowledged_by = True, now or utcnow(), by
        return anomaly
