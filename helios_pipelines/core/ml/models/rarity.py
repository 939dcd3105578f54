"""The univariate core of anomaly detection: per metric, how unlike anything seen before a point is,
in several views (see ``RarityDetector``)."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.base import (
    AnomalyDetector,
    InsufficientHistoryError,
    ModelNotFittedError,
)
from helios_pipelines.core.ml.models.load_season import CLOCK_CHANGE, LoadSeason
from helios_pipelines.core.ml.models.nearest import density_unit, k_distance, nearest_earlier_distance
from helios_pipelines.core.ml.models.relations import DRIVER_WINDOWS, Relations
from helios_pipelines.core.ml.models.series_views import (
    COMBINED,
    check_frame,
    detect_season,
    held_for,
    keep_onsets,
    known_causes_removed,
    metrics_to_fit,
    relative_change,
    seasonal_difference,
    step_of,
    trailing_mean,
)

#: Training values kept as the rarity memory (a quantile grid beyond this many distinct values).
MEMORY_SIZE = 4096

#: A relation's residual scores 0.5 at this many z thresholds of its held-out robust spread (5 sigma at
#: the default 2.5): minute-level residuals have heavy tails, and a page should be a rare event.
RELATION_Z_PER_Z = 2.0

#: A relation too weak to replace a metric's views only vetoes them, except that a residual this many
#: times further out than a replacing relation's 0.5 (10 sigma at the default) is anomalous on its own:
#: latency up at the same load is an incident even inside latency's own range (#17.3).
ALONE_PER_RELATION_Z = 2.0

#: A relation's residual counts for what it has held over this long (Prometheus' ``for:`` of an alert
#: rule): one minute out of band is chance, an incident stays. In rows of the tenant's step, at least
#: one (a five-minute row is already five minutes of evidence).
RELATION_HOLD = pd.Timedelta("2min")

#: The tenant's z threshold sets the rarity that scores 0.5: z_threshold x 8 % of the range seen so
#: far (20 % at the default 2.5). A higher z threshold makes the detector less sensitive.
RARITY_PER_Z = 0.08

#: The value view also measures its distance in units of the local density of the fit history around
#: the value (LOF's k-distance with this many neighbours, Breunig et al. 2000 advise 10 to 20): a dip
#: into a gap of a tight band is news although the band is a sliver of the range, and a value a little
#: past the sparse top of a bursty history is not (bench/results/anomaly.md). On a memory reduced to a
#: quantile grid (MEMORY_SIZE), that many grid steps.
DENSITY_NEIGHBOURS = 10

#: That density-relative distance scores 0.5 at z_threshold x this many k-distances (2.5 at the default).
DENSITY_PER_Z = 1.0

#: The level and change views need this share of their window observed: a scrape gap of a few rows
#: must not blind them for a whole window after it (100 minutes at 5-minute steps).
LEVEL_MIN_OBSERVED = 0.5

#: The seasonal view compares a row with the same time this many seasons back and keeps the closest
#: difference: compared with yesterday alone, yesterday's incident would echo today (bench/results/anomaly.md).
SEASONS_COMPARED = 2

#: Besides the (trimmed) fit history, a view's earlier rows count as seen before, and stretch its
#: range, for this long only (two weeks, as far back as the weekly view looks): a row's score depends
#: on the ``full_history`` rows before it, not on how much more the caller holds (serving also holds
#: what its forecasters read), except, at a weekly season, the seasonal views of the oldest rows.
#: Shorter windows cost NAB score and gaming-corp's precision (bench/results/simulator_detection.md).
MEMORY_WINDOW = pd.Timedelta("14D")


class RarityDetector(AnomalyDetector):
    """Per metric: how unlike anything seen before a point is, in several views. The univariate core.

    Views of each metric: its value; its trailing mean over ``level_window`` rows (a change of level or
    of the density of spikes, which no single value shows); with ``use_change``, its log ratio to the
    mean of the ``level_window`` rows before it (a sudden jump or drop at any time of day); and, when
    the fit history repeats at a daily or weekly season, its difference from the value one season
    earlier or two, whichever is closer (a missing daily peak; not an echo of yesterday's incident). A view's rarity is the distance to the closest value of that view
    seen before (fit history or the earlier rows of the last ``MEMORY_WINDOW``), in units of the range of
    the view seen so far (the same): a
    recurring spike or a drift that keeps widening the range stops being news, while a value far
    outside the known range is. The fit history's own incidents would teach the detector that they
    are normal, so ``trim`` of each tail of every view (the fit history's most extreme 1 %) is left out
    of what counts as seen before. Each view maps rarity ``q`` to ``q / (q + rarity_scale)`` (0.5 at
    ``rarity_scale`` = RARITY_PER_Z x ``z_threshold``), and the metric scores the largest of its views.
    The value view's score is the geometric mean of that and the same distance in units of the fit
    history's local density where the value falls (LOF-like: the ``DENSITY_NEIGHBOURS``-distance of
    the nearest remembered value; 0.5 at ``DENSITY_PER_Z`` x ``z_threshold`` of them): a dip out of a
    tight band counts although the band is a sliver of the range, a burst a little past the sparse
    top of a bursty history less.

    A driver (the load the tenant scales on) that repeats daily or weekly is also scored against its
    own season on the tenant's ``timezone`` clock (``load_season``): its log ratio to the same local
    time one or two seasons back, in units of the fit history's robust spread, like a relation's
    residual and with no memory of earlier rows, so an outage is news however many came before.

    Its scores, and the alternatives it was measured against, are in bench/results/anomaly.md.
    ``onset_window`` > 0 reports onsets only (see ``keep_onsets``).
    """

    kind: ClassVar[str] = "rarity"

    def __init__(
        self,
        *,
        z_threshold: float = 2.5,
        level_window: int = 20,
        use_season: bool = True,
        use_change: bool = True,
        trim: float = 0.01,
        onset_window: int = 0,
        drivers: tuple[str, ...] | list[str] = (),
        pressure: tuple[str, ...] | list[str] = (),
        timezone: str = "UTC",
        seed: int = 42,
    ):
        if z_threshold <= 0 or level_window < 2 or onset_window < 0 or not 0 <= trim < 0.5:
            raise ValueError("z_threshold > 0, level_window >= 2, onset_window >= 0 and trim in [0, 0.5) are required")
        self.z_threshold = float(z_threshold)
        self.level_window = int(level_window)
        self.use_season = bool(use_season)
        self.use_change = bool(use_change)
        self.trim = float(trim)
        self.onset_window = int(onset_window)
        self.drivers = tuple(drivers)
        self.pressure = tuple(pressure)  # utilisation: an input of the relations, see ``Relations``
        self.timezone = timezone  # the tenant's clock, on which a driver's season repeats (``load_season``)
        self.seed = seed  # the relations' boosting is seeded with it
        self.fitted_ = False

    @property
    def rarity_scale(self) -> float:
        return RARITY_PER_Z * self.z_threshold

    @property
    def threshold(self) -> float:
        return 0.5

    @property
    def min_history(self) -> int:
        return self.level_window

    @property
    def full_history(self) -> int:
        """Rows before a row at which every view of it is there: the warm-up (the level and change
        windows), the relations' driver windows and hold, ``SEASONS_COMPARED`` seasons back where the
        fit history repeats (two weeks for a weekly season), and the earlier rows that count as seen
        before (``MEMORY_WINDOW``; without a time index every earlier row counts), and a driver's
        seasons on the clock (an hour more where the clocks go back). Unfitted: the warm-up."""
        if not self.fitted_:
            return self.min_history
        seasons = [SEASONS_COMPARED * season for _, season in self.seasons_]
        relations = [max(DRIVER_WINDOWS) + self.hold_rows_ - 1] if self.relations_ is not None else []
        clock = [SEASONS_COMPARED * dict(self.seasons_)[p] + self.clock_change_rows_ for p in self.load_seasons_]
        # The rows remembered with their level and change views. Not with their seasonal views too:
        # two more weeks at a weekly season, which cost shopfast's 28-day pass an outage
        # (bench/results/simulator_detection.md); the oldest remembered rows count in their other views.
        remembered = (self.memory_rows_ or 0) + self.min_history
        return max([remembered, *seasons, *relations, *clock])

    def _views(self, values: np.ndarray) -> np.ndarray:
        """(rows, views) for the fitted metrics, in ``view_owner_`` order: a metric its drivers explain
        has one view, its residual against the relation (scored in ``score_matrix``); every other
        metric its value, trailing mean
        and (with ``use_change``) change, then a seasonal difference where the history repeats. Those
        univariate views see ``values``: the metrics' values with known causes such as scheduled
        events divided out (``known_causes_removed``)."""
        columns = [values, trailing_mean(values, self.level_window, LEVEL_MIN_OBSERVED)]
        if self.use_change:
            columns.append(relative_change(values, self.level_window, LEVEL_MIN_OBSERVED))
        for position, season in self.seasons_:
            columns.append(seasonal_difference(values[:, position], season, SEASONS_COMPARED)[:, None])
        return np.hstack(columns)[:, self.view_columns_]

    def _arrange_views(self) -> None:
        """Which columns of the full view stack are used (``view_columns_``) and whose they are
        (``view_owner_``): a metric whose relation replaces its univariate views keeps only its residual;
        ``relation_vetoes_`` marks the relations (in ``relation_owner_`` order) that only veto them."""
        n, per_metric = len(self.metrics_), 3 if self.use_change else 2
        related = self.relations_.targets if self.relations_ is not None else []
        vetoes = [not self.relations_.replaces_[m] for m in related]
        owners = [k % n for k in range(per_metric * n)] + [p for p, _ in self.seasons_]
        replaced = {m for m, veto in zip(related, vetoes, strict=True) if not veto}
        self.view_columns_ = [c for c, owner in enumerate(owners) if self.metrics_[owner] not in replaced]
        self.view_owner_ = np.asarray([owners[c] for c in self.view_columns_], dtype=int)
        self.relation_owner_ = np.asarray([self.metrics_.index(m) for m in related], dtype=int)
        self.relation_vetoes_ = np.asarray(vetoes, dtype=bool)

    def fit(self, frame: pd.DataFrame, expected: pd.DataFrame | None = None,
            values: np.ndarray | None = None) -> Self:
        """``expected``: known multipliers per metric and row (scheduled events), see ``_views``;
        ``values``: ``known_causes_removed(frame, metrics, expected)`` where the caller has it already."""
        self.metrics_ = metrics_to_fit(frame, self.kind)
        if values is None:
            values = known_causes_removed(frame, self.metrics_, expected)
        step = step_of(frame.index)
        self.seasons_: list[tuple[int, int]] = []
        for position, metric in enumerate(self.metrics_):
            raw = frame[metric].to_numpy(dtype=float)
            if np.isfinite(raw).sum() <= self.level_window:
                raise InsufficientHistoryError(
                    f"{self.kind} needs more than {self.level_window} observed points of '{metric}' to fit, "
                    f"got {int(np.isfinite(raw).sum())}"
                )
            season = detect_season(raw, step) if self.use_season else None
            if season:
                self.seasons_.append((position, season))
        drivers = [d for d in self.drivers if d in self.metrics_]
        pressure = [p for p in self.pressure if p in self.metrics_]
        explained = [m for m in self.metrics_ if m not in drivers]
        self.relations_ = (Relations(drivers, seed=self.seed, pressure=pressure)
                           .fit(frame, explained, self._driver_multipliers(frame, expected))
                           if drivers and explained else None)
        self.hold_rows_ = max(1, int(np.ceil(RELATION_HOLD / step))) if step is not None else 1
        self.memory_rows_ = max(1, int(np.ceil(MEMORY_WINDOW / step))) if step is not None else None
        self._fit_load_seasons(frame, values, step)
        self._arrange_views()
        views = self._views(values)
        self.memory_, self.low_, self.high_, self.floor_ = [], [], [], []
        for column in views.T:
            observed = column[np.isfinite(column)]
            if self.trim and observed.size:
                low, high = np.quantile(observed, [self.trim, 1 - self.trim])
                observed = observed[(observed >= low) & (observed <= high)]
            memory = np.unique(observed)
            if memory.size > MEMORY_SIZE:
                # de-duplicated like the branch above: a value held for long (an idle 0) fills many
                # quantiles, and repeats would give it a k-distance of 0 (every step off it "rare")
                memory = np.unique(np.quantile(observed, np.linspace(0, 1, MEMORY_SIZE)))
            self.memory_.append(memory)
            self.low_.append(observed.min() if observed.size else np.inf)
            self.high_.append(observed.max() if observed.size else -np.inf)
            self.floor_.append(1e-9 * max(1.0, float(np.abs(observed).max())) if observed.size else 1e-9)
        self.low_, self.high_, self.floor_ = map(np.asarray, (self.low_, self.high_, self.floor_))
        self._fit_density()
        self.fitted_ = True
        return self

    def _fit_load_seasons(self, frame: pd.DataFrame, values: np.ndarray, step: pd.Timedelta | None) -> None:
        """A ``LoadSeason`` per driver whose fit history repeats at a season of whole days
        (``load_seasons_``, by metric position): its own season on the tenant's clock is its expectation.
        ``values``: the frame's, known causes removed."""
        self.load_seasons_: dict[int, LoadSeason] = {}
        self.clock_change_rows_ = int(np.ceil(CLOCK_CHANGE / step)) if step is not None else 0
        if step is None or not isinstance(frame.index, pd.DatetimeIndex):
            return
        for position, season in self.seasons_:
            if self.metrics_[position] in self.drivers and not (season * step) % pd.Timedelta("1D"):
                fitted = LoadSeason(season * step, SEASONS_COMPARED, self.timezone).fit(values[:, position],
                                                                                        frame.index)
                if fitted is not None:
                    self.load_seasons_[position] = fitted

    def _fit_density(self) -> None:
        """The k-distance of every remembered value of each value view (``value_views_``): the local
        scale of the fit history that the value view's density-relative rarity is measured in."""
        self.value_views_ = np.asarray(self.view_columns_) < len(self.metrics_)
        self.spacing_ = [k_distance(memory, DENSITY_NEIGHBOURS) if value else np.empty(0)
                         for memory, value in zip(self.memory_, self.value_views_, strict=True)]

    #: What a detector fitted before each of these attributes existed did without it: no hold of the
    #: relations' residuals, every earlier row remembered, no driver's season on the clock.
    _PICKLED_BEFORE: ClassVar[dict] = {"hold_rows_": 1, "memory_rows_": None, "load_seasons_": {},
                                       "clock_change_rows_": 0}

    def __setstate__(self, state: dict) -> None:
        # A detector pickled before an attribute existed scores as it did, and holds what it read then:
        # its thresholds were calibrated on those scores, and a restart must not change what pages.
        self.__dict__.update(state)
        self.__dict__.setdefault("timezone", "UTC")
        if state.get("fitted_"):
            for name, value in self._PICKLED_BEFORE.items():
                self.__dict__.setdefault(name, value)
        # ... before relations existed: univariate views only.
        if state.get("fitted_") and "view_columns_" not in state:
            self.drivers, self.relations_ = (), None
            self._arrange_views()
        if state.get("fitted_") and "spacing_" not in state:
            # ... and one pickled before the density-relative rarity scores as it did, without it: its
            # thresholds were calibrated on those scores, and a restart must not change what pages
            self.value_views_ = np.zeros(len(self.view_columns_), bool)
            self.spacing_ = [np.empty(0)] * len(self.memory_)

    def _driver_multipliers(self, frame: pd.DataFrame, expected: pd.DataFrame | None) -> np.ndarray | None:
        """The known multiplier of each driver per row (scheduled events), or None without any."""
        drivers = [d for d in self.drivers if d in self.metrics_]
        if expected is None or not drivers:
            return None
        return expected.reindex(index=frame.index, columns=drivers).fillna(1.0).to_numpy(dtype=float)

    def score_matrix(self, frame: pd.DataFrame, expected: pd.DataFrame | None = None,
                     values: np.ndarray | None = None, targets: pd.DataFrame | None = None) -> np.ndarray:
        """(rows, metrics) raw scores in [0, 1] (no onset suppression); NaN for warm-up and gaps.
        ``expected`` and ``values`` as in ``fit``; ``targets`` as ``Relations.standardised_residuals``'."""
        if values is None:
            values = known_causes_removed(frame, self.metrics_, expected)
        views = self._views(values)
        window = self.memory_rows_  # None (no time index): every earlier row
        distance = nearest_earlier_distance(views, self.memory_, window)
        # The range each row is measured against: the fit history's plus the ``window`` rows before it.
        earlier = pd.DataFrame(views).shift(1)
        earlier = earlier.rolling(window, min_periods=1) if window else earlier.expanding()
        low = np.fmin(self.low_, earlier.min().to_numpy())
        high = np.fmax(self.high_, earlier.max().to_numpy())
        unit = np.maximum(np.nan_to_num(high - low, nan=0.0, posinf=0.0, neginf=0.0), self.floor_)
        rarity = distance / unit
        rarity = rarity / (rarity + self.rarity_scale)
        for column in np.flatnonzero(self.value_views_):
            local = np.maximum(np.nan_to_num(density_unit(views[:, column], self.memory_[column], self.spacing_[column]),
                                             nan=0.0), self.floor_[column])
            dense = distance[:, column] / local
            dense = dense / (dense + DENSITY_PER_Z * self.z_threshold)
            rarity[:, column] = np.sqrt(rarity[:, column] * dense)
        n_metrics = len(self.metrics_)
        score = np.full((views.shape[0], n_metrics), np.nan)
        for position in set(self.view_owner_.tolist()):
            score[:, position] = np.fmax.reduce(rarity[:, self.view_owner_ == position], axis=1)
        if self.load_seasons_ and isinstance(frame.index, pd.DatetimeIndex):
            # A driver against its own season on the clock: no memory of earlier rows, as a relation.
            positions = list(self.load_seasons_)
            _, held = self._held_score(np.column_stack([self.load_seasons_[p].z(values[:, p], frame.index)
                                                        for p in positions]))
            score[:, positions] = np.fmax(score[:, positions], held)
        if self.relation_owner_.size:
            # Residual against the relation in units of its held-out spread: no memory of earlier rows,
            # so an incident stays anomalous for as long as it lasts and every recurrence is news.
            residuals = self.relations_.standardised_residuals(frame, self._driver_multipliers(frame, expected),
                                                               targets)
            z, relation = self._held_score(residuals)
            vetoes, owners = self.relation_vetoes_, self.relation_owner_
            # A veto: rare on its own and not explained by its drivers (NaN, no expectation: no veto),
            # or far outside the relation whatever its own views say.
            alone = z[:, vetoes] / (z[:, vetoes] + ALONE_PER_RELATION_Z * RELATION_Z_PER_Z * self.z_threshold)
            vetoed = np.fmax(np.fmin(score[:, owners[vetoes]], relation[:, vetoes]), alone)
            score[:, owners[vetoes]] = np.where(np.isnan(relation[:, vetoes]), score[:, owners[vetoes]], vetoed)
            score[:, owners[~vetoes]] = relation[:, ~vetoes]
        observed = np.isfinite(frame[self.metrics_].to_numpy(dtype=float))
        score[~observed] = np.nan  # a gap is not scored
        score[: self.min_history] = np.nan  # warm-up: the trailing mean is not there yet
        return score

    def _held_score(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A residual without memory of earlier rows (a relation's, a driver's against its season): its
        size once held for ``hold_rows_`` (``held_for``), and its score, 0.5 at ``RELATION_Z_PER_Z`` x
        ``z_threshold``."""
        z = np.abs(held_for(z, self.hold_rows_))
        return z, z / (z + RELATION_Z_PER_Z * self.z_threshold)

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        if not getattr(self, "fitted_", False):
            raise ModelNotFittedError(f"{self.kind} detector is not fitted")
        check_frame(frame, self.metrics_, self.kind)
        raw = self.score_matrix(frame)
        out = pd.DataFrame(
            {m: keep_onsets(raw[:, i], self.onset_window) for i, m in enumerate(self.metrics_)}, index=frame.index
        )
        out[COMBINED] = out[self.metrics_].max(axis=1, skipna=True)
        return out

    def manifest(self) -> dict:
        base = super().manifest() | {"threshold": self.threshold, "min_history": self.min_history}
        if self.fitted_:
            base["seasons_rows"] = {self.metrics_[p]: s for p, s in self.seasons_}
        return base
