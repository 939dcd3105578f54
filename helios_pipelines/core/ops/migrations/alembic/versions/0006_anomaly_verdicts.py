"""Operators' verdicts on anomaly episodes (issue 17 item 4): the detector's training reads them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('anomaly_verdicts',
    sa.Column('anomaly_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('verdict', sa.String(length=20), nullable=False, comment='incident or not_an_incident'),
    sa.Column('given_by', sa.String(length=255), nullable=False, comment="the operator, or the API key's tenant"),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('given_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['anomaly_id'], ['anomalies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('anomaly_id')
    )
    op.create_index('ix_anomaly_verdicts_customer', 'anomaly_verdicts', ['customer_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_anomaly_verdicts_customer', table_name='anomaly_verdicts')
    op.drop_table('anomaly_verdicts')
