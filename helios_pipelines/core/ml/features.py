"""Feature code shared by training and serving, so both compute a feature the same way.

Everything here is causal (a row uses only its own timestamp and earlier data) except calendar and
event columns, which are known in advance by construction. Gaps stay NaN: nothing is filled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.events import EventSchedule

PEAK_HOURS = (18, 24)  # local evening, [start, end): when a game's players are online
ROLLING_WINDOWS = {"1h": "1h", "24h": "24h"}


def as_utc_index(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Naive timestamps are taken as UTC (the series convention), aware ones converted."""
    index = pd.DatetimeIndex(index)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _local_clock(index: pd.DatetimeIndex, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """Fractional hour of day and day of week (Monday = 0) on the wall clock of ``timezone``.

    ``tz_convert`` applies that zone's daylight-saving rules, so 19:00 stays 19:00 local across a
    DST switch even though it moves by an hour in UTC.
    """
    local = as_utc_index(index).tz_convert(timezone)
    hour = local.hour.to_numpy() + local.minute.to_numpy() / 60.0
    return hour.astype(float), local.dayofweek.to_numpy().astype(float)


def _is_peak(hour: np.ndarray) -> np.ndarray:
    return ((hour >= PEAK_HOURS[0]) & (hour < PEAK_HOURS[1])).astype(float)


def calendar_features(
    index: pd.DatetimeIndex,
    timezone: str,
    regions: Sequence[tuple[str, float]] | None = None,
) -> pd.DataFrame:
    """Calendar columns on the tenant's own clock.

    Hour of day and day of week are encoded as sin/cos pairs so 23:59 sits next to 00:00 and Sunday
    next to Monday. ``regions`` is a list of ``(timezone, share)``: a game's evening peak follows its
    players' clocks, so ``players_evening`` is the share of players for whom it is evening now.
    """
    hour, dow = _local_clock(index, timezone)
    week_position = dow + hour / 24.0
    frame = pd.DataFrame(
        {
            "hour_sin": np.sin(2 * np.pi * hour / 24.0),
            "hour_cos": np.cos(2 * np.pi * hour / 24.0),
            "dow_sin": np.sin(2 * np.pi * week_position / 7.0),
            "dow_cos": np.cos(2 * np.pi * week_position / 7.0),
            "is_weekend": (dow >= 5).astype(float),
            "is_peak_hour": _is_peak(hour),
        },
        index=index,
    )
    if regions:
        evening = np.zeros(len(index))
        for zone, share in regions:
            evening += float(share) * _is_peak(_local_clock(index, zone)[0])
        frame["players_evening"] = evening
    return frame


def rolling_stats(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Trailing mean and std per column over each window in ROLLING_WINDOWS.

    Time-based windows ending at (and including) the row, so a row never sees later data; missing
    samples are skipped, and a window with no sample at all stays NaN.
    """
    utc = frame.set_axis(as_utc_index(frame.index))
    out = {}
    for column in columns:
        for label, window in ROLLING_WINDOWS.items():
            rolling = utc[column].rolling(window, min_periods=1)
            out[f"{column}_mean_{label}"] = rolling.mean().to_numpy()
            out[f"{column}_std_{label}"] = rolling.std().to_numpy()
    return pd.DataFrame(out, index=frame.index)


def build_feature_frame(
    metrics: pd.DataFrame,
    timezone: str,
    regions: Sequence[tuple[str, float]] | None,
    events: EventSchedule,
) -> pd.DataFrame:
    """The per-tenant ``features`` frame: metrics, calendar, event flags, rolling stats.

    The derived gaming signals (queue pressure, server headroom) that used to be here fed no model and
    were dropped (#18); a driver enters a model only where the forecast suite shows it helps."""
    metric_columns = list(metrics.columns)
    parts = [
        metrics,
        calendar_features(metrics.index, timezone, regions),
        events.flags(as_utc_index(metrics.index)).set_axis(metrics.index),
        rolling_stats(metrics, metric_columns),
    ]
    return pd.concat(parts, axis=1)


# ---- lags (the XGBoost forecasters) -------------------------------------------------------------


def lagged(values: np.ndarray, positions: np.ndarray, lag: int) -> np.ndarray:
    """values[positions - lag], NaN where that falls before the start of ``values``."""
    source = positions - lag
    out = np.full(positions.shape, np.nan)
    valid = (source >= 0) & (source < values.size)
    out[valid] = values[source[valid]]
    return out


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the observed values in the ``window`` points ending at each position (NaN if none)."""
    observed = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(observed, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(observed)])
    end = np.arange(1, values.size + 1)
    start = np.maximum(end - window, 0)
    n = counts[end] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


def centred_mean(values: np.ndarray, half_width: int) -> np.ndarray:
    """Mean of observed values within ``half_width`` points either side (smooths a seasonal lag).

    Only used on data that lies entirely before a forecast origin (a lag of at least a day), so the
    points after the centre are still history.
    """
    shifted = np.concatenate([values[half_width:], np.full(half_width, np.nan)])
    return trailing_mean(shifted, 2 * half_width + 1)


def last_observed(values: np.ndarray) -> np.ndarray:
    """Forward fill: the most recent observed value at each position (NaN before the first)."""
    idx = np.where(np.isfinite(values), np.arange(values.size), -1)
    np.maximum.accumulate(idx, out=idx)
    out = np.full(values.size, np.nan)
    seen = idx >= 0
    out[seen] = values[idx[seen]]
    return out
