"""The floor under any Python web framework, for bench/serve_bench.py: a bare ASGI app (no framework,
no validation, no middleware) that reads the posted body and answers a fixed JSON body, served by
uvicorn, the server BentoML itself runs on.

    python -m uvicorn bench.minimal_asgi:app --lifespan off
"""

from __future__ import annotations

import json

# Shaped like a Helios /predict answer, so the three services send bodies of about the same size.
ANSWER = {
    "tenant": "gaming-corp",
    "metric": "concurrent_users",
    "horizon_minutes": 60,
    "origin": "2026-11-30T18:00:00+00:00",
    "target_time": "2026-11-30T19:00:00+00:00",
    "value": 41234.5,
    "lower": 39012.25,
    "upper": 43456.75,
    "model": {"name": "gaming-corp_concurrent_users_forecaster", "version": "7", "kind": "xgboost"},
}
_BODY = json.dumps(ANSWER).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # the request body is read, as a real endpoint would, then ignored
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
