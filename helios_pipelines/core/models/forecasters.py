"""Every forecaster kind the pipeline and the benchmark compare, and the factory that builds them.

Reference methods are what users already have, implemented as their tools compute them: seasonal
naive (a day, a week ago), Prometheus' ``predict_linear`` and ``double_exponential_smoothing``,
Prophet (on the tenant's clock, fitted on 15-minute means) and XGBoost on lags. ``helios`` is ours
(see ``HeliosForecaster``). The benchmark's own references are in ``benchmarks/references.py``.

Intervals of the reference methods come from their own errors at each lead time, measured at
origins in the last part of the training data (Prophet: its errors over the last part).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Self

# OpenMP threads that spin while waiting make a 2-thread XGBoost fit about 6x slower whenever the
# machine is busy with anything else (a Dagster run next door, a test suite); passive waiting costs
# nothing when it is idle. It only takes effect if set before OpenMP loads, i.e. before xgboost.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xgboost as xgb  # noqa: E402

from helios_pipelines.core.events import EventSchedule
from helios_pipelines.core.features import (
    as_utc_index,
    calendar_features,
    centred_mean,
    lagged,
    last_observed,
    trailing_mean,
)
from helios_pipelines.core.models.base import (
    Forecaster,
    InsufficientHistoryError,
    SeasonalNaive,
    empirical_interval,
    seasonal_period,
)

CALIBRATION_ORIGINS = 200  # origins at which a reference method measures its own errors
XGB_THREADS = 2


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


def _forecast_frame(index: pd.DatetimeIndex, yhat, lower, upper) -> pd.DataFrame:
    yhat = np.asarray(yhat, dtype=float)
    # Quantile offsets of a skewed error distribution can both sit on one side of the point forecast;
    # the contract keeps yhat inside its interval.
    lower = np.minimum(np.asarray(lower, dtype=float), yhat)
    upper = np.maximum(np.asarray(upper, dtype=float), yhat)
    return pd.DataFrame({"timestamp": index, "yhat": yhat, "yhat_lower": lower, "yhat_upper": upper})


class SeasonalNaiveWeekly(SeasonalNaive):
    """The value one week ago: the baseline for series whose weekdays differ from weekends."""

    kind: ClassVar[str] = "seasonal_naive_weekly"

    def __init__(self, **kwargs):
        super().__init__(season="7D", **kwargs)


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
        return _forecast_frame(self.future_index(history, horizon), yhat, yhat + lo, yhat + hi)


class PredictLinear(PointForecaster):
    """Prometheus ``predict_linear(v[window], t)``.

    Ordinary least squares of value on time over the samples in the window ending at the origin,
    with the intercept taken at the origin (as Prometheus does), extrapolated ``t`` seconds ahead.
    Missing samples are simply absent from the window, as in a Prometheus range vector.
    """

    kind: ClassVar[str] = "predict_linear"

    def __init__(self, *, window: str = "1h", **kwargs):
        super().__init__(**kwargs)
        self.window = pd.Timedelta(window)

    def _point_forecast(self, history, horizon):
        origin = history.index[-1]
        recent = history[history.index > origin - self.window].dropna()
        x = (recent.index - origin).total_seconds().to_numpy()
        y = recent.to_numpy()
        if y.size < 2:
            # Prometheus returns nothing for fewer than two samples; flat is the graceful answer.
            slope, intercept = 0.0, float(history.dropna().iloc[-1])
        else:
            slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
            intercept = float(y.mean() - slope * x.mean())
        ahead = self.step.total_seconds() * np.arange(1, horizon + 1)
        return intercept + slope * ahead


class PrometheusHolt(PointForecaster):
    """Prometheus ``double_exponential_smoothing(v[window], sf, tf)`` (``holt_winters`` before 3.0).

    The recursion is Prometheus' own: the level starts at the first sample, the trend at the first
    difference, and the trend update uses the previous two smoothed values. Prometheus returns the
    smoothed level, so that is the forecast at every lead time; ``extrapolate_trend`` adds the
    trend Prometheus computes internally (a textbook Holt forecast) for comparison.
    """

    kind: ClassVar[str] = "holt"

    def __init__(
        self,
        *,
        window: str = "1h",
        sf: float = 0.3,
        tf: float = 0.1,
        extrapolate_trend: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not (0 < sf < 1 and 0 < tf < 1):
            raise ValueError(f"smoothing and trend factors must be in (0, 1), got sf={sf}, tf={tf}")
        self.window, self.sf, self.tf = pd.Timedelta(window), sf, tf
        self.extrapolate_trend = extrapolate_trend

    def _point_forecast(self, history, horizon):
        origin = history.index[-1]
        samples = history[history.index > origin - self.window].dropna().to_numpy()
        if samples.size < 2:
            return np.full(horizon, float(history.dropna().iloc[-1]))
        sf, tf = self.sf, self.tf
        s0, s1, trend = 0.0, samples[0], samples[1] - samples[0]
        for i in range(1, samples.size):
            if i > 1:  # Prometheus' calcTrendValue keeps the initial trend at the first step
                trend = tf * (s1 - s0) + (1 - tf) * trend
            s0, s1 = s1, sf * samples[i] + (1 - sf) * (s1 + trend)
        if self.extrapolate_trend:
            return s1 + trend * np.arange(1, horizon + 1)
        return np.full(horizon, s1)


def _quiet_prophet():
    """Import Prophet without its plotly warning and with cmdstanpy's chatter silenced."""
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    stan_logger = logging.getLogger("cmdstanpy")
    if not any(isinstance(h, logging.NullHandler) for h in stan_logger.handlers):
        stan_logger.addHandler(logging.NullHandler())
    stan_logger.propagate = False
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
        Prophet = _quiet_prophet()
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
        return _forecast_frame(index, yhat, yhat + lo, yhat + hi)


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

    def _fit_point_model(self, history):
        values, positions, lags = self._training_rows(history)
        # the anchor: the latest observed value among the recent lags (lag 1 unless it is missing)
        recent = lags[:, : len(self.lags) - 1]
        anchor = last_observed_rows(recent[:, ::-1])
        keep = np.isfinite(anchor)
        calendar = calendar_features(history.index[positions[keep]], self.timezone, self.regions).to_numpy()
        design = np.column_stack([lags[keep] - anchor[keep, None], anchor[keep], calendar])
        params = {"max_depth": 6, "eta": 0.1, "subsample": 0.8, "nthread": XGB_THREADS, "seed": self.seed, "max_bin": 64}
        train = xgb.DMatrix(design, label=values[positions[keep]] - anchor[keep])
        self.booster_ = xgb.train(params, train, self.n_estimators)

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


class HeliosForecaster(Forecaster):
    """Helios' forecaster: an ensemble around a direct multi-horizon XGBoost, with conformal
    intervals and learned events.

    The forecast blends, per lead time, the direct model below, a recursive one-step lag model on
    changes (``_RelativeLags``, the first ``recursive_steps`` lead times) and the seasonal naive
    forecasts of the change over a day and a week; the weights are learned on the calibration slice
    (``_blend_weights``), and the conformal intervals come from the blend's errors there.

    The direct model serves every lead time (the lead time is a feature), so none of its forecasts
    feeds on its own errors. Each training row is an (origin, lead time) pair; values are expressed relative to the
    level at the origin in units of the series' typical one-step change, which makes the model
    indifferent to level shifts and to the series' units. Features: recent lags, the trailing hour
    and day, local volatility, what happened over the same stretch a day and a week earlier (smoothed,
    as a change from the origin's clock time to the target's), and the target time's calendar on the
    tenant's clocks. The week lag is used when the history reaches back that far; origins early in
    the training data have none, so the model also learns to do without it.

    Scheduled events: the series is divided by each event's multiplier before training and
    forecasting, and forecasts are multiplied back. A kind's multiplier is learned from its past
    occurrences in the training data (against the same hours a week or a day earlier); kinds with
    none use the configured multiplier.

    Intervals are split-conformal: first models are fitted without the last ``calibration_share``
    of the data, the blend's errors on that slice (per lead time, scaled by the local volatility at the
    origin) give the quantiles, and the final models are refitted on everything.
    """

    kind: ClassVar[str] = "helios"
    models_events: ClassVar[bool] = True
    RECENT_LAGS: ClassVar[tuple[int, ...]] = (0, 1, 2, 3, 5, 8)
    BOOSTER_PARAMS: ClassVar[dict] = {
        "max_depth": 6,
        "eta": 0.05,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 5,
        # Huber: squared near the forecast, linear in the tails, so outliers in the training window
        # cannot drag the model; the slope is one typical one-step change (targets are in that unit).
        "objective": "reg:pseudohubererror",
        "huber_slope": 1.0,
        # 64 histogram bins instead of 256: about 40 % faster to train, no loss we could measure.
        "max_bin": 64,
    }

    def __init__(
        self,
        *,
        regions: Sequence[tuple[str, float]] | None = None,
        n_estimators: int = 300,
        max_train_rows: int = 30000,
        calibration_share: float = 0.2,
        blend: bool = True,
        # Ablations the forecast suite rejected (bench/results/forecast.md), kept so they reproduce:
        naive_member: bool = False,  # the last value as a fifth member: worse on 5 of 7 series
        prophet_member: bool = False,  # Prophet (15-min fit) as a member: no gain, twice the fit
        recursive_estimators: int = 200,
        recursive_steps: int = 24,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.regions = list(regions or [])
        self.n_estimators = n_estimators
        self.max_train_rows = max_train_rows
        self.calibration_share = calibration_share
        self.blend = blend
        self.naive_member = naive_member
        self.prophet_member = prophet_member
        self.recursive_estimators = recursive_estimators
        self.recursive_steps = recursive_steps

    # ---- periods in steps ---------------------------------------------------------------------
    @property
    def hour(self) -> int:
        return max(2, seasonal_period(self.step, "1h"))

    @property
    def day(self) -> int:
        return seasonal_period(self.step, "1D")

    @property
    def week(self) -> int:
        return seasonal_period(self.step, "7D")

    @property
    def smoothing(self) -> int:
        """Half-width of the window that smooths a seasonal lag (about 10 minutes)."""
        return max(1, seasonal_period(self.step, "10min"))

    @property
    def min_history(self) -> int:
        """A day and an hour: the day lag of every lead time. The week lag needs a week more (optional)."""
        return self.day + self.hour

    @property
    def full_history(self) -> int:
        """History at which predict has every feature, week lag included."""
        return self.week + self.hour

    def manifest(self) -> dict:
        return super().manifest() | {"multipliers": getattr(self, "multipliers_", {})}

    # ---- events -------------------------------------------------------------------------------
    def _event_profile(self, index: pd.DatetimeIndex, events: EventSchedule) -> np.ndarray:
        """Multiplier in force at each timestamp, ramps included: learned per kind where possible, else
        configured."""
        profile = np.ones(len(index))
        if len(events) == 0 or len(index) == 0:
            return profile
        for occ in events.occurrences(index[0], index[-1] + self.step):
            if occ.applies_to(self.metric):
                profile *= occ.factor(index, self.multipliers_.get(occ.kind))
        return profile

    def _learn_multipliers(self, history: pd.Series) -> dict[str, float]:
        """Each kind's effect from its past occurrences in ``history``.

        An occurrence is compared with the same hours a week before and after it, where those are
        in the history and free of events; failing that, a day before and after (weekly recurring
        events have a busy week on both sides). Before and after together cancel a trend and, for
        days, most of a weekday effect. A kind's multiplier is the median over its occurrences.
        """
        index, values = history.index, history.to_numpy()
        occurrences = [
            o for o in self.events.occurrences(index[0], index[-1] + self.step) if o.applies_to(self.metric)
        ]
        busy = np.zeros(len(index), dtype=bool)
        for occ in occurrences:
            busy |= (index >= occ.start) & (index < occ.end)
        log_ratios: dict[str, list[float]] = {}
        for occ in occurrences:
            inside = np.flatnonzero((index >= occ.start) & (index < occ.end))
            if inside.size < max(3, self.hour // 2):
                continue  # too little of it in the window to say anything
            during = np.nanmedian(values[inside])
            for period in (self.week, self.day):
                references = []
                for shift in (-period, period):
                    reference = inside + shift
                    if reference[0] >= 0 and reference[-1] < len(values) and not busy[reference].any():
                        references.append(np.nanmedian(values[reference]))
                references = [r for r in references if np.isfinite(r) and r > 0]
                if references and np.isfinite(during) and during > 0:
                    log_ratios.setdefault(occ.kind, []).append(
                        float(np.mean(np.log(during / np.array(references))))
                    )
                    break
        return {kind: float(np.exp(np.median(r))) for kind, r in log_ratios.items()}

    @staticmethod
    def _level(values: np.ndarray) -> np.ndarray:
        """The level forecasts are relative to: the last three points, else the last observed one."""
        level = trailing_mean(values, 3)
        return np.where(np.isfinite(level), level, last_observed(values))

    # ---- design -------------------------------------------------------------------------------
    def _design(self, values: np.ndarray, index: pd.DatetimeIndex, origins: np.ndarray, leads: np.ndarray):
        """Feature matrix, the origin's level and its volatility for (origin, lead) pairs.

        ``values`` are de-evented and may be shorter than ``index`` (the future part of a predict).
        Only values at or before each origin are read; the seasonal lags are read at least a day
        (minus the smoothing half-width) before the target, which is before the origin.
        """
        scale = self.scale_
        level_now = self._level(values)
        level = level_now[origins]
        targets = origins + leads

        def rel(x):
            return (x - level) / scale

        columns = [leads.astype(float)]
        columns += [rel(lagged(values, origins, j)) for j in self.RECENT_LAGS]
        columns += [
            rel(trailing_mean(values, self.hour)[origins]),
            rel(trailing_mean(values, self.day)[origins]),
        ]
        # Smoothed levels (as Holt's level): on noisy series they say more than any single lag.
        for alpha in (0.3, 0.1):
            columns.append(rel(pd.Series(values).ewm(alpha=alpha, ignore_na=True).mean().to_numpy()[origins]))
        volatility = trailing_mean(np.abs(np.diff(values, prepend=np.nan)), self.hour)[origins] / scale
        columns.append(volatility)
        smooth = centred_mean(values, self.smoothing)
        for period in (self.day, self.week):
            then_origin = lagged(smooth, origins, period)
            then_target = lagged(smooth, targets, period)
            then_target[targets - period + self.smoothing > origins] = np.nan
            columns += [rel(then_origin), (then_target - then_origin) / scale]
        # Echoes: the target's own slot one period back (the latest such point at or before the
        # origin). Infrastructure load repeats at fixed clock minutes (cron jobs, batch windows),
        # which smoothing would erase; the hourly profile averages that slot's deviation from its
        # hour over the last few hours.
        deviation = values - trailing_mean(values, self.hour)
        for period in (self.hour, self.day, self.week):
            back = np.ceil(leads / period).astype(int) * period
            columns.append(rel(lagged(values, targets, back)))
        back = np.ceil(leads / self.hour).astype(int) * self.hour
        echoes = np.column_stack([lagged(deviation, targets, back + k * self.hour) for k in range(6)])
        seen = np.isfinite(echoes).sum(axis=1)
        profile = np.where(seen > 0, np.nansum(echoes, axis=1) / np.maximum(seen, 1), np.nan)
        columns.append(profile / scale)
        calendar = calendar_features(index[targets], self.timezone, self.regions).to_numpy()
        design = np.column_stack(columns + [calendar])
        return design, level, volatility

    def _training_pairs(self, end: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """A seeded sample of at most ``max_train_rows`` (origin, lead) pairs whose target is before ``end``."""
        origins = np.arange(self.hour, end - 1)
        leads = np.arange(1, self.max_horizon + 1)
        pairs = origins.size * leads.size
        pick = rng.choice(pairs, min(pairs, self.max_train_rows), replace=False)
        o, h = origins[pick // leads.size], leads[pick % leads.size]
        keep = o + h < end
        return o[keep], h[keep]

    def _train(self, values: np.ndarray, index: pd.DatetimeIndex, end: int, rng) -> xgb.Booster:
        origins, leads = self._training_pairs(end, rng)
        target = values[origins + leads]
        known = np.isfinite(target)
        origins, leads = origins[known], leads[known]
        design, level, _ = self._design(values[:end], index, origins, leads)
        label = (target[known] - level) / self.scale_
        usable = np.isfinite(label)
        params = self.BOOSTER_PARAMS | {"nthread": XGB_THREADS, "seed": self.seed}
        return xgb.train(params, xgb.DMatrix(design[usable], label=label[usable]), self.n_estimators)

    def _predict_grid(self, booster, values, index, origins, leads) -> tuple[np.ndarray, np.ndarray]:
        design, level, volatility = self._design(values, index, origins, leads)
        return level + booster.inplace_predict(design) * self.scale_, volatility

    # ---- fit / predict ------------------------------------------------------------------------
    def fit(self, history: pd.Series) -> Self:
        history = on_grid(history, self.step)
        n = len(history)
        calibration = max(int(n * self.calibration_share), self.max_horizon + 1)
        if history.notna().sum() < self.min_history + calibration or n - calibration < self.min_history:
            raise InsufficientHistoryError(
                f"helios for '{self.metric}' needs about {self.min_history + calibration} observed points "
                f"(a day, an hour and a calibration slice), got {int(history.notna().sum())}"
            )
        clock = time.perf_counter
        started = clock()
        self.multipliers_ = self._learn_multipliers(history)
        values = history.to_numpy() / self._event_profile(history.index, self.events)
        events_done = clock()
        steps = np.abs(np.diff(values))
        self.scale_ = float(np.nanmean(steps)) if np.isfinite(steps).any() else 0.0
        if not self.scale_ > 0:
            self.scale_ = float(np.nanstd(values)) or 1.0
        rng = np.random.default_rng(self.seed)

        # Split conformal: errors of models that never saw the calibration slice. The same slice
        # learns the ensemble's weights per lead time.
        split = n - calibration
        calibration_model = self._train(values, history.index, split, rng)
        recursive = self._train_recursive(values, history.index, split)
        calibration_fitted = clock()
        origins = np.arange(split - 1, n - 1)
        origins = origins[np.unique(np.linspace(0, origins.size - 1, 1000).astype(int))]
        leads = np.arange(1, self.max_horizon + 1)
        o, h = np.repeat(origins, leads.size), np.tile(leads, origins.size)
        inside = o + h < n
        actual = np.full(o.size, np.nan)
        actual[inside] = values[(o + h)[inside]]
        actual = actual.reshape(origins.size, leads.size)
        # The last origins' targets run past the end (NaN, not scored); their calendar is still known.
        index = history.index.append(self.future_index(history, self.max_horizon))
        prophet = self._train_prophet(values, history.index, split)
        members, volatility = self._members(calibration_model, recursive, values, index, origins, leads, prophet)
        self.weights_ = self._blend_weights(actual, members)
        forecast = self._combine(members)
        valid = volatility[:, 0]
        self.volatility_floor_ = float(np.nanquantile(valid, 0.1)) if np.isfinite(valid).any() else 1.0
        # NaN where the target is missing or past the end
        self.residuals_ = (actual - forecast) / self._spread(volatility)
        calibrated = clock()

        self.booster_ = self._train(values, history.index, n, rng)
        self.recursive_ = self._train_recursive(values, history.index, n)
        self.prophet_ = self._train_prophet(values, history.index, n)
        # Where a fit's time goes, for the benchmark and the training run's log.
        self.fit_seconds_ = {
            "events": events_done - started,
            "calibration_models": calibration_fitted - events_done,
            "calibration_errors": calibrated - calibration_fitted,
            "final_models": clock() - calibrated,
        }
        self.fitted_ = True
        return self

    # ---- the recursive one-step model and the blend ---------------------------------------------
    def _train_recursive(self, values: np.ndarray, index: pd.DatetimeIndex, end: int) -> _RelativeLags | None:
        """The one-step lag model (applied recursively) on the de-evented values before ``end``.

        It reads the last hour point by point, which is what the first lead times need most; the
        direct model reads the day and the week, which the later ones need. Their blend beats both.
        """
        if not self.blend:
            return None
        model = _RelativeLags(
            step=self.step,
            max_horizon=self.max_horizon,
            timezone=self.timezone,
            regions=self.regions,
            n_estimators=self.recursive_estimators,
            max_train_rows=self.max_train_rows,
            seed=self.seed,
        )
        if end <= model.min_history + 1:
            return None
        model._fit_point_model(pd.Series(values[:end], index=index[:end]))
        return model

    def _train_prophet(self, values: np.ndarray, index: pd.DatetimeIndex, end: int) -> ProphetForecaster | None:
        """Prophet on the de-evented values before ``end`` (``prophet_member``): its curve depends on the
        clock only, so one predict call gives its forecast for every (origin, lead) of the slice."""
        if not getattr(self, "prophet_member", False):
            return None
        model = ProphetForecaster(
            step=self.step, max_horizon=self.max_horizon, timezone=self.timezone, regions=self.regions,
            metric=self.metric, seed=self.seed,
        )
        return model.fit(pd.Series(values[:end], index=index[:end]))

    def _members(self, booster, recursive, values, index, origins, leads, prophet=None):
        """Every ensemble member's (origins x leads) forecasts, and the volatility at each origin.

        Members: the direct model, the recursive one-step model, and the seasonal naive forecasts
        of the change (the last value plus the change from the origin's clock time to the target's,
        a day and a week earlier: ``y[t] + y[t+h-P] - y[t-P]``), and (``naive_member``) the last
        observed value. A member that cannot be computed (no week of history, a gap) is NaN there and
        the others share its weight.
        """
        o, h = np.repeat(origins, leads.size), np.tile(leads, origins.size)
        shape = (origins.size, leads.size)
        direct, volatility = self._predict_grid(booster, values, index, o, h)
        columns = [direct.reshape(shape)]
        recursive_part = np.full(shape, np.nan)
        if recursive is not None:
            # Only the first RECURSIVE_STEPS lead times: that is where it helps, and each step is
            # one booster call at predict time.
            reach = min(leads.size, self.recursive_steps)
            series = pd.Series(values[: origins.max() + 1], index=index[: origins.max() + 1])
            recursive_part[:, :reach] = recursive._point_forecasts(series, origins + 1, reach)
        columns.append(recursive_part)
        last = last_observed(values)[o]
        for period in (self.day, self.week):
            change = lagged(values, o + h, period) - lagged(values, o, period)
            change[o + h - period > o] = np.nan  # never read past the origin (leads beyond a period)
            columns.append((last + change).reshape(shape))
        if prophet is not None:
            first = int(origins.min()) + 1
            curve = np.full(len(index), np.nan)
            curve[first:] = prophet.model_.predict(prophet._inputs(index[first:]))["yhat"].to_numpy()
            columns.append(curve[o + h].reshape(shape))
        if getattr(self, "naive_member", False):
            # The last observed value: what wins on flat and spiky series (a disk idle between bursts,
            # a CPU pinned at a level), where every learned member adds noise of its own.
            columns.append(last.reshape(shape))
        return np.stack(columns, axis=-1), volatility.reshape(shape)

    @staticmethod
    def _simplex(members: int, step: float = 0.1) -> np.ndarray:
        """All weight vectors on a grid of ``step`` over the simplex (non-negative, summing to one)."""
        n = round(1 / step)
        grid = [c for c in np.ndindex(*(n + 1,) * (members - 1)) if sum(c) <= n]
        return np.array([[*c, n - sum(c)] for c in grid], dtype=float) / n

    def _blend_weights(self, actual: np.ndarray, members: np.ndarray) -> np.ndarray:
        """(leads x members) weights: per lead time, the grid point of the simplex with the lowest
        MAE on the calibration slice (a handful of numbers each learned from about 1000 origins).
        Members missing on most of the slice are left out; the direct model alone if nothing else."""
        weights = np.zeros(members.shape[1:])
        weights[:, 0] = 1.0
        if not self.blend:
            return weights
        for j in range(members.shape[1]):
            a, m = actual[:, j], members[:, j, :]
            usable = [k for k in range(m.shape[1]) if np.isfinite(m[:, k]).mean() > 0.9]
            rows = np.isfinite(a) & np.isfinite(m[:, usable]).all(axis=1)
            if rows.sum() < 50 or usable == [0]:
                continue
            grid = self._simplex(len(usable))
            errors = np.abs(a[rows, None] - m[rows][:, usable] @ grid.T).mean(axis=0)
            weights[j] = 0.0
            weights[j, usable] = grid[int(np.argmin(errors))]
        return weights

    def _combine(self, members: np.ndarray) -> np.ndarray:
        """(origins x leads) blend; where a member is missing the others share its weight."""
        w = np.broadcast_to(self.weights_[None, : members.shape[1], :], members.shape)
        w = np.where(np.isfinite(members), w, 0.0)
        total = w.sum(axis=-1)
        blended = np.nansum(np.where(w > 0, members, 0.0) * w, axis=-1) / np.where(total > 0, total, 1.0)
        return np.where(total > 0, blended, members[..., 0])

    def _spread(self, volatility: np.ndarray) -> np.ndarray:
        """Interval scale at an origin: its local volatility, floored so calm spells keep some width."""
        return self.scale_ * np.maximum(
            np.nan_to_num(volatility, nan=self.volatility_floor_), self.volatility_floor_
        )

    def _predict(self, horizon, history, events, level):
        history = on_grid(history, self.step)
        history = history.iloc[-(self.full_history + self.day) :]  # enough for every feature
        future = self.future_index(history, horizon)
        index = history.index.append(future)
        values = history.to_numpy() / self._event_profile(history.index, events)
        leads = np.arange(1, horizon + 1)
        members, volatility = self._members(
            self.booster_, self.recursive_, values, index, np.array([len(history) - 1]), leads,
            getattr(self, "prophet_", None),
        )
        forecast, volatility = self._combine(members)[0], volatility[0]
        lo, hi = step_intervals(self.residuals_[:, :horizon], level)
        spread = self._spread(volatility)
        profile = self._event_profile(future, events)
        return _forecast_frame(
            future, forecast * profile, (forecast + lo * spread) * profile, (forecast + hi * spread) * profile
        )


FORECASTERS: dict[str, type[Forecaster]] = {
    cls.kind: cls
    for cls in (
        SeasonalNaive,
        SeasonalNaiveWeekly,
        PredictLinear,
        PrometheusHolt,
        ProphetForecaster,
        XGBoostLags,
        HeliosForecaster,
    )
}
# Kinds that take the players' regions (their evening share as a known-future input). Helios does not:
# on the forecast suite's simulated tenants it made 5 of 7 series worse (bench/results/forecast.md);
# Prophet does (better on shopfast, neutral on gaming-corp).
REGION_KINDS = frozenset({XGBoostLags.kind, ProphetForecaster.kind})
# Kinds that take the metric's seasonality (its config's seasonality list); the others learn theirs from lags.
SEASONALITY_KINDS = frozenset({ProphetForecaster.kind})


def make_forecaster(kind: str, **kwargs: Any) -> Forecaster:
    """Build a forecaster by kind. ``regions`` (players' time zones) only goes to REGION_KINDS and
    ``seasonality`` to SEASONALITY_KINDS, dropped for the others: the pipeline can pass one set of
    arguments to all."""
    try:
        cls = FORECASTERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown forecaster kind '{kind}'; known kinds: {', '.join(sorted(FORECASTERS))}"
        ) from None
    if kind not in REGION_KINDS:
        kwargs.pop("regions", None)
    if kind not in SEASONALITY_KINDS:
        kwargs.pop("seasonality", None)
    return cls(**kwargs)
