"""/annotations: a deploy or scaling action the tenant reports (Grafana's annotation body), which the
detector takes as a known cause of alerts (helios_pipelines/core/ml/changes.py).

A change matters while its window lies inside the history the detector reads (``runtime.history_span``,
two weeks for a weekly season), and a scaling after the detector's training history also for as long as
the detector divides it out of the per-replica metrics it names (``changes.rescaled``: until a detector
trained on the new scale is served). One that matters no more can explain no alert: it is refused
when posted, and not kept when read back from the store (a restarted replica would otherwise hold every
deploy of the tenant's life), so the bound on posted changes counts those that still matter: a tenant
that deploys many times a day is not refused for good once it has deployed that often.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from helios_pipelines.core.ml.changes import ChangeAnnotation, divided_out
from serving.errors import NotFoundError, RequestError

if TYPE_CHECKING:
    from serving.runtime import TenantRuntime

MAX_POSTED_CHANGES = 256  # per tenant inside the detector's history: it weighs each one on every detection


def history_start(runtime: TenantRuntime) -> pd.Timestamp:
    """The oldest time the detector reads now."""
    return runtime.step_end() - runtime.history_span


def still_read(runtime: TenantRuntime, change: ChangeAnnotation) -> bool:
    if runtime.detector is None:
        return False
    if pd.Timestamp(change.time_end or change.time) >= history_start(runtime):
        return True
    return divided_out(change, runtime.detector.learned_until)


def resolved(runtime: TenantRuntime, change: ChangeAnnotation) -> ChangeAnnotation:
    """``change`` with its metrics by their logical names (a series name is accepted, as everywhere),
    which the detector's rule compares with. Refused: an unknown metric (404 naming it), a tenant
    without an anomaly detector (404: nothing would read the change), a change that ended before the
    detector's history (400 naming the field)."""
    if runtime.detector is None:
        raise NotFoundError(f"tenant '{runtime.tenant_id}' has no anomaly detector to report changes to")
    metrics = [runtime.metric(name) for name in change.metrics]
    if not still_read(runtime, change):
        field = "time" if change.time_end is None else "time_end (Grafana's timeEnd)"
        raise RequestError(f"tenant '{runtime.tenant_id}': {field} is before {history_start(runtime).isoformat()}, "
                           "the oldest time its detector reads (and no scaling it divides out): "
                           "the change can explain no alert")
    return change if metrics == change.metrics else change.model_copy(update={"metrics": metrics})


def forget_unread(runtime: TenantRuntime) -> None:
    """Drop the runtime's changes the detector no longer reads: they explain nothing, and each is
    weighed on every detection (a replica up for months would otherwise hold every deploy since)."""
    runtime.posted_changes = [change for change in runtime.posted_changes if still_read(runtime, change)]


def check_room(runtime: TenantRuntime) -> None:
    """Before a change is stored: a tenant's changes the detector still reads are bounded."""
    if sum(still_read(runtime, change) for change in runtime.posted_changes) >= MAX_POSTED_CHANGES:
        raise RequestError(f"tenant '{runtime.tenant_id}' already has {MAX_POSTED_CHANGES} posted changes its "
                           f"detector still reads (inside its history, since {history_start(runtime).isoformat()}, "
                           "or scalings after its training)")


def window_end(runtime: TenantRuntime, change: ChangeAnnotation) -> pd.Timestamp:
    """Its end, or without one the end of the detector's rows for it: from the first step at or after
    its time (core/ml/changes.py)."""
    if change.time_end is not None:
        return pd.Timestamp(change.time_end)
    return pd.Timestamp(change.time).ceil(runtime.step) + runtime.detector.change_window_rows * runtime.step


def post(runtime: TenantRuntime, change: ChangeAnnotation) -> dict:
    change = resolved(runtime, change)
    runtime.add_change(change)
    return {
        "tenant": runtime.tenant_id,
        "posted": change.model_dump(mode="json"),
        "window_end": window_end(runtime, change).isoformat(),
    }
