"""The database behind the store: the engine (SQLite or PostgreSQL), transactions, the dialect-portable
insert, and the customer lookups every room of the store starts from.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from helios_pipelines.core.ops.store.errors import CustomerDisabledError, UnknownCustomerError
from helios_pipelines.core.ops.store.schema import ACTIVE, Base, Customer
from helios_pipelines.core.settings import helios_home, with_shipped_driver

T = TypeVar("T")
# A concurrent writer may open the same episode first; the unique index refuses the second, which
# then re-reads and extends. Two rounds settle it; the third is slack.
CONFLICT_ROUNDS = 3
# The handle ``Store.transaction()`` yields; callers pass it back to store methods, never query with it.
Transaction = Session


def database_url() -> str:
    """``HELIOS_DATABASE_URL``, or the embedded SQLite file under ``HELIOS_HOME``."""
    return os.environ.get("HELIOS_DATABASE_URL") or f"sqlite:///{helios_home() / 'helios.db'}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the delivery worker;
    # busy_timeout makes a second writer wait for the lock instead of failing at once.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(with_shipped_driver(url))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


class StoreBase:
    """One database (SQLite or PostgreSQL): its engine, transactions and customer lookups."""

    def __init__(self, url: str | None = None):
        self.url = url or database_url()
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._customer_ids: dict[str, uuid.UUID] = {}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A session whose work commits together or not at all."""
        with self._sessions.begin() as session:
            yield session

    def retry_on_conflict(self, work: Callable[[Transaction], T], rounds: int = CONFLICT_ROUNDS) -> T:
        """``work`` in a transaction of its own, run again in a fresh one when a unique index refuses
        one of its writes (another replica opened the same episode first: the next round finds it)."""
        failed = 0
        while True:
            try:
                with self.transaction() as session:
                    return work(session)
            except IntegrityError:
                failed += 1
                if failed >= rounds:
                    raise

    def insert_ignoring_duplicates(self, session: Session, model: type[Base], rows: list[dict], unique: list[str]) -> int:
        """INSERT ... ON CONFLICT DO NOTHING on both dialects; returns how many rows were new (those it
        returns). One statement compiled once for all ``rows``, which SQLAlchemy sends in multi-row
        batches within the database's parameter limit (insertmanyvalues): building one VALUES clause of
        thousands of rows cost seconds of compiling."""
        if not rows:
            return 0
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = dialect_insert(model).on_conflict_do_nothing(index_elements=unique).returning(getattr(model, unique[0]))
        return len(session.connection().execute(statement, rows).all())

    def customer(self, session: Session, slug: str) -> Customer:
        found = session.scalar(select(Customer).where(Customer.slug == slug))
        if found is None:
            known = session.scalars(select(Customer.slug).order_by(Customer.slug)).all()
            raise UnknownCustomerError(
                f"no customer '{slug}' in the store; known: {', '.join(known) or '(none)'} "
                f"(`helios tenants sync` copies the registry in)"
            )
        return found

    def customer_id(self, slug: str) -> uuid.UUID:
        """Cached: a customer's id never changes, and the recorder asks on every batch."""
        if slug not in self._customer_ids:
            with self.transaction() as session:
                self._customer_ids[slug] = self.customer(session, slug).id
        return self._customer_ids[slug]

    def active_customer(self, session: Session, slug: str) -> Customer:
        found = self.customer(session, slug)
        if found.status != ACTIVE:
            raise CustomerDisabledError(f"customer '{slug}' is disabled")
        return found

