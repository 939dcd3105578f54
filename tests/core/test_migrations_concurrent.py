"""Several processes migrating one fresh embedded store at once (two Dagster steps opening it on first
use on two Celery workers) all reach the head revision: none fails on the version table the other
one is creating."""

from __future__ import annotations

import multiprocessing
import uuid

from sqlalchemy import text

from helios_pipelines.core.ops.migrations import head, upgrade
from tests.harness.store_backends import schema_url


def test_processes_migrating_one_fresh_sqlite_store_at_once_all_reach_the_head(tmp_path):
    urls = [f"sqlite:///{tmp_path / f'store-{attempt}.db'}" for attempt in range(3) for _ in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        revisions = pool.map(upgrade, urls, chunksize=1)  # four processes on each of three fresh files
    assert revisions == [head()] * len(urls)


def test_processes_migrating_one_fresh_postgresql_store_at_once_all_reach_the_head(postgres_admin):
    schemas = [f"helios_test_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    with postgres_admin.begin() as connection:
        for schema in schemas:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        urls = [schema_url(schema) for schema in schemas for _ in range(4)]
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            revisions = pool.map(upgrade, urls, chunksize=1)  # four processes on each of three fresh schemas
        assert revisions == [head()] * len(urls)
    finally:
        with postgres_admin.begin() as connection:
            for schema in schemas:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
