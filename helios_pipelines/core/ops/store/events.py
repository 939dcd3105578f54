"""Posted scheduled events and changes (deploys, scaling actions), and once-per-step claims (one
replica does a step's work)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import InstrumentedAttribute

from helios_pipelines.core.ops.store.base import StoreBase
from helios_pipelines.core.ops.store.schema import PostedChange, PostedEvent, StepLease, utcnow


@dataclass(frozen=True)
class StepClaim:
    """A won claim: the step, and the step the previous claim reached (None the first time)."""

    step: datetime
    previous: datetime | None


class EventQueries(StoreBase):
    def add_event(self, slug: str, name: str, start: datetime, event: dict, now: datetime | None = None) -> int:
        """Store a posted event (already validated by the caller); returns its id."""
        return self._add_posted(slug, PostedEvent, name=name, start=start, event=event, created_at=now or utcnow())

    def events_after(self, slug: str, after_id: int = 0) -> list[tuple[int, dict]]:
        """The tenant's posted events with an id above ``after_id``, oldest first."""
        return self._posted_after(slug, PostedEvent.event, after_id)

    def add_change(self, slug: str, time: datetime, change: dict, now: datetime | None = None) -> int:
        """Store a posted change (already validated by the caller); returns its id."""
        return self._add_posted(slug, PostedChange, time=time, change=change, created_at=now or utcnow())

    def changes_after(self, slug: str, after_id: int = 0) -> list[tuple[int, dict]]:
        """The tenant's posted changes with an id above ``after_id``, oldest first."""
        return self._posted_after(slug, PostedChange.change, after_id)

    def _add_posted(self, slug: str, table: type[PostedEvent | PostedChange], **columns) -> int:
        """A row of what an active tenant posted; a disabled or unknown tenant's is refused."""
        with self.transaction() as session:
            row = table(customer_id=self.active_customer(session, slug).id, **columns)
            session.add(row)
            session.flush()
            return row.id

    def _posted_after(self, slug: str, body: InstrumentedAttribute, after_id: int) -> list[tuple[int, dict]]:
        table = body.class_  # the posted row's table, whose JSON column ``body`` is
        with self.transaction() as session:
            return [tuple(row) for row in session.execute(
                select(table.id, body).where(table.customer_id == self.customer_id(slug), table.id > after_id)
                .order_by(table.id))]

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

