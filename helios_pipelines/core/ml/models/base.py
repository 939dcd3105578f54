"""The contracts every model honours, so the pipeline, the backtest and serving treat kinds alike.

Series conventions (all models): a ``pd.Series`` with a tz-aware UTC ``DatetimeIndex`` on a regular
grid at the tenant's step; NaN marks a missing sample (a gap), never a zero. Models must neither
train on nor be scored on NaN targets.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Self

import joblib
import numpy as np
import pandas as pd

from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ml.features import as_utc_index

FORECAST_COLUMNS = ["timestamp", "yhat", "yhat_lower", "yhat_upper"]
MODEL_FILE = "model.joblib"
META_FILE = "helios_model.json"


class ModelNotFittedError(RuntimeError):
    pass


class InsufficientHistoryError(ValueError):
    """Raised when predict/score gets less history than the model needs; says how much it needs."""


class SavableModel:
    """joblib round trip plus a small JSON manifest that tells a loader what it is looking at."""

    kind: ClassVar[str]
    capability: ClassVar[str]

    def manifest(self) -> dict:
        return {"kind": self.kind, "capability": self.capability}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path / MODEL_FILE)
        (path / META_FILE).write_text(json.dumps(self.manifest(), indent=2, default=str))
        return path

    @staticmethod
    def load(path: str | Path) -> SavableModel:
        return joblib.load(Path(path) / MODEL_FILE)


class Forecaster(SavableModel, ABC):
    """fit(history) / predict(horizon, history) -> timestamp, yhat, yhat_lower, yhat_upper.

    ``horizon`` counts steps. ``predict`` forecasts the ``horizon`` grid points after the last
    timestamp of ``history`` (the forecast origin). Scheduled events are known future inputs: the
    schedule given at construction travels with the model; ``extra_events`` adds ones posted later.
    ``level`` is the central interval's coverage (0.8 -> yhat_lower/upper are the 10 % / 90 %
    quantiles).

    A kind that reads other metrics (``drivers``: their names, empty for a univariate model) takes
    their history as a frame, ``fit(history, drivers=frame)`` and ``predict(..., drivers=frame)``, and
    reads it only at ``history``'s timestamps: ``fit_forecaster`` and ``predict`` hand it over, so
    every caller passes the tenant's frame alike and a univariate kind never sees it.
    """

    capability: ClassVar[str] = "forecaster"
    # Whether ``_predict`` already honours scheduled events; ``predict`` applies the configured
    # multipliers to the forecast of a model that does not, so the backtest, the MLflow pyfunc and
    # serving all score the same function.
    models_events: ClassVar[bool] = False
    # Whether ``fit`` can continue an earlier fit's model offered through ``continue_from`` (a warm start
    # of a retrain on a moved window: models/warm_start.py).
    warm_starts: ClassVar[bool] = False
    # The metrics whose past the model reads beside its own (set per model by a kind that takes them).
    drivers: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        step: pd.Timedelta | str = "1min",
        max_horizon: int = 60,
        timezone: str = "UTC",
        events: EventSchedule | None = None,
        metric: str = "",
        seed: int = 42,
    ):
        self.step = pd.Timedelta(step)
        self.max_horizon = int(max_horizon)
        self.timezone = timezone
        self.events = events or EventSchedule()
        self.metric = metric
        self.seed = seed
        self.fitted_ = False

    @property
    def min_history(self) -> int:
        """Steps of history predict needs before the origin."""
        return 1

    @property
    def full_history(self) -> int:
        """Steps of history at which predict uses every feature it has (serving fetches this much,
        so it forecasts from what the backtest forecast from)."""
        return self.min_history

    @abstractmethod
    def fit(self, history: pd.Series) -> Self: ...

    def continue_from(self, base: Forecaster | None) -> Self:
        raise NotImplementedError(f"{self.kind} fits from scratch only (warm_starts is False)")

    @abstractmethod
    def _predict(self, horizon: int, history: pd.Series, events: EventSchedule, level: float) -> pd.DataFrame:
        """Return FORECAST_COLUMNS for the ``horizon`` steps after history's last timestamp."""

    def predict(
        self,
        horizon: int,
        history: pd.Series,
        extra_events: list | None = None,
        level: float = 0.8,
        drivers: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        if not self.fitted_:
            raise ModelNotFittedError(f"{self.kind} forecaster for '{self.metric}' is not fitted")
        if not 0 < level < 1:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        if horizon < 1:
            raise ValueError(f"horizon must be at least one step, got {horizon}")
        if horizon > self.max_horizon:
            raise ValueError(
                f"horizon of {horizon} steps is beyond the {self.max_horizon} steps "
                f"'{self.metric}' was trained for"
            )
        observed = int(history.notna().sum())
        if observed < self.min_history:
            raise InsufficientHistoryError(
                f"'{self.metric}' needs {self.min_history} observed points before the origin, got {observed}"
            )
        events = self.events.with_events(list(extra_events)) if extra_events else self.events
        inputs = {"drivers": drivers} if self.drivers else {}
        frame = self._predict(horizon, history, events, level, **inputs)[FORECAST_COLUMNS].reset_index(drop=True)
        if not self.models_events and len(events):
            factor = events.multiplier(pd.DatetimeIndex(frame["timestamp"]), self.metric).to_numpy()
            values = ["yhat", "yhat_lower", "yhat_upper"]
            frame[values] = frame[values].mul(factor, axis=0)
        return frame

    def future_index(self, history: pd.Series, horizon: int) -> pd.DatetimeIndex:
        origin = history.index[-1]
        return pd.date_range(origin + self.step, periods=horizon, freq=self.step)

    def manifest(self) -> dict:
        return super().manifest() | {
            "metric": self.metric,
            "step_seconds": self.step.total_seconds(),
            "max_horizon": self.max_horizon,
            "timezone": self.timezone,
            "min_history": self.min_history,
            "full_history": self.full_history,
            "models_events": self.models_events,
        }


def fit_forecaster(model: Forecaster, history: pd.Series, drivers: pd.DataFrame | None = None) -> Forecaster:
    """``model.fit(history)``, with the drivers' history for a model that reads its drivers."""
    return model.fit(history, drivers=drivers) if model.drivers else model.fit(history)


def seasonal_period(step: pd.Timedelta, season: str = "1D") -> int:
    return max(1, int(pd.Timedelta(season) / step))


def empirical_interval(residuals: np.ndarray, level: float) -> tuple[float, float]:
    """Quantiles of residuals (actual - forecast) for a central interval of the given level."""
    residuals = residuals[np.isfinite(residuals)]
    if residuals.size == 0:
        return 0.0, 0.0
    alpha = (1 - level) / 2
    return float(np.quantile(residuals, alpha)), float(np.quantile(residuals, 1 - alpha))


class SeasonalPeriods:
    """Steps per hour, day and week at the model's ``step``: the one place a model turns its seasons
    into lags (Helios' forecaster and the benchmark's references read them from here)."""

    step: pd.Timedelta

    @property
    def hour(self) -> int:
        return max(2, seasonal_period(self.step, "1h"))

    @property
    def day(self) -> int:
        return seasonal_period(self.step, "1D")

    @property
    def week(self) -> int:
        return seasonal_period(self.step, "7D")


def on_grid(history: pd.Series, step: pd.Timedelta) -> pd.Series:
    """The series on its regular grid from first to last timestamp: a missing timestamp is a NaN."""
    history = history.astype(float)
    history.index = as_utc_index(history.index)
    grid = pd.date_range(history.index[0], history.index[-1], freq=step)
    if len(grid) == len(history) and grid.equals(history.index):
        return history
    return history[~history.index.duplicated(keep="last")].reindex(grid)


def step_intervals(residuals: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower/upper offsets per lead time from a (origins x lead times) matrix of actual - forecast."""
    bounds = np.array([empirical_interval(residuals[:, j], level) for j in range(residuals.shape[1])])
    return bounds[:, 0], bounds[:, 1]


def forecast_frame(index: pd.DatetimeIndex, yhat, lower, upper) -> pd.DataFrame:
    yhat = np.asarray(yhat, dtype=float)
    # Quantile offsets of a skewed error distribution can both sit on one side of the point forecast;
    # the contract keeps yhat inside its interval.
    lower = np.minimum(np.asarray(lower, dtype=float), yhat)
    upper = np.maximum(np.asarray(upper, dtype=float), yhat)
    return pd.DataFrame({"timestamp": index, "yhat": yhat, "yhat_lower": lower, "yhat_upper": upper})


class AnomalyDetector(SavableModel, ABC):
    """fit(frame) / score(frame) -> per-metric anomaly scores in [0, 1].

    ``frame`` has one column per logical metric on the tenant's grid (NaN = missing). Scoring is
    causal: a row's score uses only that row and the rows before it, exactly as when points arrive
    one by one in production, so scoring a prefix gives the same scores as scoring the whole frame.
    Rows still in warm-up score NaN (not a guess). ``threshold`` is the score above which a point is
    flagged; it is derived from the tenant's ``anomaly_alert`` z-score.
    """

    capability: ClassVar[str] = "anomaly_detector"

    @property
    @abstractmethod
    def threshold(self) -> float: ...

    @property
    @abstractmethod
    def min_history(self) -> int:
        """Rows of history a score needs before it is more than warm-up."""

    @property
    def full_history(self) -> int:
        """Rows before a row at which its score uses every view the fitted detector has (serving holds
        this much, so it scores as the backtest did)."""
        return self.min_history

    @abstractmethod
    def fit(self, frame: pd.DataFrame) -> Self: ...

    @abstractmethod
    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Same index as ``frame``; a column per metric plus ``combined`` (the max over metrics)."""
