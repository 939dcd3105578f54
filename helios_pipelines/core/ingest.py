"""Pushed samples: the two wire formats Helios accepts, and the rules every pushed sample must meet.

Wire formats
------------
**Prometheus remote-write 1.0** (``POST /api/v1/write``), exactly as Prometheus sends it: a protobuf
``WriteRequest`` compressed with snappy's *block* format, ``Content-Encoding: snappy``,
``Content-Type: application/x-protobuf``, ``X-Prometheus-Remote-Write-Version: 0.1.0``. The four
messages involved are tiny, so they are decoded by hand here (varints and length-delimited fields)
rather than through generated code; fields Helios does not use (metadata, exemplars) are skipped.

**The JSON batch** (``POST /ingest``, optionally ``Content-Encoding: gzip``)::

    {"samples": [
        {"metric": "game_server_active_players",      # the metric's series name or its logical name
         "labels": {"pod": "eu-1"},                   # optional; strings to strings
         "timestamp": 1763596800000,                  # unix ms, unix s (number) or RFC 3339 text
         "value": 5120.0}
    ]}

Numeric timestamps above 1e11 are milliseconds (1e11 seconds is the year 5138), others seconds.
Unknown keys are errors, so a typo never drops data silently.

Rules (each broken rule is an :class:`IngestError` with the HTTP status it maps to)
----------------------------------------------------------------------------------
- Size: at most ``MAX_BODY_BYTES`` on the wire, ``MAX_DECODED_BYTES`` once decompressed, and
  ``MAX_SAMPLES`` samples per request (413).
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

import json
import math
import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import cramjam

from helios_pipelines.core.tenants import TenantConfig, UnknownMetricError

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_DECODED_BYTES = 64 * 1024 * 1024
MAX_SAMPLES = 50_000
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
    """The request body without its Content-Encoding, refusing anything that inflates past the limit."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding == "snappy":
        try:
            size = cramjam.snappy.decompress_raw_len(body)
        except cramjam.DecompressionError as exc:
            raise IngestError(400, f"body is not snappy block-compressed data: {exc}") from exc
        _check_decoded_size(size)
        try:
            return bytes(cramjam.snappy.decompress_raw(body))
        except cramjam.DecompressionError as exc:
            raise IngestError(400, f"body is not snappy block-compressed data: {exc}") from exc
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
    raise IngestError(415, f"Content-Encoding '{encoding}' is not supported; use snappy (remote-write) or gzip (JSON)")


def _check_decoded_size(size: int) -> None:
    if size > MAX_DECODED_BYTES:
        raise IngestError(413, f"body decompresses to more than {MAX_DECODED_BYTES} bytes; send smaller batches")


# ---- Prometheus remote-write ----------------------------------------------------------------------
def decode_write_request(data: bytes) -> list[PushedSeries]:
    """A decompressed remote-write ``WriteRequest`` -> its series (metadata-only requests give none).

    WriteRequest{1: repeated TimeSeries}; TimeSeries{1: repeated Label, 2: repeated Sample,
    4: repeated Histogram}; Label{1: name, 2: value}; Sample{1: double value, 2: int64 timestamp}.
    """
    series = []
    try:
        for field, _, payload in _fields(data):
            if field == 1:
                series.append(_decode_time_series(payload))
    except (IndexError, struct.error, UnicodeDecodeError, _MalformedProtobuf) as exc:
        raise IngestError(400, f"body is not a remote-write WriteRequest: {exc or 'truncated message'}") from exc
    return series


class _MalformedProtobuf(ValueError):
    pass


def _decode_time_series(data: bytes) -> PushedSeries:
    labels: dict[str, str] = {}
    samples: list[tuple[int, float]] = []
    for field, _, payload in _fields(data):
        if field == 1:
            name = value = ""
            for label_field, _, text in _fields(payload):
                if label_field == 1:
                    name = text.decode()
                elif label_field == 2:
                    value = text.decode()
            labels[name] = value
        elif field == 2:
            value, timestamp = 0.0, 0
            for sample_field, wire_type, raw in _fields(payload):
                if sample_field == 1 and wire_type == 1:
                    value = raw
                elif sample_field == 2 and wire_type == 0:
                    timestamp = raw - (1 << 64) if raw >= 1 << 63 else raw  # int64 as two's complement
            samples.append((timestamp, value))
        elif field == 4:
            raise IngestError(422, f"series {labels.get('__name__', '?')!r}: native histograms are not supported")
    name = labels.pop("__name__", None)
    if not name:
        raise IngestError(422, f"a pushed series has no __name__ label (labels {labels})")
    return PushedSeries(name, tuple(sorted(labels.items())), samples)


def _fields(data: bytes):
    """(field number, wire type, value) of each field: ints for varints, floats for 64-bit fields
    (NaN payload bits kept, see :data:`STALE_NAN_BITS`), bytes for length-delimited ones."""
    position, end = 0, len(data)
    while position < end:
        key, position = _varint(data, position)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
        elif wire_type == 1:
            (value,) = struct.unpack_from("<d", data, position)
            position += 8
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > end:
                raise _MalformedProtobuf(f"field {field} runs past the end of its message")
            value, position = data[position : position + length], position + length
        elif wire_type == 5:
            value, position = data[position : position + 4], position + 4
        else:
            raise _MalformedProtobuf(f"unknown wire type {wire_type} for field {field}")
        if position > end:
            raise _MalformedProtobuf("truncated message")
        yield field, wire_type, value


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift >= 70:
            raise _MalformedProtobuf("varint longer than 10 bytes")


def is_stale_marker(value: float) -> bool:
    return math.isnan(value) and struct.unpack("<Q", struct.pack("<d", value))[0] == STALE_NAN_BITS


# ---- JSON batch ---------------------------------------------------------------------------------
SAMPLE_KEYS = {"metric", "labels", "timestamp", "value"}


def decode_json_batch(data: bytes) -> list[PushedSeries]:
    """A JSON batch (see the module docstring) -> one :class:`PushedSeries` per sample."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IngestError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or set(body) != {"samples"} or not isinstance(body["samples"], list):
        keys = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise IngestError(400, f'expected {{"samples": [...]}} and nothing else, got {keys}')
    series = []
    for position, sample in enumerate(body["samples"]):
        where = f"samples[{position}]"
        if not isinstance(sample, dict):
            raise IngestError(400, f"{where} is not an object")
        missing, unknown = {"metric", "timestamp", "value"} - set(sample), set(sample) - SAMPLE_KEYS
        if missing or unknown:
            raise IngestError(400, f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
        metric, labels = sample["metric"], sample.get("labels") or {}
        if not isinstance(metric, str) or not metric:
            raise IngestError(400, f"{where}: metric must be a non-empty string")
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise IngestError(400, f"{where}: labels must map strings to strings")
        value = sample["value"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise IngestError(422, f"{where}: value {value!r} is not a number")
        timestamp = _json_timestamp(sample["timestamp"], where)
        series.append(PushedSeries(metric, tuple(sorted(labels.items())), [(timestamp, float(value))]))
    return series


def _json_timestamp(raw: object, where: str) -> int:
    """Unix ms, unix s or RFC 3339 -> unix ms."""
    if isinstance(raw, bool):
        raise IngestError(400, f"{where}: timestamp {raw!r} is not a time")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise IngestError(400, f"{where}: timestamp {raw!r} is not a time")
        return int(round(raw if abs(raw) > MILLISECOND_TIMESTAMPS_ABOVE else raw * 1000))
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return int(round(moment.timestamp() * 1000))
    raise IngestError(400, f"{where}: timestamp {raw!r} is neither unix seconds/milliseconds nor RFC 3339 with an offset")


# ---- validation ---------------------------------------------------------------------------------
def validate(
    pushed: list[PushedSeries], tenant: TenantConfig, retention: timedelta, now: datetime
) -> Batch:
    """The pushed series checked against the rules of the module docstring, keyed by series name."""
    total = sum(len(s.samples) for s in pushed)
    if total > MAX_SAMPLES:
        raise IngestError(413, f"{total} samples in one request; the limit is {MAX_SAMPLES}: send smaller batches")
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
                422, f"tenant '{tenant.id}' has no metric '{item.name}'; configured series: {known}"
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
