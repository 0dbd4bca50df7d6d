"""Clips and test assets (issue 15): ``assets.source_asset_id`` and ``assets.expires_at``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

``source_asset_id`` is Mux's field on a clip (``mux://assets/{id}`` input): the asset it was cut from, a plain
column rather than a foreign key, because a clip outlives its source. ``expires_at`` is when the runner deletes
the asset (test assets, 24 h by default), indexed for the runner's "expired assets" query. Plain
``ADD COLUMN`` on both backends; the downgrade drops the index, then the columns (nullable, unconstrained:
SQLite drops them in place). ``tests/test_db.py`` compares the migrated schema with the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("assets", sa.Column("source_asset_id", sa.String(length=64), nullable=True))
    op.add_column("assets", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_assets_expires_at", "assets", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_assets_expires_at", table_name="assets")
    for column in ("expires_at", "source_asset_id"):
        op.drop_column("assets", column)
