"""billing: when an invoice was voided or marked uncollectible

Revision ID: 0007_billing_transitions
Revises: 0003_billing

Invoices leave ``open`` for ``void`` or ``uncollectible`` through the platform's admin API
(ADR 0026); these columns record when, as Stripe's ``status_transitions`` do. The wallet's
``floor`` column already exists (0003_billing).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_billing_transitions"
down_revision = "0003_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("marked_uncollectible_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_invoices", schema=None) as batch_op:
        batch_op.drop_column("marked_uncollectible_at")
        batch_op.drop_column("voided_at")
