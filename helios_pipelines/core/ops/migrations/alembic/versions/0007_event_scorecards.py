"""Event scorecards in the store (issue 19 item 1) instead of JSON files under
``$HELIOS_HOME/scorecards``: the CLI, the service's ``GET /events/<name>/scorecard`` and the monthly
report read the same rows on every machine. Files written before this revision are not copied in:
``helios events scorecard <tenant> <event> --rescore`` scores a finished event again.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event_scorecards',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('event', sa.String(length=255), nullable=False, comment="the event's name (YAML, posted, or a learned peak)"),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False, comment="the occurrence's start"),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False,
              comment="the occurrence's end: the monthly report counts it by this"),
    sa.Column('service', sa.String(length=255), nullable=False, comment='the scaled service scored'),
    sa.Column('scorecard', sa.JSON(), nullable=False, comment='the scorecard without its step table, as JSON'),
    sa.Column('steps', sa.JSON(), nullable=False, comment='the step table: actual, forecast, replicas per step'),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('uq_event_scorecards_occurrence', 'event_scorecards', ['customer_id', 'event', 'starts_at', 'service'],
                    unique=True)
    op.create_index('ix_event_scorecards_customer_end', 'event_scorecards', ['customer_id', 'ends_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_event_scorecards_customer_end', table_name='event_scorecards')
    op.drop_index('uq_event_scorecards_occurrence', table_name='event_scorecards')
    op.drop_table('event_scorecards')
