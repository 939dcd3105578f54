"""Prophet as the integration guide means it, wrapped to the forecaster contract (fitted on 15-minute
means on the tenant's clock, intervals from its own errors)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar, Self

import pandas as pd

from helios_pipelines.core.ml.features import as_utc_index, calendar_features
from helios_pipelines.core.ml.models.base import (
    Forecaster,
    InsufficientHistoryError,
    empirical_interval,
    forecast_frame,
    on_grid,
)

# Prophet's plot module logs an ERROR when plotly is absent (Helios draws no Prophet plot: a service log
# would open with "Importing plotly failed"), and cmdstanpy chats on every fit. Quietened when this module
# is imported, which precedes any Prophet import here: a fit, and the unpickling of a served model.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
_stan_logger = logging.getLogger("cmdstanpy")
_stan_logger.addHandler(logging.NullHandler())
_stan_logger.propagate = False


def _prophet():
    """Prophet, imported when a model is fitted (its import costs a second, and most processes never fit one)."""
    from prophet import Prophet

    return Prophet


class ProphetForecaster(Forecaster):
    """Prophet as the integration guide means it, at a resolution that keeps its cost in line.

    - Fitted on means over ``fit_step`` (15 minutes by default, never finer than the tenant's step),
      placed at the centre of their bin; Prophet's curve is continuous in time, so it forecasts the
      tenant's own grid directly. At a 1-minute step that is 15 x fewer points for Stan to fit.
    - Seasonality on the tenant's wall clock (its time zone, daylight saving included: 19:00 stays
      19:00 local), plus the share of players in their evening peak hours (``regions``) as a
      known-future regressor when the tenant has regions.
    - Scheduled events: the history is divided by the schedule's multipliers (ramps included) before
      fitting, and ``Forecaster.predict`` multiplies the forecast back, as for every kind that does
      not learn events itself.
    - Intervals like Helios' own: empirical quantiles of its errors on the tenant's grid over the
      last ``calibration_share`` of the training window, instead of Prophet's sampled intervals
      (which are skipped: ``uncertainty_samples=0``).
    """

    kind: ClassVar[str] = "prophet"

    def __init__(
        self,
        *,
        regions: Sequence[tuple[str, float]] | None = None,
        fit_step: str = "15min",
        calibration_share: float = 0.2,
        seasonality: Sequence[str] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.regions = list(regions or [])
        # The metric's seasonality (hourly, daily, weekly, yearly) as Prophet's components; none: daily and weekly.
        self.seasonality = tuple(seasonality) or ("daily", "weekly")
        self.fit_step = max(pd.Timedelta(fit_step), self.step)
        self.calibration_share = calibration_share

    @property
    def min_history(self) -> int:
        return 2

    def _inputs(self, index: pd.DatetimeIndex) -> pd.DataFrame:
        """Prophet's frame: ``ds`` on the tenant's wall clock (naive), the regions' evening share."""
        frame = pd.DataFrame({"ds": as_utc_index(index).tz_convert(self.timezone).tz_localize(None)})
        if self.regions:
            calendar = calendar_features(index, self.timezone, self.regions)
            frame["players_evening"] = calendar["players_evening"].to_numpy()
        return frame

    def _deevented(self, history: pd.Series) -> pd.Series:
        profile = self.events.multiplier(history.index, self.metric).to_numpy() if len(self.events) else 1.0
        return history / profile

    def fit(self, history: pd.Series) -> Self:
        Prophet = _prophet()
        history = self._deevented(on_grid(history, self.step))
        coarse = history.resample(self.fit_step, origin="epoch").mean().dropna()
        if coarse.size < 4:
            raise InsufficientHistoryError(f"prophet for '{self.metric}' needs a few observed points to fit")
        centres = coarse.index + (self.fit_step - self.step) / 2
        frame = self._inputs(pd.DatetimeIndex(centres)).assign(y=coarse.to_numpy())
        self.model_ = Prophet(daily_seasonality="daily" in self.seasonality, weekly_seasonality="weekly" in self.seasonality,
                              yearly_seasonality="yearly" in self.seasonality, uncertainty_samples=0)
        if "hourly" in self.seasonality:  # order 1: a fit on 15-minute means has four points an hour
            self.model_.add_seasonality("hourly", period=1 / 24, fourier_order=1)
        if self.regions:
            self.model_.add_regressor("players_evening")
        self.model_.fit(frame, seed=self.seed)
        recent = history.iloc[-max(int(len(history) * self.calibration_share), 10) :].dropna()
        fitted = self.model_.predict(self._inputs(recent.index))["yhat"].to_numpy()
        self.residuals_ = recent.to_numpy() - fitted
        self.fitted_ = True
        return self

    def _predict(self, horizon, history, events, level):
        index = self.future_index(on_grid(history, self.step), horizon)
        yhat = self.model_.predict(self._inputs(index))["yhat"].to_numpy()
        lo, hi = empirical_interval(self.residuals_, level)
        return forecast_frame(index, yhat, yhat + lo, yhat + hi)
