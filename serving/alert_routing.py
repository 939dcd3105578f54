"""The rendered alert ConfigMap is the runtime source of a served tenant's alert routing.

``helios deploy render`` writes the tenant's routing (webhooks, the environment variables holding
their URLs, routing keys and signing secrets, and the alert thresholds) into a ConfigMap mounted at
``/etc/helios/alerts.yaml``; the Deployment points ``HELIOS_ALERTS_FILE`` at it. On start the service
replaces the routing packed in the tenant's bundle with it, so changing where alerts go is a
ConfigMap edit and a rollout, not a retrain. The secrets themselves stay in the Secret the delivery
worker reads (``core/ops/alerts.py``); without ``HELIOS_ALERTS_FILE`` the bundle's routing is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from helios_pipelines.core.tenants.alerting import AlertThresholds, Webhook
from serving.runtime import TenantRuntime

ALERTS_FILE_ENV = "HELIOS_ALERTS_FILE"


class AlertFileError(RuntimeError):
    """The alert file cannot be used; the message names the file and the problem."""


def apply_alert_file(runtimes: dict[str, TenantRuntime], path: str | None = None) -> str | None:
    """Route the alerts of the tenant the file names as it says; returns that tenant (None: no file)."""
    path = path or os.environ.get(ALERTS_FILE_ENV)
    if not path:
        return None
    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise AlertFileError(f"{ALERTS_FILE_ENV}={path}: {exc}") from None
    tenant = document.get("tenant")
    if tenant not in runtimes:
        raise AlertFileError(f"{path}: routes tenant {tenant!r}, not one this service serves "
                             f"({', '.join(sorted(runtimes))})")
    runtime = runtimes[tenant]
    try:
        webhooks = [Webhook.model_validate({
            "name": hook["name"], "type": hook["type"], "events": hook["events"], "url_env": hook.get("url_env"),
            "routing_key_env": hook.get("routing_key_env"), "secret_env": hook.get("signing_secret_env"),
        }) for hook in document.get("webhooks", [])]
        thresholds = AlertThresholds.model_validate(document.get("thresholds", {}))
    except (KeyError, TypeError, ValidationError) as exc:
        raise AlertFileError(f"{path}: {exc}") from None
    alerts = runtime.tenant.alerts.model_copy(update={"webhooks": webhooks, "thresholds": thresholds})
    runtime.tenant = runtime.tenant.model_copy(update={"alerts": alerts})
    return tenant
