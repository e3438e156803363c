"""desk: a partial index of failed pushes, for the requeue of all of a tenant's failures

Revision ID: 0014_desk_failed_index
Revises: 0013_rooms_reconcile
Create Date: 2026-11-29 17:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_desk_failed_index"
down_revision = "0013_rooms_reconcile"
branch_labels = None
depends_on = None

FAILED = sa.text("sync_status = 'failed'")


def upgrade() -> None:
    op.create_index(
        "ix_desk_contacts_failed",
        "desk_contacts",
        ["tenant_id"],
        postgresql_where=FAILED,
        sqlite_where=FAILED,
    )


def downgrade() -> None:
    op.drop_index("ix_desk_contacts_failed", table_name="desk_contacts")
