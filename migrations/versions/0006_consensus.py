"""consensus: per-location status, probe states, consensus columns

- ``location_status``: each location's thresholded status of each endpoint,
  replacing ``endpoint_sync_status`` (which held only the newest result a
  dependent reported). It fills from results within one interval.
- ``probe_states``: which locations are probe-offline, since when results
  of each count as votes, connectivity-target outcomes.
- ``endpoints``: which locations check it, the consensus rule, PARTIAL
  alerts, certificate expiry days; runtime columns for the consensus.
- ``status_changes.alert_event``: the alert a change raises, decided with
  it. Existing changes keep the alerts they raised before (to DOWN; DOWN to
  UP); an endpoint DOWN now counts as alerted.
- ``aggregated_results``: min / max response time, change or cadence row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('location_status',
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=64), nullable=False),
    sa.Column('location', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('consecutive_successes', sa.Integer(), nullable=False),
    sa.Column('last_checked_at', sa.DateTime(), nullable=True),
    sa.Column('last_is_ok', sa.Boolean(), nullable=True),
    sa.Column('last_response_time_ms', sa.Float(), nullable=True),
    sa.Column('last_failure_reason', sa.Text(), nullable=True),
    sa.Column('certificate_expires_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'], name=op.f('fk_location_status_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('endpoint_id', 'instance_id', name=op.f('pk_location_status'))
    )
    op.create_index('ix_location_status_instance_checked', 'location_status', ['instance_id', 'last_checked_at'],
                    unique=False)

    op.create_table('probe_states',
    sa.Column('instance_id', sa.String(length=64), nullable=False),
    sa.Column('offline_since', sa.DateTime(), nullable=True),
    sa.Column('offline_reason', sa.Text(), nullable=True),
    sa.Column('votes_from', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_interval', sa.Integer(), nullable=True),
    sa.Column('connectivity_ok', sa.Boolean(), nullable=True),
    sa.Column('connectivity_error', sa.Text(), nullable=True),
    sa.Column('connectivity_checked_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('instance_id', name=op.f('pk_probe_states'))
    )

    # Plain ADD COLUMN: a batch rebuild of endpoints would drop the table
    # that results reference (ON DELETE CASCADE) on SQLite, and them with it.
    op.add_column('endpoints', sa.Column('location_ids', sa.JSON(), nullable=True))
    op.add_column('endpoints', sa.Column('consensus_rule', sa.String(length=16), nullable=False, server_default='majority'))
    op.add_column('endpoints', sa.Column('consensus_min_down', sa.Integer(), nullable=True))
    op.add_column('endpoints', sa.Column('alert_on_partial', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('endpoints', sa.Column('cert_expiry_days', sa.Integer(), nullable=False, server_default='14'))
    op.add_column('endpoints', sa.Column('checked_here', sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column('endpoints', sa.Column('locations_voting', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('endpoints', sa.Column('locations_up', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('endpoints', sa.Column('locations_down', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('endpoints', sa.Column('alerted_status', sa.String(length=16), nullable=True))
    op.add_column('endpoints', sa.Column('consensus_recorded_at', sa.DateTime(), nullable=True))
    op.add_column('endpoints', sa.Column('certificate_alerted_expiry', sa.DateTime(), nullable=True))

    op.add_column('status_changes', sa.Column('alert_event', sa.String(length=16), nullable=True))

    op.add_column('aggregated_results', sa.Column('min_response_time_ms', sa.Float(), nullable=True))
    op.add_column('aggregated_results', sa.Column('max_response_time_ms', sa.Float(), nullable=True))
    op.add_column('aggregated_results', sa.Column('is_change', sa.Boolean(), nullable=False, server_default=sa.false()))

    # What alerted before keeps its alert, so the sweep raises nothing new.
    op.execute("UPDATE status_changes SET alert_event = 'down' WHERE to_status = 'DOWN'")
    op.execute("UPDATE status_changes SET alert_event = 'up' WHERE to_status = 'UP' AND from_status = 'DOWN'")
    op.execute("UPDATE endpoints SET alerted_status = status WHERE status IN ('UP', 'DOWN')")

    op.drop_table('endpoint_sync_status')


def downgrade():
    op.create_table('endpoint_sync_status',
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.String(length=64), nullable=False),
    sa.Column('config_version', sa.Integer(), nullable=False),
    sa.Column('last_status', sa.String(length=16), nullable=True),
    sa.Column('last_result_at', sa.DateTime(), nullable=True),
    sa.Column('last_response_time_ms', sa.Integer(), nullable=True),
    sa.Column('synced_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoints.id'], name=op.f('fk_endpoint_sync_status_endpoint_id_endpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['instance_id'], ['monitoring_instances.id'], name=op.f('fk_endpoint_sync_status_instance_id_monitoring_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('endpoint_id', 'instance_id', name=op.f('pk_endpoint_sync_status'))
    )
    # PARTIAL did not exist before: such endpoints count as UP.
    op.execute("UPDATE endpoints SET status = 'UP' WHERE status = 'PARTIAL'")
    # Plain DROP COLUMN (SQLite 3.35+), for the reason given in upgrade.
    for table, columns in (
        ('aggregated_results', ('is_change', 'max_response_time_ms', 'min_response_time_ms')),
        ('status_changes', ('alert_event',)),
        ('endpoints', ('certificate_alerted_expiry', 'consensus_recorded_at', 'alerted_status', 'locations_down',
                       'locations_up', 'locations_voting', 'checked_here', 'cert_expiry_days', 'alert_on_partial',
                       'consensus_min_down', 'consensus_rule', 'location_ids')),
    ):
        for column in columns:
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_table('probe_states')
    op.drop_index('ix_location_status_instance_checked', table_name='location_status')
    op.drop_table('location_status')
