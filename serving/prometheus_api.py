"""Prometheus' HTTP API over Helios' series: what KEDA's prometheus scaler and Grafana's Prometheus
data source call to save, test and draw (``query``, ``query_range``, ``series``, ``labels``,
``label/<name>/values``, ``metadata``, ``status/buildinfo``).

A Helios series at a time is what the service published for that step (serving/published.py keeps
every step's samples of each tenant for a day, what a Prometheus scraping ``/metrics`` would hold),
so a range query or a past ``time`` reads that record and never computes a forecast for the past;
only the current step is computed, once, in a worker thread. A time outside the record
is a 400 naming it (``time=0`` or year 3000), unless the query reads no series (Grafana's health
check asks ``1+1`` at ``time=4``).

Instant queries keep KEDA's contract: a bare selector (a trigger's query) answers exactly one
series or an error, and no instant query answers an empty success (KEDA's scaler reads an empty
result as 0 and would scale the workload to its minimum).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import anyio
import pandas as pd
import promql_parser
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from helios_pipelines.core.ops.exposition import Sample
from serving import promql
from serving.published import RETENTION, PublishedSeries

CLOCK_SKEW = pd.Timedelta("5min")  # a client clock this far ahead still asks for "now"
MAX_POINTS = 11_000  # per series, as Prometheus: (end - start) / step

router = APIRouter()


class PrometheusAPI:
    """What the routes need from the service: its published series and its compute limiter."""

    def __init__(self, published: PublishedSeries, limiter: Callable[[], anyio.CapacityLimiter]):
        self.published, self.limiter = published, limiter

    def visible(self, request: Request) -> list[str]:
        """The API key's tenant when keys are on (set by the auth middleware), else every tenant."""
        tenant = getattr(request.state, "tenant", None)
        return [tenant] if tenant is not None else self.published.tenants

    def forbidden(self, request: Request, exprs: list) -> JSONResponse | None:
        """A key naming another tenant (``customer="..."``) is refused with 403, as on every endpoint."""
        tenant = getattr(request.state, "tenant", None)
        if tenant is None:
            return None
        for expr in exprs:
            for selector in promql.selectors(expr):
                for matcher in selector.matchers.matchers:
                    if matcher.name == "customer" and str(matcher.op) == "MatchOp.Equal" and matcher.value != tenant:
                        error = promql.QueryError(f"this API key belongs to tenant '{tenant}', not '{matcher.value[:64]}'",
                                                  "forbidden")
                        return _error(error, 403)
        return None

    def samples_at(self, tenants: list[str], when: pd.Timestamp, now: pd.Timestamp) -> tuple[list[Sample], list[str]]:
        samples, problems = [], []
        for tenant in tenants:
            try:
                found = self.published.at(tenant, when, now)
            except Exception as exc:  # this tenant's bad state is its own error, not the others'
                problems.append(f"tenant '{tenant}': {exc}")
                continue
            samples += found or []
        return samples, problems

    async def run(self, work: Callable[[], JSONResponse]) -> JSONResponse:
        return await anyio.to_thread.run_sync(work, limiter=self.limiter())


def attach(app, api: PrometheusAPI) -> None:
    """Route the Prometheus API of ``app`` (the service's FastAPI app) to ``api``."""
    app.state.prometheus_api = api


def _api(request: Request) -> PrometheusAPI:
    return request.app.state.prometheus_api


def _error(error: promql.QueryError, status: int | None = None) -> JSONResponse:
    if status is None:
        status = 422 if error.error_type in ("not_found", "execution") else 400
    return JSONResponse(promql.error_response(error), status_code=status)


async def _params(request: Request) -> dict[str, list[str]]:
    """Query-string and form parameters (Grafana POSTs forms), each name with all its values."""
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    if request.method == "POST":
        for key, value in (await request.form()).multi_items():
            params.setdefault(key, []).append(str(value))
    return params


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def parse_time(raw: str | None, name: str, default: pd.Timestamp | None) -> pd.Timestamp | None:
    """Unix seconds (promtool, Grafana) or RFC 3339 (KEDA), as Prometheus accepts them."""
    if raw is None or raw == "":
        return default
    problem = promql.QueryError(f'invalid parameter "{name}": cannot parse {raw[:64]!r} to a valid timestamp')
    try:
        seconds = float(raw)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(raw)
        except ValueError:
            raise problem from None
        stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    else:
        if not math.isfinite(seconds):
            raise problem from None
        try:
            stamp = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise problem from None
    try:
        return pd.Timestamp(stamp)
    except (OverflowError, ValueError):  # beyond pandas' years 1677-2262: far outside any window
        raise promql.QueryError(_outside(name, stamp.isoformat(), pd.Timestamp.now(tz="UTC"))) from None


def parse_step(raw: str | None) -> pd.Timedelta:
    """Seconds as a float, or a Prometheus duration (``1m``), as Prometheus accepts them."""
    if raw is None or raw == "":
        raise promql.QueryError('invalid parameter "step": a query resolution step is required')
    unparsable = promql.QueryError(f'invalid parameter "step": cannot parse {raw[:64]!r} to a valid duration')
    try:
        seconds = float(raw)
    except ValueError:
        seconds = None
    try:
        if seconds is not None:
            step = pd.Timedelta(seconds=seconds)  # never handed to the Rust parser: it panics on nan
        else:
            step = pd.Timedelta(promql_parser.parse_duration(raw))
    except (ValueError, OverflowError) as exc:
        if "greater than 0" not in str(exc):
            raise unparsable from None
        step = pd.Timedelta(0)
    except BaseException as exc:
        if not promql.is_parser_panic(exc):
            raise
        raise unparsable from None
    if step <= pd.Timedelta(0):  # also what rounds to 0 ns
        raise promql.QueryError("zero or negative query resolution step widths are not accepted. Try a positive integer")
    return step


def _check_window(first: pd.Timestamp, last: pd.Timestamp, now: pd.Timestamp, name: str) -> None:
    """Helios keeps its series ``RETENTION`` long and has none ahead of now: say so, by name."""
    if last < now - RETENTION or first > now + CLOCK_SKEW:
        asked = first.isoformat() + (f" to {last.isoformat()}" if last != first else "")
        raise promql.QueryError(_outside(name, asked, now))


def _outside(name: str, asked: str, now: pd.Timestamp) -> str:
    return (f'parameter "{name}" asks for {asked}, outside the window Helios keeps its published series: '
            f"{(now - RETENTION).isoformat()} to now ({now.isoformat()}); older history is in the Prometheus "
            "that scrapes /metrics")


def _unix(stamp: pd.Timestamp) -> float:
    return stamp.value / 1e9


class _Asked(NamedTuple):
    """What ``query`` and ``query_range`` evaluate: the expression, whom it may see, the times asked."""

    api: PrometheusAPI
    tenants: list[str]
    text: str
    expr: object
    reads: bool  # the expression reads series (``1+1`` does not, and may ask for any time)
    now: pd.Timestamp
    first: pd.Timestamp
    last: pd.Timestamp
    step: pd.Timedelta | None  # a range query's resolution


async def _query(request: Request, times: Callable[[dict[str, list[str]], pd.Timestamp], tuple]) -> _Asked | JSONResponse:
    """The shared preamble of ``query`` and ``query_range``: parse the expression, refuse another
    tenant's (403), read the times (``times(params, now)`` gives first, last, the parameter named when
    they are outside the record, and the step) and check them; an error is the JSON answer."""
    api, params = _api(request), await _params(request)
    try:
        expr = promql.parse(_one(params, "query") or "")
        if refused := api.forbidden(request, [expr]):
            return refused
        now = pd.Timestamp.now(tz="UTC")
        first, last, name, step = times(params, now)
        reads = promql.reads_series(expr)
        if reads:
            _check_window(first, last, now, name)
    except promql.QueryError as error:
        return _error(error)
    return _Asked(api, api.visible(request), _one(params, "query"), expr, reads, now, first, last, step)


def _instant_time(params: dict[str, list[str]], now: pd.Timestamp) -> tuple:
    at = parse_time(_one(params, "time"), "time", now)
    return at, at, "time", None


def _range_times(params: dict[str, list[str]], now: pd.Timestamp) -> tuple:
    start = parse_time(_one(params, "start"), "start", None)
    end = parse_time(_one(params, "end"), "end", None)
    if start is None or end is None:
        raise promql.QueryError(f'invalid parameter "{"start" if start is None else "end"}": a range query needs start and end')
    if end < start:
        raise promql.QueryError('invalid parameter "end": end timestamp must not be before start time')
    step = parse_step(_one(params, "step"))
    if (end - start) // step > MAX_POINTS:
        raise promql.QueryError("exceeded maximum resolution of 11,000 points per timeseries. "
                                "Try decreasing the query resolution (?step=XX)")
    return start, end, "start", step


@router.api_route("/api/v1/query", methods=["GET", "POST"])
async def query(request: Request) -> JSONResponse:
    """Prometheus' instant query over Helios' series (KEDA's trigger, Grafana's instant panels)."""
    asked = await _query(request, _instant_time)
    if isinstance(asked, JSONResponse):
        return asked
    api, tenants, text, expr, reads, now, at, _, _ = asked

    def evaluate() -> JSONResponse:
        try:
            samples, problems = api.samples_at(tenants, min(at, now), now) if reads else ([], [])
            if reads and not samples and not problems:
                first = api.published.earliest(tenants)
                raise promql.QueryError(f"Helios published no series for {at.isoformat()}: its record of published "
                                        f"steps starts at {first.isoformat() if first else 'the next step'}", "not_found")
            value = promql.evaluate(expr, samples)
            if isinstance(value, dict):
                _keda_contract(expr, value, text, problems)
        except promql.QueryError as error:
            return _error(error)
        return JSONResponse(promql.success(promql.instant_data(value, _unix(at)), problems))

    return await api.run(evaluate)


def _keda_contract(expr, value: promql.Vector, query: str, problems: list[str]) -> None:
    if not value:
        why = f" ({'; '.join(problems)})" if problems else ": check the customer, metric and horizon labels"
        raise promql.QueryError(f"no series matches {query!r}{why}", "not_found")
    if promql.is_selector(expr) and len(value) > 1:
        shown = ", ".join(promql.series_id(labels) for labels in sorted(value)[:5])
        raise promql.QueryError(f"{len(value)} series match {query!r} ({shown}); narrow the selector to exactly one")


@router.api_route("/api/v1/query_range", methods=["GET", "POST"])
async def query_range(request: Request) -> JSONResponse:
    """Prometheus' range query: a matrix, one point per ``step`` from ``start`` to ``end`` wherever
    Helios published the series (Grafana's time-series panels)."""
    asked = await _query(request, _range_times)
    if isinstance(asked, JSONResponse):
        return asked
    api, tenants, _, expr, reads, now, start, end, step = asked

    def evaluate() -> JSONResponse:
        series: dict[promql.Labels, list] = {}
        problems: set[str] = set()
        published = {}  # tenant -> (its step, its published steps), read once; integer ns from here on
        for tenant in tenants if reads else []:
            try:
                published[tenant] = api.published.steps_upto(tenant, now)
            except Exception as exc:  # this tenant's bad state is its own warning, not the others' error
                problems.add(f"tenant '{tenant}': {exc}")
        first, width, latest = start.value, step.value, now.value
        oldest, newest = latest - RETENTION.value, latest + CLOCK_SKEW.value
        answered: dict[tuple, promql.Value] = {}  # one evaluation per distinct set of published steps
        try:
            for i in range((end - start) // step + 1):
                when = first + i * width
                if reads and not oldest <= when <= newest:
                    continue
                at = min(when, latest)
                key = tuple(at - at % tenant_step for tenant_step, _ in published.values())
                value = answered.get(key)
                if value is None:
                    samples = [sample for (tenant_step, steps), step_start in zip(published.values(), key, strict=True)
                               if step_start in steps for sample in steps[step_start].samples()]
                    value = answered[key] = promql.evaluate(expr, samples)
                points = {(): value.value} if isinstance(value, promql.Scalar) else value
                for labels, number in points.items():
                    series.setdefault(labels, []).append([when / 1e9, promql.format_value(number)])
        except promql.QueryError as error:
            return _error(error)
        result = [{"metric": dict(labels), "values": values} for labels, values in sorted(series.items())]
        return JSONResponse(promql.success({"resultType": "matrix", "result": result}, sorted(problems)))

    return await api.run(evaluate)


async def _current(request: Request, params: dict[str, list[str]]) -> tuple[list[Sample], list[str]] | JSONResponse:
    """This step's series of the visible tenants matching any ``match[]`` selector (all without one).
    Every step publishes the same series, so this is also the answer for any time range."""
    api = _api(request)
    try:
        selectors = [promql.parse(m) for m in params.get("match[]", [])]
        for selector in selectors:
            promql.selector_matchers(selector)
    except promql.QueryError as error:
        return _error(error)
    if refused := api.forbidden(request, selectors):
        return refused
    tenants = api.visible(request)

    def found() -> tuple[list[Sample], list[str]]:
        now = pd.Timestamp.now(tz="UTC")
        samples, problems = api.samples_at(tenants, now, now)
        if selectors:
            samples = [s for s in samples if any(promql.select([s], selector) for selector in selectors)]
        return samples, problems

    return await anyio.to_thread.run_sync(found, limiter=api.limiter())


@router.api_route("/api/v1/series", methods=["GET", "POST"])
async def series(request: Request) -> JSONResponse:
    params = await _params(request)
    if not params.get("match[]"):
        return _error(promql.QueryError("no match[] parameter provided"))
    answer = await _current(request, params)
    if isinstance(answer, JSONResponse):
        return answer
    samples, problems = answer
    unique = {tuple(sorted(s.all_labels.items())) for s in samples}
    return JSONResponse(promql.success([dict(labels) for labels in sorted(unique)], problems))


@router.api_route("/api/v1/labels", methods=["GET", "POST"])
async def labels(request: Request) -> JSONResponse:
    answer = await _current(request, await _params(request))
    if isinstance(answer, JSONResponse):
        return answer
    samples, problems = answer
    return JSONResponse(promql.success(sorted({name for s in samples for name in s.all_labels}), problems))


@router.get("/api/v1/label/{name}/values")
async def label_values(request: Request, name: str) -> JSONResponse:
    if not (name.replace("_", "a").isalnum() and name.isascii() and not name[0].isdigit()):
        return _error(promql.QueryError(f"invalid label name: {name[:64]!r}"))
    answer = await _current(request, await _params(request))
    if isinstance(answer, JSONResponse):
        return answer
    samples, problems = answer
    values = {s.all_labels[name] for s in samples if name in s.all_labels}
    return JSONResponse(promql.success(sorted(values), problems))


@router.get("/api/v1/metadata")
async def metadata(request: Request) -> JSONResponse:
    """Type and help of each Helios metric (Grafana's query builder shows them)."""
    answer = await _current(request, {})
    if isinstance(answer, JSONResponse):
        return answer
    samples, _ = answer
    return JSONResponse(promql.success({s.name: [{"type": "gauge", "help": s.help or s.name, "unit": ""}]
                                        for s in sorted(samples, key=lambda s: s.name)}))


@router.api_route("/api/v1/query_exemplars", methods=["GET", "POST"])
async def query_exemplars(request: Request) -> JSONResponse:
    """Grafana asks for exemplars when a panel turns them on; Helios' gauges carry none."""
    try:
        promql.parse(_one(await _params(request), "query") or "")
    except promql.QueryError as error:
        return _error(error)
    return JSONResponse(promql.success([]))


@router.get("/api/v1/status/buildinfo")
def buildinfo() -> JSONResponse:
    """Grafana reads this to pick the API flavour: no ``features`` means plain Prometheus; the
    version is the Prometheus API level Helios answers (the parts listed in the module docstring)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        helios = version("helios")
    except PackageNotFoundError:
        helios = "unknown"
    return JSONResponse(promql.success({
        "version": "2.53.0", "revision": f"helios-{helios}", "branch": "helios", "buildUser": "helios",
        "buildDate": "", "goVersion": "none (Helios, Python)",
    }))
