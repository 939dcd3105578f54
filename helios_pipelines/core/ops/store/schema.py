"""The store's tables, their column types and row states.

The tables are the integration guide's SaaS schema (``customers``, ``customer_metrics``, ``models``,
``predictions``, ``anomalies``) plus ``api_keys`` and ``alert_outbox``. Types are portable (``Uuid``,
``JSON``, timestamps stored as UTC) so the embedded SQLite default and production PostgreSQL run the
same code; the schema is created by the Alembic migrations in ``core/ops/migrations`` (``helios db upgrade``).

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
- ``push_series`` / ``push_samples`` hold pushed metrics (not in the guide, which only pulls): every
  replica and the pipeline read the same samples, and a sample is stored once per (tenant, series,
  label set, timestamp), so a retried remote-write adds nothing.
- ``anomaly_verdicts`` (not in the guide): an operator's verdict on an episode, which the next
  training run of the tenant's detector calibrates its thresholds with.
- ``event_scorecards`` (not in the guide): what an event's forecasts and replicas were worth once it
  ended (issue 19), one row per occurrence and scaled service, a later scoring replacing it.
- ``posted_events`` and ``posted_changes`` (not in the guide): what tenants post at run time (a
  scheduled event, a deploy or scaling action), so every replica honours it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

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
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACTIVE, DISABLED = "active", "disabled"
# Outbox row states: waiting for (another) attempt, done, given up after the bounded attempts.
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
# An operator's verdict on an anomaly episode: a real incident, or a page that should not have fired.
INCIDENT, NOT_AN_INCIDENT = "incident", "not_an_incident"
VERDICTS = (INCIDENT, NOT_AN_INCIDENT)
API_KEY_SCHEME = "hel"


def utcnow() -> datetime:
    return datetime.now(UTC)


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


class AnomalyVerdict(Base):
    """An operator's verdict on one anomaly episode (``incident`` or ``not_an_incident``): at most one
    per episode, a later verdict replacing it. Kept apart from the model, so every retraining reads it
    again; deleted with its episode (retention)."""

    __tablename__ = "anomaly_verdicts"
    __table_args__ = (Index("ix_anomaly_verdicts_customer", "customer_id"),)

    anomaly_id: Mapped[int] = mapped_column(BigId, ForeignKey("anomalies.id", ondelete="CASCADE"), primary_key=True,
                                            autoincrement=False)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    verdict: Mapped[str] = mapped_column(String(20), comment="incident or not_an_incident")
    given_by: Mapped[str] = mapped_column(String(255), comment="the operator, or the API key's tenant")
    note: Mapped[str | None] = mapped_column(Text)
    given_at: Mapped[datetime] = mapped_column(default=utcnow)


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


class PostedChange(Base):
    """A deploy or scaling action posted through ``POST /annotations``: durable, so every replica's
    detector takes it as a known cause of alerts."""

    __tablename__ = "posted_changes"
    __table_args__ = (Index("ix_posted_changes_customer", "customer_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(comment="when the change started")
    change: Mapped[dict] = mapped_column(JSON, comment="the validated ChangeAnnotation, as JSON")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventScorecard(Base):
    """An event occurrence's scorecard for one scaled service (``core.ops.scorecard.Scorecard`` as
    JSON): at most one per occurrence and service, scoring it again replaces it. The step table (a
    row per step, thousands over a launch) is a column of its own, read only when one scorecard is
    asked for; the other columns are what it is looked up and rolled up by."""

    __tablename__ = "event_scorecards"
    __table_args__ = (
        Index("uq_event_scorecards_occurrence", "customer_id", "event", "starts_at", "service", unique=True),
        Index("ix_event_scorecards_customer_end", "customer_id", "ends_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(255), comment="the event's name (YAML, posted, or a learned peak)")
    starts_at: Mapped[datetime] = mapped_column(comment="the occurrence's start")
    ends_at: Mapped[datetime] = mapped_column(comment="the occurrence's end: the monthly report counts it by this")
    service: Mapped[str] = mapped_column(String(255), comment="the scaled service scored")
    scorecard: Mapped[dict] = mapped_column(JSON, comment="the scorecard without its step table, as JSON")
    steps: Mapped[list] = mapped_column(JSON, comment="the step table: actual, forecast, replicas per step")
    scored_at: Mapped[datetime] = mapped_column(default=utcnow)


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



class PushSeries(Base):
    """One label set of one pushed series of a tenant. The label set is kept as its canonical text
    (sorted ``k="v"`` pairs) and keyed by that text's SHA-256: label sets may be long (up to 30 values
    of 2 KiB), longer than a B-tree index entry may be."""

    __tablename__ = "push_series"
    __table_args__ = (Index("uq_push_series_labels", "customer_id", "series", "labels_hash", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    series: Mapped[str] = mapped_column(String(256), comment="the series name pushed (__name__)")
    labels: Mapped[str] = mapped_column(Text, comment='canonical label set without __name__: k="v",...')
    labels_hash: Mapped[str] = mapped_column(String(64), comment="SHA-256 of labels, hex")


class PushSample(Base):
    """A pushed sample; the primary key (series and label set, timestamp) makes a replayed one a no-op."""

    __tablename__ = "push_samples"

    series_id: Mapped[int] = mapped_column(BigId, ForeignKey("push_series.id", ondelete="CASCADE"), primary_key=True,
                                           autoincrement=False)
    timestamp: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False, comment="unix milliseconds")
    value: Mapped[float] = mapped_column(Float)
