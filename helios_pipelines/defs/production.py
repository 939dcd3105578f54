"""Production resources: asset values in GCS (dagster-gcp), MLflow tracking on PostgreSQL with its
artifacts in ``gs://$GCS_BUCKET/mlflow``. Dagster's own storage (runs, events, schedules) and the run
queue are the instance's business: ``deploy/dagster/dagster.yaml``.

``definitions.build_definitions`` picks these when ``HELIOS_ENV=production``; the embedded local
setup stays the default.
"""

from collections.abc import Mapping

from dagster import EnvVar
from dagster_gcp.gcs import GCSPickleIOManager, GCSResource

from helios_pipelines.core.ml.tracking import Tracker
from helios_pipelines.defs.resources import MLflowResource

REQUIRED = ("GCS_BUCKET", "MLFLOW_TRACKING_URI")


class ProductionConfigError(RuntimeError):
    """Production was asked for but the environment does not say where things live."""


class GCSArtifactsMLflowResource(MLflowResource):
    """MLflow whose tracking store is a database and whose experiments keep artifacts under
    ``artifact_root`` (a database store has no artifact root of its own, unlike a tracking server)."""

    artifact_root: str

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, artifact_root=self.artifact_root, dagster_run=self._dagster_run)


def production_resources(env: Mapping[str, str]) -> dict:
    """The resources that differ from the local setup, from ``GCS_BUCKET``, ``MLFLOW_TRACKING_URI``
    (``postgresql://...``) and optionally ``GCP_PROJECT``. The tracking URI is passed by name and
    read from the process environment when Dagster initialises the resource. Credentials come from
    the environment as Google's clients find them (workload identity on GKE)."""
    missing = [key for key in REQUIRED if not env.get(key)]
    if missing:
        raise ProductionConfigError(f"HELIOS_ENV=production needs {', '.join(missing)} in the environment")
    bucket = env["GCS_BUCKET"]
    return {
        "io_manager": GCSPickleIOManager(
            gcs=GCSResource(project=env.get("GCP_PROJECT")), gcs_bucket=bucket, gcs_prefix="dagster"
        ),
        "mlflow_tracking": GCSArtifactsMLflowResource(
            # by name: the database URL carries its password, which the Dagster UI must not show
            tracking_uri=EnvVar("MLFLOW_TRACKING_URI"), artifact_root=f"gs://{bucket}/mlflow"
        ),
    }
