"""Just enough of Prometheus for KEDA and Grafana to read Helios' series: instant-vector selectors
(``name{label="v", other!="x", re=~"a.*", nre!~"b"}``), the exposition text format and the HTTP
API's response envelope.

KEDA's prometheus scaler reads exactly one vector element and treats an empty result as 0, which
scales a workload to its minimum; so a selector that matches nothing or several series is an
error here, never an empty success.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from helios_pipelines.core.exposition import Sample, exposition, format_value  # noqa: F401 - served from here too

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_MATCHER = re.compile(rf"\s*({LABEL})\s*(=~|!~|!=|=)\s*({_STRING})\s*")
_SELECTOR = re.compile(rf"^\s*({NAME})?\s*(?:\{{(.*)\}})?\s*$", re.S)


class QueryError(ValueError):
    """A query Helios cannot answer; ``error_type`` follows the Prometheus API ('bad_data', ...)."""

    def __init__(self, message: str, error_type: str = "bad_data"):
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str
    pattern: re.Pattern | None = field(default=None, compare=False)

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self.pattern.fullmatch(actual) is not None  # Prometheus anchors regexes
        return hit if self.op == "=~" else not hit


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def parse_selector(query: str) -> list[Matcher]:
    """Parse an instant-vector selector; anything else (functions, operators, ranges) is an error."""
    match = _SELECTOR.match(query or "")
    if not match:
        raise QueryError(
            f"unsupported query {query!r}: Helios answers instant-vector selectors such as "
            'helios_forecast_value{customer="gaming-corp", metric="concurrent_users", horizon="1h"}'
        )
    name, body = match.group(1), match.group(2)
    matchers = [Matcher("__name__", "=", name)] if name else []
    if body is not None and body.strip():
        for part in _split_matchers(body):
            found = _MATCHER.fullmatch(part)
            if not found:
                raise QueryError(f"cannot parse label matcher {part.strip()!r} in {query!r}")
            label, op, raw = found.groups()
            value = _unquote(raw)
            pattern = None
            if op in ("=~", "!~"):
                try:
                    pattern = re.compile(value)
                except re.error as exc:
                    raise QueryError(f"invalid regular expression {value!r}: {exc}") from None
            matchers.append(Matcher(label, op, value, pattern))
    if not matchers or all(m.op in ("!=", "!~") or (m.op == "=~" and m.pattern.fullmatch("")) for m in matchers):
        raise QueryError("vector selector must contain at least one non-empty matcher")
    return matchers


def _split_matchers(body: str) -> list[str]:
    """Split on commas outside quoted strings (a trailing comma is allowed, as in Prometheus)."""
    parts, current, quote, escaped = [], [], None, False
    for char in body:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif quote:
            current.append(char)
            if char == quote:
                quote = None
        elif char in "\"'":
            current.append(char)
            quote = char
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    tail = "".join(current)
    if tail.strip():
        parts.append(tail)
    return parts


def select(samples: list[Sample], query: str) -> list[Sample]:
    matchers = parse_selector(query)
    return [s for s in samples if all(m.matches(s.all_labels) for m in matchers)]


def select_one(samples: list[Sample], query: str) -> Sample:
    """Exactly one series, or a QueryError saying why not (KEDA would misread anything else)."""
    found = select(samples, query)
    if not found:
        raise QueryError(f"no series matches {query!r}: check the customer, metric and horizon labels", "not_found")
    if len(found) > 1:
        shown = ", ".join(_series_id(s) for s in found[:5])
        raise QueryError(f"{len(found)} series match {query!r} ({shown}); narrow the selector to exactly one")
    return found[0]


def _series_id(sample: Sample) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
    return f"{sample.name}{{{labels}}}"


def vector_response(samples: list[Sample], timestamp: float) -> dict:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": s.all_labels, "value": [timestamp, format_value(s.value)]} for s in samples],
        },
    }


def error_response(error: QueryError) -> dict:
    return {"status": "error", "errorType": error.error_type, "error": str(error)}
