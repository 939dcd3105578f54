"""Events posted through ``POST /events`` and changes posted through ``POST /annotations`` live in the
store, so every replica of a tenant honours them.

A replica that receives one validates it (its metrics must be the tenant's), stores it, and takes
every stored event and change it has not seen yet, its own included, in id order; a thread does the
same every ``HELIOS_EVENTS_POLL_SECONDS`` (default 5), so what is posted to one replica shapes the
forecasts and alerts of the others within that time. The runtime keeps them in memory (its answers are
cached per step and per count of what was posted); the store is the durable copy, read again on start
(less the changes the detector no longer reads: serving/answers/annotations.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from helios_pipelines.core.ml.changes import ChangeAnnotation
from helios_pipelines.core.ops.store import Store, StoreError, UnknownCustomerError
from helios_pipelines.core.tenants import ScheduledEvent
from serving.answers import annotations, events
from serving.errors import NotFoundError
from serving.runtime import TenantRuntime

log = logging.getLogger(__name__)


def poll_seconds() -> float:
    return float(os.environ.get("HELIOS_EVENTS_POLL_SECONDS") or 5)


@dataclass(frozen=True)
class Posted:
    """One kind of what tenants post: how it is checked, stored, read back and applied to a runtime."""

    what: str  # as logs and errors name it
    model: type[ScheduledEvent] | type[ChangeAnnotation]
    checked: Callable[[TenantRuntime, Any], Any]  # validation before state: what is stored, or an error
    check_room: Callable[[TenantRuntime], None]
    add: Callable[[Store, str, Any], int]
    stored_after: Callable[[Store, str, int], list[tuple[int, dict]]]
    apply: Callable[[TenantRuntime, Any], dict]
    kept: Callable[[TenantRuntime, Any], bool] = lambda runtime, posted: True  # what a runtime reads back
    forget: Callable[[TenantRuntime], None] = lambda runtime: None  # what it drops once it matters no more


POSTED = (
    Posted("event", ScheduledEvent, events.checked, events.check_room,
           lambda store, tenant, event: store.add_event(tenant, event.name, event.start, event.model_dump(mode="json")),
           Store.events_after, TenantRuntime.post_event),
    Posted("change", ChangeAnnotation, annotations.resolved, annotations.check_room,
           lambda store, tenant, change: store.add_change(tenant, change.time, change.model_dump(mode="json")),
           Store.changes_after, TenantRuntime.post_change, kept=annotations.still_read,
           forget=annotations.forget_unread),
)


class EventFeed:
    def __init__(self, store: Store, runtimes: dict[str, TenantRuntime]):
        self.store, self.runtimes = store, runtimes
        # The highest id applied, per kind posted and tenant.
        self._seen: dict[tuple[str, str], int] = {(kind.what, tenant): 0 for kind in POSTED for tenant in runtimes}
        self._lock = threading.Lock()
        self._not_stored: set[str] = set()  # tenants the store does not know, logged once

    def post(self, runtime: TenantRuntime, posted: ScheduledEvent | ChangeAnnotation) -> dict:
        """Store ``posted`` for ``runtime``'s tenant and apply it here; the runtime's answer to it."""
        kind = next(kind for kind in POSTED if isinstance(posted, kind.model))
        tenant = runtime.tenant_id
        try:
            with self._lock:  # concurrent posts see each other's room
                posted = kind.checked(runtime, posted)  # validation before state
                kind.check_room(runtime)
                posted_id = kind.add(self.store, tenant, posted)
                answers = self._sync(runtime)
        except UnknownCustomerError as exc:
            raise NotFoundError(f"cannot keep the posted {kind.what} for tenant '{tenant}': {exc}") from None
        return answers[kind.what][posted_id]

    def sync(self) -> None:
        """Apply every tenant's events and changes stored since the last look (those other replicas received)."""
        for runtime in self.runtimes.values():
            try:
                with self._lock:
                    self._sync(runtime)
            except StoreError as exc:
                if runtime.tenant_id not in self._not_stored:
                    self._not_stored.add(runtime.tenant_id)
                    log.warning("tenant '%s': posted events and changes not read: %s", runtime.tenant_id, exc)

    def _sync(self, runtime: TenantRuntime) -> dict[str, dict[int, dict]]:
        """The answers to what was applied, by kind and id."""
        tenant = runtime.tenant_id
        answers: dict[str, dict[int, dict]] = {}
        for kind in POSTED:
            applied = answers[kind.what] = {}
            for posted_id, stored in kind.stored_after(self.store, tenant, self._seen[kind.what, tenant]):
                try:
                    posted = kind.model.model_validate(stored)
                    if kind.kept(runtime, posted):
                        applied[posted_id] = kind.apply(runtime, posted)
                except (NotFoundError, ValueError) as exc:  # posted to a replica serving another bundle version
                    log.warning("tenant '%s': posted %s %d not applicable here: %s", tenant, kind.what, posted_id, exc)
                self._seen[kind.what, tenant] = posted_id
            kind.forget(runtime)
        return answers

    def poll_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.wait(poll_seconds()):
            try:
                self.sync()
            except Exception:  # a store hiccup must not end the polling; the next round retries
                log.exception("reading posted events and changes failed")
