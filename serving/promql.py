"""PromQL over Helios' own series: parsed by ``promql-parser`` (the Rust parser of GreptimeDB, the
grammar of Prometheus), evaluated here at one instant over the samples Helios published for it.

Helios holds no raw history, only the series it publishes each step, so the evaluated subset is the
one its dashboards and KEDA's triggers need: selectors (regexes compiled by RE2, linear in time),
number literals, unary minus, arithmetic and comparison operators (vector/scalar and one-to-one
vector matching with ``on``/``ignoring``), and ``sum``/``avg``/``min``/``max``/``count`` with
``by``/``without``. Anything else (functions such as ``rate``, range selectors, subqueries,
``offset``/``@``, set operators, ``group_left``) is a :class:`QueryError` naming it: those belong to
the customer's Prometheus, where the raw series live. No library evaluates PromQL in Python; this
module is that evaluator, its bounds on input and the API's result envelopes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import promql_parser
import re2

from helios_pipelines.core.ops.exposition import Sample, format_value

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the caller's 400, not a line in our log


class QueryError(ValueError):
    """A query Helios cannot answer; ``error_type`` follows the Prometheus API ('bad_data', ...)."""

    def __init__(self, message: str, error_type: str = "bad_data"):
        super().__init__(message)
        self.error_type = error_type


Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs, __name__ included while it lasts


@dataclass(frozen=True)
class Scalar:
    value: float


Vector = dict[Labels, float]  # one value per label set, as Prometheus' instant vectors
Value = Scalar | Vector

_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": lambda a, b: a / b if b else (math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1, b)),
    "%": lambda a, b: math.fmod(a, b) if b else math.nan,
    "^": lambda a, b: _power(a, b),
}
_COMPARISON: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}
_AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "avg": lambda values: math.fsum(values) / len(values),
    "min": lambda values: min((v for v in values if not math.isnan(v)), default=math.nan),
    "max": lambda values: max((v for v in values if not math.isnan(v)), default=math.nan),
    "count": lambda values: float(len(values)),
}
SUPPORTED = ("selectors, number literals, unary minus, + - * / % ^ and == != > < >= <= (bool), "
             "sum/avg/min/max/count with by/without")


def _power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except (OverflowError, ValueError):
        return math.inf if abs(a) > 1 else math.nan


MAX_QUERY_CHARS = 8192
MAX_OPERATORS = 100  # operators and brackets outside strings
MAX_DEPTH = 32  # brackets inside brackets


def parse(query: str) -> promql_parser.Expr:
    """The parsed expression, or a QueryError with the parser's own message."""
    if not query or not query.strip():
        raise QueryError("the query is empty; give a PromQL expression in 'query'")
    _check_size(query)
    try:
        expr = promql_parser.parse(query)
    except ValueError as exc:
        raise QueryError(f"cannot parse {query[:200]!r}: {exc}") from None
    except BaseException as exc:
        if not is_parser_panic(exc):
            raise
        raise QueryError(f"cannot parse {query[:200]!r}: {exc}") from None
    check(expr)
    return expr


def is_parser_panic(exc: BaseException) -> bool:
    """A panic inside the Rust parser reaches Python as pyo3's PanicException (a BaseException):
    the input's fault, answered as a 400 rather than a dead worker."""
    return type(exc).__name__ == "PanicException"


def _check_size(query: str) -> None:
    """Bounded before parsing: the Rust parser overflows its stack (killing the process) on some
    10,000 nested brackets or chained operators, and evaluation here recurses per level."""
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(query):,} characters long; Helios takes at most {MAX_QUERY_CHARS:,}")
    depth = deepest = operators = 0
    quote, escaped = None, False
    for char in query:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote != "`":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
            deepest = max(deepest, depth)
            operators += 1
        elif char in ")]}":
            depth -= 1
        elif char in "+-*/%^<>=!":
            operators += 1
    if deepest > MAX_DEPTH or operators > MAX_OPERATORS:
        raise QueryError(f"the query nests {deepest} brackets deep with {operators} operators and brackets; "
                         f"Helios takes at most {MAX_DEPTH} deep and {MAX_OPERATORS} in all")


def check(expr) -> None:
    """Refuse, before any work, what the evaluator does not do (naming the function or operator)."""
    kind = type(expr).__name__
    if kind in ("NumberLiteral",):
        return
    if kind in ("ParenExpr", "UnaryExpr"):
        return check(expr.expr)
    if kind == "VectorSelector":
        if expr.offset is not None:
            raise QueryError("the offset modifier is not supported by Helios' PromQL")
        if expr.at is not None:
            raise QueryError("the @ modifier is not supported by Helios' PromQL")
        if expr.matchers.or_matchers:
            raise QueryError("'or' inside a selector is not supported by Helios' PromQL")
        for matcher in expr.matchers.matchers:
            _matcher(matcher)  # compiles the regexes: a pattern RE2 refuses is refused here
        return
    if kind == "BinaryExpr":
        op = str(expr.op)
        if op not in _ARITHMETIC and op not in _COMPARISON:
            raise QueryError(f"operator '{op}' is not supported by Helios' PromQL; it evaluates {SUPPORTED}")
        if expr.modifier is not None and str(expr.modifier.card) != str(promql_parser.VectorMatchCardinality.OneToOne):
            raise QueryError("group_left/group_right matching is not supported by Helios' PromQL")
        check(expr.lhs)
        return check(expr.rhs)
    if kind == "AggregateExpr":
        op = str(expr.op)
        if op not in _AGGREGATIONS:
            raise QueryError(f"aggregation '{op}' is not supported by Helios' PromQL; it evaluates {SUPPORTED}")
        return check(expr.expr)
    if kind == "Call":
        raise QueryError(f"function '{expr.func.name}' is not supported by Helios' PromQL (it evaluates {SUPPORTED}); "
                         "raw series and their functions are answered by the customer's Prometheus")
    names = {"MatrixSelector": "range vector selectors", "SubqueryExpr": "subqueries", "StringLiteral": "string literals"}
    raise QueryError(f"{names.get(kind, kind)} are not supported by Helios' PromQL; it evaluates {SUPPORTED}")


def reads_series(expr) -> bool:
    """Whether the expression reads any series (``1+1``, Grafana's health check, reads none)."""
    kind = type(expr).__name__
    if kind == "VectorSelector":
        return True
    if kind == "BinaryExpr":
        return reads_series(expr.lhs) or reads_series(expr.rhs)
    if kind in ("ParenExpr", "UnaryExpr", "AggregateExpr"):
        return reads_series(expr.expr)
    return False


def selectors(expr) -> list:
    """Every vector selector inside a parsed expression."""
    if type(expr).__name__ == "VectorSelector":
        return [expr]
    children = [getattr(expr, name) for name in ("expr", "lhs", "rhs") if hasattr(expr, name)]
    return [found for child in children for found in selectors(child)]


def is_selector(expr) -> bool:
    """A bare selector: the form of a KEDA trigger, which must match exactly one series."""
    kind = type(expr).__name__
    return kind == "VectorSelector" or (kind == "ParenExpr" and is_selector(expr.expr))


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str
    pattern: object = None  # an RE2 pattern for =~ and !~

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self.pattern.fullmatch(actual) is not None  # Prometheus anchors regexes
        return hit if self.op == "=~" else not hit


_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _matcher(parsed) -> Matcher:
    op = _MATCH_OPS[str(parsed.op)]
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re2.compile(parsed.value, _RE2_OPTIONS)
        except re2.error as exc:
            raise QueryError(f"regular expression {parsed.value!r} is refused (Helios matches with RE2, "
                             f"which has no backreferences or lookaround): {exc}") from None
    return Matcher(parsed.name, op, parsed.value, pattern)


def selector_matchers(expr) -> list[Matcher]:
    while type(expr).__name__ == "ParenExpr":
        expr = expr.expr
    if type(expr).__name__ != "VectorSelector":
        raise QueryError("a series selector such as helios_forecast_value{customer=\"...\"} is expected here")
    matchers = [_matcher(m) for m in expr.matchers.matchers]
    return ([Matcher("__name__", "=", expr.name)] if expr.name else []) + matchers


def select(samples: list[Sample], expr) -> list[Sample]:
    matchers = selector_matchers(expr)
    return [s for s in samples if all(m.matches(s.all_labels) for m in matchers)]


def evaluate(expr, samples: list[Sample]) -> Value:
    """The expression's value at the instant ``samples`` were published for."""
    kind = type(expr).__name__
    if kind == "NumberLiteral":
        return Scalar(float(expr.val))
    if kind == "ParenExpr":
        return evaluate(expr.expr, samples)
    if kind == "UnaryExpr":
        inner = evaluate(expr.expr, samples)
        if isinstance(inner, Scalar):
            return Scalar(-inner.value)
        return {_drop_name(labels): -value for labels, value in inner.items()}
    if kind == "VectorSelector":
        return {tuple(sorted(s.all_labels.items())): s.value for s in select(samples, expr)}
    if kind == "AggregateExpr":
        return _aggregate(expr, evaluate(expr.expr, samples))
    if kind == "BinaryExpr":
        return _binary(expr, evaluate(expr.lhs, samples), evaluate(expr.rhs, samples))
    check(expr)  # raises, naming what is unsupported
    raise QueryError(f"cannot evaluate {kind}")


def _drop_name(labels: Labels) -> Labels:
    return tuple(item for item in labels if item[0] != "__name__")


def _aggregate(expr, inner: Value) -> Vector:
    if isinstance(inner, Scalar):
        raise QueryError(f"{expr.op}() takes an instant vector, not a scalar")
    modifier = expr.modifier
    keep = set(modifier.labels) if modifier is not None else set()
    without = modifier is not None and str(modifier.type) == str(promql_parser.AggModifierType.Without)
    groups: dict[Labels, list[float]] = {}
    for labels, value in inner.items():
        if without:
            key = tuple(item for item in labels if item[0] not in keep and item[0] != "__name__")
        else:
            key = tuple(item for item in labels if item[0] in keep)
        groups.setdefault(key, []).append(value)
    reduce = _AGGREGATIONS[str(expr.op)]
    return {key: reduce(values) for key, values in groups.items()}


def _binary(expr, lhs: Value, rhs: Value) -> Value:
    op = str(expr.op)
    returns_bool = expr.modifier is not None and expr.modifier.return_bool
    compare = _COMPARISON.get(op)
    if compare is not None and not returns_bool and isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        raise QueryError("comparisons between scalars must use the bool modifier")

    def combine(a: float, b: float) -> float | None:
        if compare is None:
            return _ARITHMETIC[op](a, b)
        if returns_bool:
            return float(compare(a, b))
        return a if compare(a, b) else None  # a comparison filters

    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        return Scalar(combine(lhs.value, rhs.value))
    # Arithmetic (and bool comparisons) drop the metric name, as in Prometheus; a filter keeps it.
    rename = _drop_name if compare is None or returns_bool else (lambda labels: labels)
    if isinstance(rhs, Scalar):
        out = {rename(k): combine(v, rhs.value) for k, v in lhs.items()}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(lhs, Scalar):
        out = {rename(k): (combine(lhs.value, v), v) for k, v in rhs.items()}
        # A filtering comparison with the vector on the right keeps the vector's value.
        return {k: (v if compare is None or returns_bool else kept) for k, (v, kept) in out.items() if v is not None}
    signature = _matching(expr)
    result_labels = _result_labels(expr)
    right: dict[Labels, tuple[Labels, float]] = {}
    for labels, value in rhs.items():
        key = signature(labels)
        if key in right:
            raise QueryError(f"many-to-one matching: several series on the right of '{op}' share the labels {dict(key)}")
        right[key] = (labels, value)
    out: Vector = {}
    for labels, value in lhs.items():
        match = right.get(signature(labels))
        if match is None:
            continue
        result = combine(value, match[1])
        if result is None:
            continue
        name = result_labels(rename(labels))
        if name in out:
            raise QueryError(f"one-to-many matching: several series on the left of '{op}' share the labels {dict(name)}")
        out[name] = result
    return out


def _result_labels(expr) -> Callable[[Labels], Labels]:
    """One-to-one matching keeps only the ``on`` labels, or drops the ``ignoring`` ones (Prometheus)."""
    matching = expr.modifier.matching if expr.modifier is not None else None
    if matching is None:
        return lambda key: key
    labels = set(matching.labels)
    if str(matching.type) == str(promql_parser.LabelModifierType.Include):
        return lambda key: tuple(item for item in key if item[0] in labels)
    return lambda key: tuple(item for item in key if item[0] not in labels)


def _matching(expr) -> Callable[[Labels], Labels]:
    matching = expr.modifier.matching if expr.modifier is not None else None
    if matching is None:
        return _drop_name
    labels = set(matching.labels)
    if str(matching.type) == str(promql_parser.LabelModifierType.Include):
        return lambda key: tuple(item for item in key if item[0] in labels)
    return lambda key: tuple(item for item in key if item[0] not in labels and item[0] != "__name__")


# ---- the HTTP API's envelopes -------------------------------------------------------------------

def instant_data(value: Value, timestamp: float) -> dict:
    if isinstance(value, Scalar):
        return {"resultType": "scalar", "result": [timestamp, format_value(value.value)]}
    return {"resultType": "vector",
            "result": [{"metric": dict(labels), "value": [timestamp, format_value(v)]} for labels, v in sorted(value.items())]}


def success(data, warnings: list[str] | None = None) -> dict:
    body = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = warnings
    return body


def error_response(error: QueryError) -> dict:
    return {"status": "error", "errorType": error.error_type, "error": str(error)}


def series_id(labels: Labels) -> str:
    named = dict(labels)
    name = named.pop("__name__", "")
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(named.items())) + "}"
