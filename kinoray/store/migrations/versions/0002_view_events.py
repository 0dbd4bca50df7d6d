"""Player analytics: the ``view_events`` table that ``POST /data/v1/events`` fills.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Written to match ``ViewEvent`` in ``kinoray/store/models.py`` (``tests/test_db.py`` compares the migrated
schema with the models on SQLite and PostgreSQL). The id is BIGINT on PostgreSQL and INTEGER on SQLite, where
only ``INTEGER PRIMARY KEY`` auto-increments.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _text(name: str, length: int, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _int(name: str, big: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger() if big else sa.Integer(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "view_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        _text("event_type", 32, nullable=False),
        _text("view_id", 64, nullable=False),
        _text("session_id", 64, nullable=False),
        _text("playback_id", 64, nullable=False),
        _int("sequence"),
        sa.Column("viewer_time", sa.BigInteger(), nullable=False),
        sa.Column("playback_time", sa.BigInteger(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        _text("player_name", 64),
        _text("player_version", 64),
        _text("player_software", 64),
        _text("player_software_version", 64),
        _int("player_width"),
        _int("player_height"),
        _text("browser", 64),
        _text("browser_version", 64),
        _text("os", 64),
        _text("os_version", 64),
        _text("page_url", 1024),
        _int("rendition_width"),
        _int("rendition_height"),
        _int("rendition_bitrate", big=True),
        _text("rendition_codec", 128),
        _int("error_code"),
        _text("error_type", 64),
        _text("error_message", 1024),
        _text("error_context", 1024),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_view_events")),
    )
    op.create_index("ix_view_events_playback_id_viewer_time", "view_events", ["playback_id", "viewer_time"])
    op.create_index("ix_view_events_view_id", "view_events", ["view_id"])


def downgrade() -> None:
    op.drop_table("view_events")  # its indexes go with it
