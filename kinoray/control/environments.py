"""Environments (Mux's): partitions of the data, each with its own assets, uploads, live streams, signing keys,
playback restrictions, webhook endpoints, events, Data views, delivery usage and access tokens.

Isolation itself is not here: :mod:`kinoray.store.scoping` adds the environment predicate to every query of a
session opened for a token. This module manages the environments: ``/system/v1/environments`` and
``kinoray environment``. Environments are the deployment's, so every admin token (``system=full``) lists them
(ids, names and Data env keys, which are public anyway: they are in every player's page), but sees into none but
its own. A new environment comes with its first access token (full access), shown once to its creator: that is
the only way in. An environment is deleted only when it holds nothing and no live token (``409`` otherwise), and
never the default one nor the caller's own.

Data views name their environment by the beacon's ``env_key`` (Mux Data's SDKs send it): a Data query is kept
inside the caller's environment by :func:`data_filters`; a view without a known key counts in the default one.
The daily view exports split a day's views by the same rule (:func:`environment_keys`).
"""

from __future__ import annotations

import secrets
import string
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.control.auth import new_token
from kinoray.control.lookup import find
from kinoray.control.views import EnvironmentView, NewEnvironmentView
from kinoray.errors import ConflictError, InvalidParametersError
from kinoray.store.db import newest_first
from kinoray.store.models import DEFAULT_ENVIRONMENT_ID, AccessToken, Environment, EnvironmentScoped, new_id

__all__ = ["create_environment", "data_filters", "delete_environment", "environment_keys", "environment_view",
           "get_environment", "list_environments", "new_env_key", "new_environment", "rename_environment"]

_ENV_KEY_ALPHABET = string.ascii_lowercase + string.digits
_NAME_MAX = 255


def new_env_key() -> str:
    """A Mux Data environment key: 26 random lowercase letters and digits."""
    return "".join(secrets.choice(_ENV_KEY_ALPHABET) for _ in range(26))


def _check_name(session: Session, name: str, environment_id: str | None = None) -> str:
    name = name.strip()
    if not name or len(name) > _NAME_MAX:
        raise InvalidParametersError(f"an environment name is 1 to {_NAME_MAX} characters")
    taken = session.scalar(sa.select(Environment.id).where(Environment.name == name))
    if taken is not None and taken != environment_id:
        raise ConflictError(f"an environment named {name!r} exists")
    return name


def create_environment(session: Session, name: str, env_key: str | None = None) -> Environment:
    """A new environment (empty). ``env_key`` defaults to a fresh one.

    Raises:
        InvalidParametersError: a bad name or key.
        ConflictError: the name or key is taken.
    """
    name = _check_name(session, name)
    env_key = env_key or new_env_key()
    if not 1 <= len(env_key) <= 64 or not env_key.isalnum():
        raise InvalidParametersError("env_key: 1 to 64 letters and digits")
    if session.scalar(sa.select(Environment.id).where(Environment.env_key == env_key)) is not None:
        raise ConflictError("that env_key belongs to another environment")
    environment = Environment(id=new_id(), name=name, env_key=env_key)
    session.add(environment)
    session.flush()
    return environment


def new_environment(session: Session, name: str, env_key: str | None = None) -> NewEnvironmentView:
    """``POST /system/v1/environments``: the environment and its first token (full access), secret shown once."""
    environment = create_environment(session, name, env_key)
    token = new_token(session, name=f"first token of {environment.name}", environment_id=environment.id)
    return NewEnvironmentView(**environment_view(environment).model_dump(), access_token=token)


def get_environment(session: Session, environment_id: str) -> Environment:
    """The environment, or ``NotFoundError``."""
    return find(session, Environment, environment_id, what="environment")


def list_environments(session: Session, *, limit: int, cursor: str | None = None, page: int = 1
                      ) -> tuple[list[Environment], str | None]:
    """One page of environments, newest first, and the next page's cursor."""
    try:
        return newest_first(session, Environment, limit=limit, cursor=cursor, page=page)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def rename_environment(session: Session, environment_id: str, name: str) -> Environment:
    environment = get_environment(session, environment_id)
    environment.name = _check_name(session, name, environment_id)
    return environment


def delete_environment(session: Session, environment_id: str, *, caller_environment_id: str | None) -> None:
    """Delete an empty environment and its revoked tokens.

    Raises:
        NotFoundError: no such environment.
        ConflictError: the default environment, the caller's own, or one holding rows or a live token.
    """
    environment = get_environment(session, environment_id)
    if environment.id in (DEFAULT_ENVIRONMENT_ID, caller_environment_id):
        raise ConflictError("the default environment and the caller's own cannot be deleted")
    # Another environment's rows are out of a scoped session's sight: count them unscoped, in this transaction.
    for model in EnvironmentScoped.__subclasses__():
        table = model.__table__  # type: ignore[attr-defined]
        if session.execute(sa.select(table.c.environment_id).where(table.c.environment_id == environment.id)
                           .limit(1)).first() is not None:
            raise ConflictError(f"environment {environment.id} still holds {table.name}: delete them first")
    tokens = cast(sa.Table, AccessToken.__table__)
    if session.execute(sa.select(tokens.c.id).where(tokens.c.environment_id == environment.id,
                                                    tokens.c.revoked_at.is_(None)).limit(1)).first() is not None:
        raise ConflictError(f"environment {environment.id} has access tokens not revoked: revoke them first")
    session.execute(sa.delete(tokens).where(tokens.c.environment_id == environment.id))
    session.delete(environment)


def environment_view(environment: Environment) -> EnvironmentView:
    return EnvironmentView(id=environment.id, name=environment.name, env_key=environment.env_key,
                           created_at=str(int(environment.created_at.timestamp())))


def data_filters(session: Session, environment_id: str) -> tuple[tuple[str, bool], ...]:
    """What keeps a Data query inside ``environment_id``, as ``(env_key, negated)`` filters on the views'
    ``env_key`` dimension: its own key; for the default environment, every other environment's key negated
    (so views without a key, or with a key no environment has, count in the default one)."""
    if environment_id != DEFAULT_ENVIRONMENT_ID:
        key = session.scalar(sa.select(Environment.env_key).where(Environment.id == environment_id))
        return ((key or environment_id, False),)
    others = session.scalars(sa.select(Environment.env_key).where(Environment.id != DEFAULT_ENVIRONMENT_ID)
                             .order_by(Environment.env_key))
    return tuple((key, True) for key in others)


def environment_keys(session: Session) -> dict[str, str]:
    """Every environment's id by its Data env key: which environment a view that sent a key is in (one with no
    key, or a key not here, is the default environment's, as :func:`data_filters` counts it)."""
    return {key: environment_id for environment_id, key in session.execute(
        sa.select(Environment.id, Environment.env_key))}
