"""Operators' verdicts on anomaly episodes: recorded for the episode's own tenant only, read back with
their episodes for training."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from helios_pipelines.core.ops.store.base import StoreBase, Transaction
from helios_pipelines.core.ops.store.errors import ForeignAnomalyError, StoreError, UnknownAnomalyError
from helios_pipelines.core.ops.store.schema import VERDICTS, Anomaly, AnomalyVerdict, Customer, utcnow


class VerdictQueries(StoreBase):
    def record_verdict(self, slug: str, anomaly_id: int, verdict: str, given_by: str, note: str | None = None,
                       now: datetime | None = None) -> AnomalyVerdict:
        """Store (or replace) ``slug``'s verdict on its episode ``anomaly_id``, in one transaction.

        An unknown episode is UnknownAnomalyError, another tenant's ForeignAnomalyError (neither
        stores anything); the other tenant is not named."""
        if verdict not in VERDICTS:
            raise StoreError(f"verdict '{verdict}' on anomaly episode {anomaly_id} of tenant '{slug}': "
                             f"expected one of {', '.join(VERDICTS)}")
        return self.retry_on_conflict(
            lambda session: self._record_verdict(session, slug, anomaly_id, verdict, given_by, note, now or utcnow()))

    def _record_verdict(self, session: Transaction, slug: str, anomaly_id: int, verdict: str, given_by: str,
                        note: str | None, now: datetime) -> AnomalyVerdict:
        customer = self.customer(session, slug)
        episode = session.get(Anomaly, anomaly_id)
        if episode is None:
            raise UnknownAnomalyError(f"no anomaly episode {anomaly_id} (tenant '{slug}')")
        if episode.customer_id != customer.id:
            raise ForeignAnomalyError(f"anomaly episode {anomaly_id} is not tenant '{slug}''s")
        row = session.get(AnomalyVerdict, anomaly_id)
        if row is None:
            row = AnomalyVerdict(anomaly_id=anomaly_id, customer_id=customer.id)
            session.add(row)
        row.verdict, row.given_by, row.note, row.given_at = verdict, given_by, note, now
        session.flush()  # a concurrent first verdict on the same episode fails here, and the next round replaces it
        return row

    def verdicts(self, slug: str) -> list[tuple[AnomalyVerdict, Anomaly]]:
        """The tenant's verdicts with their episodes, oldest episode first; none for a tenant the store
        does not know yet (nothing was ever recorded for it)."""
        with self.transaction() as session:
            customer = session.scalar(select(Customer).where(Customer.slug == slug))
            if customer is None:
                return []
            return [tuple(row) for row in session.execute(
                select(AnomalyVerdict, Anomaly).join(Anomaly, Anomaly.id == AnomalyVerdict.anomaly_id)
                .where(AnomalyVerdict.customer_id == customer.id).order_by(Anomaly.detected_at))]
