"""detail: hourly roll-ups per location, for the endpoint page's series

``result_location_hours`` holds what ``result_hours`` holds, per instance
(location). Hours rolled up before this migration are filled from raw
results here, so the page's week and month show every location at once:
one pass over the rolled-up hours of the last 31 days (the page looks back
30), except the hour of the oldest raw result kept, which retention may
have cut into.

``response_times`` gets an index of failed results alone, so the page's
recent failures are found without reading every result of the endpoint.

Revision ID: 0008_detail
Revises: 0007
Create Date: 2026-12-05
"""
from datetime import datetime, timedelta, timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008_detail'
down_revision = '0007'
branch_labels = None
depends_on = None

KEEP = timedelta(days=31)  # rollups.KEEP_LOCATION_ROLLUPS, as of this migration


def upgrade():
    op.create_table('result_location_hours',
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column('hour', sa.DateTime(), nullable=False),
    sa.Column('instance_id', sa.String(length=64), nullable=False),
    sa.Column('location', sa.String(length=100), nullable=False),
    sa.Column('checks', sa.Integer(), nullable=False),
    sa.Column('ok_checks', sa.Integer(), nullable=False),
    sa.Column('response_ms_sum', sa.Float(), nullable=False),
    sa.Column('response_ms_count', sa.Integer(), nullable=False),
    sa.Column('response_ms_max', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'],
                            name=op.f('fk_result_location_hours_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('endpoint_id', 'hour', 'instance_id', name=op.f('pk_result_location_hours'))
    )
    with op.batch_alter_table('result_location_hours', schema=None) as batch_op:
        batch_op.create_index('ix_result_location_hours_hour', ['hour'], unique=False)
    _fill_rolled_up_hours()
    op.create_index('ix_response_times_failed', 'response_times', ['endpoint_id', 'checked_at'], unique=False,
                    sqlite_where=sa.text('is_ok = 0'), postgresql_where=sa.text('NOT is_ok'))


def _naive(value):
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)  # SQLite returns text


def _fill_rolled_up_hours():
    bind = op.get_bind()
    last = _naive(bind.execute(sa.text("SELECT MAX(hour) FROM rolled_up_hours")).scalar())
    # The oldest result through the (endpoint_id, checked_at) index, endpoint by endpoint.
    first = _naive(bind.execute(sa.text(
        "SELECT MIN((SELECT MIN(r.checked_at) FROM response_times r WHERE r.endpoint_id = e.id)) FROM endpoints e"
    )).scalar())
    if last is None or first is None:
        return
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    start = max(first.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1),
                (now - KEEP).replace(minute=0, second=0, microsecond=0))
    end = last + timedelta(hours=1)
    if start >= end:
        return
    if bind.dialect.name == "postgresql":
        hour = "date_trunc('hour', checked_at)"
    else:  # the text SQLAlchemy stores a DateTime as on SQLite
        hour = "strftime('%Y-%m-%d %H:00:00.000000', checked_at)"
    statement = sa.text(
        "INSERT INTO result_location_hours (endpoint_id, hour, instance_id, location, checks, ok_checks, "
        "response_ms_sum, response_ms_count, response_ms_max) "
        f"SELECT endpoint_id, {hour}, instance_id, MAX(location), COUNT(*), "
        "SUM(CASE WHEN is_ok THEN 1 ELSE 0 END), COALESCE(SUM(response_time_ms), 0), COUNT(response_time_ms), "
        "MAX(response_time_ms) FROM response_times WHERE checked_at >= :start AND checked_at < :end "
        f"GROUP BY endpoint_id, {hour}, instance_id"
    ).bindparams(sa.bindparam("start", type_=sa.DateTime()), sa.bindparam("end", type_=sa.DateTime()))
    bind.execute(statement, {"start": start, "end": end})


def downgrade():
    op.drop_index('ix_response_times_failed', table_name='response_times')
    with op.batch_alter_table('result_location_hours', schema=None) as batch_op:
        batch_op.drop_index('ix_result_location_hours_hour')
    op.drop_table('result_location_hours')
