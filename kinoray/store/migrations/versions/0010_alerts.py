"""Mux Data alerts (issue 16): ``alert_rules`` and ``data_incidents``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

- ``alert_rules``: threshold and anomaly rules over the analytics (:mod:`kinoray.control.alerts`).
- ``data_incidents``: what a rule opened, per incident key, until it recovers; deleted with the rule
  (``ON DELETE CASCADE``). Indexed by (rule, status) for the evaluator and (started_at, id) for the list.

Plain ``CREATE TABLE`` on both backends; the downgrade drops them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("measurement", sa.String(length=16), nullable=True),
        sa.Column("filters", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("comparison", sa.String(length=8), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("min_views", sa.Integer(), nullable=False),
        sa.Column("dimensions", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_value", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('threshold', 'anomaly')", name=op.f("ck_alert_rules_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    op.create_index("ix_alert_rules_created_at_id", "alert_rules", ["created_at", "id"])
    op.create_table(
        "data_incidents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("incident_key", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("measurement", sa.String(length=16), nullable=False),
        sa.Column("breakdowns", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("baseline", sa.Double(), nullable=True),
        sa.Column("measured_value", sa.Double(), nullable=True),
        sa.Column("measured_value_on_close", sa.Double(), nullable=True),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_data_incidents_status")),
        sa.ForeignKeyConstraint(["rule_id"], ["alert_rules.id"], ondelete="CASCADE",
                                name=op.f("fk_data_incidents_rule_id_alert_rules")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_incidents")),
    )
    op.create_index("ix_data_incidents_rule_id_status", "data_incidents", ["rule_id", "status"])
    op.create_index("ix_data_incidents_started_at_id", "data_incidents", ["started_at", "id"])


def downgrade() -> None:
    op.drop_table("data_incidents")
    op.drop_table("alert_rules")
