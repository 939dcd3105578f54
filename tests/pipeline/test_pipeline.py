"""In-process materialisation of every asset for one partition, against a temporary MLflow."""


import pandas as pd
import pytest
from dagster import AssetKey, materialize

from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, experiment_name
from helios_pipelines.defs.assets import ALL_ASSETS
from tests.conftest import AS_OF, FIXTURE_TENANTS, pipeline_resources

ASSETS = ["tenant_config", "raw_metrics", "validated_metrics", "features", "forecast_candidates", "anomaly_detector",
          "capacity_model", "champions", "tenant_bento"]


def test_every_asset_materialises_for_the_partition(trained_arena):
    assert trained_arena.success
    materialized = {e.asset_key for e in trained_arena.get_asset_materialization_events()}
    assert materialized == {AssetKey(name) for name in ASSETS}
    checks = trained_arena.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {"time_and_history", "coverage", "value_ranges"}
    assert all(c.passed for c in checks if c.check_name != "value_ranges")


def test_asset_metadata_shows_the_numbers_a_user_wants(trained_arena):
    by_key = {e.asset_key.path[-1]: e.materialization.metadata for e in trained_arena.get_asset_materialization_events()}
    assert by_key["raw_metrics"]["rows"].value == 8 * 288
    assert by_key["raw_metrics"]["min_coverage"].value > 0.95
    assert "concurrent_users" in by_key["forecast_candidates"]["backtest"].value
    assert by_key["champions"]["promoted"].value >= 2


def test_mlflow_holds_the_experiment_models_aliases_and_plot(trained_arena):
    tracker = Tracker()
    experiment = tracker.client.get_experiment_by_name(experiment_name("arena"))
    assert experiment is not None
    assert tracker.registered_models("arena") == [
        "arena_anomaly_detector", "arena_capacity_planner", "arena_concurrent_users_forecaster",
    ]
    champion = tracker.version_by_alias("arena_concurrent_users_forecaster", CHAMPION)
    assert champion is not None
    tags = champion.tags
    assert tags.backtest["mase"] < tags.baseline_backtest["mase"] or tags.kind == "seasonal_naive"
    assert {"data_start", "data_end", "source", "candidates", "promotion"} <= set(tags.to_tags())
    assert tags.promotion["promoted"] is True
    artifacts = [a.path for a in tracker.client.list_artifacts(champion.run_id)]
    assert "forecast_vs_actual.png" in artifacts
    runs = tracker.client.search_runs([experiment.experiment_id])
    kinds = {r.data.tags.get("kind") for r in runs}
    assert {"seasonal_naive", "prophet", "helios"} <= kinds


@pytest.mark.slow  # trains a tenant's models more than once: the full tier (make test-fast skips it)
def test_a_challenger_that_does_not_beat_the_champion_is_not_promoted(trained_arena, dagster_instance):
    tracker = Tracker()
    name = "arena_concurrent_users_forecaster"
    before = tracker.version_by_alias(name, CHAMPION).version
    # Same data, same seeds, refitted on purpose (the fingerprint would skip it): the new challenger
    # only ties the champion, which is not beating it.
    result = materialize(
        ALL_ASSETS,
        selection=["forecast_candidates", "anomaly_detector", "capacity_model", "champions"],
        partition_key="arena",
        resources=pipeline_resources(),
        instance=dagster_instance,
        run_config={"ops": {"forecast_candidates": {"config": {"force": True}}}},
    )
    assert result.success
    decisions = {d["name"]: d for d in result.output_for_node("champions")}
    assert decisions[name]["promoted"] is False
    assert decisions[name]["champion_before"] == before
    assert tracker.version_by_alias(name, CHAMPION).version == before
    assert tracker.version_by_alias(name, "challenger").version != before


def test_a_blocking_data_failure_stops_that_tenant_only(dagster_instance, trained_arena):
    result = materialize(
        ALL_ASSETS, partition_key="broken", resources=pipeline_resources(), instance=dagster_instance, raise_on_error=False
    )
    assert not result.success
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"tenant_config", "raw_metrics", "validated_metrics"}
    [coverage] = [c for c in result.get_asset_check_evaluations() if c.check_name == "coverage"]
    assert not coverage.passed
    assert "request_rate" in coverage.description and "FAILED (blocking)" in coverage.description
    assert trained_arena.success  # the other tenant's run is untouched


def test_a_run_trains_with_the_config_it_snapshotted_even_if_the_yaml_changes_mid_run(tmp_path, dagster_instance):
    import shutil

    from helios_pipelines.defs.resources import TenantRegistryResource

    config_dir = tmp_path / "tenants"
    shutil.copytree(FIXTURE_TENANTS, config_dir)
    resources = pipeline_resources() | {"tenants": TenantRegistryResource(config_dir=str(config_dir))}
    snapshot = materialize(ALL_ASSETS, selection=["tenant_config"], partition_key="arena",
                           resources=resources, instance=dagster_instance)
    assert snapshot.output_for_node("tenant_config").training.history_days == 8
    yaml_file = config_dir / "arena.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("history_days: 8", "history_days: 3"))
    # The rest of the run reads the snapshot: 8 days at 5 minutes is 8 * 288 rows, not 3 * 288.
    fetched = materialize(ALL_ASSETS, selection=["raw_metrics"], partition_key="arena",
                          resources=resources, instance=dagster_instance)
    assert len(fetched.output_for_node("raw_metrics")) == 8 * 288


@pytest.mark.slow  # trains a tenant's models more than once: the full tier (make test-fast skips it)
def test_a_retrain_on_unchanged_data_and_config_skips_the_fit_and_a_config_change_refits(tmp_path, dagster_instance):
    """#20.2: the champion's version carries a fingerprint of its training; a retrain that matches it
    keeps the champion without a fit and says so; a forecast setting changed refits the forecaster only."""
    from helios_pipelines.defs.partitions import tenant_partitions
    from helios_pipelines.defs.resources import TenantRegistryResource

    tenant = "arena-retrain"
    config_dir = tmp_path / "tenants"
    config_dir.mkdir()
    yaml_file = config_dir / f"{tenant}.yaml"
    yaml_file.write_text((FIXTURE_TENANTS / "arena.yaml").read_text().replace("id: arena", f"id: {tenant}"))
    dagster_instance.add_dynamic_partitions(tenant_partitions.name, [tenant])
    resources = pipeline_resources() | {"tenants": TenantRegistryResource(config_dir=str(config_dir))}
    training = [a for a in ASSETS if a != "tenant_bento"]

    def train():
        result = materialize(ALL_ASSETS, selection=training, partition_key=tenant, resources=resources,
                             instance=dagster_instance)
        assert result.success
        return {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}

    forecaster, detector = f"{tenant}_concurrent_users_forecaster", f"{tenant}_anomaly_detector"
    tracker = Tracker()
    first = train()
    assert first["forecast_candidates"]["skipped"].value == 0
    fingerprint = tracker.version_by_alias(forecaster, CHAMPION).tags.fingerprint
    assert set(fingerprint) == {"data", "config", "code"}

    second = train()
    assert second["forecast_candidates"]["skipped"].value == 1
    said = second["forecast_candidates"]["skipped_metrics"].value["concurrent_users"]
    assert "fingerprint matches champion v1" in said and "fit skipped" in said
    assert "fit skipped" in second["anomaly_detector"]["fit"].value
    assert "fit skipped" in second["champions"]["decisions"].value
    assert [v.version for v in tracker.versions(forecaster)] == ["1"]  # nothing fitted, nothing registered
    assert [v.version for v in tracker.versions(detector)] == ["1"]

    yaml_file.write_text(yaml_file.read_text().replace("backtest_folds: 2", "backtest_folds: 1"))
    third = train()
    assert third["forecast_candidates"]["skipped"].value == 0
    assert "config changed since champion v1" in third["forecast_candidates"]["backtest"].value
    assert [v.version for v in tracker.versions(forecaster)] == ["1", "2"]
    assert tracker.get_version(forecaster, "2").tags.fingerprint["config"] != fingerprint["config"]
    # the detector reads no backtest setting: still its champion, still not refitted
    assert "fit skipped" in third["anomaly_detector"]["fit"].value
    assert [v.version for v in tracker.versions(detector)] == ["1"]


@pytest.mark.slow  # trains a tenant's models twice: the full tier (make test-fast skips it)
def test_a_scheduled_retrain_on_a_moved_window_warm_starts_the_champion_and_the_run_says_so(tmp_path, dagster_instance):
    """#20.2: the next scheduled run (its window six hours later, configuration and code unchanged)
    continues the champion's Helios boosters; the asset's metadata and the new version say from which
    champion version, per fold and for the refit, and how many boosting rounds it saved."""
    from helios_pipelines.defs.partitions import tenant_partitions
    from helios_pipelines.defs.resources import MetricsSourceResource, TenantRegistryResource

    tenant = "arena-warm"
    config_dir = tmp_path / "tenants"
    config_dir.mkdir()
    (config_dir / f"{tenant}.yaml").write_text((FIXTURE_TENANTS / "arena.yaml").read_text().replace("id: arena", f"id: {tenant}"))
    dagster_instance.add_dynamic_partitions(tenant_partitions.name, [tenant])
    training = [a for a in ASSETS if a != "tenant_bento"]

    def train(as_of):
        resources = pipeline_resources() | {"tenants": TenantRegistryResource(config_dir=str(config_dir)),
                                            "metrics_source": MetricsSourceResource(as_of=as_of.isoformat())}
        result = materialize(ALL_ASSETS, selection=training, partition_key=tenant, resources=resources,
                             instance=dagster_instance)
        assert result.success
        return {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}

    forecaster = f"{tenant}_concurrent_users_forecaster"
    tracker = Tracker()
    first = train(AS_OF)
    assert first["forecast_candidates"]["warm_started"].value == 0
    champion = tracker.version_by_alias(forecaster, CHAMPION)
    assert champion.tags.kind == "helios"

    moved = train(AS_OF + pd.Timedelta("6h"))
    assert moved["forecast_candidates"]["warm_started"].value == 1
    record = moved["forecast_candidates"]["warm_start"].value["concurrent_users"]
    assert record["kind"] == "helios" and record["champion_version"] == champion.version
    # arena: two folds; the champion saw the first fold's test data, so that fold is fitted cold
    assert record["folds"][0].startswith(f"cold: champion v{champion.version} refused")
    assert record["folds"][1] == "continued fold 1" and record["refit"] == f"continued champion v{champion.version}"
    assert record["saved"] == "1500 of 3000 boosting rounds (50%)"
    assert f"warm start of helios from champion v{champion.version}" in moved["forecast_candidates"]["backtest"].value
    newest = tracker.versions(forecaster)[-1]
    assert newest.version != champion.version and newest.tags.warm_start == record
