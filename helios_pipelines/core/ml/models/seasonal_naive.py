"""The baselines every candidate must beat: the value one season ago (a day, a week)."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.base import (
    Forecaster,
    InsufficientHistoryError,
    empirical_interval,
    seasonal_period,
)


class SeasonalNaive(Forecaster):
    """The value one season ago (a day by default), with intervals from in-sample seasonal errors.

    Missing seasonal lags fall back to the last observed value.
    """

    kind: ClassVar[str] = "seasonal_naive"

    def __init__(self, *, season: str = "1D", **kwargs):
        super().__init__(**kwargs)
        self.season = season

    @property
    def period(self) -> int:
        return seasonal_period(self.step, self.season)

    @property
    def min_history(self) -> int:
        return self.period

    def fit(self, history: pd.Series) -> Self:
        values = history.to_numpy(dtype=float)
        p = self.period
        if values.size <= p:
            raise InsufficientHistoryError(
                f"seasonal naive for '{self.metric}' needs more than {p} points, got {values.size}"
            )
        # Residuals by lead time: the error of "value one season ago" does not depend on the lead
        # within the season, so one distribution serves every horizon.
        self.residuals_ = values[p:] - values[:-p]
        self.residuals_ = self.residuals_[np.isfinite(self.residuals_)]
        self.fitted_ = True
        return self

    def _predict(self, horizon, history, events, level):
        index = self.future_index(history, horizon)
        lagged = history.reindex(index - pd.Timedelta(self.season))
        last = history.dropna().iloc[-1]
        yhat = lagged.fillna(last).to_numpy(dtype=float)
        lo, hi = empirical_interval(self.residuals_, level)
        return pd.DataFrame(
            {"timestamp": index, "yhat": yhat, "yhat_lower": yhat + lo, "yhat_upper": yhat + hi}
        )


class SeasonalNaiveWeekly(SeasonalNaive):
    """The value one week ago: the baseline for series whose weekdays differ from weekends."""

    kind: ClassVar[str] = "seasonal_naive_weekly"

    def __init__(self, **kwargs):
        super().__init__(season="7D", **kwargs)
