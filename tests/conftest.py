"""Shared fixtures. The whole session keeps its state (MLflow, BentoML, Dagster) in a temporary
HELIOS_HOME, set before anything imports MLflow or BentoML."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="helios-test-"))
os.environ["HELIOS_HOME"] = str(_SESSION_HOME)
for key in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME", "BENTOML_HOME", "HELIOS_CONFIG_DIR", "HELIOS_AS_OF"):
    os.environ.pop(key, None)

from helios_pipelines.core.settings import apply_local_defaults  # noqa: E402

apply_local_defaults()

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helios_pipelines.core.tenants import load_tenants  # noqa: E402
from tests.harness.conftest_prometheus import prometheus_binaries, simulated_prometheus  # noqa: E402, F401
from tests.harness.store_backends import postgres_admin, store, store_url  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[1]
FIXTURE_TENANTS = REPO / "tests" / "fixtures" / "tenants"
SHARED = REPO.parent / "shared"
AS_OF = pd.Timestamp("2026-11-20T00:00:00Z")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook
def pytest_xdist_make_scheduler(config, log):
    """``make test-fast`` runs on two pytest-xdist workers with ``--dist loadscope``: a module's tests on
    one worker (its module-scoped fixtures built once), and every module that uses the trained arena
    tenant (the costliest fixture: the whole pipeline, in process) on the same worker, so only one
    worker trains it. Which modules: the ones whose text names ``trained_arena`` (read here, in the
    controller, which collects nothing); a module named but not needing it only shares that worker.
    Each worker has its own HELIOS_HOME (above), so nothing is shared between workers."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    arena_modules = {path.relative_to(REPO).as_posix() for path in (REPO / "tests").rglob("test_*.py")
                     if "trained_arena" in path.read_text()}

    class ArenaModulesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "trained_arena" if module in arena_modules else module

    return ArenaModulesTogether(config, log)


@pytest.fixture(autouse=True)
def _keep_mlflow_tracking_uri():
    """mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in the environment: a test that points
    MLflow elsewhere (production storage, a module's seeded registry) must not leave every later test
    pointing there. Unset after every test, as at the start of the session: a module-scoped fixture
    sets it up before this fixture could see the value to restore."""
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def helios_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database holding MLflow's tables and nothing else. Creating them runs MLflow's
    migrations (several seconds); a test copies this file instead (``mlflow_uri``): the same empty store."""
    from helios_pipelines.core.ml.tracking import Tracker

    path = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    Tracker(f"sqlite:///{path}").client.search_experiments(max_results=1)  # the first use creates the tables
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # set by the Tracker; this template is no test's registry
    return path


@pytest.fixture
def mlflow_uri(empty_mlflow_db, tmp_path) -> str:
    """A fresh, empty MLflow registry of this test's own (SQLite under tmp_path)."""
    database = tmp_path / "mlflow.db"
    shutil.copy(empty_mlflow_db, database)
    return f"sqlite:///{database}"


@pytest.fixture(scope="session")
def demo_registry():
    return load_tenants()


@pytest.fixture(scope="session")
def arena():
    return load_tenants(FIXTURE_TENANTS).get("arena")


def pipeline_resources(build_bento: bool = False) -> dict:
    from helios_pipelines.defs.resources import (
        BentoPackagerResource,
        MetricsSourceResource,
        MLflowResource,
        OperatorVerdictsResource,
        TenantRegistryResource,
    )

    return {
        "tenants": TenantRegistryResource(config_dir=str(FIXTURE_TENANTS)),
        "metrics_source": MetricsSourceResource(as_of=AS_OF.isoformat()),
        "mlflow_tracking": MLflowResource(),
        "packager": BentoPackagerResource(build_bento=build_bento),
        "operator_verdicts": OperatorVerdictsResource(),
    }


@pytest.fixture(scope="session")
def dagster_instance():
    from dagster import DagsterInstance

    from helios_pipelines.defs.partitions import tenant_partitions

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(tenant_partitions.name, ["arena", "broken"])
    return instance


@pytest.fixture(scope="session")
def trained_arena(dagster_instance):
    """The whole pipeline, materialised in process for the arena tenant (Bento built too)."""
    from dagster import materialize

    from helios_pipelines.defs.assets import ALL_ASSETS

    return materialize(
        ALL_ASSETS,
        partition_key="arena",
        resources=pipeline_resources(build_bento=True),
        instance=dagster_instance,
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def embedded_store(trained_arena):
    """The embedded store, migrated and holding the fixture tenants (as `helios tenants sync` does)."""
    from helios_pipelines.core.ops.migrations import upgrade
    from helios_pipelines.core.ops.store import Store

    embedded = Store()
    upgrade(embedded.url)
    embedded.sync_customers(load_tenants(FIXTURE_TENANTS))
    return embedded
