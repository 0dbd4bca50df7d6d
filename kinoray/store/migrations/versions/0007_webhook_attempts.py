"""Webhook attempt log: what each delivery attempt came to, sent as Mux's ``attempts`` with later attempts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Adds the nullable JSON column ``webhook_deliveries.attempt_log`` (plain ``ADD COLUMN`` on both backends).
Deliveries queued before it start their log at their next attempt.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("webhook_deliveries", sa.Column("attempt_log", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    op.drop_column("webhook_deliveries", "attempt_log")
