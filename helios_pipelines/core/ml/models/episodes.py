"""Episodes an operator would draw, from a detector's per-row alert state.

One episode is one run of the tenant's ``combined`` alert (the detector's trigger and recovery
windows already applied): every metric whose own alert fired during the run is named, the one that
moved first leading. The simulator bench counts these episodes and the store records them
(``anomaly_log``), so what is measured is what an operator is paged for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from helios_pipelines.core.ml.models.series_views import COMBINED


@dataclass(frozen=True)
class Episode:
    start: pd.Timestamp  # first alerting row
    end: pd.Timestamp | None  # first row after it that is no longer alerting; None while open
    metrics: tuple[str, ...]  # every metric that alerted during it, the one that moved first leading
    peak: float  # highest combined score during it

    @property
    def first(self) -> str | None:
        return self.metrics[0] if self.metrics else None


def episodes(scores: pd.DataFrame, alerts: pd.DataFrame) -> list[Episode]:
    """Runs of ``alerts[COMBINED]`` as episodes. A run that only the joint (multivariate) score raised
    names the metric scoring highest at its first row."""
    combined = alerts[COMBINED].to_numpy(dtype=bool)
    metrics = [c for c in alerts.columns if c != COMBINED]
    if not combined.any():
        return []
    edges = np.diff(np.concatenate([[0], combined.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    per_metric = alerts[metrics].to_numpy(dtype=bool)
    metric_scores = scores[metrics].to_numpy(dtype=float)
    found = []
    for begin, stop in zip(starts, stops, strict=True):
        block = per_metric[begin:stop]
        named = [j for j in range(len(metrics)) if block[:, j].any()]
        # First mover: the metric alerting earliest; at the same row, the one scoring higher there.
        first_row = {j: int(np.argmax(block[:, j])) for j in named}
        named.sort(key=lambda j: (first_row[j], -np.nan_to_num(metric_scores[begin + first_row[j], j], nan=-1.0)))
        if not named:
            named = [int(np.nanargmax(np.nan_to_num(metric_scores[begin], nan=-1.0)))]
        peak = scores[COMBINED].to_numpy(dtype=float)[begin:stop]
        found.append(
            Episode(
                start=alerts.index[begin],
                end=alerts.index[stop] if stop < len(alerts) else None,
                metrics=tuple(metrics[j] for j in named),
                peak=float(np.nanmax(peak)) if np.isfinite(peak).any() else float("nan"),
            )
        )
    return found
