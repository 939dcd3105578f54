"""Events posted through ``POST /events`` live in the store, so every replica of a tenant honours them.

A replica that receives an event validates it (its metrics must be the tenant's), stores it, and takes
every stored event it has not seen yet, its own included, in id order; a thread does the same every
``HELIOS_EVENTS_POLL_SECONDS`` (default 5), so an event posted to one replica shapes the forecasts of
the others within that time. The runtime keeps the events in memory (its answers are cached per
step and per count of posted events); the store is the durable copy, read again on start.
"""

from __future__ import annotations

import logging
import os
import threading

from helios_pipelines.core.ops.store import Store, StoreError, UnknownCustomerError
from helios_pipelines.core.tenants import ScheduledEvent
from serving.errors import NotFoundError
from serving.runtime import TenantRuntime

log = logging.getLogger(__name__)


def poll_seconds() -> float:
    return float(os.environ.get("HELIOS_EVENTS_POLL_SECONDS") or 5)


class EventFeed:
    def __init__(self, store: Store, runtimes: dict[str, TenantRuntime]):
        self.store, self.runtimes = store, runtimes
        self._seen: dict[str, int] = dict.fromkeys(runtimes, 0)  # highest event id applied, per tenant
        self._lock = threading.Lock()
        self._not_stored: set[str] = set()  # tenants the store does not know, logged once

    def post(self, runtime: TenantRuntime, event: ScheduledEvent) -> dict:
        """Store ``event`` for ``runtime``'s tenant and apply it here; the runtime's answer to it."""
        for name in event.metrics:  # validation before state
            runtime.metric(name)
        tenant = runtime.tenant_id
        try:
            with self._lock:
                posted_id = self.store.add_event(tenant, event.name, event.start, event.model_dump(mode="json"))
                answers = self._sync(runtime)
        except UnknownCustomerError as exc:
            raise NotFoundError(f"cannot keep an event for tenant '{tenant}': {exc}") from None
        return answers[posted_id]

    def sync(self) -> None:
        """Apply every tenant's events stored since the last look (those other replicas received)."""
        for runtime in self.runtimes.values():
            try:
                with self._lock:
                    self._sync(runtime)
            except StoreError as exc:
                if runtime.tenant_id not in self._not_stored:
                    self._not_stored.add(runtime.tenant_id)
                    log.warning("tenant '%s': posted events not read: %s", runtime.tenant_id, exc)

    def _sync(self, runtime: TenantRuntime) -> dict[int, dict]:
        tenant = runtime.tenant_id
        answers = {}
        for event_id, stored in self.store.events_after(tenant, self._seen[tenant]):
            try:
                answers[event_id] = runtime.post_event(ScheduledEvent.model_validate(stored))
            except (NotFoundError, ValueError) as exc:  # posted to a replica serving another bundle version
                log.warning("tenant '%s': posted event %d not applicable here: %s", tenant, event_id, exc)
            self._seen[tenant] = event_id
        return answers

    def poll_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.wait(poll_seconds()):
            try:
                self.sync()
            except Exception:  # a store hiccup must not end the polling; the next round retries
                log.exception("reading posted events failed")
