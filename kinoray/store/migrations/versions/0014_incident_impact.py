"""Incident impact (issue 16): how many views a Data incident affects.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

``data_incidents`` gains Mux's ``Incident`` impact fields (:mod:`kinoray.control.alerts`):

- ``affected_views_per_hour_on_open`` / ``affected_views_per_hour``: the rate of views the incident covers, when it
  opened / at the last evaluation (views of the window, or of the detector's buckets, scaled to an hour);
- ``affected_views``: that rate integrated over the incident's life so far (an estimate: a double, shown rounded).

Plain ``ADD COLUMN`` (nullable: incidents opened before this revision have no figure) on SQLite and PostgreSQL;
the downgrade drops them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_COLUMNS = ("affected_views_per_hour_on_open", "affected_views_per_hour", "affected_views")


def upgrade() -> None:
    op.add_column("data_incidents", sa.Column("affected_views_per_hour_on_open", sa.Integer(), nullable=True))
    op.add_column("data_incidents", sa.Column("affected_views_per_hour", sa.Integer(), nullable=True))
    op.add_column("data_incidents", sa.Column("affected_views", sa.Double(), nullable=True))


def downgrade() -> None:
    for column in reversed(_COLUMNS):
        op.drop_column("data_incidents", column)
