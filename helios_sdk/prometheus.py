"""The agent's side of the customer's Prometheus: which metrics exist, and their values on a grid."""

from __future__ import annotations

import math

import httpx

MAX_POINTS_PER_QUERY = 10_000  # query_range refuses more than 11,000 points per series

Samples = list[tuple[int, float]]  # (unix ms, value)


class PrometheusError(RuntimeError):
    """Prometheus could not answer; the message names the URL and Prometheus' own explanation."""


class PrometheusReader:
    def __init__(self, url: str, timeout_seconds: float = 30.0, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout_seconds, transport=transport)

    def close(self) -> None:
        self._client.close()

    def metric_names(self) -> set[str]:
        return set(self._get("/api/v1/label/__name__/values", {}))

    def grid_values(self, series: str, start_s: int, end_s: int, step_s: int) -> dict[tuple, Samples]:
        """Each label set of ``series`` at every grid point in [start, end] (both multiples of step):
        its last raw sample in (t - step, t], so a scrape gap stays a gap instead of being filled by
        Prometheus' 5-minute lookback. Counters stay cumulative; Helios computes their rates.

        Returns label set (sorted pairs, without __name__) -> [(unix ms, value)]; non-finite values,
        which Helios refuses, are left out as gaps.
        """
        query = f'last_over_time({{__name__="{series}"}}[{step_s * 1000 - 1}ms])'
        found: dict[tuple, Samples] = {}
        chunk = MAX_POINTS_PER_QUERY * step_s
        for chunk_start in range(start_s, end_s + 1, chunk):
            chunk_end = min(chunk_start + chunk - step_s, end_s)
            data = self._get("/api/v1/query_range", {"query": query, "start": chunk_start, "end": chunk_end, "step": step_s})
            for result in data["result"]:
                labels = tuple(sorted((k, v) for k, v in result["metric"].items() if k != "__name__"))
                points = found.setdefault(labels, [])
                for stamp, text in result["values"]:
                    value = float(text)
                    if math.isfinite(value):
                        points.append((int(round(float(stamp) * 1000)), value))
        return found

    def _get(self, path: str, params: dict) -> object:
        try:
            response = self._client.get(path, params=params)
        except httpx.TransportError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"{self.url}{path} answered HTTP {response.status_code} without JSON") from None
        if response.status_code >= 400 or body.get("status") != "success":
            raise PrometheusError(f"{self.url}{path} answered HTTP {response.status_code}: {body.get('error', body)}")
        return body["data"]
