"""The guide's anomaly thresholds are z-scores (``anomaly_alert: 2.5``, dashboard colours at 2 and 3);
Helios' detectors score in [0, 1] with the tenant's ``anomaly_alert`` at the detector's threshold.

A score ``s`` reads as the z-score ``z = anomaly_alert x odds(s) / odds(threshold)``, odds(x) = x / (1 - x).
For the rarity detector (threshold 0.5, ``s = q / (q + 0.08 z_alert)``) this is exactly its rarity in
z units, ``q / 0.08``: a point scored at the threshold reads as ``anomaly_alert``, one twice as rare as
twice that. Served as ``helios_anomaly_zscore`` beside ``helios_anomaly_score``, so the guide's panels
and triggers keep their z-score numbers. Capped at ``MAX_Z`` (a score of 1 would be infinite).
"""

from __future__ import annotations

import math

MAX_Z = 100.0


def _odds(x: float) -> float:
    return x / (1 - x) if x < 1 else math.inf


def score_to_z(score: float, threshold: float, anomaly_alert: float) -> float:
    """The z-score a [0, 1] score stands for; NaN stays NaN (a metric still warming up)."""
    if math.isnan(score):
        return score
    if not 0 < threshold < 1:
        raise ValueError(f"a detector threshold must be inside (0, 1), got {threshold}")
    return min(MAX_Z, anomaly_alert * _odds(min(max(score, 0.0), 1.0)) / _odds(threshold))


def z_to_score(z: float, threshold: float, anomaly_alert: float) -> float:
    """The [0, 1] score at which a point reads as the z-score ``z`` (e.g. a dashboard's 2 and 3)."""
    odds = z / anomaly_alert * _odds(threshold)
    return odds / (1 + odds)
