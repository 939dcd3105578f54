"""``helios platform render``: the training platform on Kubernetes, as values for Dagster's Helm chart.

Dagster's own chart (``dagster/dagster``, the version of the ``dagster`` pin) runs the webserver,
the daemon and Helios' code location; these values make every run a Kubernetes Job
(``K8sRunLauncher``) whose steps are Jobs of their own (``HELIOS_EXECUTOR=k8s``: dagster-k8s's
``k8s_job_executor``), queue the runs with at most one run per tenant at a time (two runs of a tenant
would race for its ``challenger`` alias and its Bento) and ``--max-concurrent-runs`` in all, and keep
Dagster's storage in an external PostgreSQL. The run pods get the production environment
(``HELIOS_ENV=production``: GCS IO manager, MLflow on PostgreSQL with artifacts in the bucket) and
the Secret ``helios-platform`` (``MLFLOW_TRACKING_URI``, ``HELIOS_DATABASE_URL``, cloud credentials).
``tests/pipeline/test_platform.py`` validates the launcher and executor settings with dagster-k8s's own
config schemas, offline. The image (``--image``) is built from ``deploy/pipelines/Dockerfile``
(``make image-pipelines``), which ``tests/pipeline/test_pipelines_image.py`` runs as the chart starts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import yaml

PLATFORM_SECRET = "helios-platform"


@dataclass(frozen=True)
class PlatformSettings:
    namespace: str = "helios"
    image: str = "gcr.io/YOUR_PROJECT/helios-pipelines:latest"
    gcs_bucket: str = "helios-models-production"
    postgres_host: str = "postgresql.helios"
    postgres_database: str = "dagster"
    max_concurrent_runs: int = 8
    max_concurrent_steps: int = 4


def run_environment(settings: PlatformSettings) -> dict[str, str]:
    """What every run and step pod of the training platform is given (besides the Secret)."""
    return {"HELIOS_ENV": "production", "HELIOS_EXECUTOR": "k8s", "GCS_BUCKET": settings.gcs_bucket,
            "HELIOS_K8S_MAX_CONCURRENT_STEPS": str(settings.max_concurrent_steps)}


def helm_values(settings: PlatformSettings) -> dict:
    repository, _, tag = settings.image.rpartition(":")
    env = run_environment(settings)
    return {
        "dagster-user-deployments": {
            "enabled": True,
            "deployments": [{
                "name": "helios",
                "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
                "dagsterApiGrpcArgs": ["--module-name", "helios_pipelines.definitions"],
                "port": 3030,
                "env": [{"name": name, "value": value} for name, value in env.items()],
                "envSecrets": [{"name": PLATFORM_SECRET}],
            }],
        },
        "runLauncher": {
            "type": "K8sRunLauncher",
            "config": {"k8sRunLauncher": {
                "jobNamespace": settings.namespace,
                "envVars": [f"{name}={value}" for name, value in env.items()],
                "envSecrets": [{"name": PLATFORM_SECRET}],
                "runK8sConfig": {"containerConfig": {"resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}}},
            }},
        },
        "dagsterDaemon": {"runCoordinator": {
            "enabled": True,
            "type": "QueuedRunCoordinator",
            "config": {"queuedRunCoordinator": {
                "maxConcurrentRuns": settings.max_concurrent_runs,
                "tagConcurrencyLimits": [
                    {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}],
            }},
        }},
        "postgresql": {
            "enabled": False,
            "postgresqlHost": settings.postgres_host,
            "postgresqlUsername": "dagster",
            "postgresqlDatabase": settings.postgres_database,
            "service": {"port": 5432},
        },
        # The password comes from the Secret dagster-postgresql-secret (key postgresql-password).
        "generatePostgresqlPasswordSecret": False,
    }


@click.group("platform")
def command() -> None:
    """The training platform on Kubernetes: Dagster's Helm chart values."""


@command.command("render")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--namespace", default=PlatformSettings.namespace, show_default=True)
@click.option("--image", default=PlatformSettings.image, show_default=True, help="the pipeline's image (repository:tag)")
@click.option("--gcs-bucket", envvar="GCS_BUCKET", default=PlatformSettings.gcs_bucket, show_default=True)
@click.option("--postgres-host", default=PlatformSettings.postgres_host, show_default=True)
@click.option("--postgres-database", default=PlatformSettings.postgres_database, show_default=True)
@click.option("--max-concurrent-runs", type=click.IntRange(1), default=PlatformSettings.max_concurrent_runs, show_default=True)
@click.option("--max-concurrent-steps", type=click.IntRange(1), default=PlatformSettings.max_concurrent_steps,
              show_default=True, help="step Jobs of one run at a time")
def render_command(out_dir: Path, **options) -> None:
    """Write dagster-values.yaml for `helm install dagster dagster/dagster -f dagster-values.yaml`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "dagster-values.yaml"
    path.write_text(yaml.safe_dump(helm_values(PlatformSettings(**options)), sort_keys=False))
    click.echo(f"wrote {path}; create the Secrets {PLATFORM_SECRET} and dagster-postgresql-secret")
