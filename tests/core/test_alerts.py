"""Alert formats, signatures, routing and the delivery worker's retry, backoff and dead-letter rules."""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from helios_pipelines.core.ops import alerts, plans
from helios_pipelines.core.ops.store.schema import DEAD, DELIVERED, PENDING, OutboxRow
from tests.harness.store_backends import NOW, PAGERDUTY_KEY, add_customer, tenant_config

SECRET = "s3cret-for-tests"


class FakeClock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def anomaly_alert(key: str = "anomaly/acme/concurrent_users/1", action: str = alerts.TRIGGER) -> alerts.Alert:
    return alerts.Alert("acme", "anomaly_detected", key, "concurrent_users is anomalous", NOW, action=action,
                        details={"score": 0.9})


def test_slack_and_pagerduty_formats():
    slack = alerts.slack_message(anomaly_alert())
    assert slack["text"] == "[acme] concurrent_users is anomalous"
    assert slack["blocks"][0]["text"]["type"] == "mrkdwn"

    trigger = alerts.pagerduty_event(anomaly_alert())
    resolve = alerts.pagerduty_event(anomaly_alert(action=alerts.RESOLVE))
    assert "routing_key" not in trigger and "routing_key" not in resolve  # added from the environment when sent
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == "anomaly/acme/concurrent_users/1"
    assert trigger["payload"]["severity"] == "error" and trigger["payload"]["source"] == "helios/acme"
    assert "payload" not in resolve  # Events API v2: a resolve needs only the key


def test_signature_verifies_only_fresh_untampered_bodies():
    body = b'{"a": 1}'
    sent = int(NOW.timestamp())
    signature = alerts.sign(SECRET, sent, body)
    assert alerts.verify_signature(SECRET, str(sent), body, signature, NOW + timedelta(minutes=4))
    assert not alerts.verify_signature(SECRET, str(sent), b'{"a": 2}', signature, NOW)
    assert not alerts.verify_signature("other", str(sent), body, signature, NOW)
    assert not alerts.verify_signature(SECRET, str(sent), body, signature, NOW + timedelta(minutes=6))  # a replay
    assert not alerts.verify_signature(SECRET, "not-a-time", body, signature, NOW)


def test_retry_delays_grow_exponentially_with_bounded_jitter():
    policy = alerts.RetryPolicy(base_delay=timedelta(seconds=10), max_delay=timedelta(seconds=60))
    rng = random.Random(7)
    for attempt, full in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        delays = [policy.delay(attempt, rng).total_seconds() for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert max(delays) - min(delays) > full / 4  # jittered, not constant


def test_routing_follows_events_and_plans(store):
    tenant = tenant_config()
    add_customer(store, tenant)
    critical = alerts.Alert("acme", "capacity_critical", "capacity/game-server", "at 95%", NOW)
    assert alerts.route(store, tenant, [anomaly_alert(), critical], NOW) == 2
    with store.transaction() as session:
        rows = {r.destination: r for r in session.scalars(select(OutboxRow))}
    assert rows["ops"].event == "anomaly_detected" and rows["pager"].event == "capacity_critical"
    assert rows["pager"].routing_key_env == "PAGER_ROUTING_KEY" and "routing_key" not in json.loads(rows["pager"].body)
    assert json.loads(rows["ops"].body)["id"] == rows["ops"].idempotency_key

    # The store's plan, not the YAML's, decides: a customer downgraded to starter gets no webhooks.
    with store.transaction() as session:
        store.customer(session, "acme").plan = "starter"
    with pytest.raises(plans.PlanLimitError, match="starter plan, which does not include webhooks"):
        alerts.route(store, tenant, [anomaly_alert("another")], NOW)


def worker(store, handler, clock, max_attempts=3, environ=None) -> alerts.DeliveryWorker:
    return alerts.DeliveryWorker(
        store,
        alerts.RetryPolicy(max_attempts, timedelta(seconds=10), timedelta(minutes=5)),
        timeout=1.0,
        lease=timedelta(seconds=30),
        client=httpx.Client(transport=httpx.MockTransport(handler)),
        clock=clock,
        rng=random.Random(0),
        environ=environ if environ is not None else {"HOOK_SECRET": SECRET},
    )


def signed_tenant():
    return tenant_config(webhooks=[{"name": "ops", "type": "webhook", "url": "http://receiver.test/hook",
                                    "events": ["anomaly_detected"], "secret_env": "HOOK_SECRET"}])


def outbox_row(store) -> OutboxRow:
    with store.transaction() as session:
        return session.scalars(select(OutboxRow)).one()


def test_failures_back_off_then_deliver_signed(store):
    tenant = signed_tenant()
    add_customer(store, tenant)
    alerts.route(store, tenant, [anomaly_alert()], NOW)
    answers = iter([httpx.Response(503), httpx.Response(200)])
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    clock = FakeClock(NOW)
    delivery = worker(store, handler, clock)
    assert delivery.run_once().retrying == 1
    row = outbox_row(store)
    assert row.status == PENDING and row.attempts == 1 and "503" in row.last_error
    assert NOW + timedelta(seconds=5) <= row.next_attempt_at <= NOW + timedelta(seconds=10)
    assert delivery.run_once() == alerts.DeliveryStats()  # not due yet
    clock.now = row.next_attempt_at
    assert delivery.run_once().delivered == 1
    assert outbox_row(store).status == DELIVERED
    request = seen[-1]
    assert request.headers["x-helios-idempotency-key"] == row.idempotency_key == seen[0].headers["x-helios-idempotency-key"]
    assert alerts.verify_signature(SECRET, request.headers["x-helios-timestamp"], request.content,
                                   request.headers["x-helios-signature"], clock.now)


def test_permanent_rejections_and_exhausted_retries_are_dead_letters(store):
    tenant = signed_tenant()
    add_customer(store, tenant)
    alerts.route(store, tenant, [anomaly_alert("rejected"), anomaly_alert("flaky")], NOW)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400 if b'"rejected"' in request.content else 503)

    clock = FakeClock(NOW)
    delivery = worker(store, handler, clock, max_attempts=3)
    for _ in range(5):
        delivery.run_once()
        clock.now += timedelta(minutes=10)
    with store.transaction() as session:
        rows = {json.loads(r.body)["alert_key"]: r for r in session.scalars(select(OutboxRow))}
    assert rows["rejected"].status == DEAD and rows["rejected"].attempts == 1
    assert rows["rejected"].last_error.startswith("permanent: HTTP 400")
    assert rows["flaky"].status == DEAD and rows["flaky"].attempts == 3
    assert rows["flaky"].last_error.startswith("gave up after 3 attempts")


def test_a_missing_signing_secret_is_retried_not_sent_unsigned(store):
    tenant = signed_tenant()
    add_customer(store, tenant)
    alerts.route(store, tenant, [anomaly_alert()], NOW)
    sent = []
    delivery = worker(store, lambda request: sent.append(request) or httpx.Response(200), FakeClock(NOW), environ={})
    assert delivery.run_once().retrying == 1
    assert sent == []
    assert "HOOK_SECRET" in outbox_row(store).last_error


def test_a_disabled_customer_gets_no_alerts(store):
    tenant = tenant_config()
    add_customer(store, tenant)
    store.set_status("acme", "disabled")
    assert alerts.route(store, tenant, [anomaly_alert()], NOW) == 0


def test_the_receiver_acts_once_per_key_and_refuses_bad_or_stale_signatures(tmp_path):
    from helios_pipelines.core.ops.alert_receiver import AlertReceiver

    receiver = AlertReceiver("s3cret", tmp_path / "received.jsonl")
    body = b'{"event": "anomaly_detected"}'
    now = int(datetime.now(UTC).timestamp())

    def headers(secret="s3cret", sent=now, key="k1"):
        return {"X-Helios-Idempotency-Key": key, "X-Helios-Timestamp": str(sent),
                "X-Helios-Signature": alerts.sign(secret, sent, body)}

    assert receiver.receive(headers(), body) == (200, "accepted")
    assert receiver.receive(headers(), body) == (200, "duplicate")
    assert receiver.receive(headers(secret="guess", key="k2"), body)[0] == 401
    assert receiver.receive(headers(sent=now - 3600, key="k3"), body)[0] == 401
    assert receiver.receive({"X-Helios-Timestamp": str(now)}, body)[0] == 400
    assert [r["alert"] for r in receiver.received()] == [{"event": "anomaly_detected"}]
    assert receiver.rejected == 2
    receiver.stop()
    restarted = AlertReceiver("s3cret", tmp_path / "received.jsonl")  # remembers what it acted on
    assert restarted.receive(headers(), body) == (200, "duplicate")
    restarted.stop()


def test_slack_urls_and_routing_keys_stay_in_the_environment_until_sent(store):
    """Issue #13.8: the outbox and the bundle carried webhook URLs and routing keys. The outbox holds
    only the variables' names; the worker reads them when it sends, and waits (retrying) while one is
    not set."""
    slack_url, routing_key = "http://slack.test/services/T0/B0/s3cr3t", PAGERDUTY_KEY
    tenant = tenant_config(webhooks=[
        {"name": "chat", "type": "slack", "url_env": "ACME_SLACK_URL", "events": ["anomaly_detected"]},
        {"name": "pager", "type": "pagerduty", "url": "http://pagerduty.test/v2/enqueue",
         "routing_key_env": "ACME_PD_KEY", "events": ["anomaly_detected"]},
    ])
    add_customer(store, tenant)
    assert alerts.route(store, tenant, [anomaly_alert()], NOW) == 2
    with store.transaction() as session:
        stored = " ".join(f"{r.url} {r.url_env} {r.body} {r.routing_key_env}" for r in session.scalars(select(OutboxRow)))
    assert slack_url not in stored and routing_key not in stored and "s3cr3t" not in stored

    sent = []

    def receiver(request: httpx.Request) -> httpx.Response:
        sent.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200)

    clock = FakeClock(NOW)
    unset = worker(store, receiver, clock, environ={"ACME_PD_KEY": routing_key}).run_once()
    assert (unset.delivered, unset.retrying) == (1, 1) and [url for url, _ in sent] == ["http://pagerduty.test/v2/enqueue"]
    assert sent[0][1]["routing_key"] == routing_key and sent[0][1]["dedup_key"] == anomaly_alert().alert_key
    with store.transaction() as session:
        waiting = session.scalars(select(OutboxRow).where(OutboxRow.status == PENDING)).one()
    assert "ACME_SLACK_URL" in waiting.last_error and "not set" in waiting.last_error

    clock.now += timedelta(hours=1)
    later = worker(store, receiver, clock, environ={"ACME_SLACK_URL": slack_url, "ACME_PD_KEY": routing_key}).run_once()
    assert later.delivered == 1 and sent[-1][0] == slack_url and sent[-1][1]["text"].startswith("[acme]")


def test_a_secret_written_in_a_tenant_file_is_kept_with_a_warning_naming_the_env_form(caplog):
    """The guide's Step 5 writes the Slack URL and the routing key literally: accepted, and warned about."""
    hooks = [
        {"name": "chat", "type": "slack", "url": "https://hooks.slack.com/services/T0/B0/x", "events": ["anomaly_detected"]},
        {"name": "pd", "type": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue", "routing_key": "R" * 32,
         "events": ["anomaly_detected"]},
    ]
    with caplog.at_level(logging.WARNING, logger="helios_pipelines.core.tenants"):
        tenant = tenant_config(webhooks=hooks)
    assert [w.routing_key for w in tenant.alerts.webhooks] == [None, "R" * 32]
    warned = [r.getMessage() for r in caplog.records]
    assert [m.split(": a secret")[0] for m in warned] == [
        "tenant 'acme': alerts.webhooks[0] (chat).url (use url_env)",
        "tenant 'acme': alerts.webhooks[1] (pd).routing_key (use routing_key_env)"]


@pytest.mark.parametrize(("hook", "words"), [
    ({"type": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue", "routing_key": "short"},
     "'short' is not a PagerDuty routing key"),
    ({"type": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue", "routing_key": "R" * 32,
      "routing_key_env": "ACME_PD_KEY"}, "needs exactly one of routing_key and routing_key_env"),
    ({"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/x", "routing_key": "R" * 32},
     "a routing key is for type pagerduty, not slack"),
])
def test_a_malformed_or_misplaced_routing_key_is_an_error_naming_it(hook, words):
    with pytest.raises(ValueError, match=words):
        tenant_config(webhooks=[hook | {"name": "x", "events": ["anomaly_detected"]}])


def test_the_model_bundle_carries_variable_names_not_secrets(tmp_path, monkeypatch):
    from serving.packaging import assemble_bundle

    monkeypatch.setenv("ACME_SLACK_URL", "https://hooks.slack.com/services/T0/B0/s3cr3t")
    monkeypatch.setenv("ACME_PD_KEY", PAGERDUTY_KEY)
    tenant = tenant_config(webhooks=[
        {"name": "chat", "type": "slack", "url_env": "ACME_SLACK_URL", "events": ["anomaly_detected"]},
        {"name": "pager", "type": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue",
         "routing_key_env": "ACME_PD_KEY", "events": ["anomaly_detected"]},
    ])
    bundle = assemble_bundle(tenant, {}, tracker=None, destination=tmp_path / "bundle")
    text = "".join(p.read_text() for p in bundle.rglob("*") if p.is_file())
    assert "ACME_SLACK_URL" in text and "ACME_PD_KEY" in text
    assert "s3cr3t" not in text and PAGERDUTY_KEY not in text
