"""The one Definitions object. The environment is read here, once.

``HELIOS_ENV`` chooses where things live: ``local`` (the default: embedded SQLite, files under
HELIOS_HOME) or ``production`` (GCS IO manager, MLflow on PostgreSQL with artifacts in GCS; see
``defs/production.py``). Dagster's own storage is the instance's: ``deploy/dagster/dagster.yaml``.
Importing this module writes nothing to disk or to ``os.environ``: the embedded defaults are filled in
by whoever starts the process (the ``helios`` CLI, the Makefile's exports) or lazily where they are used.

``HELIOS_EXECUTOR`` chooses how a launched run executes its steps. ``multiprocess`` (the default) is
Dagster's multiprocess executor started through a forkserver that has imported this module once per
run: a step process is forked from it ready to run, instead of a fresh interpreter importing Dagster,
pandas, MLflow and the models (10-15 s a step on a small machine). ``in_process`` runs a run's steps
in one process: a tenant's steps are mostly sequential, and the run queue still runs tenants side
by side. ``celery`` sends each step to dagster-celery workers (``defs/celery.py``,
``scripts/celery_workers.sh``), the way past one machine; ``k8s`` makes each step a Kubernetes Job
(dagster-k8s, with the K8sRunLauncher of ``helios platform render``).
"""

import os
import warnings

from dagster import BetaWarning, Definitions, EnvVar, in_process_executor, multiprocess_executor

from helios_pipelines.core.tenants import load_tenants
from helios_pipelines.defs.assets import ALL_ASSETS
from helios_pipelines.defs.automation import (
    AUTOMATION_SENSORS,
    LiveAccuracyResource,
    bento_job,
    retraining_schedules,
    training_job,
)
from helios_pipelines.defs.resources import (
    BentoPackagerResource,
    MetricsSourceResource,
    MLflowResource,
    OperatorVerdictsResource,
    TenantRegistryResource,
)
from helios_pipelines.defs.scorecards import event_end_sensor, scorecard_job

# Dagster binds the Definitions' resources to a sensor's job by copying the sensor
# (SensorDefinition.with_attributes), and the copy hands its empty owners list to that beta parameter: a
# BetaWarning on every `helios run` and `dagster dev` about a parameter Helios never sets (Dagster 1.13).
# Only that warning is hidden; any other beta or deprecation warning still shows.
warnings.filterwarnings("ignore", message=r"Parameter `owners` of initializer `SensorDefinition\.__init__`",
                        category=BetaWarning)

ENVIRONMENTS = ("local", "production")
# The forkserver preloads the module the run's job was loaded from: this one.
EXECUTORS = {
    "multiprocess": multiprocess_executor.configured({"start_method": {"forkserver": {}}}, name="helios_multiprocess"),
    "in_process": in_process_executor,
}


def secret(env: dict[str, str], name: str) -> EnvVar | None:
    """A connection string that may carry a password, as Dagster's ``EnvVar``: the resource holds the
    variable's name and reads its value when the run starts, so the UI never shows the password."""
    return EnvVar(name) if env.get(name) else None


def build_definitions(env: dict[str, str] | None = None) -> Definitions:
    env = dict(os.environ if env is None else env)
    environment = env.get("HELIOS_ENV", "local")
    if environment not in ENVIRONMENTS:
        raise ValueError(f"HELIOS_ENV={environment!r}: expected one of {', '.join(ENVIRONMENTS)}")
    executor = env.get("HELIOS_EXECUTOR", "multiprocess")
    if executor not in (*EXECUTORS, "celery", "k8s"):
        raise ValueError(f"HELIOS_EXECUTOR={executor!r}: expected one of {', '.join(EXECUTORS)}, celery, k8s")
    if executor == "k8s":  # each step a Kubernetes Job (runs launched by the K8sRunLauncher: `helios platform render`)
        from dagster_k8s import k8s_job_executor

        run_executor = k8s_job_executor.configured(
            {"max_concurrent": int(env.get("HELIOS_K8S_MAX_CONCURRENT_STEPS", "4"))}, name="helios_k8s")
    elif executor == "celery":
        from helios_pipelines.defs.celery import broker_url, helios_celery_executor

        run_executor = helios_celery_executor.configured({"broker": broker_url(env), "backend": "rpc://"},
                                                         name="helios_celery")
    else:
        run_executor = EXECUTORS[executor]
    resources = {
        "tenants": TenantRegistryResource(config_dir=env.get("HELIOS_CONFIG_DIR")),
        "metrics_source": MetricsSourceResource(as_of=env.get("HELIOS_AS_OF")),
        "mlflow_tracking": MLflowResource(tracking_uri=secret(env, "MLFLOW_TRACKING_URI")),
        "packager": BentoPackagerResource(build_bento=env.get("HELIOS_BUILD_BENTO", "1") == "1"),
        "live_accuracy": LiveAccuracyResource(database_url=secret(env, "HELIOS_DATABASE_URL")),
        "operator_verdicts": OperatorVerdictsResource(database_url=secret(env, "HELIOS_DATABASE_URL")),
    }
    if environment == "production":
        from helios_pipelines.defs.production import production_resources

        resources |= production_resources(env)
    return Definitions(
        assets=ALL_ASSETS,
        jobs=[training_job, bento_job, scorecard_job],
        schedules=retraining_schedules(load_tenants(env.get("HELIOS_CONFIG_DIR"))),
        sensors=[*AUTOMATION_SENSORS, event_end_sensor],
        resources=resources,
        executor=run_executor,
    )


defs = build_definitions()
