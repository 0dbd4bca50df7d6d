"""Loading one row by its public id, the same way for every resource."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.errors import NotFoundError
from kinoray.store.models import Base, is_valid_id

__all__ = ["find", "not_found", "require_id"]

M = TypeVar("M", bound=Base)


def find(session: Session, model: type[M], row_id: str, *, what: str, for_update: bool = False,
         options: Iterable[Any] = ()) -> M:
    """The ``model`` row with id ``row_id`` (locked ``FOR UPDATE`` if asked), or ``NotFoundError`` naming it as
    ``what`` — also for strings that cannot be ids of ours, so no path, dot or slash ever reaches a query or a
    storage key."""
    require_id(row_id, what=what)
    query = sa.select(model).where(model.__table__.c.id == row_id).options(*options)
    if for_update:
        query = query.with_for_update()
    row = session.scalars(query).unique().one_or_none()  # unique(): options may join a collection
    if row is None:
        raise not_found(row_id, what=what)
    return row


def require_id(row_id: str, *, what: str) -> None:
    """``NotFoundError`` naming ``what`` for a string that cannot be an id of ours (before any query sees it)."""
    if not is_valid_id(row_id):
        raise not_found(row_id[:80], what=what)


def not_found(row_id: str, *, what: str) -> NotFoundError:
    """The error for a ``what`` with id ``row_id`` that is not there (for the caller)."""
    return NotFoundError(f"no {what} {row_id!r}")
