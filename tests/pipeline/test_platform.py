"""`helios platform render`: Dagster's Helm values for the K8sRunLauncher and k8s_job_executor, checked
offline with dagster-k8s's and Dagster's own config schemas (the chart turns these values into them)."""

from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner
from dagster._config import process_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher

from helios_pipelines.cli import main
from helios_pipelines.definitions import build_definitions
from tests.conftest import FIXTURE_TENANTS


def snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


@pytest.fixture
def values(tmp_path) -> dict:
    result = CliRunner().invoke(main, ["platform", "render", "--out", str(tmp_path), "--image", "registry/helios:1.2",
                                       "--max-concurrent-runs", "20", "--max-concurrent-steps", "3"])
    assert result.exit_code == 0, result.output
    return yaml.safe_load((tmp_path / "dagster-values.yaml").read_text())


def launcher_config(values: dict) -> dict:
    """The instance's run_launcher config the chart derives from runLauncher.config.k8sRunLauncher."""
    given = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {snake(k): v for k, v in given.items() if k not in ("runK8sConfig", "envSecrets")}
    config["run_k8s_config"] = {snake(k): v for k, v in given["runK8sConfig"].items()}
    config["env_secrets"] = [secret["name"] for secret in given["envSecrets"]]  # the chart lists names
    return config | {"instance_config_map": "dagster-instance"}  # filled in by the chart


def test_runs_are_kubernetes_jobs_with_the_production_environment(values):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    config = launcher_config(values)
    assert process_config(K8sRunLauncher.config_type(), config).success
    assert not process_config(K8sRunLauncher.config_type(), config | {"job_namespace": 5}).success  # it does check
    assert {"HELIOS_ENV=production", "HELIOS_EXECUTOR=k8s", "HELIOS_K8S_MAX_CONCURRENT_STEPS=3"} <= set(config["env_vars"])
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["image"] == {"repository": "registry/helios", "tag": "1.2", "pullPolicy": "IfNotPresent"}
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "helios_pipelines.definitions"]


def test_one_run_per_tenant_at_a_time_and_a_bounded_queue(values):
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    queued = coordinator["config"]["queuedRunCoordinator"]
    config = {"max_concurrent_runs": queued["maxConcurrentRuns"], "tag_concurrency_limits": queued["tagConcurrencyLimits"]}
    assert coordinator["type"] == "QueuedRunCoordinator" and process_config(QueuedRunCoordinator.config_type(), config).success
    assert config["max_concurrent_runs"] == 20
    assert config["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]


def test_helios_executor_k8s_runs_each_step_as_a_job_with_the_rendered_bound(values):
    env = dict(item.split("=", 1) for item in launcher_config(values)["env_vars"])
    defs = build_definitions({"HELIOS_CONFIG_DIR": str(FIXTURE_TENANTS), **env, "HELIOS_ENV": "local"})
    executor = defs.resolve_job_def("tenant_training_job").executor_def
    assert executor.name == "helios_k8s"
