"""Simulcast pushing (issue 17): ``simulcast_targets.error_severity``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

The live ingest pushes each live stream to its simulcast targets and records their status
(:func:`kinoray.control.live.set_simulcast_status`); Mux's ``error_severity`` (``normal``: retried, ``fatal``:
not) is kept beside it while a target is ``errored``. A plain nullable ``ADD COLUMN`` on both backends; the
downgrade drops it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("simulcast_targets", sa.Column("error_severity", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("simulcast_targets", "error_severity")
