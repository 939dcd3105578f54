"""Pushed samples in the store (``push_series``, ``push_samples``) instead of Parquet files under
``$HELIOS_HOME/push``: every replica and the pipeline read the same samples. Files written before
this revision are not copied in (pushes are recent data; clients re-send what they still hold).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('push_series',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('series', sa.String(length=256), nullable=False, comment='the series name pushed (__name__)'),
    sa.Column('labels', sa.Text(), nullable=False, comment='canonical label set without __name__: k="v",...'),
    sa.Column('labels_hash', sa.String(length=64), nullable=False, comment='SHA-256 of labels, hex'),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('uq_push_series_labels', 'push_series', ['customer_id', 'series', 'labels_hash'], unique=True)
    op.create_table('push_samples',
    sa.Column('series_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('timestamp', sa.BigInteger(), autoincrement=False, nullable=False, comment='unix milliseconds'),
    sa.Column('value', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['series_id'], ['push_series.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_id', 'timestamp')
    )


def downgrade() -> None:
    op.drop_table('push_samples')
    op.drop_index('uq_push_series_labels', table_name='push_series')
    op.drop_table('push_series')
