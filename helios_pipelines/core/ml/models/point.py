"""Point forecasters whose intervals come from their own errors at each lead time: the shape of the
reference methods (Prometheus' functions, XGBoost on lags, the benchmark's direct XGBoost)."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.base import (
    Forecaster,
    InsufficientHistoryError,
    forecast_frame,
    on_grid,
    step_intervals,
)

CALIBRATION_ORIGINS = 200  # origins at which a reference method measures its own errors


class PointForecaster(Forecaster):
    """A point forecast plus intervals from the method's own errors at each lead time.

    ``fit`` replays the point forecast at CALIBRATION_ORIGINS origins spread over the last quarter of
    the training data and keeps the errors per lead time; ``predict`` adds their quantiles.
    """

    @property
    def min_history(self) -> int:
        return 2

    def _point_forecast(self, history: pd.Series, horizon: int) -> np.ndarray:
        """The ``horizon`` values after history's last timestamp."""
        raise NotImplementedError

    def _point_forecasts(self, history: pd.Series, origins: np.ndarray, horizon: int) -> np.ndarray:
        """(origins x horizon) forecasts, origin ``o`` seeing only ``history[:o]``; batch it if you can."""
        return np.array([self._point_forecast(history.iloc[:o], horizon) for o in origins])

    def _fit_point_model(self, history: pd.Series) -> None:
        """Learn what the point forecast needs (nothing, for the Prometheus functions)."""

    def fit(self, history: pd.Series) -> Self:
        history = on_grid(history, self.step)
        if history.notna().sum() < self.min_history + self.max_horizon:
            raise InsufficientHistoryError(
                f"{self.kind} for '{self.metric}' needs more than {self.min_history + self.max_horizon} "
                f"observed points to fit, got {int(history.notna().sum())}"
            )
        self._fit_point_model(history)
        n, horizon = len(history), self.max_horizon
        first = max(self.min_history, int(n * 0.75), n - horizon - 2000)
        origins = np.unique(np.linspace(first, n - horizon, CALIBRATION_ORIGINS).astype(int))
        values = history.to_numpy()
        actual = np.array([values[o : o + horizon] for o in origins])
        self.residuals_ = actual - self._point_forecasts(history, origins, horizon)
        self.fitted_ = True
        return self

    def _predict(self, horizon, history, events, level):
        history = on_grid(history, self.step)
        yhat = self._point_forecasts(history, np.array([len(history)]), horizon)[0]
        lo, hi = step_intervals(self.residuals_[:, :horizon], level)
        return forecast_frame(self.future_index(history, horizon), yhat, yhat + lo, yhat + hi)
