"""Capacity and scaling alert episodes (capacity_warning, capacity_critical, scaling_recommended).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_episodes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('event', sa.String(length=50), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False, comment='the scaled service'),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('peak', sa.Float(), nullable=False, comment='largest value of the condition during the episode'),
    sa.Column('description', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('uq_alert_episodes_open', 'alert_episodes', ['customer_id', 'event', 'subject'], unique=True,
                    sqlite_where=sa.text('resolved_at IS NULL'), postgresql_where=sa.text('resolved_at IS NULL'))


def downgrade() -> None:
    op.drop_index('uq_alert_episodes_open', table_name='alert_episodes',
                  sqlite_where=sa.text('resolved_at IS NULL'), postgresql_where=sa.text('resolved_at IS NULL'))
    op.drop_table('alert_episodes')
