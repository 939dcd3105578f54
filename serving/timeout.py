"""A 504 for a request not answered within the service's ``traffic.timeout``, in place of BentoML's.

BentoML's TimeoutMiddleware (bentoml 1.4) arms a timer per request and never cancels it, so every
request's timer, future and trace span (the timer keeps the request's context) stay alive for the
whole timeout: at hundreds of requests per second that is tens of thousands of objects, and the
garbage collections walking them stalled the service for 100+ ms every few seconds, the whole p99.
This one answers the same 504 and cancels its timer as soon as the response starts.
:func:`replace_bentoml_timeout` swaps it in where BentoML builds its middleware stack, and refuses
to start the service if BentoML no longer builds it from there (a silent no-op would bring the
stalls back). tests/serving/test_serving_cache.py proves the swap takes effect in a real `bentoml serve`.
"""

from __future__ import annotations

import asyncio
import inspect
import json

from bentoml._internal.server import base_app
from bentoml._internal.server.http import traffic


def _time_out(started: asyncio.Future) -> None:
    if not started.done():
        started.set_exception(TimeoutError())


class RequestTimeout:
    def __init__(self, app, timeout: float) -> None:  # BentoML's signature: it constructs this one
        self.app, self.seconds = app, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        timer = loop.call_later(self.seconds, _time_out, started)

        async def send_started(message) -> None:
            if not started.done():
                started.set_result(None)
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, send_started))
        try:
            await started
        except TimeoutError:
            if answer.cancel():
                body = json.dumps({"error": f"{scope.get('method', '')} {scope['path']} was not answered within "
                                            f"{self.seconds:g} seconds (the service's traffic timeout)"}).encode()
                await send({"type": "http.response.start", "status": 504,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            return
        finally:
            timer.cancel()
        await answer


def replace_bentoml_timeout() -> None:
    """BentoML imports its TimeoutMiddleware from ``traffic`` each time it builds an app."""
    builder = inspect.getsource(base_app.BaseAppFactory)
    if not hasattr(traffic, "TimeoutMiddleware") or "from .http.traffic import TimeoutMiddleware" not in builder:
        raise RuntimeError(
            "BentoML no longer builds its request timeout from bentoml._internal.server.http.traffic."
            "TimeoutMiddleware; serving/timeout.py must follow it (or go, if BentoML fixed its timer)"
        )
    traffic.TimeoutMiddleware = RequestTimeout
