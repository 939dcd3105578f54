"""How Helios' forecaster blends its members: per lead time, weights on a grid over the simplex learned
on the calibration slice, the blend that lets the others share a missing member's weight, and the
simple forecast that replaces the blend where it did better on that slice."""

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


def fallback(actual: np.ndarray, blended: np.ndarray, simple: np.ndarray, confidence: float = 0.0,
             batches: int = 20) -> int | None:
    """Which of the (origins x leads x k) ``simple`` forecasts replaces the (origins x leads) blend: the
    one with the lowest MAE on the calibration slice (per origin, on the targets every forecast has,
    averaged over origins), if that is below the blend's; else None. With ``confidence`` > 0 its gain
    must also hold across the slice: at least that many standard errors above zero over ``batches``
    consecutive stretches of origins (neighbouring origins share most of their targets). The blend's
    weights were learned on the same slice, so the comparison already favours the blend."""
    known = np.isfinite(actual) & np.isfinite(blended) & np.isfinite(simple).all(axis=-1)
    origins = known.any(axis=1)
    if origins.sum() < 2 * batches:
        return None
    known = known[origins]
    count = known.sum(axis=1)[:, None]
    blend_error = np.where(known, np.abs(actual - blended)[origins], 0.0).sum(axis=1)[:, None] / count
    simple_error = np.where(known[..., None], np.abs(actual[..., None] - simple)[origins], 0.0).sum(axis=1) / count
    gain = blend_error - simple_error  # (origins x k): positive where the simple forecast did better
    best = int(np.argmax(gain.mean(axis=0)))
    stretches = np.array([part.mean() for part in np.array_split(gain[:, best], batches)])
    standard_error = stretches.std(ddof=1) / np.sqrt(batches)
    return best if stretches.mean() > max(confidence * standard_error, 0.0) else None
