"""alerting: notification deliveries and per-endpoint reminder interval

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('notification_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('notification_service_id', sa.Integer(), nullable=False),
    sa.Column('endpoint_id', sa.Integer(), nullable=True),
    sa.Column('status_change_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('dedupe_key', sa.String(length=128), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['notification_service_id'], ['notification_services.id'], name=op.f('fk_notification_deliveries_notification_service_id_notification_services'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'], name=op.f('fk_notification_deliveries_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['status_change_id'], ['status_changes.id'], name=op.f('fk_notification_deliveries_status_change_id_status_changes'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_deliveries')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_notification_deliveries_dedupe_key'))
    )
    with op.batch_alter_table('notification_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_notification_deliveries_status_next', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_notification_deliveries_created', ['created_at'], unique=False)

    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminder_interval_minutes', sa.Integer(), nullable=True))

    # The alert sweep looks for recent status changes across all endpoints.
    with op.batch_alter_table('status_changes', schema=None) as batch_op:
        batch_op.create_index('ix_status_changes_changed', ['changed_at'], unique=False)


def downgrade():
    with op.batch_alter_table('status_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_status_changes_changed')

    with op.batch_alter_table('endpoints', schema=None) as batch_op:
        batch_op.drop_column('reminder_interval_minutes')

    with op.batch_alter_table('notification_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_deliveries_created')
        batch_op.drop_index('ix_notification_deliveries_status_next')

    op.drop_table('notification_deliveries')
