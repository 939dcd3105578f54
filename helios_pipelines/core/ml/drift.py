"""When a champion no longer fits: data drift and live-accuracy decay, as plain functions.

Drift compares a metric's recent values with the distribution of the window its champion was trained
on, by the population stability index (PSI) over the training window's deciles. The profile of the
training window is small (bin edges and shares), so a sensor computes it once per champion and keeps
it, instead of fetching the whole window again on every evaluation.

Accuracy decay compares live MASE (from the prediction feedback loop) with the champion's backtest
MASE: a model may be a little worse live than in its backtest, not ``ACCURACY_TOLERANCE`` times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

# PSI is usually read as < 0.1 stable, > 0.25 shifted. Traffic with a weekly rhythm reads 0.01-0.45
# over a 3-day recent window against the week before it when nothing changed (measured on the
# simulator's gaming and e-commerce tenants); 0.25 would retrain on one day in six for nothing.
PSI_THRESHOLD = 0.5
ACCURACY_TOLERANCE = 1.5
BINS = 10
# An empty bin would make PSI infinite; this floor keeps one missing decile a large, finite signal.
_FLOOR = 1e-4


@dataclass(frozen=True)
class Profile:
    """A metric's distribution over a window: bin edges (the window's minimum, its quantiles, and
    just above its maximum) and the share of the window's points in each bin. The two open bins
    outside the window's range start empty, so values never seen in training count as drift."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]

    @classmethod
    def of(cls, values: pd.Series | np.ndarray, bins: int = BINS) -> Profile:
        observed = _finite(values)
        if observed.size == 0:
            raise ValueError("cannot profile a window without a single observed value")
        quantiles = np.quantile(observed, np.linspace(0, 1, bins + 1)[:-1])
        edges = np.unique(np.append(quantiles, np.nextafter(observed.max(), np.inf)))
        return cls(tuple(float(e) for e in edges), tuple(float(s) for s in _shares(observed, edges)))

    def psi(self, values: pd.Series | np.ndarray) -> float:
        """Population stability index of ``values`` against this profile; NaN when none is observed."""
        observed = _finite(values)
        if observed.size == 0:
            return float("nan")
        expected = np.maximum(np.asarray(self.shares), _FLOOR)
        actual = np.maximum(_shares(observed, np.asarray(self.edges)), _FLOOR)
        return float(np.sum((actual - expected) * np.log(actual / expected)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Profile:
        return cls(tuple(data["edges"]), tuple(data["shares"]))


def _finite(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / counts.sum()


def profile_window(frame: pd.DataFrame, metrics: list[str], bins: int = BINS) -> dict[str, Profile]:
    """Profiles of the metrics that hold data in ``frame``."""
    return {m: Profile.of(frame[m], bins) for m in metrics if m in frame and frame[m].notna().any()}


@dataclass(frozen=True)
class RetrainingReasons:
    """Why a tenant's champions should be retrained; empty when they still fit."""

    drifted: dict[str, float]  # metric -> PSI above the threshold
    decayed: dict[str, tuple[float, float]]  # metric -> (live MASE, backtest MASE)

    def __bool__(self) -> bool:
        return bool(self.drifted or self.decayed)

    def describe(self) -> str:
        parts = [f"{m} drifted (PSI {psi:.2f} > {PSI_THRESHOLD})" for m, psi in sorted(self.drifted.items())]
        parts += [
            f"{m} live MASE {live:.2f} vs backtest {backtest:.2f} (> x{ACCURACY_TOLERANCE})"
            for m, (live, backtest) in sorted(self.decayed.items())
        ]
        return "; ".join(parts)


def drifted_metrics(reference: Mapping[str, Profile], recent: pd.DataFrame, threshold: float = PSI_THRESHOLD) -> dict[str, float]:
    """Metrics whose recent values moved away from their training window: metric -> PSI."""
    found = {}
    for metric, profile in reference.items():
        if metric in recent:
            psi = profile.psi(recent[metric])
            if np.isfinite(psi) and psi > threshold:
                found[metric] = psi
    return found


def decayed_metrics(
    live_mase: Mapping[str, float], backtest_mase: Mapping[str, float], tolerance: float = ACCURACY_TOLERANCE
) -> dict[str, tuple[float, float]]:
    """Metrics whose live MASE exceeds ``tolerance`` times their backtest MASE."""
    return {
        m: (live, backtest_mase[m])
        for m, live in live_mase.items()
        if m in backtest_mase and np.isfinite(live) and np.isfinite(backtest_mase[m]) and live > tolerance * backtest_mase[m]
    }
