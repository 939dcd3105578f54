"""Customers and their API keys: sync from the registry, status, key issue, rotation and authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from helios_pipelines.core.ops import plans
from helios_pipelines.core.ops.store.base import StoreBase
from helios_pipelines.core.ops.store.errors import DuplicateCustomerError
from helios_pipelines.core.ops.store.schema import (
    ACTIVE,
    API_KEY_SCHEME,
    DISABLED,
    Anomaly,
    ApiKey,
    Customer,
    CustomerMetric,
    Prediction,
    utcnow,
)
from helios_pipelines.core.tenants import TenantConfig, TenantRegistry


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """(prefix, full key); the full key is shown once and only its hash is stored."""
    prefix = secrets.token_hex(6)
    return prefix, f"{API_KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    only_in_store: list[str] = field(default_factory=list)  # kept: their history stays queryable
    plan_violations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Authenticated:
    customer_id: uuid.UUID
    slug: str
    plan: str


@dataclass(frozen=True)
class CustomerSummary:
    """A customer's state in the store, as ``helios tenants show`` prints it."""

    customer: Customer
    keys: list[ApiKey]  # oldest first
    predictions: int
    open_anomalies: int


class CustomerQueries(StoreBase):
    def add_customer(self, session: Session, tenant: TenantConfig, now: datetime | None = None) -> tuple[Customer, str]:
        """A new customer row with its metrics and a first API key; the plaintext key is returned once."""
        plans.check(tenant)
        if session.scalar(select(Customer.id).where(Customer.slug == tenant.id)) is not None:
            raise DuplicateCustomerError(f"customer '{tenant.id}' already exists in the store")
        customer = Customer(slug=tenant.id, name=tenant.name, plan=tenant.plan, status=ACTIVE, settings={},
                            created_at=now or utcnow())
        session.add(customer)
        session.flush()
        self._replace_metrics(session, customer, tenant)
        return customer, self.issue_key(session, customer, now)

    def _replace_metrics(self, session: Session, customer: Customer, tenant: TenantConfig) -> None:
        session.execute(delete(CustomerMetric).where(CustomerMetric.customer_id == customer.id))
        session.add_all(
            CustomerMetric(
                customer_id=customer.id,
                metric_name=name,
                prometheus_query=metric.query,
                forecast_enabled=metric.forecast is not None,
                anomaly_enabled=metric.anomaly,
                thresholds={k: v for k, v in {"min_value": metric.min_value, "max_value": metric.max_value}.items()
                            if v is not None},
            )
            for name, metric in tenant.metrics.items()
        )

    def sync_customers(self, registry: TenantRegistry) -> SyncReport:
        """Make ``customers`` and ``customer_metrics`` match the registry (the source of truth).

        New tenants get a row (no key: ``helios tenants rotate-key`` issues one); existing rows take the
        registry's name, plan and metrics; the store's own state (status, keys) is left alone. Tenants
        over their plan are still synced, and reported, because serving enforces the plan at use.
        """
        report = SyncReport()
        with self.transaction() as session:
            existing = {c.slug: c for c in session.scalars(select(Customer))}
            for tenant in registry.tenants.values():
                report.plan_violations += plans.violations(tenant)
                customer = existing.get(tenant.id)
                metrics = {m.metric_name: (m.prometheus_query, m.forecast_enabled, m.anomaly_enabled)
                           for m in session.scalars(select(CustomerMetric).where(
                               CustomerMetric.customer_id == customer.id))} if customer else {}
                wanted = {n: (m.query, m.forecast is not None, m.anomaly) for n, m in tenant.metrics.items()}
                if customer is None:
                    customer = Customer(slug=tenant.id, name=tenant.name, plan=tenant.plan, status=ACTIVE, settings={})
                    session.add(customer)
                    session.flush()
                    report.added.append(tenant.id)
                elif (customer.name, customer.plan, metrics) != (tenant.name, tenant.plan, wanted):
                    customer.name, customer.plan = tenant.name, tenant.plan
                    report.updated.append(tenant.id)
                else:
                    report.unchanged.append(tenant.id)
                    continue
                self._replace_metrics(session, customer, tenant)
            report.only_in_store = sorted(set(existing) - set(registry.tenants))
        return report

    def set_status(self, slug: str, status: str, now: datetime | None = None) -> Customer:
        with self.transaction() as session:
            customer = self.customer(session, slug)
            customer.status = status
            customer.disabled_at = (now or utcnow()) if status == DISABLED else None
            return customer

    # ---- API keys ----------------------------------------------------------------------------
    def issue_key(self, session: Session, customer: Customer, now: datetime | None = None) -> str:
        prefix, key = new_api_key()
        session.add(ApiKey(customer_id=customer.id, prefix=prefix, key_hash=hash_api_key(key), created_at=now or utcnow()))
        return key

    def rotate_key(self, slug: str, grace: timedelta = timedelta(hours=24), now: datetime | None = None) -> str:
        """A new key; the old ones stay valid for ``grace`` (zero revokes them at once)."""
        now = now or utcnow()
        with self.transaction() as session:
            customer = self.active_customer(session, slug)
            for old in session.scalars(select(ApiKey).where(ApiKey.customer_id == customer.id)):
                if not old.valid_at(now):
                    continue
                if grace <= timedelta(0):
                    old.revoked_at = now
                else:
                    old.expires_at = min(old.expires_at or now + grace, now + grace)
            return self.issue_key(session, customer, now)

    def authenticate(self, presented: str, now: datetime | None = None) -> Authenticated | None:
        """The customer a presented key belongs to, or None (unknown, expired, revoked, disabled)."""
        parts = presented.split("_", 2)  # the secret itself may contain "_"
        if len(parts) != 3 or parts[0] != API_KEY_SCHEME:
            return None
        now = now or utcnow()
        with self.transaction() as session:
            row = session.execute(
                select(ApiKey, Customer).join(Customer, Customer.id == ApiKey.customer_id).where(ApiKey.prefix == parts[1])
            ).first()
            if row is None:
                return None
            key, customer = row
            # Constant-time comparison, so response timing says nothing about how much of a key matched.
            if not hmac.compare_digest(hash_api_key(presented), key.key_hash):
                return None
            if not key.valid_at(now) or customer.status != ACTIVE:
                return None
            return Authenticated(customer.id, customer.slug, customer.plan)

    def customer_summary(self, slug: str) -> CustomerSummary | None:
        """The customer's row, keys and history counts; None when it is not in the store."""
        with self.transaction() as session:
            customer = session.scalar(select(Customer).where(Customer.slug == slug))
            if customer is None:
                return None
            keys = list(session.scalars(
                select(ApiKey).where(ApiKey.customer_id == customer.id).order_by(ApiKey.created_at)))
            predictions = session.scalar(select(func.count()).where(Prediction.customer_id == customer.id))
            open_anomalies = session.scalar(select(func.count()).where(
                Anomaly.customer_id == customer.id, Anomaly.resolved_at.is_(None)))
            return CustomerSummary(customer, keys, predictions, open_anomalies)
