"""Per-metric thresholds learned from operators' verdicts on anomaly episodes (issue 17 item 4).

An operator marks a recorded episode ``not_an_incident`` (a page that should not have fired) or
``incident`` (a real one). Each training run of the tenant's detector reads every verdict the store
holds for the tenant and calibrates the freshly fitted detector, so the verdicts outlive any model
and one tenant's verdicts never move another tenant's thresholds.

The rule, per metric an episode names:

1. The episode's *firing level* is the highest threshold at which the new detector would still open
   an alert in the episode's rows (``firing_level``: with the tenant's trigger window and share, a
   row fires at threshold t when it scores at least t and so do enough rows of its window). It is
   measured with a probe, the same detector fitted on the same window with every labelled episode's
   rows left out, so it scores each episode as news, as it would score a recurrence the live
   detector has not learned as normal. The episode's rows are padded by the recovery window on either
   side: the episode was recorded by an earlier model, whose edges may differ by a few rows.
2. A metric with not-an-incident episodes gets the threshold just above their highest firing level
   (+ ``MARGIN``), so none of them would have fired;
3. bounded so that every confirmed incident naming the metric still fires (at most its firing level
   - ``MARGIN``) and never past ``MAX_THRESHOLD``, so a metric is never muted. A verdict the bound
   overrules is counted (``overruled``).
4. A threshold only ever rises above the configured one (scores in [0, 1]; the configured threshold
   is the detector's ``threshold``, 0.5): a confirmed incident never makes a metric more sensitive.

The detector applies a metric's calibrated threshold t by mapping its raw score piecewise-linearly
so that t lands on the common threshold (``CombinedDetector.calibrate``): everything downstream
(alerts, episodes, ``/detect``'s threshold, the z-score gauge) keeps one threshold.
Episodes outside the training window cannot be scored and are counted, not used.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.series_views import step_of

#: How far above a rejected episode's firing level (and below a confirmed one's) a threshold is set.
MARGIN = 0.01
#: No verdict raises a metric's threshold past this: a point this rare always fires.
MAX_THRESHOLD = 0.99


@dataclass(frozen=True)
class LabelledEpisode:
    """A recorded episode with its operator's verdict: the metrics it named and its anomalous rows."""

    episode_id: int
    incident: bool
    metrics: tuple[str, ...]
    start: pd.Timestamp  # its first anomalous row
    end: pd.Timestamp  # its last anomalous row


@dataclass(frozen=True)
class Calibration:
    before: dict[str, float]  # metric -> the configured threshold
    after: dict[str, float]  # metric -> the calibrated threshold
    used: int  # verdicts whose episode lies in the training window
    outside: int  # verdicts whose episode does not
    overruled: list[int] = field(default_factory=list)  # rejected episodes a confirmed incident kept firing

    def mlflow_metrics(self) -> dict[str, float]:
        """What changed, for the training run: the thresholds before and after, per metric."""
        numbers = {"verdicts_used": float(self.used), "verdicts_outside_window": float(self.outside),
                   "verdicts_overruled": float(len(self.overruled))}
        for metric in self.before:
            numbers[f"threshold_before.{metric}"] = self.before[metric]
            numbers[f"threshold_after.{metric}"] = self.after[metric]
        return numbers


def firing_level(scores: np.ndarray, trigger_window: int = 1, trigger_share: float = 1.0) -> float:
    """The highest threshold at which these consecutive rows open an alert (as ``CombinedDetector.alerts``
    triggers: the row scores at least the threshold, and so do ``trigger_share`` of the
    ``trigger_window`` rows ending at it): the largest, over rows, of the smaller of the row's own
    score and the k-th highest score of its window (k = ceil(share x window)). A window holding an
    unscored row never fires; -inf when no row can."""
    values = np.asarray(scores, dtype=float)
    if values.size < trigger_window:
        return -math.inf
    k = max(1, math.ceil(trigger_share * trigger_window - 1e-9))
    windows = np.lib.stride_tricks.sliding_window_view(values, trigger_window)
    kth = np.sort(windows, axis=1)[:, -k]
    level = np.minimum(values[trigger_window - 1:], kth)
    level[~np.isfinite(windows).all(axis=1)] = -math.inf
    return float(level.max())


def calibrate(detector, frame: pd.DataFrame, labelled: list[LabelledEpisode]) -> Calibration:
    """Calibrate ``detector`` (a fitted CombinedDetector, fitted on ``frame``) with the tenant's
    verdicts, by the rule in this module's docstring; returns what changed."""
    metrics = list(detector.metrics_)
    before = dict.fromkeys(metrics, float(detector.threshold))
    usable = [e for e in labelled if set(e.metrics) & set(metrics)
              and e.start <= frame.index[-1] and e.end >= frame.index[0]]
    outside = len(labelled) - len(usable)
    if not any(not e.incident for e in usable):
        return Calibration(before, dict(before), len(usable), outside)
    pad = detector.recovery_window * (step_of(frame.index) or pd.Timedelta(0))
    rows = {e.episode_id: (frame.index >= e.start - pad) & (frame.index <= e.end + pad) for e in usable}
    masked = frame.copy()
    for inside in rows.values():
        masked.loc[inside, :] = np.nan
    probe = copy.deepcopy(detector).fit(masked)
    scores = probe.score(frame)

    def level(episode: LabelledEpisode, metric: str) -> float:
        inside = np.flatnonzero(rows[episode.episode_id])
        if not inside.size:
            return -math.inf
        first = max(0, inside[0] - detector.trigger_window + 1)  # the trigger window reaches back
        return firing_level(scores[metric].to_numpy(dtype=float)[first:inside[-1] + 1],
                            detector.trigger_window, detector.trigger_share)

    after, overruled = dict(before), []
    for metric in metrics:
        rejected = {e.episode_id: level(e, metric) for e in usable if not e.incident and metric in e.metrics}
        if not rejected:
            continue
        confirmed = [level(e, metric) for e in usable if e.incident and metric in e.metrics]
        ceiling = min([MAX_THRESHOLD] + [c - MARGIN for c in confirmed if math.isfinite(c)])
        after[metric] = max(before[metric], min(max(rejected.values()) + MARGIN, ceiling))
        overruled += [episode for episode, fires in rejected.items() if fires >= after[metric]]
    detector.calibrate({m: t for m, t in after.items() if t != before[m]})
    return Calibration(before, after, len(usable), outside, sorted(set(overruled)))
