"""The helios-agent against a real Prometheus (the arena tenant's simulated history, backfilled) and an
ingest service that is stopped and restarted while the agent forwards: nothing lost, nothing doubled,
and the push tenant then runs through the pipeline's own assets on what was pushed."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from helios_pipelines.core.ops.store import Store
from helios_pipelines.core.sources import make_source
from helios_pipelines.core.sources.base import counter_to_rate
from helios_pipelines.core.tenants import TrainingConfig
from helios_pipelines.core.tenants.source_configs import PushSource
from helios_sdk import HeliosAgent
from helios_sdk.cli import main as agent_main
from tests.conftest import REPO
from tests.harness.prometheus_harness import simulated_history
from tests.harness.push_harness import IngestService, PushTenants

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)

TENANT = "arena-push"
DAY = 86_400


@pytest.fixture(scope="module")
def pushed(arena, tmp_path_factory):
    """The arena tenant, fed by push, with a two-day training window ending an hour ago."""
    tenant = arena.model_copy(update={"id": TENANT, "source": PushSource(),
                                      "training": TrainingConfig(history_days=2, backtest_folds=1)})
    return PushTenants(tmp_path_factory.mktemp("agent"), [tenant])


@pytest.fixture(scope="module", autouse=True)
def _pipeline_reads_the_services_store(pushed):
    """The push source (the pipeline's fetch) reads the store the ingest service writes to."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HELIOS_DATABASE_URL", pushed.database_url)
        yield


@pytest.fixture(scope="module")
def window():
    end = pd.Timestamp.now(tz="UTC").floor("1h") - pd.Timedelta("1h")
    return end - pd.Timedelta(days=2, hours=1), end


@pytest.fixture(scope="module")
def prometheus_url(pushed, window, simulated_prometheus):
    return simulated_prometheus(pushed.tenants[TENANT], *window)


@pytest.fixture(scope="module")
def service(pushed, tmp_path_factory):
    running = IngestService(pushed, tmp_path_factory.mktemp("agent-ingest") / "uvicorn.log")
    yield running
    running.stop()


def agent(pushed, service, prometheus_url, data_dir, clock) -> HeliosAgent:
    return HeliosAgent(
        pushed.keys[TENANT], service.url, TENANT, prometheus_url, data_dir=data_dir, clock=clock,
        settle_seconds=0, batch_size=200, retries=1, backoff_seconds=0.05,
    )


def test_the_sdk_imports_without_the_pipeline():
    code = ("import sys, helios_sdk, helios_sdk.cli; "
            "heavy = [m for m in ('pandas', 'numpy', 'dagster', 'mlflow', 'bentoml', 'helios_pipelines') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_agent_survives_a_helios_restart_without_losing_or_doubling_samples(pushed, service, prometheus_url, window, tmp_path):
    start, end = window
    now = [(start + pd.Timedelta(days=1)).timestamp()]
    forwarder = agent(pushed, service, prometheus_url, tmp_path / "agent", lambda: now[0])
    series = [m.series for m in pushed.tenants[TENANT].metrics.values()]
    assert sorted(forwarder.discover_prometheus()) == sorted(series)  # asked Helios which, found them in Prometheus

    assert forwarder.backfill(days=1) > 0
    assert forwarder.flush() > 0 and forwarder.spool.pending() == []

    service.stop()
    for moment in (start + pd.Timedelta(days=1, hours=12), end):
        now[0] = moment.timestamp()
        assert forwarder.collect_once() > 0
        assert forwarder.flush() == 0  # Helios is down: everything stays spooled
    waiting = len(forwarder.spool.pending())
    assert waiting > 1

    service.start()
    assert forwarder.flush() == waiting and forwarder.spool.pending() == []

    history = simulated_history(pushed.tenants[TENANT], start, end, seed=0)
    store = Store()
    for name in series:
        table = pd.DataFrame(store.pushed(TENANT, name, 0, int(end.timestamp() * 1000) + DAY * 1000),
                             columns=["labels", "timestamp", "value"])
        got = pd.Series(table["value"].to_numpy(), index=pd.to_datetime(table["timestamp"], unit="ms", utc=True))
        expected = history[name].dropna()
        assert set(table["labels"]) == {""}
        assert got.index.is_unique and got.index.equals(expected.index.rename(None)), name  # none lost, none twice
        assert got.to_numpy().tolist() == expected.to_numpy().tolist(), name

    # An agent that lost its state replays everything: Helios keeps one copy.
    counts = {name: store.count_pushed(TENANT, name) for name in series}
    replay = agent(pushed, service, prometheus_url, tmp_path / "amnesiac", lambda: end.timestamp())
    replay.backfill(days=3)
    assert replay.flush() > 0
    assert {name: store.count_pushed(TENANT, name) for name in series} == counts
    store.close()


def test_start_after_discovery_sends_the_training_window_before_streaming(pushed, service, prometheus_url, window,
                                                                             tmp_path):
    # The guide's agent: discover, then start(). Helios is down, so what start() collected stays
    # spooled where the test can read it: two days (the tenant's history_days) of every series.
    start, end = window
    forwarder = agent(pushed, service, prometheus_url, tmp_path, lambda: end.timestamp())
    forwarder.interval_seconds = 3600  # one round, then the test stops it
    forwarder.discover_prometheus()
    service.stop()
    try:
        forwarder.start(block=False)
        deadline = time.monotonic() + 60
        while not forwarder.spool.pending() or any(forwarder.marks.get(s) is None for s in forwarder.metrics):
            assert time.monotonic() < deadline, "start() collected nothing"
            time.sleep(0.2)
        forwarder.stop()
    finally:
        service.start()
    samples = [s for path in forwarder.spool.pending() for s in json.loads(gzip.decompress(path.read_bytes()))["samples"]]
    # What the Prometheus holds: the simulator's history, whose scrape gaps are simply absent. The
    # window's first and last grid points may fall in a gap (where depends on the day the test runs).
    history = simulated_history(pushed.tenants[TENANT], start, end, seed=0)
    in_window = history[history.index >= end - pd.Timedelta(days=2)]
    for series in forwarder.metrics:
        stamps = sorted({s["timestamp"] for s in samples if s["metric"] == series})
        present = in_window[series].dropna().index.asi8 // 1_000_000
        assert stamps[0] == present[0], series  # from the start of the training window (two days before end)
        assert stamps[-1] == present[-1], series  # up to now (the history ends at end)
        assert len(stamps) >= 2 * 288 - 10, series  # the whole window, bar the simulator's gaps


def test_the_push_tenant_trains_from_what_was_pushed(pushed, window, service, prometheus_url, tmp_path):
    """What the agent pushed, through the push source on the grid, `helios sources check`, and the
    whole pipeline in process, to a promoted champion whose version says its data came from pushes."""
    from dagster import DagsterInstance, materialize

    from helios_pipelines.cli import main as helios
    from helios_pipelines.core.ml.tracking import CHAMPION, Tracker, registered_model_name
    from helios_pipelines.defs.assets import ALL_ASSETS
    from helios_pipelines.defs.partitions import tenant_partitions
    from helios_pipelines.defs.resources import MetricsSourceResource, TenantRegistryResource
    from tests.conftest import pipeline_resources

    start, end = window
    forwarder = agent(pushed, service, prometheus_url, tmp_path, lambda: end.timestamp())
    forwarder.backfill(days=(end - start) / pd.Timedelta(days=1))
    forwarder.flush()
    tenant = pushed.tenants[TENANT]
    train_start = end - pd.Timedelta(days=2)
    frame = make_source(tenant).fetch(train_start, end)
    history = simulated_history(tenant, start, end, seed=0)
    for name, metric in tenant.metrics.items():
        expected = history[metric.series]
        if metric.kind == "counter":
            expected = counter_to_rate(expected, tenant.step_timedelta)
        pd.testing.assert_series_equal(frame[name], expected.loc[train_start:].iloc[:len(frame)], check_names=False, check_freq=False)

    checked = CliRunner().invoke(helios, ["--config-dir", str(pushed.config_dir), "sources", "check", TENANT,
                                          "--days", "2", "--as-of", end.isoformat()])
    assert checked.exit_code == 0, checked.output
    assert "3 of 3 metrics ok" in checked.output

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])
    resources = pipeline_resources() | {"tenants": TenantRegistryResource(config_dir=str(pushed.config_dir)),
                                        "metrics_source": MetricsSourceResource(as_of=end.isoformat())}
    result = materialize(ALL_ASSETS, partition_key=TENANT, instance=instance, resources=resources)
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations() if check.check_name != "value_ranges")
    assert len(result.output_for_node("features")) == 2 * 288
    champion = Tracker().version_by_alias(registered_model_name(TENANT, "forecaster", next(iter(tenant.forecast_metrics))), CHAMPION)
    assert champion is not None and champion.tags.source == "push"


def test_helios_agent_command(pushed, service, prometheus_url, tmp_path, capsys):
    with pytest.raises(SystemExit):
        agent_main([])
    assert "missing --api-key, --endpoint, --customer-id" in capsys.readouterr().err
    code = agent_main(["--api-key", pushed.keys[TENANT], "--endpoint", service.url, "--customer-id", TENANT,
                       "--prometheus-url", prometheus_url, "--data-dir", str(tmp_path), "--once", "--backfill-days", "1"])
    assert code == 0
    wrong = agent_main(["--api-key", "hel_nope_nope", "--endpoint", service.url, "--customer-id", TENANT,
                        "--prometheus-url", prometheus_url, "--data-dir", str(tmp_path / "wrong"), "--once"])
    assert wrong == 1 and "HTTP 401" in capsys.readouterr().err
