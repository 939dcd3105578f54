"""Helios' series as the service published them, step by step: what ``/metrics`` showed and what the
Prometheus API answers for any time (serving/prometheus_api.py). Kept ``RETENTION`` long per tenant,
the range a Grafana dashboard opens on; a Prometheus scraping ``/metrics`` keeps longer history.

A step is kept as its values only, beside the series' names, labels and help, which it shares with
the step before whenever they are the same (nearly always): a day of a one-minute tenant's 40 series
takes 0.8 MiB rather than the 24 MiB of 1440 lists of Sample objects (tracemalloc), which for the
multi-tenant service's 50 tenants is 40 MiB a day rather than 1.2 GiB (its target is 2 GiB in all).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from typing import NamedTuple

import pandas as pd

from helios_pipelines.core.ops.exposition import Sample

RETENTION = pd.Timedelta("24h")


class Step(NamedTuple):
    """One step's published series: (name, labels, help) of each, in order, and their values."""

    series: tuple[tuple[str, dict[str, str], str], ...]
    values: array

    @classmethod
    def of(cls, samples: list[Sample], before: Step | None) -> Step:
        series = tuple((s.name, s.labels, s.help) for s in samples)
        if before is not None and before.series == series:
            series = before.series  # the same series as the step before: kept once
        return cls(series, array("d", (s.value for s in samples)))

    def samples(self) -> list[Sample]:
        return [Sample(name, labels, value, help_)
                for (name, labels, help_), value in zip(self.series, self.values, strict=True)]


class PublishedSeries:
    """Each tenant's series as published step by step, kept ``retention`` long.

    ``compute(now, tenant)`` gives a tenant's series of the step containing ``now`` (the runtime
    computes them at most once per step). One tenant's failure never hides another tenant's series.
    """

    def __init__(self, compute: Callable[[pd.Timestamp, str], list[Sample]], steps: dict[str, pd.Timedelta],
                 retention: pd.Timedelta = RETENTION):
        self.compute, self.steps, self.retention = compute, steps, retention
        self._steps: dict[str, dict[int, Step]] = {tenant: {} for tenant in steps}
        self._lock = threading.Lock()

    @property
    def tenants(self) -> list[str]:
        return sorted(self.steps)

    def current(self, tenant: str, now: pd.Timestamp | None = None) -> list[Sample]:
        now = now if now is not None else pd.Timestamp.now(tz="UTC")
        step = now.floor(self.steps[tenant]).value
        published = self._steps[tenant].get(step)
        if published is not None:
            return published.samples()
        samples = self.compute(now, tenant)
        oldest = step - self.retention.value
        with self._lock:
            kept = {k: v for k, v in self._steps[tenant].items() if k >= oldest}
            kept[step] = Step.of(samples, kept[max(kept)] if kept else None)
            self._steps[tenant] = kept  # a new dict: readers never see one being trimmed
        return samples

    def steps_upto(self, tenant: str, now: pd.Timestamp) -> tuple[int, dict[int, Step]]:
        """The tenant's step and its published series by step start (ns), the current step included."""
        self.current(tenant, now)
        return self.steps[tenant].value, self._steps[tenant]

    def earliest(self, tenants: list[str]) -> pd.Timestamp | None:
        """The first step still on record for any of ``tenants``."""
        firsts = [min(self._steps[t]) for t in tenants if self._steps[t]]
        return pd.Timestamp(min(firsts), tz="UTC") if firsts else None

    def at(self, tenant: str, when: pd.Timestamp, now: pd.Timestamp) -> list[Sample] | None:
        """The tenant's series as published for the step containing ``when``; None when none were."""
        step, current = when.floor(self.steps[tenant]), now.floor(self.steps[tenant])
        if step > current:
            return None
        if step == current:
            return self.current(tenant, now)
        published = self._steps[tenant].get(step.value)
        return None if published is None else published.samples()
