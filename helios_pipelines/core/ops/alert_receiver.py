"""Local alert receivers: what a customer's endpoint does, runnable, for the demo and the tests.

``kind="webhook"``: Helios' generic JSON alerts. Each request is checked as
``alerts.verify_signature`` describes (a fresh ``X-Helios-Timestamp`` and an HMAC-SHA256
``X-Helios-Signature`` over the raw body; 401 otherwise), each ``X-Helios-Idempotency-Key`` is acted
on once (a redelivery is answered 200 and not acted on again).

``kind="slack"`` and ``kind="pagerduty"``: stand-ins for Slack's incoming webhooks and PagerDuty's
Events API v2 (``/v2/enqueue``), which cannot be reached here. They accept exactly the vendor's
documented payload and answer as the vendor does (Slack: 200 ``ok`` or 400 ``invalid_payload``;
PagerDuty: 202 ``{"status": "success", "dedup_key": ...}`` or 400 ``invalid event`` with the errors);
anything else is refused, so a format Helios gets wrong fails here as it would there. Hand-written:
neither vendor publishes a schema package for these payloads.

Every accepted request is appended to a JSON-lines file. ``helios alerts receive`` runs one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helios_pipelines.core.ops.alerts import verify_signature

MAX_BODY = 1 << 20
KINDS = ("webhook", "slack", "pagerduty")
# Slack incoming webhooks: the message fields they take (https://api.slack.com/messaging/webhooks,
# chat.postMessage's arguments); the legacy username/icon/channel overrides are still accepted.
SLACK_FIELDS = {"text", "blocks", "attachments", "thread_ts", "mrkdwn", "unfurl_links", "unfurl_media",
                "username", "icon_emoji", "icon_url", "channel"}
SLACK_BLOCKS = {"section", "context", "header", "divider", "actions", "image", "rich_text", "input", "file", "video"}
# PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/).
PAGERDUTY_FIELDS = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
PAGERDUTY_PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
PAGERDUTY_ACTIONS = {"trigger", "acknowledge", "resolve"}
PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}


def _text_object(value, where: str, limit: int) -> list[str]:
    if not isinstance(value, dict) or value.get("type") not in ("plain_text", "mrkdwn"):
        return [f"{where}: a text object of type plain_text or mrkdwn is required"]
    if set(value) - {"type", "text", "emoji", "verbatim"}:
        return [f"{where}: unknown fields {sorted(set(value) - {'type', 'text', 'emoji', 'verbatim'})}"]
    text = value.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        return [f"{where}.text: a string of 1 to {limit} characters is required"]
    return []


def slack_problems(document) -> list[str]:
    """Why Slack would refuse this incoming-webhook payload (empty: it would post it)."""
    if not isinstance(document, dict):
        return ["the payload must be a JSON object"]
    problems = [f"unknown field '{name}'" for name in sorted(set(document) - SLACK_FIELDS)]
    text, blocks = document.get("text"), document.get("blocks")
    if text is None and blocks is None and document.get("attachments") is None:
        problems.append("no_text: text, blocks or attachments is required")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        problems.append("text must be a non-empty string")
    if blocks is not None:
        if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
            return problems + ["blocks must be a list of 1 to 50 blocks"]
        for i, block in enumerate(blocks):
            where = f"blocks[{i}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in SLACK_BLOCKS:
                problems.append(f"{where}: unknown block type {kind!r}")
            elif kind == "section":
                if "text" not in block and "fields" not in block:
                    problems.append(f"{where}: a section needs text or fields")
                if "text" in block:
                    problems += _text_object(block["text"], f"{where}.text", 3000)
            elif kind == "context":
                elements = block.get("elements")
                if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                    problems.append(f"{where}.elements: 1 to 10 elements are required")
                else:
                    for j, element in enumerate(elements):
                        if not (isinstance(element, dict) and element.get("type") == "image"):
                            problems += _text_object(element, f"{where}.elements[{j}]", 3000)
            elif kind == "header":
                problems += _text_object(block.get("text"), f"{where}.text", 150)
    return problems


def pagerduty_problems(document) -> list[str]:
    """Why PagerDuty's Events API v2 would refuse this event (empty: it would accept it)."""
    if not isinstance(document, dict):
        return ["the event must be a JSON object"]
    problems = [f"unknown field '{name}'" for name in sorted(set(document) - PAGERDUTY_FIELDS)]
    key = document.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        problems.append("routing_key: the 32-character integration key is required")
    action = document.get("event_action")
    if action not in PAGERDUTY_ACTIONS:
        problems.append(f"event_action must be one of {sorted(PAGERDUTY_ACTIONS)}, got {action!r}")
    dedup = document.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 1 <= len(dedup) <= 255):
        problems.append("dedup_key must be a string of 1 to 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        problems.append(f"dedup_key is required to {action}")
    payload = document.get("payload")
    if action == "trigger":
        if not isinstance(payload, dict):
            return problems + ["payload is required to trigger"]
        problems += [f"payload: unknown field '{name}'" for name in sorted(set(payload) - PAGERDUTY_PAYLOAD)]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 1 <= len(summary) <= 1024:
            problems.append("payload.summary: a string of 1 to 1024 characters is required")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            problems.append("payload.source is required")
        if payload.get("severity") not in PAGERDUTY_SEVERITIES:
            problems.append(f"payload.severity must be one of {sorted(PAGERDUTY_SEVERITIES)}")
        if "timestamp" in payload:
            try:
                datetime.fromisoformat(str(payload["timestamp"]))
            except ValueError:
                problems.append("payload.timestamp must be ISO 8601")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict | str):
            problems.append("payload.custom_details must be an object")
    return problems


class AlertReceiver:
    """Serves on ``host:port`` in a background thread until :meth:`stop`."""

    def __init__(self, secret: str | None, out: Path, host: str = "127.0.0.1", port: int = 0,
                 on_alert: Callable[[dict], None] | None = None, kind: str = "webhook"):
        if kind not in KINDS:
            raise ValueError(f"unknown receiver kind '{kind}'; kinds: {', '.join(KINDS)}")
        if kind == "webhook" and not secret:
            raise ValueError("a webhook receiver needs the signing secret")
        self.secret, self.out, self.on_alert, self.kind = secret, Path(out), on_alert, kind
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.seen: set[str] = {json.loads(line).get("idempotency_key") for line in self._lines()}
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

            def _answer(self, status: int, message) -> None:
                if receiver.kind == "slack":  # Slack answers plain text
                    payload, content_type = str(message).encode(), "text/plain"
                else:
                    payload = json.dumps(message if isinstance(message, dict) else {"status": message}).encode()
                    content_type = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
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

    def receive(self, headers: dict[str, str], body: bytes) -> tuple[int, str | dict]:
        """(HTTP status, the answer) for one request."""
        headers = {k.lower(): v for k, v in headers.items()}
        if self.kind != "webhook":
            return self._receive_vendor(body)
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

    def _receive_vendor(self, body: bytes) -> tuple[int, str | dict]:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        problems = (slack_problems if self.kind == "slack" else pagerduty_problems)(document)
        if problems:
            with self._lock:
                self.rejected += 1
            if self.kind == "slack":
                return 400, "invalid_payload: " + "; ".join(problems)
            return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": problems}
        entry = {"kind": self.kind, "received_at": datetime.now(UTC).isoformat(), "alert": document}
        with self._lock, self.out.open("a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
        if self.on_alert is not None:
            self.on_alert(entry)
        if self.kind == "slack":
            return 200, "ok"
        return 202, {"status": "success", "message": "Event processed", "dedup_key": document.get("dedup_key")}

    def received(self) -> list[dict]:
        return [json.loads(line) for line in self._lines()]

    def _lines(self) -> list[str]:
        return [line for line in self.out.read_text().splitlines() if line.strip()] if self.out.exists() else []
