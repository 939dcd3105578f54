"""Pushed samples: the two wire formats Helios accepts, and the rules every pushed sample must meet.

Wire formats
------------
**Prometheus remote-write 1.0** (``POST /api/v1/write``), exactly as Prometheus sends it: a protobuf
``WriteRequest`` compressed with snappy's *block* format, ``Content-Encoding: snappy``,
``Content-Type: application/x-protobuf``, ``X-Prometheus-Remote-Write-Version: 0.1.0``. Decoded by
the ``protobuf`` library with Prometheus' own messages (``remote_write_proto``); snappy by cramjam.
Fields Helios does not use (metadata, exemplars) are skipped.

**The JSON batch** (``POST /ingest``, optionally ``Content-Encoding: gzip``)::

    {"samples": [
        {"metric": "game_server_active_players",      # the metric's series name or its logical name
         "labels": {"pod": "eu-1"},                   # optional; strings to strings
         "timestamp": 1763596800000,                  # unix ms, unix s (number) or RFC 3339 text
         "value": 5120.0}
    ]}

Numeric timestamps above 1e11 are milliseconds (1e11 seconds is the year 5138), others seconds.
Unknown keys are errors, so a typo never drops data silently. The body is validated by the pydantic
models :class:`JsonBatch` / :class:`JsonSample` (strict: no numbers as text, no booleans as numbers).

Rules (each broken rule is an :class:`IngestError` with the HTTP status it maps to)
----------------------------------------------------------------------------------
- Size, checked before the work it bounds: at most ``MAX_BODY_BYTES`` on the wire (checked while
  reading), ``MAX_DECODED_BYTES`` once decompressed (checked before inflating: the decompressor's
  output buffer has at most that size) and ``MAX_SAMPLES`` samples per request (counted while
  decoding, series by series, so an oversized request is not decoded in full) (413).
- Labels: at most ``MAX_LABELS`` per series, names of at most ``MAX_NAME_LENGTH`` characters, values
  of at most ``MAX_LABEL_VALUE_LENGTH`` (422). Client text echoed in an error is cut short.
- Metrics: the series name (``__name__`` for remote-write) must be a metric the tenant configures,
  by its ``series`` or its logical name (422). A Prometheus pushing everything it scrapes should keep
  only those names with ``write_relabel_configs`` (see the README).
- Values: finite floats; NaN and +-Inf are refused (422). Prometheus' *staleness marker* (one NaN
  bit pattern it sends when a series disappears) is not a value but the end of one: it is dropped, and
  the series simply has a gap from there.
- Time: each sample lies in ``[now - retention of the plan, now + MAX_FUTURE]`` (422): older data
  would be deleted by retention at once, later data is a clock error. Within one series of one request
  timestamps strictly increase (remote-write's own rule; 422 "out of order"). Across requests order
  does not matter: storage is idempotent, so retries and backfills may arrive late.

Label sets: a pushed series maps to a configured metric by its name alone. Several label sets under one
name (per pod, per instance) are stored apart and summed per grid point when the metric is read (see
``sources/push.py``); a metric's ``query`` and its label matchers do not apply to pushed data.

A request is all or nothing: one bad sample refuses the whole request and nothing is stored, so a
client never has to work out which part was kept.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import cramjam
from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from helios_pipelines.core.ops import remote_write_proto
from helios_pipelines.core.tenants import TenantConfig, UnknownMetricError

MAX_BODY_BYTES = 8 * 1024 * 1024
# Prometheus sends at most a few thousand samples per request (max_samples_per_send); 16 MiB
# decompressed holds a full 50,000-sample batch with long label sets.
MAX_DECODED_BYTES = 16 * 1024 * 1024
MAX_SAMPLES = 50_000
MAX_LABELS = 30  # per series, besides __name__
MAX_NAME_LENGTH = 256  # metric and label names, in characters
MAX_LABEL_VALUE_LENGTH = 2048
MAX_TIMESTAMP_MAGNITUDE = 1e16  # unix ms of about year 318,857: anything larger is not a time
MAX_FUTURE = timedelta(minutes=5)
MILLISECOND_TIMESTAMPS_ABOVE = 1e11
# Prometheus marks a series gone stale with this NaN (value.StaleNaN in prometheus/model).
STALE_NAN_BITS = 0x7FF0000000000002

REMOTE_WRITE_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"


class IngestError(ValueError):
    """A push refused as a whole; ``status`` is the HTTP status it maps to, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class PushedSeries:
    """One pushed label set of one metric: (unix ms, value) pairs in the order they came."""

    name: str
    labels: tuple[tuple[str, str], ...]  # sorted, without __name__
    samples: list[tuple[int, float]]


@dataclass(frozen=True)
class Batch:
    """A validated request: samples per configured series name, per label set."""

    series: dict[str, dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]]

    @property
    def sample_count(self) -> int:
        return sum(len(s) for by_labels in self.series.values() for s in by_labels.values())


# ---- decompression ------------------------------------------------------------------------------
def decompress(body: bytes, encoding: str | None) -> bytes:
    """The request body without its Content-Encoding. Decompression writes into at most
    ``MAX_DECODED_BYTES``: a body that would inflate past it is refused (413) without inflating it."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding == "snappy":
        try:
            # Snappy's block format states the decompressed length up front; the output buffer is that
            # size (checked first), so the decompressor cannot write more than the limit.
            size = cramjam.snappy.decompress_raw_len(body)
            _check_decoded_size(size)
            output = bytearray(size)
            written = cramjam.snappy.decompress_raw_into(body, output)
        except cramjam.DecompressionError as exc:
            raise IngestError(400, f"body is not snappy block-compressed data: {exc}") from exc
        if written != size:
            raise IngestError(400, f"snappy body announces {size} bytes but holds {written}")
        return bytes(output)
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, MAX_DECODED_BYTES + 1)
        except zlib.error as exc:
            raise IngestError(400, f"body is not gzip data: {exc}") from exc
        _check_decoded_size(len(data))
        if not inflater.eof:
            raise IngestError(400, "gzip body is truncated")
        return data
    raise IngestError(415, f"Content-Encoding '{_shown(encoding)}' is not supported; use snappy (remote-write) or gzip (JSON)")


def _check_decoded_size(size: int) -> None:
    if size > MAX_DECODED_BYTES:
        raise IngestError(413, f"body decompresses to {size} bytes, more than the limit of {MAX_DECODED_BYTES}; "
                               "send smaller batches")


# ---- Prometheus remote-write ----------------------------------------------------------------------
def decode_write_request(data: bytes) -> list[PushedSeries]:
    """A decompressed remote-write ``WriteRequest`` -> its series (metadata-only requests give none).

    The series are parsed one at a time and counted as they come, so a request over the sample limit
    is refused (413) at the series that passes it, before the rest is decoded.
    """
    try:
        encoded = remote_write_proto.SeriesView.FromString(data).timeseries
    except DecodeError as exc:
        raise IngestError(400, f"body is not a remote-write WriteRequest: {exc}") from exc
    series, total = [], 0
    for position, raw in enumerate(encoded):
        try:
            message = remote_write_proto.TimeSeries.FromString(raw)
        except DecodeError as exc:
            raise IngestError(400, f"body is not a remote-write WriteRequest: series {position}: {exc}") from exc
        total += len(message.samples)
        if total > MAX_SAMPLES:
            raise IngestError(413, f"more than {MAX_SAMPLES} samples in one request (passed at series {position + 1} "
                                   f"of {len(encoded)}); the limit is {MAX_SAMPLES}: send smaller batches")
        if len(message.labels) > MAX_LABELS + 1:
            raise IngestError(422, f"series {position} has {len(message.labels)} labels; the limit is {MAX_LABELS} "
                                   "besides __name__")
        labels = {label.name: label.value for label in message.labels}
        name = labels.pop("__name__", None)
        if not name:
            raise IngestError(422, f"series {position} has no __name__ label")
        if message.histograms:
            raise IngestError(422, f"series {_shown(name)!r}: native histograms are not supported")
        check_series_labels(name, labels)
        series.append(PushedSeries(name, tuple(sorted(labels.items())),
                                   [(sample.timestamp, sample.value) for sample in message.samples]))
    return series


def is_stale_marker(value: float) -> bool:
    return math.isnan(value) and struct.unpack("<Q", struct.pack("<d", value))[0] == STALE_NAN_BITS


def check_series_labels(name: str, labels: dict[str, str]) -> None:
    """The size limits of a pushed series' name and labels (422 naming the series and the label)."""
    if len(name) > MAX_NAME_LENGTH:
        raise IngestError(422, f"metric name {_shown(name)!r} is {len(name)} characters; the limit is {MAX_NAME_LENGTH}")
    if len(labels) > MAX_LABELS:
        raise IngestError(422, f"series {name!r} has {len(labels)} labels; the limit is {MAX_LABELS}")
    for label, value in labels.items():
        if len(label) > MAX_NAME_LENGTH:
            raise IngestError(422, f"series {name!r}: label name {_shown(label)!r} is {len(label)} characters; "
                                   f"the limit is {MAX_NAME_LENGTH}")
        if len(value) > MAX_LABEL_VALUE_LENGTH:
            raise IngestError(422, f"series {name!r}: the value of label {label!r} is {len(value)} characters; "
                                   f"the limit is {MAX_LABEL_VALUE_LENGTH}")


def _shown(text: str, limit: int = 80) -> str:
    """Client text echoed in an error, cut short: an error never returns a large input."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# ---- JSON batch ---------------------------------------------------------------------------------
class JsonSample(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    metric: str = Field(min_length=1)
    labels: dict[str, str] | None = None
    timestamp: int | float | str = Field(description="unix ms, unix s or RFC 3339 with an offset")
    value: float = Field(allow_inf_nan=False)


class JsonBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    samples: list[JsonSample] = Field(max_length=MAX_SAMPLES)


def decode_json_batch(data: bytes) -> list[PushedSeries]:
    """A JSON batch (see the module docstring) -> one :class:`PushedSeries` per sample.

    Parsed and checked by pydantic (in Rust, with a nesting limit, so deep nesting is a 400 and not
    a recursion error); the list's length is checked before its items are validated."""
    try:
        batch = JsonBatch.model_validate_json(data)
    except ValidationError as exc:
        raise _json_error(exc.errors(include_url=False)[0]) from None
    series = []
    for position, sample in enumerate(batch.samples):
        labels = sample.labels or {}
        check_series_labels(sample.metric, labels)
        timestamp = _json_timestamp(sample.timestamp, f"samples[{position}]")
        series.append(PushedSeries(sample.metric, tuple(sorted(labels.items())), [(timestamp, sample.value)]))
    return series


def _json_error(error: dict) -> IngestError:
    """The first pydantic error of a JSON batch as the IngestError a client reads."""
    kind, location = error["type"], error["loc"]
    if kind in ("json_invalid", "json_type"):
        return IngestError(400, f"body is not JSON: {error['msg']}")
    if len(location) < 2:
        if location == ("samples",) and kind == "too_long":
            return IngestError(413, f"{error['ctx']['actual_length']} samples in one request; the limit is "
                                    f"{MAX_SAMPLES}: send smaller batches")
        return IngestError(400, f'expected {{"samples": [...]}} and nothing else ({error["msg"]} at '
                                f'{".".join(map(str, location)) or "the top level"})')
    where = f"samples[{location[1]}]"
    field = location[2] if len(location) > 2 else None
    shown = _shown(repr(error.get("input")))
    if field is None:
        return IngestError(400, f"{where} is not an object")
    if kind in ("missing", "extra_forbidden"):
        return IngestError(400, f"{where}: {'missing' if kind == 'missing' else 'unknown'} key {field!r}; "
                                "a sample has metric, labels (optional), timestamp and value")
    if field == "value":
        if kind == "finite_number":
            return IngestError(422, f"{where}: value {shown} is not a finite number")
        return IngestError(422, f"{where}: value {shown} is not a number")
    if field == "timestamp":
        return IngestError(400, f"{where}: timestamp is neither unix seconds/milliseconds nor RFC 3339 with an offset")
    if field == "labels":
        return IngestError(400, f"{where}: labels must map strings to strings")
    return IngestError(400, f"{where}: metric must be a non-empty string")


def _json_timestamp(raw: int | float | str, where: str) -> int:
    """Unix ms, unix s or RFC 3339 -> unix ms."""
    if isinstance(raw, int | float):
        if not math.isfinite(raw) or abs(raw) > MAX_TIMESTAMP_MAGNITUDE:
            raise IngestError(400, f"{where}: timestamp {raw!r} is not a time")
        return int(round(raw if abs(raw) > MILLISECOND_TIMESTAMPS_ABOVE else raw * 1000))
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is not None and moment.tzinfo is not None:
        return int(round(moment.timestamp() * 1000))
    raise IngestError(400, f"{where}: timestamp {_shown(raw)!r} is neither unix seconds/milliseconds nor RFC 3339 "
                           "with an offset")


# ---- validation ---------------------------------------------------------------------------------
def validate(
    pushed: list[PushedSeries], tenant: TenantConfig, retention: timedelta, now: datetime
) -> Batch:
    """The pushed series checked against the rules of the module docstring, keyed by series name."""
    oldest = int((now - retention).timestamp() * 1000)
    latest = int((now + MAX_FUTURE).timestamp() * 1000)
    window = (
        f"accepted: {_iso(oldest)} .. {_iso(latest)} (the plan's {retention.days}-day retention "
        f"to {int(MAX_FUTURE.total_seconds() // 60)} minutes ahead)"
    )
    grouped: dict[str, dict[tuple, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for item in pushed:
        try:
            series = tenant.metrics[tenant.resolve_metric(item.name)].series
        except UnknownMetricError:
            known = ", ".join(sorted(m.series for m in tenant.metrics.values()))
            raise IngestError(
                422, f"tenant '{tenant.id}' has no metric '{_shown(item.name)}'; configured series: {known}"
            ) from None
        target = grouped[series][item.labels]
        for timestamp, value in item.samples:
            if is_stale_marker(value):
                continue
            where = f"{item.name}{_format_labels(item.labels)} at {_iso(timestamp)}"
            if not math.isfinite(value):
                raise IngestError(422, f"{where}: value {value} is not a finite number")
            if timestamp < oldest or timestamp > latest:
                raise IngestError(422, f"{where}: timestamp is outside the accepted window; {window}")
            if target and timestamp <= target[-1][0]:
                raise IngestError(
                    422, f"{where}: out of order, not after the previous sample of the series at "
                    f"{_iso(target[-1][0])}; timestamps of a series must increase within a request"
                )
            target.append((timestamp, value))
    return Batch({name: {labels: samples for labels, samples in by.items() if samples} for name, by in grouped.items()})


def _iso(milliseconds: int) -> str:
    try:
        return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{milliseconds} ms"


def _format_labels(labels: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""
