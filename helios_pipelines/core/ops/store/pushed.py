"""Pushed samples (Prometheus remote-write and the JSON batch): stored once per (tenant, series, label
set, timestamp), read back by the pipeline's push source and by every serving replica.

A write is one transaction, so a request is stored all or nothing. Rows are inserted in bulk (one
``INSERT ... ON CONFLICT DO NOTHING`` statement sent in multi-row batches, see
``StoreBase.insert_ignoring_duplicates``), sorted, so two replicas writing overlapping batches lock
rows in the same order and never deadlock. A sample already stored is left as it is (the first write wins, as in
Prometheus' own TSDB, which refuses a second value at a timestamp): a replayed or retried request adds
nothing, and the count of new samples says so.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from helios_pipelines.core.ops.store.base import StoreBase
from helios_pipelines.core.ops.store.schema import PushSample, PushSeries

LabelSet = tuple[tuple[str, str], ...]
# series name -> label set -> [(unix ms, value)]
PushBatch = dict[str, dict[LabelSet, list[tuple[int, float]]]]
# Label sets looked up per statement (two parameters each; SQLite allows 32,766, PostgreSQL 65,535).
CHUNK_ROWS = 5_000


def format_labels(labels: LabelSet) -> str:
    """The canonical text of a label set (sorted ``k="v"`` pairs); empty for no labels."""
    return ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(labels))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _chunks(items: list) -> list[list]:
    return [items[start:start + CHUNK_ROWS] for start in range(0, len(items), CHUNK_ROWS)]


class PushQueries(StoreBase):
    def add_pushed(self, slug: str, batch: PushBatch) -> int:
        """Store a validated batch of the tenant's samples, all or nothing; returns how many were new.
        Run again in a fresh transaction when retention deleted a label set between this push's lookup
        and its samples' insert (the foreign key refuses them): the next round stores the set afresh."""
        customer_id = self.customer_id(slug)
        texts = {(series, labels): format_labels(labels) for series, by_labels in batch.items() for labels in by_labels}
        keys = sorted({(series, text, _hash(text)) for (series, _), text in texts.items()})
        if not keys:
            return 0

        def store(session: Session) -> int:
            ids = self._series_ids(session, customer_id, keys)
            gone = [key for key in keys if (key[0], key[2]) not in ids]
            if gone:  # retention deleted them between the insert and the lookup: inserted afresh
                ids |= self._series_ids(session, customer_id, gone)
            series_ids = {key: ids[key[0], _hash(text)] for key, text in texts.items()}
            rows = sorted((series_ids[series, labels], timestamp, value) for series, by_labels in batch.items()
                          for labels, points in by_labels.items() for timestamp, value in points)
            return self.insert_ignoring_duplicates(session, PushSample, [
                {"series_id": series_id, "timestamp": timestamp, "value": value} for series_id, timestamp, value in rows],
                ["series_id", "timestamp"])

        return self.retry_on_conflict(store)

    def _series_ids(self, session: Session, customer_id: int, keys: list[tuple[str, str, str]]) -> dict:
        """{(series, labels hash): id} of the tenant's label sets ``keys`` (series, labels, hash), each
        inserted unless stored."""
        self.insert_ignoring_duplicates(session, PushSeries, [
            {"customer_id": customer_id, "series": series, "labels": text, "labels_hash": digest}
            for series, text, digest in keys], ["customer_id", "series", "labels_hash"])
        ids = {}
        for chunk in _chunks(keys):  # an IN list within the parameter limit
            ids |= {(series, digest): series_id for series_id, series, digest in session.execute(
                select(PushSeries.id, PushSeries.series, PushSeries.labels_hash).where(
                    PushSeries.customer_id == customer_id,
                    PushSeries.series.in_({series for series, _, _ in chunk}),
                    PushSeries.labels_hash.in_({digest for _, _, digest in chunk})))}
        return ids

    def pushed(self, slug: str, series: str, start_ms: int, end_ms: int) -> list[tuple[str, int, float]]:
        """(label set, unix ms, value) of ``series`` with ``start_ms <= timestamp < end_ms``, ordered by
        label set and time."""
        with self.transaction() as session:
            return [tuple(row) for row in session.execute(
                select(PushSeries.labels, PushSample.timestamp, PushSample.value)
                .join(PushSample, PushSample.series_id == PushSeries.id)
                .where(PushSeries.customer_id == self.customer_id(slug), PushSeries.series == series,
                       PushSample.timestamp >= start_ms, PushSample.timestamp < end_ms)
                .order_by(PushSeries.labels, PushSample.timestamp))]

    def latest_pushed(self, slug: str, series: str) -> int | None:
        """Unix ms of the newest sample of ``series``, None when nothing is stored."""
        with self.transaction() as session:
            return session.scalar(
                select(func.max(PushSample.timestamp)).join(PushSeries, PushSample.series_id == PushSeries.id)
                .where(PushSeries.customer_id == self.customer_id(slug), PushSeries.series == series))

    def count_pushed(self, slug: str, series: str) -> int:
        with self.transaction() as session:
            return session.scalar(
                select(func.count()).select_from(PushSample).join(PushSeries, PushSample.series_id == PushSeries.id)
                .where(PushSeries.customer_id == self.customer_id(slug), PushSeries.series == series))

    def pushed_series(self, slug: str) -> list[str]:
        """Series names the tenant has pushed and still holds samples of."""
        with self.transaction() as session:
            return list(session.scalars(
                select(PushSeries.series).distinct()
                .where(PushSeries.customer_id == self.customer_id(slug),
                       select(PushSample.series_id).where(PushSample.series_id == PushSeries.id).exists())
                .order_by(PushSeries.series)))
