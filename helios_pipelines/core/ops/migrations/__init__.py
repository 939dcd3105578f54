"""Alembic migrations of the Helios store, run programmatically: ``upgrade(url)`` (``helios db upgrade``).

``alembic/`` is the Alembic script location (``env.py``, ``versions/``); no ``alembic.ini`` is needed.
It is deliberately not a Python package, so importing every module of ``core`` never runs a migration
script outside Alembic.
A new revision after changing the tables in ``store/schema.py``: on an upgraded scratch database,
``alembic.command.revision(_config(connection), message=..., autogenerate=True, rev_id="0002")``
writes the difference into ``alembic/versions/``; review it (autogenerate misses renames) and commit it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from helios_pipelines.core.ops.store import database_url, make_engine

SCRIPT_LOCATION = Path(__file__).resolve().parent / "alembic"


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # The live connection goes through attributes, not the URL option: configparser would choke on
    # the '%' of URL-encoded options (e.g. a PostgreSQL search_path).
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _sqlite_file_lock(engine) -> Iterator[None]:
    """Processes that migrate one embedded SQLite file at once (two Dagster steps, each opening the store
    on first use) take turns: SQLite does not serialise Alembic's check-then-create of its version
    table, so the second would fail with "table alembic_version already exists". An exclusive
    ``flock`` on a file beside the database (the standard library's: nothing to install in a pod)."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# The first key of PostgreSQL's two-key advisory locks that Helios takes ("HELI" in ASCII); the second
# is the store's schema, so stores in different schemas of one database migrate side by side.
_MIGRATION_LOCK_CLASS = 0x48454C49


def _take_postgres_migration_lock(connection) -> None:
    """Two replicas (or Celery workers) starting on one fresh PostgreSQL store at once take turns, as on
    SQLite: a transaction-scoped advisory lock, released when the migrating transaction commits, so the
    second finds the first's tables and version row instead of creating them again."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:lock_class, hashtext(current_schema()))"),
            {"lock_class": _MIGRATION_LOCK_CLASS},
        )


def upgrade(url: str | None = None, revision: str = "head") -> str:
    """Migrate the database to ``revision``; returns the revision it is at afterwards. Processes that
    migrate one store at once take turns (a file lock on SQLite, an advisory lock on PostgreSQL)."""
    engine = make_engine(url or database_url())
    try:
        with _sqlite_file_lock(engine), engine.begin() as connection:
            _take_postgres_migration_lock(connection)
            command.upgrade(_config(connection), revision)
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def current(url: str | None = None) -> str | None:
    engine = make_engine(url or database_url())
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    return ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()
