"""Episodes: anomalies (one open per tenant) and capacity/scaling alert episodes (per tenant, event
and scaled service), the open one found, a new one added, anomalies listed and acknowledged.

What an episode's fields become (open, extend, resolve) is decided by ``core/ops/anomaly_log.py`` and
``core/ops/capacity_alerts.py`` on the rows returned here, inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select

from helios_pipelines.core.ops.store.base import StoreBase, Transaction
from helios_pipelines.core.ops.store.errors import UnknownAnomalyError
from helios_pipelines.core.ops.store.schema import AlertEpisode, Anomaly, Customer, utcnow


class EpisodeQueries(StoreBase):
    # ---- anomalies ---------------------------------------------------------------------------
    def open_anomaly(self, session: Transaction, customer_id: uuid.UUID) -> Anomaly | None:
        """The tenant's open anomaly episode (the oldest, should an older store hold one per metric)."""
        return session.scalar(select(Anomaly).where(
            Anomaly.customer_id == customer_id, Anomaly.resolved_at.is_(None)).order_by(Anomaly.detected_at).limit(1))

    def add_anomaly(self, session: Transaction, **values) -> Anomaly:
        """A new episode, flushed so it has its id (a concurrent open of the same one fails here)."""
        episode = Anomaly(**values)
        session.add(episode)
        session.flush()
        return episode

    def list_anomalies(self, tenant_id: str | None = None, open_only: bool = False,
                       unacknowledged_only: bool = False, limit: int = 100) -> list[tuple[str, Anomaly]]:
        """(tenant id, anomaly) pairs, newest first."""
        with self.transaction() as session:
            query = select(Customer.slug, Anomaly).join(Customer, Customer.id == Anomaly.customer_id)
            if tenant_id:
                query = query.where(Anomaly.customer_id == self.customer(session, tenant_id).id)
            if open_only:
                query = query.where(Anomaly.resolved_at.is_(None))
            if unacknowledged_only:
                query = query.where(Anomaly.acknowledged.is_(False))
            return [tuple(row) for row in session.execute(query.order_by(Anomaly.detected_at.desc()).limit(limit))]

    def acknowledge_anomaly(self, anomaly_id: int, by: str, tenant_id: str | None = None,
                            now: datetime | None = None) -> Anomaly:
        """Mark an anomaly acknowledged. An API endpoint passes the caller's ``tenant_id`` so one tenant
        can never acknowledge another's anomaly (it gets the same not-found error as for a missing id)."""
        with self.transaction() as session:
            anomaly = session.get(Anomaly, anomaly_id)
            if anomaly is None or (tenant_id is not None and anomaly.customer_id != self.customer(session, tenant_id).id):
                owner = f" of tenant '{tenant_id}'" if tenant_id else ""
                raise UnknownAnomalyError(f"no anomaly {anomaly_id}{owner}")
            if not anomaly.acknowledged:
                anomaly.acknowledged, anomaly.acknowledged_at, anomaly.acknowledged_by = True, now or utcnow(), by
            return anomaly

    # ---- capacity and scaling alert episodes -------------------------------------------------
    def open_alert_episode(self, session: Transaction, customer_id: uuid.UUID, event: str,
                           subject: str) -> AlertEpisode | None:
        """The open episode of ``event`` for the scaled service ``subject`` (at most one)."""
        return session.scalar(select(AlertEpisode).where(
            AlertEpisode.customer_id == customer_id, AlertEpisode.event == event,
            AlertEpisode.subject == subject, AlertEpisode.resolved_at.is_(None)))

    def add_alert_episode(self, session: Transaction, **values) -> AlertEpisode:
        """A new episode, flushed so it has its id (a concurrent open of the same one fails here)."""
        episode = AlertEpisode(**values)
        session.add(episode)
        session.flush()
        return episode
