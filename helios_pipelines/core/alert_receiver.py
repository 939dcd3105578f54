"""A webhook receiver for Helios' generic JSON alerts: what a customer's endpoint should do, runnable.

It checks each request as ``alerts.verify_signature`` describes (a fresh ``X-Helios-Timestamp`` and an
HMAC-SHA256 ``X-Helios-Signature`` over the raw body; 401 otherwise), acts on each
``X-Helios-Idempotency-Key`` once (a redelivery is answered 200 and not acted on again), and appends
each alert it accepts to a JSON-lines file. ``helios alerts receive`` runs it for the demo and for
checking a tenant's webhook routing end to end.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helios_pipelines.core.alerts import verify_signature

MAX_BODY = 1 << 20


class AlertReceiver:
    """Serves on ``host:port`` in a background thread until :meth:`stop`."""

    def __init__(self, secret: str, out: Path, host: str = "127.0.0.1", port: int = 0,
                 on_alert: Callable[[dict], None] | None = None):
        self.secret, self.out, self.on_alert = secret, Path(out), on_alert
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.seen: set[str] = {json.loads(line)["idempotency_key"] for line in self._lines()}
        self.rejected = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._answer(413, "body too large")
                status, message = receiver.receive(dict(self.headers.items()), self.rfile.read(length))
                self._answer(status, message)

            def _answer(self, status: int, message: str) -> None:
                payload = json.dumps({"status": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-receiver", daemon=True)

    def __enter__(self) -> AlertReceiver:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def receive(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """(HTTP status, what happened) for one request."""
        headers = {k.lower(): v for k, v in headers.items()}
        key = headers.get("x-helios-idempotency-key")
        if not key:
            return 400, "missing X-Helios-Idempotency-Key"
        if not verify_signature(self.secret, headers.get("x-helios-timestamp", ""), body,
                                headers.get("x-helios-signature", ""), datetime.now(UTC)):
            with self._lock:
                self.rejected += 1
            return 401, "bad or stale signature"
        try:
            document = json.loads(body)
        except ValueError:
            return 400, "body is not JSON"
        with self._lock:
            if key in self.seen:
                return 200, "duplicate"
            self.seen.add(key)
            entry = {"idempotency_key": key, "received_at": datetime.now(UTC).isoformat(),
                     "signature_verified": True, "alert": document}
            with self.out.open("a") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        if self.on_alert is not None:
            self.on_alert(entry)
        return 200, "accepted"

    def received(self) -> list[dict]:
        return [json.loads(line) for line in self._lines()]

    def _lines(self) -> list[str]:
        return [line for line in self.out.read_text().splitlines() if line.strip()] if self.out.exists() else []
