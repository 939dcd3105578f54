"""XGBoost on lags, one step ahead and applied recursively: the usual recipe as a reference kind, and
its variant on changes that Helios' forecaster blends in for the first lead times."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import xgboost as xgb

from helios_pipelines.core.ml.features import calendar_features, lagged
from helios_pipelines.core.ml.models import XGB_THREADS
from helios_pipelines.core.ml.models.base import seasonal_period
from helios_pipelines.core.ml.models.point import PointForecaster
from helios_pipelines.core.ml.models.warm_start import boost


class XGBoostLags(PointForecaster):
    """XGBoost on lags and calendar features, one step ahead, applied recursively: the usual recipe.

    Lags are the last hour (at most 24 steps) and the same time a day earlier; calendar features are
    on the tenant's clock. Forecasts feed back in as lags for the next step.
    """

    kind: ClassVar[str] = "xgboost"

    def __init__(
        self,
        *,
        regions: Sequence[tuple[str, float]] | None = None,
        n_estimators: int = 200,
        max_train_rows: int = 30000,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.regions = list(regions or [])
        self.n_estimators = n_estimators
        self.max_train_rows = max_train_rows

    @property
    def lags(self) -> list[int]:
        recent = min(24, max(3, seasonal_period(self.step, "1h")))
        return list(range(1, recent + 1)) + [seasonal_period(self.step, "1D")]

    @property
    def min_history(self) -> int:
        return max(self.lags)

    def _training_rows(self, history) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, target positions, their lags): observed targets, at most ``max_train_rows`` of
        them drawn with the model's seed."""
        values = history.to_numpy()
        positions = np.flatnonzero(np.isfinite(values))
        positions = positions[positions >= 1]
        rng = np.random.default_rng(self.seed)
        if positions.size > self.max_train_rows:
            positions = np.sort(rng.choice(positions, self.max_train_rows, replace=False))
        return values, positions, np.column_stack([lagged(values, positions, lag) for lag in self.lags])

    def _fit_point_model(self, history):
        values, positions, lags = self._training_rows(history)
        calendar = calendar_features(history.index[positions], self.timezone, self.regions).to_numpy()
        params = {"max_depth": 6, "eta": 0.1, "subsample": 0.8, "nthread": XGB_THREADS, "seed": self.seed}
        train = xgb.DMatrix(np.column_stack([lags, calendar]), label=values[positions])
        self.booster_ = xgb.train(params, train, self.n_estimators)

    def _point_forecasts(self, history, origins, horizon):
        # One row per origin holds its last max(lags) values, then its own forecasts as they come.
        depth = max(self.lags)
        values = history.to_numpy()
        window = np.column_stack([lagged(values, origins, depth - j) for j in range(depth)])
        window = np.column_stack([window, np.full((origins.size, horizon), np.nan)])
        index = history.index.append(self.future_index(history, horizon))
        for h in range(horizon):
            lags = window[:, [depth + h - lag for lag in self.lags]]
            calendar = calendar_features(index[origins + h], self.timezone, self.regions).to_numpy()
            window[:, depth + h] = self.booster_.inplace_predict(np.column_stack([lags, calendar]))
        return window[:, depth:]


class _RelativeLags(XGBoostLags):
    """The recursive one-step lag model in Helios' ensemble, on changes rather than levels.

    Lags and target are taken relative to the last observed value before the target (the anchor),
    so the trees forecast a change: unlike the raw-level reference they stay right after a level
    shift (a launch nobody posted, a new fleet size) that takes the series beyond the range they were
    trained on. The anchor itself is a feature too, for series whose changes depend on their level.
    """

    kind: ClassVar[str] = "xgboost_relative"  # internal: not in FORECASTERS

    def _rows(self, window: np.ndarray, at: int) -> tuple[np.ndarray, np.ndarray]:
        """Relative lag matrix for the target in column ``at`` of ``window`` and its anchor."""
        lags = window[:, [at - lag for lag in self.lags]]
        anchor = last_observed_rows(window[:, :at])
        return lags - anchor[:, None], anchor

    def _fit_point_model(self, history, base: xgb.Booster | None = None):
        """Fit the booster, continuing ``base`` when given (``warm_start``)."""
        values, positions, lags = self._training_rows(history)
        # the anchor: the latest observed value among the recent lags (lag 1 unless it is missing)
        recent = lags[:, : len(self.lags) - 1]
        anchor = last_observed_rows(recent[:, ::-1])
        keep = np.isfinite(anchor)
        calendar = calendar_features(history.index[positions[keep]], self.timezone, self.regions).to_numpy()
        design = np.column_stack([lags[keep] - anchor[keep, None], anchor[keep], calendar])
        params = {"max_depth": 6, "eta": 0.1, "subsample": 0.8, "nthread": XGB_THREADS, "seed": self.seed, "max_bin": 64}
        train = xgb.DMatrix(design, label=values[positions[keep]] - anchor[keep])
        self.booster_ = boost(params, train, self.n_estimators, base)

    def _point_forecasts(self, history, origins, horizon):
        depth = max(self.lags)
        values = history.to_numpy()
        source = origins[:, None] - depth + np.arange(depth)[None, :]  # the last ``depth`` values
        window = np.where(source >= 0, values[np.clip(source, 0, None)], np.nan)
        window = np.column_stack([window, np.full((origins.size, horizon), np.nan)])
        index = history.index.append(self.future_index(history, horizon))
        targets = (origins[:, None] + np.arange(horizon)[None, :]).ravel()
        calendar = calendar_features(index[targets], self.timezone, self.regions).to_numpy()
        calendar = calendar.reshape(origins.size, horizon, -1)
        for h in range(horizon):
            lags, anchor = self._rows(window, depth + h)
            step = self.booster_.inplace_predict(np.column_stack([lags, anchor, calendar[:, h]]))
            window[:, depth + h] = anchor + step
        return window[:, depth:]


def last_observed_rows(matrix: np.ndarray) -> np.ndarray:
    """Per row, the last finite value (NaN if none)."""
    finite = np.isfinite(matrix)
    last = matrix.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
    out = matrix[np.arange(matrix.shape[0]), last]
    return np.where(finite.any(axis=1), out, np.nan)
