"""Posted scheduled events, and once-per-step claims (one replica does a step's work)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update

from helios_pipelines.core.ops.store.base import StoreBase
from helios_pipelines.core.ops.store.schema import PostedEvent, StepLease, utcnow


@dataclass(frozen=True)
class StepClaim:
    """A won claim: the step, and the step the previous claim reached (None the first time)."""

    step: datetime
    previous: datetime | None


class EventQueries(StoreBase):
    def add_event(self, slug: str, name: str, start: datetime, event: dict, now: datetime | None = None) -> int:
        """Store a posted event (already validated by the caller); returns its id."""
        with self.transaction() as session:
            row = PostedEvent(customer_id=self.active_customer(session, slug).id, name=name, start=start,
                              event=event, created_at=now or utcnow())
            session.add(row)
            session.flush()
            return row.id

    def events_after(self, slug: str, after_id: int = 0) -> list[tuple[int, dict]]:
        """The tenant's posted events with an id above ``after_id``, oldest first."""
        with self.transaction() as session:
            return [tuple(row) for row in session.execute(
                select(PostedEvent.id, PostedEvent.event)
                .where(PostedEvent.customer_id == self.customer_id(slug), PostedEvent.id > after_id)
                .order_by(PostedEvent.id))]

    # ---- once-per-step work ------------------------------------------------------------------
    def claim_step(self, name: str, step: datetime, owner: str, now: datetime | None = None) -> StepClaim | None:
        """Claim ``step`` of the task ``name``: a StepClaim for exactly one caller per step, None for
        everyone else (someone already claimed this step or a later one)."""
        now = now or utcnow()
        with self.transaction() as session:
            if self.insert_ignoring_duplicates(
                    session, StepLease, [{"name": name, "step": step, "previous_step": None, "owner": owner,
                                          "claimed_at": now}], ["name"]):
                return StepClaim(step, None)  # the task's first step ever
            # SET expressions read the row's old values on both dialects, so previous_step gets the old step.
            claimed = session.execute(
                update(StepLease)
                .where(StepLease.name == name, StepLease.step < step)
                .values(previous_step=StepLease.step, step=step, owner=owner, claimed_at=now)
                .returning(StepLease.previous_step)
            ).first()
        return None if claimed is None else StepClaim(step, claimed[0])

    def release_step(self, name: str, claim: StepClaim, owner: str) -> bool:
        """Give a claimed step back after its work failed: the next claim starts where ``claim`` did."""
        mine = (StepLease.name == name, StepLease.step == claim.step, StepLease.owner == owner)
        with self.transaction() as session:
            if claim.previous is None:  # the task's first claim: as if it had never been made
                return session.execute(delete(StepLease).where(*mine)).rowcount == 1
            return session.execute(
                update(StepLease).where(*mine).values(step=claim.previous, previous_step=None)).rowcount == 1

