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
- **Atomic, per request.** A write is stored all or nothing, across all the series and days it
  touches: every new day file is first written in full to a temporary file beside the one it replaces
  and fsynced (prepare); then a commit record listing the renames is written and renamed into place
  (the commit point); then the renames are done and the record deleted. A process killed before the
  commit point leaves only temporary files, which the next writer deletes (nothing stored); killed
  after it, the record is rolled forward by the next reader or writer of the tenant (everything
  stored). Writers of one tenant take an exclusive ``flock`` for the whole write, so two requests (or
  two service processes) never lose each other's samples.

Cost: a write rewrites the day files it touches, so it grows with a day's samples of one series
(1,440 rows per label set at a 1-minute scrape). Series with hundreds of label sets scraped every few
seconds would want append-only segments compacted later; Helios' plans (at most 50 metrics, summed
label sets) do not need that yet.
"""

from __future__ import annotations

import fcntl
import json
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
COMMIT_RECORD = ".commit.json"  # renames of a committed write not yet all done (see the docstring)
TEMPORARY_SUFFIX = ".tmp"

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
        self._settled(tenant_id)
        return sorted(unquote(p.name) for p in directory.iterdir() if p.is_dir() and any(p.glob("*.parquet")))

    def _day_files(self, tenant_id: str, series: str) -> dict[date, Path]:
        directory = self.series_dir(tenant_id, series)
        if not directory.is_dir():
            return {}
        self._settled(tenant_id)
        return {date.fromisoformat(p.stem): p for p in directory.glob("*.parquet")}

    # ---- writing ------------------------------------------------------------------------------
    def write(self, tenant_id: str, samples: dict[str, dict[LabelSet, list[tuple[int, float]]]]) -> int:
        """Merge ``series -> label set -> [(unix ms, value)]`` into the tenant's files, all or nothing;
        returns how many samples were new (the rest replaced rows with the same identity)."""
        tenant_dir = self.tenant_dir(tenant_id)
        tenant_dir.mkdir(parents=True, exist_ok=True)
        with _locked(tenant_dir):
            self._recover(tenant_dir)
            new, renames = 0, []
            try:
                for series, by_labels in samples.items():
                    by_day: dict[int, list[tuple[str, int, float]]] = defaultdict(list)
                    for labels, points in by_labels.items():
                        text = format_labels(labels)
                        for timestamp, value in points:
                            by_day[timestamp // DAY_MS].append((text, timestamp, value))
                    directory = self.series_dir(tenant_id, series)
                    directory.mkdir(exist_ok=True)
                    for day, rows in sorted(by_day.items()):
                        target = directory / f"{_day(day).isoformat()}.parquet"
                        added, prepared = _prepare_day(target, rows)
                        new += added
                        renames.append((prepared, target))
            except BaseException:
                for prepared, _ in renames:
                    prepared.unlink(missing_ok=True)
                raise
            _commit(tenant_dir, renames)
        return new

    def _recover(self, tenant_dir: Path) -> None:
        """Finish the write a killed process committed, and delete what an uncommitted one prepared
        (the caller holds the tenant's lock)."""
        record = tenant_dir / COMMIT_RECORD
        if record.exists():
            for prepared, target in json.loads(record.read_text()):
                if (tenant_dir / prepared).exists():
                    os.replace(tenant_dir / prepared, tenant_dir / target)
            _fsync_directories({tenant_dir / target for _, target in json.loads(record.read_text())})
            record.unlink()
        for stray in [*tenant_dir.glob(f"*/.*{TEMPORARY_SUFFIX}"), *tenant_dir.glob(f".commit.*{TEMPORARY_SUFFIX}")]:
            stray.unlink()

    def _settled(self, tenant_id: str) -> None:
        """Readers roll a committed write forward first, so they never see half of one."""
        tenant_dir = self.tenant_dir(tenant_id)
        if (tenant_dir / COMMIT_RECORD).exists():
            with _locked(tenant_dir):
                self._recover(tenant_dir)

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
        tenant_dir = self.tenant_dir(tenant_id)
        if not tenant_dir.is_dir():
            return 0
        removed = 0
        with _locked(tenant_dir):
            self._recover(tenant_dir)
            for path in tenant_dir.glob("*/*.parquet"):
                if date.fromisoformat(path.stem) < cutoff:
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


def _prepare_day(path: Path, rows: list[tuple[str, int, float]]) -> tuple[int, Path]:
    """The day file with ``rows`` merged in, written in full to a temporary file beside ``path``;
    returns (rows new to the day, the temporary file)."""
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
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            pq.write_table(kept, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return kept.num_rows - existing.num_rows, Path(temporary)


def _commit(tenant_dir: Path, renames: list[tuple[Path, Path]]) -> None:
    """Make prepared files the stored ones: the commit record's rename is the point after which the
    write counts as done (see the module docstring)."""
    if not renames:
        return
    relative = [(str(prepared.relative_to(tenant_dir)), str(target.relative_to(tenant_dir)))
                for prepared, target in renames]
    descriptor, pending = tempfile.mkstemp(dir=tenant_dir, prefix=".commit.", suffix=TEMPORARY_SUFFIX)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(relative, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(pending, tenant_dir / COMMIT_RECORD)
    _fsync_directories({tenant_dir / COMMIT_RECORD})
    for prepared, target in renames:
        os.replace(prepared, target)
    _fsync_directories({target for _, target in renames})
    (tenant_dir / COMMIT_RECORD).unlink()


def _fsync_directories(files: set[Path]) -> None:
    """A rename is durable once its directory is fsynced."""
    for directory in {file.parent for file in files}:
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
