"""Replicas agree (the DESIGN's "Serving state"): what a replica learns goes to the store, and work
that must happen once per step is claimed there.

The store-level rules run on SQLite and PostgreSQL; the end-to-end test starts two `bentoml serve`
processes of one tenant on two ports against one PostgreSQL store, as two pods would run."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from datetime import datetime, timedelta

import bentoml
import pandas as pd
import pytest
from sqlalchemy import func, select, text

from helios_pipelines.core.ops import migrations
from helios_pipelines.core.ops.feedback import PredictionRecorder
from helios_pipelines.core.ops.store import CustomerDisabledError, Store, UnknownCustomerError
from helios_pipelines.core.ops.store.schema import DISABLED, Anomaly, OutboxRow, Prediction, StepLease
from helios_pipelines.core.sources.simulator import inject_incident
from helios_pipelines.core.tenants import TenantConfig, TenantRegistry
from tests.harness.serve_harness import bentoml_serve
from tests.harness.store_backends import NOW, add_customer, schema_url, tenant_config

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)


def _count(store: Store, query) -> int:
    with store.transaction() as session:
        return session.execute(query).scalar_one()


def _forecast(tenant: str, origin: datetime, horizon: int, value: float) -> dict:
    return {"tenant": tenant, "metric": "concurrent_users", "horizon_minutes": horizon, "value": value,
            "origin": origin.isoformat(), "target_time": (origin + timedelta(minutes=horizon)).isoformat(),
            "lower": value - 1, "upper": value + 1, "interval": 0.8,
            "model": {"name": "acme_concurrent_users_forecaster", "version": "1", "kind": "xgboost"}}


def test_a_forecast_is_recorded_once_per_tenant_metric_horizon_and_origin(store):
    add_customer(store, tenant_config())
    # Two replicas publish the same step, and a client asks /predict twice: two forecasts, each once.
    with PredictionRecorder(store, flush_interval=0.05) as first, PredictionRecorder(store, flush_interval=0.05) as second:
        for recorder in (first, second, first):
            recorder.record(_forecast("acme", NOW, 15, 100.0))
            recorder.record(_forecast("acme", NOW, 60, 110.0))
        first.flush()
        second.flush()
    assert _count(store, select(func.count()).select_from(Prediction)) == 2
    assert first.written + second.written == 2
    # The next step's forecast is a new origin, so a new row.
    store.insert_predictions([{"customer_id": store.customer_id("acme"), "metric_name": "concurrent_users",
                               "horizon_minutes": 15, "issued_at": NOW + timedelta(minutes=5),
                               "timestamp": NOW + timedelta(minutes=20), "predicted_value": 1.0}])
    assert _count(store, select(func.count()).select_from(Prediction)) == 3


def test_exactly_one_replica_claims_a_step_and_the_next_claim_starts_where_it_stopped(store):
    step = timedelta(minutes=5)
    won: list[str] = []
    barrier = threading.Barrier(6)

    def claim(replica: str) -> None:
        barrier.wait()
        if store.claim_step("detect/acme", NOW, replica):
            won.append(replica)

    threads = [threading.Thread(target=claim, args=(f"replica-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(won) == 1
    assert store.claim_step("detect/acme", NOW, "late") is None  # the same step again
    assert store.claim_step("detect/acme", NOW - step, "stale") is None  # an older step
    following = store.claim_step("detect/acme", NOW + step, "replica-x")
    assert following.previous == NOW and following.step == NOW + step
    # Work that failed hands its step back: the next claim looks at those steps again.
    assert store.release_step("detect/acme", following, "replica-x")
    assert store.claim_step("detect/acme", NOW + 2 * step, "replica-y").previous == NOW
    # Tasks are independent of each other.
    assert store.claim_step("join/acme", NOW, "replica-y").previous is None


def test_events_posted_to_the_store_are_read_back_in_order(store):
    add_customer(store, tenant_config())
    start = NOW + timedelta(hours=2)
    first = store.add_event("acme", "Launch", start, {"name": "Launch", "start": start.isoformat(),
                                                      "duration_hours": 2, "multiplier": 3.0})
    second = store.add_event("acme", "Cup", start, {"name": "Cup", "start": start.isoformat(),
                                                    "duration_hours": 1, "multiplier": 2.0})
    assert [e[1]["name"] for e in store.events_after("acme")] == ["Launch", "Cup"]
    assert [e[0] for e in store.events_after("acme", first)] == [second]


def test_changes_posted_to_the_store_are_read_back_in_order_and_only_for_an_active_tenant(store):
    add_customer(store, tenant_config())
    deploy = {"time": NOW.isoformat(), "kind": "deploy", "text": "v2"}
    scale = {"time": (NOW + timedelta(hours=1)).isoformat(), "kind": "scale", "replicas_before": 4,
             "replicas_after": 8, "metrics": ["cpu"]}
    first = store.add_change("acme", NOW, deploy)
    second = store.add_change("acme", NOW + timedelta(hours=1), scale)
    assert store.changes_after("acme") == [(first, deploy), (second, scale)]
    assert store.changes_after("acme", first) == [(second, scale)]
    assert store.events_after("acme") == []  # events and changes are apart
    with pytest.raises(UnknownCustomerError, match="ghost"):
        store.add_change("ghost", NOW, deploy)
    store.set_status("acme", DISABLED, NOW)
    with pytest.raises(CustomerDisabledError, match="'acme' is disabled"):
        store.add_change("acme", NOW, deploy)
    assert len(store.changes_after("acme")) == 2


def test_the_migration_keeps_one_of_each_forecast_recorded_twice_before_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrations.upgrade(url, "0002")
    store = Store(url)
    add_customer(store, tenant_config())
    row = {"customer_id": store.customer_id("acme").hex, "metric_name": "concurrent_users", "horizon_minutes": 15,
           "issued_at": "2026-11-20 12:00:00.000000", "timestamp": "2026-11-20 12:15:00.000000",
           "predicted_value": 1.0, "created_at": "2026-11-20 12:00:00.000000"}
    with store.transaction() as session:
        for _ in range(3):  # as two replicas and a repeated /predict recorded it before the unique key
            session.execute(text("INSERT INTO predictions (customer_id, metric_name, horizon_minutes, issued_at, "
                                 "timestamp, predicted_value, created_at) VALUES (:customer_id, :metric_name, "
                                 ":horizon_minutes, :issued_at, :timestamp, :predicted_value, :created_at)"), row)
    assert migrations.upgrade(url) == migrations.head()
    assert _count(store, select(func.count()).select_from(Prediction)) == 1
    store.close()


# ---- two `bentoml serve` replicas on one PostgreSQL store ----------------------------------------------

@pytest.fixture
def replica_bundle(trained_arena):
    """The arena bundle as packed by the pipeline, its alerts routed to a webhook (the receiver is not
    needed: an alert is one outbox row per destination, which the delivery worker sends)."""
    assert trained_arena.success
    packed = bentoml.models.get("helios-arena:latest")
    tag = f"helios-arena:replicas{uuid.uuid4().hex[:8]}"
    with bentoml.models.create(tag, labels={"tenant": "arena", "owner": "helios-test"}) as model:
        shutil.copytree(packed.path, model.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.yaml"))
        manifest_path = f"{model.path}/manifest.json"
        manifest = json.loads(open(manifest_path).read())
        manifest["tenant"]["alerts"]["webhooks"] = [
            {"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook", "events": ["anomaly_detected"]}]
        open(manifest_path, "w").write(json.dumps(manifest))
    tenant = TenantConfig.model_validate(manifest["tenant"])
    yield tag, tenant
    bentoml.models.delete(tag)


@pytest.fixture
def postgres_store(postgres_admin, replica_bundle):
    schema = f"helios_replicas_{uuid.uuid4().hex[:12]}"
    with postgres_admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = schema_url(schema)
    migrations.upgrade(url)
    store = Store(url)
    tenant = replica_bundle[1]
    store.sync_customers(TenantRegistry({tenant.id: tenant}, []))
    yield store
    store.close()
    with postgres_admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def test_two_replicas_on_one_postgresql_store_honour_one_event_and_detect_and_record_once(
        replica_bundle, postgres_store, tmp_path, monkeypatch):
    tag, tenant = replica_bundle
    home = tmp_path / "home"  # the replicas' simulated monitoring, with an incident in the last hour
    monkeypatch.setenv("HELIOS_HOME", str(home))
    now = pd.Timestamp.now(tz="UTC")
    inject_incident(tenant, "cpu_spike", now - pd.Timedelta("50min"), minutes=20, magnitude=5.0)
    env = dict(__import__("os").environ, HELIOS_HOME=str(home), HELIOS_DATABASE_URL=postgres_store.url,
               HELIOS_EVENTS_POLL_SECONDS="1", HELIOS_CONFIG_DIR=str(tmp_path / "no-configs"))
    args = ("--arg", "tenants=arena", "--arg", f"bundles={tag}")
    with bentoml_serve(tmp_path / "a", *args, env=env) as a, bentoml_serve(tmp_path / "b", *args, env=env) as b:
        before = b.post("/predict", json={"metric": "concurrent_users", "horizon": 60}).json()
        start = datetime.fromisoformat(before["origin"]) + timedelta(minutes=5)
        posted = a.post("/events", json={"name": "Flash Tournament", "start": start.isoformat(),
                                         "duration_hours": 3, "multiplier": 3.0})
        assert posted.status_code == 200, posted.text
        # A deploy two days back (far from the incident): kept in the store like the event.
        deployed = b.post("/annotations", json={"time": int((now - pd.Timedelta("2D")).timestamp() * 1000),
                                                "tags": ["deploy"], "text": "checkout v2.3"})
        assert deployed.status_code == 200, deployed.text
        deadline = time.monotonic() + 20
        while "Flash Tournament" not in (after := b.post("/predict", json={"metric": "concurrent_users",
                                                                         "horizon": 60}).json())["events"]:
            assert time.monotonic() < deadline, "the replica that did not receive the event never honoured it"
            time.sleep(0.5)
        assert after["value"] > 1.5 * before["value"]
        # Both replicas published this step's forecasts; wait until the store holds them.
        deadline = time.monotonic() + 30
        while _count(postgres_store, select(func.count()).select_from(Prediction)) < 2:
            assert time.monotonic() < deadline, "no published forecast was recorded"
            time.sleep(0.5)
        time.sleep(3)  # let the slower replica's recorder flush its copies too

    with postgres_store.transaction() as session:
        per_forecast = session.execute(
            select(Prediction.metric_name, Prediction.horizon_minutes, Prediction.issued_at, func.count())
            .group_by(Prediction.metric_name, Prediction.horizon_minutes, Prediction.issued_at)).all()
        episodes = session.scalars(select(Anomaly)).all()
        outbox = session.execute(select(OutboxRow.action, func.count()).group_by(OutboxRow.action)).all()
        leases = session.scalars(select(StepLease).where(StepLease.name == "detect/arena")).all()
        events_stored = session.execute(text("SELECT count(*) FROM posted_events")).scalar_one()
        changes_stored = session.execute(text("SELECT count(*) FROM posted_changes")).scalar_one()
    assert (events_stored, changes_stored) == (1, 1)
    assert {(m, h) for m, h, _, _ in per_forecast} >= {("concurrent_users", 15), ("concurrent_users", 60)}
    assert all(n == 1 for *_, n in per_forecast), per_forecast
    # The incident is one episode, found by the scheduled detection of one replica, alerted once.
    assert len(episodes) == 1 and episodes[0].detected_by == "scheduled", [
        (e.detected_at, e.resolved_at) for e in episodes]
    assert dict(outbox)["trigger"] == 1
    assert dict(outbox).get("resolve", 0) == (1 if episodes[0].resolved_at is not None else 0)
    assert len(leases) == 1
