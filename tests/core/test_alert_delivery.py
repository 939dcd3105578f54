"""The delivery fault test: a receiver that refuses, then times out, then recovers, while the delivering
process is killed (SIGKILL) and restarted. Every alert must arrive exactly once from the receiver's
point of view (it dedupes on the idempotency key) and none may be lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from helios_pipelines.core.ops import alerts
from helios_pipelines.core.ops.store.schema import DELIVERED, OutboxRow
from tests.harness.store_backends import NOW, add_customer, tenant_config

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)

SECRET = "fault-test-secret"
CLIENT_TIMEOUT = 0.5
SLOW_ANSWER = 1.5  # longer than the sender waits


class Receiver:
    """Alert receiver on 127.0.0.1: processes each idempotency key once, checks every signature."""

    def __init__(self, port: int):
        self.mode = "timeout"
        self.arrivals: list[str] = []  # idempotency keys, one per request received
        self.bodies: dict[str, set[bytes]] = {}
        self.processed: list[str] = []  # what a real receiver acts on: the first arrival of each key
        self.bad_signatures: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["X-Helios-Idempotency-Key"]
                receiver.arrivals.append(key)
                receiver.bodies.setdefault(key, set()).add(body)
                if self.path == "/hook" and not alerts.verify_signature(
                    SECRET, self.headers["X-Helios-Timestamp"], body, self.headers.get("X-Helios-Signature"),
                    datetime.now(UTC),
                ):
                    receiver.bad_signatures.append(key)
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.mode == "timeout":
                    time.sleep(SLOW_ANSWER)  # processed, but after the sender gave up: it will resend
                with receiver._lock:
                    if key not in receiver.processed:
                        receiver.processed.append(key)
                try:
                    self.send_response(200)
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_worker(store_url: str, log: Path, timeout: float = CLIENT_TIMEOUT, lease: float = 2,
                 port: int = 0) -> subprocess.Popen:
    """A delivery worker process; it claims lease / timeout - 1 alerts at a time (3 by default). Its
    environment holds the webhook's signing secret and the Slack URL (on ``port``), as a deployment's would."""
    command = [
        sys.executable, "-m", "helios_pipelines.commands.alerts", "deliver", "--loop", "--interval", "0.1",
        "--base-delay", "0.1", "--max-delay", "0.4", "--timeout", str(timeout), "--lease", str(lease),
        "--max-attempts", "100",
    ]
    env = {**os.environ, "HELIOS_DATABASE_URL": store_url, "HOOK_SECRET": SECRET,
           "CHAT_URL": f"http://127.0.0.1:{port}/slack"}
    return subprocess.Popen(command, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[2])


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_every_alert_arrives_exactly_once_through_refusals_timeouts_and_a_killed_worker(store, store_url, tmp_path):
    port = free_port()  # nothing listens yet: connections are refused
    tenant = tenant_config(webhooks=[
        {"name": "ops", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "events": ["anomaly_detected"],
         "secret_env": "HOOK_SECRET"},
        {"name": "chat", "type": "slack", "url_env": "CHAT_URL", "events": ["anomaly_detected"]},
    ])
    add_customer(store, tenant)
    batch = [alerts.Alert("acme", "anomaly_detected", f"anomaly/acme/m/{i}", f"alert {i}", NOW) for i in range(5)]
    assert alerts.route(store, tenant, batch, NOW) == 10

    def rows() -> list[OutboxRow]:
        with store.transaction() as session:
            return list(session.scalars(select(OutboxRow)))

    log = tmp_path / "worker.log"
    worker = start_worker(store_url, log, port=port)
    receiver = None
    try:
        # 1. Refused: every row is attempted and rescheduled, none is lost or given up.
        # (an attempt is counted when claimed and its error recorded after it: wait for the error)
        wait_for(lambda: all(r.last_error for r in rows()), 20, "every alert to be tried against a closed port")
        assert {r.status for r in rows()} == {"pending"}
        assert all("ConnectError" in r.last_error for r in rows())

        # 2. Timing out: the receiver processes slowly; the worker is killed while a request is in flight.
        receiver = Receiver(port)
        wait_for(lambda: len(receiver.arrivals) >= 1, 20, "a request to reach the slow receiver")
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL
        time.sleep(SLOW_ANSWER + 0.2)  # the killed worker's request is processed after all

        # 3. A new worker takes over once the dead one's leases run out; the receiver then recovers.
        worker = start_worker(store_url, log, port=port)
        arrived = len(receiver.arrivals)
        wait_for(lambda: len(receiver.arrivals) > arrived, 20, "the restarted worker to reach the receiver")
        receiver.mode = "ok"
        wait_for(lambda: all(r.status == DELIVERED for r in rows()), 40, "every alert to be delivered")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(10)
        if receiver is not None:
            receiver.stop()

    keys = {r.idempotency_key for r in rows()}
    assert len(keys) == 10
    assert receiver.bad_signatures == []
    assert set(receiver.arrivals) == keys, "a resend carried a key of its own, so the receiver could not dedupe it"
    assert all(len(bodies) == 1 for bodies in receiver.bodies.values()), "a resend changed the alert's body"
    assert sorted(receiver.processed) == sorted(keys), "an alert was lost"
    resent = [k for k, n in Counter(receiver.arrivals).items() if n > 1]
    assert resent, "the faults should have made the sender resend at least one alert"
    assert all(r.attempts >= 2 for r in rows())


def test_a_resolve_never_overtakes_its_trigger_even_after_a_worker_dies_holding_leases(store, store_url, tmp_path):
    """Issue #13.7: after the delivery worker was killed, resolves were delivered before their triggers
    (PagerDuty would get a resolve for an incident it never opened). Five episodes are opened and
    resolved; the first worker is killed while a trigger is in flight; its leases on three triggers (8 s,
    longer than a worker takes to start) outlive it, so the next worker finds those episodes' resolves
    due first. At the receiver, every episode's trigger is acted on before its resolve."""
    port = free_port()
    receiver = Receiver(port)  # slow at first: the first request is in flight when the worker dies
    tenant = tenant_config(webhooks=[
        {"name": "ops", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "events": ["anomaly_detected"],
         "secret_env": "HOOK_SECRET"},
    ])
    add_customer(store, tenant)
    episodes = [f"anomaly/acme/m/{i}" for i in range(5)]
    for action in (alerts.TRIGGER, alerts.RESOLVE):
        batch = [alerts.Alert("acme", "anomaly_detected", key, f"episode {key}", NOW, action=action) for key in episodes]
        assert alerts.route(store, tenant, batch, NOW) == 5
    action_of = {alerts.idempotency_key(alerts.Alert("acme", "anomaly_detected", key, "", NOW, action=action), "ops"):
                 (key, action) for key in episodes for action in (alerts.TRIGGER, alerts.RESOLVE)}

    def delivered() -> bool:
        with store.transaction() as session:
            return all(row.status == DELIVERED for row in session.scalars(select(OutboxRow)))

    log = tmp_path / "worker.log"
    worker = start_worker(store_url, log, timeout=2, lease=8)
    try:
        wait_for(lambda: len(receiver.arrivals) >= 1, 20, "a request to reach the slow receiver")
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL
        receiver.mode = "ok"
        worker = start_worker(store_url, log, timeout=2, lease=8)
        wait_for(delivered, 40, "every alert to be delivered")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(10)
        receiver.stop()

    assert receiver.bad_signatures == []
    acted = [action_of[key] for key in receiver.processed]
    assert sorted(acted) == sorted(action_of.values()), "an alert was lost"
    for key in episodes:
        assert [action for episode, action in acted if episode == key] == [alerts.TRIGGER, alerts.RESOLVE], acted
