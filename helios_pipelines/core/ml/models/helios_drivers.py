"""The tenant's drivers as inputs of Helios' direct model (#18.3): the past of the metrics that drive a
metric (the players behind CPU, requests and matches; the requests behind a shop's CPU).

Only values at or before each origin are read, so a driver's value after the origin cannot change a
forecast (``driver_frame`` also drops them before the model sees them). Per driver, at each origin:

- its recent lags relative to its level at the origin, in units of its typical one-step change (how
  it has been moving: a ramp in players is a ramp in CPU to come);
- what it implies for the target now: its level times the target-to-driver ratio over the last hour,
  relative to the target's level (a load-following metric's own last points are noisier than its
  driver's, and the gap between the two closes);
- with ``forecast``, the driver's own forecast for the target's lead time, from data up to the origin:
  its smoothed change from the origin's clock time to the target's a day and a week earlier (the
  seasonal forecast of the change, the blend's naive members applied to the driver), in the target's
  units through the same ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.features import as_utc_index, centred_mean, lagged, last_observed, trailing_mean

#: Lags (steps before the origin) of each driver; the hour's lag is added by the model.
DRIVER_LAGS = (0, 1, 3, 6)


def driver_frame(metric: str, names: Sequence[str], index: pd.DatetimeIndex, drivers: pd.DataFrame | None
                 ) -> pd.DataFrame:
    """The driver metrics at ``index`` (the target's history, ending at the origin): nothing after it."""
    if drivers is None:
        raise ValueError(f"'{metric}' is forecast from its drivers {list(names)}; their history was not given")
    missing = [n for n in names if n not in drivers.columns]
    if missing:
        raise ValueError(f"'{metric}' is forecast from its drivers {list(names)}; the history given lacks {missing}")
    frame = drivers[list(names)].astype(float)
    frame = frame.set_axis(as_utc_index(frame.index))
    return frame[~frame.index.duplicated(keep="last")].reindex(index)


def driver_scales(drivers: np.ndarray) -> np.ndarray:
    """Each driver's typical one-step change (its unit in the features), its spread if it never moves."""
    steps = np.abs(np.diff(drivers, axis=0))
    scales = np.array([np.nanmean(s) if np.isfinite(s).any() else np.nan for s in steps.T])
    spread = np.array([np.nanstd(d) if np.isfinite(d).any() else np.nan for d in drivers.T])
    scales = np.where(scales > 0, scales, spread)
    return np.where(scales > 0, scales, 1.0)


def driver_columns(values: np.ndarray, drivers: np.ndarray, scales: np.ndarray, origins: np.ndarray,
                   leads: np.ndarray, level: np.ndarray, scale: float, hour: int, periods: Sequence[int],
                   smoothing: int, forecast: bool) -> list[np.ndarray]:
    """Feature columns for (origin, lead) pairs from the (steps x drivers) ``drivers`` aligned with the
    target's ``values`` (both de-evented; either may end at the last origin). ``level`` and ``scale``:
    the target's level at each origin and its unit, as in the rest of the design."""
    targets = origins + leads
    own_hour = trailing_mean(values, hour)[origins]
    columns = []
    for k in range(drivers.shape[1]):
        driver = drivers[:, k]
        known = last_observed(driver)
        now = trailing_mean(driver, 3)[origins]
        now = np.where(np.isfinite(now), now, known[origins])
        columns += [(lagged(driver, origins, lag) - now) / scales[k] for lag in (*DRIVER_LAGS, hour)]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = own_hour / trailing_mean(driver, hour)[origins]
        ratio = np.where(np.isfinite(ratio), ratio, np.nan)
        columns.append((now * ratio - level) / scale)
        if forecast:
            smooth = centred_mean(driver, smoothing)
            for period in periods:
                then_origin = lagged(smooth, origins, period)
                then_target = lagged(smooth, targets, period)
                then_target[targets - period + smoothing > origins] = np.nan  # never past the origin
                columns.append((then_target - then_origin) * ratio / scale)
    return columns
