"""Prometheus' own forecasting functions, computed as Prometheus computes them: what users have today."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.point import PointForecaster


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
