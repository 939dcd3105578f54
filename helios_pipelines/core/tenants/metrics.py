"""A metric's section of the tenant file: its series, forecast, anomaly watch, levels and scale trigger."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from helios_pipelines.core.guide_keys import guide_metric_keys
from helios_pipelines.core.tenants.base import (
    METRIC_NAME_PATTERN,
    SERIES_NAME_PATTERN,
    Strict,
    parse_duration,
)

Horizon = Annotated[int, Field(gt=0, description="minutes")]


class ForecastConfig(Strict):
    horizons: list[Horizon] = Field(min_length=1, description="forecast horizons, in minutes")

    @field_validator("horizons", mode="before")
    @classmethod
    def _horizons_as_minutes(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [int(parse_duration(v).total_seconds() // 60) if isinstance(v, str) else v for v in value]


class ScaleTrigger(Strict):
    """The guide's ``scale_trigger: "matches_in_queue > 100"``: scale out when a series is above a value."""

    series: str = Field(pattern=METRIC_NAME_PATTERN, description="the series (or logical metric) compared")
    above: float = Field(gt=0, allow_inf_nan=False)


class MetricConfig(Strict):
    """One metric as users name it (the logical name is its key) and as the source stores it.

    The integration guide's keys are accepted too (``core/guide_keys.py``): ``prometheus_query`` is
    ``query`` (and names ``series`` when absent), ``forecast_horizon: 1h`` is ``forecast: {horizons:
    [1h]}``, ``anomaly_detection`` is ``anomaly``, ``warning_threshold`` / ``critical_threshold`` are
    ``warning_above`` / ``critical_above``, ``alert_threshold_ms`` is ``critical_above`` in ms, and
    ``scale_trigger: "matches_in_queue > 100"`` is ``scale_trigger: {series, above}``. The levels drive
    the metric's capacity_warning / capacity_critical (``core/ops/capacity_alerts.py``); ``seasonality``
    is the Prophet candidate's seasonal components (``core/ml/models/forecasters.py``).
    """

    series: str = Field(pattern=SERIES_NAME_PATTERN, description="the source's own series name")
    query: str | None = Field(None, description="query in the source's language (PromQL for Prometheus)")
    kind: Literal["gauge", "counter"] = "gauge"
    unit: str = ""
    description: str = ""
    forecast: ForecastConfig | None = None
    anomaly: bool = False
    min_value: float | None = Field(None, description="values below are out of range (data quality)")
    max_value: float | None = Field(None, description="values above are out of range (data quality)")
    min_coverage: float = Field(0.9, ge=0, le=1, description="share of the grid that must hold data")
    seasonality: list[Literal["hourly", "daily", "weekly", "yearly"]] = Field(
        default_factory=list,
        description="the Prophet candidate's seasonal components (empty: daily and weekly); other kinds learn theirs from lags"
    )
    warning_above: float | None = Field(
        None, allow_inf_nan=False, description="capacity_warning while the value (a forecast metric: its upper bound) is above it")
    critical_above: float | None = Field(
        None, allow_inf_nan=False, description="capacity_critical while the value (a forecast metric: its upper bound) is above it")
    scale_trigger: ScaleTrigger | None = Field(None, description="KEDA emergency trigger: scale out above this value")

    @model_validator(mode="before")
    @classmethod
    def _guide_keys(cls, data: Any) -> Any:
        return guide_metric_keys(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _range_is_ordered(self) -> MetricConfig:
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError(f"min_value {self.min_value} is above max_value {self.max_value}")
        if self.warning_above is not None and self.critical_above is not None and self.warning_above >= self.critical_above:
            raise ValueError(f"warning level {self.warning_above} is not below critical level {self.critical_above}")
        return self
