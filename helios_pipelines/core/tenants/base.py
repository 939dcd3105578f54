"""Building blocks of the tenant schema: strict models, names, durations and environment-variable names."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
# A source's own names: Prometheus' plus the dots of Datadog (system.cpu.user) and CloudWatch.
SERIES_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:./-]*$"
# Secrets are best not written in YAML: a config names the environment variables that hold them.
EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable name")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: str | int | float) -> timedelta:
    """'15m', '1h', '2d', '90s', '1h30m' or a number of minutes -> timedelta."""
    if isinstance(value, int | float):
        return timedelta(minutes=float(value))
    text = str(value).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(d|h|m|min|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"'{value}' is not a duration (use e.g. 15m, 1h, 2d)")
    seconds = {"d": 86400, "h": 3600, "m": 60, "min": 60, "s": 1}
    return timedelta(seconds=sum(float(n) * seconds[u] for n, u in parts))


def format_horizon(minutes: int) -> str:
    """Minutes -> the label KEDA and Grafana use ('15m', '1h', '1d')."""
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"
