"""A real Prometheus for tests, holding the simulator's history of a tenant.

The history is written as OpenMetrics (one file per UTC day: promtool's cost grows with the square of
a file's span), backfilled with ``promtool tsdb create-blocks-from openmetrics`` and served by
``prometheus`` on a free loopback port. Rules from STACK.md that the writer follows: timestamps in
seconds (milliseconds land in the far future, where retention deletes the real blocks), a timestamp on
every sample, LF line endings, ``# EOF`` at the end.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from helios_pipelines.core.sources.base import grid
from helios_pipelines.core.sources.simulator import Simulator
from helios_pipelines.core.tenants import SimulatorSource, TenantConfig

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "debian_package.sh"
READY_TIMEOUT_SECONDS = 60


def ensure_prometheus() -> str | None:
    """None when ``prometheus`` and ``promtool`` are usable (installing them if needed), else why not."""
    if shutil.which("prometheus") and shutil.which("promtool"):
        return None
    done = subprocess.run(["bash", str(INSTALL_SCRIPT), "install", "prometheus", "prometheus", "promtool"],
                          capture_output=True, text=True)
    if done.returncode == 0 and shutil.which("prometheus") and shutil.which("promtool"):
        return None
    return f"prometheus could not be installed by {INSTALL_SCRIPT.name}: {(done.stderr or done.stdout).strip()[-300:]}"


def simulated_history(
    tenant: TenantConfig, start: pd.Timestamp, end: pd.Timestamp, seed: int
) -> pd.DataFrame:
    """The simulator's native series for ``tenant``'s metrics (counters cumulative, gaps NaN)."""
    simulated = tenant.model_copy(update={"source": SimulatorSource(seed=seed)})
    return Simulator(simulated).native_frame(grid(start, end, tenant.step_timedelta))


def write_openmetrics(history: pd.DataFrame, counters: set[str], directory: Path) -> list[Path]:
    """One OpenMetrics file per UTC day of ``history``; NaN points are simply absent (scrape gaps)."""
    directory.mkdir(parents=True, exist_ok=True)
    seconds = history.index.asi8 // 1_000_000_000
    days = history.index.floor("1D")
    files = []
    for day in days.unique():
        in_day = days == day
        lines = []
        for series in history.columns:
            # OpenMetrics names a counter family without the _total its samples carry.
            if series in counters and series.endswith("_total"):
                lines.append(f"# TYPE {series.removesuffix('_total')} counter")
            else:
                lines.append(f"# TYPE {series} gauge")
            values = history[series].to_numpy()[in_day]
            stamps = seconds[in_day]
            present = ~np.isnan(values)
            lines.extend(
                f"{series} {v!r} {t}"
                for v, t in zip(values[present].tolist(), stamps[present].tolist(), strict=True)
            )
        lines.append("# EOF")
        path = directory / f"{day:%Y-%m-%d}.om"
        path.write_text("\n".join(lines) + "\n", newline="\n")
        files.append(path)
    return files


def backfill(files: list[Path], tsdb: Path) -> None:
    tsdb.mkdir(parents=True, exist_ok=True)
    for path in files:
        done = subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(path), str(tsdb)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"promtool could not backfill {path.name}: {done.stderr.strip()[-500:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrometheusServer:
    """``prometheus`` on 127.0.0.1 over an existing TSDB directory; ``stop()`` ends it."""

    def __init__(self, tsdb: Path, scrape: list[str] | None = None, scrape_interval: str = "1m"):
        """``scrape``: host:port targets whose /metrics it scrapes; none (the default) when the data
        is backfilled."""
        self.tsdb = tsdb
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tsdb.parent / "prometheus.yml"
        text = f"global:\n  scrape_interval: {scrape_interval}\n"
        if scrape:
            text += f"scrape_configs:\n  - job_name: scraped\n    static_configs:\n      - targets: {scrape!r}\n"
        config.write_text(text)
        self.log = tsdb.parent / "prometheus.log"
        self._process = subprocess.Popen(
            [
                "prometheus",
                f"--storage.tsdb.path={tsdb}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--config.file={config}",
                # Simulated history may lie years from today; retention must not delete it.
                "--storage.tsdb.retention.time=100y",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self._process.returncode}: {self.log.read_text()[-800:]}"
                )
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"prometheus was not ready within {READY_TIMEOUT_SECONDS}s: {self.log.read_text()[-800:]}"
        )

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def serve_simulated_history(
    tenant: TenantConfig, start: pd.Timestamp, end: pd.Timestamp, workdir: Path, seed: int = 0
) -> PrometheusServer:
    """A running Prometheus holding the simulator's history of ``tenant``'s series over [start, end)."""
    history = simulated_history(tenant, start, end, seed)
    counters = {m.series for m in tenant.metrics.values() if m.kind == "counter"}
    files = write_openmetrics(history, counters, workdir / "openmetrics")
    backfill(files, workdir / "tsdb")
    return PrometheusServer(workdir / "tsdb")
