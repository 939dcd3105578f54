"""Anomalies as episodes: recorded once however often the detector is polled.

A detection result (``TenantRuntime.detect``'s answer, whether from ``/detect`` or from scheduled
detection) is folded into the store per tenant: an anomalous point opens an episode if none is open,
or extends the open one, which then names that metric too (the first one leads: it moved first; its
peak score and description follow its worst point); a normal point of one of its metrics after the
episode's last anomalous point closes it. The detector's own alert state already
applies the tenant's trigger and recovery windows, so "normal" here means "recovered".

Opening an episode routes an ``anomaly_detected`` trigger alert, closing it the matching resolve, in
the same transaction as the episode change (see ``alerts.enqueue``).

An operator's verdicts on recorded episodes (``helios anomalies feedback``, ``POST
/anomalies/<episode>/feedback``) come back to training as ``labelled_episodes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from helios_pipelines.core.ml.models.calibration import LabelledEpisode
from helios_pipelines.core.ops import alerts, plans
from helios_pipelines.core.ops.store import Store, Transaction
from helios_pipelines.core.ops.store.schema import INCIDENT, Anomaly
from helios_pipelines.core.tenants import TenantConfig

OPENED, EXTENDED, RESOLVED = "opened", "extended", "resolved"


@dataclass(frozen=True)
class EpisodeChange:
    anomaly_id: int
    metric: str
    change: str  # opened, extended or resolved
    at: datetime
    score: float


def _describe(tenant: TenantConfig, at: datetime, point: dict, threshold: float) -> str:
    metric, value, score = point["metric"], point.get("value"), float(point["score"])
    unit = tenant.metrics[metric].unit if metric in tenant.metrics else ""
    shown = "no value" if value is None else f"value {value:.6g}{' ' + unit if unit else ''}"
    # A reported change whose window ended with the metric still away is the likely cause (core/ml/changes.py).
    cause = f", still away after the {point['after_change']}" if point.get("after_change") else ""
    return f"{metric} anomalous at {at.isoformat()}: {shown}, score {score:.2f} (threshold {threshold:.2f}){cause}"


_NAMED = "; metrics: "


def _named(metrics: list[str]) -> str:
    return _NAMED + ", ".join(metrics)


def episode_metrics(episode: Anomaly) -> list[str]:
    """Every metric of the episode, the one that moved first leading (kept in its description)."""
    if episode.description and _NAMED in episode.description:
        return episode.description.split(_NAMED, 1)[1].split(", ")
    return [episode.metric_name]


def labelled_episodes(store: Store, tenant_id: str) -> list[LabelledEpisode]:
    """The tenant's episodes that carry an operator's verdict, oldest first, as training reads them."""
    return [LabelledEpisode(episode.id, verdict.verdict == INCIDENT, tuple(episode_metrics(episode)),
                            pd.Timestamp(episode.detected_at), pd.Timestamp(episode.last_seen_at))
            for verdict, episode in store.verdicts(tenant_id)]


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
    # A concurrent poller may open the same episode first: the next round re-reads and extends it.
    return store.retry_on_conflict(
        lambda session: _record_once(store, session, tenant, points, float(result["threshold"]), detected_by, now))


def _record_once(store: Store, session: Transaction, tenant: TenantConfig, points: list[dict], threshold: float,
                 detected_by: str, now: datetime | None) -> list[EpisodeChange]:
    customer = store.active_customer(session, tenant.id)
    plans.require_feature(tenant.id, customer.plan, plans.ANOMALY_DETECTION)
    changes, routed = [], []
    for point in points:
        applied = _apply(store, session, customer.id, tenant, point, threshold, detected_by)
        if applied is None:
            continue
        change, episode = applied
        changes.append(change)
        if change.change in (OPENED, RESOLVED):
            action = alerts.TRIGGER if change.change == OPENED else alerts.RESOLVE
            routed.append(_alert(tenant, episode, action, change.at))
    alerts.enqueue(store, session, tenant, routed, now)
    return changes


def _apply(store: Store, session: Transaction, customer_id, tenant: TenantConfig, point: dict, threshold: float,
           detected_by: str):
    at = pd.Timestamp(point["timestamp"]).tz_convert("UTC").to_pydatetime()
    metric, score, value = point["metric"], float(point["score"]), point.get("value")
    # One episode per tenant: the metrics of one incident join the episode the first one opened.
    episode = store.open_anomaly(session, customer_id)
    if point["anomalous"]:
        if episode is None:
            episode = store.add_anomaly(
                session, customer_id=customer_id, metric_name=metric, detected_at=at, last_seen_at=at,
                anomaly_score=score, peak_value=value, detected_by=detected_by, acknowledged=False,
                description=_describe(tenant, at, point, threshold) + _named([metric]))
            return EpisodeChange(episode.id, metric, OPENED, at, score), episode
        named = episode_metrics(episode)
        if at <= episode.last_seen_at and score <= episode.anomaly_score and metric in named:
            return None  # a repeated poll of a point already folded in
        episode.last_seen_at = max(episode.last_seen_at, at)
        named = named + [metric] if metric not in named else named
        if score > episode.anomaly_score and metric == episode.metric_name:
            episode.anomaly_score, episode.peak_value = score, value
            episode.description = _describe(tenant, at, point, threshold) + _named(named)
        else:
            episode.anomaly_score = max(episode.anomaly_score, score)
            episode.description = episode.description.split(_NAMED)[0] + _named(named)
        return EpisodeChange(episode.id, metric, EXTENDED, at, episode.anomaly_score), episode
    if episode is not None and at > episode.last_seen_at and metric in episode_metrics(episode):
        episode.resolved_at = at
        return EpisodeChange(episode.id, metric, RESOLVED, at, episode.anomaly_score), episode
    return None

