from pathlib import Path

import pytest
import yaml

from helios_pipelines.core.tenants import (
    TenantConfig,
    TenantConfigError,
    UnknownMetricError,
    UnknownTenantError,
    load_tenants,
    parse_tenant_file,
)

TEMPLATE = Path(__file__).resolve().parents[2] / "configs" / "tenants" / "_template.yaml"
GAMING_METRICS = {
    "game_server_active_players", "game_server_matches_in_progress", "game_server_queue_length",
    "game_server_latency_ms", "container_cpu_usage_seconds_total", "container_memory_usage_bytes",
    "http_requests_total", "http_request_duration_seconds", "pg_stat_activity_count", "pg_database_size_bytes",
}


def test_demo_registry_holds_both_tenants_without_errors(demo_registry):
    assert demo_registry.ids == ["gaming-corp", "shopfast"]
    assert demo_registry.errors == []


def test_gaming_corp_carries_the_integration_guide(demo_registry):
    tenant = demo_registry.get("gaming-corp")
    assert GAMING_METRICS <= {m.series for m in tenant.metrics.values()}
    assert tenant.metrics["cpu_usage"].kind == "counter" and tenant.metrics["http_requests"].kind == "counter"
    assert tenant.thresholds.max_players_per_server == 100
    assert (tenant.thresholds.latency_warning_ms, tenant.thresholds.latency_critical_ms) == (50, 100)
    assert tenant.thresholds.queue_length_scale_trigger == 50
    events = {e.name: (e.duration_hours, e.multiplier) for e in tenant.events}
    assert events == {"Season 5 Launch": (48, 5.0), "Weekend Tournament": (8, 2.5)}
    alerts = tenant.alerts.thresholds
    assert (alerts.anomaly_alert, alerts.capacity_warning, alerts.capacity_critical) == (2.5, 0.75, 0.90)
    assert tenant.metrics["concurrent_users"].forecast.horizons == [15, 60]
    assert {"concurrent_users", "matches_in_progress", "server_utilization", "game_latency_p99"} <= set(tenant.metrics)
    assert tenant.metrics["concurrent_users"].query == "sum(game_active_sessions)"


@pytest.mark.parametrize("name", ["concurrent_users", "game_server_active_players"])
def test_a_metric_resolves_by_logical_and_by_series_name(demo_registry, name):
    assert demo_registry.get("gaming-corp").resolve_metric(name) == "concurrent_users"


def test_unknown_metric_and_tenant_errors_name_the_problem(demo_registry):
    with pytest.raises(UnknownMetricError, match="tenant 'gaming-corp' has no metric 'nope'"):
        demo_registry.get("gaming-corp").resolve_metric("nope")
    with pytest.raises(UnknownTenantError, match="unknown tenant 'ghost'.*gaming-corp"):
        demo_registry.get("ghost")


def _write(directory: Path, name: str, data: dict) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _minimal(tenant_id: str) -> dict:
    return {"id": tenant_id, "name": tenant_id, "metrics": {"users": {"series": "users_total", "forecast": {"horizons": ["1h"]}}}}


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (lambda d: d.update(colour="blue"), "colour", "Extra inputs are not permitted"),
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone", "unknown IANA time zone 'Mars/Olympus'"),
        (lambda d: d.update(step="7parsecs"), "step", "is not a pandas offset"),
        (lambda d: d["metrics"]["users"].update(kind="histogram"), "metrics.users.kind", "'gauge' or 'counter'"),
        (lambda d: d.update(alerts={"webhooks": [{"name": "x", "url": "ftp://x", "events": ["anomaly_detected"]}]}),
         "alerts.webhooks.0.url", "'ftp://x' is not an http(s) URL with a host"),
        (lambda d: d.update(alerts={"webhooks": [{"name": "x", "url": "https://:443/hook", "events": ["anomaly_detected"]}]}),
         "alerts.webhooks.0.url", "is not an http(s) URL with a host"),
        (lambda d: d.update(alerts={"webhooks": [{"name": "x", "url": "https://hooks.example.com:99999/x", "events": ["anomaly_detected"]}]}),
         "alerts.webhooks.0.url", "has an invalid port"),
        # The guide's Step 5 channel as written: its routing key is a placeholder for the 32-character key.
        (lambda d: d.update(alerts={"webhooks": [{"name": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue",
                                                  "routing_key": "CUSTOMER_ROUTING_KEY", "events": ["capacity_critical"]}]}),
         "alerts.webhooks.0.routing_key", "'CUSTOMER_ROUTING_KEY' is not a PagerDuty routing key"),
        (lambda d: d.update(alerts={"webhooks": [{"name": "pd", "type": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue", "events": ["capacity_critical"]}]}),
         "alerts.webhooks.0", "needs exactly one of routing_key and routing_key_env"),
        (lambda d: d.update(scaling=[{"service": "web", "metric": "ghost", "capacity_per_replica": 10}]),
         "(file)", "names unknown metric 'ghost'"),
        (lambda d: d.update(scaling=[{"service": "web", "metric": "users", "capacity_per_replica": "max_players_per_server"}]),
         "(file)", "threshold 'max_players_per_server', which is not set"),
        (lambda d: d["metrics"]["users"].pop("forecast"), "(file)", "at least one must be forecast"),
    ],
)
def test_a_bad_file_gets_an_error_naming_file_key_and_problem(tmp_path, change, key, problem):
    data = _minimal("bad")
    change(data)
    path = _write(tmp_path, "bad", data)
    with pytest.raises(TenantConfigError) as caught:
        parse_tenant_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{key}:" in message
    assert problem in message


def test_id_must_match_the_file_name(tmp_path):
    path = _write(tmp_path, "alpha", _minimal("beta"))
    with pytest.raises(TenantConfigError, match="'beta' does not match the file name 'alpha'"):
        parse_tenant_file(path)


def test_one_bad_tenant_never_hides_the_others(tmp_path):
    _write(tmp_path, "good", _minimal("good"))
    (tmp_path / "broken.yaml").write_text("metrics: [unclosed")
    _write(tmp_path, "wrong", _minimal("wrong") | {"plan": "platinum"})
    registry = load_tenants(tmp_path)
    assert registry.ids == ["good"]
    assert sorted(e.path.name for e in registry.errors) == ["broken.yaml", "wrong.yaml"]
    with pytest.raises(TenantConfigError, match="plan"):
        registry.get("wrong")


def _keys(model: type, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        for candidate in getattr(field.annotation, "__args__", ()) + (field.annotation,):
            if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                keys |= _keys(candidate, prefix + name + ".")
    return keys


def _yaml_keys(node, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = prefix + str(key)
            keys.add(path)
            keys |= _yaml_keys(value, path + ".")
    elif isinstance(node, list):
        for item in node:
            keys |= _yaml_keys(item, prefix)
    return keys


def test_the_template_is_valid_and_documents_every_key(tmp_path):
    raw = yaml.safe_load(TEMPLATE.read_text())
    parse_tenant_file(_write(tmp_path, raw["id"], raw))
    documented = {k.replace("metrics.concurrent_users.", "metrics.*.") for k in _yaml_keys(raw)}
    model_keys = {k.replace("metrics.", "metrics.*.", 1) if k.startswith("metrics.") else k for k in _keys(TenantConfig)}
    source_keys = {k for k in model_keys if k.startswith("source.")}
    # Every key of every model must appear in the template (sources: those of the simulator are shown).
    missing = {k for k in model_keys - source_keys if k not in documented and not k.startswith("metrics.*.forecast.")}
    assert not missing, f"_template.yaml does not document: {sorted(missing)}"


LAUNCH = {"name": "Launch", "start": "2026-12-03T14:00:00Z", "duration_hours": 48, "multiplier": 5.0}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"duration_hours": 1e300}, "duration_hours"),  # beyond what a timestamp can hold: OverflowError
        ({"duration_hours": float("nan")}, "duration_hours"),
        ({"multiplier": 1e308}, "multiplier"),  # forecasts became inf, then null
        ({"multiplier": float("inf")}, "multiplier"),
        ({"ramp_minutes": float("inf")}, "ramp_minutes"),
        ({"start": "3000-01-01T00:00:00Z"}, "start"),  # past pandas' last timestamp (2262)
        ({"repeat_days": 10**12}, "repeat_days"),
        ({"metrics": [f"m{i}" for i in range(1000)]}, "metrics"),
    ],
)
def test_an_event_that_would_break_a_forecast_is_refused_naming_the_field(change, field):
    from pydantic import ValidationError

    from helios_pipelines.core.tenants import ScheduledEvent

    with pytest.raises(ValidationError) as caught:
        ScheduledEvent.model_validate(LAUNCH | change)
    assert [".".join(map(str, e["loc"])) for e in caught.value.errors()] == [field]


def test_an_event_at_the_bounds_still_gives_finite_multipliers():
    import numpy as np
    import pandas as pd

    from helios_pipelines.core.ml.events import EventSchedule
    from helios_pipelines.core.tenants import ScheduledEvent
    from helios_pipelines.core.tenants.scheduled_events import EVENT_MAX_HOURS, EVENT_MAX_MULTIPLIER

    event = ScheduledEvent.model_validate(LAUNCH | {"duration_hours": EVENT_MAX_HOURS, "multiplier": EVENT_MAX_MULTIPLIER,
                                                    "repeat_days": 366, "start": "2200-12-31T00:00:00Z"})
    index = pd.date_range("2201-01-01", periods=100, freq="1h", tz="UTC")
    factor = EventSchedule([event]).multiplier(index).to_numpy()
    assert np.isfinite(factor).all() and factor.max() == EVENT_MAX_MULTIPLIER
