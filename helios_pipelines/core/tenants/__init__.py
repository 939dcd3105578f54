"""The tenant registry: one YAML file per customer under ``configs/tenants/``.

Every key is validated strictly (unknown keys are errors, so a typo never silently falls back to a
default). ``load_tenants`` validates each file on its own, so one bad tenant never hides the others;
the errors it collects name the file, the key and the problem.

This module holds the file's top level (``TenantConfig``, its cross-references) and the loading; each
larger section has its own module, read beside ``configs/tenants/_template.yaml``: ``metrics``,
``scheduled_events``, ``source_configs``, ``alerting``, ``scaling`` (``base`` holds what they share);
the guide's metric keys are mapped in ``core/guide_keys.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from helios_pipelines.core.tenants.alerting import AlertConfig
from helios_pipelines.core.tenants.base import METRIC_NAME_PATTERN, Strict
from helios_pipelines.core.tenants.metrics import MetricConfig
from helios_pipelines.core.tenants.scaling import ScalingTarget
from helios_pipelines.core.tenants.scheduled_events import ScheduledEvent
from helios_pipelines.core.tenants.source_configs import SOURCE_TAGS, SimulatorSource, SourceConfig

TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
log = logging.getLogger(__name__)
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "tenants"


class Region(Strict):
    name: str
    timezone: str
    share: float = Field(gt=0, le=1, description="share of the players in this region")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone '{value}'") from exc
        return value


class Thresholds(Strict):
    """Thresholds from the integration guide; extra keys are kept for custom rules."""

    model_config = ConfigDict(extra="allow", frozen=True)
    max_players_per_server: float | None = Field(None, gt=0)
    latency_warning_ms: float | None = Field(None, gt=0)
    latency_critical_ms: float | None = Field(None, gt=0)
    queue_length_scale_trigger: float | None = Field(None, gt=0)


class TrainingConfig(Strict):
    history_days: int = Field(14, ge=2, le=90)
    backtest_folds: int = Field(3, ge=1, le=20)
    cron: str = Field("0 3 * * *", description="retraining schedule (cron, UTC)")
    promotion: Literal["auto", "manual"] = "auto"
    seed: int = 42
    forecast_from_drivers: bool = Field(
        False, description="Helios' forecaster reads the past of each metric's drivers (the scaling's metric)")


GUIDE_PLANS = {"standard": "starter"}


class TenantConfig(Strict):
    id: str = Field(pattern=TENANT_ID_PATTERN)
    name: str
    plan: Literal["starter", "pro", "enterprise"] = "pro"
    timezone: str = "UTC"
    regions: list[Region] = Field(default_factory=list)
    step: str = Field("1min", description="sampling step of every series (pandas offset, e.g. 1min, 5min)")
    source: SourceConfig = SimulatorSource()
    metrics: dict[Annotated[str, Field(pattern=METRIC_NAME_PATTERN)], MetricConfig] = Field(min_length=1)
    thresholds: Thresholds = Thresholds()
    alerts: AlertConfig = AlertConfig()
    events: list[ScheduledEvent] = Field(default_factory=list)
    scaling: list[ScalingTarget] = Field(default_factory=list)
    training: TrainingConfig = TrainingConfig()

    @field_validator("plan", mode="before")
    @classmethod
    def _guide_plan(cls, value: Any) -> Any:
        """The guide's schema defaults plans to 'standard' (its lowest tier, the pricing table's Starter)."""
        return GUIDE_PLANS.get(value, value) if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return Region._known_zone(value)

    @field_validator("step")
    @classmethod
    def _valid_step(cls, value: str) -> str:
        try:
            delta = pd.Timedelta(pd.tseries.frequencies.to_offset(value))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"'{value}' is not a pandas offset like 1min or 5min") from exc
        if delta < pd.Timedelta("10s") or delta > pd.Timedelta("1h"):
            raise ValueError(f"step {value} is outside 10s..1h")
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> TenantConfig:
        series = [m.series for m in self.metrics.values()]
        duplicated = sorted({s for s in series if series.count(s) > 1})
        if duplicated:
            raise ValueError(f"series {duplicated} are mapped to more than one metric")
        if self.regions and abs(sum(r.share for r in self.regions) - 1) > 1e-6:
            raise ValueError(f"region shares add up to {sum(r.share for r in self.regions):.3f}, not 1")
        for event in self.events:
            for name in event.metrics:
                if name not in self.metrics:
                    raise ValueError(f"event '{event.name}' names unknown metric '{name}'")
        for target in self.scaling:
            metric = self.metrics.get(target.metric)
            if metric is None:
                raise ValueError(f"scaling target '{target.service}' names unknown metric '{target.metric}'")
            if metric.forecast is None:
                raise ValueError(f"scaling target '{target.service}' needs metric '{target.metric}' to be forecast")
            for key in ("utilization_metric", "startup_metric"):
                observed = getattr(target, key)
                if observed is not None and observed not in self.metrics:
                    raise ValueError(f"scaling target '{target.service}': {key} names unknown metric '{observed}'")
            if isinstance(target.capacity_per_replica, str):
                value = getattr(self.thresholds, target.capacity_per_replica, None)
                if not isinstance(value, int | float):
                    raise ValueError(
                        f"scaling target '{target.service}': capacity_per_replica names threshold "
                        f"'{target.capacity_per_replica}', which is not set"
                    )
        if not self.forecast_metrics:
            raise ValueError("no metric has a forecast section: at least one must be forecast")
        return self

    @model_validator(mode="after")
    def _warn_literal_secrets(self) -> TenantConfig:
        for i, hook in enumerate(self.alerts.webhooks):
            for key in hook.literal_secrets:
                log.warning("tenant '%s': alerts.webhooks[%d] (%s).%s: a secret is written in the tenant file, so "
                            "it is also kept in model bundles and the alert outbox; put it in an environment "
                            "variable and name that variable instead", self.id, i, hook.name, key)
        return self

    # ---- derived views -------------------------------------------------------------------------
    @property
    def step_timedelta(self) -> pd.Timedelta:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(self.step))

    @property
    def forecast_metrics(self) -> dict[str, MetricConfig]:
        return {name: m for name, m in self.metrics.items() if m.forecast is not None}

    @property
    def anomaly_metrics(self) -> dict[str, MetricConfig]:
        return {name: m for name, m in self.metrics.items() if m.anomaly}

    def drivers_of(self, metric: str) -> list[str]:
        """The metrics that drive ``metric``: the load the tenant's scaling follows (``scaling[].metric``,
        which the detector's relations take as drivers too), other than ``metric`` itself."""
        return sorted({s.metric for s in self.scaling} - {metric})

    @property
    def level_metrics(self) -> dict[str, MetricConfig]:
        """Metrics with a warning or critical level: capacity alerts of their own (core/ops/capacity_alerts.py)."""
        return {name: m for name, m in self.metrics.items() if m.warning_above is not None or m.critical_above is not None}

    def resolve_metric(self, name: str) -> str:
        """A logical name or the source's series name -> the logical name; unknown names are errors."""
        if name in self.metrics:
            return name
        for logical, metric in self.metrics.items():
            if metric.series == name:
                return logical
        raise UnknownMetricError(self.id, name, sorted(self.metrics))

    def capacity_per_replica(self, target: ScalingTarget) -> float:
        if isinstance(target.capacity_per_replica, str):
            return float(getattr(self.thresholds, target.capacity_per_replica))
        return float(target.capacity_per_replica)


class UnknownMetricError(KeyError):
    def __init__(self, tenant: str, metric: str, known: list[str]):
        self.tenant, self.metric, self.known = tenant, metric, known
        super().__init__(f"tenant '{tenant}' has no metric '{metric}'; known metrics: {', '.join(known)}")

    def __str__(self) -> str:
        return self.args[0]


class UnknownTenantError(KeyError):
    def __init__(self, tenant: str, known: list[str]):
        self.tenant = tenant
        super().__init__(f"unknown tenant '{tenant}'; known tenants: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:
        return self.args[0]


class TenantConfigError(ValueError):
    """A tenant file that does not validate; the message names the file, each key and its problem."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__(f"{path}: " + "; ".join(problems))


def _describe(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        # Drop pydantic's discriminated-union tags so the key reads like the YAML path.
        location = ".".join(str(p) for p in item["loc"] if p not in SOURCE_TAGS) or "(file)"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}")
    return problems


def parse_tenant_file(path: Path) -> TenantConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TenantConfigError(path, [f"(file): not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise TenantConfigError(path, ["(file): expected a mapping of keys at the top level"])
    raw.setdefault("id", path.stem)
    if raw["id"] != path.stem:
        raise TenantConfigError(path, [f"id: '{raw['id']}' does not match the file name '{path.stem}'"])
    try:
        return TenantConfig.model_validate(raw)
    except ValidationError as exc:
        raise TenantConfigError(path, _describe(exc)) from exc


class TenantRegistry:
    """The tenants of one config directory, valid ones and the errors of the rest."""

    def __init__(self, tenants: dict[str, TenantConfig], errors: list[TenantConfigError]):
        self.tenants = tenants
        self.errors = errors

    def get(self, tenant_id: str) -> TenantConfig:
        try:
            return self.tenants[tenant_id]
        except KeyError:
            broken = [e for e in self.errors if e.path.stem == tenant_id]
            if broken:
                raise broken[0] from None
            raise UnknownTenantError(tenant_id, sorted(self.tenants)) from None

    @property
    def ids(self) -> list[str]:
        return sorted(self.tenants)


def load_tenants(config_dir: str | Path | None = None) -> TenantRegistry:
    """Every ``*.yaml`` in the directory except files starting with ``_`` (the template)."""
    directory = Path(config_dir) if config_dir else DEFAULT_CONFIG_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"tenant config directory {directory} does not exist")
    tenants: dict[str, TenantConfig] = {}
    errors: list[TenantConfigError] = []
    for path in sorted(directory.glob("*.y*ml")):
        if path.name.startswith("_"):
            continue
        try:
            tenant = parse_tenant_file(path)
        except TenantConfigError as exc:
            errors.append(exc)
            continue
        tenants[tenant.id] = tenant
    return TenantRegistry(tenants, errors)
