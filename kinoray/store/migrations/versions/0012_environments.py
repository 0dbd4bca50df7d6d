"""Environments that isolate data (issue 15): ``environments``, and ``environment_id`` on every scoped table.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

The default environment (id ``default``) is created, and every existing row and token belongs to it (the new
columns' server default). Access tokens named their environment by a free-form ``environment`` string (always
``default`` unless set by hand): each other name becomes an environment of its own, and the column is replaced by
``environment_id`` (a foreign key; SQLite rebuilds the table in batch mode). The scoped resource tables get a
plain ``environment_id`` (no foreign key, like events: an environment is deleted only once it holds nothing)
and the lists' ``(environment_id, created_at, id)`` index. The downgrade puts the token's environment name
back and drops the rest.
"""

from __future__ import annotations

import secrets
import string

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

DEFAULT = "default"
#: Tables whose rows belong to an environment, and whether their lists need the (environment, newest) index.
SCOPED = {"assets": True, "uploads": True, "live_streams": True, "signing_keys": True,
          "playback_restrictions": True, "webhook_endpoints": True, "events": False, "delivery_usage": False,
          "alert_rules": False}
_ENV_KEY_ALPHABET = string.ascii_lowercase + string.digits


def _env_key() -> str:
    return "".join(secrets.choice(_ENV_KEY_ALPHABET) for _ in range(26))


def upgrade() -> None:
    environments = op.create_table(
        "environments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("env_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
    )
    op.create_index("ix_environments_name", "environments", ["name"], unique=True)
    op.create_index("ix_environments_env_key", "environments", ["env_key"], unique=True)
    op.create_index("ix_environments_created_at_id", "environments", ["created_at", "id"])
    connection = op.get_bind()
    now = sa.func.current_timestamp()
    names = [DEFAULT, *sorted(name for name in connection.scalars(sa.text(
        "SELECT DISTINCT environment FROM access_tokens WHERE environment IS NOT NULL")) if name != DEFAULT)]
    ids = {name: DEFAULT if name == DEFAULT else secrets.token_hex(16) for name in names}
    for name in names:
        connection.execute(environments.insert().values(id=ids[name], name=name, env_key=_env_key(), created_at=now))

    for table, indexed in SCOPED.items():
        op.add_column(table, sa.Column("environment_id", sa.String(length=64), nullable=False,
                                       server_default=sa.text(f"'{DEFAULT}'")))
        if indexed:
            op.create_index(f"ix_{table}_environment_id_created_at_id", table,
                            ["environment_id", "created_at", "id"])

    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("environment_id", sa.String(length=64), nullable=False,
                                   server_default=sa.text(f"'{DEFAULT}'")))
    for name, environment_id in ids.items():
        if name != DEFAULT:
            connection.execute(sa.text("UPDATE access_tokens SET environment_id = :id WHERE environment = :name"),
                               {"id": environment_id, "name": name})
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_column("environment")
        batch.create_foreign_key(op.f("fk_access_tokens_environment_id_environments"), "environments",
                                 ["environment_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_constraint(op.f("fk_access_tokens_environment_id_environments"), type_="foreignkey")
        batch.add_column(sa.Column("environment", sa.String(length=64), nullable=False,
                                   server_default=sa.text(f"'{DEFAULT}'")))
    op.execute("UPDATE access_tokens SET environment = (SELECT name FROM environments "
               "WHERE environments.id = access_tokens.environment_id)")
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_column("environment_id")
    for table, indexed in reversed(SCOPED.items()):
        if indexed:
            op.drop_index(f"ix_{table}_environment_id_created_at_id", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("environment_id")
    op.drop_index("ix_environments_created_at_id", table_name="environments")
    op.drop_index("ix_environments_env_key", table_name="environments")
    op.drop_index("ix_environments_name", table_name="environments")
    op.drop_table("environments")
