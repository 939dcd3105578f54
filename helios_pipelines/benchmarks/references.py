"""Reference forecasters that exist for the benchmark only: the bar Helios' forecaster must clear.

- ``xgboost_direct``: the plain direct XGBoost a data scientist writes first (issue #18): one model
  per lead time, features the 12 most recent values at the origin, the values one day and one week
  before the target, and the target's hour of day and day of week; 300 trees, depth 6, lr 0.05.
- ``mstl_ets`` / ``mstl_theta``: statsforecast's MSTL (daily, and weekly where two weeks of history
  exist) with an AutoETS or AutoTheta trend, the statistical methods one would reach for instead.

Intervals: the direct XGBoost takes them from its own errors per lead time (as the other point
references); the statsforecast models use their own prediction intervals.
"""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import pandas as pd
import xgboost as xgb

from helios_pipelines.core.ml.features import as_utc_index, lagged
from helios_pipelines.core.ml.models import XGB_THREADS
from helios_pipelines.core.ml.models.base import (
    Forecaster,
    InsufficientHistoryError,
    SeasonalPeriods,
    forecast_frame,
    on_grid,
)
from helios_pipelines.core.ml.models.point import PointForecaster

RECENT = 12


class DirectXGBoost(SeasonalPeriods, PointForecaster):
    """One XGBoost per lead time on the 12 latest values, the target's day and week lags and clock."""

    kind: ClassVar[str] = "xgboost_direct"
    PARAMS: ClassVar[dict] = {"max_depth": 6, "eta": 0.05, "nthread": XGB_THREADS}
    TREES: ClassVar[int] = 300

    @property
    def min_history(self) -> int:
        return RECENT

    @property
    def full_history(self) -> int:
        return self.week + self.max_horizon

    def _features(self, values: np.ndarray, index: pd.DatetimeIndex, origins: np.ndarray, lead: int) -> np.ndarray:
        """Rows for origins ``o`` (forecasting position ``o + lead - 1`` from ``values[:o]``)."""
        targets = origins + lead - 1
        recent = [lagged(values, origins, k) for k in range(1, RECENT + 1)]
        seasonal = [lagged(values, targets, self.day), lagged(values, targets, self.week)]
        local = as_utc_index(index[targets]).tz_convert(self.timezone)
        return np.column_stack(recent + seasonal + [local.hour.to_numpy(), local.dayofweek.to_numpy()]).astype(float)

    def _fit_point_model(self, history):
        values, index = history.to_numpy(), history.index
        self.boosters_ = []
        for lead in range(1, self.max_horizon + 1):
            origins = np.arange(RECENT, len(values) - lead + 1)
            target = values[origins + lead - 1]
            keep = np.isfinite(target)
            design = self._features(values, index, origins[keep], lead)
            params = self.PARAMS | {"seed": self.seed}
            self.boosters_.append(xgb.train(params, xgb.DMatrix(design, label=target[keep]), self.TREES))

    def _point_forecasts(self, history, origins, horizon):
        values = history.to_numpy()
        index = history.index.append(self.future_index(history, horizon))
        return np.column_stack([
            self.boosters_[lead - 1].inplace_predict(self._features(values, index, origins, lead))
            for lead in range(1, horizon + 1)
        ])


class _StatsforecastMSTL(SeasonalPeriods, Forecaster):
    """statsforecast's MSTL with a trend model; fitted on the (gap-interpolated) history it is given."""

    trend: ClassVar[str]
    MAX_DAYS: ClassVar[int] = 15  # MSTL's cost grows with length; 15 days hold two weekly cycles

    @property
    def min_history(self) -> int:
        return 2 * self.day

    def _model(self, length: int):
        from statsforecast.models import MSTL, AutoETS, AutoTheta

        day, week = self.day, self.week
        seasons = [day, week] if length >= 2 * week + day else [day]
        trend = AutoETS(model="ZZN") if self.trend == "ets" else AutoTheta()
        return MSTL(season_length=seasons, trend_forecaster=trend)

    def _values(self, history: pd.Series) -> tuple[pd.Series, np.ndarray]:
        history = on_grid(history, self.step)
        history = history.iloc[-self.MAX_DAYS * self.day :]
        filled = history.interpolate(limit_direction="both").to_numpy()
        return history, filled

    def fit(self, history: pd.Series) -> Self:
        history, values = self._values(history)
        if np.isfinite(values).sum() < self.min_history:
            raise InsufficientHistoryError(f"{self.kind} needs two days of history, got {len(values)} points")
        self.model_ = self._model(len(values)).fit(values)
        self.fitted_end_ = history.index[-1]
        self.fitted_ = True
        return self

    def _predict(self, horizon, history, events, level):
        history, values = self._values(history)
        model = self.model_ if history.index[-1] == self.fitted_end_ else self._model(len(values)).fit(values)
        tag = round(level * 100)
        out = model.predict(h=horizon, level=[tag])
        return forecast_frame(
            self.future_index(history, horizon), out["mean"], out[f"lo-{tag}"], out[f"hi-{tag}"]
        )


class MSTLAutoETS(_StatsforecastMSTL):
    kind: ClassVar[str] = "mstl_ets"
    trend: ClassVar[str] = "ets"


class MSTLAutoTheta(_StatsforecastMSTL):
    kind: ClassVar[str] = "mstl_theta"
    trend: ClassVar[str] = "theta"


REFERENCES: dict[str, type[Forecaster]] = {cls.kind: cls for cls in (DirectXGBoost, MSTLAutoETS, MSTLAutoTheta)}
