"""Helios' series as the service published them, step by step: what ``/metrics`` showed and what the
Prometheus API answers for any time (serving/prometheus_api.py). Kept ``RETENTION`` long per tenant,
the range a Grafana dashboard opens on; a Prometheus scraping ``/metrics`` keeps longer history."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pandas as pd

from helios_pipelines.core.ops.exposition import Sample

RETENTION = pd.Timedelta("24h")


class PublishedSeries:
    """Each tenant's series as published step by step, kept ``retention`` long.

    ``compute(now, tenant)`` gives a tenant's series of the step containing ``now`` (the runtime
    computes them at most once per step). One tenant's failure never hides another tenant's series.
    """

    def __init__(self, compute: Callable[[pd.Timestamp, str], list[Sample]], steps: dict[str, pd.Timedelta],
                 retention: pd.Timedelta = RETENTION):
        self.compute, self.steps, self.retention = compute, steps, retention
        self._steps: dict[str, dict[int, list[Sample]]] = {tenant: {} for tenant in steps}
        self._lock = threading.Lock()

    @property
    def tenants(self) -> list[str]:
        return sorted(self.steps)

    def current(self, tenant: str, now: pd.Timestamp | None = None) -> list[Sample]:
        now = now if now is not None else pd.Timestamp.now(tz="UTC")
        step = now.floor(self.steps[tenant]).value
        samples = self._steps[tenant].get(step)
        if samples is None:
            samples = self.compute(now, tenant)
            oldest = step - self.retention.value
            with self._lock:
                kept = {k: v for k, v in self._steps[tenant].items() if k >= oldest}
                kept[step] = samples
                self._steps[tenant] = kept  # a new dict: readers never see one being trimmed
        return samples

    def steps_upto(self, tenant: str, now: pd.Timestamp) -> tuple[int, dict[int, list[Sample]]]:
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
        return self._steps[tenant].get(step.value)
