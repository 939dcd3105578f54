"""/detect: anomaly scores in [0, 1] of the latest step, of client-given points (a what-if), or of
every step since a time (the scheduled detection catching up)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from serving.errors import NotFoundError, RequestError

if TYPE_CHECKING:
    from helios_pipelines.core.ml.models.detectors import AlertState
    from serving.runtime import TenantRuntime

# How far past the last complete step a client's point may lie: the frame is extended to it (a year
# ahead at one-minute steps was half a million rows and 13 s of scoring).
MAX_STEPS_AHEAD = 1440


def detect(runtime: TenantRuntime, metric_names: list[str] | None, points: list[tuple[pd.Timestamp, float]] | None,
           end: pd.Timestamp, since: pd.Timestamp | None = None) -> dict:
    if runtime.detector is None:
        raise NotFoundError(f"tenant '{runtime.tenant_id}' has no anomaly detector")
    watched = list(runtime.manifest["detector"]["metrics"])
    metrics = [runtime.metric(m) for m in metric_names] if metric_names else watched
    for metric in metrics:
        if metric not in watched:
            raise NotFoundError(
                f"metric '{metric}' of tenant '{runtime.tenant_id}' is not watched for anomalies; "
                f"watched: {', '.join(watched)}"
            )
    frame = runtime.history(end)[watched]
    scored_rows = frame.index[-1:] if since is None else frame.index[frame.index > since]
    if points:
        if len(metrics) != 1:
            raise RequestError("points can only be given for exactly one metric")
        frame, scored_rows = _with_points(runtime, frame.copy(), metrics[0], points)
        all_scores, alert_state = _score(runtime, frame)
    else:
        # The latest scores only change with the step: score the history once per step.
        all_scores, alert_state = runtime.cache.get_or_compute(end, ("scores", frame.index[-1], runtime.events_version),
                                                               lambda: _score(runtime, frame))
    alerts, after_change = alert_state.state.loc[scored_rows], alert_state.after_change.loc[scored_rows]
    scores = all_scores.loc[scored_rows]
    results = []
    for timestamp in scored_rows:
        for metric in metrics:
            score = scores.at[timestamp, metric]
            value = frame.at[timestamp, metric]
            change = after_change.at[timestamp, metric]
            results.append(
                {
                    "metric": metric,
                    "timestamp": timestamp.isoformat(),
                    "value": None if pd.isna(value) else float(value),
                    "score": None if pd.isna(score) else float(score),
                    "anomalous": bool(alerts.at[timestamp, metric]),
                    # A missing value (a scrape gap at the source) has no score either, but it is not warming up.
                    "warming_up": bool(pd.isna(score) and not pd.isna(value)),
                    # Still away when a reported change's window ended: the change is the likely cause.
                    **({"after_change": change} if change is not None else {}),
                }
            )
    return {
        "tenant": runtime.tenant_id,
        "threshold": float(runtime.detector.threshold),
        "scores": results,
        "model": runtime.detector_pin.as_dict(),
    }


def _score(runtime: TenantRuntime, frame: pd.DataFrame) -> tuple[pd.DataFrame, AlertState]:
    # Posted events are known causes too: the detector divides their expected effect out. The changes
    # are read once: the events feed's thread may add one meanwhile, and scores and alerts must agree.
    changes = runtime.posted_changes
    scores = runtime.detector.score(frame, extra_events=runtime.posted_events, changes=changes)
    # Alert state applies the tenant's trigger and recovery windows, holds an episode until the value is
    # back at its pre-incident level, and leaves out what the reported changes explain.
    return scores, runtime.detector.alert_state(scores, frame, changes)


def _with_points(runtime: TenantRuntime, frame: pd.DataFrame, metric: str, points: list[tuple[pd.Timestamp, float]]):
    """Client-supplied values replace or extend the history on the tenant's grid."""
    stamps = []
    for timestamp, value in points:
        if value is None or not np.isfinite(value):
            raise RequestError(f"point at {timestamp} for '{metric}' is not a finite number")
        stamp = pd.Timestamp(timestamp)
        stamp = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).floor(runtime.step)
        if stamp < frame.index[0]:
            raise RequestError(f"point at {stamp.isoformat()} is older than the history the detector keeps")
        if stamp > frame.index[-1] + MAX_STEPS_AHEAD * runtime.step:
            raise RequestError(f"point at {stamp.isoformat()} is more than {MAX_STEPS_AHEAD} steps ahead of the "
                               f"last complete step ({frame.index[-1].isoformat()})")
        if stamp not in frame.index:
            extra = pd.date_range(frame.index[-1] + runtime.step, stamp, freq=runtime.step)
            frame = pd.concat([frame, pd.DataFrame(index=extra, columns=frame.columns, dtype=float)])
        frame.loc[stamp, metric] = float(value)
        stamps.append(stamp)
    return frame, pd.DatetimeIndex(sorted(set(stamps)))
