"""What the service does between requests, once per step, in one background thread: keep Helios'
series on /metrics (BentoML's prometheus registry) fresh, compute the step's answers to what was asked
in the previous step before they are asked again (so no request waits at a step boundary,
serving/runtime.py), let each tenant's watch record the published forecasts, run the scheduled
detection and join actuals (serving/watch.py), and write the scores /detect answered
(serving/detections.py).

Each tenant is refreshed and watched on its own: one tenant whose state fails (its source is down, a
model raises) keeps its last gauges and logs its error, and every other tenant's gauges stay fresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

import pandas as pd

from helios_pipelines.core.ops.exposition import Sample
from helios_pipelines.core.ops.feedback import PredictionRecorder, accuracy_samples, live_accuracy
from helios_pipelines.core.ops.store import Store, UnknownCustomerError
from serving.detections import DetectionRecorder
from serving.runtime import TenantRuntime
from serving.watch import TenantWatch

log = logging.getLogger(__name__)


class LiveAccuracy:
    """Accuracy over the last day of recorded predictions, re-read from the store once a minute."""

    def __init__(self, store: Store, every: float = 60.0) -> None:
        self.store, self.every = store, every
        self._cached: dict[str, tuple[float, list[Sample]]] = {}

    def samples(self, tenant: str) -> list[Sample]:
        cached = self._cached.get(tenant)
        if cached is None or time.monotonic() - cached[0] > self.every:
            try:
                rows = live_accuracy(self.store, tenant, timedelta(days=1))
            except UnknownCustomerError:
                rows = []  # not synced into the store yet: nothing recorded to measure
            cached = (time.monotonic(), accuracy_samples(tenant, rows))
            self._cached[tenant] = cached
        return cached[1]


class GaugeBoard:
    """Helios' series as prometheus_client gauges, one set per tenant."""

    def __init__(self, registry=None) -> None:
        import prometheus_client  # after BentoML set PROMETHEUS_MULTIPROC_DIR in this worker

        self._client = prometheus_client
        self._registry = registry or prometheus_client.REGISTRY
        self._gauges: dict[str, prometheus_client.Gauge] = {}

    def set(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            gauge = self._gauges.get(sample.name)
            if gauge is None:
                gauge = self._gauges[sample.name] = self._client.Gauge(
                    sample.name, sample.help or sample.name, sorted(sample.labels), multiprocess_mode="mostrecent",
                    registry=self._registry)
            gauge.labels(**sample.labels).set(sample.value)


TenantSamples = Callable[[TenantRuntime, pd.Timestamp], list[Sample]]


def refresh(board: GaugeBoard, runtimes: Iterable[TenantRuntime], tenant_samples: TenantSamples,
            now: pd.Timestamp | None = None) -> dict[str, Exception]:
    """Every tenant's step (the one containing ``now``): its series on the gauges, then its answers to
    what was asked in the previous step (``TenantRuntime.prepare``), each tenant on its own; the
    failures, by tenant. From then on the tenant's requests are answered from this step."""
    failed = {}
    for runtime in runtimes:
        at = now if now is not None else pd.Timestamp.now(tz="UTC")  # one step for the series and the answers
        try:
            board.set(tenant_samples(runtime, at))
            runtime.prepare(at)
        except Exception as exc:  # this tenant's gauges keep their last values; the others refresh
            log.exception("refreshing the step of tenant '%s' failed", runtime.tenant_id)
            failed[runtime.tenant_id] = exc
        finally:  # failed too: its requests compute (and answer the failure) rather than wait a step
            runtime.published_step = runtime.step_end(at)
    return failed


def start(runtimes: list[TenantRuntime], store: Store, recorder: PredictionRecorder, detections: DetectionRecorder,
          tenant_samples: TenantSamples) -> threading.Thread:
    thread = threading.Thread(target=_publish_forever, args=(runtimes, store, recorder, detections, tenant_samples),
                              name="helios-gauges", daemon=True)
    thread.start()
    return thread


def _publish_forever(runtimes: list[TenantRuntime], store: Store, recorder: PredictionRecorder,
                     detections: DetectionRecorder, tenant_samples: TenantSamples) -> None:
    board = GaugeBoard()
    watches = [TenantWatch(runtime, store, recorder) for runtime in runtimes]
    period = max(15.0, min(r.step.total_seconds() for r in runtimes))
    while True:
        refreshed = time.time()
        refresh(board, runtimes, tenant_samples)
        for watch in watches:
            try:
                report = watch.tick()
                if report.opened:
                    log.warning("tenant '%s': anomaly opened on %s", watch.runtime.tenant_id, ", ".join(report.opened))
            except Exception:
                log.exception("watching tenant '%s' failed", watch.runtime.tenant_id)
        detections.flush()
        # Wake just after the boundary that follows this refresh, when that step's point is complete; a
        # watch that ran past it (a first look catching up on a day) refreshes at once, not a step late.
        time.sleep(max(0.0, refreshed - refreshed % period + period + 1.0 - time.time()))
