"""Playback restrictions, delivery usage and access-token permissions (issue 15).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

- ``playback_restrictions``: Mux's referrer and user-agent rules, named by a signed token's
  ``playback_restriction_id`` claim (:mod:`kinoray.control.restrictions`).
- ``delivery_usage``: seconds and bytes the edge delivered per asset, UTC hour and resolution tier, summed by an
  upsert from every edge process (:mod:`kinoray.control.usage`); no foreign key, usage outlives its asset.
- ``access_tokens.permissions``: per-product ``read``/``full`` (:mod:`kinoray.control.permissions`); existing
  tokens get NULL, which means full access, so they keep working as before.

Plain ``CREATE TABLE`` / ``ADD COLUMN`` on both backends; the downgrade drops them (SQLite ≥ 3.35 drops an
unindexed, unconstrained column in place). ``tests/test_db.py`` compares the migrated schema with the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "playback_restrictions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("allowed_domains", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("allow_no_referrer", sa.Boolean(), nullable=False),
        sa.Column("allow_no_user_agent", sa.Boolean(), nullable=False),
        sa.Column("allow_high_risk_user_agent", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playback_restrictions")),
    )
    op.create_index("ix_playback_restrictions_created_at_id", "playback_restrictions", ["created_at", "id"])
    op.create_table(
        "delivery_usage",
        sa.Column("asset_id", sa.String(length=64), nullable=False),
        sa.Column("hour_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("delivered_seconds", sa.Double(), nullable=False),
        sa.Column("delivered_bytes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("tier IN ('audio-only', '720p', '1080p', '1440p', '2160p')",
                           name=op.f("ck_delivery_usage_tier")),
        sa.PrimaryKeyConstraint("asset_id", "hour_start", "tier", name=op.f("pk_delivery_usage")),
    )
    op.create_index("ix_delivery_usage_hour_start", "delivery_usage", ["hour_start"])
    op.add_column("access_tokens", sa.Column("permissions", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    op.drop_column("access_tokens", "permissions")
    op.drop_index("ix_delivery_usage_hour_start", table_name="delivery_usage")
    op.drop_table("delivery_usage")
    op.drop_index("ix_playback_restrictions_created_at_id", table_name="playback_restrictions")
    op.drop_table("playback_restrictions")
