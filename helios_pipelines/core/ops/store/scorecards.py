"""Event scorecards (issue 19): one row per event occurrence and scaled service, a later scoring
replacing it; read one (with its step table) or a tenant's list (without)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from helios_pipelines.core.ops.store.base import StoreBase, Transaction
from helios_pipelines.core.ops.store.schema import Customer, EventScorecard, utcnow


class ScorecardQueries(StoreBase):
    def save_scorecard(self, slug: str, scorecard: dict, now: datetime | None = None) -> int:
        """Store ``scorecard`` (``Scorecard.to_dict()``: its event, start, end, service and steps) for
        ``slug``, replacing the one of the same occurrence and service; returns the row's id. A tenant
        the store does not know is UnknownCustomerError, and nothing is stored."""
        return self.retry_on_conflict(lambda session: self._save_scorecard(session, slug, scorecard, now or utcnow()))

    def _save_scorecard(self, session: Transaction, slug: str, scorecard: dict, now: datetime) -> int:
        customer = self.customer(session, slug)
        summary = {k: v for k, v in scorecard.items() if k != "steps"}
        starts_at = datetime.fromisoformat(scorecard["start"])
        row = session.scalar(select(EventScorecard).where(
            EventScorecard.customer_id == customer.id, EventScorecard.event == scorecard["event"],
            EventScorecard.starts_at == starts_at, EventScorecard.service == scorecard["service"]))
        if row is None:
            row = EventScorecard(customer_id=customer.id, event=scorecard["event"], starts_at=starts_at,
                                 service=scorecard["service"])
            session.add(row)
        row.ends_at, row.scorecard, row.steps, row.scored_at = (
            datetime.fromisoformat(scorecard["end"]), summary, scorecard.get("steps", []), now)
        session.flush()  # a concurrent first scoring of the same occurrence fails here; the next round replaces it
        return row.id

    def scorecard(self, slug: str, event: str, starts_at: datetime, service: str) -> dict | None:
        """The stored scorecard of ``event``'s occurrence starting at ``starts_at`` for ``service``, its
        step table included; None when it was not scored (or the store does not know the tenant)."""
        with self.transaction() as session:
            row = session.execute(
                select(EventScorecard.scorecard, EventScorecard.steps)
                .join(Customer, Customer.id == EventScorecard.customer_id)
                .where(Customer.slug == slug, EventScorecard.event == event, EventScorecard.starts_at == starts_at,
                       EventScorecard.service == service)).first()
        return None if row is None else {**row.scorecard, "steps": row.steps}

    def scorecards(self, slug: str, ends_from: datetime | None = None, ends_before: datetime | None = None) -> list[dict]:
        """The tenant's stored scorecards without their step tables, oldest occurrence first; those that
        ended in ``[ends_from, ends_before)`` when given."""
        query = (select(EventScorecard.scorecard).join(Customer, Customer.id == EventScorecard.customer_id)
                 .where(Customer.slug == slug).order_by(EventScorecard.starts_at, EventScorecard.service))
        if ends_from is not None:
            query = query.where(EventScorecard.ends_at >= ends_from)
        if ends_before is not None:
            query = query.where(EventScorecard.ends_at < ends_before)
        with self.transaction() as session:
            return list(session.scalars(query))
