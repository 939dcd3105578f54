"""Datadog, through datadog-api-client's v1 metrics query API (``GET /api/v1/query``).

Datadog rolls a series up silently once a query spans more than about 1,500 points, so a window is
fetched in chunks of at most 1,500 grid points. The queries built for metrics without one pin the
rollup to the tenant's step so points land on its grid:

- a gauge: ``avg:<series>{<scope>}.rollup(avg, <step s>)``
- a counter: ``sum:<series>{<scope>}.as_rate().rollup(avg, <step s>)`` (per-second rate)

A query written by hand should carry its own ``.rollup(..., <step s>)``. The client retries 5xx and
429; on 429 it waits as long as Datadog's ``X-RateLimit-Reset`` header says. Keys come from the
environment variables the config names (``DD_API_KEY`` and ``DD_APP_KEY`` by default), the site from
the config, else ``DD_SITE``.
"""

from __future__ import annotations

import os

import pandas as pd
import urllib3
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v1.api.metrics_api import MetricsApi

from helios_pipelines.core.sources.base import MetricsSource, SourceError
from helios_pipelines.core.sources.common import grid_chunks, metric_context, secret_from_env
from helios_pipelines.core.tenants import MetricConfig, TenantConfig
from helios_pipelines.core.tenants.source_configs import DatadogSource

MAX_POINTS_PER_REQUEST = 1_500  # beyond this Datadog rolls the series up to a coarser interval
RETRY_BACKOFF_FACTOR = 2  # the client's minimum


class Datadog(MetricsSource):
    def __init__(self, tenant: TenantConfig):
        super().__init__(tenant)
        if not isinstance(tenant.source, DatadogSource):
            raise TypeError(f"tenant '{tenant.id}' does not use the datadog source")
        self.config: DatadogSource = tenant.source
        self.step = tenant.step_timedelta
        configuration = Configuration(
            host=self.config.api_url,
            api_key={
                "apiKeyAuth": secret_from_env(tenant.id, self.config.api_key_env, "Datadog API key"),
                "appKeyAuth": secret_from_env(tenant.id, self.config.app_key_env, "Datadog application key"),
            },
            request_timeout=self.config.timeout_seconds,
            enable_retry=self.config.retries > 0,
            max_retries=self.config.retries,
            retry_backoff_factor=RETRY_BACKOFF_FACTOR,
        )
        if not self.config.api_url:
            configuration.server_variables["site"] = (
                self.config.site or os.environ.get("DD_SITE") or "datadoghq.com"
            )
        configuration.verify_ssl = self.config.verify_tls
        self._api = MetricsApi(ApiClient(configuration))

    def query(self, config: MetricConfig) -> str:
        if config.query:
            return config.query
        step = int(self.step.total_seconds())
        if config.kind == "counter":
            return f"sum:{config.series}{{{self.config.scope}}}.as_rate().rollup(avg, {step})"
        return f"avg:{config.series}{{{self.config.scope}}}.rollup(avg, {step})"

    # ---- MetricsSource ------------------------------------------------------------------------
    def fetch_series(self, metric: str, config: MetricConfig, index: pd.DatetimeIndex) -> pd.Series:
        if len(index) == 0:
            return pd.Series(dtype=float, index=index)
        query = self.query(config)
        context = metric_context(self.tenant.id, metric, query)
        pieces = []
        for chunk in grid_chunks(index, MAX_POINTS_PER_REQUEST):
            response = self._call(
                context,
                lambda chunk=chunk: self._api.query_metrics(
                    _from=int(chunk[0].timestamp()), to=int(chunk[-1].timestamp()), query=query
                ),
            )
            if response.get("status") == "error":
                raise SourceError(f"{context}: Datadog answered: {response.get('error')}")
            series = response.get("series") or []
            if len(series) > 1:
                scopes = ", ".join(s.get("scope", "?") for s in series[:3])
                raise SourceError(
                    f"{context}: returned {len(series)} series where one is expected ({scopes}); "
                    f"aggregate them (sum:, avg:) or narrow the scope"
                )
            if series:
                pieces.append(_points_to_series(series[0].get("pointlist") or [], self.step))
        if not pieces:
            raise SourceError(
                f"{context}: no data between {index[0]} and {index[-1]}; the metric does not exist "
                f"or the scope matches nothing"
            )
        joined = pd.concat(pieces)
        return joined[~joined.index.duplicated(keep="last")]

    def current_values(self, metrics: list[str] | None = None) -> dict[str, float]:
        now = pd.Timestamp.now(tz="UTC").floor(self.step)
        frame = self.fetch(now - 5 * self.step, now + self.step, metrics)
        return {
            name: float(frame[name].dropna().iloc[-1]) if frame[name].notna().any() else float("nan")
            for name in frame
        }

    def list_metrics(self) -> list[str]:
        """Metrics that reported in the last day."""
        since = int((pd.Timestamp.now(tz="UTC") - pd.Timedelta("1D")).timestamp())
        response = self._call(
            f"tenant '{self.tenant.id}'", lambda: self._api.list_active_metrics(_from=since)
        )
        return sorted(response.get("metrics") or [])

    def _call(self, context: str, request):
        """Runs one API call; the client has already retried what is worth retrying."""
        try:
            return request()
        except ApiException as exc:
            detail = f"HTTP {exc.status} from Datadog: {str(exc.body)[:300]}"
            if exc.status >= 500 or exc.status == 429:
                raise SourceError(
                    f"{context}: {detail}, still after {self.config.retries + 1} attempts"
                ) from exc
            if exc.status in (401, 403):
                raise SourceError(
                    f"{context}: {detail}; check {self.config.api_key_env} and {self.config.app_key_env}"
                ) from exc
            raise SourceError(f"{context}: {detail}") from exc
        except urllib3.exceptions.HTTPError as exc:  # connection errors, timeouts, retries exhausted
            raise SourceError(
                f"{context}: Datadog unreachable after {self.config.retries + 1} attempts: {exc}"
            ) from exc


def _points_to_series(pointlist: list, step: pd.Timedelta) -> pd.Series:
    """``[[ms, value|None], ...]`` on the grid: rollup buckets are stamped with their start."""
    pairs = [point.value for point in pointlist]  # the client wraps each pair in a Point
    times = pd.to_datetime([ms for ms, _ in pairs], unit="ms", utc=True).floor(step)
    values = [float("nan") if value is None else float(value) for _, value in pairs]
    return pd.Series(values, index=times, dtype=float)
