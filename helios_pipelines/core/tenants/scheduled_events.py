"""Scheduled events in the tenant file: known future (or past) traffic multipliers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator

from helios_pipelines.core.tenants.base import Strict

# An event must stay computable: pandas holds times from 1677 to 2262, and forecasts are multiplied
# by the multiplier, so a year-long event with a thousandfold multiplier is the most one can say.
EVENT_MAX_HOURS = 366 * 24
EVENT_MAX_MULTIPLIER = 1000.0
EVENT_YEARS = (1970, 2200)


def utc_within_years(value: datetime, field: str) -> datetime:
    """``value`` in UTC (a naive time is read as UTC), refused outside ``EVENT_YEARS``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not EVENT_YEARS[0] <= value.year <= EVENT_YEARS[1]:
        raise ValueError(f"{field} must be between the years {EVENT_YEARS[0]} and {EVENT_YEARS[1]}, got {value.year}")
    return value.astimezone(UTC)


class ScheduledEvent(Strict):
    """A known future (or past) event that multiplies traffic: a launch, a tournament. The guide's
    ``expected_multiplier`` is accepted for ``multiplier``."""

    name: str = Field(min_length=1, max_length=200)
    kind: str = Field("", max_length=200, description="events of one kind share a learned multiplier; defaults to the name")
    start: datetime
    duration_hours: float = Field(gt=0, le=EVENT_MAX_HOURS, allow_inf_nan=False)
    multiplier: float = Field(gt=0, le=EVENT_MAX_MULTIPLIER, allow_inf_nan=False,
                              description="expected traffic multiplier, e.g. 5.0")
    metrics: list[str] = Field(default_factory=list, max_length=100, description="logical metrics affected; empty = all")
    repeat_days: int | None = Field(None, gt=0, le=366, description="recurs every N days (a weekly tournament: 7)")
    ramp_minutes: float = Field(
        0, ge=0, allow_inf_nan=False,
        description="traffic builds up linearly over this long after the start, and winds down before the end",
    )

    @model_validator(mode="before")
    @classmethod
    def _guide_multiplier(cls, data: Any) -> Any:
        if isinstance(data, dict) and "expected_multiplier" in data:
            if "multiplier" in data:
                raise ValueError("expected_multiplier: set multiplier or the guide's expected_multiplier, not both")
            data = {k: v for k, v in data.items() if k != "expected_multiplier"} | {"multiplier": data["expected_multiplier"]}
        return data

    @model_validator(mode="after")
    def _ramps_fit(self) -> ScheduledEvent:
        if 2 * self.ramp_minutes > 60 * self.duration_hours:
            raise ValueError(
                f"event '{self.name}': ramp_minutes {self.ramp_minutes:g} twice over is longer than its "
                f"{self.duration_hours:g} hours"
            )
        return self

    @field_validator("start")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return utc_within_years(value, "start")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.duration_hours)

    @property
    def event_kind(self) -> str:
        return self.kind or self.name
