"""MLflow conventions: where tracking lives, how things are named, how models are logged and promoted.

- one experiment per tenant: ``helios/<tenant>``;
- registered models named from tenant, metric and capability: ``<tenant>_<metric>_forecaster``,
  ``<tenant>_anomaly_detector``, ``<tenant>_capacity_planner``;
- aliases ``challenger`` (the newest candidate) and ``champion`` (what serving loads), never stages;
- every model is logged as an MLflow pyfunc wrapping the Helios model directory, so notebooks load it
  with ``mlflow.pyfunc.load_model`` and serving unwraps the same object;
- a version's tags follow one schema, :class:`VersionTags`: written through ``Tracker.log_model`` /
  ``Tracker.tag_version`` and read as ``RegisteredVersion.tags`` (``tests/core/test_tracking.py`` holds the
  rest of the code to it).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from pydantic import BaseModel, ConfigDict

from helios_pipelines.core.ml.models.base import META_FILE, Forecaster, SavableModel
from helios_pipelines.core.settings import helios_home, with_shipped_driver

if TYPE_CHECKING:
    from helios_pipelines.core.ml.models.capacity import CapacityPlanner

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
# Pinned requirements keep log_model off pip's dependency inference (6 s -> about 1 s a model).
PIP_REQUIREMENTS = ["pandas", "numpy", "scikit-learn", "xgboost", "prophet", "joblib"]
# MLflow keeps at most 5000 characters of a tag value (8000 on newer servers; the smaller is safe).
MAX_TAG_CHARS = 5000


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{helios_home() / 'mlflow.db'}"


def _quietly_register(model_uri: str, name: str, tags: dict[str, str]):
    """``mlflow.register_model``, whose "Successfully registered model" / "Created version" lines MLflow
    prints to stderr (``eprint``, not its logger), moved into this module's log at DEBUG: a newcomer's
    ``helios run`` shows one line per asset (#20.5), and the version is in the asset's metadata anyway."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        version = mlflow.register_model(model_uri, name, tags=tags)
    for line in printed.getvalue().splitlines():
        logger.debug("%s", line)
    return version


def experiment_name(tenant: str) -> str:
    return f"helios/{tenant}"


def registered_model_name(tenant: str, capability: str, metric: str | None = None) -> str:
    return f"{tenant}_{metric}_{capability}" if metric else f"{tenant}_{capability}"


class HeliosPythonModel(PythonModel):
    """pyfunc face of a Helios model: forecasters take a history frame (``timestamp``, the metric's
    values, then its drivers' where it reads them; param ``horizon`` in steps), detectors a metrics
    frame (``timestamp`` and a column per metric), the capacity planner one row per question (``service``, ``demand_upper``,
    ``demand_upper_window_max``, ``demand_expected``, ``demand_expected_window_max``,
    ``current_replicas``: ``CapacityPlanner.recommend``'s arguments). Logged from code (``pyfunc_model.py``)."""

    def __init__(self, model: SavableModel | None = None):
        self.model = model

    def load_context(self, context) -> None:
        self.model = SavableModel.load(context.artifacts["helios_model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        if self.model.capability == "capacity_planner":
            answers = [self.model.recommend(r.service, float(r.demand_upper), float(r.demand_upper_window_max),
                                            None if pd.isna(r.current_replicas) else int(r.current_replicas),
                                            demand_expected=float(r.demand_expected),
                                            demand_expected_window_max=float(r.demand_expected_window_max))
                       for r in model_input.itertuples()]
            answered = pd.DataFrame([{k: getattr(a, k) for k in PLANNER_OUTPUT} for a in answers], columns=PLANNER_OUTPUT)
            # counts as doubles: current_replicas may be unknown (NaN), which an integer column cannot hold
            return answered.astype({"replicas": float, "current_replicas": float})
        frame = model_input.set_index(pd.to_datetime(model_input["timestamp"], utc=True)).drop(columns="timestamp")
        if self.model.capability == "forecaster":
            horizon = int(params.get("horizon", self.model.max_horizon))
            return self.model.predict(horizon, frame.iloc[:, 0].astype(float), drivers=frame.iloc[:, 1:])
        if self.model.capability == "anomaly_detector":
            return self.model.score(frame.astype(float)).reset_index()
        raise TypeError(f"{self.model.kind} has no pyfunc predict; load it with load_helios_model")


# What the planner's pyfunc answers per row (the rest of a Recommendation, its steps, is for /recommend).
PLANNER_OUTPUT = ["service", "replicas", "current_replicas", "utilization_at_recommendation",
                  "share_of_max_capacity", "capacity_warning", "capacity_critical"]
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def history_example(series: pd.Series, model: Forecaster, drivers: pd.DataFrame | None = None) -> pd.DataFrame:
    """A forecaster's pyfunc input: the shortest tail of ``series`` holding ``min_history`` observed points,
    and beside it the history of the drivers the model reads (a column each)."""
    observed = np.flatnonzero(series.notna().to_numpy())
    start = observed[-model.min_history] if observed.size >= model.min_history else 0
    tail = series.iloc[start:]
    example = pd.DataFrame({"timestamp": naive_utc(tail.index), series.name or "value": tail.to_numpy()})
    for name in model.drivers:
        example[name] = drivers[name].reindex(tail.index).to_numpy()
    return example


def naive_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Timestamps as MLflow's schema takes them (no time zone): UTC, the zone dropped."""
    return index.tz_convert("UTC").tz_localize(None)


def planner_example(planner: CapacityPlanner) -> pd.DataFrame:
    """The planner's pyfunc input: per service, the demand its minimum replicas serve, at that size."""
    rows = []
    for service, target in planner.targets.items():
        demand = target.min_replicas * planner.capacity[service]
        rows.append({"service": service, "demand_upper": demand, "demand_upper_window_max": demand,
                     "demand_expected": demand, "demand_expected_window_max": demand,
                     "current_replicas": float(target.min_replicas)})  # a float column: NaN when the count is unknown
    return pd.DataFrame(rows)


def pyfunc_signature(model: SavableModel, input_example: pd.DataFrame):
    """The pyfunc's signature, from what it answers for ``input_example`` (a forecaster's ``horizon``
    param defaults to its longest horizon)."""
    params = {"horizon": model.max_horizon} if model.capability == "forecaster" else None
    output = HeliosPythonModel(model).predict(None, input_example, params)
    return mlflow.models.infer_signature(input_example, output, params)


class VersionTags(BaseModel):
    """The tags of a registered Helios version: the tag key is the field name. Structured values are
    JSON in the tag (the MLflow UI shows them as is); every field is optional because a version is
    tagged in steps (trained, promoted, reviewed) and older versions lack newer tags."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str | None = None  # xgboost, prophet, seasonal_naive, the detector's or planner's kind
    capability: str | None = None  # forecaster, anomaly_detector, capacity_planner
    metric: str | None = None
    # the training window and where its data came from
    source: str | None = None
    data_start: str | None = None
    data_end: str | None = None
    # forecasters: the winner's and the seasonal-naive baseline's backtest metrics, and every candidate's MASE;
    # the planner: per service, each learned value's backtest
    backtest: dict | None = None
    baseline_backtest: dict | None = None
    backtest_mase: str | None = None  # the winner's MASE as the UI and `helios demo` show it
    baseline_mase: str | None = None
    candidates: dict | None = None
    evaluation: dict | None = None  # the detector's hold-out figures
    config_hash: str | None = None  # the planner's configuration, to skip an unchanged one
    # forecasters and the detector: what the fit saw, {"data", "config", "code"} hashes (core.ml.training);
    # a retrain whose fingerprint equals the champion's skips the fit
    fingerprint: dict | None = None
    # forecasters whose retrain continued the champion's fit (core.ml.warm_retrain.record): from which
    # version, per backtest fold and for the refit what was continued, the boosting rounds saved
    warm_start: dict | None = None
    fleet: str | None = None  # the planner's values in use and their sources, one line per service
    peaks: dict | None = None  # the planner's learned recurring peaks (core.ml.peaks.PeakSchedule.to_dict())
    promotion: dict | None = None  # {"promoted": bool, "reason": str}, written by the pipeline
    review: dict | None = None  # {"action", "by", "reason", "at"}, written by a manual promote/rollback
    rolled_back: bool = False
    # the Dagster run that registered it (the first of a re-execution chain): a retried step discards
    # what an earlier attempt of its run registered (Tracker.discard_earlier_attempts)
    dagster_run: str | None = None

    def to_tags(self) -> dict[str, str]:
        """The set fields as MLflow tag values."""
        tags = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if name == "rolled_back":
                if value:
                    tags[name] = "true"
                continue
            tags[name] = (value if isinstance(value, str) else json.dumps(value, default=str))[:MAX_TAG_CHARS]
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str] | None) -> VersionTags:
        """A version's tags; tags of other names (set by hand in the UI) are left out, and a structured
        tag that is not a JSON object (cut at the length limit, edited by hand) reads as missing."""
        values: dict = {}
        for name, field in cls.model_fields.items():
            if name not in (tags or {}):
                continue
            raw = tags[name]
            if name == "rolled_back":
                values[name] = True
            elif field.annotation == dict | None:
                values[name] = _json_object(raw)
            else:
                values[name] = raw
        return cls(**values)


def _json_object(text: str) -> dict | None:
    try:
        found = json.loads(text)
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...] = ()
    tags: VersionTags = VersionTags()


class Tracker:
    """``artifact_root`` (e.g. ``gs://bucket/mlflow``) is where new experiments keep their artifacts
    when the tracking URI is a database rather than a tracking server (which has its own root)."""

    def __init__(self, tracking_uri: str | None = None, artifact_root: str | None = None, dagster_run: str | None = None):
        self.tracking_uri = with_shipped_driver(tracking_uri or default_tracking_uri())
        self.artifact_root = artifact_root
        self.dagster_run = dagster_run
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self.client = MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self, tenant: str) -> str:
        name = experiment_name(tenant)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = None
        if self.artifact_root:
            artifacts = f"{self.artifact_root.rstrip('/')}/{tenant}"
        elif self.tracking_uri.startswith("sqlite:///"):
            # Local artifacts beside the database, not in whatever directory the process runs in.
            artifacts = (Path(self.tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts" / tenant).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=artifacts, tags={"tenant": tenant})
        except MlflowException:
            # Another step of the same run (the detector and the candidates run side by side under the
            # multiprocess executor) created it first: use theirs.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start_run(self, tenant: str, run_name: str, nested: bool = False, tags: dict | None = None):
        return mlflow.start_run(
            experiment_id=self.experiment_id(tenant),
            run_name=run_name,
            nested=nested,
            tags={"tenant": tenant, **(tags or {})},
        )

    def log_model(
        self,
        model: SavableModel,
        registered_name: str,
        tags: VersionTags | None = None,
        alias: str | None = CHALLENGER,
        input_example: pd.DataFrame | None = None,
    ) -> RegisteredVersion:
        """Log ``model`` in the active run as a pyfunc, register it, tag the version (its kind and
        capability from the model), set ``alias``. The version is created only once every artefact is
        logged, tagged with the Dagster run from birth. ``input_example`` (what its pyfunc takes, e.g. a
        forecaster's last ``min_history`` points) is stored with the signature derived from it; MLflow
        checks the logged model answers it."""
        signature = pyfunc_signature(model, input_example) if input_example is not None else None
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = model.save(Path(tmp) / "helios_model")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=PYFUNC_CODE,
                artifacts={"helios_model": str(model_dir)},
                pip_requirements=PIP_REQUIREMENTS,
                signature=signature,
                input_example=input_example,
            )
        born = VersionTags(dagster_run=self.dagster_run).to_tags()
        version = str(_quietly_register(info.model_uri, registered_name, born).version)
        tags = (tags or VersionTags()).model_copy(update={"kind": model.kind, "capability": model.capability})
        self.tag_version(registered_name, version, tags)
        if alias:
            self.client.set_registered_model_alias(registered_name, alias, version)
        self.discard_earlier_attempts(registered_name, version)
        return self.get_version(registered_name, version)

    def discard_earlier_attempts(self, name: str, kept: str) -> list[str]:
        """Delete the versions of ``name`` an earlier attempt of this Dagster run registered (a step
        that failed, or whose worker died, after registering and was retried), so a retry leaves one
        version. Versions an alias points at, or that a promotion decision was recorded on, are kept:
        they are served or history. Returns the deleted versions."""
        if self.dagster_run is None:
            return []
        aliased = set(self.client.get_registered_model(name).aliases.values())  # searches leave aliases out
        earlier = [v for v in self.client.search_model_versions(f"name='{name}' and tags.dagster_run='{self.dagster_run}'")
                   if str(v.version) not in {kept, *map(str, aliased)} and "promotion" not in v.tags]
        for version in earlier:
            self.client.delete_model_version(name, str(version.version))
        return sorted(str(v.version) for v in earlier)

    def tag_version(self, name: str, version: str, tags: VersionTags) -> None:
        """Set the tags ``tags`` sets (``rolled_back=False`` removes that tag); others are left alone."""
        for key, text in tags.to_tags().items():
            self.client.set_model_version_tag(name, version, key, text)
        if not tags.rolled_back and "rolled_back" in tags.model_fields_set:
            self.client.delete_model_version_tag(name, version, "rolled_back")

    def get_version(self, name: str, version: str) -> RegisteredVersion:
        return self._registered(self.client.get_model_version(name, version))

    @staticmethod
    def _registered(v) -> RegisteredVersion:
        return RegisteredVersion(v.name, str(v.version), v.run_id, tuple(v.aliases), VersionTags.from_tags(v.tags))

    def versions(self, name: str) -> list[RegisteredVersion]:
        """Every version of a registered model, oldest first."""
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted((self._registered(v) for v in found), key=lambda v: int(v.version))

    def model_tag(self, name: str, key: str) -> str | None:
        """A tag of the registered model itself (not of a version)."""
        return self.client.get_registered_model(name).tags.get(key)

    def version_by_alias(self, name: str, alias: str) -> RegisteredVersion | None:
        try:
            v = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None
        return self.get_version(name, str(v.version))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def registered_models(self, tenant: str) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models() if m.name.startswith(f"{tenant}_"))

    def download_model_dir(self, name: str, version: str, dst: Path) -> Path:
        """The Helios model directory inside a registered version's pyfunc artifacts."""
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(dst)))
        found = next(local.rglob(META_FILE), None)
        if found is None:
            raise FileNotFoundError(f"models:/{name}/{version} holds no Helios model ({META_FILE} missing)")
        return found.parent


def load_helios_model(name: str, alias_or_version: str = CHAMPION, tracker: Tracker | None = None) -> SavableModel:
    """For notebooks: the Helios object behind a registered model (``champion`` by default)."""
    tracker = tracker or Tracker()
    ref = f"models:/{name}@{alias_or_version}" if not alias_or_version.isdigit() else f"models:/{name}/{alias_or_version}"
    return mlflow.pyfunc.load_model(ref).unwrap_python_model().model
