"""The JSON endpoints take JSON only.

BentoML also parses multipart bodies for its endpoints, and a multipart Content-Type without a
boundary makes that parser fail with a 500; a 415 that names the expected type is the right answer.
"""

from __future__ import annotations

import json

JSON_ENDPOINTS = frozenset({"/predict", "/detect", "/recommend", "/events"})


class JSONBodyOnly:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in JSON_ENDPOINTS:
            raw = dict(scope.get("headers", [])).get(b"content-type", b"application/json")
            media_type = raw.decode("latin-1").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                body = json.dumps({"error": f"{scope['path']} takes a JSON body (Content-Type: application/json), got {media_type!r}"}).encode()
                await send({"type": "http.response.start", "status": 415,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
