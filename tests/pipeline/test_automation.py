"""Schedules and sensors, evaluated with Dagster's context builders against an ephemeral instance and
a temporary MLflow registry (seasonal-naive champions logged by the Tracker, no pipeline run)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from helios_pipelines.core.ml import review
from helios_pipelines.core.ml.drift import PSI_THRESHOLD, Profile, decayed_metrics, drifted_metrics
from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, VersionTags, registered_model_name
from helios_pipelines.core.tenants import load_tenants
from helios_pipelines.defs.automation import (
    LiveAccuracyResource,
    champion_change_sensor,
    retraining_need_sensor,
    retraining_schedules,
    schedule_name,
    tenant_registry_sensor,
)
from helios_pipelines.defs.partitions import tenant_partitions
from helios_pipelines.defs.resources import MetricsSourceResource, MLflowResource, TenantRegistryResource
from serving.packaging import bento_model_name, bundle_version, champion_pins

AS_OF = pd.Timestamp("2026-11-20T00:00:00Z")
# Two small tenants with nothing but a forecast metric, so a seasonal-naive champion is all they need.
TENANTS = {
    "shop": ("15 4 * * 1", "ecommerce", "request_rate", "http_requests_total", "counter"),
    "duel": ("0 */6 * * *", "gaming", "concurrent_users", "game_server_active_players", "gauge"),
}


@pytest.fixture
def config_dir(tmp_path):
    directory = tmp_path / "tenants"
    directory.mkdir()
    for tenant_id, (cron, profile, metric, series, kind) in TENANTS.items():
        (directory / f"{tenant_id}.yaml").write_text(
            f"name: {tenant_id.title()}\nstep: 5min\n"
            f"source: {{type: simulator, seed: 4, profile: {profile}, gap_share: 0, anomalies_per_week: 0}}\n"
            f"metrics:\n  {metric}: {{series: {series}, kind: {kind}, forecast: {{horizons: [1h]}}}}\n"
            f'training: {{history_days: 4, backtest_folds: 1, cron: "{cron}"}}\n'
        )
    return directory


@pytest.fixture
def tracker(mlflow_uri) -> Tracker:
    return Tracker(mlflow_uri)


@pytest.fixture
def instance():
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(tenant_partitions.name, list(TENANTS))
    return instance


def resources(config_dir, tracker, live_accuracy: LiveAccuracyResource | None = None) -> dict:
    return {
        "tenants": TenantRegistryResource(config_dir=str(config_dir)),
        "metrics_source": MetricsSourceResource(as_of=AS_OF.isoformat()),
        "mlflow_tracking": MLflowResource(tracking_uri=tracker.tracking_uri),
        "live_accuracy": live_accuracy or LiveAccuracyResource(),
    }


def log_champion(tracker: Tracker, tenant_id: str, start: pd.Timestamp, end: pd.Timestamp, mase: float = 0.8) -> str:
    metric = TENANTS[tenant_id][2]
    index = pd.date_range(AS_OF - pd.Timedelta("3D"), AS_OF, freq="5min")
    model = SeasonalNaive(step="5min", max_horizon=12, metric=metric).fit(pd.Series(np.arange(len(index)), index=index))
    name = registered_model_name(tenant_id, "forecaster", metric)
    with tracker.start_run(tenant_id, f"forecaster {metric}"):
        version = tracker.log_model(model, name, tags=VersionTags(
            data_start=str(start), data_end=str(end), source="simulator", backtest={"mase": mase},
        ))
    tracker.set_alias(name, CHAMPION, version.version)
    return version.version


# ---- drift functions ------------------------------------------------------------------------------
def test_psi_is_small_for_the_same_distribution_and_large_for_a_shifted_one():
    rng = np.random.default_rng(0)
    profile = Profile.of(rng.normal(100, 10, 5000))
    assert profile.psi(rng.normal(100, 10, 1000)) < 0.05
    assert profile.psi(rng.normal(115, 10, 1000)) > PSI_THRESHOLD
    assert Profile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    # A constant training window still profiles, and values off its single point count as drift.
    assert Profile.of(np.full(100, 3.0)).psi(np.full(50, 7.0)) > PSI_THRESHOLD
    assert np.isnan(profile.psi([np.nan, np.nan]))


def test_drift_and_decay_name_only_the_metrics_that_moved():
    rng = np.random.default_rng(1)
    reference = {"a": Profile.of(rng.normal(0, 1, 2000)), "b": Profile.of(rng.normal(0, 1, 2000))}
    recent = pd.DataFrame({"a": rng.normal(0, 1, 300), "b": rng.normal(3, 1, 300)})
    assert list(drifted_metrics(reference, recent)) == ["b"]
    assert decayed_metrics({"a": 1.0, "b": 2.0, "c": 9.0}, {"a": 0.9, "b": 1.0}) == {"b": (2.0, 1.0)}


# ---- schedules ------------------------------------------------------------------------------------
def test_one_retraining_schedule_per_tenant_on_its_own_cron(config_dir):
    schedules = {s.name: s for s in retraining_schedules(load_tenants(config_dir))}
    assert {name: s.cron_schedule for name, s in schedules.items()} == {
        schedule_name(t): cron for t, (cron, *_) in TENANTS.items()
    }
    shop = schedules[schedule_name("shop")]
    assert shop.execution_timezone == "UTC"
    with instance_for_test() as instance:  # a schedule context needs a persistent instance
        instance.add_dynamic_partitions(tenant_partitions.name, ["shop"])
        request = shop(build_schedule_context(instance=instance))
        assert request.partition_key == "shop" and request.tags["helios/trigger"] == "schedule"
        instance.delete_dynamic_partition(tenant_partitions.name, "shop")
        skipped = shop(build_schedule_context(instance=instance))
    assert isinstance(skipped, SkipReason) and "not a partition" in skipped.skip_message


# ---- the registry sensor --------------------------------------------------------------------------
def test_registry_sensor_adds_new_tenants_and_onboards_them(config_dir, tracker):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(tenant_partitions.name, ["gone"])
    result = tenant_registry_sensor(build_sensor_context(instance=instance, resources=resources(config_dir, tracker)))
    assert sorted(r.partition_key for r in result.run_requests) == ["duel", "shop"]
    added, removed = result.dynamic_partitions_requests
    assert sorted(added.partition_keys) == ["duel", "shop"] and removed.partition_keys == ["gone"]


# ---- rebuilding the Bento ---------------------------------------------------------------------------
def test_bento_sensor_repacks_when_a_champion_changes_and_only_then(config_dir, tracker, instance):
    window = (AS_OF - pd.Timedelta("4D"), AS_OF)
    log_champion(tracker, "shop", *window)
    context = build_sensor_context(instance=instance, resources=resources(config_dir, tracker))
    first = champion_change_sensor(context)
    assert [r.partition_key for r in first.run_requests] == ["shop"]  # duel has no champion: nothing to pack
    cursor = json.loads(first.cursor)
    assert cursor == {"shop": {registered_model_name("shop", "forecaster", "request_rate"): "1"}}

    # The run packs it; the sensor then sees the packed model matches the champions.
    tenant = load_tenants(config_dir).get("shop")
    packed = f"{bento_model_name('shop')}:{bundle_version(champion_pins(tenant, tracker), tenant)}"
    instance.report_runless_asset_event(AssetMaterialization("tenant_bento", partition="shop", metadata={"bento_model": packed}))
    context = build_sensor_context(instance=instance, resources=resources(config_dir, tracker))
    assert champion_change_sensor(context).run_requests == []

    # A reviewer promotes a new version: the next evaluation repacks, from the cursor's point of view too.
    name = registered_model_name("shop", "forecaster", "request_rate")
    v2 = log_champion(tracker, "shop", *window)
    tracker.set_alias(name, CHAMPION, "1")
    review.promote(tracker, name, by="ana", reason="test", version=v2)
    context = build_sensor_context(instance=instance, resources=resources(config_dir, tracker), cursor=first.cursor)
    again = champion_change_sensor(context)
    assert [r.partition_key for r in again.run_requests] == ["shop"]
    assert again.run_requests[0].run_key != first.run_requests[0].run_key
    assert json.loads(again.cursor)["shop"][name] == v2


def test_bento_sensor_repacks_a_champion_promoted_again_after_a_rollback(config_dir, tracker, instance):
    """v1 trained and packed, v2 promoted, rolled back to v1, v2 promoted again: each move is a new
    request. Dagster never launches a run key its sensor used before, so asking for v2's pack under
    the key of its first packing would leave v1 served while v2 is the champion."""
    window = (AS_OF - pd.Timedelta("4D"), AS_OF)
    name = registered_model_name("shop", "forecaster", "request_rate")
    v1 = log_champion(tracker, "shop", *window)
    v2 = log_champion(tracker, "shop", *window)
    tenant = load_tenants(config_dir).get("shop")
    cursor, keys = None, []
    for move in (None, "promote", "rollback", "promote"):  # trained (v2 logged, v1 champion), then the moves
        if move == "promote":
            review.promote(tracker, name, by="ana", reason="test", version=v2)
        elif move == "rollback":
            review.rollback(tracker, name, by="ana", reason="test")
        else:
            tracker.set_alias(name, CHAMPION, v1)
        context = build_sensor_context(instance=instance, resources=resources(config_dir, tracker), cursor=cursor)
        result = champion_change_sensor(context)
        cursor = result.cursor
        [request] = result.run_requests
        keys.append(request.run_key)
        packed = f"{bento_model_name('shop')}:{bundle_version(champion_pins(tenant, tracker), tenant)}"
        instance.report_runless_asset_event(AssetMaterialization("tenant_bento", partition="shop", metadata={"bento_model": packed}))

    assert len(set(keys)) == len(keys), keys


# ---- retraining on drift or decay ------------------------------------------------------------------
def test_retraining_sensor_is_quiet_while_the_recent_day_looks_like_the_training_window(config_dir, tracker, instance):
    log_champion(tracker, "shop", AS_OF - pd.Timedelta("10D"), AS_OF - pd.Timedelta("3D"))
    result = retraining_need_sensor(build_sensor_context(instance=instance, resources=resources(config_dir, tracker)))
    assert result.run_requests == []
    # The training window's profile is kept, keyed by champion version, for the next evaluation.
    assert list(json.loads(result.cursor)["shop"]) == ["request_rate@1"]


def test_retraining_sensor_asks_for_a_run_when_the_data_drifted(config_dir, tracker, instance):
    # Trained on four night hours only: a whole day of traffic is far outside that distribution.
    night = AS_OF - pd.Timedelta("2D") + pd.Timedelta("2h")
    log_champion(tracker, "shop", night, night + pd.Timedelta("4h"))
    result = retraining_need_sensor(build_sensor_context(instance=instance, resources=resources(config_dir, tracker)))
    (request,) = result.run_requests
    assert request.partition_key == "shop" and request.job_name is None
    assert "request_rate drifted" in request.tags["helios/reasons"]
    # Same champion, same day: the same run key, so Dagster launches it once.
    again = retraining_need_sensor(build_sensor_context(instance=instance, resources=resources(config_dir, tracker),
                                                        cursor=result.cursor))
    assert again.run_requests[0].run_key == request.run_key


def test_live_accuracy_decayed_by_served_predictions_makes_the_sensor_ask_for_a_retrain(
        config_dir, tracker, instance, tmp_path, monkeypatch):
    """The whole loop on the local defaults: the served champion's forecasts are recorded by the
    service's watch into the embedded store, actuals joined from the source, and the sensor (with no
    database URL configured) reads the live MASE there. Nothing is stubbed: the decay is the world
    changing under a weekly seasonal-naive champion. A regional outage (players / 3) runs for the last
    2.5 days, so its forecast (the value a week earlier) misses by two thirds of the traffic, while the
    day-before baseline MASE is scaled by is inside the outage too and stays close."""
    from helios_pipelines.core.ops.feedback import PredictionRecorder, live_accuracy
    from helios_pipelines.core.ops.migrations import upgrade
    from helios_pipelines.core.ops.store import Store
    from helios_pipelines.core.sources import make_source
    from helios_pipelines.core.sources.simulator import inject_incident
    from serving.packaging import assemble_bundle
    from serving.runtime import TenantRuntime
    from serving.watch import TenantWatch

    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))  # the embedded store and the incidents live here
    registry = load_tenants(config_dir)
    duel = registry.get("duel")
    inject_incident(duel, "outage", AS_OF - pd.Timedelta("2D12h"), minutes=3 * 24 * 60, magnitude=3.0)
    source = make_source(duel)
    history = source.fetch(AS_OF - pd.Timedelta("12D"), AS_OF - pd.Timedelta("3D"))["concurrent_users"]
    model = SeasonalNaive(step="5min", max_horizon=12, metric="concurrent_users", season="7D").fit(history)
    name = registered_model_name("duel", "forecaster", "concurrent_users")
    with tracker.start_run("duel", "forecaster concurrent_users"):
        version = tracker.log_model(model, name, tags=VersionTags(data_start=str(history.index[0]),
                                                                  data_end=str(history.index[-1]),
                                                                  source="simulator", backtest={"mase": 0.8}))
    tracker.set_alias(name, CHAMPION, version.version)
    bundle = assemble_bundle(duel, champion_pins(duel, tracker), tracker, tmp_path / "bundle")

    store = Store()  # the embedded store: no HELIOS_DATABASE_URL, as in the local setup
    upgrade(store.url)
    store.sync_customers(registry)
    runtime = TenantRuntime(bundle, source=source)
    with PredictionRecorder(store, flush_interval=0.05) as recorder:
        watch = TenantWatch(runtime, store, recorder, join_every=pd.Timedelta("1h").to_pytimedelta())
        for hour in range(24, -1, -1):  # the service's watch over the last day, looked at hourly
            watch.tick(AS_OF - pd.Timedelta(hours=hour))
            recorder.flush()
        watch.tick(AS_OF + pd.Timedelta("1h"))  # joins the actuals of the last targets
    (row,) = live_accuracy(store, "duel", now=AS_OF.to_pydatetime())
    assert row.metric == "concurrent_users" and row.horizon_minutes == 60 and row.count >= 20
    assert row.mase > 1.5 * 0.8  # decayed: the sensor's tolerance is 1.5 times the backtest
    store.close()

    context = build_sensor_context(instance=instance, resources=resources(config_dir, tracker))
    requests = {r.partition_key: r for r in retraining_need_sensor(context).run_requests}
    assert set(requests) == {"duel"}
    assert f"concurrent_users live MASE {row.mase:.2f} vs backtest 0.80" in requests["duel"].tags["helios/reasons"]


def test_live_accuracy_of_a_tenant_nothing_was_served_for_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("HELIOS_HOME", str(tmp_path / "home"))
    assert LiveAccuracyResource().live_mase("shop", AS_OF) == {}


def test_sensors_skip_tenants_that_are_not_partitions(config_dir, tracker):
    log_champion(tracker, "shop", AS_OF - pd.Timedelta("8D"), AS_OF - pd.Timedelta("1D"))
    empty = DagsterInstance.ephemeral()
    context = build_sensor_context(instance=empty, resources=resources(config_dir, tracker))
    assert champion_change_sensor(context).run_requests == []
    result = retraining_need_sensor(build_sensor_context(instance=empty, resources=resources(config_dir, tracker)))
    assert not isinstance(result, SkipReason) and result.run_requests == []
