"""Helios' series as Prometheus gauges: one sample type and the text exposition format (0.0.4),
shared by serving's /metrics and /api/v1/query and by the live-accuracy gauges."""

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
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def exposition(samples: list[Sample]) -> str:
    """Text format, one HELP/TYPE block per metric name (every Helios series is a gauge)."""
    lines, seen = [], set()
    for sample in sorted(samples, key=lambda s: (s.name, sorted(s.labels.items()))):
        if sample.name not in seen:
            seen.add(sample.name)
            if sample.help:
                lines.append(f"# HELP {sample.name} {sample.help}")
            lines.append(f"# TYPE {sample.name} gauge")
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
        lines.append(f"{sample.name}{{{labels}}} {format_value(sample.value)}")
    return "\n".join(lines) + ("\n" if lines else "")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
