"""Per-metric alert state an operator would draw: opened by the score, closed by the return.

The detector's views remember: a spike's values are "seen before" a few rows into it, and its drop
back to normal is itself a sudden change. Scores alone would close an episode mid-incident and open a
second one at the return. So, per metric, with the tenant's trigger and recovery windows:

- an episode opens when the score triggers (``trigger_share`` of the last ``trigger_window`` rows at
  or above the threshold, the current one included), and remembers the pre-incident level (median of
  the ``level_window`` rows before it) and the largest excursion from it;
- it closes after ``recovery_window`` consecutive rows back at the pre-incident level (within half
  the largest excursion), or, for a change that has become the new normal, after ``settle_window``
  consecutive rows scoring below the threshold;
- for ``level_window`` rows after it closed (the views' echo), a trigger re-opens it only if the value
  leaves the pre-incident level again: a flapping metric does not re-open within the recovery window.

A sequential state machine (no library models this); it runs over the scored rows once per step and
costs about a microsecond per row and metric.
"""

from __future__ import annotations

import numpy as np

#: Share of the largest excursion within which a value counts as back at the pre-incident level.
RETURN_BAND = 0.5


def hold_until_return(triggered: np.ndarray, below: np.ndarray, values: np.ndarray, *, recovery_window: int,
                      level_window: int, settle_window: int) -> np.ndarray:
    """Alert state (bool per row) of one metric. ``triggered``: the trigger rule holds at the row;
    ``below``: the score is below the threshold (False for unscored rows); ``values``: the metric.
    Only the rows from a trigger to the episode's close are walked: quiet rows cost nothing."""
    n = len(values)
    state = np.zeros(n, dtype=bool)
    level, excursion, echo_until, walked_to = np.nan, 0.0, -1, -1
    for start in np.flatnonzero(triggered):
        if start <= walked_to:
            continue  # inside (or closing) an episode already walked
        value = values[start]
        away = abs(value - level) if np.isfinite(value) and np.isfinite(level) else np.nan
        if start <= echo_until and not (np.isfinite(away) and away > RETURN_BAND * excursion):
            continue  # the echo of the last episode's return, not a new incident
        before = values[max(0, start - level_window) : start]
        before = before[np.isfinite(before)]
        level = float(np.median(before)) if before.size else np.nan
        excursion = abs(value - level) if np.isfinite(value) and np.isfinite(level) else 0.0
        calm = settled = 0
        row = start
        state[start] = True
        while row + 1 < n:
            row += 1
            value = values[row]
            away = abs(value - level) if np.isfinite(value) and np.isfinite(level) else np.nan
            if np.isfinite(away):
                excursion = max(excursion, away)
            calm = calm + 1 if np.isfinite(away) and away <= RETURN_BAND * excursion else 0
            settled = settled + 1 if below[row] else 0
            if calm >= recovery_window or settled >= settle_window:
                break
            state[row] = True
        else:
            row = n
        walked_to, echo_until = row, row + level_window
    return state
