"""Helios' series as Prometheus gauges: one sample type, and its text exposition (0.0.4) written by
``prometheus_client``, the writer behind serving's /metrics too; shared by the per-tenant /metrics,
/api/v1/query and the live-accuracy gauges."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    help: str = ""

    @property
    def all_labels(self) -> dict[str, str]:
        return {"__name__": self.name, **self.labels}


def format_value(value: float) -> str:
    """A sample value as the Prometheus HTTP API writes it (Go's float formatting)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Samples:
    """A prometheus_client collector over a fixed list of samples (one gauge family per name)."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def collect(self):
        from prometheus_client.core import Metric

        families: dict[str, Metric] = {}
        for sample in sorted(self.samples, key=lambda s: (s.name, sorted(s.labels.items()))):
            family = families.get(sample.name)
            if family is None:
                family = families[sample.name] = Metric(sample.name, sample.help or sample.name, "gauge")
            family.add_sample(sample.name, dict(sorted(sample.labels.items())), sample.value)
        yield from families.values()


def exposition(samples: list[Sample]) -> str:
    """Text format, one HELP/TYPE block per metric name (every Helios series is a gauge)."""
    # Imported here: prometheus_client fixes its multiprocess mode at import, which BentoML sets up
    # in each worker after this module may already have been imported.
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Samples(samples))
    return generate_latest(registry).decode()
