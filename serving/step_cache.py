"""The one cache of a served tenant: everything computed for a step (its history, forecasts, detector
scores, finished answers, exported series), keyed by that step.

Within a step nothing a tenant answers can change, so a step's results are computed once. One
eviction rule: the newest ``steps`` steps are kept (the current one, and the previous one while a
slow request of it finishes), each holding at most ``per_step`` entries, least recently used out
first (clients choose ``current_replicas`` and horizons freely; the bound does not trust them).
A result for an older step (a query with a past ``time``) is computed and not kept.

A step's results are read by many threads at once (the request threads and the publisher's refresh),
so each is computed once, by whichever asks first, and the others wait for it; and a pandas result's
lookup tables are built before it is shared (see ``_shareable``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

import pandas as pd
from cachetools import LRUCache

T = TypeVar("T")
_MISSING = object()


class StepCache:
    def __init__(self, per_step: int = 4096, steps: int = 2) -> None:
        self.per_step, self.steps = per_step, steps
        self._generations: dict[pd.Timestamp, LRUCache] = {}
        self._lock = threading.Lock()  # held for dict operations only, never while computing
        self._computing: dict[tuple[pd.Timestamp, Hashable], threading.Event] = {}

    def get(self, step: pd.Timestamp, key: Hashable, default=None):
        with self._lock:
            generation = self._generations.get(step)
            return default if generation is None else generation.get(key, default)

    def put(self, step: pd.Timestamp, key: Hashable, value: T) -> T:
        _shareable(value)
        with self._lock:
            generation = self._generations.get(step)
            if generation is None:
                if len(self._generations) >= self.steps and step < min(self._generations):
                    return value  # an older step than every kept one: not worth evicting a newer one for
                generation = self._generations[step] = LRUCache(self.per_step)
                for old in sorted(self._generations)[: -self.steps]:
                    del self._generations[old]
            generation[key] = value
        return value

    def get_or_compute(self, step: pd.Timestamp, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached result, or ``compute()``'s, kept. Concurrent misses of one key compute it once:
        the others wait for that result instead of computing the same step side by side (the publisher's
        refresh and a /metrics request at a boundary did, reading each other's half-built frames). If the
        first computation fails, or its step is too old to keep, a waiter computes its own."""
        with self._lock:
            generation = self._generations.get(step)
            found = _MISSING if generation is None else generation.get(key, _MISSING)
            if found is not _MISSING:
                return found
            in_flight = self._computing.get((step, key))
            if in_flight is None:
                finished = self._computing[(step, key)] = threading.Event()
        if in_flight is not None:
            in_flight.wait()
            found = self.get(step, key, _MISSING)
            return self.put(step, key, compute()) if found is _MISSING else found
        try:
            return self.put(step, key, compute())
        finally:
            with self._lock:
                del self._computing[(step, key)]
            finished.set()

    def keys(self, step: pd.Timestamp) -> list[Hashable]:
        """The keys kept for ``step``, oldest first."""
        with self._lock:
            generation = self._generations.get(step)
            return [] if generation is None else list(generation)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(g) for g in self._generations.values())



def _shareable(value) -> None:
    """Builds the lookup tables of a pandas result (or of the frames in a tuple of them) before other
    threads read it: pandas builds an index's hash table on its first lookup, and two threads building
    it at once can make a lookup of a label that is there raise KeyError (pandas-dev/pandas#21150,
    #28439). A 50-tenant serve bench saw it as a 503 from /detect's ``alert_state.loc`` about once in
    20,000 requests."""
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, pd.DataFrame | pd.Series):
            for axis in item.axes:
                axis.get_indexer(axis[:1])  # the engine's mapping and its uniqueness, built once here
