"""The tenant registry: one YAML file per customer under ``configs/tenants/``.

Every key is validated strictly (unknown keys are errors, so a typo never silently falls back to a
default). ``load_tenants`` validates each file on its own, so one bad tenant never hides the others;
the errors it collects name the file, the key and the problem.

Past 400 lines on purpose: it is the whole tenant schema, one class per YAML section, read top to
bottom beside ``configs/tenants/_template.yaml``; the guide's key mapping lives in ``guide_keys.py``.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from helios_pipelines.core.guide_keys import guide_metric_keys

TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
# A source's own names: Prometheus' plus the dots of Datadog (system.cpu.user) and CloudWatch.
SERIES_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:./-]*$"
log = logging.getLogger(__name__)
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "tenants"


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
    the metric's capacity_warning / capacity_critical (``core/capacity_alerts.py``); ``seasonality``
    is the Prophet candidate's seasonal components (``core/models/forecasters.py``).
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


# An event must stay computable: pandas holds times from 1677 to 2262, and forecasts are multiplied
# by the multiplier, so a year-long event with a thousandfold multiplier is the most one can say.
EVENT_MAX_HOURS = 366 * 24
EVENT_MAX_MULTIPLIER = 1000.0
EVENT_YEARS = (1970, 2200)


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
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if not EVENT_YEARS[0] <= value.year <= EVENT_YEARS[1]:
            raise ValueError(f"start must be between the years {EVENT_YEARS[0]} and {EVENT_YEARS[1]}, got {value.year}")
        return value.astimezone(UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.duration_hours)

    @property
    def event_kind(self) -> str:
        return self.kind or self.name


class SimulatorSource(Strict):
    type: Literal["simulator"] = "simulator"
    seed: int = 0
    base_players: float = Field(20000, gt=0, description="mean concurrent players (gaming profile)")
    base_requests: float = Field(300, gt=0, description="mean requests per second (web profile)")
    profile: Literal["gaming", "ecommerce"] = "gaming"
    anomalies_per_week: float = Field(3, ge=0)
    gap_share: float = Field(0.003, ge=0, le=0.2, description="share of points lost as short gaps")


class FilesSource(Strict):
    type: Literal["files"] = "files"
    path: str = Field(description="CSV or Parquet file; one column per series plus a timestamp column")
    time_column: str = "timestamp"
    time_unit: Literal["s", "ms", "iso"] = "iso"


# Secrets never live in YAML: a source names the environment variables that hold them.
EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable name")]


class RemoteSource(Strict):
    """What every networked source shares: how long to wait and how often to try again."""

    timeout_seconds: float = Field(30, gt=0, le=600, description="per request")
    retries: int = Field(3, ge=0, le=10, description="extra attempts on 5xx, 429 and timeouts, with backoff")


class PrometheusSource(RemoteSource):
    """A Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics)."""

    type: Literal["prometheus"] = "prometheus"
    url: str | None = Field(
        None, pattern=r"^https?://", description="base URL, e.g. http://prometheus:9090; defaults to $PROMETHEUS_URL"
    )
    bearer_token_env: EnvVarName | None = None
    basic_auth_user: str | None = None
    basic_auth_password_env: EnvVarName | None = None
    verify_tls: bool = True
    ca_bundle: str | None = Field(None, description="PEM file of the CA that signed the server's certificate")
    scrape_interval: str = Field(
        "1m", description="how often the server scrapes; sizes the rate() window of counters that have no query"
    )

    @field_validator("scrape_interval")
    @classmethod
    def _scrape_interval_is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> PrometheusSource:
        if self.bearer_token_env and (self.basic_auth_user or self.basic_auth_password_env):
            raise ValueError("set bearer_token_env or basic auth, not both")
        if bool(self.basic_auth_user) != bool(self.basic_auth_password_env):
            raise ValueError("basic auth needs both basic_auth_user and basic_auth_password_env")
        if self.ca_bundle and not self.verify_tls:
            raise ValueError("ca_bundle is set but verify_tls is false")
        return self


class DatadogSource(RemoteSource):
    type: Literal["datadog"] = "datadog"
    site: str | None = Field(None, description="datadoghq.com, datadoghq.eu, ...; defaults to $DD_SITE, then datadoghq.com")
    api_url: str | None = Field(None, pattern=r"^https?://", description="overrides site (a proxy, a private link)")
    api_key_env: EnvVarName = "DD_API_KEY"
    app_key_env: EnvVarName = "DD_APP_KEY"
    scope: str = Field("*", description="tag filter of the queries built for metrics that have no query")
    verify_tls: bool = True


class CloudWatchSource(RemoteSource):
    """AWS CloudWatch; credentials come from boto3's usual chain (environment, profile, role)."""

    type: Literal["cloudwatch"] = "cloudwatch"
    region: str | None = Field(None, description="defaults to $AWS_REGION / $AWS_DEFAULT_REGION")
    endpoint_url: str | None = Field(None, pattern=r"^https?://", description="a VPC endpoint or a local emulator")
    namespace: str = Field(min_length=1, description="e.g. AWS/EC2 or a custom namespace")
    dimensions: dict[str, str] = Field(default_factory=dict, description="dimension name -> value, for every metric")
    statistic: str = Field(
        "Average", pattern=r"^(Average|Sum|Minimum|Maximum|SampleCount|p\d{1,2}(\.\d+)?)$",
        description="for gauges; counters use Sum divided by the period",
    )


class PushSource(Strict):
    """Metrics the customer pushes to Helios (Prometheus remote-write or the helios-agent), stored in
    the Helios store; nothing to configure here: the tenant's API key says whose they are."""

    type: Literal["push"] = "push"


SOURCE_TYPES = (SimulatorSource, FilesSource, PrometheusSource, DatadogSource, CloudWatchSource, PushSource)
SourceConfig = Annotated[
    SimulatorSource | FilesSource | PrometheusSource | DatadogSource | CloudWatchSource | PushSource,
    Field(discriminator="type"),
]
# pydantic puts the discriminator's value in error locations; error messages leave it out.
_SOURCE_TAGS = frozenset(cls.model_fields["type"].default for cls in SOURCE_TYPES)


class Thresholds(Strict):
    """Thresholds from the integration guide; extra keys are kept for custom rules."""

    model_config = ConfigDict(extra="allow", frozen=True)
    max_players_per_server: float | None = Field(None, gt=0)
    latency_warning_ms: float | None = Field(None, gt=0)
    latency_critical_ms: float | None = Field(None, gt=0)
    queue_length_scale_trigger: float | None = Field(None, gt=0)


# PagerDuty Events API v2: "the 32 character Integration Key for an integration on a service".
PAGERDUTY_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")
VENDOR_CHANNELS = ("slack", "pagerduty")


class Webhook(Strict):
    """Where alerts go. A secret (a Slack incoming-webhook URL, whose path is the credential, or a
    PagerDuty routing key) is best named by the environment variable holding it (``url_env``,
    ``routing_key_env``), read when an alert is sent. The guide's Step 5 writes them literally
    (``url:``, ``routing_key:``): accepted, and :meth:`TenantConfig.literal_secrets` lists them so
    loading warns (they then sit in the tenant file, the model bundle and the alert outbox)."""

    name: str = Field(min_length=1, max_length=255)
    url: str | None = Field(None, description="http(s) URL of the receiver (for Slack: a secret, prefer url_env)")
    url_env: EnvVarName | None = Field(None, description="environment variable holding the URL")
    type: Literal["slack", "pagerduty", "webhook"] = Field(
        "webhook", description="payload format; a channel named slack or pagerduty (the guide's) defaults to it"
    )
    events: list[Literal["anomaly_detected", "scaling_recommended", "capacity_warning", "capacity_critical",
                         "event_scorecard"]]
    routing_key: str | None = Field(None, description="pagerduty: the routing key itself (a secret, prefer routing_key_env)")
    routing_key_env: EnvVarName | None = Field(None, description="pagerduty: environment variable holding the routing key")
    secret_env: EnvVarName | None = Field(None, description="environment variable holding the HMAC secret")

    @model_validator(mode="before")
    @classmethod
    def _type_from_name(cls, data: Any) -> Any:
        """The guide's Step 5 names its channels ``slack`` and ``pagerduty`` and gives no type."""
        if isinstance(data, dict) and "type" not in data and data.get("name") in VENDOR_CHANNELS:
            data = data | {"type": data["name"]}
        return data

    @field_validator("url")
    @classmethod
    def _well_formed_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError(f"'{value[:200]}' is not an http(s) URL with a host")
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number in range)
        except ValueError as exc:
            raise ValueError(f"'{value[:200]}' has an invalid port: {exc}") from None
        return value

    @field_validator("routing_key")
    @classmethod
    def _routing_key_form(cls, value: str | None) -> str | None:
        if value is not None and not PAGERDUTY_ROUTING_KEY.match(value):
            shown = value[:40] if len(value) != 32 else "(32 characters, not all letters and digits)"
            raise ValueError(f"'{shown}' is not a PagerDuty routing key (the service integration's 32 letters and "
                             "digits); the guide's CUSTOMER_ROUTING_KEY is a placeholder for yours")
        return value

    @model_validator(mode="after")
    def _destination_and_secrets(self) -> Webhook:
        if (self.url is None) == (self.url_env is None):
            raise ValueError(f"webhook '{self.name}' needs exactly one of url and url_env")
        has_key = (self.routing_key is not None) + (self.routing_key_env is not None)
        if self.type == "pagerduty" and has_key != 1:
            raise ValueError(f"webhook '{self.name}' is of type pagerduty and needs exactly one of routing_key and "
                             "routing_key_env (the environment variable holding its routing key)")
        if self.type != "pagerduty" and has_key:
            raise ValueError(f"webhook '{self.name}': a routing key is for type pagerduty, not {self.type}")
        return self

    @property
    def literal_secrets(self) -> list[str]:
        """Keys of this channel that hold a secret written in the file, each with its env-named form."""
        found = ["url (use url_env)"] if self.type == "slack" and self.url is not None else []
        return found + (["routing_key (use routing_key_env)"] if self.routing_key is not None else [])


class AlertThresholds(Strict):
    anomaly_alert: float = Field(2.5, gt=0, description="robust z-score above which a point is anomalous")
    capacity_warning: float = Field(0.75, gt=0, le=1, description="share of max capacity the forecast's upper bound needs")
    capacity_critical: float = Field(0.90, gt=0, le=1)
    scaling_step: float = Field(
        0.2, ge=0, description="scaling_recommended when desired replicas differ from current by more than this share"
    )

    @model_validator(mode="after")
    def _ordered(self) -> AlertThresholds:
        if self.capacity_warning >= self.capacity_critical:
            raise ValueError("capacity_warning must be below capacity_critical")
        return self


class AnomalySensitivity(Strict):
    """When scores become an alert (Datadog-style trigger and recovery windows)."""

    trigger_window: int = Field(1, ge=1, description="rows looked at before an anomaly alert is raised")
    trigger_share: float = Field(1.0, gt=0, le=1, description="share of the trigger window at or above the threshold")
    recovery_window: int = Field(5, ge=1, description="consecutive normal rows before an alert clears")


class AlertConfig(Strict):
    webhooks: list[Webhook] = Field(default_factory=list)
    thresholds: AlertThresholds = AlertThresholds()
    anomaly: AnomalySensitivity = AnomalySensitivity()


class ScalingBehaviour(Strict):
    """HPA behaviour the recommendation honours (the integration guide's KEDA settings by default)."""

    scale_up_window_s: int = Field(30, ge=0)
    scale_up_percent: float = Field(100, gt=0)
    scale_up_period_s: int = Field(15, gt=0)
    scale_down_window_s: int = Field(300, ge=0)
    scale_down_percent: float = Field(10, gt=0, le=100)
    scale_down_period_s: int = Field(60, gt=0)


class ReplicaCountSeries(Strict):
    """Where the workload's current replica count is read, in the tenant's source: e.g. Prometheus'
    ``kube_deployment_status_replicas{deployment="game-server"}`` (kube-state-metrics)."""

    series: str = Field(pattern=SERIES_NAME_PATTERN, description="the source's own series name")
    query: str | None = Field(None, description="query in the source's language; defaults to the series")


class ScalingTarget(Strict):
    """A workload whose replicas follow a forecast metric: the capacity model behind /recommend."""

    service: str
    metric: str = Field(description="logical metric that drives it (must be forecast)")
    capacity_per_replica: float | str = Field(
        description="units of the metric one replica serves, or the name of a threshold holding it"
    )
    target_utilization: float = Field(0.8, gt=0, le=1)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(100, ge=1)
    startup_seconds: int = Field(90, ge=0, description="pod start-up time; with the stabilisation window it sets the lead time")
    quantile: float = Field(0.9, gt=0.5, lt=1, description="upper forecast quantile sized for")
    behaviour: ScalingBehaviour = ScalingBehaviour()
    current_replicas: ReplicaCountSeries | None = Field(
        None, description="the current replica count in the source; published helios_desired_replicas starts from it"
    )
    # Observed fleet series (logical metric names): with them capacity and lead time are learned,
    # the configured values above staying the prior and guard rail.
    utilization_metric: str | None = Field(None, description="the service's utilisation as a ratio of its capacity")
    startup_metric: str | None = Field(None, description="pods' start-to-ready seconds (kube-state-metrics)")
    price_per_pod_hour: float = Field(0.0, ge=0, description="what a replica costs per hour: event scorecards' cost delta")

    @model_validator(mode="after")
    def _bounds(self) -> ScalingTarget:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self


class TrainingConfig(Strict):
    history_days: int = Field(14, ge=2, le=90)
    backtest_folds: int = Field(3, ge=1, le=20)
    cron: str = Field("0 3 * * *", description="retraining schedule (cron, UTC)")
    promotion: Literal["auto", "manual"] = "auto"
    seed: int = 42


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

    @property
    def level_metrics(self) -> dict[str, MetricConfig]:
        """Metrics with a warning or critical level: capacity alerts of their own (core/capacity_alerts.py)."""
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
        location = ".".join(str(p) for p in item["loc"] if p not in _SOURCE_TAGS) or "(file)"
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
