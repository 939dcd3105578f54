"""The integration guide (../shared/seed/helios-integration-guide.md), section by section in its order,
each shape run against Helios as the guide writes it. Where Helios differs, the README's integration
section says how and why; the test pins the mapping.

Sections with their own suites: Grafana (tests/serving/test_grafana_on_helios.py), the agent's backfill (tests/e2e/test_agent.py),
KEDA's arithmetic (tests/serving/test_desired_replicas.py), the alert formats (tests/core/test_capacity_alerts.py).
"""

from __future__ import annotations

import inspect
import logging
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import yaml

from helios_pipelines.commands.deploy import DeploySettings, render
from helios_pipelines.core.ml.training import forecaster_for
from helios_pipelines.core.ops import alerts
from helios_pipelines.core.ops.alert_receiver import AlertReceiver
from helios_pipelines.core.ops.capacity_alerts import CapacityReading, record_readings
from helios_pipelines.core.ops.plans import plan
from helios_pipelines.core.tenants import (
    AlertConfig,
    ScheduledEvent,
    TenantConfig,
    TenantConfigError,
    parse_tenant_file,
)
from helios_sdk import HeliosAgent
from tests.conftest import SHARED
from tests.harness.serve_harness import bentoml_serve
from tests.harness.store_backends import NOW, PAGERDUTY_KEY, add_customer

GUIDE = SHARED / "seed" / "helios-integration-guide.md"
# These tests read the rendered names, environment and triggers; the guide tenant has no champion to build an image of.
SETTINGS = DeploySettings(image_tag="guide")

# "Gaming App Example" / "Custom Metrics for Gaming": GAMING_METRICS, as written.
GAMING_METRICS = {
    "concurrent_users": {
        "prometheus_query": "sum(game_active_sessions)",
        "forecast_horizon": "1h",
        "seasonality": ["hourly", "daily", "weekly"],
    },
    "matches_in_progress": {
        "prometheus_query": "sum(game_matches_active)",
        "scale_trigger": "matches_in_queue > 100",
    },
    "server_utilization": {
        "prometheus_query": "avg(game_server_players / game_server_capacity)",
        "warning_threshold": 0.8,
        "critical_threshold": 0.95,
    },
    "game_latency_p99": {
        "prometheus_query": "histogram_quantile(0.99, game_request_latency_bucket)",
        "anomaly_detection": True,
        "alert_threshold_ms": 100,
    },
}
# "Step 2": GamingCorpConfig.thresholds, as written.
STEP_2_THRESHOLDS = {"max_players_per_server": 100, "latency_warning_ms": 50, "latency_critical_ms": 100,
                     "queue_length_scale_trigger": 50}


def guide_tenant(**changes) -> TenantConfig:
    return TenantConfig.model_validate({
        "id": "gaming-corp", "name": "Gaming Corp", "plan": "standard",
        "source": {"type": "prometheus", "url": "http://prometheus.gaming-corp.internal:9090"},
        "metrics": GAMING_METRICS, "thresholds": STEP_2_THRESHOLDS,
        "scaling": [{"service": "game-server", "metric": "concurrent_users",
                     "capacity_per_replica": "max_players_per_server", "min_replicas": 5, "max_replicas": 100}],
    } | changes)


def test_the_guide_is_there_in_the_order_this_test_walks():
    if not GUIDE.exists():
        pytest.skip(f"{GUIDE} is absent (../shared not laid out)")
    text = GUIDE.read_text()
    order = ["### Option 1: Sidecar Deployment", "### Option 3: Agent-Based", "### Step 2: Configure Metrics Adapter",
             "### Step 5: Configure Webhooks/Alerts", "### Custom Metrics for Gaming", "### Gaming-Specific Scaling Rules",
             "### Event-Based Scaling", "### Database Schema", "### API with Tenant Isolation"]
    positions = [text.index(heading) for heading in order]
    assert positions == sorted(positions)
    assert '"prometheus_query": "sum(game_active_sessions)"' in text and "expected_multiplier=5.0" in text


def test_deployment_options_sidecar_names_and_env():
    files = render(guide_tenant(), SETTINGS)
    deployment = yaml.safe_load(files["deployment.yaml"])
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PROMETHEUS_URL"] == "http://prometheus.gaming-corp.internal:9090"
    # Step 4's labels; its CUSTOMER_ID / MODEL_PREFIX are not needed: the Bento carries its tenant (README).
    assert deployment["metadata"]["labels"] == {"app": "helios-inference", "customer": "gaming-corp"}
    alias = yaml.safe_load(files["service-helios-inference.yaml"])  # the guide's Service name
    assert alias["metadata"]["name"] == "helios-inference" and alias["spec"]["ports"][0]["port"] == 8080


def test_deployment_options_agent_takes_the_guide_s_arguments(tmp_path):
    agent = HeliosAgent(api_key="customer-api-key", endpoint="https://helios.yourcompany.com",
                        customer_id="gaming-corp", data_dir=tmp_path)
    try:
        assert callable(agent.discover_prometheus) and "block" in inspect.signature(agent.start).parameters
    finally:
        agent.close()


def test_step_2_thresholds_load_as_written():
    thresholds = guide_tenant().thresholds
    assert (thresholds.max_players_per_server, thresholds.queue_length_scale_trigger) == (100, 50)


# "Step 5: Configure Webhooks/Alerts": the ConfigMap's alerts.yaml, as written (read from the guide when present).
STEP_5_ALERTS = """\
webhooks:
  - name: slack
    url: "https://hooks.slack.com/services/CUSTOMER_WEBHOOK"
    events:
      - anomaly_detected
      - scaling_recommended
      - capacity_warning

  - name: pagerduty
    url: "https://events.pagerduty.com/v2/enqueue"
    routing_key: "CUSTOMER_ROUTING_KEY"
    events:
      - anomaly_detected
      - capacity_critical

thresholds:
  anomaly_alert: 2.5  # Z-score
  capacity_warning: 0.75
  capacity_critical: 0.90
"""


def step_5_alerts_yaml() -> str:
    if not GUIDE.exists():
        return STEP_5_ALERTS
    text = GUIDE.read_text()
    section = text[text.index("### Step 5: Configure Webhooks/Alerts"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    return yaml.safe_load(block[:block.index("```")])["data"]["alerts.yaml"]


def test_step_5_alerts_yaml_as_written_is_the_one_this_test_runs():
    assert yaml.safe_load(step_5_alerts_yaml()) == yaml.safe_load(STEP_5_ALERTS)


def test_step_5_only_the_routing_key_placeholder_must_become_a_real_key():
    # As written but for CUSTOMER_ROUTING_KEY, which stands for the customer's 32-character key.
    with pytest.raises(ValueError, match=r"webhooks\.1\.routing_key\n.*'CUSTOMER_ROUTING_KEY' is not a PagerDuty routing key"):
        AlertConfig.model_validate(yaml.safe_load(step_5_alerts_yaml()))
    config = AlertConfig.model_validate(yaml.safe_load(step_5_alerts_yaml().replace("CUSTOMER_ROUTING_KEY", PAGERDUTY_KEY)))
    assert [(w.name, w.type) for w in config.webhooks] == [("slack", "slack"), ("pagerduty", "pagerduty")]
    thresholds = config.thresholds  # anomaly_alert is a z-score: tests/core/test_capacity_alerts.py maps it
    assert (thresholds.anomaly_alert, thresholds.capacity_warning, thresholds.capacity_critical) == (2.5, 0.75, 0.90)


def test_step_5_alerts_as_written_reach_slack_and_pagerduty_in_their_formats(store, tmp_path, caplog):  # noqa: F811
    """The guide's alerts.yaml with its literal Slack URL and routing key (placeholders filled in as a
    customer does: the vendors' hosts are local stand-ins here), loaded with a warning that names the
    tenant and each literal secret, and every alert it routes delivered in the vendor's format."""
    with AlertReceiver(None, tmp_path / "slack.jsonl", kind="slack") as slack, \
            AlertReceiver(None, tmp_path / "pd.jsonl", kind="pagerduty") as pagerduty:
        written = (step_5_alerts_yaml().replace("https://hooks.slack.com", slack.url.rstrip("/"))
                   .replace("https://events.pagerduty.com", pagerduty.url.rstrip("/"))
                   .replace("CUSTOMER_ROUTING_KEY", PAGERDUTY_KEY))
        with caplog.at_level(logging.WARNING, logger="helios_pipelines.core.tenants"):
            tenant = guide_tenant(id="guide-step-5", plan="pro", alerts=yaml.safe_load(written))  # standard has no webhooks
        warned = [r.getMessage() for r in caplog.records]
        assert any("tenant 'guide-step-5'" in m and "(slack).url (use url_env)" in m for m in warned), warned
        assert any("tenant 'guide-step-5'" in m and "(pagerduty).routing_key (use routing_key_env)" in m for m in warned)
        add_customer(store, tenant)
        anomaly = dict(tenant="guide-step-5", event="anomaly_detected", alert_key="anomaly/guide-step-5/concurrent_users/1",
                       summary="concurrent_users is anomalous", occurred_at=NOW)
        alerts.route(store, tenant, [alerts.Alert(**anomaly), alerts.Alert(**anomaly, action=alerts.RESOLVE)], NOW)
        for i, share in enumerate([0.95, 0.5]):  # the forecast needs 95 % of max capacity, then 50 %
            record_readings(store, tenant, [CapacityReading("game-server", share, "1h", 10, 10)],
                            NOW + timedelta(minutes=i), now=NOW)
        worker = alerts.DeliveryWorker(store, clock=lambda: NOW + timedelta(hours=1), environ={})  # nothing from env
        try:
            stats = worker.run_once()
        finally:
            worker.close()
        assert (stats.delivered, stats.dead, stats.retrying) == (8, 0, 0) and slack.rejected == pagerduty.rejected == 0
        # Slack: anomaly and capacity_warning (0.95 >= 0.75), each triggered and resolved.
        assert sorted(m["alert"]["text"].split("] ", 1)[1] for m in slack.received()) == sorted([
            "concurrent_users is anomalous", "Resolved: concurrent_users is anomalous",
            "game-server: forecast needs 95% of max capacity within 1h (warning at 75%)",
            "Resolved: game-server: forecast needs 95% of max capacity within 1h (warning at 75%): over"])
        # PagerDuty: anomaly and capacity_critical (0.95 >= 0.90), the literal routing key, one dedup_key per episode.
        events = [e["alert"] for e in pagerduty.received()]
        assert {e["routing_key"] for e in events} == {PAGERDUTY_KEY}
        by_key = {}
        for event in events:
            by_key.setdefault(event["dedup_key"].split("/")[0], []).append(event["event_action"])
        assert by_key == {"anomaly": ["trigger", "resolve"], "capacity_critical": ["trigger", "resolve"]}
        assert len({e["dedup_key"] for e in events}) == 2


def test_step_5_literal_secrets_stay_out_of_the_rendered_alert_configmap():
    written = step_5_alerts_yaml().replace("CUSTOMER_ROUTING_KEY", PAGERDUTY_KEY)
    files = render(guide_tenant(plan="pro", alerts=yaml.safe_load(written)), SETTINGS)
    configmap = files["alerts-configmap.yaml"]
    assert "CUSTOMER_WEBHOOK" not in configmap and PAGERDUTY_KEY not in configmap
    routing = yaml.safe_load(yaml.safe_load(configmap)["data"]["alerts.yaml"])
    # Served, the ConfigMap routes as the file did; the values go in the alert Secret under these names.
    assert [(w["name"], w["type"], w["url_env"], w.get("routing_key_env")) for w in routing["webhooks"]] == [
        ("slack", "slack", "HELIOS_WEBHOOK_SLACK_URL", None),
        ("pagerduty", "pagerduty", "HELIOS_WEBHOOK_PAGERDUTY_URL", "HELIOS_WEBHOOK_PAGERDUTY_ROUTING_KEY")]


def test_custom_metrics_for_gaming_map_onto_helios_keys():
    metrics = guide_tenant().metrics
    users = metrics["concurrent_users"]
    assert (users.query, users.series, users.forecast.horizons) == ("sum(game_active_sessions)", "game_active_sessions", [60])
    assert users.seasonality == ["hourly", "daily", "weekly"]
    matches = metrics["matches_in_progress"]
    assert (matches.scale_trigger.series, matches.scale_trigger.above) == ("matches_in_queue", 100)
    utilization = metrics["server_utilization"]
    assert (utilization.series, utilization.warning_above, utilization.critical_above) == ("game_server_players", 0.8, 0.95)
    latency = metrics["game_latency_p99"]
    assert (latency.anomaly, latency.critical_above, latency.unit) == (True, 100, "ms")


def test_seasonality_chooses_the_prophet_candidate_s_seasonal_components():
    tenant = guide_tenant()
    prophet = forecaster_for(tenant, "concurrent_users", "prophet")  # the guide's ["hourly", "daily", "weekly"]
    index = pd.date_range("2026-01-05", periods=3 * 1440, freq="1min", tz="UTC")
    minutes = np.arange(len(index))
    series = pd.Series(1000 + 200 * np.sin(2 * np.pi * minutes / 1440) + 20 * np.sin(2 * np.pi * minutes / 60), index)
    assert set(prophet.fit(series).model_.seasonalities) == {"hourly", "daily", "weekly"}
    # A metric without one: Prophet's daily and weekly; kinds that learn seasonality from lags take none.
    users = {k: v for k, v in GAMING_METRICS["concurrent_users"].items() if k != "seasonality"}
    unset = guide_tenant(metrics=GAMING_METRICS | {"concurrent_users": users})
    assert forecaster_for(unset, "concurrent_users", "prophet").seasonality == ("daily", "weekly")
    assert not hasattr(forecaster_for(tenant, "concurrent_users", "xgboost"), "seasonality")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("forecast_horizon", "soon", "forecast_horizon: 'soon' is not a duration"),
    ("forecast_horizon", True, "forecast_horizon: expected a duration like 1h, got True"),
    ("anomaly_detection", "yes", "anomaly_detection: expected true or false, got 'yes'"),
    ("scale_trigger", "queue < 5", "scale_trigger: expected '<series> > <number>', got 'queue < 5'"),
    ("scale_trigger", "matches_in_queue >", "scale_trigger: 'matches_in_queue >' is not PromQL"),
    ("alert_threshold_ms", -1, "alert_threshold_ms: must be above 0, got -1"),
    ("warning_threshold", "high", "warning_threshold: expected a number, got 'high'"),
    ("prometheus_query", "sum(", "prometheus_query: 'sum(' is not PromQL"),
    ("seasonality", ["fortnightly"], "metrics.concurrent_users.seasonality.0"),
])
def test_a_guide_key_with_a_wrong_value_is_an_error_naming_it(tmp_path, key, value, message):
    metrics = {name: dict(config) for name, config in GAMING_METRICS.items()}
    metrics["concurrent_users"][key] = value
    path = tmp_path / "gaming-corp.yaml"
    path.write_text(yaml.safe_dump({"name": "Gaming Corp", "metrics": metrics}))
    with pytest.raises(TenantConfigError) as caught:
        parse_tenant_file(path)
    assert message in str(caught.value) and "gaming-corp.yaml" in str(caught.value)


def test_a_guide_key_beside_the_helios_key_it_maps_to_is_an_error():
    with pytest.raises(ValueError, match="prometheus_query: set query or the guide's prometheus_query, not both"):
        guide_tenant(metrics={"users": {"prometheus_query": "sum(a)", "query": "sum(b)", "forecast_horizon": "1h"}})


def test_gaming_specific_scaling_rules_render_the_guide_s_emergency_triggers():
    scaled = yaml.safe_load(render(guide_tenant(), SETTINGS)["scaledobject-game-server.yaml"])
    triggers = {t["name"]: t["metadata"] for t in scaled["spec"]["triggers"]}
    assert list(triggers)[0] == "helios-desired-replicas"  # Helios' answer first (README: why not the forecast)
    assert triggers["matches-in-progress-scale-trigger"] == {
        "serverAddress": "http://prometheus.gaming-corp.internal:9090", "threshold": "100",
        "query": "sum(matches_in_queue)"}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (5, 100)


def test_event_based_scaling_takes_expected_multiplier():
    # GamingEventScheduler.add_event(name, start, duration_hours, expected_multiplier), as in its example.
    event = ScheduledEvent(name="Season 5 Launch", start=datetime(2026, 1, 15, 10, 0), duration_hours=48,
                           expected_multiplier=5.0)
    assert event.multiplier == 5.0 and event.end.isoformat() == "2026-01-17T10:00:00+00:00"
    with pytest.raises(ValueError, match="expected_multiplier: set multiplier or the guide's expected_multiplier"):
        ScheduledEvent(name="x", start=datetime(2026, 1, 15), duration_hours=1, multiplier=2, expected_multiplier=3)


def test_database_schema_plan_standard_is_the_starter_tier():
    assert guide_tenant().plan == "starter" and plan("starter").max_metrics == 10


@pytest.mark.slow
def test_the_guide_s_calls_against_a_running_service(trained_arena, embedded_store, tmp_path):  # noqa: F811
    with bentoml_serve(tmp_path, "--arg", "tenants=arena") as service:
        # "API with Tenant Isolation": GET /predict?metric=&horizon= with the guide's answer fields.
        answer = service.get("/predict", params={"metric": "concurrent_users", "horizon": 15})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["customer"] == "arena" and body["metric"] == "concurrent_users" and body["horizon_minutes"] == 15
        assert body["predicted_value"] == body["value"] and body["timestamp"] == body["origin"]
        # "Event-Based Scaling": the scheduler's fields, posted.
        posted = service.post("/events", json={"name": "Weekend Tournament", "start": "2026-01-18T14:00:00Z",
                                               "duration_hours": 8, "expected_multiplier": 2.5})
        assert posted.status_code == 200, posted.text
        assert posted.json()["posted"]["multiplier"] == 2.5
        refused = service.post("/events", json={"name": "x", "start": "2026-01-18T14:00:00Z", "duration_hours": 8,
                                                "expected_multiplier": -1})
        assert refused.status_code == 400 and "multiplier" in refused.text
        # "Gaming-Specific Scaling Rules": the guide's forecast and anomaly trigger queries answer one series.
        for query in ('helios_forecast_value{customer="arena",metric="concurrent_users",horizon="1h"}',
                      'helios_anomaly_zscore{customer="arena",metric="concurrent_users"}',
                      'helios_desired_replicas{customer="arena",service="game-server"}'):
            result = service.get("/api/v1/query", params={"query": query})
            assert result.status_code == 200, (query, result.text)
            assert len(result.json()["data"]["result"]) == 1, query
