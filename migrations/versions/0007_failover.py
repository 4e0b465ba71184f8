"""failover: the history of cluster transitions

- ``cluster_events``: every suspect, vote, promotion, follow, step-down and
  fence this instance took part in, with its epoch.
- ``response_times``: an index on (instance_id, checked_at), for the
  newest result held from each instance when a new primary catches up.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('cluster_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_cluster_events_at', 'cluster_events', ['at'], unique=False)
    op.create_index('ix_response_times_instance_checked', 'response_times', ['instance_id', 'checked_at'],
                    unique=False)


def downgrade():
    op.drop_index('ix_response_times_instance_checked', table_name='response_times')
    op.drop_index('ix_cluster_events_at', table_name='cluster_events')
    op.drop_table('cluster_events')
