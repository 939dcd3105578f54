"""Scheduled events (launches, tournaments) as known future inputs.

An event multiplies traffic while it runs. Models see events as hour-precise 0/1 columns, one per
event kind, so a model can learn a kind's effect from its past occurrences; the configured
multiplier is the prior used where no past occurrence exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from helios_pipelines.core.tenants import ScheduledEvent


def ramp_weight(index: pd.DatetimeIndex, start: pd.Timestamp, end: pd.Timestamp, ramp: pd.Timedelta) -> np.ndarray:
    """How much of an event is in force at each timestamp: 0 outside it, rising linearly to 1 over
    ``ramp`` after the start and falling back to 0 over ``ramp`` before the end (a step without ramp)."""
    if ramp <= pd.Timedelta(0):
        return ((index >= start) & (index < end)).astype(float)
    return np.minimum(np.clip((index - start) / ramp, 0, 1), np.clip((end - index) / ramp, 0, 1))


@dataclass(frozen=True)
class Occurrence:
    name: str
    kind: str
    start: pd.Timestamp
    end: pd.Timestamp
    multiplier: float
    metrics: tuple[str, ...]
    ramp: pd.Timedelta = pd.Timedelta(0)

    def applies_to(self, metric: str) -> bool:
        return not self.metrics or metric in self.metrics

    def factor(self, index: pd.DatetimeIndex, multiplier: float | None = None) -> np.ndarray:
        """The traffic multiplier this occurrence puts on each timestamp, ramps included (1 outside
        it); ``multiplier`` replaces the configured one (a learned effect)."""
        peak = self.multiplier if multiplier is None else multiplier
        return 1 + (peak - 1) * ramp_weight(index, self.start, self.end, self.ramp)


def event_column(kind: str) -> str:
    return "event_" + re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_")


class EventSchedule:
    def __init__(self, events: list[ScheduledEvent] | tuple[ScheduledEvent, ...] = ()):
        self.events = tuple(events)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def kinds(self) -> list[str]:
        return sorted({e.event_kind for e in self.events})

    def with_events(self, extra: list[ScheduledEvent]) -> EventSchedule:
        return EventSchedule(self.events + tuple(extra))

    def occurrences(self, start: pd.Timestamp, end: pd.Timestamp) -> list[Occurrence]:
        """Every occurrence overlapping [start, end), recurring events expanded."""
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        found = []
        for event in self.events:
            first = pd.Timestamp(event.start)
            length = pd.Timedelta(hours=event.duration_hours)
            if event.repeat_days:
                period = pd.Timedelta(days=event.repeat_days)
                k0 = max(0, int(np.floor((start - length - first) / period)))
                k1 = int(np.ceil((end - first) / period))
                starts = [first + k * period for k in range(k0, k1 + 1)]
            else:
                starts = [first]
            for s in starts:
                if s < end and s + length > start:
                    found.append(
                        Occurrence(event.name, event.event_kind, s, s + length, event.multiplier, tuple(event.metrics),
                                   pd.Timedelta(minutes=event.ramp_minutes))
                    )
        return sorted(found, key=lambda o: o.start)

    def flags(self, index: pd.DatetimeIndex, metric: str | None = None) -> pd.DataFrame:
        """0/1 column per event kind: 1 where an occurrence of that kind is running."""
        frame = pd.DataFrame(0.0, index=index, columns=[event_column(k) for k in self.kinds])
        if len(index) == 0:
            return frame
        for occ in self.occurrences(index.min(), index.max() + timedelta(seconds=1)):
            if metric is None or occ.applies_to(metric):
                frame.loc[(index >= occ.start) & (index < occ.end), event_column(occ.kind)] = 1.0
        return frame

    def multiplier(self, index: pd.DatetimeIndex, metric: str | None = None) -> pd.Series:
        """The configured multiplier in force at each timestamp, ramps included (1 where no event runs;
        overlaps multiply)."""
        result = np.ones(len(index))
        if len(index) == 0:
            return pd.Series(result, index=index)
        for occ in self.occurrences(index.min(), index.max() + timedelta(seconds=1)):
            if metric is None or occ.applies_to(metric):
                result *= occ.factor(index)
        return pd.Series(result, index=index)
