"""Prometheus' own forecasting functions, computed as Prometheus computes them: what users have today."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.features import last_observed
from helios_pipelines.core.ml.models.point import PointForecaster


class PredictLinear(PointForecaster):
    """Prometheus ``predict_linear(v[window], t)``.

    Ordinary least squares of value on time over the samples in the window ending at the origin,
    with the intercept taken at the origin (as Prometheus does), extrapolated ``t`` seconds ahead.
    Missing samples are simply absent from the window, as in a Prometheus range vector. On the grid
    the window is its last ``window / step`` points (``linear_trend``, which Helios' fallback reads too).
    """

    kind: ClassVar[str] = "predict_linear"

    def __init__(self, *, window: str = "1h", **kwargs):
        super().__init__(**kwargs)
        self.window = pd.Timedelta(window)

    def _point_forecasts(self, history, origins, horizon):
        steps = max(1, int(self.window / self.step))  # the window's samples on the grid
        values = history.to_numpy(dtype=float)
        return linear_trend(values, np.asarray(origins) - 1, steps, np.arange(1, horizon + 1))


def linear_trend(values: np.ndarray, origins: np.ndarray, window: int, leads: np.ndarray) -> np.ndarray:
    """``predict_linear`` at each origin of a grid: (origins x leads) forecasts.

    Least squares of value on time over the ``window`` points ending at each origin (missing ones
    left out, as absent samples of a range vector), taken from its fitted value at the origin and
    extrapolated ``leads`` steps ahead. Fewer than two samples: the last observed value, flat.
    """
    offsets = np.arange(1 - window, 1)
    rows = origins[:, None] + offsets[None, :]
    y = np.where(rows >= 0, values[np.clip(rows, 0, None)], np.nan)
    seen = np.isfinite(y)
    n = seen.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean = np.where(seen, offsets, 0).sum(axis=1) / n
        y_mean = np.where(seen, y, 0.0).sum(axis=1) / n
        dx = np.where(seen, offsets - x_mean[:, None], 0.0)
        dy = np.where(seen, y - y_mean[:, None], 0.0)
        slope = (dx * dy).sum(axis=1) / (dx**2).sum(axis=1)
    fitted = n >= 2
    slope = np.where(fitted, slope, 0.0)
    at_origin = np.where(fitted, y_mean - slope * x_mean, last_observed(values)[origins])
    return at_origin[:, None] + slope[:, None] * np.asarray(leads)[None, :]


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
