"""The fleet series a Prometheus tenant configures for capacity and lead-time learning, answered by a
real Prometheus holding kube-state-metrics' per-pod series (backfilled with promtool)."""

from __future__ import annotations

import pandas as pd
import pytest

from helios_pipelines.core.sources import make_source
from helios_pipelines.core.tenants import parse_tenant_file
from tests.harness.conftest_prometheus import prometheus_binaries  # noqa: F401
from tests.harness.prometheus_harness import REPO, PrometheusServer, backfill

pytestmark = pytest.mark.slow  # starts real processes: the real-process tier (make test-fast skips it)

START = pd.Timestamp("2025-03-03T00:00:00Z")
END = START + pd.Timedelta("1h")
# pod -> (created, seconds from created to ready)
PODS = {
    "game-server-a": (START + pd.Timedelta("5min"), 95),
    "game-server-b": (START + pd.Timedelta("20min"), 130),
    "game-server-c": (START + pd.Timedelta("20min"), 150),
    "game-server-d": (START + pd.Timedelta("40min"), 170),
}


def _kube_state_metrics_openmetrics(path):
    """kube_pod_created / kube_pod_status_ready_time per pod, scraped every minute, as
    kube-state-metrics exports them (values are Unix seconds)."""
    stamps = pd.date_range(START, END, freq="1min", inclusive="left")
    lines = ["# TYPE kube_pod_created gauge"]
    for pod, (created, _) in PODS.items():
        lines += [f'kube_pod_created{{namespace="arena",pod="{pod}"}} {created.timestamp():.0f} {t.timestamp():.0f}'
                  for t in stamps if t >= created]
    lines.append("# TYPE kube_pod_status_ready_time gauge")
    for pod, (created, seconds) in PODS.items():
        ready = created + pd.Timedelta(seconds=seconds)
        lines += [f'kube_pod_status_ready_time{{namespace="arena",pod="{pod}"}} {ready.timestamp():.0f} {t.timestamp():.0f}'
                  for t in stamps if t >= ready]
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n", newline="\n")
    return path


@pytest.fixture(scope="module")
def kube_prometheus(prometheus_binaries, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("kube-state-metrics")
    backfill([_kube_state_metrics_openmetrics(workdir / "pods.om")], workdir / "tsdb")
    server = PrometheusServer(workdir / "tsdb")
    yield server.url
    server.stop()


def test_the_example_start_to_ready_query_gives_each_creation_step_its_pods_start_time(kube_prometheus, monkeypatch):
    monkeypatch.setenv("ARENA_PROMETHEUS_TOKEN", "token")
    example = parse_tenant_file(REPO / "configs" / "tenants" / "_examples" / "prometheus-arena.yaml")
    tenant = example.model_copy(update={"source": example.source.model_copy(update={"url": kube_prometheus})})
    series = make_source(tenant).fetch(START, END, ["pod_start_seconds"])["pod_start_seconds"]
    # Reported ten minutes after creation, once: a, then b and c together (mean 140), then d.
    expected = {START + pd.Timedelta("15min"): 95.0, START + pd.Timedelta("30min"): 140.0,
                START + pd.Timedelta("50min"): 170.0}
    assert series.dropna().to_dict() == expected
