"""Live streams (issue 17): ``live_streams``, ``live_stream_playback_ids``, ``simulcast_targets`` and
``assets.live_stream_id``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

- ``live_streams``: Mux's live stream settings, a SHA-256 of its stream key (unique index: ingest finds the
  stream by it) and the state of its ingest session and recording (:mod:`kinoray.control.live`).
- ``live_stream_playback_ids``: a live stream's playback ids, in their own table so ``playback_ids.asset_id``
  stays non-null for every asset playback id; ids are random across both tables.
- ``simulcast_targets``: where a live stream is pushed on to.
- ``assets.live_stream_id``: the live stream an asset records (Mux's field), a plain indexed column: a
  recording outlives its live stream.

Plain ``CREATE TABLE`` / ``ADD COLUMN`` on both backends; the downgrade drops them (SQLite drops the column
after its index). ``tests/test_db.py`` compares the migrated schema with the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "live_streams",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stream_key_hash", sa.String(length=64), nullable=False),
        sa.Column("latency_mode", sa.String(length=16), nullable=False),
        sa.Column("reconnect_window", sa.Double(), nullable=False),
        sa.Column("max_continuous_duration", sa.Integer(), nullable=False),
        sa.Column("use_slate_for_standard_latency", sa.Boolean(), nullable=False),
        sa.Column("reconnect_slate_url", sa.Text(), nullable=True),
        sa.Column("new_asset_settings", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("passthrough", sa.String(length=255), nullable=True),
        sa.Column("audio_only", sa.Boolean(), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("meta", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("active_asset_id", sa.String(length=64), nullable=True),
        sa.Column("recent_asset_ids", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("session_state", sa.String(length=16), nullable=False),
        sa.Column("session_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disconnected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recording_parts", sa.Integer(), nullable=False),
        sa.Column("complete_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('idle', 'active', 'disabled')", name=op.f("ck_live_streams_status")),
        sa.CheckConstraint("latency_mode IN ('standard', 'reduced', 'low')", name=op.f("ck_live_streams_latency_mode")),
        sa.CheckConstraint("session_state IN ('none', 'connected', 'recording', 'disconnected')",
                           name=op.f("ck_live_streams_session_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_live_streams")),
    )
    op.create_index("ix_live_streams_created_at_id", "live_streams", ["created_at", "id"])
    op.create_index("ix_live_streams_stream_key_hash", "live_streams", ["stream_key_hash"], unique=True)
    op.create_index("ix_live_streams_session_state", "live_streams", ["session_state"])
    op.create_table(
        "live_stream_playback_ids",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("live_stream_id", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("policy IN ('public', 'signed')", name=op.f("ck_live_stream_playback_ids_policy")),
        sa.ForeignKeyConstraint(["live_stream_id"], ["live_streams.id"], ondelete="CASCADE",
                                name=op.f("fk_live_stream_playback_ids_live_stream_id_live_streams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_live_stream_playback_ids")),
    )
    op.create_index("ix_live_stream_playback_ids_live_stream_id_created_at", "live_stream_playback_ids",
                    ["live_stream_id", "created_at"])
    op.create_table(
        "simulcast_targets",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("live_stream_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("stream_key", sa.Text(), nullable=True),
        sa.Column("passthrough", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('idle', 'starting', 'broadcasting', 'errored')",
                           name=op.f("ck_simulcast_targets_status")),
        sa.ForeignKeyConstraint(["live_stream_id"], ["live_streams.id"], ondelete="CASCADE",
                                name=op.f("fk_simulcast_targets_live_stream_id_live_streams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_simulcast_targets")),
    )
    op.create_index("ix_simulcast_targets_live_stream_id_created_at", "simulcast_targets",
                    ["live_stream_id", "created_at"])
    op.add_column("assets", sa.Column("live_stream_id", sa.String(length=64), nullable=True))
    op.create_index("ix_assets_live_stream_id", "assets", ["live_stream_id"])


def downgrade() -> None:
    op.drop_index("ix_assets_live_stream_id", table_name="assets")
    op.drop_column("assets", "live_stream_id")
    op.drop_index("ix_simulcast_targets_live_stream_id_created_at", table_name="simulcast_targets")
    op.drop_table("simulcast_targets")
    op.drop_index("ix_live_stream_playback_ids_live_stream_id_created_at", table_name="live_stream_playback_ids")
    op.drop_table("live_stream_playback_ids")
    for index in ("ix_live_streams_session_state", "ix_live_streams_stream_key_hash", "ix_live_streams_created_at_id"):
        op.drop_index(index, table_name="live_streams")
    op.drop_table("live_streams")
