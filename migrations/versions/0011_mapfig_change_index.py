"""mapfig: an index of consensus change rows

``aggregated_results`` gains a regular row per endpoint every 5 minutes and
is never pruned; the consensus in force when an uptime window starts is the
newest change row before it. Through the (endpoint_id, computed_at) index
that meant reading back past every regular row since that change (a month
of a steady endpoint is 8,640 rows); this partial index holds the change
rows alone, so it is one seek per endpoint.

Revision ID: 0011_mapfig
Revises: 0010_maintenance
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011_mapfig'
down_revision = '0010_maintenance'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_aggregated_results_changes', 'aggregated_results', ['endpoint_id', 'computed_at', 'id'],
                    unique=False, sqlite_where=sa.text('is_change = 1'), postgresql_where=sa.text('is_change'))


def downgrade():
    op.drop_index('ix_aggregated_results_changes', table_name='aggregated_results')
