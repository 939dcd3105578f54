"""The store on SQLite and PostgreSQL: schema, customers, API keys, sync, plans, retention, anomalies."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, select

from helios_pipelines.core.ops import migrations, plans
from helios_pipelines.core.ops.anomaly_log import record_detection
from helios_pipelines.core.ops.store import DuplicateCustomerError, UnknownAnomalyError, UnknownCustomerError
from helios_pipelines.core.ops.store.schema import (
    DISABLED,
    Anomaly,
    ApiKey,
    Base,
    Customer,
    CustomerMetric,
    OutboxRow,
    Prediction,
    PushSample,
    PushSeries,
)
from helios_pipelines.core.tenants import TenantRegistry
from tests.harness.store_backends import NOW, add_customer, tenant_config


def count(store, model) -> int:
    with store.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_migrations_build_exactly_the_models_schema(store_url):
    assert migrations.current(store_url) == migrations.head()
    engine = migrations.make_engine(store_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
    assert migrations.upgrade(store_url) == migrations.head()  # a second upgrade is a no-op


def test_duplicate_customer_is_refused_and_writes_nothing(store):
    add_customer(store, tenant_config())
    with pytest.raises(DuplicateCustomerError, match="'acme' already exists"):
        add_customer(store, tenant_config())
    assert (count(store, Customer), count(store, ApiKey), count(store, CustomerMetric)) == (1, 1, 2)


def test_over_plan_customer_is_refused_naming_the_limit(store):
    with pytest.raises(plans.PlanLimitError, match="11 metrics; the starter plan allows 10"):
        add_customer(store, tenant_config(plan="starter", metrics=11, anomaly=False, webhooks=[]))
    with pytest.raises(plans.PlanLimitError, match="starter plan does not include it.*from the pro plan"):
        add_customer(store, tenant_config(plan="starter"))
    assert count(store, Customer) == 0


def test_api_keys_are_hashed_checked_and_rotated_with_grace(store):
    first = add_customer(store, tenant_config())
    with store.transaction() as session:
        stored = session.scalar(select(ApiKey))
    assert first.startswith(f"hel_{stored.prefix}_") and stored.key_hash != first and first not in stored.key_hash
    assert store.authenticate(first, NOW).slug == "acme"
    assert store.authenticate(first[:-1] + ("x" if first[-1] != "x" else "y"), NOW) is None
    assert store.authenticate("not-a-key", NOW) is None

    second = store.rotate_key("acme", grace=timedelta(hours=1), now=NOW)
    assert store.authenticate(first, NOW + timedelta(minutes=59)).slug == "acme"
    assert store.authenticate(first, NOW + timedelta(minutes=61)) is None
    assert store.authenticate(second, NOW + timedelta(days=30)).plan == "pro"

    third = store.rotate_key("acme", grace=timedelta(0), now=NOW)
    assert store.authenticate(second, NOW) is None
    assert store.authenticate(third, NOW) is not None

    store.set_status("acme", DISABLED, NOW)
    assert store.authenticate(third, NOW) is None
    with pytest.raises(UnknownCustomerError, match="no customer 'nobody'"):
        store.rotate_key("nobody")


def test_sync_makes_the_store_follow_the_registry(store):
    add_customer(store, tenant_config("acme"))
    add_customer(store, tenant_config("gone"))
    registry = TenantRegistry({
        "acme": tenant_config("acme", plan="enterprise", metrics=3),
        "new": tenant_config("new", plan="starter", anomaly=True, webhooks=[]),
    }, [])
    report = store.sync_customers(registry)
    assert (report.added, report.updated, report.only_in_store) == (["new"], ["acme"], ["gone"])
    assert report.plan_violations == [
        "tenant 'new' uses anomaly detection (concurrent_users); the starter plan does not include it "
        "(available from the pro plan)"
    ]
    with store.transaction() as session:
        acme = store.customer(session, "acme")
        assert acme.plan == "enterprise"
        assert session.scalar(select(func.count()).where(CustomerMetric.customer_id == acme.id)) == 3
    assert store.sync_customers(registry).unchanged == ["acme", "new"]


def _detection(metric: str, at: datetime, score: float, anomalous: bool, value: float = 10.0) -> dict:
    return {"tenant": "acme", "threshold": 0.5, "scores": [
        {"metric": metric, "timestamp": at.isoformat(), "value": value, "score": score, "anomalous": anomalous,
         "warming_up": False}]}


def test_an_anomaly_is_recorded_once_per_episode_and_alerts_trigger_then_resolve(store):
    tenant = tenant_config()
    add_customer(store, tenant)
    t0 = NOW
    for _ in range(3):  # the same point polled three times
        record_detection(store, tenant, _detection("concurrent_users", t0, 0.7, True), now=NOW)
    changes = record_detection(store, tenant, _detection("concurrent_users", t0 + timedelta(minutes=1), 0.9, True))
    assert [c.change for c in changes] == ["extended"]
    record_detection(store, tenant, _detection("concurrent_users", t0 + timedelta(minutes=2), 0.1, False))
    record_detection(store, tenant, _detection("concurrent_users", t0 + timedelta(minutes=9), 0.8, True))

    episodes = [a for _, a in store.list_anomalies("acme")]
    assert len(episodes) == 2
    closed = episodes[1]
    assert closed.detected_at == t0 and closed.resolved_at == t0 + timedelta(minutes=2)
    assert closed.anomaly_score == pytest.approx(0.9) and "score 0.90" in closed.description
    assert episodes[0].resolved_at is None
    with store.transaction() as session:
        outbox = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
    # Only "ops" subscribes to anomaly_detected: trigger, resolve of episode 1, trigger of episode 2.
    assert [(r.destination, r.action) for r in outbox] == [("ops", "trigger"), ("ops", "resolve"), ("ops", "trigger")]
    assert outbox[0].alert_key == outbox[1].alert_key != outbox[2].alert_key


def test_anomalies_are_acknowledged_only_by_their_tenant(store):
    tenant = tenant_config()
    add_customer(store, tenant)
    add_customer(store, tenant_config("other"))
    record_detection(store, tenant, _detection("concurrent_users", NOW, 0.8, True))
    anomaly_id = store.list_anomalies("acme")[0][1].id
    with pytest.raises(UnknownAnomalyError, match=f"no anomaly {anomaly_id} of tenant 'other'"):
        store.acknowledge_anomaly(anomaly_id, "mallory", tenant_id="other")
    acked = store.acknowledge_anomaly(anomaly_id, "alice", tenant_id="acme", now=NOW)
    assert (acked.acknowledged, acked.acknowledged_by) == (True, "alice")
    assert store.list_anomalies("acme", unacknowledged_only=True) == []


def test_anomaly_detection_is_refused_outside_the_plan(store):
    starter = tenant_config(plan="starter", anomaly=False, webhooks=[])
    add_customer(store, starter)
    with pytest.raises(plans.PlanLimitError, match="starter plan, which does not include anomaly detection"):
        record_detection(store, starter, _detection("concurrent_users", NOW, 0.8, True))
    assert count(store, Anomaly) == 0


def test_retention_follows_each_plan(store):
    for tenant_id, plan in (("small", "starter"), ("big", "enterprise")):
        add_customer(store, tenant_config(tenant_id, plan=plan, anomaly=False, webhooks=[]))
    rows = []
    for tenant_id in ("small", "big"):
        for age in (1, 20, 100):
            at = NOW - timedelta(days=age)
            rows.append({"customer_id": store.customer_id(tenant_id), "timestamp": at, "issued_at": at,
                         "metric_name": "concurrent_users", "predicted_value": 1.0, "horizon_minutes": 15,
                         "created_at": at})
    store.insert_predictions(rows)
    with store.transaction() as session:
        for tenant_id in ("small", "big"):
            old = NOW - timedelta(days=100)
            session.add(Anomaly(customer_id=store.customer_id(tenant_id), metric_name="open", detected_at=old,
                                last_seen_at=old, anomaly_score=1.0))
    removed = store.apply_retention(NOW)
    assert removed["small"]["predictions"] == 2  # 7 days kept
    assert removed["big"]["predictions"] == 1  # 90 days kept
    assert count(store, Prediction) == 3
    assert count(store, Anomaly) == 2  # open episodes stay, however old


DAY_MS, NOW_MS = 86_400_000, int(NOW.timestamp() * 1000)


def test_retention_deletes_a_pushed_series_once_none_of_its_samples_is_kept(store):
    add_customer(store, tenant_config(plan="starter", anomaly=False, webhooks=[]))  # 7 days kept
    store.add_pushed("acme", {"players": {(("pod", "a"),): [(NOW_MS - 8 * DAY_MS, 1.0)],
                                          (("pod", "b"),): [(NOW_MS - 8 * DAY_MS, 1.0), (NOW_MS, 2.0)]},
                              "gone": {(): [(NOW_MS - 9 * DAY_MS, 1.0)]}})
    removed = store.apply_retention(NOW)["acme"]
    assert (removed["pushed_samples"], removed["pushed_series"]) == (3, 2)  # pod a's and gone's label sets
    assert count(store, PushSeries) == 1 and store.pushed("acme", "players", 0, NOW_MS + 1) == [('pod="b"', NOW_MS, 2.0)]
    assert store.apply_retention(NOW)["acme"]["pushed_series"] == 0
    assert store.add_pushed("acme", {"gone": {(): [(NOW_MS, 3.0)]}}) == 1  # pushed again, stored afresh


def test_retention_leaves_a_series_a_push_in_flight_is_adding_samples_to(store):
    """Deleting it would cascade to the push's samples once the push commits (PostgreSQL: a push
    runs beside retention; SQLite lets one writer at a time)."""
    if store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite runs one writer at a time: no push is in flight beside retention")
    add_customer(store, tenant_config(plan="starter", anomaly=False, webhooks=[]))
    store.add_pushed("acme", {"players": {(): [(NOW_MS - 8 * DAY_MS, 1.0)]}})
    with store.transaction() as session:
        session.execute(insert(PushSample).values(series_id=session.scalar(select(PushSeries.id)), timestamp=NOW_MS,
                                                  value=2.0))
        removed = []
        retention = threading.Thread(target=lambda: removed.append(store.apply_retention(NOW)["acme"]))
        retention.start()
        retention.join(10)
        assert not retention.is_alive()  # it skipped the series rather than wait for the push
    assert (removed[0]["pushed_samples"], removed[0]["pushed_series"]) == (1, 0)
    assert store.pushed("acme", "players", 0, NOW_MS + 1) == [("", NOW_MS, 2.0)]


def test_a_push_whose_label_set_retention_deletes_under_it_is_stored_afresh(store, monkeypatch):
    """The push looked its label set up; retention then deleted the set (its only sample was past the
    plan's 7 days) and committed before the push inserted its samples: the foreign key refused them
    and the push failed (a 500 to the client). The push runs again and stores the set anew."""
    if store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite runs one writer at a time: retention cannot commit inside a push")
    add_customer(store, tenant_config(plan="starter", anomaly=False, webhooks=[]))
    store.add_pushed("acme", {"players": {(): [(NOW_MS - 8 * DAY_MS, 1.0)]}})
    insert, raced = store.insert_ignoring_duplicates, []

    def retention_first(session, model, rows, unique):
        if model is PushSample and not raced:
            raced.append(store.apply_retention(NOW)["acme"])  # its own connection, committed before the insert
        return insert(session, model, rows, unique)

    monkeypatch.setattr(store, "insert_ignoring_duplicates", retention_first)
    assert store.add_pushed("acme", {"players": {(): [(NOW_MS, 2.0)]}}) == 1
    assert (raced[0]["pushed_samples"], raced[0]["pushed_series"]) == (1, 1)
    assert store.pushed("acme", "players", 0, NOW_MS + 1) == [("", NOW_MS, 2.0)]


def test_concurrent_workers_claim_disjoint_rows(store):
    from helios_pipelines.core.ops import alerts

    tenant = tenant_config()
    add_customer(store, tenant)
    batch = [alerts.Alert("acme", "anomaly_detected", f"k{i}", "s", NOW) for i in range(10)]
    assert alerts.route(store, tenant, batch, NOW) == 10
    assert alerts.route(store, tenant, batch, NOW) == 0  # the same alerts again: deduplicated
    first = store.claim_outbox("a", NOW, timedelta(seconds=30), 6)
    second = store.claim_outbox("b", NOW, timedelta(seconds=30), 6)
    assert len(first) == 6 and len(second) == 4
    assert not {r.id for r in first} & {r.id for r in second}
    assert store.claim_outbox("c", NOW, timedelta(seconds=30), 6) == []
    # A lease that runs out (a killed worker) makes the row claimable again, counting the attempt.
    again = store.claim_outbox("c", NOW + timedelta(seconds=31), timedelta(seconds=30), 20)
    assert len(again) == 10 and {r.attempts for r in again} == {2}
    assert not store.finish_outbox(first[0].id, "a", status="delivered")  # "a" lost its lease
