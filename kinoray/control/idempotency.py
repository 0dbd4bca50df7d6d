"""``Idempotency-Key`` on POST: the first response to a (token, key) is stored and replayed to every retry with
the same request; the same key with a different request is refused.

A key is claimed before the handler runs (a row with no response yet), so two concurrent retries cannot both
create the resource: the second gets ``idempotency_key_in_use`` (409) until the first has answered. Failed
requests release their key, so a client may retry after fixing the cause. Keys expire after
``api.idempotency_hours``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from kinoray.errors import IdempotencyInProgressError, IdempotencyKeyReusedError, InvalidParametersError
from kinoray.store.db import Database
from kinoray.store.models import IdempotencyKey, utcnow

__all__ = ["MAX_KEY_LENGTH", "StoredResponse", "claim", "release", "remember", "sweep"]

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidParametersError(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters")


def claim(db: Database, token_id: str, key: str, fingerprint: str, ttl: timedelta) -> StoredResponse | None:
    """Claim ``key`` for a new request (``None``: run it), or the stored response to replay.

    Raises ``IdempotencyKeyReusedError`` when the key was used for another request and
    ``IdempotencyInProgressError`` while the first request with it is still running."""
    _check_key(key)
    with db.session() as session:
        row = session.get(IdempotencyKey, (token_id, key))
        if row is not None and row.created_at < utcnow() - ttl:
            session.delete(row)
            session.flush()
            row = None
        if row is None:
            try:
                with session.begin_nested():
                    session.add(IdempotencyKey(token_id=token_id, key=key, request_hash=fingerprint))
                return None
            except IntegrityError:
                row = session.get(IdempotencyKey, (token_id, key), populate_existing=True)
                if row is None:  # claimed and released meanwhile: let the client retry
                    raise IdempotencyInProgressError("a request with this Idempotency-Key is in progress") from None
        if row.request_hash != fingerprint:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was used with a different request; use a new key for a new request")
        if row.response_status is None:
            raise IdempotencyInProgressError("a request with this Idempotency-Key is in progress")
        return StoredResponse(row.response_status, row.response_body)


def remember(db: Database, token_id: str, key: str, status: int, body: Any) -> None:
    """Store the response of the request that claimed ``key``."""
    with db.session() as session:
        session.execute(sa.update(IdempotencyKey)
                        .where(IdempotencyKey.token_id == token_id, IdempotencyKey.key == key)
                        .values(response_status=status, response_body=body))


def release(db: Database, token_id: str, key: str) -> None:
    """Forget a claim whose request failed."""
    with db.session() as session:
        session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.token_id == token_id,
                                                        IdempotencyKey.key == key))


def sweep(db: Database, ttl: timedelta) -> int:
    """Delete expired keys; returns how many."""
    with db.session() as session:
        result = session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - ttl))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
