"""The one cache of a served tenant: everything computed for a step (its history, forecasts, detector
scores, finished answers, exported series), keyed by that step.

Within a step nothing a tenant answers can change, so a step's results are computed once. One
eviction rule: the newest ``steps`` steps are kept (the current one, and the previous one while a
slow request of it finishes), each holding at most ``per_step`` entries, least recently used out
first (clients choose ``current_replicas`` and horizons freely; the bound does not trust them).
A result for an older step (a query with a past ``time``) is computed and not kept.
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

    def get(self, step: pd.Timestamp, key: Hashable, default=None):
        with self._lock:
            generation = self._generations.get(step)
            return default if generation is None else generation.get(key, default)

    def put(self, step: pd.Timestamp, key: Hashable, value: T) -> T:
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
        """The cached result, or ``compute()``'s, kept (concurrent misses may compute it twice: the
        service runs one compute thread, so they rarely do, and never wait on each other's lock)."""
        found = self.get(step, key, _MISSING)
        return self.put(step, key, compute()) if found is _MISSING else found

    def keys(self, step: pd.Timestamp) -> list[Hashable]:
        """The keys kept for ``step``, oldest first."""
        with self._lock:
            generation = self._generations.get(step)
            return [] if generation is None else list(generation)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(g) for g in self._generations.values())

