"""What a request must look like before any handler works on it, and what an error must never do.

- Headers: at most ``MAX_HEADER_BYTES`` in all (431), checked before the API key is looked at.
- The JSON endpoints take JSON only (415 naming the expected type: BentoML also parses multipart
  bodies, and a multipart Content-Type without a boundary made its parser answer 500), and at most
  ``MAX_BODY_BYTES`` of it (413, from the Content-Length or while reading, before any parsing);
  ``/api/v1/query``'s form body too.
- An exception raised after a route answered (Starlette's ServerErrorMiddleware sends its 500 and then
  re-raises, for the server to log) is logged here and goes no further: uvicorn closes a connection
  whose application raised, without ``Connection: close``, so the client's next request on that
  keep-alive connection got an empty reply.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)

# What one request may ask for, so every request does bounded work: serving/service.py declares these
# on the endpoints' fields and serving/host.py checks what the fields only bound together.
MAX_HORIZON_MINUTES = 366 * 24 * 60  # a year; each model says how far it was trained for (400 beyond)
MAX_METRICS_PER_DETECT = 64
MAX_POINTS_PER_DETECT = 1000
POINT_YEARS = (1970, 2200)  # pandas holds 1677-2262; the detector's history is days, not centuries

JSON_ENDPOINTS = frozenset({"/predict", "/detect", "/recommend", "/events", "/annotations"})
FORM_ENDPOINTS = frozenset({"/api/v1/query"})
MAX_BODY_BYTES = 256 * 1024  # a /detect of its most points is about 80 KiB
MAX_HEADER_BYTES = 16 * 1024


class RequestGuard:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        size = sum(len(name) + len(value) for name, value in headers)
        if size > MAX_HEADER_BYTES:
            await reject(send, 431, f"request headers are {size} bytes; at most {MAX_HEADER_BYTES} are read")
            return
        path, method = scope["path"], scope["method"]
        if method == "POST" and path in JSON_ENDPOINTS | FORM_ENDPOINTS:
            header = dict(headers)
            if path in JSON_ENDPOINTS:
                raw = header.get(b"content-type", b"application/json")
                media_type = raw.decode("latin-1").split(";", 1)[0].strip().lower()
                if media_type != "application/json":
                    await reject(send, 415, f"{path} takes a JSON body (Content-Type: application/json), "
                                            f"got {media_type[:64]!r}")
                    return
            declared = header.get(b"content-length", b"0")
            if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
                await reject(send, 413, f"{path} takes a body of at most {MAX_BODY_BYTES} bytes")
                return
            body = await _read_body(receive)
            if body is None:
                await reject(send, 413, f"{path} takes a body of at most {MAX_BODY_BYTES} bytes")
                return
            receive = _replay(body, receive)
        await _answer_keeping_the_connection(self.app, scope, receive, send)


async def _read_body(receive) -> bytes | None:
    """The whole body, or None as soon as it is longer than allowed (a chunked body has no length)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replayed


async def _answer_keeping_the_connection(app, scope, receive, send) -> None:
    started = finished = False

    async def tracked(message) -> None:
        nonlocal started, finished
        if message["type"] == "http.response.start":
            started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            finished = True
        await send(message)

    try:
        await app(scope, receive, tracked)
    except Exception:
        if started and not finished:
            raise  # half a response: only closing the connection can tell the client
        log.exception("%s %s failed", scope["method"], scope["path"])
        if not started:
            await reject(send, 500, f"{scope['method']} {scope['path']} failed on the server; the log says why")


async def reject(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
