"""The detector the pipeline trains, serving runs and the NAB benchmark scores (``CombinedDetector``),
and the registry of detector kinds.

Every detector scores a frame (one column per logical metric, rows in arrival order) so that a row's
score uses only that row, the rows before it and what ``fit`` learned from training history. Scoring a
prefix of a frame therefore gives exactly the first rows of scoring the whole frame. Everything is
vectorised over rows and metrics (one nearest-earlier-neighbour pass, one batched IsolationForest
call) because serving scores every metric's held history (``full_history`` and a day: two weeks of
remembered rows, plus two more at a weekly season) each step.

Scores live in [0, 1] and every detector maps its own statistic so that ``threshold`` marks the
tenant's sensitivity: the rarity scorer gives 0.5 to a point ``RARITY_PER_Z x z_threshold`` of the
range seen so far away from anything seen before (in any of its views; the value view takes the
geometric mean of that and its density-relative rarity, see ``rarity``).

The parts live in modules of their own: ``rarity`` (the per-metric views), ``residual`` (the
residual against a one-step seasonal forecast, in units of its interval, which vetoes what the
forecast expected where the forecast is good), ``load_season`` (a driver against its own season on
the tenant's clock), ``isolation`` (the multivariate forest), ``nearest`` (the neighbour search),
``series_views`` (shared views and conventions), ``calibration`` (per-metric thresholds learned from
operators' verdicts).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple, Self

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.changes import ChangeAnnotation, explained, rescaled
from helios_pipelines.core.ml.events import EventSchedule
from helios_pipelines.core.ml.models.alerting import hold_until_return
from helios_pipelines.core.ml.models.base import AnomalyDetector, ModelNotFittedError
from helios_pipelines.core.ml.models.isolation import IsolationForestDetector
from helios_pipelines.core.ml.models.rarity import RarityDetector
from helios_pipelines.core.ml.models.residual import SeasonalResidual
from helios_pipelines.core.ml.models.series_views import (
    COMBINED,
    check_frame,
    keep_onsets,
    known_causes_removed,
    metrics_to_fit,
)

#: An episode whose change has become the new normal closes after this many level windows below the
#: threshold, even if the value never returns (see ``alerting``).
SETTLE_WINDOWS = 3


class AlertState(NamedTuple):
    state: pd.DataFrame  # bool per row and column of the scores
    after_change: pd.DataFrame  # the reported change's label where its window's end opened the episode, else None


def rescale_to_threshold(score: np.ndarray, threshold: float, target: float = 0.5) -> np.ndarray:
    """Piecewise-linear map of [0, threshold, 1] onto [0, target, 1], so scores of detectors with
    different thresholds can be compared (and maxed) at a common threshold."""
    return np.where(
        score < threshold,
        score / threshold * target,
        target + (score - threshold) / (1 - threshold) * (1 - target),
    )


class CombinedDetector(AnomalyDetector):
    """The detector the pipeline trains, ``/detect`` serves and ``helios bench anomaly`` scores:
    rarity per metric (RarityDetector), a veto of each metric's score by the forecast where it is good
    (``residual``: a ramp the seasonal forecast expected is not an anomaly, an incident during it is; the
    forest's joint score is not vetoed, and the pipeline trains with ``forest_weight=0``), plus the
    multivariate forest, plus alerting sensitivity.

    ``combined`` is the larger of the per-metric rarity scores and the forest's score (rescaled so its
    threshold meets the rarity scorer's 0.5): a point is anomalous on its own or in combination.
    ``forest_weight`` < 1 shrinks the forest's say (0 turns it off). On a single metric the forest is
    not used: it only re-scores what the rarity scorer already sees, less adaptively (on the NAB
    subset it took the standard score from 66 to 35). ``onset_window`` > 0 makes ``combined`` report
    onsets only (see ``keep_onsets``): the NAB benchmark uses it, alerting does not.

    Alerting (``alerts``) follows Datadog's controls: a metric is alerting once at least
    ``trigger_share`` of the last ``trigger_window`` rows scored at or above the threshold, and stops
    once ``recovery_window`` consecutive rows are below it.

    ``calibrate`` gives a metric a threshold of its own, learned from operators' verdicts
    (``calibration``): its raw score is mapped so that threshold lands on the common one.
    """

    kind: ClassVar[str] = "combined"

    def __init__(
        self,
        *,
        z_threshold: float = 2.5,
        trigger_window: int = 1,
        trigger_share: float = 1.0,
        recovery_window: int = 5,
        forest_weight: float = 1.0,
        onset_window: int = 0,
        drivers: tuple[str, ...] | list[str] = (),
        pressure: tuple[str, ...] | list[str] = (),
        timezone: str = "UTC",
        events: tuple | list = (),
        rarity: dict | None = None,
        forest: dict | None = None,
        seed: int = 42,
    ):
        if trigger_window < 1 or recovery_window < 1 or not 0 < trigger_share <= 1 or not 0 <= forest_weight <= 1:
            raise ValueError(
                "trigger_window and recovery_window must be >= 1, trigger_share in (0, 1], forest_weight in [0, 1]"
            )
        if onset_window < 0:
            raise ValueError("onset_window must be >= 0")
        self.z_threshold = float(z_threshold)
        self.trigger_window = int(trigger_window)
        self.trigger_share = float(trigger_share)
        self.recovery_window = int(recovery_window)
        self.forest_weight = float(forest_weight)
        self.onset_window = int(onset_window)
        self.seed = seed
        self.events = tuple(events)
        self.rarity = RarityDetector(z_threshold=z_threshold, seed=seed, drivers=drivers, pressure=pressure,
                                     timezone=timezone, **(rarity or {}))
        self.forest = IsolationForestDetector(z_threshold=z_threshold, seed=seed, **(forest or {}))
        self.fitted_ = False

    @property
    def threshold(self) -> float:
        return self.rarity.threshold

    @property
    def uses_forest(self) -> bool:
        # Before fit the metrics are unknown: assume several, so min_history errs on the long side.
        return self.forest_weight > 0 and len(getattr(self.rarity, "metrics_", ())) != 1

    @property
    def min_history(self) -> int:
        return max(self.rarity.min_history, self.forest.min_history if self.uses_forest else 0)

    @property
    def full_history(self) -> int:
        residual = getattr(self, "residual_", None)
        return max(self.rarity.full_history, self.forest.full_history if self.uses_forest else 0,
                   residual.reach if residual is not None else 0)

    @property
    def metrics_(self) -> list[str]:
        return self.rarity.metrics_

    def expected(self, frame: pd.DataFrame, extra_events: tuple | list = ()) -> pd.DataFrame | None:
        """The multiplier scheduled events put on each metric and row (ramps included): known causes,
        divided out before the univariate views look. ``extra_events``: events posted since training."""
        schedule = EventSchedule(tuple(getattr(self, "events", ())) + tuple(extra_events))
        if not len(schedule) or not isinstance(frame.index, pd.DatetimeIndex):
            return None
        # Events multiply load: with drivers known, the other metrics follow them through their relations.
        loaded = [m for m in frame.columns if m in self.rarity.drivers] or list(frame.columns)
        return pd.DataFrame({m: schedule.multiplier(frame.index, m).to_numpy() for m in loaded}, index=frame.index)

    def fit(self, frame: pd.DataFrame) -> Self:
        metrics = metrics_to_fit(frame, self.kind)
        expected = self.expected(frame)
        values = known_causes_removed(frame, metrics, expected)  # once: every univariate view reads it
        self.rarity.fit(frame, expected, values)
        self.residual_ = self._fit_residual(values)
        if self.uses_forest:
            self.forest.fit(frame)
        self.calibrated_: dict[str, float] = {}  # a fit starts from the configured threshold
        self.learned_until_ = frame.index[-1] if isinstance(frame.index, pd.DatetimeIndex) and len(frame) else None
        self.fitted_ = True
        return self

    def _fit_residual(self, values: np.ndarray) -> SeasonalResidual:
        """The forecast-residual view (``residual``) of each seasonal metric the rarity views score, on
        the fit history's ``values`` with known causes removed: a metric whose relation to its drivers
        replaces its own views has its expectation there."""
        relations = self.rarity.relations_
        replaced = {m for m in relations.targets if relations.replaces_[m]} if relations is not None else set()
        seasons = [(p, s) for p, s in self.rarity.seasons_ if self.metrics_[p] not in replaced]
        return SeasonalResidual(seasons, len(self.metrics_), self.rarity.level_window).fit(values)

    def calibrate(self, thresholds: dict[str, float]) -> Self:
        """Per-metric thresholds on the raw score (in (0, 1)), replacing any earlier calibration."""
        unknown = sorted(set(thresholds) - set(self.metrics_))
        if unknown:
            raise KeyError(f"{self.kind} detector was fitted on {self.metrics_}; cannot calibrate {unknown}")
        bad = {m: t for m, t in thresholds.items() if not 0 < t < 1}
        if bad:
            raise ValueError(f"calibrated thresholds must lie inside (0, 1), got {bad}")
        self.calibrated_ = {m: float(t) for m, t in thresholds.items()}
        return self

    @property
    def metric_thresholds(self) -> dict[str, float]:
        """Each metric's threshold on its raw score: the calibrated one, else the common threshold."""
        calibrated = getattr(self, "calibrated_", {})  # detectors pickled before calibration existed
        return {m: calibrated.get(m, self.threshold) for m in self.metrics_}

    @property
    def change_window_rows(self) -> int:
        """How many rows a reported change without an end lasts (``core.ml.changes``): the level window,
        over which the views take a shift for the new level."""
        return self.rarity.level_window

    @property
    def learned_until(self) -> pd.Timestamp | None:
        """The last timestamp of the fit history (None: not a time index, or pickled before it was kept,
        and then no reported scaling is divided out)."""
        return getattr(self, "learned_until_", None)

    def score(self, frame: pd.DataFrame, extra_events: tuple | list = (),
              changes: tuple[ChangeAnnotation, ...] | list[ChangeAnnotation] = ()) -> pd.DataFrame:
        """``extra_events``: events posted since training; ``changes``: reported changes, whose scalings
        are divided out of the per-replica metrics they name where those are judged on their own level
        (their own views, and as a relation's target), not where they are an input to another metric's
        relation: there they are the pressure the fleet really carried (``changes``)."""
        if not self.fitted_:
            raise ModelNotFittedError(f"{self.kind} detector is not fitted")
        check_frame(frame, self.metrics_, self.kind)
        own = rescaled(frame, changes, self.learned_until)
        expected = self.expected(frame[self.metrics_], extra_events)
        values = known_causes_removed(own, self.metrics_, expected)
        per_metric = self.rarity.score_matrix(frame, expected, values, targets=own)
        residual = getattr(self, "residual_", None)  # None: pickled before the residual view, scores as it did
        if residual is not None:
            per_metric = residual.veto(per_metric, values, self.z_threshold, self.threshold)
        for position, metric in enumerate(self.metrics_):
            if metric in getattr(self, "calibrated_", {}):
                per_metric[:, position] = rescale_to_threshold(per_metric[:, position], self.calibrated_[metric],
                                                               self.threshold)
        with np.errstate(all="ignore"):
            combined = np.fmax.reduce(per_metric, axis=1)
        if self.uses_forest:
            joint = self.forest_weight * rescale_to_threshold(self.forest.score_rows(frame), self.forest.threshold)
            combined = np.fmax(combined, joint)
        per_metric[: self.min_history] = np.nan
        combined[: self.min_history] = np.nan
        out = pd.DataFrame(per_metric, index=frame.index, columns=self.metrics_)
        out[COMBINED] = keep_onsets(combined, self.onset_window)
        return out

    def alerts(self, scores: pd.DataFrame, frame: pd.DataFrame | None = None,
               changes: tuple[ChangeAnnotation, ...] | list[ChangeAnnotation] = ()) -> pd.DataFrame:
        """Boolean alert state per column of ``score``'s output, with trigger and recovery windows.

        Given the scored ``frame``, each metric's episode is held until its value returns to the
        pre-incident level and does not re-open on the return's echo (``alerting.hold_until_return``),
        and the ``changes`` the tenant reported explain what they caused (``core.ml.changes``); ``combined`` is
        then any metric alerting (or the joint forest's own alert)."""
        return self.alert_state(scores, frame, changes).state

    def alert_state(self, scores: pd.DataFrame, frame: pd.DataFrame | None = None,
                    changes: tuple[ChangeAnnotation, ...] | list[ChangeAnnotation] = ()) -> AlertState:
        """``alerts``, with the label of the reported change whose window's end opened each alerting
        metric's episode (``after_change``: None where no change did)."""
        above = (scores >= self.threshold).astype(float).where(scores.notna())
        share = above.rolling(self.trigger_window, min_periods=self.trigger_window).mean()
        triggered = (share >= self.trigger_share) & (above == 1)
        recent_max = above.fillna(0).rolling(self.recovery_window, min_periods=self.recovery_window).max()
        state = pd.DataFrame(np.nan, index=scores.index, columns=scores.columns)
        state[recent_max == 0] = 0.0
        state[triggered] = 1.0
        state = state.ffill().fillna(0).astype(bool)
        after_change = pd.DataFrame(np.full(scores.shape, None, dtype=object), index=scores.index,
                                    columns=scores.columns)
        if frame is None:
            return AlertState(state, after_change)
        below = (above == 0).to_numpy()
        frame = rescaled(frame, changes, self.learned_until)  # the levels score() compared
        level_window = self.rarity.level_window
        for position, metric in enumerate(self.metrics_):
            held = hold_until_return(
                triggered[metric].to_numpy(), below[:, position], frame[metric].to_numpy(dtype=float),
                recovery_window=self.recovery_window, level_window=level_window,
                settle_window=SETTLE_WINDOWS * level_window)
            state[metric], after_change[metric] = explained(
                held, scores.index, metric, changes, window_rows=self.change_window_rows,
                recovery_window=self.recovery_window)
        joint = state[COMBINED] & ~triggered[self.metrics_].any(axis=1) if self.uses_forest else False
        state[COMBINED] = state[self.metrics_].any(axis=1) | joint
        return AlertState(state, after_change)

    def manifest(self) -> dict:
        return super().manifest() | {
            "threshold": self.threshold,
            "min_history": self.min_history,
            "z_threshold": self.z_threshold,
            "trigger_window": self.trigger_window,
            "trigger_share": self.trigger_share,
            "recovery_window": self.recovery_window,
            "forest_weight": self.forest_weight,
        } | ({"metric_thresholds": self.metric_thresholds} if self.fitted_ else {}) | self._forecast_weights()

    def _forecast_weights(self) -> dict:
        """Each metric's weight of the forecast-residual view (0: the rarity views alone), for review."""
        residual = getattr(self, "residual_", None)
        if residual is None:
            return {}
        weights = zip(self.metrics_, residual.weight_, strict=True)
        return {"forecast_weights": {m: round(float(w), 3) for m, w in weights}}


DETECTORS: dict[str, type[AnomalyDetector]] = {
    d.kind: d for d in (RarityDetector, IsolationForestDetector, CombinedDetector)
}


def make_detector(kind: str, **kwargs) -> AnomalyDetector:
    try:
        return DETECTORS[kind](**kwargs)
    except KeyError:
        raise ValueError(f"unknown detector kind '{kind}'; known kinds: {', '.join(sorted(DETECTORS))}") from None
