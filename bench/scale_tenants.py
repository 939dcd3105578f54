"""Materialise the whole pipeline for N simulated tenants through Dagster's own machinery and measure it.

The tenants (small windows: 10-minute step, 4 days, one forecast metric) are generated into a
temporary config directory. `dagster dev` (webserver and daemon) runs with a temporary DAGSTER_HOME
whose run queue runs ``--concurrent-runs`` runs at a time; one backfill over every tenant is launched
through GraphQL, as an operator would from the UI. Each run uses the executor chosen with
``--executor`` (Dagster's multiprocess executor with ``--max-concurrent`` steps at a time, or one
process per run). Wall time is from the launch to the last run's end; memory is the peak of the summed
resident memory of every process `dagster dev` started (webserver, daemon, code server, run and step
workers), sampled every second.

    .venv/bin/python bench/scale_tenants.py --tenants 50 --executor in_process
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

from tests.harness.dagster_dev import DagsterDev, write_instance_config

AS_OF = "2026-11-20T00:00:00+00:00"
LOG_DIR = Path(__file__).parent / "out"
RUN_FAILURES = """
query Failures($run: ID!) {
  runOrError(runId: $run) {
    ... on Run { eventConnection { events {
      __typename
      ... on ExecutionStepFailureEvent { stepKey error { message } }
    } } }
  }
}"""
PROFILES = {
    "gaming": ("concurrent_users", "game_server_active_players", "gauge"),
    "ecommerce": ("request_rate", "http_requests_total", "counter"),
}


def write_tenants(directory: Path, count: int) -> list[str]:
    ids = []
    for i in range(count):
        profile = "gaming" if i % 2 == 0 else "ecommerce"
        metric, series, kind = PROFILES[profile]
        tenant_id = f"sim-{i:03d}"
        (directory / f"{tenant_id}.yaml").write_text(
            f"name: Simulated {i}\nstep: 10min\n"
            f"source: {{type: simulator, seed: {100 + i}, profile: {profile}}}\n"
            f"metrics:\n  {metric}: {{series: {series}, kind: {kind}, forecast: {{horizons: [1h]}}, anomaly: true}}\n"
            "training: {history_days: 4, backtest_folds: 1}\n"
        )
        ids.append(tenant_id)
    return ids


class TreeMemorySampler(threading.Thread):
    """Peak summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, interval_s: float = 1.0):
        super().__init__(daemon=True)
        self.root, self.interval_s = psutil.Process(pid), interval_s
        self.peak_bytes, self.peak_processes = 0, 0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            total, processes = 0, 0
            for process in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                    processes += 1
                except psutil.NoSuchProcess:
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self.peak_processes = max(self.peak_processes, processes)
            self._stopping.wait(self.interval_s)

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def failure_of(server: DagsterDev, run: dict) -> dict:
    """Which tenant failed, in which step, and why."""
    events = server.graphql(RUN_FAILURES, {"run": run["runId"]})["runOrError"]["eventConnection"]["events"]
    steps = [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    return {
        "tenant": next((t["value"] for t in run["tags"] if t["key"] == "dagster/partition"), None),
        "status": run["status"],
        "steps": {e["stepKey"]: e["error"]["message"].strip().splitlines()[-1][:300] for e in steps if e.get("error")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--executor", choices=["multiprocess", "in_process"], default="multiprocess")
    parser.add_argument("--max-concurrent", type=int, default=2, help="steps at a time in a multiprocess run")
    parser.add_argument("--concurrent-runs", type=int, default=2, help="runs the queue runs at a time")
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    args = parser.parse_args()

    from helios_pipelines.defs.assets import ALL_ASSETS

    # A run worker may still be writing its last events when the server stops; the figures matter more
    # than removing every file of the temporary home.
    with tempfile.TemporaryDirectory(prefix="helios-scale-", ignore_cleanup_errors=True) as tmp:
        home = Path(tmp)
        config_dir = home / "tenants"
        config_dir.mkdir()
        tenant_ids = write_tenants(config_dir, args.tenants)
        write_instance_config(home / "dagster", max_concurrent_runs=args.concurrent_runs)
        from dagster import DagsterInstance

        with DagsterInstance.from_config(str(home / "dagster")) as instance:
            instance.add_dynamic_partitions("tenants", tenant_ids)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HELIOS_DATABASE_URL")} | {
            "HELIOS_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "BENTOML_HOME": str(home / "bentoml"),
            "HELIOS_CONFIG_DIR": str(config_dir),
            "HELIOS_AS_OF": AS_OF,
            "HELIOS_BUILD_BENTO": "0",
            "HELIOS_EXECUTOR": args.executor,
            # Dagster's own default for the multiprocess executor's max_concurrent.
            "DAGSTER_MULTIPROCESS_EXECUTOR_MAX_CONCURRENT": str(args.max_concurrent),
        }
        with DagsterDev(env, home / "dagster-dev.log") as server:
            sampler = TreeMemorySampler(server.process.pid)
            sampler.start()
            params = {
                "assetSelection": [{"path": list(a.key.path)} for a in ALL_ASSETS],
                "partitionNames": tenant_ids,
                "title": f"scale bench: {args.tenants} tenants",
            }
            launched = time.time()
            status, runs = server.wait_for_backfill(server.launch_backfill(params), args.timeout, poll_s=10)
            sampler.stop()
            failures = [failure_of(server, run) for run in runs if run["status"] != "SUCCESS"]
        # The server's log (daemon, runs, steps) outlives the temporary home, for a look at failures.
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_copy = LOG_DIR / f"scale-{args.tenants}-{args.executor}.log"
        log_copy.write_text((home / "dagster-dev.log").read_text())
        ended = max(r["endTime"] for r in runs)
        durations = sorted(r["endTime"] - r["startTime"] for r in runs)
        result = {
            "date": datetime.now().isoformat(timespec="seconds"),
            "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.python_version()}",
            "tenants": args.tenants,
            "executor": args.executor,
            "max_concurrent_steps": args.max_concurrent if args.executor == "multiprocess" else 1,
            "concurrent_runs": args.concurrent_runs,
            "backfill_status": status,
            "runs_succeeded": sum(r["status"] == "SUCCESS" for r in runs),
            "runs": len(runs),
            "wall_seconds": round(ended - launched, 1),
            "run_seconds_median": round(durations[len(durations) // 2], 1),
            "run_seconds_max": round(durations[-1], 1),
            "peak_memory_mib": round(sampler.peak_bytes / 2**20),
            "peak_processes": sampler.peak_processes,
            "failures": failures,
        }
    print(json.dumps(result, indent=2))
    print(f"server log: {log_copy}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps([*existing, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
