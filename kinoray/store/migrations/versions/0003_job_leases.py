"""Job leases: who runs a job and until when, how often it was claimed, what its success published.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Adds to ``jobs`` the columns :mod:`kinoray.control.jobs` uses (``owner``, ``lease_expires_at``, ``attempts``,
``result``) and an index ``(state, lease_expires_at)`` for the reconciler's "active job whose lease ran out"
query. Plain ``ADD COLUMN`` on both backends (SQLite adds a NOT NULL column when it has a default); the
downgrade drops the index first, then the columns (SQLite ≥ 3.35 drops unindexed, unconstrained columns in
place, so the table and its CHECK constraint are not rebuilt). Existing active jobs get a NULL lease: the
reconciler treats them as left by a dead runner and re-queues them, as the runner did on start before.
``tests/test_db.py`` compares the migrated schema with the models on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("owner", sa.String(length=128), nullable=True))
    op.add_column("jobs", sa.Column("lease_expires_at", sa.Double(), nullable=True))
    op.add_column("jobs", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("jobs", sa.Column("result", sa.JSON(none_as_null=True), nullable=True))
    op.create_index("ix_jobs_state_lease_expires_at", "jobs", ["state", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_lease_expires_at", table_name="jobs")
    for column in ("result", "attempts", "lease_expires_at", "owner"):
        op.drop_column("jobs", column)
