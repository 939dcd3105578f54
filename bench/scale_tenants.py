"""Materialise the whole pipeline for N simulated tenants through Dagster's own machinery and measure it.

Tenants (``--shape``) are generated into a temporary config directory:

- ``shopfast`` (``make bench-scale``): N copies of the demo's ``configs/tenants/shopfast.yaml`` -- 5-minute
  step, every metric the demo trains for it (two forecast metrics, the detector over three, the capacity
  model), the production default of three backtest folds -- over 30 days of history, each copy with its
  own tenant id and simulator seed;
- ``toy``: small windows (10-minute step, 4 days, one forecast metric, one fold).

`dagster dev` (webserver and daemon) runs with a temporary DAGSTER_HOME whose run queue runs
``--concurrent-runs`` runs at a time, one run per tenant; one backfill over every tenant is launched
through GraphQL, as an operator would from the UI. Each run executes its steps with ``--executor``:

- ``celery``: every step goes to ``--workers`` dagster-celery workers started by
  ``scripts/celery_workers.sh`` on the machine's RabbitMQ (``HELIOS_CELERY_BROKER``), with Dagster's
  storage and MLflow's tracking store in PostgreSQL databases of the bench's own (created and dropped
  here), as ``tests/pipeline/test_celery.py`` wires them; asset values pass through the filesystem IO
  manager under DAGSTER_HOME, which every worker on this one machine reads;
- ``multiprocess`` (a forkserver process per step, ``--max-concurrent`` at a time) or ``in_process``
  (one process per run), on a SQLite instance.

Wall time is from the launch to the last run's end. Every second the process trees of `dagster dev`
(webserver, daemon, code server, run workers and their step processes) and of the Celery workers are
sampled: peak summed resident memory, and CPU time (user + system, each process's last sample; a
process that ends loses at most its last second), whose sum over the run divided by N is the
CPU-seconds per tenant that ``bench/results/scale.md`` projects from.

    .venv/bin/python bench/scale_tenants.py --tenants 50 --shape shopfast --executor celery --workers 2
    .venv/bin/python bench/scale_tenants.py --tenants 50 --shape toy --executor multiprocess
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psutil
import yaml

from tests.harness.dagster_dev import BACKFILL_STATUS, REPO, DagsterDev, write_instance_config

AS_OF = "2026-11-20T00:00:00+00:00"
LOG_DIR = Path(__file__).parent / "out"
SHOPFAST = REPO / "configs" / "tenants" / "shopfast.yaml"
SHOPFAST_HISTORY_DAYS = 30  # issue 16.5: a month of 5-minute samples (the demo trains shopfast on 21 days)
POSTGRES_URL = os.environ.get("HELIOS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
RUN_FAILURES = """
query Failures($run: ID!) {
  runOrError(runId: $run) {
    ... on Run { eventConnection { events {
      __typename
      ... on ExecutionStepFailureEvent { stepKey error { message } }
    } } }
  }
}"""
# Scorecards of finished scheduled events (shopfast's weekly flash sale; event_end_sensor) are
# operation, not training: the sensor launches them as each tenant's training lands, and they would
# take run-queue slots and worker time from the training being measured. The queue holds them (a limit of 0 on the sensor's tag) instead of the sensor
# being stopped, which the daemon's first tick would race.
HELD_RUNS = {"key": "dagster/sensor_name", "value": "event_end_sensor", "limit": 0}
PROFILES = {
    "gaming": ("concurrent_users", "game_server_active_players", "gauge"),
    "ecommerce": ("request_rate", "http_requests_total", "counter"),
}


def write_toy_tenants(directory: Path, count: int) -> list[str]:
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


def write_shopfast_tenants(directory: Path, count: int) -> list[str]:
    """N copies of the demo's shopfast, each with its own id and simulator seed, 30 days of history."""
    shopfast = yaml.safe_load(SHOPFAST.read_text())
    ids = []
    for i in range(count):
        tenant_id = f"shop-{i:03d}"
        tenant = shopfast | {"id": tenant_id, "name": f"ShopFast copy {i}",
                             "source": shopfast["source"] | {"seed": 1000 + i},
                             "training": shopfast["training"] | {"history_days": SHOPFAST_HISTORY_DAYS}}
        (directory / f"{tenant_id}.yaml").write_text(yaml.safe_dump(tenant, sort_keys=False))
        ids.append(tenant_id)
    return ids


SHAPES = {"shopfast": write_shopfast_tenants, "toy": write_toy_tenants}


class ProcessTreeSampler(threading.Thread):
    """Peak summed RSS of some processes and all their descendants, and the CPU time they used."""

    def __init__(self, roots: dict[str, int], interval_s: float = 1.0):
        super().__init__(daemon=True)
        self.roots = {group: psutil.Process(pid) for group, pid in roots.items()}
        self.interval_s = interval_s
        self.peak_bytes, self.peak_processes = 0, 0
        # (group, pid, start time) -> the process's last CPU time: a pid reused later is another process.
        self._cpu: dict[tuple[str, int, float], float] = {}
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.sample()
            self._stopping.wait(self.interval_s)
        self.sample()

    def sample(self) -> None:
        total, processes = 0, 0
        for group, root in self.roots.items():
            for process in [root, *self._children(root)]:
                try:
                    with process.oneshot():
                        total += process.memory_info().rss
                        cpu = process.cpu_times()
                        self._cpu[(group, process.pid, process.create_time())] = cpu.user + cpu.system
                    processes += 1
                except psutil.NoSuchProcess:
                    pass
        self.peak_bytes = max(self.peak_bytes, total)
        self.peak_processes = max(self.peak_processes, processes)

    @staticmethod
    def _children(root: psutil.Process) -> list[psutil.Process]:
        try:
            return root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> dict[str, float]:
        groups = {group: 0.0 for group in self.roots}
        for (group, _, _), seconds in self._cpu.items():
            groups[group] += seconds
        return groups

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def hold_scorecard_runs(instance_yaml: Path) -> None:
    instance = yaml.safe_load(instance_yaml.read_text())
    limits = instance["run_coordinator"]["config"].setdefault("tag_concurrency_limits", [])
    limits.append(HELD_RUNS)
    instance_yaml.write_text(yaml.safe_dump(instance, sort_keys=False))


@contextlib.contextmanager
def celery_backend(home: Path, concurrent_runs: int) -> Iterator[dict[str, str]]:
    """Dagster's storage and MLflow's tracking store in two PostgreSQL databases of the bench's own
    (dropped afterwards), the production instance config with the bench's run concurrency: the
    environment the runs and the workers share."""
    from sqlalchemy import create_engine, text

    from helios_pipelines.core.ml.tracking import Tracker

    names = {role: f"helios_scale_{role}_{uuid.uuid4().hex[:8]}" for role in ("dagster", "mlflow")}
    server = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in names.values():
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        instance = yaml.safe_load((REPO / "deploy" / "dagster" / "dagster.yaml").read_text())
        instance["run_coordinator"]["config"]["max_concurrent_runs"] = concurrent_runs
        (home / "dagster").mkdir(parents=True, exist_ok=True)
        (home / "dagster" / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
        env = {"DAGSTER_PG_HOST": server.split(":")[0], "DAGSTER_PG_PORT": server.split(":")[1],
               "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": "unused-trust-auth",
               "DAGSTER_PG_DB": names["dagster"],
               "MLFLOW_TRACKING_URI": f"postgresql+psycopg2://postgres@{server}/{names['mlflow']}"}
        os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")})  # for this process's instance
        Tracker(env["MLFLOW_TRACKING_URI"])  # MLflow's tables, created once before the workers race to
        yield env
    finally:
        with admin.connect() as connection:
            for name in names.values():
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def celery_workers(count: int, env: dict[str, str], cwd: Path, log_path: Path) -> Iterator[subprocess.Popen]:
    """``count`` workers started by the project's script in a session of their own (stopped with it)."""
    with log_path.open("w") as log:
        script = subprocess.Popen([str(REPO / "scripts" / "celery_workers.sh"), str(count), "scale"], cwd=cwd,
                                  env=env | {"PYTHON": sys.executable, "PYTHONPATH": str(REPO)},
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while log_path.read_text().count(" ready.") < count:
                if script.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"celery workers did not start: {log_path.read_text()[-3000:]}")
                time.sleep(1)
            yield script
        finally:
            os.killpg(script.pid, signal.SIGTERM)
            try:
                script.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(script.pid, signal.SIGKILL)
                script.wait()


def failure_of(server: DagsterDev, run: dict) -> dict:
    """Which tenant failed, in which step, and why."""
    events = server.graphql(RUN_FAILURES, {"run": run["runId"]})["runOrError"]["eventConnection"]["events"]
    steps = [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    return {
        "tenant": next((t["value"] for t in run["tags"] if t["key"] == "dagster/partition"), None),
        "status": run["status"],
        "steps": {e["stepKey"]: e["error"]["message"].strip().splitlines()[-1][:300] for e in steps if e.get("error")},
    }


def wait_for(server: DagsterDev, backfill: str, timeout_s: float) -> tuple[str, list[dict]]:
    """The backfill's status and runs when it ends, or as they stand at the timeout (status TIMED_OUT):
    the figures of the runs that finished are still worth recording."""
    try:
        return server.wait_for_backfill(backfill, timeout_s, poll_s=10)
    except TimeoutError:
        return "TIMED_OUT", server.graphql(BACKFILL_STATUS, {"backfill": backfill})["runsOrError"]["results"]


def steps_per_process(dagster_home: Path, runs: list[dict]) -> dict[int, int]:
    """How many steps each process started (Dagster's STEP_START events carry the pid)."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        pids = [entry.dagster_event.pid for run in runs
                for entry in instance.all_logs(run["runId"], of_type=DagsterEventType.STEP_START)]
    return dict(Counter(pids).most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="shopfast")
    parser.add_argument("--executor", choices=["celery", "multiprocess", "in_process"], default="celery")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (one step at a time each)")
    parser.add_argument("--max-concurrent", type=int, default=2, help="steps at a time in a multiprocess run")
    parser.add_argument("--concurrent-runs", type=int, default=2, help="runs the queue runs at a time")
    parser.add_argument("--timeout", type=float, default=3 * 3600,
                        help="seconds after the launch when the figures are taken even if runs are left")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    args = parser.parse_args()

    from helios_pipelines.defs.assets import ALL_ASSETS

    load_start = os.getloadavg()
    # A run worker may still be writing its last events when the server stops; the figures matter more
    # than removing every file of the temporary home.
    with tempfile.TemporaryDirectory(prefix="helios-scale-", ignore_cleanup_errors=True) as tmp, \
            contextlib.ExitStack() as stack:
        home = Path(tmp)
        config_dir = home / "tenants"
        config_dir.mkdir()
        tenant_ids = SHAPES[args.shape](config_dir, args.tenants)
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
        if args.executor == "celery":
            env |= stack.enter_context(celery_backend(home, args.concurrent_runs))
        else:
            write_instance_config(home / "dagster", max_concurrent_runs=args.concurrent_runs)
        hold_scorecard_runs(home / "dagster" / "dagster.yaml")
        from dagster import DagsterInstance

        with DagsterInstance.from_config(str(home / "dagster")) as instance:
            instance.add_dynamic_partitions("tenants", tenant_ids)
        roots = {}
        if args.executor == "celery":
            roots["celery workers"] = stack.enter_context(
                celery_workers(args.workers, env, home, home / "celery-workers.log")).pid
        with DagsterDev(env, home / "dagster-dev.log") as server:
            sampler = ProcessTreeSampler({"dagster dev": server.process.pid, **roots})
            sampler.start()
            params = {
                "assetSelection": [{"path": list(a.key.path)} for a in ALL_ASSETS],
                "partitionNames": tenant_ids,
                "title": f"scale bench: {args.tenants} {args.shape} tenants",
            }
            launched = time.time()
            status, runs = wait_for(server, server.launch_backfill(params), args.timeout)
            sampler.stop()
            failures = [failure_of(server, run) for run in runs if run["status"] != "SUCCESS"]
        steps_by_process = steps_per_process(home / "dagster", runs)
        stack.close()  # workers stopped, databases dropped, before the logs are copied
        # The logs (daemon, runs, steps, workers) outlive the temporary home, for a look at failures.
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        label = f"scale-{args.tenants}-{args.shape}-{args.executor}"
        for name in ("dagster-dev", "celery-workers"):
            if (home / f"{name}.log").exists():
                shutil.copy(home / f"{name}.log", LOG_DIR / f"{label}-{name}.log")
    finished = [r for r in runs if r["endTime"]]
    ended = max((r["endTime"] for r in finished), default=time.time())
    durations = sorted(r["endTime"] - r["startTime"] for r in finished if r["startTime"]) or [0.0]
    cpu = sampler.cpu_seconds()
    succeeded = sum(r["status"] == "SUCCESS" for r in runs)
    result = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.python_version()}",
        "load_average_start": [round(x, 1) for x in load_start],
        "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "tenants": args.tenants,
        "shape": args.shape,
        "executor": args.executor,
        "workers": args.workers if args.executor == "celery" else None,
        "max_concurrent_steps": {"celery": args.workers, "multiprocess": args.max_concurrent}.get(args.executor, 1),
        "concurrent_runs": args.concurrent_runs,
        "backfill_status": status,
        "runs_succeeded": succeeded,
        "runs": len(runs),
        "wall_seconds": round(ended - launched, 1),
        "run_seconds_median": round(durations[len(durations) // 2], 1),
        "run_seconds_max": round(durations[-1], 1),
        "peak_memory_mib": round(sampler.peak_bytes / 2**20),
        "peak_processes": sampler.peak_processes,
        "cpu_seconds": {group: round(seconds, 1) for group, seconds in cpu.items()},
        "cpu_seconds_per_tenant": round(sum(cpu.values()) / max(len(finished), 1), 1),
        # With Celery, a worker's one pool process runs its steps: a pid per worker unless one died.
        "steps_per_step_process": steps_by_process if args.executor == "celery" else None,
        "failures": failures,
    }
    print(json.dumps(result, indent=2))
    print(f"logs: {LOG_DIR}/{label}-*.log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps([*existing, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
