"""The tenant file's ``alerts:``: where alerts go (webhooks) and when they fire (thresholds)."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from helios_pipelines.core.tenants.base import EnvVarName, Strict

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
