"""maintenance windows: times when chosen endpoints raise no alerts

- ``maintenance_windows``: one-off (start, end) or recurring (cron
  expression, time zone, duration) windows over endpoint ids and groups.
- ``status_changes.suppressed_alert`` / ``suppressed_by``: the alert a
  window held back and which window, kept beside the change.

Revision ID: 0010_maintenance
Revises: 0009_secrets
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010_maintenance'
down_revision = '0009_secrets'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('maintenance_windows',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('starts_at', sa.DateTime(), nullable=True),
    sa.Column('ends_at', sa.DateTime(), nullable=True),
    sa.Column('cron_expression', sa.String(length=100), nullable=True),
    sa.Column('time_zone', sa.String(length=64), nullable=True),
    sa.Column('duration_minutes', sa.Integer(), nullable=True),
    sa.Column('endpoint_ids', sa.JSON(), nullable=False),
    sa.Column('group_names', sa.JSON(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_maintenance_windows')),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('status_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suppressed_alert', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('suppressed_by', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('status_changes', schema=None) as batch_op:
        batch_op.drop_column('suppressed_by')
        batch_op.drop_column('suppressed_alert')
    op.drop_table('maintenance_windows')
