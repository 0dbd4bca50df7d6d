"""Access tokens over HTTP Basic: the token id is the user name, the secret the password.

Secrets are stored as scrypt hashes and compared in constant time (:func:`kinoray.store.models.verify_secret`).
Every failure — no header, a malformed one, an unknown id, a wrong secret, a revoked token — is the same
``unauthorized`` error, so the API never tells a caller which part was wrong.

Checking a secret costs an scrypt (tens of milliseconds of CPU) on purpose, so :class:`Authenticator` bounds what
a flood of wrong secrets can cost:

- a secret checked before, right or wrong, is answered from memory (no scrypt);
- failed attempts are counted per client address and per token id (token buckets: ``api.auth_failures_per_second``
  refill, ``api.auth_failure_burst`` size). While a client's or a token id's bucket is empty, credentials not
  already known to be right are refused with ``429`` and Retry-After before any scrypt (a refused attempt costs
  one primary-key read). A legitimate caller whose secret was verified earlier keeps being served during a
  flood on its own token id; other addresses are throttled only on the token id under attack, and only for
  secrets not verified yet;
- the secret is checked outside any database transaction, and ``last_used_at`` is written at most once a minute
  per token in a short transaction of its own, so an authenticated read never holds a write lock.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.control.permissions import FULL_ACCESS, parse_permissions
from kinoray.control.ratelimit import LocalRateLimiter
from kinoray.errors import AuthenticationError, RateLimitedError
from kinoray.settings import ApiSettings
from kinoray.store.db import Database
from kinoray.store.models import AccessToken, is_valid_id, secret_known, utcnow, verify_secret
from kinoray.telemetry import AUTH_THROTTLED

__all__ = ["Authenticator", "TokenInfo", "create_token", "list_tokens", "parse_basic", "revoke_token"]

log = logging.getLogger(__name__)

#: ``last_used_at`` is written at most this often per token, so reads do not turn into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenInfo:
    """The authenticated caller, detached from any session."""

    id: str
    name: str | None
    environment: str
    #: Per-product ``read``/``full`` (:mod:`kinoray.control.permissions`); ``None``: full access to every product.
    permissions: Mapping[str, str] | None = None


def parse_basic(authorization: str | None) -> tuple[str, str]:
    """``(token_id, secret)`` from an ``Authorization: Basic ...`` header; ``AuthenticationError`` otherwise."""
    if not authorization:
        raise AuthenticationError("missing credentials: use HTTP Basic with an access token id and secret")
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise AuthenticationError("unsupported authorization scheme: use HTTP Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed Basic credentials") from None
    token_id, separator, secret = decoded.partition(":")
    if not separator or not token_id or not secret:
        raise AuthenticationError("malformed Basic credentials")
    return token_id, secret


@dataclass(frozen=True)
class _TokenRow:
    """What authentication reads of a token: read in one short read-only transaction."""

    id: str
    name: str | None
    environment: str
    secret_hash: str
    revoked: bool
    last_used_at: datetime | None
    permissions: Mapping[str, str] | None


class Authenticator:
    """Basic credentials → :class:`TokenInfo`, at a bounded cost under a flood (see the module docstring).

    One per process (``Platform.authenticator``); the failure buckets are in-process, like the secret cache."""

    def __init__(self, db: Database, settings: ApiSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        rate, burst = settings.auth_failures_per_second, settings.auth_failure_burst
        self._clients = LocalRateLimiter(rate, burst, clock)  # failed attempts per client address
        self._tokens = LocalRateLimiter(rate, burst, clock)  # failed attempts per token id

    def authenticate(self, authorization: str | None, client: str) -> TokenInfo:
        """The token ``authorization`` proves for a request from ``client`` (an address); ``AuthenticationError``
        when it proves none, ``RateLimitedError`` when ``client`` or the token id failed too often lately and
        the credentials are not already known to be right."""
        token_id, secret = parse_basic(authorization)
        token = self._row(token_id) if is_valid_id(token_id) else None
        known = secret_known(token.secret_hash, secret) if token is not None else None
        if not (known and token is not None and not token.revoked):
            # Everything but known-good credentials draws on the client's bucket, and on the token id's when it
            # names a token, before any scrypt: a draw is returned when the secret turns out right, so the buckets
            # count failures, yet concurrent attempts cannot all pass one last token.
            self._draw(self._clients, client, "client")
            if token is not None:
                try:
                    self._draw(self._tokens, token_id, "token id")
                except RateLimitedError:
                    self._clients.refund(client)
                    raise
            if token is None or token.revoked or known is False or not verify_secret(token.secret_hash, secret):
                raise AuthenticationError("invalid credentials")
            self._clients.refund(client)
            self._tokens.refund(token_id)
        self._touch(token)
        return TokenInfo(id=token.id, name=token.name, environment=token.environment, permissions=token.permissions)

    def _touch(self, token: _TokenRow) -> None:
        now = utcnow()
        if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
            return
        try:
            with self.db.session() as session:
                session.execute(sa.update(AccessToken).where(AccessToken.id == token.id).values(last_used_at=now))
        except sa.exc.OperationalError as error:  # bookkeeping: never the reason a request fails
            log.warning("last_used_at not recorded", extra={"token_id": token.id, "error": str(error)})

    def _row(self, token_id: str) -> _TokenRow | None:
        with self.db.reader() as session:
            token = session.get(AccessToken, token_id)
            if token is None:
                return None
            return _TokenRow(token.id, token.name, token.environment, token.secret_hash, token.revoked,
                             token.last_used_at, dict(token.permissions) if token.permissions is not None else None)

    def _draw(self, buckets: LocalRateLimiter, key: str, who: str) -> None:
        decision = buckets.hit(key)
        if not decision.allowed:
            AUTH_THROTTLED.labels(by=who.replace(" ", "_")).inc()
            raise RateLimitedError(f"too many failed authentications for this {who}: try again in "
                                   f"{max(1, math.ceil(decision.retry_after))} s", decision.retry_after,
                                   decision.limit)


def create_token(session: Session, name: str | None = None, environment: str = "default",
                 permissions: Mapping[str, str] | None = None) -> tuple[TokenInfo, str]:
    """A new access token and its secret (shown once: only its hash is stored). ``permissions``: per product
    ``read``/``full`` (:func:`kinoray.control.permissions.parse_permissions`); default full access to all."""
    granted = dict(parse_permissions(permissions) if permissions is not None else FULL_ACCESS)
    token, secret = AccessToken.issue(name=name, environment=environment)
    token.permissions = granted
    session.add(token)
    return TokenInfo(id=token.id, name=token.name, environment=token.environment, permissions=granted), secret


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """Every token, oldest first, as ``kinoray token list`` prints them (never a secret or its hash)."""
    rows = session.scalars(sa.select(AccessToken).order_by(AccessToken.created_at, AccessToken.id))
    return [{"id": row.id, "name": row.name, "environment": row.environment,
             "permissions": dict(row.permissions) if row.permissions is not None else dict(FULL_ACCESS),
             "created_at": str(int(row.created_at.timestamp())), "revoked": row.revoked,
             "last_used_at": str(int(row.last_used_at.timestamp())) if row.last_used_at else None} for row in rows]


def revoke_token(session: Session, token_id: str) -> bool:
    """Revoke a token (kept for the audit trail); ``False`` when there is no such token."""
    token = session.get(AccessToken, token_id) if is_valid_id(token_id) else None
    if token is None:
        return False
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return True
