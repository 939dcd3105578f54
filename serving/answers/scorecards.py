"""GET /events/<name>/scorecard: an event's scorecard from the Helios store (written by `helios events
scorecard` or the Dagster scorecard job).

Reading a stored row is bounded work; scoring an event replays its forecasts (tens of seconds),
which never happens on a request.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from helios_pipelines.core.ml.peaks import PeakSchedule
from helios_pipelines.core.ops.scorecard import UnfinishedEventError, UnknownEventError
from helios_pipelines.core.ops.scorecard_store import stored_scorecard
from helios_pipelines.core.ops.store import Store
from serving.runtime import TenantRuntime


def scorecard_response(store: Store, runtime: TenantRuntime, name: str) -> JSONResponse:
    """200 with the scorecard; 404 naming an event the tenant does not have; 409 naming one that has
    not finished (or finished and is not scored yet). Learned peaks are the served planner's."""
    try:
        learned = PeakSchedule.from_dict(runtime.planner.peaks) if runtime.planner is not None else None
        card = stored_scorecard(store, runtime.tenant, name, runtime.step_end(), runtime.posted_events, learned)
    except UnknownEventError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    except UnfinishedEventError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    return JSONResponse(card.to_dict())
