"""The Helios store: customers, API keys, models, predictions, anomalies and the alert outbox.

The tables are the integration guide's SaaS schema (``customers``, ``customer_metrics``, ``models``,
``predictions``, ``anomalies``) plus ``api_keys`` and ``alert_outbox``. Types are portable (``Uuid``,
``JSON``, timestamps stored as UTC) so the embedded SQLite default and production PostgreSQL run the
same code; the schema is created by the Alembic migrations in ``core/migrations`` (``helios db upgrade``).

Where the guide and this schema differ, and why:

- ``customers.api_key`` is gone: a plaintext key in the customers row leaks with any dump of the table
  and allows one key per customer. Keys live in ``api_keys``, hashed, several per customer so a
  rotation can keep the old key valid for a grace period.
- ``customers.slug`` is the registry's tenant id (``configs/tenants/<slug>.yaml``); ``status`` lets a
  tenant be disabled without deleting its history.
- ``predictions`` keeps the forecast's 80% bounds, when it was issued, and the seasonal-naive value at
  the target, so live interval coverage and MASE can be computed once the actual is known.
- ``anomalies`` are episodes (``detected_at`` .. ``resolved_at``, peak score), at most one open per
  tenant and metric (a partial unique index), so a polled detector records an anomaly once.

Source of truth: the YAML registry owns configuration (metrics, webhooks, thresholds, plan). The
store owns state: keys, the enabled/disabled status, predictions, anomalies, the outbox.
``sync_customers`` copies the registry's name, plan and metrics into ``customers`` and
``customer_metrics``; ``helios tenants add`` writes both at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    Uuid,
    create_engine,
    delete,
    event,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column, sessionmaker

from helios_pipelines.core import plans
from helios_pipelines.core.settings import helios_home
from helios_pipelines.core.tenants import TenantConfig, TenantRegistry

ACTIVE, DISABLED = "active", "disabled"
# Outbox row states: waiting for (another) attempt, done, given up after the bounded attempts.
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
API_KEY_SCHEME = "hel"


def utcnow() -> datetime:
    return datetime.now(UTC)


def database_url() -> str:
    """``HELIOS_DATABASE_URL``, or the embedded SQLite file under ``HELIOS_HOME``."""
    return os.environ.get("HELIOS_DATABASE_URL") or f"sqlite:///{helios_home() / 'helios.db'}"


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out: PostgreSQL keeps ``timestamptz``, SQLite naive UTC text.

    Naive datetimes are refused so a local-time value can never be stored as if it were UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if hasattr(value, "to_pydatetime"):  # pandas Timestamps
            value = value.to_pydatetime()
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} given to the store; use an aware UTC time")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets the guide's BIGSERIAL.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    slug: Mapped[str] = mapped_column(String(63), unique=True, comment="tenant id in the YAML registry")
    name: Mapped[str] = mapped_column(String(255))
    plan: Mapped[str] = mapped_column(String(50), default="pro")
    status: Mapped[str] = mapped_column(String(20), default=ACTIVE)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]


class CustomerMetric(Base):
    __tablename__ = "customer_metrics"
    __table_args__ = (Index("uq_customer_metrics_name", "customer_id", "metric_name", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    metric_name: Mapped[str] = mapped_column(String(255))
    prometheus_query: Mapped[str | None] = mapped_column(Text)
    forecast_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    anomaly_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    thresholds: Mapped[dict] = mapped_column(JSON, default=dict)


class ApiKey(Base):
    """A hashed API key: ``hel_<prefix>_<secret>``; the prefix finds the row, the hash proves the key.

    The secret carries 256 bits of entropy, so a plain SHA-256 is enough (no password-style stretching):
    guessing is hopeless and lookups stay cheap on every request.
    """

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(comment="set by a rotation with a grace period")
    revoked_at: Mapped[datetime | None]

    def valid_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class ModelRecord(Base):
    """A served model version (the MLflow registered name and version behind a prediction)."""

    __tablename__ = "models"
    __table_args__ = (Index("uq_models_version", "customer_id", "name", "version", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    model_type: Mapped[str] = mapped_column(String(50), comment="forecaster, anomaly_detector, capacity_planner")
    model_path: Mapped[str] = mapped_column(String(500), comment="models:/<name>/<version>")
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str | None] = mapped_column(String(50), comment="xgboost, prophet, seasonal_naive ...")
    trained_at: Mapped[datetime] = mapped_column(default=utcnow)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_customer_target", "customer_id", "timestamp"),
        # One forecast per tenant, metric, horizon and origin: replicas publishing the same step (and
        # repeated /predict calls) record it once.
        Index("uq_predictions_forecast", "customer_id", "metric_name", "horizon_minutes", "issued_at", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    timestamp: Mapped[datetime] = mapped_column(comment="target time the forecast is for")
    metric_name: Mapped[str] = mapped_column(String(255))
    predicted_value: Mapped[float] = mapped_column(Float)
    actual_value: Mapped[float | None] = mapped_column(Float)
    horizon_minutes: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    issued_at: Mapped[datetime] = mapped_column(comment="forecast origin: the last step of history it used")
    lower_value: Mapped[float | None] = mapped_column(Float)
    upper_value: Mapped[float | None] = mapped_column(Float)
    interval_level: Mapped[float | None] = mapped_column(Float)
    seasonal_naive_value: Mapped[float | None] = mapped_column(Float, comment="actual one day before the target")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Anomaly(Base):
    __tablename__ = "anomalies"
    __table_args__ = (
        Index("ix_anomalies_customer_detected", "customer_id", "detected_at"),
        # One open episode per tenant and metric, even with several detectors polling at once.
        Index(
            "uq_anomalies_open_episode",
            "customer_id",
            "metric_name",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    detected_at: Mapped[datetime] = mapped_column(comment="first anomalous point of the episode")
    metric_name: Mapped[str] = mapped_column(String(255))
    anomaly_score: Mapped[float] = mapped_column(Float, comment="peak score of the episode")
    description: Mapped[str | None] = mapped_column(Text)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    peak_value: Mapped[float | None] = mapped_column(Float)
    detected_by: Mapped[str] = mapped_column(String(20), default="detect", comment="detect or scheduled")
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(255))


class AlertEpisode(Base):
    """A capacity or scaling condition of one scaled service (capacity_warning, capacity_critical,
    scaling_recommended): opened once, resolved once, however often it is evaluated. Anomalies keep
    their own table."""

    __tablename__ = "alert_episodes"
    __table_args__ = (
        # One open episode per tenant, event and service, even with several replicas evaluating.
        Index(
            "uq_alert_episodes_open",
            "customer_id",
            "event",
            "subject",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(50))
    subject: Mapped[str] = mapped_column(String(255), comment="the scaled service")
    opened_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    peak: Mapped[float] = mapped_column(Float, comment="largest value of the condition during the episode")
    description: Mapped[str] = mapped_column(Text)


class OutboxRow(Base):
    """One alert for one destination, rendered once so every retry sends identical bytes."""

    __tablename__ = "alert_outbox"
    __table_args__ = (
        Index("ix_alert_outbox_due", "status", "next_attempt_at"),
        # claim_outbox looks for an earlier pending row of the same episode and destination
        Index("ix_alert_outbox_episode", "customer_id", "alert_key", "destination", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    alert_key: Mapped[str] = mapped_column(String(255), comment="the alert's identity; PagerDuty's dedup_key")
    event: Mapped[str] = mapped_column(String(50))
    action: Mapped[str] = mapped_column(String(20), comment="trigger or resolve")
    destination: Mapped[str] = mapped_column(String(255), comment="webhook name in the tenant config")
    destination_type: Mapped[str] = mapped_column(String(20))
    url: Mapped[str | None] = mapped_column(Text, comment="a URL that is not a secret; else url_env")
    url_env: Mapped[str | None] = mapped_column(String(255), comment="environment variable holding the URL")
    body: Mapped[str] = mapped_column(Text)
    routing_key_env: Mapped[str | None] = mapped_column(String(255), comment="pagerduty: variable holding the routing key")
    secret_env: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class PostedEvent(Base):
    """A scheduled event posted through ``POST /events``: durable, so every replica honours it."""

    __tablename__ = "posted_events"
    __table_args__ = (Index("ix_posted_events_customer", "customer_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    start: Mapped[datetime]
    event: Mapped[dict] = mapped_column(JSON, comment="the validated ScheduledEvent, as JSON")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepLease(Base):
    """Who did a once-per-step task (a tenant's scheduled detection) up to which step.

    Claiming step S succeeds for exactly one replica: a single UPDATE moves ``step`` forward only if
    it is still behind S (a row lock on PostgreSQL, the database write lock on SQLite), and keeps the
    step it moved from, so the winner knows where the previous winner stopped.
    """

    __tablename__ = "step_leases"

    name: Mapped[str] = mapped_column(String(255), primary_key=True, comment="task/tenant, e.g. detect/acme")
    step: Mapped[datetime] = mapped_column(comment="the latest step claimed")
    previous_step: Mapped[datetime | None] = mapped_column(comment="the step claimed before it")
    owner: Mapped[str] = mapped_column(String(64), comment="the replica that claimed it")
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True)
class StepClaim:
    """A won claim: the step, and the step the previous claim reached (None the first time)."""

    step: datetime
    previous: datetime | None


class StoreError(Exception):
    """A store operation that cannot be done as asked; the message says why."""


class UnknownCustomerError(StoreError, KeyError):
    def __str__(self) -> str:
        return self.args[0]


class DuplicateCustomerError(StoreError):
    pass


class CustomerDisabledError(StoreError):
    pass


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the delivery worker;
    # busy_timeout makes a second writer wait for the lock instead of failing at once.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; Helios ships psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return create_engine(parsed, pool_pre_ping=True)


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


class Store:
    """One database (SQLite or PostgreSQL); every method runs in its own transaction."""

    def __init__(self, url: str | None = None):
        self.url = url or database_url()
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._customer_ids: dict[str, uuid.UUID] = {}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits together or not at all."""
        with self._sessions.begin() as session:
            yield session

    def insert_ignoring_duplicates(self, session: Session, model: type[Base], rows: list[dict], unique: list[str]) -> int:
        """INSERT ... ON CONFLICT DO NOTHING on both dialects; returns how many rows were new."""
        if not rows:
            return 0
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = dialect_insert(model).values(rows).on_conflict_do_nothing(index_elements=unique)
        return session.execute(statement).rowcount

    # ---- customers ---------------------------------------------------------------------------
    def customer(self, session: Session, slug: str) -> Customer:
        found = session.scalar(select(Customer).where(Customer.slug == slug))
        if found is None:
            known = session.scalars(select(Customer.slug).order_by(Customer.slug)).all()
            raise UnknownCustomerError(
                f"no customer '{slug}' in the store; known: {', '.join(known) or '(none)'} "
                f"(`helios tenants sync` copies the registry in)"
            )
        return found

    def customer_id(self, slug: str) -> uuid.UUID:
        """Cached: a customer's id never changes, and the recorder asks on every batch."""
        if slug not in self._customer_ids:
            with self.transaction() as session:
                self._customer_ids[slug] = self.customer(session, slug).id
        return self._customer_ids[slug]

    def active_customer(self, session: Session, slug: str) -> Customer:
        found = self.customer(session, slug)
        if found.status != ACTIVE:
            raise CustomerDisabledError(f"customer '{slug}' is disabled")
        return found

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

    # ---- models and predictions --------------------------------------------------------------
    def model_id(self, session: Session, customer_id: uuid.UUID, name: str, version: str, model_type: str,
                 kind: str | None = None) -> uuid.UUID:
        """The ``models`` row of a served MLflow version, created the first time it predicts."""
        self.insert_ignoring_duplicates(
            session, ModelRecord,
            [{"id": uuid.uuid4(), "customer_id": customer_id, "name": name, "version": str(version),
              "model_type": model_type, "kind": kind, "model_path": f"models:/{name}/{version}",
              "trained_at": utcnow(), "is_active": True}],
            ["customer_id", "name", "version"],
        )
        return session.scalar(select(ModelRecord.id).where(
            ModelRecord.customer_id == customer_id, ModelRecord.name == name, ModelRecord.version == str(version)))

    def insert_predictions(self, rows: list[dict], session: Session | None = None) -> int:
        """Bulk insert of prediction rows (``customer_id`` and ``model_id`` already resolved); a
        forecast already recorded (same tenant, metric, horizon and origin) is skipped. Returns how
        many were new."""
        if not rows:
            return 0
        unique = ["customer_id", "metric_name", "horizon_minutes", "issued_at"]
        if session is not None:
            return self.insert_ignoring_duplicates(session, Prediction, rows, unique)
        with self.transaction() as own:
            return self.insert_ignoring_duplicates(own, Prediction, rows, unique)

    # ---- posted events -----------------------------------------------------------------------
    def add_event(self, slug: str, name: str, start: datetime, event: dict, now: datetime | None = None) -> int:
        """Store a posted event (already validated by the caller); returns its id."""
        with self.transaction() as session:
            row = PostedEvent(customer_id=self.active_customer(session, slug).id, name=name, start=start,
                              event=event, created_at=now or utcnow())
            session.add(row)
            session.flush()
            return row.id

    def events_after(self, slug: str, after_id: int = 0) -> list[tuple[int, dict]]:
        """The tenant's posted events with an id above ``after_id``, oldest first."""
        with self.transaction() as session:
            return [tuple(row) for row in session.execute(
                select(PostedEvent.id, PostedEvent.event)
                .where(PostedEvent.customer_id == self.customer_id(slug), PostedEvent.id > after_id)
                .order_by(PostedEvent.id))]

    # ---- once-per-step work ------------------------------------------------------------------
    def claim_step(self, name: str, step: datetime, owner: str, now: datetime | None = None) -> StepClaim | None:
        """Claim ``step`` of the task ``name``: a StepClaim for exactly one caller per step, None for
        everyone else (someone already claimed this step or a later one)."""
        now = now or utcnow()
        with self.transaction() as session:
            if self.insert_ignoring_duplicates(
                    session, StepLease, [{"name": name, "step": step, "previous_step": None, "owner": owner,
                                          "claimed_at": now}], ["name"]):
                return StepClaim(step, None)  # the task's first step ever
            # SET expressions read the row's old values on both dialects, so previous_step gets the old step.
            claimed = session.execute(
                update(StepLease)
                .where(StepLease.name == name, StepLease.step < step)
                .values(previous_step=StepLease.step, step=step, owner=owner, claimed_at=now)
                .returning(StepLease.previous_step)
            ).first()
        return None if claimed is None else StepClaim(step, claimed[0])

    def release_step(self, name: str, claim: StepClaim, owner: str) -> bool:
        """Give a claimed step back after its work failed: the next claim starts where ``claim`` did."""
        mine = (StepLease.name == name, StepLease.step == claim.step, StepLease.owner == owner)
        with self.transaction() as session:
            if claim.previous is None:  # the task's first claim: as if it had never been made
                return session.execute(delete(StepLease).where(*mine)).rowcount == 1
            return session.execute(
                update(StepLease).where(*mine).values(step=claim.previous, previous_step=None)).rowcount == 1

    # ---- alert outbox ------------------------------------------------------------------------
    def claim_outbox(self, owner: str, now: datetime, lease: timedelta, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to ``owner`` and count the attempt.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so concurrent workers take disjoint rows without waiting.
        SQLite: the single UPDATE statement holds the database's write lock, so two workers cannot
        claim the same row. On both, a lease that runs out (a killed worker) makes the row claimable
        again: delivery is at least once, and receivers dedupe on the idempotency key.

        Per-episode order: a row is claimable only when no earlier row of the same alert key and
        destination is still pending (waiting for a retry, or leased, also by a worker that died), so a
        resolve never overtakes its trigger. A dead (given up) trigger no longer holds its resolve back:
        the receiver may have acted on one of its attempts, and the resolve closes that incident.
        """
        earlier = aliased(OutboxRow)
        waiting_behind_earlier = exists().where(
            earlier.customer_id == OutboxRow.customer_id, earlier.alert_key == OutboxRow.alert_key,
            earlier.destination == OutboxRow.destination, earlier.id < OutboxRow.id, earlier.status == PENDING,
        )
        due = (
            select(OutboxRow.id)
            .where(OutboxRow.status == PENDING, OutboxRow.next_attempt_at <= now,
                   or_(OutboxRow.lease_expires_at.is_(None), OutboxRow.lease_expires_at <= now),
                   ~waiting_behind_earlier)
            .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        with self.transaction() as session:
            ids = session.scalars(
                update(OutboxRow)
                .where(OutboxRow.id.in_(due.scalar_subquery()))
                .values(lease_owner=owner, lease_expires_at=now + lease, attempts=OutboxRow.attempts + 1)
                .returning(OutboxRow.id)
            ).all()
            if not ids:
                return []
            return list(session.scalars(select(OutboxRow).where(OutboxRow.id.in_(ids)).order_by(OutboxRow.id)))

    def finish_outbox(self, row_id: int, owner: str, **values) -> bool:
        """Record an attempt's outcome, only if ``owner`` still holds the lease (it may have expired
        and passed to another worker, whose outcome then wins)."""
        with self.transaction() as session:
            result = session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id, OutboxRow.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None, **values)
            )
            return result.rowcount == 1

    def outbox_counts(self, slug: str | None = None) -> dict[str, int]:
        with self.transaction() as session:
            query = select(OutboxRow.status, func.count()).group_by(OutboxRow.status)
            if slug:
                query = query.where(OutboxRow.customer_id == self.customer(session, slug).id)
            return dict(session.execute(query).all())

    # ---- retention ---------------------------------------------------------------------------
    def apply_retention(self, now: datetime | None = None) -> dict[str, dict[str, int]]:
        """Delete each customer's predictions, closed anomalies and finished alerts older than its plan keeps.

        Open anomaly episodes and pending alerts are kept whatever their age: they are still live.
        """
        now = now or utcnow()
        removed: dict[str, dict[str, int]] = {}
        with self.transaction() as session:
            for customer in session.scalars(select(Customer)):
                cutoff = now - timedelta(days=plans.plan(customer.plan).retention_days)
                counts = {
                    "predictions": session.execute(delete(Prediction).where(
                        Prediction.customer_id == customer.id, Prediction.timestamp < cutoff)).rowcount,
                    "anomalies": session.execute(delete(Anomaly).where(
                        Anomaly.customer_id == customer.id, Anomaly.resolved_at.is_not(None),
                        Anomaly.resolved_at < cutoff)).rowcount,
                    "alerts": session.execute(delete(OutboxRow).where(
                        OutboxRow.customer_id == customer.id, OutboxRow.status != PENDING,
                        OutboxRow.created_at < cutoff)).rowcount,
                }
                removed[customer.slug] = counts
        return removed
