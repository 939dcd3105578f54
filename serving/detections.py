"""/detect's scores folded into the anomaly episodes (core/ops/anomaly_log.py), off the request path.

A /detect of the latest step is answered from the step's cache and its scores are queued here, one
per (tenant, metric, step) however many requests answered them; the publisher's thread
(serving/publisher.py) writes the queue once per step, and the service writes what is left when it
stops. The queue is bounded: past ``max_pending`` points new ones are dropped and counted (the
scheduled detection of serving/watch.py folds every step into the episodes anyway). Points a caller
asks to record (``record: true``) are written at once, as the answer's ``recorded`` count says.
"""

from __future__ import annotations

import logging
import threading

from helios_pipelines.core.ops.anomaly_log import record_detection
from helios_pipelines.core.ops.plans import PlanLimitError
from helios_pipelines.core.ops.store import Store, StoreError, UnknownCustomerError
from helios_pipelines.core.tenants import TenantConfig

log = logging.getLogger(__name__)


class DetectionRecorder:
    def __init__(self, store: Store, max_pending: int = 10_000) -> None:
        self.store, self.max_pending = store, max_pending
        self.dropped = 0
        # tenant -> (its config, the detector's threshold, its scores by (metric, timestamp))
        self._pending: dict[str, tuple[TenantConfig, float, dict[tuple[str, str], dict]]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def queue(self, tenant: TenantConfig, result: dict) -> None:
        """Keeps ``result``'s scores for the next ``flush``; touches no store."""
        with self._lock:
            _, _, scores = self._pending.setdefault(tenant.id, (tenant, float(result["threshold"]), {}))
            for score in result["scores"]:
                key = (score["metric"], score["timestamp"])
                if key not in scores and self._size >= self.max_pending:
                    self.dropped += 1
                    continue
                self._size += key not in scores
                scores[key] = score

    def flush(self) -> int:
        """Writes every queued score, one ``record_detection`` per tenant, each tenant on its own; how
        many scores were taken from the queue."""
        with self._lock:
            pending, self._pending, self._size = self._pending, {}, 0
        for tenant, threshold, scores in pending.values():
            try:
                self.write(tenant, {"threshold": threshold, "scores": list(scores.values())})
            except (StoreError, PlanLimitError) as exc:  # disabled, or a plan without anomaly detection
                log.warning("anomalies of tenant '%s' not recorded: %s", tenant.id, exc)
            except Exception:  # the store is down: these scores are lost, the scheduled detection has them
                log.exception("anomalies of tenant '%s' not recorded", tenant.id)
        return sum(len(scores) for _, _, scores in pending.values())

    def write(self, tenant: TenantConfig, result: dict) -> None:
        """Folds ``result`` into the tenant's episodes now. A tenant the store does not know (not yet
        synced) still got its answer, and the log says why nothing was recorded."""
        try:
            record_detection(self.store, tenant, result, detected_by="detect")
        except UnknownCustomerError as exc:
            log.warning("anomalies of tenant '%s' not recorded: %s", tenant.id, exc)
