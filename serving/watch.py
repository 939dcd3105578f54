"""What a service does for each of its tenants between requests, once per step.

The service already reads every tenant's recent history each step to keep ``/metrics`` and
``/api/v1/query`` fresh (what KEDA and Grafana read). On the same step, with the same cached history
and the same champions, :class:`TenantWatch` also:

- records the forecasts it publishes as served predictions (one per metric, horizon and step), so the
  feedback loop measures what KEDA actually scaled on, whether or not anybody calls ``/predict``;
- runs the scheduled detection: scores every step since its last look (on start, the last
  ``catch_up``) and folds them into the anomaly episodes, which routes the alerts;
- joins the actuals of recorded predictions whose target has passed, from the tenant's source;
- folds each scaled service's capacity and desired replicas, and each metric's levels, into the
  capacity and scaling alert episodes (core/ops/capacity_alerts.py), which routes those alerts.

One watch per tenant per service process. Replicas of a tenant all run one: each records the same
forecasts, which the store keeps once (a unique key per metric, horizon and origin); the scheduled
detection (and so its alerts) and the join of actuals run on the one replica that claims the step in
the store (``Store.claim_step``), starting where the previous claim stopped.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd

from helios_pipelines.core.ops.anomaly_log import OPENED, record_detection
from helios_pipelines.core.ops.capacity_alerts import level_readings, record_readings
from helios_pipelines.core.ops.feedback import PredictionRecorder, join_actuals
from helios_pipelines.core.ops.plans import PlanLimitError
from helios_pipelines.core.ops.store import Store, StoreError
from serving.runtime import TenantRuntime

log = logging.getLogger(__name__)


@dataclass
class WatchReport:
    recorded: int = 0  # served forecasts queued for the store
    scored_steps: int = 0
    opened: list[str] = field(default_factory=list)  # metrics whose anomaly episode opened
    joined: int = 0  # predictions that got their actual


class TenantWatch:
    def __init__(self, runtime: TenantRuntime, store: Store, recorder: PredictionRecorder,
                 catch_up: timedelta = timedelta(hours=1), join_every: timedelta = timedelta(minutes=5),
                 replica: str | None = None):
        self.runtime, self.store, self.recorder = runtime, store, recorder
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}"
        self.catch_up, self.join_every = pd.Timedelta(catch_up), pd.Timedelta(join_every)
        self._recorded_step: pd.Timestamp | None = None
        self._joined_at: pd.Timestamp | None = None
        self._not_stored: set[str] = set()  # why nothing is stored, each reason logged once

    def tick(self, now: pd.Timestamp | None = None) -> WatchReport:
        end = (now or pd.Timestamp.now(tz="UTC")).floor(self.runtime.step)
        report = WatchReport()
        new_step = self._recorded_step != end
        if new_step:
            report.recorded = self._record_forecasts(end)
            self._recorded_step = end
        if self.runtime.detector is not None:
            self._detect(end, report)
        if new_step and (self.runtime.tenant.level_metrics or (self.runtime.planner is not None and self.runtime.planner.targets)):
            self._capacity(end)
        if self._joined_at is None or end - self._joined_at >= self.join_every:
            if self.store.claim_step(f"join/{self.runtime.tenant_id}", end.to_pydatetime(), self.replica):
                report.joined = self._store_call("join actuals", join_actuals, self.store, self.runtime.source,
                                                 self.runtime.tenant, end.to_pydatetime()) or 0
            self._joined_at = end
        return report

    def _record_forecasts(self, end: pd.Timestamp) -> int:
        tenant = self.runtime.tenant
        count = 0
        for metric in sorted(self.runtime.forecasters):
            for minutes in tenant.metrics[metric].forecast.horizons:
                self.recorder.record(self.runtime.predict(metric, minutes, now=end))
                count += 1
        return count

    def _detect(self, end: pd.Timestamp, report: WatchReport) -> None:
        name = f"detect/{self.runtime.tenant_id}"
        claim = self.store.claim_step(name, end.to_pydatetime(), self.replica)
        if claim is None:
            return  # another replica detects this step (or a later one)
        since = end - self.catch_up
        if claim.previous is not None:
            since = max(since, pd.Timestamp(claim.previous))
        try:
            result = self.runtime.detect(now=end, since=since)
            report.scored_steps = len({s["timestamp"] for s in result["scores"]})
            changes = self._store_call("record anomalies", record_detection, self.store, self.runtime.tenant, result,
                                       detected_by="scheduled")
        except Exception:
            # Hand the steps back (a source or store that is down), so the next claim looks at them again.
            self.store.release_step(name, claim, self.replica)
            raise
        report.opened = [c.metric for c in changes or [] if c.change == OPENED]

    def _capacity(self, end: pd.Timestamp) -> None:
        """Capacity and scaling alert episodes, on the one replica that claims the step."""
        name = f"capacity/{self.runtime.tenant_id}"
        claim = self.store.claim_step(name, end.to_pydatetime(), self.replica)
        if claim is None:
            return
        try:
            runtime = self.runtime
            readings = runtime.capacity_readings(end) if runtime.planner is not None and runtime.planner.targets else []
            readings += level_readings(runtime.tenant, runtime.history(end), lambda m, h: runtime.forecast(m, h, end),
                                       runtime.forecasters)
            self._store_call("record capacity alerts", record_readings, self.store, runtime.tenant, readings,
                             end.to_pydatetime())
        except Exception:
            self.store.release_step(name, claim, self.replica)
            raise

    def _store_call(self, what: str, call, *args, **kwargs):
        """A tenant the store does not know, or whose plan lacks a feature, is served all the same."""
        try:
            return call(*args, **kwargs)
        except (StoreError, PlanLimitError) as exc:
            reason = f"{what}: {exc}"
            if reason not in self._not_stored:
                self._not_stored.add(reason)
                log.warning("tenant '%s': cannot %s", self.runtime.tenant_id, reason)
            return None
