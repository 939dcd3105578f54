"""The load's own season as its expectation: a driver (the load a tenant scales on: players, requests)
that repeats daily or weekly is expected to be what it was at the same time on the tenant's clock one
or two seasons back (the closer of the two, so last week's incident does not echo), times the
scheduled events' multiplier. Its log ratio to that expectation, in units of the fit history's robust
spread of the ratio, is scored without any memory of earlier rows, as a relation's residual is: the
rarity views learn what they see (an earlier outage makes the next one look "seen before", a surge
stretches their range), this residual does not, so every outage is news (#17.5); except an outage at
the same local time as one a season earlier, whose ratio to that closer season is near 1.

On the tenant's clock, not in rows: when the clocks change, a day's pattern moves an hour in UTC, and
a comparison in rows would call the whole week after it anomalous (shopfast's simulated load: z of 6
to 12 every evening of the week after 2026-10-25 in rows; on the clock, only the labelled incidents
reach 6). Ratios, not differences: load noise is multiplicative (a daily peak varies more in
requests than the night does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.series_views import nearer_zero, robust_centre_and_spread

#: A season on the clock is this much longer than in UTC at most (the hour the clocks go back).
CLOCK_CHANGE = pd.Timedelta("1h")


def log_ratio_to_earlier_seasons(values: np.ndarray, index: pd.DatetimeIndex, season: pd.Timedelta,
                                 seasons: int, timezone: str) -> np.ndarray:
    """log(value / value at the same local time 1..``seasons`` seasons back), the ratio nearest 0
    (NaN where no such row is in ``index``, or a value is not positive). ``season`` is a whole number
    of days; times the clock skips or repeats have no earlier row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.log(np.where(values > 0, values, np.nan))
    local = index.tz_convert(timezone).tz_localize(None)
    out = np.full(values.shape[0], np.nan)
    for back in range(1, seasons + 1):
        earlier = (local - back * season).tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
        rows = index.get_indexer(earlier.tz_convert("UTC"))
        ratio = np.where(rows >= 0, logged - logged[np.maximum(rows, 0)], np.nan)
        out = nearer_zero(out, ratio)
    return out


class LoadSeason:
    """One driver's seasonal expectation, fitted on its history (see the module docstring)."""

    def __init__(self, season: pd.Timedelta, seasons: int, timezone: str):
        if season % pd.Timedelta("1D"):
            raise ValueError(f"a season on the clock is a whole number of days, got {season}")
        self.season, self.seasons, self.timezone = season, seasons, timezone

    def ratios(self, values: np.ndarray, index: pd.DatetimeIndex) -> np.ndarray:
        return log_ratio_to_earlier_seasons(values, index, self.season, self.seasons, self.timezone)

    def fit(self, values: np.ndarray, index: pd.DatetimeIndex) -> LoadSeason | None:
        """Self, or None where the history gives no spread to measure in (too short, or flat)."""
        observed = self.ratios(values, index)
        observed = observed[np.isfinite(observed)]
        if observed.size < 2:
            return None
        self.centre_, self.sigma_ = robust_centre_and_spread(observed)
        return self if self.sigma_ > 0 else None

    def z(self, values: np.ndarray, index: pd.DatetimeIndex) -> np.ndarray:
        """Signed residual per row in units of the fit history's robust spread (NaN where undefined)."""
        return (self.ratios(values, index) - self.centre_) / self.sigma_
