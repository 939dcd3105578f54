"""Replicas agree: posted events in the store, one recorded forecast per origin, step leases.

- ``posted_events``: events posted through ``POST /events``, honoured by every replica.
- ``uq_predictions_forecast``: one prediction per (customer, metric, horizon, origin). Duplicates
  recorded before this revision (one per replica, or per repeated /predict) are deleted first,
  keeping the earliest row (the lowest id), which is the one actuals were joined to first.
- ``step_leases``: once-per-step work (scheduled detection and its alerts) claimed by one replica.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('posted_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event', sa.JSON(), nullable=False, comment='the validated ScheduledEvent, as JSON'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_posted_events_customer', 'posted_events', ['customer_id', 'id'], unique=False)
    op.create_table('step_leases',
    sa.Column('name', sa.String(length=255), nullable=False, comment='task/tenant, e.g. detect/acme'),
    sa.Column('step', sa.DateTime(timezone=True), nullable=False, comment='the latest step claimed'),
    sa.Column('previous_step', sa.DateTime(timezone=True), nullable=True, comment='the step claimed before it'),
    sa.Column('owner', sa.String(length=64), nullable=False, comment='the replica that claimed it'),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.execute(
        "DELETE FROM predictions WHERE id NOT IN (SELECT min(id) FROM predictions "
        "GROUP BY customer_id, metric_name, horizon_minutes, issued_at)"
    )
    op.create_index('uq_predictions_forecast', 'predictions',
                    ['customer_id', 'metric_name', 'horizon_minutes', 'issued_at'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_predictions_forecast', table_name='predictions')
    op.drop_table('step_leases')
    op.drop_index('ix_posted_events_customer', table_name='posted_events')
    op.drop_table('posted_events')
