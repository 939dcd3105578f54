"""Scale out on Celery (HELIOS_EXECUTOR=celery): the project's script starts two dagster-celery workers
on the machine's RabbitMQ, and two tenants are materialised through them with Dagster's storage in
PostgreSQL (a database of the test's own) -- the way runs go past one machine. The worker process
running one tenant's longest step is killed mid-step: the step goes back to the queue and runs again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from helios_pipelines.defs.celery import BrokerUnavailableError, check_broker
from tests.conftest import AS_OF, FIXTURE_TENANTS, REPO
from tests.harness.store_backends import POSTGRES_URL


def test_a_broker_that_is_down_fails_the_launch_naming_it():
    with pytest.raises(BrokerUnavailableError, match=r"broker at 127\.0\.0\.1:1// is unreachable"):
        check_broker("amqp://guest:guest@127.0.0.1:1//", timeout=2)


@pytest.fixture
def databases(postgres_admin):
    """Two PostgreSQL databases of the test's own: Dagster's storage and MLflow's tracking store."""
    names = {role: f"helios_{role}_{uuid.uuid4().hex[:10]}" for role in ("dagster", "mlflow")}
    with postgres_admin.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        for name in names.values():
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield names
    with postgres_admin.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        for name in names.values():
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.mark.slow
def test_two_celery_workers_materialise_two_tenants_and_a_step_whose_worker_dies_runs_again(
        databases, tmp_path, monkeypatch):
    try:
        check_broker("amqp://guest:guest@127.0.0.1:5672//", timeout=3)
    except BrokerUnavailableError as exc:
        pytest.skip(str(exc))
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

    from helios_pipelines.core.ml.tracking import Tracker
    from helios_pipelines.defs.partitions import tenant_partitions

    configs = tmp_path / "tenants"
    configs.mkdir()
    shutil.copy(FIXTURE_TENANTS / "arena.yaml", configs / "arena.yaml")
    duel = (FIXTURE_TENANTS / "arena.yaml").read_text().replace("id: arena", "id: duel").replace("seed: 3", "seed: 8")
    (configs / "duel.yaml").write_text(duel)
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster" / "dagster.yaml", dagster_home / "dagster.yaml")
    server = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home), HELIOS_HOME=str(tmp_path / "home"), HELIOS_CONFIG_DIR=str(configs),
               HELIOS_AS_OF=AS_OF.isoformat(), HELIOS_BUILD_BENTO="0", HELIOS_EXECUTOR="celery",
               MLFLOW_TRACKING_URI=f"postgresql+psycopg2://postgres@{server}/{databases['mlflow']}", BENTOML_HOME=str(tmp_path / "bentoml"),
               DAGSTER_PG_HOST=server.split(":")[0], DAGSTER_PG_PORT=server.split(":")[1], DAGSTER_PG_USER="postgres",
               DAGSTER_PG_PASSWORD="unused-trust-auth", DAGSTER_PG_DB=databases["dagster"], PYTHON=sys.executable, PYTHONPATH=str(REPO))
    for key in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(key, env[key])
    instance = DagsterInstance.from_config(str(dagster_home))
    instance.add_dynamic_partitions(tenant_partitions.name, ["arena", "duel"])
    Tracker(env["MLFLOW_TRACKING_URI"])  # creates MLflow's tables once, as `mlflow server` would before the workers

    workers = []
    try:
        for name in ("a", "b"):
            log = (tmp_path / f"worker-{name}.log").open("w")
            workers.append((subprocess.Popen([str(REPO / "scripts" / "celery_workers.sh"), "1", name], cwd=tmp_path, env=env,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True), name))
        runs = [subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "helios_pipelines.definitions",
                                  "--select", "*", "--partition", tenant], cwd=tmp_path, env=env,
                                 stdout=(tmp_path / f"run-{tenant}.log").open("w"), stderr=subprocess.STDOUT)
                for tenant in ("arena", "duel")]
        killed = kill_the_worker_running(instance, "arena", "forecast_candidates", deadline=time.monotonic() + 900)
        for run, tenant in zip(runs, ("arena", "duel"), strict=True):
            assert run.wait(timeout=1200) == 0, (tmp_path / f"run-{tenant}.log").read_text()[-4000:]
    finally:
        for process, _ in workers:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)

    finished = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert sorted(run.tags["dagster/partition"] for run in finished) == ["arena", "duel"]
    assert all(run.run_config.get("execution", {}) == {} for run in finished)  # the Definitions' executor: celery
    # Both workers took steps, and every step ran on a worker (none in the launching process).
    done = {name: Path(tmp_path / f"worker-{name}.log").read_text().count("succeeded in") for _, name in workers}
    assert all(count > 0 for count in done.values()), done
    steps = sum(len(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id).step_keys_to_execute)
                for run in finished)
    assert sum(done.values()) == steps, (done, steps)
    (arena,) = [run for run in finished if run.tags["dagster/partition"] == "arena"]
    starts = [e.dagster_event.pid for e in instance.all_logs(arena.run_id, of_type=DagsterEventType.STEP_START)
              if e.dagster_event.step_key == "forecast_candidates"]
    assert len(starts) == 2 and starts[0] == killed and starts[1] != killed
    instance.dispose()


def kill_the_worker_running(instance, tenant: str, step: str, deadline: float) -> int:
    """SIGKILL the worker process that started ``step`` of ``tenant``'s run; its pid."""
    from dagster import DagsterEventType, RunsFilter

    while time.monotonic() < deadline:
        for run in instance.get_runs(RunsFilter(tags={"dagster/partition": tenant})):
            for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START):
                if entry.dagster_event.step_key == step:
                    os.kill(entry.dagster_event.pid, signal.SIGKILL)
                    return entry.dagster_event.pid
        time.sleep(0.5)
    raise AssertionError(f"{tenant}'s {step} never started")
