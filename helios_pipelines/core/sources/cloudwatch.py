"""AWS CloudWatch through boto3's ``GetMetricData``.

Each logical metric is one query: the metric's ``query`` as a metric-math or Metrics Insights
``Expression`` when the config has one, else a ``MetricStat`` of the source's namespace and
dimensions, named by the metric's ``series``, with the source's statistic (gauges) or ``Sum``
divided by the period (counters: a per-second rate). The period is the tenant's step.

A fetch asks for all metrics together, in calls of at most 500 queries and 100,800 data points, and
follows ``NextToken``. CloudWatch keeps 1-minute data for 15 days, 5-minute data for 63 days and
1-hour data for 455 days, then only coarser aggregates: a window reaching further back than the
tenant's step allows is an error (use a coarser step or a shorter history), never a silently
coarser series.
"""

from __future__ import annotations

from collections import defaultdict

import boto3
import pandas as pd
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from helios_pipelines.core.sources.base import MetricsSource, SourceError, grid
from helios_pipelines.core.sources.common import grid_chunks, metric_context
from helios_pipelines.core.tenants import MetricConfig, TenantConfig
from helios_pipelines.core.tenants.source_configs import CloudWatchSource

MAX_QUERIES_PER_CALL = 500
MAX_DATAPOINTS_PER_CALL = 100_800
# (finest period in seconds, how long CloudWatch keeps data at that period)
RETENTION = [
    (1, pd.Timedelta("3h")),
    (60, pd.Timedelta("15D")),
    (300, pd.Timedelta("63D")),
    (3600, pd.Timedelta("455D")),
]


class CloudWatch(MetricsSource):
    def __init__(self, tenant: TenantConfig, now: pd.Timestamp | None = None, client=None):
        """``now`` pins the clock the retention check uses; ``client`` replaces the boto3 client (tests)."""
        super().__init__(tenant)
        if not isinstance(tenant.source, CloudWatchSource):
            raise TypeError(f"tenant '{tenant.id}' does not use the cloudwatch source")
        self.config: CloudWatchSource = tenant.source
        self.step = tenant.step_timedelta
        self.period = int(self.step.total_seconds())
        if self.period % 60 and self.period not in (1, 5, 10, 30):
            raise SourceError(
                f"tenant '{tenant.id}': CloudWatch periods are 1, 5, 10, 30 s or multiples of 60 s; step is {tenant.step}"
            )
        self._now = now
        self._client = client or boto3.client(
            "cloudwatch",
            region_name=self.config.region,
            endpoint_url=self.config.endpoint_url,
            config=Config(
                connect_timeout=self.config.timeout_seconds,
                read_timeout=self.config.timeout_seconds,
                retries={"max_attempts": self.config.retries + 1, "mode": "standard"},
            ),
        )

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(self._now) if self._now is not None else pd.Timestamp.now(tz="UTC")

    def metric_query(self, query_id: str, config: MetricConfig) -> dict:
        if config.query:
            return {"Id": query_id, "Expression": config.query, "Period": self.period, "ReturnData": True}
        metric = {
            "Namespace": self.config.namespace,
            "MetricName": config.series,
            "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(self.config.dimensions.items())],
        }
        stat = "Sum" if config.kind == "counter" else self.config.statistic
        return {
            "Id": query_id,
            "MetricStat": {"Metric": metric, "Period": self.period, "Stat": stat},
            "ReturnData": True,
        }

    # ---- MetricsSource ------------------------------------------------------------------------
    def fetch(self, start: pd.Timestamp, end: pd.Timestamp, metrics: list[str] | None = None) -> pd.DataFrame:
        """All metrics in shared calls (the base class would make one call per metric)."""
        names = metrics or list(self.tenant.metrics)
        index = grid(start, end, self.step)
        columns = self._fetch_many(names, index)
        frame = pd.DataFrame(
            {name: columns[name].reindex(index).astype(float) for name in names}, index=index
        )
        frame.index.name = "timestamp"
        return frame

    def fetch_series(self, metric: str, config: MetricConfig, index: pd.DatetimeIndex) -> pd.Series:
        # The given config, which may name no tenant metric (a scaled workload's group size).
        return self._fetch_many([metric], index, {metric: config})[metric]

    def current_values(self, metrics: list[str] | None = None) -> dict[str, float]:
        end = self.now().floor(self.step)
        frame = self.fetch(end - 5 * self.step, end, metrics)
        return {
            name: float(frame[name].dropna().iloc[-1]) if frame[name].notna().any() else float("nan")
            for name in frame
        }

    def list_metrics(self) -> list[str]:
        names = set()
        try:
            for page in self._client.get_paginator("list_metrics").paginate(Namespace=self.config.namespace):
                names.update(m["MetricName"] for m in page["Metrics"])
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"tenant '{self.tenant.id}': CloudWatch ListMetrics failed: {exc}") from exc
        return sorted(names)

    # ---- GetMetricData --------------------------------------------------------------------------
    def _check_retention(self, first: pd.Timestamp) -> None:
        kept = next(keep for finest, keep in reversed(RETENTION) if self.period >= finest)
        if first < self.now() - kept:
            span = f"{kept.days} days" if kept.days else f"{kept / pd.Timedelta('1h'):g} hours"
            raise SourceError(
                f"tenant '{self.tenant.id}': CloudWatch keeps {self.period}-second data for {span} "
                f"but the window starts at {first}; use a coarser step or a shorter training.history_days"
            )

    def _fetch_many(self, names: list[str], index: pd.DatetimeIndex,
                    configs: dict[str, MetricConfig] | None = None) -> dict[str, pd.Series]:
        if len(index) == 0:
            return {name: pd.Series(dtype=float, index=index) for name in names}
        self._check_retention(index[0])
        configs = configs or {name: self.tenant.metrics[self.tenant.resolve_metric(name)] for name in names}
        ids = {f"m{i}": name for i, name in enumerate(names)}
        points: dict[str, list[pd.Series]] = defaultdict(list)
        for chunk in grid_chunks(index, MAX_DATAPOINTS_PER_CALL):
            per_call = max(1, min(MAX_QUERIES_PER_CALL, MAX_DATAPOINTS_PER_CALL // len(chunk)))
            batch_ids = list(ids)
            for i in range(0, len(batch_ids), per_call):
                queries = [
                    self.metric_query(query_id, configs[ids[query_id]])
                    for query_id in batch_ids[i : i + per_call]
                ]
                for query_id, series in self._get_metric_data(queries, chunk, ids, configs).items():
                    points[query_id].append(series)
        columns = {}
        for query_id, name in ids.items():
            if not points[query_id] or all(s.empty for s in points[query_id]):
                context = metric_context(self.tenant.id, name, configs[name].query)
                raise SourceError(
                    f"{context}: CloudWatch has no data between {index[0]} and {index[-1]} for "
                    f"{self.config.namespace}/{configs[name].series} {self.config.dimensions or ''}; "
                    f"check the namespace, metric name and dimensions"
                )
            series = pd.concat(points[query_id]).sort_index()
            if configs[name].kind == "counter" and not configs[name].query:
                series = series / self.period
            columns[name] = series[~series.index.duplicated(keep="last")]
        return columns

    def _get_metric_data(
        self,
        queries: list[dict],
        chunk: pd.DatetimeIndex,
        ids: dict[str, str],
        configs: dict[str, MetricConfig],
    ) -> dict[str, pd.Series]:
        """One batch over one time chunk, every page of it; results keyed by query id."""
        request = {
            "MetricDataQueries": queries,
            "StartTime": chunk[0].to_pydatetime(),
            "EndTime": (chunk[-1] + self.step).to_pydatetime(),  # exclusive
            "ScanBy": "TimestampAscending",
        }
        found: dict[str, list[pd.Series]] = defaultdict(list)
        labels: dict[str, set[str]] = defaultdict(set)
        while True:
            try:
                page = self._client.get_metric_data(**request)
            except (ClientError, BotoCoreError) as exc:
                names = ", ".join(ids[q["Id"]] for q in queries)
                raise SourceError(
                    f"tenant '{self.tenant.id}', metrics {names}: CloudWatch GetMetricData failed: {exc}"
                ) from exc
            for result in page["MetricDataResults"]:
                query_id = result["Id"]
                context = metric_context(self.tenant.id, ids[query_id], configs[ids[query_id]].query)
                if result.get("StatusCode") in ("InternalError", "Forbidden"):
                    raise SourceError(
                        f"{context}: CloudWatch answered {result['StatusCode']}: {result.get('Messages')}"
                    )
                labels[query_id].add(result.get("Label", ""))
                if len(labels[query_id]) > 1:
                    raise SourceError(
                        f"{context}: returned several series ({', '.join(sorted(labels[query_id]))}) where one is "
                        f"expected; aggregate them in the expression"
                    )
                times = pd.to_datetime(result["Timestamps"], utc=True)
                found[query_id].append(pd.Series(result["Values"], index=times, dtype=float))
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
        return {query_id: pd.concat(parts) for query_id, parts in found.items()}
