"""Alert outbox: secrets by environment-variable name (url_env, routing_key_env; url may be empty),
and an index for the per-episode delivery order.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alert_outbox') as batch:
        batch.alter_column('url', existing_type=sa.Text(), nullable=True,
                           comment='a URL that is not a secret; else url_env')
        batch.add_column(sa.Column('url_env', sa.String(length=255), nullable=True,
                                   comment='environment variable holding the URL'))
        batch.add_column(sa.Column('routing_key_env', sa.String(length=255), nullable=True,
                                   comment='pagerduty: variable holding the routing key'))
    op.create_index('ix_alert_outbox_episode', 'alert_outbox', ['customer_id', 'alert_key', 'destination', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_alert_outbox_episode', table_name='alert_outbox')
    with op.batch_alter_table('alert_outbox') as batch:
        batch.drop_column('routing_key_env')
        batch.drop_column('url_env')
        batch.alter_column('url', existing_type=sa.Text(), nullable=False, comment=None)
