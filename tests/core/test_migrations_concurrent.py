"""Several processes migrating one fresh embedded store at once (two Dagster steps opening it on first
use on two Celery workers) all reach the head revision: none fails on the version table the other
one is creating."""

from __future__ import annotations

import multiprocessing

from helios_pipelines.core.ops.migrations import head, upgrade


def test_processes_migrating_one_fresh_sqlite_store_at_once_all_reach_the_head(tmp_path):
    urls = [f"sqlite:///{tmp_path / f'store-{attempt}.db'}" for attempt in range(3) for _ in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        revisions = pool.map(upgrade, urls, chunksize=1)  # four processes on each of three fresh files
    assert revisions == [head()] * len(urls)
