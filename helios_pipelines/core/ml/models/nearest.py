"""The nearest-earlier-neighbour search behind the rarity views: for every row of one or many series,
the distance to the closest value seen before it (a sorted memory plus the earlier rows), found for
all rows at once. Sorted by value, a row's closest earlier values are its nearest neighbours on
either side that came before it: a few direct probes, then a binary search over a sparse table of
row minima for the rows still unresolved.
"""

from __future__ import annotations

import numpy as np

#: Sorted neighbours probed directly before the sparse-table search takes over.
NEIGHBOUR_PROBES = 8


def _gap_to_earlier_on_the_left(rows: np.ndarray, values: np.ndarray, bound: np.ndarray,
                                own: np.ndarray | None = None) -> np.ndarray:
    """Per column of ``values`` (sorted ascending, NaN last) and ``rows`` (their row numbers, inf for
    NaN): the value gap from each entry to the nearest entry on its left that came earlier, when that
    gap can beat ``bound`` (inf otherwise). ``own``, when given, is the row each entry looks back from
    (``rows`` by default; -inf: the entry looks for nothing). Vectorised over all entries: a few direct
    probes, then a binary search over a sparse table of row minima for the entries still unresolved."""
    own_rows = rows if own is None else own
    n, width = rows.shape
    gap = np.full((n, width), np.inf)
    pending = np.isfinite(values) & (own_rows > -np.inf)
    for step in range(1, min(NEIGHBOUR_PROBES, n - 1) + 1):
        hit = pending[step:] & (rows[:-step] < own_rows[step:])
        gap[step:] = np.where(hit, values[step:] - values[:-step], gap[step:])
        pending[step:] &= ~hit
    pending[:NEIGHBOUR_PROBES] = False
    if n > NEIGHBOUR_PROBES:
        # Entries further left are at least this far away in value: they cannot beat the bound.
        pending[NEIGHBOUR_PROBES:] &= values[NEIGHBOUR_PROBES:] - values[:-NEIGHBOUR_PROBES] < bound[NEIGHBOUR_PROBES:]
    at, column = np.nonzero(pending)
    if at.size:
        levels = [rows]  # levels[k][p] = min(rows[p - 2**k + 1 .. p])
        while (1 << (len(levels) - 1)) < n:
            span, previous = 1 << (len(levels) - 1), levels[-1]
            levels.append(np.minimum(previous, np.vstack([np.full((span, width), np.inf), previous[:-span]])))
        own = own_rows[at, column]
        end = at - NEIGHBOUR_PROBES  # entries before ``end`` are still to search
        for k in range(len(levels) - 1, -1, -1):
            valid = end >= 1
            block_min = np.where(valid, levels[k][np.maximum(end - 1, 0), column], -np.inf)
            end = np.where(valid & (block_min >= own), np.maximum(end - (1 << k), 0), end)
        found = end - 1
        ok = found >= 0
        ok[ok] = rows[found[ok], column[ok]] < own[ok]
        gap[at[ok], column[ok]] = values[at[ok], column[ok]] - values[found[ok], column[ok]]
    return gap


def _closest_in_memory(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Each value's position in the sorted, non-empty ``known`` of the value closest to it."""
    above = np.clip(np.searchsorted(known, values), 0, known.size - 1)
    below = np.clip(above - 1, 0, known.size - 1)
    return np.where(np.abs(known[below] - values) < np.abs(known[above] - values), below, above)


def _distance_to_memory(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Each value's distance to the closest value of the sorted ``known`` (inf when it is empty)."""
    if not known.size:
        return np.full(values.shape, np.inf)
    return np.abs(known[_closest_in_memory(values, known)] - values)


def _nearest_in_window(matrix: np.ndarray, window: int, memory) -> np.ndarray:
    """Per column, each row's distance to the closest of its memory and the ``window`` rows before it
    (inf without one).

    Cut into blocks of ``window`` rows, a row's window is the rows before it in its own block and the
    rows of the previous block from its own offset on: the first is the nearest-earlier search within
    each block, the second the same search on each block merged with the previous one, where a
    previous row at offset j may serve a row at offset k when j >= k (labels ``window - 1 - j`` <
    ``window - k``) and a row of the block itself serves nobody."""
    n, width = matrix.shape
    count = -(-n // window)
    padded = np.full((count * window, width), np.nan)
    padded[:n] = matrix
    blocks = padded.reshape(count, window, width).transpose(1, 0, 2).reshape(window, count * width)
    within = nearest_earlier_distance(blocks, list(memory) * count)
    within = np.where(np.isnan(within), np.inf, within)  # also bounds the search across blocks
    across = np.full(blocks.shape, np.inf)
    if count > 1:
        merged = np.vstack([blocks[:, :-width], blocks[:, width:]])
        offsets = np.arange(window, dtype=float)[:, None]
        labels = np.vstack([np.broadcast_to(window - 1 - offsets, (window, merged.shape[1])),
                            np.full((window, merged.shape[1]), np.inf)])
        own = np.vstack([np.full((window, merged.shape[1]), -np.inf),
                         np.broadcast_to(window - offsets, (window, merged.shape[1]))])
        order = np.argsort(merged, axis=0, kind="stable")
        ordered = np.take_along_axis(merged, order, axis=0)
        finite = np.isfinite(ordered)
        rows = np.where(finite, np.take_along_axis(labels, order, axis=0), np.inf)
        looking = np.where(finite, np.take_along_axis(own, order, axis=0), -np.inf)
        bound = np.take_along_axis(np.vstack([np.full((window, merged.shape[1]), np.inf), within[:, width:]]),
                                   order, axis=0)
        left = _gap_to_earlier_on_the_left(rows, ordered, bound, looking)
        right = _gap_to_earlier_on_the_left(rows[::-1], -ordered[::-1], bound, looking[::-1])[::-1]
        found = np.empty(merged.shape)
        np.put_along_axis(found, order, np.minimum(left, right), axis=0)
        across[:, width:] = found[window:]
    nearest = np.minimum(within, across)
    return nearest.reshape(window, count, width).transpose(1, 0, 2).reshape(count * window, width)[:n]


def nearest_earlier_distance(values: np.ndarray, memory, window: int | None = None) -> np.ndarray:
    """For each row, the distance to the closest value among the sorted memory and the earlier rows
    (only the ``window`` rows before it, when given).

    ``values`` is one series (memory: one sorted array) or a 2-D array with a series per column
    (memory: a sorted array per column). Sorted by value, a row's closest earlier values are its
    nearest neighbours on either side that came before it; they are found for every row at once, so
    many series cost one vectorised pass. NaN rows get NaN and are nobody's neighbour, as does a
    first value with no memory.
    """
    matrix = np.asarray(values, dtype=float)
    single = matrix.ndim == 1
    if single:
        matrix, memory = matrix[:, None], [np.asarray(memory, dtype=float)]
    n, width = matrix.shape
    if window is not None and n > window:
        distance = _nearest_in_window(matrix, window, memory)
        distance[~np.isfinite(distance) | ~np.isfinite(matrix)] = np.nan
        return distance[:, 0] if single else distance
    order = np.argsort(matrix, axis=0, kind="stable")  # NaN last; ties keep row order
    ordered = np.take_along_axis(matrix, order, axis=0)
    bound = np.full((n, width), np.inf)
    for column in range(width):
        bound[:, column] = _distance_to_memory(ordered[:, column], memory[column])
    rows = np.where(np.isfinite(ordered), order, np.inf)
    left = _gap_to_earlier_on_the_left(rows, ordered, bound)
    right = _gap_to_earlier_on_the_left(rows[::-1], -ordered[::-1], bound[::-1])[::-1]
    distance = np.empty((n, width))
    np.put_along_axis(distance, order, np.minimum(bound, np.minimum(left, right)), axis=0)
    distance[~np.isfinite(distance) | ~np.isfinite(matrix)] = np.nan
    return distance[:, 0] if single else distance


def k_distance(memory: np.ndarray, k: int) -> np.ndarray:
    """For each value of a sorted, de-duplicated memory, the distance to its ``k``-th nearest other value
    (LOF's k-distance in one dimension): small where the history is dense, large in its sparse tails.
    Empty with fewer than two values; ``k`` is capped at the number of other values."""
    n = memory.size
    if n < 2:
        return np.empty(0)
    k = min(k, n - 1)
    candidates = np.full((n, 2 * k), np.inf)
    for offset in range(1, k + 1):
        gap = memory[offset:] - memory[:-offset]
        candidates[offset:, offset - 1] = gap  # the value ``offset`` places below
        candidates[:-offset, k + offset - 1] = gap  # the value ``offset`` places above
    return np.partition(candidates, k - 1, axis=1)[:, k - 1]


def density_unit(values: np.ndarray, memory: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """For each value, the k-distance (``spacing``, from ``k_distance``) of the memory value nearest it:
    the local scale of the history where the value falls. NaN without a memory of two values."""
    out = np.full(values.shape, np.nan)
    if spacing.size == 0:
        return out
    out[np.isfinite(values)] = spacing[_closest_in_memory(values, memory)][np.isfinite(values)]
    return out
