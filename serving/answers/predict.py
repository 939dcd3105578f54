"""/predict: a metric's forecast at a horizon, with its 80 % bounds, from the last complete step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from helios_pipelines.core.ml.models.base import Forecaster
from helios_pipelines.core.tenants.base import format_horizon
from serving.errors import NotFoundError, RequestError

if TYPE_CHECKING:
    from serving.runtime import TenantRuntime


def forecaster(runtime: TenantRuntime, metric: str) -> Forecaster:
    found = runtime.forecasters.get(metric)
    if found is None:
        raise NotFoundError(
            f"tenant '{runtime.tenant_id}' has no forecast model for '{metric}'; "
            f"forecast metrics: {', '.join(sorted(runtime.forecasters)) or '(none)'}"
        )
    return found


def horizon_steps(runtime: TenantRuntime, model: Forecaster, horizon_minutes: int) -> int:
    if horizon_minutes <= 0:
        raise RequestError(f"horizon must be a positive number of minutes, got {horizon_minutes}")
    longest = int(model.max_horizon * runtime.step.total_seconds() // 60)
    # Compared in whole minutes before it becomes a Timedelta: 2e8 minutes is past what one holds.
    if horizon_minutes > longest:
        raise RequestError(
            f"horizon {horizon_minutes} min for '{model.metric}' is beyond the {longest} min "
            f"its model was trained for"
        )
    return math.ceil(pd.Timedelta(minutes=horizon_minutes) / runtime.step)


def forecast(runtime: TenantRuntime, metric: str, horizon_minutes: int, end: pd.Timestamp,
             level: float = 0.8) -> pd.DataFrame:
    """The first ``horizon_minutes`` of the model's whole-horizon forecast from the last complete
    step. Within a step the answer cannot change, so it is computed once per step and level."""
    model = forecaster(runtime, metric)
    steps = horizon_steps(runtime, model, horizon_minutes)
    history = runtime.history(end)

    def compute() -> pd.DataFrame:
        series = history[metric]
        if series.notna().sum() < model.min_history:
            raise RequestError(f"not enough recent history for '{metric}' to forecast from")
        # Events (configured and posted) are applied inside predict, as in the backtest.
        # A model that reads its drivers takes them from the same history (only up to the origin).
        return model.predict(model.max_horizon, series, extra_events=runtime.posted_events, level=level,
                             drivers=history)

    frame = runtime.cache.get_or_compute(end, ("forecast", metric, level, runtime.events_version), compute)
    return frame.iloc[:steps]


def predict(runtime: TenantRuntime, metric_name: str, horizon_minutes: int, end: pd.Timestamp) -> dict:
    metric = runtime.metric(metric_name)
    frame = forecast(runtime, metric, horizon_minutes, end)
    row = frame.iloc[-1]
    origin = frame["timestamp"].iloc[0] - runtime.step
    target = row["timestamp"]
    running = [o.name for o in runtime.events().occurrences(target, target + runtime.step) if o.applies_to(metric)]
    return {
        "tenant": runtime.tenant_id,
        "metric": metric,
        "series": runtime.tenant.metrics[metric].series,
        "horizon_minutes": horizon_minutes,
        "horizon": format_horizon(horizon_minutes),
        "origin": origin.isoformat(),
        "target_time": target.isoformat(),
        "value": float(row["yhat"]),
        "lower": float(row["yhat_lower"]),
        "upper": float(row["yhat_upper"]),
        "interval": 0.8,
        "unit": runtime.tenant.metrics[metric].unit,
        "events": running,
        "model": runtime.pinned[metric].as_dict(),
        # The integration guide's field names, beside Helios' own: its timestamp is when the
        # forecast was made, here the last complete step it was made from.
        "customer": runtime.tenant_id,
        "predicted_value": float(row["yhat"]),
        "timestamp": origin.isoformat(),
    }
