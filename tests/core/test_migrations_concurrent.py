"""Several processes migrating one fresh embedded store at once (two Dagster steps opening it on first
use on two Celery workers) all reach the head revision: none fails on the version table the other
one is creating."""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor

from sqlalchemy import text

from helios_pipelines.core.ops.migrations import head, upgrade
from tests.harness.store_backends import schema_url

MIGRATION_TIMEOUT_SECONDS = 300  # a migration takes seconds; a stuck one fails the test instead of hanging it


def _migrate_side_by_side(urls: list[str]) -> list[str]:
    """``upgrade`` each URL in four spawned processes at once. A worker that dies raises BrokenProcessPool
    (``multiprocessing.Pool.map`` would wait for it forever)."""
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(upgrade, urls, timeout=MIGRATION_TIMEOUT_SECONDS))


def test_processes_migrating_one_fresh_sqlite_store_at_once_all_reach_the_head(tmp_path):
    urls = [f"sqlite:///{tmp_path / f'store-{attempt}.db'}" for attempt in range(3) for _ in range(4)]
    revisions = _migrate_side_by_side(urls)  # four processes on each of three fresh files
    assert revisions == [head()] * len(urls)


def test_processes_migrating_one_fresh_postgresql_store_at_once_all_reach_the_head(postgres_admin):
    schemas = [f"helios_test_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    with postgres_admin.begin() as connection:
        for schema in schemas:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        urls = [schema_url(schema) for schema in schemas for _ in range(4)]
        revisions = _migrate_side_by_side(urls)  # four processes on each of three fresh schemas
        assert revisions == [head()] * len(urls)
    finally:
        with postgres_admin.begin() as connection:
            for schema in schemas:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
