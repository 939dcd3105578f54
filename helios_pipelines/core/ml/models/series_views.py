"""Series conventions and views the detectors share: the frame check, the step and season of a
history, trailing means (and the mean of the rows before a row), relative change and onset
suppression. Each is causal: a row's value uses only that row and the rows before it, so a prefix of
a frame gets exactly the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: A normal distribution's standard deviation per median absolute deviation.
MAD_TO_SIGMA = 1.4826
#: The column of a detector's scores that is the row's overall score.
COMBINED = "combined"
#: A seasonal forecast is used only when the fit history repeats at that lag at least this well.
MIN_SEASONAL_AUTOCORRELATION = 0.5
#: Candidate seasons; a season is tried only when the fit history covers two of them.
SEASONS = ("1D", "7D")
#: ... and this share of a season's pairs of rows a season apart is observed.
SEASON_PAIRS_OBSERVED = 0.9


def step_of(index: pd.Index) -> pd.Timedelta | None:
    """Median spacing of a DatetimeIndex (rows may repeat or go back in time; the median copes)."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return None
    spacing = np.diff(index.asi8)
    spacing = spacing[spacing > 0]
    return pd.Timedelta(int(np.median(spacing)), "ns") if spacing.size else None


def metrics_to_fit(frame: pd.DataFrame, kind: str) -> list[str]:
    """The metrics a detector fits: the frame's columns, by name; a clear error for anything but a
    non-empty frame with columns."""
    if not isinstance(frame, pd.DataFrame) or frame.empty or frame.shape[1] == 0:
        raise ValueError(f"{kind} needs a non-empty frame with one column per metric to fit")
    return [str(c) for c in frame.columns]


def check_frame(frame: pd.DataFrame, metrics: list[str], kind: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{kind} scores a DataFrame with one column per metric, got {type(frame).__name__}")
    if frame.empty:
        raise ValueError(f"{kind} got an empty frame: nothing to score")
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise KeyError(f"{kind} was fitted on {metrics}; the frame lacks {missing}")


def detect_season(values: np.ndarray, step: pd.Timedelta | None) -> int | None:
    """The longest candidate season (in rows) at which the history repeats, or None.

    Unknown data has no known period, so a season is used only when the history covers two of them
    (``SEASON_PAIRS_OBSERVED`` of a season's pairs observed: a few scrape gaps in exactly two seasons
    of history do not hide it) and its autocorrelation at that lag reaches MIN_SEASONAL_AUTOCORRELATION.
    """
    if step is None:
        return None
    found = None
    for season in SEASONS:
        lag = int(pd.Timedelta(season) / step)
        if lag < 2 or values.size < 2 * lag:
            continue
        current, lagged = values[lag:], values[:-lag]
        both = np.isfinite(current) & np.isfinite(lagged)
        if both.sum() < SEASON_PAIRS_OBSERVED * lag or np.std(current[both]) == 0 or np.std(lagged[both]) == 0:
            continue
        if np.corrcoef(current[both], lagged[both])[0, 1] >= MIN_SEASONAL_AUTOCORRELATION:
            found = lag
    return found



def nearer_zero(current: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per element, ``candidate`` where it is nearer zero than ``current`` or ``current`` is NaN: the
    comparison with several earlier seasons keeps the closest (``seasonal_difference``, ``load_season``)."""
    return np.where(np.isnan(current) | (np.abs(candidate) < np.abs(current)), candidate, current)


def robust_centre_and_spread(values: np.ndarray) -> tuple[float, float]:
    """The median of ``values`` and their median absolute deviation from it as a normal distribution's
    standard deviation: an incident among them moves neither much."""
    centre = float(np.median(values))
    return centre, MAD_TO_SIGMA * float(np.median(np.abs(values - centre)))


def seasonal_difference(values: np.ndarray, season: int, seasons: int = 1) -> np.ndarray:
    """Each row minus the same time 1..``seasons`` seasons earlier, keeping the difference nearest zero
    (NaN until one season back exists). With more than one season an incident does not echo a season
    later (compared with yesterday's incident today looks odd; with the day before it does not),
    while a change that lasts, such as a missing daily peak, differs from every earlier season."""
    out = np.full(values.shape[0], np.nan)
    for back in range(1, seasons + 1):
        lag = back * season
        if lag >= values.shape[0]:
            break
        difference = values[lag:] - values[:-lag]
        current = out[lag:]
        out[lag:] = nearer_zero(current, difference)
    return out


def known_causes_removed(frame: pd.DataFrame, metrics: list[str], expected: pd.DataFrame | None) -> np.ndarray:
    """(rows, metrics) values divided by ``expected``, the multiplier known causes such as scheduled
    events put on each metric and row (1 where absent or not positive)."""
    values = frame[metrics].to_numpy(dtype=float)
    if expected is None:
        return values
    factor = expected.reindex(index=frame.index, columns=metrics).fillna(1.0).to_numpy(dtype=float)
    return values / np.where(factor > 0, factor, 1.0)


def keep_onsets(score: np.ndarray, window: int) -> np.ndarray:
    """Each row keeps only its excess over the highest score of the previous ``window`` rows.

    A persisting anomaly then scores high once, at its onset. Threshold-free, so NAB's threshold
    sweep and the detector agree on what was suppressed. ``window`` 0 returns the scores unchanged.
    """
    if not window:
        return score
    recent = pd.Series(score).rolling(window, min_periods=1).max().shift(1).fillna(0).to_numpy()
    return np.where(np.isnan(score), np.nan, np.clip(score - recent, 0, 1))



def held_for(matrix: np.ndarray, rows: int) -> np.ndarray:
    """Per column, the value each row has held for the last ``rows`` rows: the one nearest zero among
    them when they share a sign, 0 when they do not. A row whose window holds a gap keeps the observed
    rows' value (NaN where the row itself is). One row leaving a band is noise; an incident stays."""
    if rows <= 1:
        return matrix
    padded = np.vstack([np.full((rows - 1, matrix.shape[1]), np.nan), matrix])
    stacked = np.lib.stride_tricks.sliding_window_view(padded, rows, axis=0)
    # fmin/fmax skip a gap's NaN; the row itself is never NaN where it is used below.
    low, high = np.fmin.reduce(stacked, axis=-1), np.fmax.reduce(stacked, axis=-1)
    held = np.where(low > 0, low, np.where(high < 0, high, 0.0))
    return np.where(np.isnan(matrix), np.nan, held)


def trailing_mean(matrix: np.ndarray, window: int, min_share: float = 1.0) -> np.ndarray:
    """Mean of the observed values among each row and the ``window - 1`` rows before it, per column;
    NaN until the window is full or while less than ``min_share`` of it is observed (by default any
    gap). Computed window by window, so a prefix gets exactly the same numbers."""
    out = np.full(matrix.shape, np.nan)
    if matrix.shape[0] >= window:
        windows = np.lib.stride_tricks.sliding_window_view(matrix, window, axis=0)
        mean = windows.mean(axis=-1)
        if min_share < 1:
            observed = np.isfinite(windows).sum(axis=-1)
            partial = np.where(np.isfinite(windows), windows, 0.0).sum(axis=-1) / np.maximum(observed, 1)
            mean = np.where(np.isnan(mean) & (observed >= min_share * window), partial, mean)
        out[window - 1 :] = mean
    return out


def mean_before(matrix: np.ndarray, window: int, min_share: float = 1.0) -> np.ndarray:
    """Mean of the observed values among the ``window`` rows before each row (not the row itself), per
    column: ``trailing_mean`` one row later, so NaN for the first ``window`` rows and where less than
    ``min_share`` of the window is observed."""
    before = np.full(matrix.shape, np.nan)
    before[1:] = trailing_mean(matrix, window, min_share)[:-1]
    return before


def relative_change(matrix: np.ndarray, window: int, min_share: float = 1.0) -> np.ndarray:
    """Each row against the mean m of the ``window`` rows before it, as log(x / m). Scale-free, so a 3x
    jump is as rare at night as at the daily peak, which the value views cannot see (a night-time
    spike stays inside the day's range), and symmetric: a drop to a third is as far as a tripling.
    NaN while less than ``min_share`` of the window is observed, and where x or m is not positive."""
    before = mean_before(matrix, window, min_share)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.log(matrix / before)
    change[~np.isfinite(change)] = np.nan
    return change
