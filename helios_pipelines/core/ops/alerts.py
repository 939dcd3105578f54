"""Alerts: routing from the tenant config to the durable outbox, and the worker that delivers them.

Routing writes one ``alert_outbox`` row per (alert, destination) in the caller's transaction (the
transactional-outbox pattern: an anomaly episode and its alert are committed together or not at all).
Each row carries an idempotency key, a hash of (tenant, alert key, action, destination), unique in the
table, so routing the same alert twice stores it once.

Delivery is at least once: a worker leases due rows, posts them, and records the outcome; a worker
killed mid-delivery leaves a lease that runs out, and another worker sends the row again. Receivers
therefore dedupe on ``X-Helios-Idempotency-Key`` (PagerDuty dedupes on ``dedup_key`` itself), which
makes every alert arrive exactly once from the receiver's point of view.

Formats:

- Slack: an incoming-webhook message (``text`` plus Block Kit blocks).
- PagerDuty: an Events API v2 event (``routing_key``, ``event_action`` trigger or resolve,
  ``dedup_key`` = the alert key, so the resolve closes the incident the trigger opened).

Secrets named by environment variables stay there: the outbox stores the names of the variables
holding a Slack URL (``url_env``) or a PagerDuty routing key (``routing_key_env``), never their values;
the worker reads them when it sends (a variable not set is a retryable error naming it). A secret the
tenant file writes literally (the guide's Step 5 form, warned about when the config loads) is stored
in the row as written: a Slack ``url``, a PagerDuty ``routing_key`` in the event body. A generic
webhook's ``url`` is not a credential: its requests are signed.
- Generic webhook: a JSON document signed with HMAC-SHA256 when the webhook names ``secret_env``.

Signature and replay protection (generic webhooks): ``X-Helios-Timestamp`` is the send time in Unix
seconds and ``X-Helios-Signature`` is ``v1=`` + hex HMAC-SHA256(secret, ``<timestamp>.<body>``). The
receiver recomputes it over the raw body, compares in constant time, rejects timestamps more than
five minutes from its clock (:func:`verify_signature` does all three), and remembers the idempotency
keys it has processed for at least that long, so a captured request replayed later is refused by the
timestamp and one replayed within the window is a duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from helios_pipelines.core.ops import plans
from helios_pipelines.core.ops.store import Store, Transaction
from helios_pipelines.core.ops.store.schema import ACTIVE, DEAD, DELIVERED, PENDING, OutboxRow, utcnow
from helios_pipelines.core.tenants import TenantConfig
from helios_pipelines.core.tenants.alerting import PAGERDUTY_ROUTING_KEY, Webhook

log = logging.getLogger(__name__)

TRIGGER, RESOLVE = "trigger", "resolve"
# PagerDuty's severities; Slack and webhooks show the same word.
DEFAULT_SEVERITY = {
    "anomaly_detected": "error",
    "scaling_recommended": "info",
    "capacity_warning": "warning",
    "capacity_critical": "critical",
    "event_scorecard": "info",  # after an event: what Helios' forecasts and replicas were worth
}
SIGNATURE_TOLERANCE = timedelta(minutes=5)
# Statuses worth retrying: the receiver may answer differently later. Other 4xx are permanent.
RETRYABLE_STATUS = {408, 425, 429}


@dataclass(frozen=True)
class Alert:
    tenant: str
    event: str  # one of DEFAULT_SEVERITY's keys (the integration guide's events)
    alert_key: str  # identity of the condition: its trigger and its resolve share it
    summary: str
    occurred_at: datetime
    action: str = TRIGGER
    severity: str | None = None
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in DEFAULT_SEVERITY:
            raise ValueError(f"unknown alert event '{self.event}'; events: {', '.join(DEFAULT_SEVERITY)}")
        if self.action not in (TRIGGER, RESOLVE):
            raise ValueError(f"alert action must be {TRIGGER} or {RESOLVE}, got '{self.action}'")

    @property
    def level(self) -> str:
        return self.severity or DEFAULT_SEVERITY[self.event]


def idempotency_key(alert: Alert, destination: str) -> str:
    identity = "\n".join((alert.tenant, alert.alert_key, alert.action, destination))
    return hashlib.sha256(identity.encode()).hexdigest()


# ---- formats -------------------------------------------------------------------------------------
def slack_message(alert: Alert) -> dict:
    title = ("Resolved: " if alert.action == RESOLVE else "") + alert.summary
    context = f"{alert.tenant} · {alert.event} · {alert.level} · {alert.occurred_at.isoformat()}"
    return {
        "text": f"[{alert.tenant}] {title}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def pagerduty_event(alert: Alert, routing_key: str | None = None) -> dict:
    """The event; with a key named by ``routing_key_env`` the outbox stores it without its
    ``routing_key``, which the worker adds from the environment when sending."""
    event = {"event_action": alert.action, "dedup_key": alert.alert_key[:255]}
    if routing_key is not None:
        event["routing_key"] = routing_key
    if alert.action == TRIGGER:
        event["payload"] = {
            "summary": f"[{alert.tenant}] {alert.summary}"[:1024],
            "source": f"helios/{alert.tenant}",
            "severity": alert.level,
            "timestamp": alert.occurred_at.isoformat(),
            "group": alert.tenant,
            "class": alert.event,
            "custom_details": alert.details,
        }
    return event


def webhook_document(alert: Alert, key: str) -> dict:
    return {
        "id": key,
        "tenant": alert.tenant,
        "event": alert.event,
        "action": alert.action,
        "alert_key": alert.alert_key,
        "severity": alert.level,
        "summary": alert.summary,
        "occurred_at": alert.occurred_at.isoformat(),
        "details": alert.details,
    }


def render(alert: Alert, webhook: Webhook, key: str) -> str:
    if webhook.type == "slack":
        document = slack_message(alert)
    elif webhook.type == "pagerduty":
        document = pagerduty_event(alert, webhook.routing_key)  # a key named by routing_key_env is added when sent
    else:
        document = webhook_document(alert, key)
    return json.dumps(document, sort_keys=True, default=str)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, now: datetime,
                     tolerance: timedelta = SIGNATURE_TOLERANCE) -> bool:
    """What a receiver checks: a fresh timestamp and a signature over exactly these bytes."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now.timestamp() - sent) > tolerance.total_seconds():
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature or "")


# ---- routing -------------------------------------------------------------------------------------
def enqueue(store: Store, session: Transaction, tenant: TenantConfig, alerts: list[Alert],
            now: datetime | None = None) -> int:
    """Outbox rows for every webhook subscribed to each alert's event, in the caller's transaction.

    Returns how many rows are new (a repeated alert is stored once). A disabled customer gets none; a
    customer whose plan lacks webhooks gets a :class:`PlanLimitError` if its config routes any.
    """
    if not alerts:
        return 0
    customer = store.customer(session, tenant.id)
    if customer.status != ACTIVE:
        return 0
    now = now or utcnow()
    rows = []
    for alert in alerts:
        for webhook in tenant.alerts.webhooks:
            if alert.event not in webhook.events:
                continue
            plans.require_feature(tenant.id, customer.plan, plans.WEBHOOKS)
            key = idempotency_key(alert, webhook.name)
            rows.append({
                "customer_id": customer.id, "idempotency_key": key, "alert_key": alert.alert_key,
                "event": alert.event, "action": alert.action, "destination": webhook.name,
                "destination_type": webhook.type, "url": webhook.url, "url_env": webhook.url_env,
                "body": render(alert, webhook, key), "routing_key_env": webhook.routing_key_env,
                "secret_env": webhook.secret_env, "status": PENDING, "attempts": 0,
                "next_attempt_at": now, "created_at": now,
            })
    return store.add_outbox_rows(session, rows)


def route(store: Store, tenant: TenantConfig, alerts: list[Alert], now: datetime | None = None) -> int:
    """:func:`enqueue` in a transaction of its own (for alerts not tied to other writes)."""
    with store.transaction() as session:
        return enqueue(store, session, tenant, alerts, now)


# ---- delivery ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(hours=1)

    def delay(self, attempt: int, rng: random.Random) -> timedelta:
        """Exponential backoff with "equal jitter": half the backoff fixed, half random, so rows that
        failed together against one receiver do not retry in lockstep, and none retries too soon."""
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff * (0.5 + 0.5 * rng.random())


@dataclass
class DeliveryStats:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    lost_lease: int = 0

    def __iadd__(self, other: DeliveryStats) -> DeliveryStats:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


class PermanentFailure(Exception):
    """Retrying cannot help (the receiver rejected the request itself)."""


class DeliveryWorker:
    """Claims due outbox rows, posts them, and records delivered, retry-at or dead.

    ``clock`` and ``rng`` are injectable so tests control time and jitter.
    """

    def __init__(
        self,
        store: Store,
        policy: RetryPolicy = RetryPolicy(),
        timeout: float = 10.0,
        lease: timedelta = timedelta(seconds=60),
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        environ: Mapping[str, str] = os.environ,
    ):
        if lease.total_seconds() <= timeout:
            raise ValueError(f"lease ({lease.total_seconds()} s) must outlast the request timeout ({timeout} s)")
        self.store, self.policy, self.lease = store, policy, lease
        # Claim no more rows than can be posted, one timeout each, before the lease runs out; a row
        # whose lease expired unsent could be claimed and sent by another worker at the same time.
        self.batch_size = max(1, int(lease.total_seconds() // timeout) - 1)
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self.clock = clock
        self.rng = rng or random.Random()
        self.environ = environ
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"

    def close(self) -> None:
        self.client.close()

    def run_once(self) -> DeliveryStats:
        """Deliver everything due now (claiming batch after batch until none is left)."""
        stats = DeliveryStats()
        while rows := self.store.claim_outbox(self.owner, self.clock(), self.lease, self.batch_size):
            for row in rows:
                stats += self._deliver(row)
        return stats

    def run(self, interval: float, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            stats = self.run_once()
            if stats.delivered or stats.retrying or stats.dead:
                log.info("alerts: %s", stats)
            stop.wait(interval)

    def _from_environment(self, name: str, what: str) -> str:
        value = self.environ.get(name)
        if not value:
            raise LookupError(f"environment variable {name} ({what}) is not set")
        return value

    def request(self, row: OutboxRow) -> tuple[str, bytes]:
        """(URL, body) as sent: secrets the row names are read from the environment now."""
        url = row.url or self._from_environment(row.url_env, f"the URL of webhook '{row.destination}'")
        if not row.routing_key_env:
            return url, row.body.encode()
        routing_key = self._from_environment(row.routing_key_env, f"the PagerDuty routing key of webhook '{row.destination}'")
        if not PAGERDUTY_ROUTING_KEY.match(routing_key):
            raise LookupError(f"environment variable {row.routing_key_env} does not hold a PagerDuty routing key "
                              f"(the 32-character integration key; it holds {len(routing_key)} characters)")
        document = json.loads(row.body) | {"routing_key": routing_key}
        return url, json.dumps(document, sort_keys=True).encode()

    def headers(self, row: OutboxRow, body: bytes, sent_at: datetime) -> dict[str, str]:
        timestamp = int(sent_at.timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "helios-alerts/1",
            "X-Helios-Idempotency-Key": row.idempotency_key,
            "X-Helios-Event": row.event,
            "X-Helios-Timestamp": str(timestamp),
        }
        if row.secret_env:
            secret = self._from_environment(row.secret_env, "the webhook's signing secret")
            headers["X-Helios-Signature"] = sign(secret, timestamp, body)
        return headers

    def _post(self, row: OutboxRow) -> None:
        url, body = self.request(row)
        response = self.client.post(url, content=body, headers=self.headers(row, body, self.clock()))
        if response.is_success:
            return
        message = f"HTTP {response.status_code}: {response.text[:200]}"
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_STATUS:
            raise PermanentFailure(message)
        raise httpx.HTTPStatusError(message, request=response.request, response=response)

    def _deliver(self, row: OutboxRow) -> DeliveryStats:
        try:
            self._post(row)
        except PermanentFailure as exc:
            return self._finish(row, status=DEAD, last_error=f"permanent: {exc}")
        except (httpx.HTTPError, LookupError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if row.attempts >= self.policy.max_attempts:
                return self._finish(row, status=DEAD, last_error=f"gave up after {row.attempts} attempts; {error}")
            retry_at = self.clock() + self.policy.delay(row.attempts, self.rng)
            return self._finish(row, status=PENDING, next_attempt_at=retry_at, last_error=error)
        return self._finish(row, status=DELIVERED, delivered_at=self.clock(), last_error=None)

    def _finish(self, row: OutboxRow, **values) -> DeliveryStats:
        if not self.store.finish_outbox(row.id, self.owner, **values):
            log.warning("alerts: lease on outbox row %s expired before the outcome was recorded", row.id)
            return DeliveryStats(lost_lease=1)
        if values["status"] == DEAD:
            log.error("alerts: outbox row %s (%s -> %s) is dead: %s", row.id, row.event, row.destination,
                      values["last_error"])
        key = {DELIVERED: "delivered", PENDING: "retrying", DEAD: "dead"}[values["status"]]
        return DeliveryStats(**{key: 1})
