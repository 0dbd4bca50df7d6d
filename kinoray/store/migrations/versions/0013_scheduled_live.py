"""Live ingest (issue 17): scheduled streams and the active ingest protocol on ``live_streams``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

``scheduled_start`` / ``scheduled_end`` bound when a live stream's key is accepted (kinoray's scheduled streams,
``kinoray_scheduled_start`` / ``kinoray_scheduled_end`` in the API); ``active_ingest_protocol`` is Mux's field
(``rtmp``, ``rtmps``) of the running session. Nullable columns, plain ``ADD COLUMN`` on SQLite and PostgreSQL;
the downgrade drops them (SQLite drops unconstrained columns in place). ``tests/test_db.py`` compares the
migrated schema with the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_COLUMNS = ("scheduled_start", "scheduled_end", "active_ingest_protocol")


def upgrade() -> None:
    op.add_column("live_streams", sa.Column("scheduled_start", sa.DateTime(timezone=True), nullable=True))
    op.add_column("live_streams", sa.Column("scheduled_end", sa.DateTime(timezone=True), nullable=True))
    op.add_column("live_streams", sa.Column("active_ingest_protocol", sa.String(length=16), nullable=True))


def downgrade() -> None:
    for column in reversed(_COLUMNS):
        op.drop_column("live_streams", column)
