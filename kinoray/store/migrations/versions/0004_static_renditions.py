"""Static renditions as rows, the legacy mp4_support setting, and master access (issue 15).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

- ``static_renditions``: one row per MP4/M4A of an asset (unique ``(asset_id, name)``), with its Mux fields
  and a work lease (``owner``, ``lease_expires_at``, ``attempts``) the runner claims it under; index
  ``(status, lease_expires_at)`` for the claim. Rows go with their asset (``ON DELETE CASCADE``).
- ``assets``: ``mp4_support`` (the legacy switch as last set), ``master_access``, ``master_status``,
  ``master_url``, ``master_token`` (unique index: the edge looks the download up by it) and
  ``master_expires_at`` (index: the runner's expiry sweep).
- The old ``assets.static_renditions`` JSON (``{"status", "files": [...]}``) is turned into rows, then dropped
  (SQLite ≥ 3.35 drops an unindexed, unconstrained column in place). The downgrade writes the rows back into the
  JSON column before dropping the table.

``tests/test_db.py`` compares the migrated schema with the models on SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_STATUSES = ("preparing", "ready", "skipped", "errored")
_ALPHABET = string.ascii_letters + string.digits

_assets = sa.table("assets", sa.column("id", sa.String), sa.column("static_renditions", sa.JSON(none_as_null=True)))
_renditions = sa.table(
    "static_renditions", sa.column("id", sa.String), sa.column("asset_id", sa.String), sa.column("name", sa.String),
    sa.column("resolution", sa.String), sa.column("legacy", sa.Boolean), sa.column("status", sa.String),
    sa.column("width", sa.Integer), sa.column("height", sa.Integer), sa.column("bitrate", sa.Integer),
    sa.column("filesize", sa.BigInteger), sa.column("attempts", sa.Integer),
    sa.column("created_at", sa.DateTime(timezone=True)), sa.column("updated_at", sa.DateTime(timezone=True)))


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def upgrade() -> None:
    op.create_table(
        "static_renditions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("asset_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("resolution", sa.String(length=16), nullable=False),
        sa.Column("legacy", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("passthrough", sa.String(length=255), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("bitrate", sa.Integer(), nullable=True),
        sa.Column("filesize", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in _STATUSES)})",
                           name=op.f("ck_static_renditions_status")),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], name=op.f("fk_static_renditions_asset_id_assets"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_static_renditions")),
        sa.UniqueConstraint("asset_id", "name", name=op.f("uq_static_renditions_asset_id_name")),
    )
    op.create_index("ix_static_renditions_status_lease_expires_at", "static_renditions",
                    ["status", "lease_expires_at"])
    op.add_column("assets", sa.Column("mp4_support", sa.String(length=32), nullable=True))
    op.add_column("assets", sa.Column("master_access", sa.String(length=16), server_default="none", nullable=False))
    op.add_column("assets", sa.Column("master_status", sa.String(length=16), nullable=True))
    op.add_column("assets", sa.Column("master_url", sa.Text(), nullable=True))
    op.add_column("assets", sa.Column("master_token", sa.String(length=64), nullable=True))
    op.add_column("assets", sa.Column("master_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_assets_master_token", "assets", ["master_token"], unique=True)
    op.create_index("ix_assets_master_expires_at", "assets", ["master_expires_at"])

    bind = op.get_bind()
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    rows = []
    for asset_id, stored in bind.execute(sa.select(_assets.c.id, _assets.c.static_renditions)
                                         .where(_assets.c.static_renditions.is_not(None))):
        for entry in (stored or {}).get("files") or ():
            name = str(entry.get("name") or "")
            if name not in ("highest.mp4", "audio.m4a"):
                continue
            status = entry.get("status") if entry.get("status") in _STATUSES else "ready"
            rows.append({"id": "".join(secrets.choice(_ALPHABET) for _ in range(32)), "asset_id": asset_id,
                         "name": name, "resolution": "audio-only" if name == "audio.m4a" else "highest",
                         "legacy": False, "status": status, "width": _int(entry.get("width")),
                         "height": _int(entry.get("height")), "bitrate": _int(entry.get("bitrate")),
                         "filesize": _int(entry.get("filesize")), "attempts": 0, "created_at": now,
                         "updated_at": now})
    if rows:
        op.bulk_insert(_renditions, rows)
    op.drop_column("assets", "static_renditions")


def downgrade() -> None:
    op.add_column("assets", sa.Column("static_renditions", sa.JSON(none_as_null=True), nullable=True))
    bind = op.get_bind()
    files: dict[str, list[dict[str, Any]]] = {}
    for row in bind.execute(sa.select(_renditions).order_by(_renditions.c.created_at)).mappings():
        entry = {"name": row["name"], "ext": row["name"].rsplit(".", 1)[-1], "status": row["status"]}
        entry.update({key: row[key] for key in ("width", "height", "bitrate") if row[key] is not None})
        if row["filesize"] is not None:
            entry["filesize"] = str(row["filesize"])
        files.setdefault(row["asset_id"], []).append(entry)
    for asset_id, entries in files.items():
        status = "preparing" if any(e["status"] == "preparing" for e in entries) else "ready"
        bind.execute(sa.update(_assets).where(_assets.c.id == asset_id)
                     .values(static_renditions={"status": status, "files": entries}))
    op.drop_index("ix_assets_master_expires_at", table_name="assets")
    op.drop_index("ix_assets_master_token", table_name="assets")
    for column in ("master_expires_at", "master_token", "master_url", "master_status", "master_access",
                   "mp4_support"):
        op.drop_column("assets", column)
    op.drop_index("ix_static_renditions_status_lease_expires_at", table_name="static_renditions")
    op.drop_table("static_renditions")
