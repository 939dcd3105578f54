"""How Helios' forecaster blends its members: per lead time, weights on a grid over the simplex learned
on the calibration slice, and the blend that lets the others share a missing member's weight."""

from __future__ import annotations

import numpy as np


def simplex(members: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors on a grid of ``step`` over the simplex (non-negative, summing to one)."""
    n = round(1 / step)
    grid = [c for c in np.ndindex(*(n + 1,) * (members - 1)) if sum(c) <= n]
    return np.array([[*c, n - sum(c)] for c in grid], dtype=float) / n


def blend_weights(actual: np.ndarray, members: np.ndarray, blend: bool = True) -> np.ndarray:
    """(leads x members) weights from (origins x leads) ``actual`` and (origins x leads x members)
    forecasts: per lead time, the grid point of the simplex with the lowest MAE on the calibration slice
    (a handful of numbers each learned from about 1000 origins). Members missing on most of the slice are
    left out; the first member (the direct model) alone if nothing else, or when not ``blend``."""
    weights = np.zeros(members.shape[1:])
    weights[:, 0] = 1.0
    if not blend:
        return weights
    for j in range(members.shape[1]):
        a, m = actual[:, j], members[:, j, :]
        usable = [k for k in range(m.shape[1]) if np.isfinite(m[:, k]).mean() > 0.9]
        rows = np.isfinite(a) & np.isfinite(m[:, usable]).all(axis=1)
        if rows.sum() < 50 or usable == [0]:
            continue
        grid = simplex(len(usable))
        errors = np.abs(a[rows, None] - m[rows][:, usable] @ grid.T).mean(axis=0)
        weights[j] = 0.0
        weights[j, usable] = grid[int(np.argmin(errors))]
    return weights


def combine(weights: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(origins x leads) blend of (origins x leads x members) forecasts with (leads x members)
    ``weights``; where a member is missing the others share its weight."""
    w = np.broadcast_to(weights[None, : members.shape[1], :], members.shape)
    w = np.where(np.isfinite(members), w, 0.0)
    total = w.sum(axis=-1)
    blended = np.nansum(np.where(w > 0, members, 0.0) * w, axis=-1) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, blended, members[..., 0])
