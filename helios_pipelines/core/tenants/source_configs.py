"""The tenant file's ``source:``: where its metrics are read (one model per source type)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from helios_pipelines.core.tenants.base import EnvVarName, Strict, parse_duration


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
SOURCE_TAGS = frozenset(cls.model_fields["type"].default for cls in SOURCE_TYPES)
