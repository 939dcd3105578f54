"""Durable storage of pushed samples: one Parquet file per tenant, series and UTC day.

Layout: ``<root>/<tenant>/<series, %-quoted>/<YYYY-MM-DD>.parquet`` with the columns ``labels``
(the label set without ``__name__``, as canonical ``k="v",...`` text), ``timestamp`` (unix ms) and
``value``; ``<root>`` is ``$HELIOS_HOME/push``.

Why files and not the Helios database: the data is an append-mostly time series read back as whole
windows of a few series (a training window, a coverage check), which is what a columnar file does
well and a row store does badly (millions of rows per tenant, one index lookup per sample). Day files
make retention a matter of deleting files, and keep each rewrite small.

Why it is safe:

- **Tenant isolation.** The tenant directory comes from the authenticated key (the caller passes the
  tenant id it authenticated), never from the payload; series directory names are %-quoted so no
  name can climb out of its tenant's directory.
- **Idempotent.** A sample's identity is (series, label set, timestamp). Writing merges into the day
  file and keeps one row per identity (the latest write wins), so a retried or replayed request adds
  nothing: clients may resend whatever they are unsure about.
- **Atomic.** A day file is rewritten to a temporary file in the same directory, fsynced and renamed
  over the old one, so a reader or a crash sees either the old or the new file, never half of one.
  Writers of one series take an exclusive ``flock`` for the read-merge-rename, so two requests (or two
  service processes) never lose each other's samples.

Cost: a write rewrites the day files it touches, so it grows with a day's samples of one series
(1,440 rows per label set at a 1-minute scrape). Series with hundreds of label sets scraped every few
seconds would want append-only segments compacted later; Helios' plans (at most 50 metrics, summed
label sets) do not need that yet.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from helios_pipelines.core.settings import helios_home

SCHEMA = pa.schema([("labels", pa.string()), ("timestamp", pa.int64()), ("value", pa.float64())])
DAY_MS = 86_400_000
LOCK_FILE = ".lock"

LabelSet = tuple[tuple[str, str], ...]


def push_root() -> Path:
    return helios_home() / "push"


def format_labels(labels: LabelSet) -> str:
    """The canonical text of a label set (sorted ``k="v"`` pairs); empty for no labels."""
    return ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(labels))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class PushStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else push_root()

    # ---- layout -------------------------------------------------------------------------------
    def tenant_dir(self, tenant_id: str) -> Path:
        return self.root / tenant_id

    def series_dir(self, tenant_id: str, series: str) -> Path:
        return self.tenant_dir(tenant_id) / quote(series, safe="")

    def series(self, tenant_id: str) -> list[str]:
        """Series names the tenant has pushed and still holds."""
        directory = self.tenant_dir(tenant_id)
        if not directory.is_dir():
            return []
        return sorted(unquote(p.name) for p in directory.iterdir() if p.is_dir() and any(p.glob("*.parquet")))

    def _day_files(self, tenant_id: str, series: str) -> dict[date, Path]:
        directory = self.series_dir(tenant_id, series)
        if not directory.is_dir():
            return {}
        return {date.fromisoformat(p.stem): p for p in directory.glob("*.parquet")}

    # ---- writing ------------------------------------------------------------------------------
    def write(self, tenant_id: str, samples: dict[str, dict[LabelSet, list[tuple[int, float]]]]) -> int:
        """Merge ``series -> label set -> [(unix ms, value)]`` into the tenant's files; returns how many
        samples were new (the rest replaced rows with the same identity)."""
        new = 0
        for series, by_labels in samples.items():
            by_day: dict[int, list[tuple[str, int, float]]] = defaultdict(list)
            for labels, points in by_labels.items():
                text = format_labels(labels)
                for timestamp, value in points:
                    by_day[timestamp // DAY_MS].append((text, timestamp, value))
            directory = self.series_dir(tenant_id, series)
            directory.mkdir(parents=True, exist_ok=True)
            with _locked(directory):
                for day, rows in sorted(by_day.items()):
                    new += self._merge_day(directory / f"{_day(day).isoformat()}.parquet", rows)
        return new

    def _merge_day(self, path: Path, rows: list[tuple[str, int, float]]) -> int:
        labels, timestamps, values = zip(*rows, strict=True)
        incoming = pa.table([pa.array(labels), pa.array(timestamps, pa.int64()), pa.array(values, pa.float64())], schema=SCHEMA)
        existing = pq.read_table(path, schema=SCHEMA) if path.exists() else SCHEMA.empty_table()
        # Incoming rows come last, so keeping the last row of each identity lets a rewrite win.
        merged = pa.concat_tables([existing, incoming]).append_column(
            "order", pa.array(range(existing.num_rows + incoming.num_rows), pa.int64())
        )
        last = merged.group_by(["labels", "timestamp"], use_threads=False).aggregate([("order", "max")])
        kept = merged.take(last["order_max"]).drop_columns(["order"])
        kept = kept.sort_by([("labels", "ascending"), ("timestamp", "ascending")])
        _write_atomically(kept, path)
        return kept.num_rows - existing.num_rows

    # ---- reading ------------------------------------------------------------------------------
    def read(self, tenant_id: str, series: str, start_ms: int, end_ms: int) -> pa.Table:
        """Samples of ``series`` with ``start_ms <= timestamp < end_ms``, ordered by label set and time."""
        days = self._day_files(tenant_id, series)
        wanted = [
            days[d] for d in sorted(days)
            if _day(start_ms // DAY_MS) <= d <= _day((end_ms - 1) // DAY_MS)
        ]
        if not wanted:
            return SCHEMA.empty_table()
        table = pa.concat_tables(pq.read_table(p, schema=SCHEMA) for p in wanted)
        inside = pc.and_(pc.greater_equal(table["timestamp"], start_ms), pc.less(table["timestamp"], end_ms))
        return table.filter(inside)

    def latest(self, tenant_id: str, series: str) -> int | None:
        """Unix ms of the newest sample of ``series``, None when nothing is stored."""
        days = self._day_files(tenant_id, series)
        if not days:
            return None
        newest = pq.read_table(days[max(days)], columns=["timestamp"], schema=SCHEMA)["timestamp"]
        return pc.max(newest).as_py()

    def count(self, tenant_id: str, series: str) -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self._day_files(tenant_id, series).values())

    # ---- retention ----------------------------------------------------------------------------
    def apply_retention(self, tenant_id: str, retention: timedelta, now: datetime | None = None) -> int:
        """Delete the tenant's day files that end before ``now - retention``; returns how many."""
        cutoff = ((now or datetime.now(UTC)) - retention).date()
        removed = 0
        for series in self.series(tenant_id):
            directory = self.series_dir(tenant_id, series)
            with _locked(directory):
                for day, path in self._day_files(tenant_id, series).items():
                    if day < cutoff:
                        path.unlink()
                        removed += 1
        return removed


def _day(days_since_epoch: int) -> date:
    return date(1970, 1, 1) + timedelta(days=days_since_epoch)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with (directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(table: pa.Table, path: Path) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
