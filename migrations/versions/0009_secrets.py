"""secrets at rest: secrets stored before encryption are encrypted

Notification service settings, endpoint URL credentials, secret options and
headers, and a dependent's sync token are stored as Fernet tokens from now
on (``app.models.encrypted``); this encrypts the ones stored in plain text,
under the first key of SECRETS_KEY (or the generated key file). On
PostgreSQL ``endpoints.target`` widens to 4096 characters, room for a URL
whose credentials became a token (SQLite does not enforce the length).
Downgrading stores them in plain text again.

Revision ID: 0009_secrets
Revises: 0008_detail
Create Date: 2026-12-05
"""
import logging

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0009_secrets'
down_revision = '0008_detail'
branch_labels = None
depends_on = None

logger = logging.getLogger("alembic.runtime.migration")


def upgrade():
    from app.services import secrets_at_rest

    if op.get_bind().dialect.name == "postgresql":
        op.alter_column('endpoints', 'target', existing_type=sa.String(length=2048),
                        type_=sa.String(length=4096), existing_nullable=False)
    report = secrets_at_rest.encrypt_plaintext(op.get_bind())
    logger.info("secrets at rest: %d values stored in plain text encrypted", report.plaintext)


def downgrade():
    from app.services import secrets_at_rest

    secrets_at_rest.decrypt_all(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column('endpoints', 'target', existing_type=sa.String(length=4096),
                        type_=sa.String(length=2048), existing_nullable=False)
