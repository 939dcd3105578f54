"""``POST /anomalies/<episode>/feedback``: an operator's verdict on one of the key's tenant's anomaly
episodes, stored for the tenant's next detector training (issue 17 item 4; ``helios anomalies
feedback`` is the same from the command line).

The body is ``{"verdict": "not_an_incident" | "incident", "by": "<who>", "note": "<why>"}`` (``by`` and
``note`` optional). The tenant comes from the API key alone (``X-API-Key`` or ``Authorization:
Bearer``; 401 without a valid one), looked up through the service's one key cache (``serving/auth.py``
``KEYS``, whose store the verdict is written to) before the body is read. Answers: 200 with the stored
verdict; 400 naming the field of a malformed body; 404 naming an unknown episode; 403 naming an
episode of another tenant (the other tenant is not named). A refused verdict stores nothing.
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from helios_pipelines.core.ops.store import ForeignAnomalyError, StoreError, UnknownAnomalyError
from serving import auth
from serving.errors import invalid_fields, shown

MAX_BODY_BYTES = 16 * 1024

router = APIRouter(tags=["anomalies"])


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["not_an_incident", "incident"]
    by: str | None = Field(default=None, min_length=1, max_length=255)
    note: str | None = Field(default=None, max_length=4096)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@router.post("/anomalies/{episode}/feedback")
async def anomaly_feedback(episode: str, request: Request) -> JSONResponse:
    key = auth.presented_key(dict(request.scope.get("headers", [])))
    identity = await auth.KEYS.identity(key) if key else None
    if identity is None:
        return _error(401, "a valid API key is required (X-API-Key header or Authorization: Bearer)")
    tenant = identity.slug
    if not episode.isdigit():
        return _error(404, f"no anomaly episode {shown(episode)} of tenant '{tenant}': episodes are numbered")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"body of {len(body)} bytes; a verdict takes at most {MAX_BODY_BYTES}")
    try:
        verdict = Verdict.model_validate(json.loads(body or b"null"))
    except json.JSONDecodeError as exc:
        return _error(400, f"the body is not JSON ({exc.msg}); send {{\"verdict\": \"not_an_incident\"}}")
    except ValidationError as exc:
        return _error(400, f"verdict on episode {episode} of tenant '{tenant}': {invalid_fields(exc.errors())}")
    try:
        stored = await run_in_threadpool(auth.KEYS.store.record_verdict, tenant, int(episode), verdict.verdict,
                                         verdict.by or f"tenant '{tenant}' (API key)", verdict.note)
    except UnknownAnomalyError as exc:
        return _error(404, str(exc))
    except ForeignAnomalyError as exc:
        return _error(403, str(exc))
    except StoreError as exc:
        return _error(400, str(exc))
    return JSONResponse({"tenant": tenant, "episode": stored.anomaly_id, "verdict": stored.verdict,
                         "by": stored.given_by, "given_at": stored.given_at.isoformat()})
