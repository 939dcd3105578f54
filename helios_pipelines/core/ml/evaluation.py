"""Rolling-origin backtests, forecast metrics and the promotion decision.

The pipeline scores candidates with this code and the benchmark CLI compares methods with it, so a
number in MLflow and a number in the benchmark table mean the same thing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.base import Forecaster, fit_forecaster, seasonal_period

BACKTEST_SHARE = 0.25  # origins are spread over the last quarter of the series


def _infer_step(series: pd.Series) -> pd.Timedelta:
    deltas = np.diff(series.index.asi8)
    if deltas.size == 0:
        raise ValueError("a backtest needs a series of at least two points")
    return pd.Timedelta(int(np.median(deltas)), unit="ns")


def mase_scale(train: np.ndarray, period: int) -> float:
    """In-sample MAE of the seasonal-naive forecast ``y[t-period]`` on the training part.

    Falls back to the one-step naive MAE when the training part is shorter than a period or the
    seasonal errors are all zero, so a short or flat series still gets a finite scale.
    """
    for lag in (period, 1):
        if train.size > lag:
            errors = np.abs(train[lag:] - train[:-lag])
            errors = errors[np.isfinite(errors)]
            if errors.size and errors.mean() > 0:
                return float(errors.mean())
    return float("nan")


def pinball(actual: np.ndarray, forecast: np.ndarray, quantile: float) -> np.ndarray:
    diff = actual - forecast
    return np.maximum(quantile * diff, (quantile - 1) * diff)


def _smape(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    denominator = np.abs(actual) + np.abs(forecast)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 200.0 * np.abs(actual - forecast) / denominator, 0.0)


@dataclass
class Fold:
    """One origin: what the model saw, its forecasts (per level) and the truth after the origin."""

    origin: pd.Timestamp  # first forecast timestamp; the model saw only what came before it
    scale: float
    actual: np.ndarray
    forecasts: dict[float, pd.DataFrame]
    fit_seconds: float
    predict_seconds: float


def _score(folds: Sequence[Fold], levels: Sequence[float], steps: slice) -> dict[str, float]:
    """Metrics pooled over folds and the given lead-time steps; NaN targets are left out."""
    actual = np.concatenate([f.actual[steps] for f in folds])
    scale = np.concatenate([np.full(f.actual[steps].size, f.scale) for f in folds])
    first = levels[0]
    yhat = np.concatenate([f.forecasts[first]["yhat"].to_numpy()[steps] for f in folds])
    scored = np.isfinite(actual) & np.isfinite(yhat)
    if not scored.any():
        return {"mae": math.nan, "smape": math.nan, "mase": math.nan, "pinball": math.nan, "n_scored": 0}
    a, y, s = actual[scored], yhat[scored], scale[scored]
    error = np.abs(a - y)
    losses = [pinball(a, y, 0.5)]
    result = {
        "mae": float(error.mean()),
        "smape": float(_smape(a, y).mean()),
        "mase": float((error / s).mean()),
    }
    for level in levels:
        lower = np.concatenate([f.forecasts[level]["yhat_lower"].to_numpy()[steps] for f in folds])[scored]
        upper = np.concatenate([f.forecasts[level]["yhat_upper"].to_numpy()[steps] for f in folds])[scored]
        alpha = (1 - level) / 2
        losses += [pinball(a, lower, alpha), pinball(a, upper, 1 - alpha)]
        tag = f"{round(level * 100):d}"
        result[f"coverage_{tag}"] = float(((a >= lower) & (a <= upper)).mean())
        result[f"width_{tag}"] = float((upper - lower).mean())
    result["pinball"] = float(np.mean([loss.mean() for loss in losses]))
    result["n_scored"] = int(scored.sum())
    return result


@dataclass
class BacktestResult:
    horizon: int
    levels: tuple[float, ...]
    origins: list[str]
    metrics: dict[str, float]  # averaged over folds and steps
    final_step: dict[str, float]  # at the last step of the horizon only
    fit_seconds: list[float]
    predict_seconds: list[float]
    kind: str = ""
    folds: list[dict] = field(default_factory=list)  # per-fold metrics

    @property
    def mean_fit_seconds(self) -> float:
        return float(np.mean(self.fit_seconds))

    def to_dict(self) -> dict:
        return asdict(self) | {"mean_fit_seconds": self.mean_fit_seconds}


def backtest_origins(length: int, horizon: int, folds: int) -> np.ndarray:
    """Positions of the ``folds`` origins, spread evenly over the last quarter of the series.

    Origin ``o`` means: fit on ``series[:o]``, forecast ``series[o:o + horizon]``.
    """
    first, last = int(length * (1 - BACKTEST_SHARE)), length - horizon
    if last <= first:
        raise ValueError(f"a series of {length} points is too short for a {horizon}-step backtest")
    if folds == 1:
        return np.array([last])  # one fold: the latest origin, the one serving would face
    return np.unique(np.linspace(first, last, folds).round().astype(int))


def backtest(
    factory: Callable[[], Forecaster],
    series: pd.Series,
    horizon: int,
    folds: int,
    levels: Sequence[float] = (0.8, 0.95),
    drivers: pd.DataFrame | None = None,
) -> BacktestResult:
    """Rolling-origin backtest: at each origin a fresh model is fitted on the data before it only
    (``drivers``, the other metrics a model may read, too: only their rows before the origin).

    MASE is scaled per fold by the in-sample MAE of the one-day seasonal-naive forecast on that
    fold's training part. Missing targets are not scored (and models never train on them).
    """
    series = series.astype(float)
    step = _infer_step(series)
    period = seasonal_period(step, "1D")
    levels = tuple(levels)
    done: list[Fold] = []
    kind = ""
    for origin in backtest_origins(len(series), horizon, folds):
        train = series.iloc[:origin]
        known = None if drivers is None else drivers[drivers.index < series.index[origin]]
        model = factory()
        kind = model.kind
        started = time.perf_counter()
        fit_forecaster(model, train, known)
        fitted = time.perf_counter()
        forecasts = {level: model.predict(horizon, train, level=level, drivers=known) for level in levels}
        predicted = time.perf_counter()
        done.append(
            Fold(
                origin=series.index[origin],
                scale=mase_scale(train.to_numpy(), period),
                actual=series.iloc[origin : origin + horizon].to_numpy(),
                forecasts=forecasts,
                fit_seconds=fitted - started,
                predict_seconds=predicted - fitted,
            )
        )
    everything, last = slice(None), slice(horizon - 1, horizon)
    return BacktestResult(
        horizon=horizon,
        levels=levels,
        origins=[str(f.origin) for f in done],
        metrics=_score(done, levels, everything),
        final_step=_score(done, levels, last),
        fit_seconds=[f.fit_seconds for f in done],
        predict_seconds=[f.predict_seconds for f in done],
        kind=kind,
        folds=[_score([f], levels, everything) | {"origin": str(f.origin)} for f in done],
    )


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None
    baseline: float

    def to_dict(self) -> dict:
        return asdict(self)


def _metric_value(scores: Mapping, metric: str) -> float:
    """A metric from ``BacktestResult.metrics`` or from a whole ``BacktestResult.to_dict()``."""
    scores = scores.get("metrics", scores)
    value = scores.get(metric)
    return float(value) if value is not None else math.nan


def decide_promotion(
    challenger: Mapping, champion: Mapping | None, baseline: Mapping, metric: str = "mase"
) -> PromotionDecision:
    """Promote only a challenger that beats both the current champion and the seasonal-naive baseline
    on ``metric`` (lower is better). A missing (NaN) score never wins."""
    new = _metric_value(challenger, metric)
    base = _metric_value(baseline, metric)
    current = _metric_value(champion, metric) if champion is not None else None

    def decision(promote: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(promote, reason, metric, new, current, base)

    if not math.isfinite(new):
        return decision(False, f"challenger has no {metric} score")
    if not math.isfinite(base):
        return decision(
            False, f"baseline has no {metric} score, so the challenger cannot be shown to beat it"
        )
    if not new < base:
        return decision(False, f"challenger {metric} {new:.4f} does not beat the baseline's {base:.4f}")
    if current is not None and math.isfinite(current) and not new < current:
        return decision(False, f"challenger {metric} {new:.4f} does not beat the champion's {current:.4f}")
    against = (
        f"the champion's {current:.4f}" if current is not None and math.isfinite(current) else "no champion"
    )
    return decision(True, f"challenger {metric} {new:.4f} beats the baseline's {base:.4f} and {against}")
