"""Where the embedded (local) setup keeps its state, chosen in one place.

Everything local lives under ``HELIOS_HOME`` (default ``./.helios``): the MLflow SQLite registry and
artifacts, Dagster's home, BentoML's model and Bento store. Production points the same variables
(``MLFLOW_TRACKING_URI``, ``DAGSTER_HOME``, ``BENTOML_HOME``) elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    # OpenMP threads that spin while waiting make a 2-thread XGBoost fit about 6x slower whenever the
    # machine is busy with anything else; passive waiting costs nothing when it is idle. It only takes
    # effect if set before OpenMP loads (before xgboost), so it is set where the process starts.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def with_shipped_driver(url: str) -> str:
    """A database URL with the PostgreSQL driver Helios ships: SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, which is not installed, so the URL the README and the platform's
    Secret give (``postgresql://...``) would fail in the store and in MLflow alike."""
    return "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def helios_home() -> Path:
    return Path(os.environ.get("HELIOS_HOME", Path.cwd() / ".helios")).resolve()


def apply_local_defaults() -> None:
    """Fill in the local defaults for whatever the environment leaves unset."""
    home = helios_home()
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("HELIOS_HOME", str(home))
    os.environ.setdefault("BENTOML_HOME", str(home / "bentoml"))
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
