"""The operator's path for real: `dagster dev` (webserver and daemon) on loopback, a backfill of two
tenants launched through the GraphQL API, both runs executed by the daemon's queue and successful."""

from __future__ import annotations

import os

import pytest

from tests.conftest import AS_OF, REPO
from tests.harness.dagster_dev import DagsterDev, write_instance_config

pytestmark = pytest.mark.slow

TENANTS = ["skirmish", "storefront"]
CONFIG_DIR = REPO / "tests" / "fixtures" / "tenants_backfill"
# Daemon ticks (about 30 s each) plus two runs side by side of about a minute each on two cores.
BACKFILL_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    """`dagster dev` with its own DAGSTER_HOME and HELIOS_HOME; the tenant partitions exist before it
    starts, so the registry sensor has nothing to onboard and the backfill's runs are the only ones."""
    from dagster import DagsterInstance

    home = tmp_path_factory.mktemp("helios-home")
    write_instance_config(home / "dagster", max_concurrent_runs=2)
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        instance.add_dynamic_partitions("tenants", TENANTS)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HELIOS_DATABASE_URL")} | {
        "HELIOS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "BENTOML_HOME": str(home / "bentoml"),
        "HELIOS_CONFIG_DIR": str(CONFIG_DIR),
        "HELIOS_AS_OF": AS_OF.isoformat(),
        "HELIOS_BUILD_BENTO": "0",
        "HELIOS_ENV": "local",
        # One process per run: a process per step would triple the runs' time on two cores.
        "HELIOS_EXECUTOR": "in_process",
    }
    with DagsterDev(env, home / "dagster-dev.log") as server:
        yield server, home


def test_a_backfill_of_two_tenants_launched_over_graphql_succeeds(dagster_dev):
    from helios_pipelines.core.ml.tracking import CHAMPION, Tracker
    from helios_pipelines.defs.assets import ALL_ASSETS

    server, home = dagster_dev
    backfill = server.launch_backfill({
        "assetSelection": [{"path": list(a.key.path)} for a in ALL_ASSETS],
        "partitionNames": TENANTS,
        "title": "two tenants",
    })
    status, runs = server.wait_for_backfill(backfill, BACKFILL_TIMEOUT_S)

    assert status == "COMPLETED_SUCCESS", (status, server.log_tail())
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], runs
    partitions = {t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"}
    assert partitions == set(TENANTS)
    # The runs did the work: each tenant's forecaster has a champion in this server's own MLflow.
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}")
    for tenant, metric in (("skirmish", "concurrent_users"), ("storefront", "request_rate")):
        assert tracker.version_by_alias(f"{tenant}_{metric}_forecaster", CHAMPION) is not None
