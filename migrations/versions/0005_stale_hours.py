"""stale hours: rolled-up hours that gained late results, to roll up again

Results keep the time they were checked, so a dependent's outbox delivered
after an outage lands in hours already rolled up. Storing such a result
marks its endpoint's hour here; the roll-up recomputes it and clears the
mark. Hours already rolled up before this migration are left as they are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('stale_hours',
    sa.Column('hour', sa.DateTime(), nullable=False),
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'], name=op.f('fk_stale_hours_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('hour', 'endpoint_id', name=op.f('pk_stale_hours'))
    )


def downgrade():
    op.drop_table('stale_hours')
