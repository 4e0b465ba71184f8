"""counts: results counted per hour and day as they are stored

Results are now counted into ``result_location_hours`` (per endpoint,
location and hour) and the new ``result_location_days`` (per endpoint,
location and day) in the transaction that stores them, so no page waits
for the clock's roll-up job, and the job, its watermark
(``rolled_up_hours``), its marks of late hours (``stale_hours``) and the
all-locations ``result_hours`` go.

Filled here: the hours after the last one rolled up (all of them if none
was) and the hours marked as having gained late results are counted from
raw results; then each day from the hours per location, and, where only
``result_hours`` holds an hour (per-location hours were kept 31 days), as
one row per endpoint and day with an empty ``instance_id`` (every location
together).

Revision ID: 0012_counts
Revises: 0011_mapfig
Create Date: 2026-12-05
"""
from datetime import datetime, timedelta, timezone

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012_counts'
down_revision = '0011_mapfig'
branch_labels = None
depends_on = None

HOUR = timedelta(hours=1)
COUNTS = ("checks, ok_checks, response_ms_sum, response_ms_count, response_ms_max")
RAW_COUNTS = ("COUNT(*), SUM(CASE WHEN is_ok THEN 1 ELSE 0 END), COALESCE(SUM(response_time_ms), 0), "
              "COUNT(response_time_ms), MAX(response_time_ms)")
SUMMED = "SUM(checks), SUM(ok_checks), SUM(response_ms_sum), SUM(response_ms_count), MAX(response_ms_max)"


def _count_table(name, period):
    op.create_table(name,
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column(period, sa.DateTime(), nullable=False),
    sa.Column('instance_id', sa.String(length=64), nullable=False),
    sa.Column('location', sa.String(length=100), nullable=False),
    sa.Column('checks', sa.Integer(), nullable=False),
    sa.Column('ok_checks', sa.Integer(), nullable=False),
    sa.Column('response_ms_sum', sa.Float(), nullable=False),
    sa.Column('response_ms_count', sa.Integer(), nullable=False),
    sa.Column('response_ms_max', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'],
                            name=op.f(f'fk_{name}_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('endpoint_id', period, 'instance_id', name=op.f(f'pk_{name}'))
    )
    with op.batch_alter_table(name, schema=None) as batch_op:
        batch_op.create_index(f'ix_{name}_{period}', [period], unique=False)


def _truncated(column, unit):
    """SQL for a DateTime column cut to its hour or day, as SQLAlchemy
    stores a DateTime (on SQLite its text, cut without rounding)."""
    if op.get_bind().dialect.name == "postgresql":
        return f"date_trunc('{unit}', {column})"
    if unit == "hour":
        return f"substr({column}, 1, 13) || ':00:00.000000'"
    return f"substr({column}, 1, 10) || ' 00:00:00.000000'"


def _naive(value):
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)  # SQLite returns text


def _execute(sql, **params):
    statement = sa.text(sql).bindparams(*(sa.bindparam(name, type_=sa.DateTime()) for name in params))
    op.get_bind().execute(statement, params)


def upgrade():
    _count_table('result_location_days', 'day')
    bind = op.get_bind()
    last = _naive(bind.execute(sa.text("SELECT MAX(hour) FROM rolled_up_hours")).scalar())
    mark = last + HOUR if last is not None else datetime(1970, 1, 1)
    hour = _truncated("checked_at", "hour")
    # 1. Hours never rolled up, from raw results.
    _execute("INSERT INTO result_location_hours (endpoint_id, hour, instance_id, location, " + COUNTS + ") "
             f"SELECT endpoint_id, {hour}, instance_id, MAX(location), {RAW_COUNTS} FROM response_times "
             f"WHERE checked_at >= :mark GROUP BY endpoint_id, {hour}, instance_id", mark=mark)
    # 2. Hours that gained late results since their roll-up, again from raw
    # results, where these are all still kept (not the oldest kept hour).
    first = _naive(bind.execute(sa.text(
        "SELECT MIN((SELECT MIN(r.checked_at) FROM response_times r WHERE r.endpoint_id = e.id)) FROM endpoints e"
    )).scalar())
    if first is not None:
        complete = first.replace(minute=0, second=0, microsecond=0) + HOUR
        stale = [_naive(h) for h in bind.execute(sa.text(
            "SELECT DISTINCT hour FROM stale_hours WHERE hour < :mark AND hour >= :complete"
        ).bindparams(sa.bindparam("mark", type_=sa.DateTime()), sa.bindparam("complete", type_=sa.DateTime())),
            {"mark": mark, "complete": complete}).scalars()]
        marked = "endpoint_id IN (SELECT endpoint_id FROM stale_hours WHERE hour = :start)"
        for start in stale:
            for table in ("result_location_hours", "result_hours"):
                _execute(f"DELETE FROM {table} WHERE hour = :start AND {marked}", start=start)
            _execute("INSERT INTO result_location_hours (endpoint_id, hour, instance_id, location, " + COUNTS + ") "
                     f"SELECT endpoint_id, :start, instance_id, MAX(location), {RAW_COUNTS} FROM response_times "
                     f"WHERE checked_at >= :start AND checked_at < :end AND {marked} "
                     "GROUP BY endpoint_id, instance_id", start=start, end=start + HOUR)
            _execute("INSERT INTO result_hours (endpoint_id, hour, " + COUNTS + ") "
                     f"SELECT endpoint_id, :start, {RAW_COUNTS} FROM response_times "
                     f"WHERE checked_at >= :start AND checked_at < :end AND {marked} "
                     "GROUP BY endpoint_id", start=start, end=start + HOUR)
    # 3. Days: from the hours per location, and from the all-locations
    # hours where no per-location hour is kept.
    day = _truncated("hour", "day")
    bind.execute(sa.text(
        "INSERT INTO result_location_days (endpoint_id, day, instance_id, location, " + COUNTS + ") "
        f"SELECT endpoint_id, {day}, instance_id, MAX(location), {SUMMED} FROM result_location_hours "
        f"GROUP BY endpoint_id, {day}, instance_id"))
    bind.execute(sa.text(
        "INSERT INTO result_location_days (endpoint_id, day, instance_id, location, " + COUNTS + ") "
        f"SELECT endpoint_id, {day}, '', '', {SUMMED} FROM result_hours h WHERE NOT EXISTS "
        "(SELECT 1 FROM result_location_hours l WHERE l.endpoint_id = h.endpoint_id AND l.hour = h.hour) "
        f"GROUP BY endpoint_id, {day}"))
    op.drop_table('stale_hours')
    op.drop_table('rolled_up_hours')
    with op.batch_alter_table('result_hours', schema=None) as batch_op:
        batch_op.drop_index('ix_result_hours_hour')
    op.drop_table('result_hours')


def downgrade():
    """Back to hourly roll-ups by the clock's job: every finished hour
    counted so far is taken as rolled up. Days with no hours (the empty
    ``instance_id`` rows) are lost."""
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
    op.create_table('stale_hours',
    sa.Column('hour', sa.DateTime(), nullable=False),
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'], name=op.f('fk_stale_hours_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('hour', 'endpoint_id', name=op.f('pk_stale_hours'))
    )
    this_hour = datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    _execute("INSERT INTO result_hours (endpoint_id, hour, " + COUNTS + ") "
             f"SELECT endpoint_id, hour, {SUMMED} FROM result_location_hours WHERE hour < :end "
             "GROUP BY endpoint_id, hour", end=this_hour)
    _execute("INSERT INTO rolled_up_hours (hour, rolled_up_at) SELECT DISTINCT hour, :end FROM result_hours",
             end=this_hour)
    _execute("DELETE FROM result_location_hours WHERE hour >= :end", end=this_hour)
    with op.batch_alter_table('result_location_days', schema=None) as batch_op:
        batch_op.drop_index('ix_result_location_days_day')
    op.drop_table('result_location_days')
