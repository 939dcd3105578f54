"""The forecast-residual view of the detector (#17.1): a rise the forecast expected does not page.

Each metric whose fit history repeats at a season (the rarity detector's ``seasons_``: a day or a
week) gets a one-step forecast, on its values with the scheduled events' known multipliers divided
out: the value one season earlier, scaled by the growth since (the mean of the ``level_window`` rows
before the row over the same a season earlier). It is the seasonal-naive candidate every champion must
beat, with the level adjustment of Helios' seasonal members; the one forecaster cheap enough to
re-forecast every held row at each step of /detect (the champions forecast from one origin; in its
place the champion changed no simulator figure at the weights it earned; with its weight forced to 1,
from one step back, it vetoed incidents' own rows and lost a slow drop; it costs 40-500 times as much: bench/results/champion_residual.md). A weekly
one expects what recurs weekly without being configured (a learned tournament), at this week's size.
A row's residual is measured in units of the forecast's own interval: the ``LEVEL`` central interval of
the fit history's residuals, on the side the residual falls.

The forecast is used only where it is good, judged on every residual of the fit history, but never
by an interval fitted on the residuals it judges (cross-fitting): the residuals are cut into ``FOLDS``
contiguous parts, each part's coverage measured by the interval fitted on the other parts (contiguous,
so a part's near neighbours in time, whose residuals resemble its own, are mostly not in that interval).
A metric's weight is 1 where every part is covered at the nominal rate, falling to 0 at a mean
miscoverage of ``1 - LEVEL`` (an interval far too narrow or far too wide explains nothing), times the
residuals judged as a share of a season, at most 1 (a weekly forecast judged on two days has not been
seen through its week; two weeks of history give a weekly forecast a week of residuals, all judged).
Each part's miscoverage counts, not the pooled coverage: a forecast that held for most of the history
and broke at its end has an interval too wide for the parts before and far too narrow for the last,
which pooled would cancel. A part's coverage is off nominal by sampling alone, which costs a forecast
that holds about a tenth of its weight on a few hundred residuals a part (0.9 at two weeks of five
minutes), less on more. The interval served is fitted on every residual.

Where the weight is w, the rarity views' score s of a row becomes
``(1 - w) s + w min(s, max(r, VETO_FLOOR x threshold))``, r the residual's score (0.5 at
``RESIDUAL_PER_Z`` x ``z_threshold`` half-widths): a page for a rise the forecast expected is vetoed,
an incident during it is as far outside the forecast as it is rare and pages. The residual only
vetoes, and only pages: below the floor the rarity views' ranking stands (on NAB, vetoes below it
re-ranked sub-threshold rows and cost windows), and the residual alone would echo a season later every
incident the season-ago value held.
"""

from __future__ import annotations

from typing import Self

import numpy as np

from helios_pipelines.core.ml.models.base import empirical_interval
from helios_pipelines.core.ml.models.rarity import LEVEL_MIN_OBSERVED
from helios_pipelines.core.ml.models.series_views import mean_before

#: The forecast's central interval: its half-widths are the residual's unit.
LEVEL = 0.8
#: The fit history's residuals are judged in this many contiguous parts, each by the interval of the others.
FOLDS = 5
#: A residual scores 0.5 at z_threshold x this many of the interval's half-widths.
RESIDUAL_PER_Z = 1.0
#: The veto lowers a score to no less than this share of the threshold.
VETO_FLOOR = 0.9
#: Fewer residuals than this and the forecast is not judged (weight 0).
MIN_JUDGED = 50


def interval(residuals: np.ndarray, floor: float) -> tuple[float, float]:
    """The ``LEVEL`` central interval of ``residuals``, at least ``floor`` either side of 0."""
    low, high = empirical_interval(residuals, LEVEL)
    return min(low, -floor), max(high, floor)


def cross_fitted_miscoverage(residuals: np.ndarray, floor: float) -> float:
    """How far from ``LEVEL`` each of ``FOLDS`` contiguous parts of ``residuals`` is covered by the
    interval fitted on the other parts, averaged over the residuals (see the module docstring); at least
    ``FOLDS`` residuals (``SeasonalResidual.fit`` judges ``MIN_JUDGED`` or more)."""
    if residuals.size < FOLDS:
        raise ValueError(f"cross-fitting needs at least {FOLDS} residuals, got {residuals.size}")
    edges = np.linspace(0, residuals.size, FOLDS + 1).astype(int)
    miscoverage = 0.0
    for start, end in zip(edges[:-1], edges[1:], strict=True):
        low, high = interval(np.concatenate([residuals[:start], residuals[end:]]), floor)
        part = residuals[start:end]
        miscoverage += abs(np.mean((part >= low) & (part <= high)) - LEVEL) * part.size
    return miscoverage / residuals.size


class SeasonalResidual:
    """Per seasonal metric: the one-step seasonal forecast, its interval and its weight (see module)."""

    def __init__(self, seasons: list[tuple[int, int]], n_metrics: int, level_window: int):
        """``seasons``: (metric position, season in rows) of the metrics to forecast; ``level_window``:
        the rows whose mean is the level now and a season ago."""
        self.level_window = int(level_window)
        self.seasons = [(int(p), int(s)) for p, s in seasons if s > self.level_window]
        self.n_metrics = int(n_metrics)

    @property
    def reach(self) -> int:
        """Rows before a row that its forecast reads."""
        return max([s + self.level_window for _, s in self.seasons], default=0)

    def forecast(self, values: np.ndarray) -> np.ndarray:
        """(rows, metrics) one-step forecasts; NaN for a metric without a season and before a season:
        the value a season ago, scaled by the ratio of the level now (the mean of the ``level_window``
        rows before the row) to the level a season ago (shifted by their difference where a level is
        not positive): a week's growth, or a ramp that started earlier than last week's."""
        out = np.full(values.shape, np.nan)
        level = mean_before(values, self.level_window, LEVEL_MIN_OBSERVED)
        for position, season in self.seasons:
            if values.shape[0] <= season:
                continue
            ago, now, then = values[:-season, position], level[season:, position], level[:-season, position]
            with np.errstate(divide="ignore", invalid="ignore"):
                out[season:, position] = np.where((now > 0) & (then > 0), ago * now / then, ago + now - then)
        return out

    def fit(self, values: np.ndarray) -> Self:
        """``values``: the fit history with known causes removed (``series_views.known_causes_removed``)."""
        residuals = values - self.forecast(values)
        self.lower_ = np.full(self.n_metrics, np.nan)
        self.upper_ = np.full(self.n_metrics, np.nan)
        self.weight_ = np.zeros(self.n_metrics)
        for position, season in self.seasons:
            column = values[:, position]
            r = residuals[:, position][np.isfinite(residuals[:, position])]
            if r.size < MIN_JUDGED:
                continue
            # An idle metric's residuals are all 0: a floor keeps the unit finite (a share of its range).
            observed = column[np.isfinite(column)]
            floor = 1e-3 * max(float(np.ptp(observed)), 1e-9)
            evidence = min(1.0, r.size / season)
            self.weight_[position] = evidence * max(0.0, 1 - cross_fitted_miscoverage(r, floor) / (1 - LEVEL))
            self.lower_[position], self.upper_[position] = interval(r, floor)  # served: every residual
        return self

    def standardised(self, values: np.ndarray) -> np.ndarray:
        """(rows, metrics) residuals in half-widths of the interval, on the side they fall; NaN where
        there is no forecast."""
        residuals = values - self.forecast(values)
        with np.errstate(invalid="ignore"):
            return np.where(residuals >= 0, residuals / self.upper_, residuals / -self.lower_)

    def veto(self, score: np.ndarray, values: np.ndarray, z_threshold: float, threshold: float) -> np.ndarray:
        """The rarity views' (rows, metrics) ``score`` with what the forecast expected vetoed, by weight,
        down to ``VETO_FLOOR`` x ``threshold`` at most: the forecast vetoes pages; below, the rarity views'
        ranking stands."""
        z = np.abs(self.standardised(values))
        residual = z / (z + RESIDUAL_PER_Z * z_threshold)
        vetoed = np.fmin(score, np.maximum(residual, VETO_FLOOR * threshold))
        # No forecast (before a season, or a gap a season ago): the rarity views' score stands.
        return np.where(np.isnan(residual), score, (1 - self.weight_) * score + self.weight_ * vetoed)
