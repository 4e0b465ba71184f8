"""ui: hourly result roll-ups and failed sign-in attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('result_hours',
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column('hour', sa.DateTime(), nullable=False),
    sa.Column('checks', sa.Integer(), nullable=False),
    sa.Column('ok_checks', sa.Integer(), nullable=False),
    sa.Column('response_ms_sum', sa.Float(), nullable=False),
    sa.Column('response_ms_count', sa.Integer(), nullable=False),
    sa.Column('response_ms_max', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'], name=op.f('fk_result_hours_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('endpoint_id', 'hour', name=op.f('pk_result_hours'))
    )
    with op.batch_alter_table('result_hours', schema=None) as batch_op:
        batch_op.create_index('ix_result_hours_hour', ['hour'], unique=False)

    op.create_table('rolled_up_hours',
    sa.Column('hour', sa.DateTime(), nullable=False),
    sa.Column('rolled_up_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('hour', name=op.f('pk_rolled_up_hours'))
    )

    op.create_table('login_failures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('attempted_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.create_index('ix_login_failures_ip_at', ['ip', 'attempted_at'], unique=False)
        batch_op.create_index('ix_login_failures_email_at', ['email', 'attempted_at'], unique=False)


def downgrade():
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failures_email_at')
        batch_op.drop_index('ix_login_failures_ip_at')
    op.drop_table('login_failures')
    op.drop_table('rolled_up_hours')
    with op.batch_alter_table('result_hours', schema=None) as batch_op:
        batch_op.drop_index('ix_result_hours_hour')
    op.drop_table('result_hours')
