"""Pytest fixtures for a real Prometheus (see prometheus_harness); import them from conftest.py:

from tests.harness.conftest_prometheus import prometheus_binaries, simulated_prometheus  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
import pytest

from helios_pipelines.core.tenants import TenantConfig
from tests.harness.prometheus_harness import PrometheusServer, ensure_prometheus, serve_simulated_history


@pytest.fixture(scope="session")
def prometheus_binaries() -> None:
    """Installs Prometheus when it is missing; skips only when that is impossible here."""
    reason = ensure_prometheus()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def simulated_prometheus(prometheus_binaries, tmp_path_factory) -> Iterator[Callable[..., str]]:
    """``serve(tenant, start, end, seed=0) -> URL`` of a Prometheus holding the simulator's history.

    One server per (tenant, window, seed) for the whole session; all are stopped at its end.
    """
    servers: dict[tuple, PrometheusServer] = {}

    def serve(tenant: TenantConfig, start: pd.Timestamp, end: pd.Timestamp, seed: int = 0) -> str:
        key = (
            tenant.id,
            tuple(sorted((m.series, m.kind) for m in tenant.metrics.values())),
            start,
            end,
            seed,
        )
        if key not in servers:
            workdir = tmp_path_factory.mktemp(f"prometheus-{tenant.id}")
            servers[key] = serve_simulated_history(
                tenant, pd.Timestamp(start), pd.Timestamp(end), workdir, seed
            )
        return servers[key].url

    yield serve
    for server in servers.values():
        server.stop()
