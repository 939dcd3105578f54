"""The alert outbox: rows added by routing, leased to a delivery worker, each attempt's outcome recorded."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import aliased

from helios_pipelines.core.ops.store.base import StoreBase, Transaction
from helios_pipelines.core.ops.store.schema import PENDING, Customer, OutboxRow


class OutboxQueries(StoreBase):
    def add_outbox_rows(self, session: Transaction, rows: list[dict]) -> int:
        """Rows in the caller's transaction; one whose idempotency key is stored already is skipped.
        Returns how many were new."""
        return self.insert_ignoring_duplicates(session, OutboxRow, rows, ["idempotency_key"])

    def claim_outbox(self, owner: str, now: datetime, lease: timedelta, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to ``owner`` and count the attempt.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so concurrent workers take disjoint rows without waiting.
        SQLite: the single UPDATE statement holds the database's write lock, so two workers cannot
        claim the same row. On both, a lease that runs out (a killed worker) makes the row claimable
        again: delivery is at least once, and receivers dedupe on the idempotency key.

        Per-episode order: a row is claimable only when no earlier row of the same alert key and
        destination is still pending (waiting for a retry, or leased, also by a worker that died), so a
        resolve never overtakes its trigger. A dead (given up) trigger no longer holds its resolve back:
        the receiver may have acted on one of its attempts, and the resolve closes that incident.
        """
        earlier = aliased(OutboxRow)
        waiting_behind_earlier = exists().where(
            earlier.customer_id == OutboxRow.customer_id, earlier.alert_key == OutboxRow.alert_key,
            earlier.destination == OutboxRow.destination, earlier.id < OutboxRow.id, earlier.status == PENDING,
        )
        due = (
            select(OutboxRow.id)
            .where(OutboxRow.status == PENDING, OutboxRow.next_attempt_at <= now,
                   or_(OutboxRow.lease_expires_at.is_(None), OutboxRow.lease_expires_at <= now),
                   ~waiting_behind_earlier)
            .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        with self.transaction() as session:
            ids = session.scalars(
                update(OutboxRow)
                .where(OutboxRow.id.in_(due.scalar_subquery()))
                .values(lease_owner=owner, lease_expires_at=now + lease, attempts=OutboxRow.attempts + 1)
                .returning(OutboxRow.id)
            ).all()
            if not ids:
                return []
            return list(session.scalars(select(OutboxRow).where(OutboxRow.id.in_(ids)).order_by(OutboxRow.id)))

    def finish_outbox(self, row_id: int, owner: str, **values) -> bool:
        """Record an attempt's outcome, only if ``owner`` still holds the lease (it may have expired
        and passed to another worker, whose outcome then wins)."""
        with self.transaction() as session:
            result = session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id, OutboxRow.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None, **values)
            )
            return result.rowcount == 1

    def outbox_counts(self, slug: str | None = None) -> dict[str, int]:
        with self.transaction() as session:
            query = select(OutboxRow.status, func.count()).group_by(OutboxRow.status)
            if slug:
                query = query.where(OutboxRow.customer_id == self.customer(session, slug).id)
            return dict(session.execute(query).all())

    def outbox_rows(self, slug: str | None = None, status: str | None = None,
                    limit: int = 50) -> list[tuple[str, OutboxRow]]:
        """(tenant id, row) pairs, newest first."""
        with self.transaction() as session:
            query = select(Customer.slug, OutboxRow).join(Customer, Customer.id == OutboxRow.customer_id)
            if slug:
                query = query.where(OutboxRow.customer_id == self.customer(session, slug).id)
            if status:
                query = query.where(OutboxRow.status == status)
            return [tuple(row) for row in session.execute(query.order_by(OutboxRow.id.desc()).limit(limit))]
