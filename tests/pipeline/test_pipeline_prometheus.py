"""A tenant whose history lives in a real Prometheus trains and promotes through the same assets."""

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from dagster import materialize

from helios_pipelines.cli import main
from helios_pipelines.core.ml.tracking import CHAMPION, Tracker
from helios_pipelines.defs.assets import ALL_ASSETS
from helios_pipelines.defs.partitions import tenant_partitions
from helios_pipelines.defs.resources import TenantRegistryResource
from tests.conftest import AS_OF, FIXTURE_TENANTS, pipeline_resources

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)


@pytest.fixture(scope="module")
def prometheus_tenant_dir(arena, simulated_prometheus, tmp_path_factory):
    """The arena tenant's history served by Prometheus, and a registry whose tenant points at it."""
    start = AS_OF - pd.Timedelta(days=arena.training.history_days)
    url = simulated_prometheus(arena, start - pd.Timedelta("1h"), AS_OF)
    raw = yaml.safe_load((FIXTURE_TENANTS / "arena.yaml").read_text())
    raw.update(id="arena-prom", name="Arena on Prometheus", source={"type": "prometheus", "url": url})
    directory = tmp_path_factory.mktemp("prometheus-registry")
    (directory / "arena-prom.yaml").write_text(yaml.safe_dump(raw))
    return directory


def test_sources_check_reports_every_metric(prometheus_tenant_dir):
    result = CliRunner().invoke(
        main, ["--config-dir", str(prometheus_tenant_dir), "sources", "check", "arena-prom", "--as-of", AS_OF.isoformat()]
    )
    assert result.exit_code == 0, result.output
    for series in ("game_server_active_players", "game_server_queue_length", "container_cpu_usage_seconds_total"):
        assert series in result.output


def test_a_prometheus_tenant_trains_and_promotes_through_the_same_assets(prometheus_tenant_dir, dagster_instance):
    dagster_instance.add_dynamic_partitions(tenant_partitions.name, ["arena-prom"])
    resources = pipeline_resources() | {"tenants": TenantRegistryResource(config_dir=str(prometheus_tenant_dir))}
    result = materialize(ALL_ASSETS, partition_key="arena-prom", resources=resources, instance=dagster_instance)
    assert result.success
    raw = result.output_for_node("raw_metrics")
    assert raw["concurrent_users"].notna().mean() > 0.95
    assert (raw["cpu_usage"].dropna() > 0).all()  # rate() over the counter, resets handled
    champion = Tracker().version_by_alias("arena-prom_concurrent_users_forecaster", CHAMPION)
    assert champion is not None and champion.tags.source == "prometheus"
