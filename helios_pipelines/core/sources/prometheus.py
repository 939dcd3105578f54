"""Prometheus (or any server speaking its HTTP API: Thanos, Mimir, VictoriaMetrics).

Each logical metric is one PromQL expression: the metric's ``query`` when the config has one, else
one built from its series name:

- a gauge: ``last_over_time(series[<step minus 1 ms>])``. A plain selector would let Prometheus'
  5-minute lookback repeat the last sample over a scrape gap; limiting the window to one step keeps
  the gap a gap (NaN). The 1 ms keeps Prometheus 2, whose windows include their left end, from
  reaching back to the previous grid point.
- a counter: ``rate(series[W])`` with W = max(step + scrape interval, 4 x scrape interval), the rule
  Grafana uses for ``$__rate_interval``: always at least two samples in the window, so a rate exists
  even when scrapes do not line up with the grid. rate() handles counter resets.

A query written by hand runs as written, so the server's lookback applies to it.

``query_range`` refuses more than 11,000 points per series, so a window is fetched in chunks of the
tenant's grid. A query that returns several series where one is expected is an error that says how
to aggregate; a failure after the retries is a ``SourceError`` naming tenant, metric and query, and
nothing fetched before it is returned.
"""

from __future__ import annotations

import os
import ssl

import httpx
import numpy as np
import pandas as pd
import tenacity

from helios_pipelines.core.sources.base import MetricsSource, SourceError
from helios_pipelines.core.sources.common import grid_chunks, metric_context, secret_from_env
from helios_pipelines.core.tenants import MetricConfig, TenantConfig
from helios_pipelines.core.tenants.base import parse_duration
from helios_pipelines.core.tenants.source_configs import PrometheusSource

MAX_POINTS_PER_QUERY = 11_000  # query_range's limit per series
BACKOFF_SECONDS = 0.5  # first wait between attempts; doubles each time
MAX_WAIT_SECONDS = 60.0  # cap on a server's Retry-After


class Prometheus(MetricsSource):
    def __init__(self, tenant: TenantConfig, transport: httpx.BaseTransport | None = None):
        """``transport`` replaces httpx' network layer (tests count or fake requests with it)."""
        super().__init__(tenant)
        if not isinstance(tenant.source, PrometheusSource):
            raise TypeError(f"tenant '{tenant.id}' does not use the prometheus source")
        self.config: PrometheusSource = tenant.source
        self.url = (self.config.url or os.environ.get("PROMETHEUS_URL", "")).rstrip("/")
        if not self.url:
            raise SourceError(
                f"tenant '{tenant.id}': no Prometheus URL; set source.url in its config or PROMETHEUS_URL"
            )
        self.step = tenant.step_timedelta
        self._client = httpx.Client(
            base_url=self.url,
            auth=self._auth(),
            verify=self._tls(),
            timeout=self.config.timeout_seconds,
            transport=transport,
        )

    # ---- configuration ------------------------------------------------------------------------
    def _auth(self) -> httpx.Auth | None:
        if self.config.bearer_token_env:
            token = secret_from_env(self.tenant.id, self.config.bearer_token_env, "Prometheus bearer token")
            return _BearerAuth(token)
        if self.config.basic_auth_user:
            password = secret_from_env(
                self.tenant.id, self.config.basic_auth_password_env, "Prometheus basic auth password"
            )
            return httpx.BasicAuth(self.config.basic_auth_user, password)
        return None

    def _tls(self) -> ssl.SSLContext | bool:
        if not self.config.verify_tls:
            return False
        return ssl.create_default_context(cafile=self.config.ca_bundle)

    def promql(self, config: MetricConfig) -> str:
        """The expression fetched for a metric (see the module docstring for the built ones)."""
        if config.query:
            return config.query
        if config.kind == "counter":
            scrape = pd.Timedelta(parse_duration(self.config.scrape_interval))
            window = max(self.step + scrape, 4 * scrape)
            return f"rate({config.series}[{int(window.total_seconds())}s])"
        return f"last_over_time({config.series}[{int(self.step / pd.Timedelta('1ms')) - 1}ms])"

    # ---- MetricsSource ------------------------------------------------------------------------
    def fetch_series(self, metric: str, config: MetricConfig, index: pd.DatetimeIndex) -> pd.Series:
        if len(index) == 0:
            return pd.Series(dtype=float, index=index)
        query = self.promql(config)
        context = metric_context(self.tenant.id, metric, query)
        pieces = []
        for chunk in grid_chunks(index, MAX_POINTS_PER_QUERY):
            params = {
                "query": query,
                "start": _unix(chunk[0]),
                "end": _unix(chunk[-1]),
                "step": f"{self.step.total_seconds():g}",
            }
            data = self._api("/api/v1/query_range", params, context)
            result = _single_series(data, "matrix", context)
            if result is not None:
                pieces.append(_values_to_series(result["values"]))
        if not pieces:
            raise SourceError(
                f"{context}: no data between {index[0]} and {index[-1]}; the series does not exist or "
                f"has no samples there (check the name against the server's metrics: helios sources check)"
            )
        return pd.concat(pieces)

    def current_values(self, metrics: list[str] | None = None) -> dict[str, float]:
        values = {}
        for name in metrics or list(self.tenant.metrics):
            config = self.tenant.metrics[self.tenant.resolve_metric(name)]
            # A gauge's latest value is the plain selector: the server's lookback finds the last scrape.
            query = config.series if config.kind == "gauge" and not config.query else self.promql(config)
            context = metric_context(self.tenant.id, name, query)
            result = _single_series(self._api("/api/v1/query", {"query": query}, context), "vector", context)
            values[name] = float(result["value"][1]) if result is not None else float("nan")
        return values

    def list_metrics(self) -> list[str]:
        return sorted(self._api("/api/v1/label/__name__/values", {}, f"tenant '{self.tenant.id}'"))

    # ---- HTTP ---------------------------------------------------------------------------------
    def _api(self, path: str, params: dict[str, str], context: str) -> object:
        """``data`` of a successful API answer; retries 5xx, 429 and transport errors, never other 4xx,
        waiting ``BACKOFF_SECONDS`` doubling each time, or longer when the server's Retry-After says so."""
        attempts = self.config.retries + 1
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts), wait=_backoff_or_retry_after,
            retry=tenacity.retry_if_exception_type(_Retryable), reraise=True,
        )
        try:
            return retrying(self._api_once, path, params, context)
        except _Retryable as failure:
            raise SourceError(f"{context}: gave up after {attempts} attempts; last: {failure}") from None

    def _api_once(self, path: str, params: dict[str, str], context: str) -> object:
        try:
            response = self._client.get(path, params=params)
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__} talking to {self.url}: {exc}") from exc
        if response.status_code < 400:
            return _data(response, context)
        failure = f"HTTP {response.status_code} from {self.url}{path}: {_error_text(response)}"
        if response.status_code in (401, 403):
            raise SourceError(f"{context}: {failure}; check the credentials (bearer_token_env or basic auth)")
        if response.status_code < 500 and response.status_code != 429:
            raise SourceError(f"{context}: {failure}")
        raise _Retryable(failure, retry_after=min(_retry_after(response), MAX_WAIT_SECONDS))


class _Retryable(Exception):
    """A failed attempt worth repeating; ``retry_after`` is the server's own wait, if it gave one."""

    def __init__(self, failure: str, retry_after: float = 0.0):
        super().__init__(failure)
        self.retry_after = retry_after


def _backoff_or_retry_after(state: tenacity.RetryCallState) -> float:
    backoff = BACKOFF_SECONDS * 2 ** (state.attempt_number - 1)
    return max(backoff, getattr(state.outcome.exception(), "retry_after", 0.0))


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str):
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = self._header
        yield request


def _unix(moment: pd.Timestamp) -> str:
    return f"{moment.timestamp():.3f}"


def _data(response: httpx.Response, context: str) -> object:
    try:
        body = response.json()
    except ValueError as exc:
        raise SourceError(
            f"{context}: {response.url} did not answer with JSON; is it a Prometheus API?"
        ) from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        raise SourceError(f"{context}: {response.url} answered {str(body)[:200]}")
    return body["data"]


def _error_text(response: httpx.Response) -> str:
    """Prometheus' own explanation (``error`` in its JSON) when there is one."""
    try:
        return str(response.json().get("error", ""))[:300] or response.reason_phrase
    except ValueError:
        return response.text[:300] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0


def _single_series(data: object, kind: str, context: str) -> dict | None:
    """The one series of a result (None when empty); several are an error that says what to do."""
    if not isinstance(data, dict) or data.get("resultType") != kind:
        found = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise SourceError(f"{context}: expected a {kind} result, got {found}")
    result = data["result"]
    if len(result) > 1:
        labels = ", ".join(_labels(r["metric"]) for r in result[:3])
        raise SourceError(
            f"{context}: returned {len(result)} series where one is expected ({labels}"
            f"{', ...' if len(result) > 3 else ''}); aggregate them (sum(...), avg(...)) or select one with labels"
        )
    return result[0] if result else None


def _labels(metric: dict[str, str]) -> str:
    name = metric.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _values_to_series(values: list[list]) -> pd.Series:
    """Prometheus' ``[[unix seconds, "value"], ...]`` as a float series on a UTC index."""
    seconds = np.array([v[0] for v in values], dtype=float)
    index = pd.to_datetime(np.round(seconds * 1000).astype(np.int64), unit="ms", utc=True)
    return pd.Series([float(v[1]) for v in values], index=index, dtype=float)
