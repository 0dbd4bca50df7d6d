"""Live chat (issue 17): ``chat_messages``, one room per live stream.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

A message belongs to a live stream and goes with it (``ON DELETE CASCADE``). Indexed by (stream, updated_at),
which the rooms read to follow new and deleted messages, and (stream, created_at) for the history and the list.
Plain ``CREATE TABLE`` on both backends; the downgrade drops it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("live_stream_id", sa.String(length=64), nullable=False),
        sa.Column("viewer_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["live_stream_id"], ["live_streams.id"], ondelete="CASCADE",
                                name=op.f("fk_chat_messages_live_stream_id_live_streams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
    )
    op.create_index("ix_chat_messages_live_stream_id_updated_at", "chat_messages", ["live_stream_id", "updated_at"])
    op.create_index("ix_chat_messages_live_stream_id_created_at", "chat_messages", ["live_stream_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_chat_messages_live_stream_id_created_at", table_name="chat_messages")
    op.drop_index("ix_chat_messages_live_stream_id_updated_at", table_name="chat_messages")
    op.drop_table("chat_messages")
