"""The service's per-step watch, end to end on the arena tenant's packed champions: an incident injected
into the simulated monitoring is found by the scheduled detection, recorded once, and reaches a local
webhook receiver as a signed alert; the forecasts the service publishes are recorded and, once their
targets pass, give live accuracy."""

import bentoml
import pandas as pd
import pytest

from helios_pipelines.core.ops import alerts
from helios_pipelines.core.ops.alert_receiver import AlertReceiver
from helios_pipelines.core.ops.feedback import PredictionRecorder, live_accuracy
from helios_pipelines.core.ops.migrations import upgrade
from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.sources.simulator import inject_incident
from helios_pipelines.core.tenants import TenantRegistry
from serving.runtime import TenantRuntime
from serving.watch import TenantWatch
from tests.conftest import AS_OF

SECRET = "watch-test-secret"


@pytest.fixture
def incidents_home(tmp_path, monkeypatch):
    """Incidents injected here stay out of the session's HELIOS_HOME (other tests read the same tenant)."""
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def receiver(tmp_path):
    with AlertReceiver(SECRET, tmp_path / "received.jsonl") as running:
        yield running


@pytest.fixture
def watched(trained_arena, tmp_path, receiver):
    """The arena runtime, its tenant routed to the local receiver, and a store that knows it."""
    assert trained_arena.success
    runtime = TenantRuntime(bentoml.models.get("helios-arena:latest").path)
    hook = {"name": "ops", "type": "webhook", "url": receiver.url, "secret_env": "ARENA_WEBHOOK_SECRET",
            "events": ["anomaly_detected"]}
    runtime.tenant = runtime.tenant.model_validate(
        runtime.tenant.model_dump() | {"alerts": runtime.tenant.alerts.model_dump() | {"webhooks": [hook]}})
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(store.url)
    store.sync_customers(TenantRegistry({runtime.tenant.id: runtime.tenant}, []))
    yield runtime, store
    store.close()


def test_an_injected_incident_reaches_the_receiver_signed_and_served_forecasts_give_live_accuracy(
        watched, receiver, incidents_home):
    runtime, store = watched
    step = runtime.step
    start = AS_OF + pd.Timedelta("1D12h")  # a live day after the training window
    incident = inject_incident(runtime.tenant, "cpu_spike", start + pd.Timedelta("1h"), minutes=30, magnitude=5.0)

    with PredictionRecorder(store, flush_interval=0.05) as recorder:
        watch = TenantWatch(runtime, store, recorder)
        reports = {}
        now = start
        while now <= start + pd.Timedelta("3h"):
            reports[now] = watch.tick(now)
            now += step
        recorder.flush()
        last = watch.tick(now + pd.Timedelta("10min"))  # joins the actuals of the last targets

    # Every step's published forecasts were recorded, one per horizon, and scored against the actuals.
    assert all(r.recorded == 2 for r in reports.values())
    assert reports[start].scored_steps == 12 and all(r.scored_steps == 1 for t, r in reports.items() if t > start)
    assert last.joined > 0
    rows = live_accuracy(store, "arena", window=pd.Timedelta("4h").to_pytimedelta(), now=now.to_pydatetime())
    by_horizon = {r.horizon_minutes: r for r in rows if r.metric == "concurrent_users"}
    assert set(by_horizon) == {15, 60}
    assert by_horizon[15].count >= 30 and by_horizon[60].count >= 20
    assert by_horizon[15].mase is not None and 0 <= by_horizon[15].coverage <= 1

    # The incident opened one episode on its metric, while it ran, by the scheduled detection.
    episodes = [a for _, a in store.list_anomalies("arena") if a.metric_name == incident.metric]
    assert len(episodes) == 1
    episode = episodes[0]
    assert episode.detected_by == "scheduled"
    detected_at = pd.Timestamp(episode.detected_at)  # the store's datetimes are UTC
    assert incident.start <= detected_at < incident.end
    assert episode.resolved_at is not None  # it recovered after the incident

    # The outbox delivers it to the receiver, signed; a second delivery pass sends nothing again.
    worker = alerts.DeliveryWorker(store, environ={"ARENA_WEBHOOK_SECRET": SECRET})
    try:
        first = worker.run_once()
        again = worker.run_once()
    finally:
        worker.close()
    assert first.delivered >= 2 and again.delivered == 0 and receiver.rejected == 0
    received = [r["alert"] for r in receiver.received() if r["alert"]["details"].get("anomaly_id") == episode.id]
    assert [(a["event"], a["action"]) for a in received] == [("anomaly_detected", "trigger"), ("anomaly_detected", "resolve")]
    assert all(r["signature_verified"] for r in receiver.received())
    assert incident.metric in received[0]["summary"]
