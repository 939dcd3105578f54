"""Every alert the guide lists, as episodes, delivered in the vendors' own formats.

capacity_warning / capacity_critical when the forecast's upper bound needs the configured share of max
capacity; scaling_recommended when desired replicas move beyond the configured step; each fires once
and resolves once. Channels named ``slack`` / ``pagerduty`` (the guide's Step 5) get Slack's
incoming-webhook payload and PagerDuty Events API v2, checked by local receivers that refuse anything
else.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest
import yaml
from sqlalchemy import select

from helios_pipelines.core.ml.anomaly_zscore import MAX_Z, score_to_z, z_to_score
from helios_pipelines.core.ml.training import tenant_detector
from helios_pipelines.core.ops import alerts
from helios_pipelines.core.ops.alert_receiver import AlertReceiver, pagerduty_problems, slack_problems
from helios_pipelines.core.ops.capacity_alerts import (
    OPENED,
    RESOLVED,
    CapacityReading,
    LevelReading,
    level_readings,
    record_readings,
)
from helios_pipelines.core.ops.store.schema import AlertEpisode, OutboxRow
from helios_pipelines.core.tenants import TenantConfig
from tests.harness.store_backends import NOW, PAGERDUTY_KEY, add_customer

# The guide's Step 5 alerts.yaml, as written but for the secrets: the Slack URL and the routing key
# are named by environment variables (secrets are never kept in tenant files, #13.8), which hold a
# local receiver's URL and a routing key of PagerDuty's form.
SLACK_URL_ENV, ROUTING_KEY_ENV = "ACME_SLACK_URL", "ACME_PAGERDUTY_ROUTING_KEY"
GUIDE_ALERTS = f"""
webhooks:
  - name: slack
    url_env: {SLACK_URL_ENV}
    events:
      - anomaly_detected
      - scaling_recommended
      - capacity_warning

  - name: pagerduty
    url: "{{pagerduty}}"
    routing_key_env: {ROUTING_KEY_ENV}
    events:
      - anomaly_detected
      - capacity_critical

thresholds:
  anomaly_alert: 2.5  # Z-score
  capacity_warning: 0.75
  capacity_critical: 0.90
"""


def guide_tenant(pagerduty: str = "http://127.0.0.1:9/pd") -> TenantConfig:
    return TenantConfig.model_validate({
        "id": "acme", "name": "Acme", "plan": "pro", "step": "5min",
        "metrics": {"concurrent_users": {"series": "players", "forecast": {"horizons": ["15m", "1h"]}, "anomaly": True}},
        "thresholds": {"max_players_per_server": 100},
        "scaling": [{"service": "game-server", "metric": "concurrent_users", "capacity_per_replica": 100,
                     "min_replicas": 2, "max_replicas": 40}],
        "alerts": yaml.safe_load(GUIDE_ALERTS.format(pagerduty=pagerduty)),
    })


def reading(share: float, desired: int = 10, current: int | None = 10) -> CapacityReading:
    return CapacityReading("game-server", share, "1h", desired, current)


def test_the_guide_s_channels_named_slack_and_pagerduty_get_those_formats():
    tenant = guide_tenant()
    assert [(w.name, w.type) for w in tenant.alerts.webhooks] == [("slack", "slack"), ("pagerduty", "pagerduty")]
    # An explicit type still wins over the name.
    explicit = TenantConfig.model_validate(guide_tenant().model_dump() | {"alerts": {"webhooks": [
        {"name": "slack", "type": "webhook", "url": "https://hooks.example.com/x", "events": ["capacity_warning"]}]}})
    assert explicit.alerts.webhooks[0].type == "webhook"


def test_capacity_and_scaling_conditions_fire_once_and_resolve_once(store):
    tenant = guide_tenant()
    add_customer(store, tenant)
    steps = [  # (share of max capacity, desired, current) -> what opens or resolves
        (reading(0.50), []),
        (reading(0.80), [("capacity_warning", OPENED)]),  # 0.80 >= 0.75
        (reading(0.85), []),  # still open: nothing new
        (reading(0.95), [("capacity_critical", OPENED)]),  # 0.95 >= 0.90; the warning stays open
        (reading(0.95, desired=13, current=10), [("scaling_recommended", OPENED)]),  # |13 - 10| / 10 = 0.3 > 0.2
        (reading(0.95, desired=13, current=12), [("scaling_recommended", RESOLVED)]),  # 1 / 12 = 0.08
        (reading(0.60), [("capacity_critical", RESOLVED), ("capacity_warning", RESOLVED)]),
        (reading(0.60), []),
    ]
    for i, (step, expected) in enumerate(steps):
        at = NOW + timedelta(minutes=5 * i)
        changes = record_readings(store, tenant, [step], at, now=at)
        assert [(c.event, c.change) for c in changes] == expected, i
    # A repeated evaluation of the last step (another replica, a restart) changes nothing.
    assert record_readings(store, tenant, [reading(0.60)], NOW + timedelta(minutes=35), now=NOW) == []
    with store.transaction() as session:
        episodes = session.scalars(select(AlertEpisode).order_by(AlertEpisode.id)).all()
        assert [(e.event, e.resolved_at is not None) for e in episodes] == [
            ("capacity_warning", True), ("capacity_critical", True), ("scaling_recommended", True)]
        assert episodes[0].peak == pytest.approx(0.95)
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
    # Routed as the guide's Step 5 says: warning and scaling to Slack, critical to PagerDuty.
    routed = Counter((r.destination, r.event, r.action) for r in rows)
    assert routed == Counter({
        ("slack", "capacity_warning", "trigger"): 1, ("slack", "capacity_warning", "resolve"): 1,
        ("slack", "scaling_recommended", "trigger"): 1, ("slack", "scaling_recommended", "resolve"): 1,
        ("pagerduty", "capacity_critical", "trigger"): 1, ("pagerduty", "capacity_critical", "resolve"): 1,
    })
    pager = [json.loads(r.body) for r in rows if r.destination == "pagerduty"]
    assert [p["event_action"] for p in pager] == ["trigger", "resolve"]
    assert pager[0]["dedup_key"] == pager[1]["dedup_key"] == f"capacity_critical/acme/game-server/{episodes[1].id}"
    assert pager[0]["payload"]["severity"] == "critical"
    assert pager[0]["payload"]["summary"] == "[acme] game-server: forecast needs 95% of max capacity within 1h (critical at 90%)"


def levels_tenant() -> TenantConfig:
    """The guide's server_utilization (warning_threshold 0.8, critical_threshold 0.95), observed only, and
    concurrent_users forecast with a critical level of its own."""
    tenant = guide_tenant().model_dump()
    tenant["metrics"] |= {
        "server_utilization": {"prometheus_query": "avg(game_server_players / game_server_capacity)",
                               "warning_threshold": 0.8, "critical_threshold": 0.95},
        "concurrent_users": tenant["metrics"]["concurrent_users"] | {"critical_above": 3000},
    }
    return TenantConfig.model_validate(tenant)


def test_a_metric_s_levels_drive_its_own_capacity_alerts(store):
    tenant = levels_tenant()
    assert sorted(tenant.level_metrics) == ["concurrent_users", "server_utilization"]
    add_customer(store, tenant)
    asked = []

    def forecast(metric: str, minutes: int) -> pd.DataFrame:
        asked.append((metric, minutes))
        return pd.DataFrame({"yhat": [2000.0, 2500.0], "yhat_upper": [2600.0, 2900.0]})  # peak 2,900 <= 3,000

    steps = [  # server_utilization's latest value -> what opens or resolves (levels are "above": strictly)
        (0.80, []),
        (0.85, [("capacity_warning", "server_utilization", OPENED)]),
        (0.97, [("capacity_critical", "server_utilization", OPENED)]),
        (0.90, [("capacity_critical", "server_utilization", RESOLVED)]),
        (0.50, [("capacity_warning", "server_utilization", RESOLVED)]),
    ]
    for i, (utilization, expected) in enumerate(steps):
        at = NOW + timedelta(minutes=5 * i)
        history = pd.DataFrame({"server_utilization": [0.1, utilization, math.nan]})  # the last step not in yet
        found = level_readings(tenant, history, forecast, forecast_metrics={"concurrent_users"})
        assert found == [LevelReading("concurrent_users", 2900.0, "forecast upper bound within 1h"),
                         LevelReading("server_utilization", utilization, "latest value")]
        changes = record_readings(store, tenant, found, at, now=at)
        assert [(c.event, c.subject, c.change) for c in changes] == expected, i
    assert asked == [("concurrent_users", 60)] * len(steps)  # its longest horizon
    # A forecast upper bound above the metric's critical level opens the metric's own episode.
    above = LevelReading("concurrent_users", 3100.0, "forecast upper bound within 1h")
    assert [(c.event, c.subject) for c in record_readings(store, tenant, [above], NOW + timedelta(hours=1), now=NOW)] == [
        ("capacity_critical", "concurrent_users")]
    # No recent point: no reading (nothing opens or resolves on a gap).
    gap = pd.DataFrame({"server_utilization": [0.99] + [math.nan] * 5})
    assert level_readings(tenant, gap, forecast, forecast_metrics={"concurrent_users"}) == [
        LevelReading("concurrent_users", 2900.0, "forecast upper bound within 1h")]
    with store.transaction() as session:
        rows = session.scalars(select(OutboxRow).where(OutboxRow.destination == "pagerduty")
                               .order_by(OutboxRow.id)).all()
    pager = [json.loads(r.body) for r in rows]
    assert [(p["event_action"], p["dedup_key"].rsplit("/", 1)[0]) for p in pager] == [
        ("trigger", "capacity_critical/acme/server_utilization"), ("resolve", "capacity_critical/acme/server_utilization"),
        ("trigger", "capacity_critical/acme/concurrent_users")]
    assert pager[0]["payload"]["summary"] == "[acme] server_utilization: latest value 0.97 is above its critical level 0.95"


def test_closed_episodes_go_with_the_plan_s_retention_and_open_ones_stay(store):
    tenant = guide_tenant()  # plan pro: 30 days
    add_customer(store, tenant)
    record_readings(store, tenant, [reading(0.95)], NOW, now=NOW)  # warning and critical open
    record_readings(store, tenant, [reading(0.80)], NOW + timedelta(minutes=5), now=NOW)  # critical closes
    assert store.apply_retention(NOW + timedelta(days=29))["acme"]["alert_episodes"] == 0
    assert store.apply_retention(NOW + timedelta(days=31))["acme"]["alert_episodes"] == 1
    with store.transaction() as session:
        assert [e.event for e in session.scalars(select(AlertEpisode))] == ["capacity_warning"]


def test_no_current_count_means_no_scaling_alert(store):
    tenant = guide_tenant()
    add_customer(store, tenant)
    assert record_readings(store, tenant, [reading(0.1, desired=30, current=None)], NOW, now=NOW) == []


def test_vendor_receivers_accept_helios_payloads_and_refuse_anything_else():
    trigger = alerts.Alert("acme", "capacity_critical", "k/1", "needs 95%", NOW)
    resolve = alerts.Alert("acme", "capacity_critical", "k/1", "needs 95%", NOW, action=alerts.RESOLVE)
    assert slack_problems(alerts.slack_message(trigger)) == []
    assert pagerduty_problems(alerts.pagerduty_event(trigger, PAGERDUTY_KEY)) == []
    assert pagerduty_problems(alerts.pagerduty_event(resolve, PAGERDUTY_KEY)) == []
    generic = alerts.webhook_document(trigger, "id")  # Helios' own JSON is not what the vendors take
    assert "unknown field 'tenant'" in slack_problems(generic)
    assert "unknown field 'tenant'" in pagerduty_problems(generic)
    assert pagerduty_problems({"routing_key": "short", "event_action": "resolve"}) == [
        "routing_key: the 32-character integration key is required", "dedup_key is required to resolve"]
    bad_severity = alerts.pagerduty_event(trigger, PAGERDUTY_KEY)
    bad_severity["payload"]["severity"] = "fatal"
    assert pagerduty_problems(bad_severity) == ["payload.severity must be one of ['critical', 'error', 'info', 'warning']"]
    assert slack_problems({"blocks": [{"type": "section"}]}) == ["blocks[0]: a section needs text or fields"]


def test_alerts_reach_slack_and_pagerduty_receivers_in_their_formats(store, tmp_path, monkeypatch):
    with AlertReceiver(None, tmp_path / "slack.jsonl", kind="slack") as slack, \
            AlertReceiver(None, tmp_path / "pd.jsonl", kind="pagerduty") as pagerduty:
        monkeypatch.setenv(SLACK_URL_ENV, slack.url)
        monkeypatch.setenv(ROUTING_KEY_ENV, PAGERDUTY_KEY)
        tenant = guide_tenant(pagerduty=pagerduty.url)
        add_customer(store, tenant)
        for i, share in enumerate([0.95, 0.95, 0.5]):
            at = NOW + timedelta(minutes=5 * i)
            record_readings(store, tenant, [reading(share)], at, now=NOW)
        worker = alerts.DeliveryWorker(store, clock=lambda: NOW + timedelta(hours=1))
        try:
            stats = worker.run_once()
        finally:
            worker.close()
        assert (stats.delivered, stats.dead, stats.retrying) == (4, 0, 0)
        assert slack.rejected == pagerduty.rejected == 0
        messages = [e["alert"] for e in slack.received()]
        assert [m["text"] for m in messages] == [
            "[acme] game-server: forecast needs 95% of max capacity within 1h (warning at 75%)",
            "[acme] Resolved: game-server: forecast needs 95% of max capacity within 1h (warning at 75%): over"]
        events = [e["alert"] for e in pagerduty.received()]
        assert [e["event_action"] for e in events] == ["trigger", "resolve"]
        assert events[0]["dedup_key"] == events[1]["dedup_key"]
        assert events[0]["routing_key"] == PAGERDUTY_KEY
        assert {"summary", "severity", "source"} <= set(events[0]["payload"])
        # What the receivers answer, as the vendors do.
        answer = httpx.post(pagerduty.url, json=events[0])
        assert answer.status_code == 202 and answer.json()["dedup_key"] == events[0]["dedup_key"]
        refused = httpx.post(slack.url, json={"tenant": "acme"})
        assert refused.status_code == 400 and refused.text.startswith("invalid_payload")


def test_the_guide_s_z_score_thresholds_map_onto_helios_scores():
    # The tenant's anomaly_alert (the guide's 2.5) sits at the detector's threshold; the rarity
    # detector the pipeline trains has threshold 0.5 and scores s = q / (q + 0.08 x 2.5) for a point
    # of rarity q, i.e. z = q / 0.08 in the guide's units.
    detector = tenant_detector(guide_tenant())
    assert detector.threshold == 0.5
    assert score_to_z(0.5, 0.5, 2.5) == pytest.approx(2.5)
    q = 0.4  # s = 0.4 / 0.6 = 0.6667 -> z = 2.5 x 2 / 1 = 5.0 = 0.4 / 0.08
    assert score_to_z(q / (q + 0.08 * 2.5), 0.5, 2.5) == pytest.approx(q / 0.08)
    # The guide's dashboard colours, 2 and 3, on Helios' scale: 2 / 4.5 and 3 / 5.5.
    assert z_to_score(2, 0.5, 2.5) == pytest.approx(0.4444, abs=1e-4)
    assert z_to_score(3, 0.5, 2.5) == pytest.approx(0.5455, abs=1e-4)
    assert score_to_z(1.0, 0.5, 2.5) == MAX_Z and math.isnan(score_to_z(math.nan, 0.5, 2.5))


def test_a_posted_event_crosses_capacity_and_the_watch_alerts_slack_and_pagerduty_once(trained_arena, tmp_path,
                                                                                        monkeypatch):
    """The served path in process: arena's champions, the watch's steps, the outbox and the delivery
    worker, to the vendor stand-ins. Arena: max 200 replicas x 100 players = 20,000; a x20 event on
    ~5,000 players needs several times that."""
    import bentoml

    from helios_pipelines.core.ops.feedback import PredictionRecorder
    from helios_pipelines.core.ops.migrations import upgrade
    from helios_pipelines.core.ops.store import Store
    from helios_pipelines.core.tenants import ScheduledEvent
    from serving.runtime import TenantRuntime
    from serving.watch import TenantWatch
    from tests.conftest import AS_OF

    url = f"sqlite:///{tmp_path / 'helios.db'}"
    upgrade(url)
    store = Store(url)
    now = AS_OF + pd.Timedelta("1D2h")
    runtime = TenantRuntime(bentoml.models.get("helios-arena:latest").path)
    with AlertReceiver(None, tmp_path / "slack.jsonl", kind="slack") as slack, \
            AlertReceiver(None, tmp_path / "pd.jsonl", kind="pagerduty") as pagerduty:
        monkeypatch.setenv(SLACK_URL_ENV, slack.url)
        monkeypatch.setenv(ROUTING_KEY_ENV, PAGERDUTY_KEY)
        runtime.tenant = runtime.tenant.model_copy(update={"alerts": guide_tenant(pagerduty=pagerduty.url).alerts})
        add_customer(store, runtime.tenant)
        recorder = PredictionRecorder(store)
        watch = TenantWatch(runtime, store, recorder, replica="test")
        runtime.add_event(ScheduledEvent(name="Surprise Tournament", start=now + pd.Timedelta("10min"),
                                         duration_hours=0.5, multiplier=20))
        try:
            for moment in (now - pd.Timedelta("2h"), now, now + pd.Timedelta("5min"), now + pd.Timedelta("2h")):
                watch.tick(moment)  # before the event is in sight, twice in it, after it
        finally:
            recorder.close()
        # The watch routes at the wall clock (the outbox's due time); deliver everything due by then.
        worker = alerts.DeliveryWorker(store, clock=lambda: datetime.now(UTC) + timedelta(minutes=1))
        try:
            worker.run_once()
        finally:
            worker.close()
        assert slack.rejected == pagerduty.rejected == 0
        warnings = [e["alert"]["text"] for e in slack.received() if "warning at 75%" in e["alert"]["text"]]
        assert len(warnings) == 2 and warnings[1].startswith("[arena] Resolved: ")
        events = [e["alert"] for e in pagerduty.received() if e["alert"]["dedup_key"].startswith("capacity_critical/")]
        assert [e["event_action"] for e in events] == ["trigger", "resolve"]
        assert events[0]["dedup_key"] == events[1]["dedup_key"]
    store.close()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the arena pipeline (when this runs first) and two 5-minute steps of a running service
def test_make_demo_s_capacity_crossing_reaches_pagerduty_as_one_trigger_then_one_resolve(trained_arena, tmp_path):
    """As `make demo` does it: a running service, an event POSTed with the guide's expected_multiplier,
    the delivery worker, the PagerDuty stand-in. Arena (5-minute step, longest horizon 1h, max 200
    replicas x 100 players = 20,000) on ~5,000 players: a x20 event needs several times max capacity.
    The event covers the one step after the next boundary: the watch's ticks see it in their forecast
    (one trigger) until the tick at its start, whose forecast begins a step later (resolve): ~10 minutes."""
    import os

    from helios_pipelines.core.ops.migrations import upgrade
    from helios_pipelines.core.ops.store import Store
    from helios_pipelines.core.tenants import load_tenants
    from tests.conftest import FIXTURE_TENANTS
    from tests.harness.serve_harness import bentoml_serve

    assert trained_arena.success
    # A store of its own: the posted event is durable, and the session's later arena services must not
    # forecast with a x20 event that never showed in the simulated actuals.
    own_store = Store(f"sqlite:///{tmp_path / 'helios.db'}")
    upgrade(own_store.url)
    own_store.sync_customers(load_tenants(FIXTURE_TENANTS))
    alerts_file = tmp_path / "alerts.yaml"  # the rendered alert ConfigMap (serving/alert_routing.py)
    alerts_file.write_text(yaml.safe_dump({"tenant": "arena", "thresholds": {}, "webhooks": [
        {"name": "pagerduty", "type": "pagerduty", "url_env": "ARENA_PD_URL", "routing_key_env": ROUTING_KEY_ENV,
         "events": ["capacity_critical"]}]}))
    step = pd.Timedelta("5min")
    with AlertReceiver(None, tmp_path / "pd.jsonl", kind="pagerduty") as pagerduty, \
            bentoml_serve(tmp_path, "--arg", "tenants=arena",
                          env=os.environ | {"HELIOS_ALERTS_FILE": str(alerts_file),
                                            "HELIOS_DATABASE_URL": own_store.url}) as service:
        worker = alerts.DeliveryWorker(own_store, environ={"ARENA_PD_URL": pagerduty.url,
                                                                ROUTING_KEY_ENV: PAGERDUTY_KEY})
        now = pd.Timestamp.now(tz="UTC")
        boundary = now.ceil(step) if now.ceil(step) - now > pd.Timedelta("30s") else now.ceil(step) + step
        posted = service.post("/events", json={"name": "Surprise Tournament", "start": (boundary + step).isoformat(),
                                               "duration_hours": step / pd.Timedelta("1h"), "expected_multiplier": 20})
        assert posted.status_code == 200, posted.text
        deadline = boundary + 2 * step + pd.Timedelta("3min")
        try:
            while pd.Timestamp.now(tz="UTC") < deadline:
                worker.run_once()
                critical = [e["alert"] for e in pagerduty.received()
                            if e["alert"]["dedup_key"].startswith("capacity_critical/arena/game-server/")]
                if any(e["event_action"] == "resolve" for e in critical):
                    break
                time.sleep(10)
            worker.run_once()
        finally:
            worker.close()
    assert pagerduty.rejected == 0
    assert [e["event_action"] for e in critical] == ["trigger", "resolve"], critical
    assert critical[0]["dedup_key"] == critical[1]["dedup_key"] and critical[0]["routing_key"] == PAGERDUTY_KEY
    assert critical[0]["payload"]["severity"] == "critical"
