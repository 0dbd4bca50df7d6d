"""Initial schema: assets, playback ids, uploads, jobs, access tokens, signing keys, idempotency keys, events,
webhook endpoints and the webhook delivery outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written to match ``kinoray/store/models.py`` as of this revision (``tests/test_db.py`` compares the migrated
schema with the models on SQLite and PostgreSQL). Status columns are VARCHAR with a CHECK constraint, not
native enums, so adding a value later is a constraint change on both backends.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _id(name: str = "id") -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), nullable=False)


def _time(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, nullable: bool) -> sa.Column[Any]:
    return sa.Column(name, sa.JSON(none_as_null=True), nullable=nullable)


def _one_of(column: str, *values: str) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    op.create_table(
        "access_tokens",
        _id(),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("environment", sa.String(length=64), nullable=False),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        _time("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_tokens")),
    )

    op.create_table(
        "assets",
        _id(),
        sa.Column("status", sa.String(length=16), nullable=False),
        _json("errors", nullable=True),
        sa.Column("passthrough", sa.String(length=255), nullable=True),
        _json("meta", nullable=False),
        sa.Column("input_url", sa.Text(), nullable=True),
        _json("create_settings", nullable=False),
        sa.Column("storage_prefix", sa.String(length=512), nullable=True),
        sa.Column("duration", sa.Double(), nullable=True),
        sa.Column("aspect_ratio", sa.String(length=16), nullable=True),
        sa.Column("resolution_tier", sa.String(length=16), nullable=True),
        sa.Column("max_stored_frame_rate", sa.Double(), nullable=True),
        sa.Column("video_codec", sa.String(length=16), nullable=True),
        sa.Column("encoder_backend", sa.String(length=32), nullable=True),
        _json("tracks", nullable=False),
        _json("static_renditions", nullable=True),
        sa.Column("progress_state", sa.String(length=16), nullable=False),
        sa.Column("progress_fraction", sa.Double(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.CheckConstraint(_one_of("status", "preparing", "ready", "errored"), name=op.f("ck_assets_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assets")),
    )
    op.create_index("ix_assets_created_at_id", "assets", ["created_at", "id"])

    op.create_table(
        "events",
        _id(),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        _json("payload", nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_created_at_id", "events", ["created_at", "id"])
    op.create_index("ix_events_object_type_object_id_created_at", "events",
                    ["object_type", "object_id", "created_at"])

    op.create_table(
        "signing_keys",
        _id(),
        sa.Column("public_key", sa.Text(), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
    )
    op.create_index("ix_signing_keys_created_at_id", "signing_keys", ["created_at", "id"])

    op.create_table(
        "webhook_endpoints",
        _id(),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index("ix_webhook_endpoints_created_at_id", "webhook_endpoints", ["created_at", "id"])

    op.create_table(
        "idempotency_keys",
        _id("token_id"),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        _json("response_body", nullable=True),
        _time("created_at"),
        sa.ForeignKeyConstraint(["token_id"], ["access_tokens.id"], ondelete="CASCADE",
                                name=op.f("fk_idempotency_keys_token_id_access_tokens")),
        sa.PrimaryKeyConstraint("token_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])

    op.create_table(
        "jobs",
        _id("job_id"),
        _id("asset_id"),
        _json("options", nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("chunks_total", sa.Integer(), nullable=False),
        sa.Column("chunks_done", sa.Integer(), nullable=False),
        sa.Column("frames_total", sa.BigInteger(), nullable=False),
        sa.Column("frames_done", sa.BigInteger(), nullable=False),
        sa.Column("duration_seconds", sa.Double(), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.Column("encoder", sa.String(length=32), nullable=True),
        sa.Column("fallback_from", sa.String(length=32), nullable=True),
        sa.Column("fallback_reason", sa.Text(), nullable=True),
        _json("decoders", nullable=False),
        _json("scalers", nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        # JobRecord's times: epoch seconds, so a record round-trips exactly.
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("encode_started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.CheckConstraint(_one_of("state", "queued", "planning", "encoding", "packaging", "ready", "errored",
                                   "cancelled"), name=op.f("ck_jobs_state")),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], ondelete="CASCADE",
                                name=op.f("fk_jobs_asset_id_assets")),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_asset_id_created_at", "jobs", ["asset_id", "created_at"])
    op.create_index("ix_jobs_state_updated_at", "jobs", ["state", "updated_at"])

    op.create_table(
        "playback_ids",
        _id(),
        _id("asset_id"),
        sa.Column("policy", sa.String(length=16), nullable=False),
        _time("created_at"),
        sa.CheckConstraint(_one_of("policy", "public", "signed"), name=op.f("ck_playback_ids_policy")),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], ondelete="CASCADE",
                                name=op.f("fk_playback_ids_asset_id_assets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playback_ids")),
    )
    op.create_index("ix_playback_ids_asset_id_created_at", "playback_ids", ["asset_id", "created_at"])

    op.create_table(
        "uploads",
        _id(),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cors_origin", sa.Text(), nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        _json("new_asset_settings", nullable=False),
        sa.Column("asset_id", sa.String(length=64), nullable=True),
        _json("error", nullable=True),
        sa.Column("upload_length", sa.BigInteger(), nullable=True),
        sa.Column("upload_offset", sa.BigInteger(), nullable=False),
        _json("upload_metadata", nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=True),
        _json("part_checksums", nullable=True),
        _time("expires_at"),
        _time("created_at"),
        _time("updated_at"),
        sa.CheckConstraint(_one_of("status", "waiting", "asset_created", "errored", "cancelled", "timed_out"),
                           name=op.f("ck_uploads_status")),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], ondelete="SET NULL",
                                name=op.f("fk_uploads_asset_id_assets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    op.create_index("ix_uploads_created_at_id", "uploads", ["created_at", "id"])
    op.create_index("ix_uploads_status_expires_at", "uploads", ["status", "expires_at"])
    op.create_index("ix_uploads_asset_id", "uploads", ["asset_id"])

    op.create_table(
        "webhook_deliveries",
        _id(),
        _id("endpoint_id"),
        _id("event_id"),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        _json("payload", nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at", nullable=True),
        _time("delivered_at", nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _time("created_at"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"], ondelete="CASCADE",
                                name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints")),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], ondelete="CASCADE",
                                name=op.f("fk_webhook_deliveries_event_id_events")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("endpoint_id", "event_id", name=op.f("uq_webhook_deliveries_endpoint_id_event_id")),
    )
    op.create_index("ix_webhook_deliveries_next_attempt_at", "webhook_deliveries", ["next_attempt_at"])
    op.create_index("ix_webhook_deliveries_endpoint_id_created_at", "webhook_deliveries",
                    ["endpoint_id", "created_at"])
    op.create_index("ix_webhook_deliveries_event_id", "webhook_deliveries", ["event_id"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes.
    for table in ("webhook_deliveries", "uploads", "playback_ids", "jobs", "idempotency_keys", "webhook_endpoints",
                  "signing_keys", "events", "assets", "access_tokens"):
        op.drop_table(table)
