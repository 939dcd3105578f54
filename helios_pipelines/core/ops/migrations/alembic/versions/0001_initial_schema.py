"""Initial schema: the integration guide's tables plus api_keys and alert_outbox.

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('customers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('slug', sa.String(length=63), nullable=False, comment='tenant id in the YAML registry'),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('plan', sa.String(length=50), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    op.create_table('alert_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('alert_key', sa.String(length=255), nullable=False, comment="the alert's identity; PagerDuty's dedup_key"),
    sa.Column('event', sa.String(length=50), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False, comment='trigger or resolve'),
    sa.Column('destination', sa.String(length=255), nullable=False, comment='webhook name in the tenant config'),
    sa.Column('destination_type', sa.String(length=20), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('secret_env', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    op.create_index('ix_alert_outbox_due', 'alert_outbox', ['status', 'next_attempt_at'], unique=False)
    op.create_table('anomalies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False, comment='first anomalous point of the episode'),
    sa.Column('metric_name', sa.String(length=255), nullable=False),
    sa.Column('anomaly_score', sa.Float(), nullable=False, comment='peak score of the episode'),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('acknowledged', sa.Boolean(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('peak_value', sa.Float(), nullable=True),
    sa.Column('detected_by', sa.String(length=20), nullable=False, comment='detect or scheduled'),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_anomalies_customer_detected', 'anomalies', ['customer_id', 'detected_at'], unique=False)
    op.create_index('uq_anomalies_open_episode', 'anomalies', ['customer_id', 'metric_name'], unique=True, sqlite_where=sa.text('resolved_at IS NULL'), postgresql_where=sa.text('resolved_at IS NULL'))
    op.create_table('api_keys',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True, comment='set by a rotation with a grace period'),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('prefix')
    )
    op.create_index(op.f('ix_api_keys_customer_id'), 'api_keys', ['customer_id'], unique=False)
    op.create_table('customer_metrics',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('metric_name', sa.String(length=255), nullable=False),
    sa.Column('prometheus_query', sa.Text(), nullable=True),
    sa.Column('forecast_enabled', sa.Boolean(), nullable=False),
    sa.Column('anomaly_enabled', sa.Boolean(), nullable=False),
    sa.Column('thresholds', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('uq_customer_metrics_name', 'customer_metrics', ['customer_id', 'metric_name'], unique=True)
    op.create_table('models',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('model_type', sa.String(length=50), nullable=False, comment='forecaster, anomaly_detector, capacity_planner'),
    sa.Column('model_path', sa.String(length=500), nullable=False, comment='models:/<name>/<version>'),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('version', sa.String(length=50), nullable=False),
    sa.Column('kind', sa.String(length=50), nullable=True, comment='xgboost, prophet, seasonal_naive ...'),
    sa.Column('trained_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('uq_models_version', 'models', ['customer_id', 'name', 'version'], unique=True)
    op.create_table('predictions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False, comment='target time the forecast is for'),
    sa.Column('metric_name', sa.String(length=255), nullable=False),
    sa.Column('predicted_value', sa.Float(), nullable=False),
    sa.Column('actual_value', sa.Float(), nullable=True),
    sa.Column('horizon_minutes', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Uuid(), nullable=True),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False, comment='forecast origin: the last step of history it used'),
    sa.Column('lower_value', sa.Float(), nullable=True),
    sa.Column('upper_value', sa.Float(), nullable=True),
    sa.Column('interval_level', sa.Float(), nullable=True),
    sa.Column('seasonal_naive_value', sa.Float(), nullable=True, comment='actual one day before the target'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_predictions_customer_target', 'predictions', ['customer_id', 'timestamp'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_predictions_customer_target', table_name='predictions')
    op.drop_table('predictions')
    op.drop_index('uq_models_version', table_name='models')
    op.drop_table('models')
    op.drop_index('uq_customer_metrics_name', table_name='customer_metrics')
    op.drop_table('customer_metrics')
    op.drop_index(op.f('ix_api_keys_customer_id'), table_name='api_keys')
    op.drop_table('api_keys')
    op.drop_index('uq_anomalies_open_episode', table_name='anomalies', sqlite_where=sa.text('resolved_at IS NULL'), postgresql_where=sa.text('resolved_at IS NULL'))
    op.drop_index('ix_anomalies_customer_detected', table_name='anomalies')
    op.drop_table('anomalies')
    op.drop_index('ix_alert_outbox_due', table_name='alert_outbox')
    op.drop_table('alert_outbox')
    op.drop_table('customers')
