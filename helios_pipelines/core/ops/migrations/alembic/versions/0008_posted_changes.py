"""Changes posted through ``POST /annotations`` (issue 17: deploys and scaling actions as known causes of
the detector's alerts) in the store, as ``posted_events`` are: every replica of a tenant reads them.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('posted_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False, comment='when the change started'),
    sa.Column('change', sa.JSON(), nullable=False, comment='the validated ChangeAnnotation, as JSON'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_posted_changes_customer', 'posted_changes', ['customer_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_posted_changes_customer', table_name='posted_changes')
    op.drop_table('posted_changes')
