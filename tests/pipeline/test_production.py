"""The production setup on real services: Dagster's instance from deploy/dagster/dagster.yaml on the
machine's PostgreSQL (a fresh database), asset values through the GCS IO manager and MLflow artifacts
into a bucket of a local GCS emulator (gcp-storage-emulator), MLflow tracking on PostgreSQL."""

from __future__ import annotations

import shutil
import socket
import uuid

import numpy as np
import pandas as pd
import pytest
from dagster import AssetIn, DagsterInstance, asset, materialize
from sqlalchemy import text
from sqlalchemy.engine import make_url

from helios_pipelines.core.ml.models.base import META_FILE
from helios_pipelines.core.ml.models.seasonal_naive import SeasonalNaive
from helios_pipelines.definitions import build_definitions
from helios_pipelines.defs.assets import raw_metrics, tenant_config
from helios_pipelines.defs.partitions import tenant_partitions
from helios_pipelines.defs.production import (
    GCSArtifactsMLflowResource,
    ProductionConfigError,
    production_resources,
)
from tests.conftest import AS_OF, FIXTURE_TENANTS, REPO, pipeline_resources
from tests.harness.store_backends import POSTGRES_URL

BUCKET = "helios-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_emulator():
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        patch.setenv("GOOGLE_CLOUD_PROJECT", "helios-test")
        yield
    server.stop()


@pytest.fixture
def postgres_database(postgres_admin):
    """A fresh, empty database on the machine's PostgreSQL; dropped afterwards."""
    name = f"helios_prod_{uuid.uuid4().hex[:10]}"
    autocommit = postgres_admin.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield name
    with autocommit.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def _url(database: str) -> str:
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture
def production_instance(postgres_database, tmp_path, monkeypatch):
    """A DagsterInstance from the production dagster.yaml, pointed at the fresh database."""
    parts = make_url(_url(postgres_database))
    for key, value in {"HOST": parts.host, "PORT": str(parts.port or 5432), "USER": parts.username,
                       "PASSWORD": parts.password or "trust-auth-ignores-it", "DB": postgres_database}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
    shutil.copy(REPO / "deploy" / "dagster" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    yield instance
    instance.dispose()


def test_production_instance_queues_runs_with_one_per_tenant(production_instance):
    coordinator = production_instance.run_coordinator
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    limits = coordinator.get_run_queue_config().tag_concurrency_limits
    assert limits == [{"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    assert type(production_instance.run_storage).__name__ == "PostgresRunStorage"


@asset(ins={"raw_metrics": AssetIn()}, partitions_def=tenant_partitions)
def raw_metrics_rows(raw_metrics: pd.DataFrame) -> int:
    """Reads raw_metrics back through the IO manager: the other half of the round trip."""
    return len(raw_metrics)


def test_an_asset_materialises_into_postgres_and_round_trips_through_gcs(production_instance, gcs_emulator):
    from google.cloud import storage

    production_instance.add_dynamic_partitions(tenant_partitions.name, ["arena"])
    io_manager = production_resources({"GCS_BUCKET": BUCKET, "MLFLOW_TRACKING_URI": "postgresql://unused"})["io_manager"]
    resources = pipeline_resources() | {"io_manager": io_manager}
    written = materialize([tenant_config, raw_metrics], partition_key="arena", resources=resources,
                          instance=production_instance)
    assert written.success
    blobs = sorted(b.name for b in storage.Client().list_blobs(BUCKET, prefix="dagster/"))
    assert blobs == ["dagster/raw_metrics/arena", "dagster/tenant_config/arena"]
    read = materialize([tenant_config, raw_metrics, raw_metrics_rows], selection=[raw_metrics_rows], partition_key="arena",
                       resources=resources, instance=production_instance)
    assert read.output_for_node("raw_metrics_rows") == 8 * 288
    # Dagster's records are in PostgreSQL: a fresh instance on the same database sees both runs.
    runs = production_instance.get_runs()
    assert {r.run_id for r in runs} == {written.run_id, read.run_id}
    latest = production_instance.get_latest_materialization_event(raw_metrics.key)
    assert latest is not None and latest.run_id == written.run_id


def test_mlflow_tracks_in_postgres_and_keeps_artifacts_in_the_bucket(postgres_database, gcs_emulator, tmp_path,
                                                                       monkeypatch):
    from google.cloud import storage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", _url(postgres_database))  # read when Dagster initialises the resource
    configured = production_resources({"GCS_BUCKET": BUCKET, "MLFLOW_TRACKING_URI": _url(postgres_database)})
    resource = configured["mlflow_tracking"].process_config_and_initialize()
    assert isinstance(resource, GCSArtifactsMLflowResource)
    tracker = resource.tracker()
    index = pd.date_range(AS_OF - pd.Timedelta("3D"), AS_OF, freq="1h")
    model = SeasonalNaive(step="1h", max_horizon=3, metric="concurrent_users").fit(pd.Series(np.arange(len(index)), index=index))
    with tracker.start_run("arena", "forecaster concurrent_users"):
        version = tracker.log_model(model, "arena_concurrent_users_forecaster")
    experiment = tracker.client.get_experiment_by_name("helios/arena")
    assert experiment.artifact_location == f"gs://{BUCKET}/mlflow/arena"
    assert any(b.name.startswith("mlflow/arena/") for b in storage.Client().list_blobs(BUCKET, prefix="mlflow/"))
    restored = tracker.download_model_dir(version.name, version.version, tmp_path)
    assert (restored / META_FILE).exists()  # the Helios model came back out of the bucket


def test_the_switch_selects_production_and_refuses_an_incomplete_environment():
    local = build_definitions({"HELIOS_CONFIG_DIR": str(FIXTURE_TENANTS)})
    assert "io_manager" not in local.resources
    production = build_definitions({"HELIOS_CONFIG_DIR": str(FIXTURE_TENANTS), "HELIOS_ENV": "production",
                                    "GCS_BUCKET": BUCKET, "MLFLOW_TRACKING_URI": "postgresql://db/mlflow"})
    assert type(production.resources["io_manager"]).__name__ == "GCSPickleIOManager"
    assert production.resources["mlflow_tracking"].artifact_root == f"gs://{BUCKET}/mlflow"
    with pytest.raises(ProductionConfigError, match="GCS_BUCKET"):
        build_definitions({"HELIOS_CONFIG_DIR": str(FIXTURE_TENANTS), "HELIOS_ENV": "production"})
    with pytest.raises(ValueError, match="HELIOS_ENV"):
        build_definitions({"HELIOS_CONFIG_DIR": str(FIXTURE_TENANTS), "HELIOS_ENV": "staging"})


def test_database_urls_reach_the_resources_by_variable_name_never_by_value():
    password_bearing = "postgresql://helios:s3cret@db/mlflow"
    env = {"HELIOS_CONFIG_DIR": str(FIXTURE_TENANTS), "HELIOS_ENV": "production", "GCS_BUCKET": BUCKET,
           "MLFLOW_TRACKING_URI": password_bearing, "HELIOS_DATABASE_URL": "postgresql://helios:s3cret@db/helios"}
    resources = build_definitions(env).resources
    shown = {name: resource.model_dump() for name, resource in resources.items() if hasattr(resource, "model_dump")}
    assert "s3cret" not in repr(shown)
    assert shown["mlflow_tracking"]["tracking_uri"] == "MLFLOW_TRACKING_URI"
    assert shown["live_accuracy"]["database_url"] == "HELIOS_DATABASE_URL"
