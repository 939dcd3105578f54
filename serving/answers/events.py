"""/events: an upcoming scheduled event posted at run time (a tournament the tenant just announced);
every later forecast and recommendation honours it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.tenants import ScheduledEvent
from serving.errors import RequestError

if TYPE_CHECKING:
    from serving.runtime import TenantRuntime

MAX_POSTED_EVENTS = 256  # per tenant and service process: each one is honoured by every forecast


def schedule(runtime: TenantRuntime) -> EventSchedule:
    """The tenant's configured events and those posted to this service."""
    return EventSchedule(runtime.tenant.events).with_events(runtime.posted_events)


def check_room(runtime: TenantRuntime) -> None:
    """Before an event is stored: a tenant's posted events are bounded (each one is honoured by every
    forecast from then on)."""
    if len(runtime.posted_events) >= MAX_POSTED_EVENTS:
        raise RequestError(f"tenant '{runtime.tenant_id}' already has {MAX_POSTED_EVENTS} posted events; "
                           "put lasting ones in its YAML")


def checked(runtime: TenantRuntime, event: ScheduledEvent) -> ScheduledEvent:
    """``event``, refused (404) when it names a metric the tenant does not have."""
    for name in event.metrics:
        runtime.metric(name)
    return event


def post(runtime: TenantRuntime, event: ScheduledEvent) -> dict:
    runtime.add_event(checked(runtime, event))
    now = pd.Timestamp.now(tz="UTC")
    upcoming = schedule(runtime).occurrences(now, now + pd.Timedelta("90D"))
    return {
        "tenant": runtime.tenant_id,
        "posted": event.model_dump(mode="json"),
        "upcoming": [{"name": o.name, "kind": o.kind, "start": o.start.isoformat(), "end": o.end.isoformat(),
                      "multiplier": o.multiplier} for o in upcoming],
    }
