"""The agent's local disk: batches waiting for Helios, and how far each metric has been collected.

A batch is written to the spool (as the gzip'd JSON body it will be sent as) before the metric's
high-water mark moves past its samples, and deleted only after Helios acknowledged it. So a crash or
an outage at any moment loses nothing: at worst a batch is sent twice, which Helios' idempotent store
absorbs. Every file is written to a temporary name, fsynced and renamed, so none is ever half-written.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

BATCH_SUFFIX = ".json.gz"


def write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Spool:
    """Batches on disk, delivered oldest first; refused ones are kept aside under ``rejected/``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.rejected = self.directory / "rejected"
        self.rejected.mkdir(parents=True, exist_ok=True)
        self._next = max((int(p.name.removesuffix(BATCH_SUFFIX)) for p in self.pending()), default=0) + 1

    def put(self, samples: list[dict]) -> Path:
        body = gzip.compress(json.dumps({"samples": samples}, separators=(",", ":")).encode(), mtime=0)
        path = self.directory / f"{self._next:012d}{BATCH_SUFFIX}"
        write_atomically(path, body)
        self._next += 1
        return path

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{BATCH_SUFFIX}"))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.pending())

    def reject(self, path: Path) -> None:
        path.replace(self.rejected / path.name)


class HighWaterMarks:
    """Per series, the unix ms up to which samples are safely in the spool (or delivered)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.marks: dict[str, int] = json.loads(self.path.read_text())["high_water_ms"] if self.path.exists() else {}

    def get(self, series: str) -> int | None:
        return self.marks.get(series)

    def advance(self, series: str, milliseconds: int) -> None:
        self.marks[series] = milliseconds
        write_atomically(self.path, json.dumps({"high_water_ms": self.marks}, indent=1).encode())
