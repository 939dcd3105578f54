"""The pricing tiers of the integration guide, and what each one allows.

The plan a tenant is held to is ``customers.plan`` in the store (the registry's ``plan`` key is copied
there by ``sync_customers``), so serving, which never reads ``configs/``, enforces the same limits as
the CLI. A tenant over its plan gets a :class:`PlanLimitError` whose message names the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from helios_pipelines.core.tenants import TenantConfig

FORECASTING = "forecasting"
ANOMALY_DETECTION = "anomaly detection"
WEBHOOKS = "webhooks"
CUSTOM_MODELS = "custom models"


@dataclass(frozen=True)
class Plan:
    name: str
    max_metrics: int | None  # None: unlimited
    retention_days: int  # stored predictions, anomalies and alert history
    features: frozenset[str]


PLANS: dict[str, Plan] = {
    "starter": Plan("starter", 10, 7, frozenset({FORECASTING})),
    "pro": Plan("pro", 50, 30, frozenset({FORECASTING, ANOMALY_DETECTION, WEBHOOKS})),
    "enterprise": Plan("enterprise", None, 90, frozenset({FORECASTING, ANOMALY_DETECTION, WEBHOOKS, CUSTOM_MODELS})),
}


class PlanLimitError(PermissionError):
    """What a tenant asked for is outside its plan; the message names the plan and the limit."""


def plan(name: str) -> Plan:
    try:
        return PLANS[name]
    except KeyError:
        raise ValueError(f"unknown plan '{name}'; plans: {', '.join(PLANS)}") from None


def lowest_plan_with(feature: str) -> str:
    return next(p.name for p in PLANS.values() if feature in p.features)


def require_feature(tenant_id: str, plan_name: str, feature: str) -> None:
    if feature not in plan(plan_name).features:
        raise PlanLimitError(
            f"tenant '{tenant_id}' is on the {plan_name} plan, which does not include {feature} "
            f"(available from the {lowest_plan_with(feature)} plan)"
        )


def violations(tenant: TenantConfig, plan_name: str | None = None) -> list[str]:
    """Every way the tenant's configuration exceeds its plan (``plan_name`` defaults to the config's)."""
    held = plan(plan_name or tenant.plan)
    found = []
    if held.max_metrics is not None and len(tenant.metrics) > held.max_metrics:
        found.append(
            f"tenant '{tenant.id}' configures {len(tenant.metrics)} metrics; the {held.name} plan allows {held.max_metrics}"
        )
    checks = [(ANOMALY_DETECTION, sorted(tenant.anomaly_metrics)), (WEBHOOKS, [w.name for w in tenant.alerts.webhooks])]
    for feature, used in checks:
        if used and feature not in held.features:
            found.append(
                f"tenant '{tenant.id}' uses {feature} ({', '.join(used)}); the {held.name} plan does not include it "
                f"(available from the {lowest_plan_with(feature)} plan)"
            )
    return found


def check(tenant: TenantConfig, plan_name: str | None = None) -> None:
    """Raise :class:`PlanLimitError` naming every limit the configuration exceeds."""
    found = violations(tenant, plan_name)
    if found:
        raise PlanLimitError("; ".join(found))
