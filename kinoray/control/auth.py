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
  per token (and API process) in a short transaction of its own, so an authenticated read never holds a write lock.

A token's row (revoked or not, permissions, environment, secret hash) is kept in memory for
``api.token_cache_seconds`` (2 s) per process, so a request whose secret was verified before costs no database
read at all (:meth:`Authenticator.remembered`, which the API calls on its event loop). Revoking a token
(:func:`revoke_token`) drops it from every authenticator of the revoking process once its transaction commits,
so there the next request is refused; another process (another API replica, ``kinoray token revoke``) refuses
it within ``api.token_cache_seconds``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.control.lookup import find
from kinoray.control.permissions import FULL_ACCESS, parse_permissions
from kinoray.control.ratelimit import LocalRateLimiter
from kinoray.control.views import AccessTokenView, NewAccessTokenView
from kinoray.errors import AuthenticationError, InvalidParametersError, RateLimitedError
from kinoray.settings import ApiSettings
from kinoray.store.db import Database, newest_first
from kinoray.store.models import (
    DEFAULT_ENVIRONMENT_ID,
    AccessToken,
    Environment,
    is_valid_id,
    secret_known,
    utcnow,
    verify_secret,
)
from kinoray.telemetry import AUTH_THROTTLED

__all__ = ["Authenticator", "TokenInfo", "create_token", "get_token", "list_tokens", "new_token", "parse_basic",
           "revoke_token", "token_view"]

log = logging.getLogger(__name__)

#: ``last_used_at`` is written at most this often per token, so reads do not turn into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenInfo:
    """The authenticated caller, detached from any session."""

    id: str
    name: str | None
    #: The environment whose data the token reads and writes (:mod:`kinoray.store.scoping`).
    environment_id: str
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
    """What authentication reads of a token: read in one short read-only transaction, kept
    ``api.token_cache_seconds``."""

    id: str
    name: str | None
    environment_id: str
    secret_hash: str
    revoked: bool
    last_used_at: datetime | None
    permissions: Mapping[str, str] | None

    def info(self) -> TokenInfo:
        return TokenInfo(id=self.id, name=self.name, environment_id=self.environment_id,
                         permissions=self.permissions)


#: Token rows kept per authenticator at most (the oldest read is dropped first); only ids that name a token are
#: kept, so a flood of made-up ids cannot fill it.
TOKEN_CACHE_SIZE = 10_000
#: Every authenticator of this process, which :func:`revoke_token` tells (on commit) to forget a token.
_authenticators: weakref.WeakSet[Authenticator] = weakref.WeakSet()


class Authenticator:
    """Basic credentials → :class:`TokenInfo`, at a bounded cost under a flood (see the module docstring).

    One per process (``Platform.authenticator``); the failure buckets are in-process, like the secret cache and
    the token rows (kept ``settings.token_cache_seconds``, read with ``clock``)."""

    def __init__(self, db: Database, settings: ApiSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        rate, burst = settings.auth_failures_per_second, settings.auth_failure_burst
        self._clients = LocalRateLimiter(rate, burst, clock)  # failed attempts per client address
        self._tokens = LocalRateLimiter(rate, burst, clock)  # failed attempts per token id
        self._clock = clock
        self._ttl = settings.token_cache_seconds
        self._rows: dict[str, tuple[float, _TokenRow]] = {}  # token id -> (when read, row); oldest read first
        self._forgotten = 0  # forget() calls so far: a row read before one of them is not kept
        self._lock = threading.Lock()
        _authenticators.add(self)

    def remembered(self, authorization: str | None) -> TokenInfo | None:
        """The token ``authorization`` proves, from memory alone (no database, no scrypt): its row read within
        ``token_cache_seconds``, not revoked, the secret verified before, ``last_used_at`` not due. ``None``
        whenever anything else is the case, right credentials or wrong: :meth:`authenticate` then decides."""
        try:
            token_id, secret = parse_basic(authorization)
        except AuthenticationError:
            return None
        token = self._remembered_row(token_id)
        if token is None or token.revoked or not secret_known(token.secret_hash, secret) or self._touch_due(token):
            return None
        return token.info()

    def forget(self, token_id: str) -> None:
        """Read ``token_id``'s row from the database on its next request."""
        with self._lock:
            self._rows.pop(token_id, None)
            self._forgotten += 1

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
        return token.info()

    @staticmethod
    def _touch_due(token: _TokenRow) -> bool:
        return token.last_used_at is None or utcnow() - token.last_used_at >= LAST_USED_RESOLUTION

    def _touch(self, token: _TokenRow) -> None:
        if not self._touch_due(token):
            return
        now = utcnow()
        try:
            with self.db.session() as session:
                session.execute(sa.update(AccessToken).where(AccessToken.id == token.id).values(last_used_at=now))
        except sa.exc.OperationalError as error:  # bookkeeping: never the reason a request fails
            log.warning("last_used_at not recorded", extra={"token_id": token.id, "error": str(error)})
            return
        with self._lock:  # the remembered row says so too, or every request would write it until the row expires
            if kept := self._rows.get(token.id):
                self._rows[token.id] = (kept[0], replace(kept[1], last_used_at=now))

    def _remembered_row(self, token_id: str) -> _TokenRow | None:
        with self._lock:
            kept = self._rows.get(token_id)
        if kept is None or self._clock() - kept[0] >= self._ttl:
            return None
        return kept[1]

    def _row(self, token_id: str) -> _TokenRow | None:
        kept = self._remembered_row(token_id)
        if kept is not None:
            return kept
        with self._lock:
            read_at, forgotten = self._clock(), self._forgotten
        with self.db.reader() as session:
            token = session.get(AccessToken, token_id)
            if token is None:
                return None
            row = _TokenRow(token.id, token.name, token.environment_id, token.secret_hash, token.revoked,
                            token.last_used_at, dict(token.permissions) if token.permissions is not None else None)
        if self._ttl > 0:
            with self._lock:
                if self._forgotten != forgotten:  # a revocation committed while this row was read: maybe before
                    return row
                self._rows.pop(token_id, None)  # re-inserted last: the dict stays in order of reading
                self._rows[token_id] = (read_at, row)
                if len(self._rows) > TOKEN_CACHE_SIZE:
                    del self._rows[next(iter(self._rows))]
        return row

    def _draw(self, buckets: LocalRateLimiter, key: str, who: str) -> None:
        decision = buckets.hit(key)
        if not decision.allowed:
            AUTH_THROTTLED.labels(by=who.replace(" ", "_")).inc()
            raise RateLimitedError(f"too many failed authentications for this {who}: try again in "
                                   f"{max(1, math.ceil(decision.retry_after))} s", decision.retry_after,
                                   decision.limit)


def _issue(session: Session, name: str | None, environment_id: str,
           permissions: Iterable[str] | Mapping[str, str] | None) -> tuple[AccessToken, str]:
    find(session, Environment, environment_id, what="environment")
    granted = dict(parse_permissions(permissions) if permissions is not None else FULL_ACCESS)
    token, secret = AccessToken.issue(name=name, environment_id=environment_id)
    token.permissions = granted
    session.add(token)
    session.flush()
    return token, secret


def create_token(session: Session, name: str | None = None, environment_id: str = DEFAULT_ENVIRONMENT_ID,
                 permissions: Iterable[str] | Mapping[str, str] | None = None) -> tuple[TokenInfo, str]:
    """A new access token of ``environment_id`` and its secret (shown once: only its hash is stored).
    ``permissions``: per product ``read``/``full`` (:func:`kinoray.control.permissions.parse_permissions`);
    default full access to all.

    Raises:
        InvalidParametersError: bad permissions.
        NotFoundError: no environment ``environment_id``.
    """
    token, secret = _issue(session, name, environment_id, permissions)
    return TokenInfo(id=token.id, name=token.name, environment_id=token.environment_id,
                     permissions=token.permissions), secret


def new_token(session: Session, name: str | None = None, environment_id: str = DEFAULT_ENVIRONMENT_ID,
              permissions: Iterable[str] | Mapping[str, str] | None = None) -> NewAccessTokenView:
    """:func:`create_token` as the API answers it: the token's view with its secret, the only answer that ever
    holds it."""
    token, secret = _issue(session, name, environment_id, permissions)
    return NewAccessTokenView(**token_view(token).model_dump(), secret=secret)


def token_view(token: AccessToken) -> AccessTokenView:
    """The token as the API and ``kinoray token list`` show it (never its secret or the secret's hash)."""
    return AccessTokenView.model_validate({
        "id": token.id, "name": token.name, "environment_id": token.environment_id,
        "permissions": dict(token.permissions) if token.permissions is not None else dict(FULL_ACCESS),
        "created_at": str(int(token.created_at.timestamp())), "revoked": token.revoked,
        "revoked_at": str(int(token.revoked_at.timestamp())) if token.revoked_at else None,
        "last_used_at": str(int(token.last_used_at.timestamp())) if token.last_used_at else None})


def list_tokens(session: Session, *, limit: int | None = None, cursor: str | None = None, page: int = 1
                ) -> tuple[list[AccessToken], str | None]:
    """Tokens newest first (one page with ``limit``, else every one), in the session's environment (all of
    them in an unscoped session: the CLI), and the next page's cursor."""
    if limit is None:
        return list(session.scalars(sa.select(AccessToken).order_by(AccessToken.created_at.desc(),
                                                                    AccessToken.id.desc()))), None
    try:
        return newest_first(session, AccessToken, limit=limit, cursor=cursor, page=page)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def get_token(session: Session, token_id: str) -> AccessToken:
    """The token, or ``NotFoundError`` (also for another environment's token in a scoped session)."""
    return find(session, AccessToken, token_id, what="access token")


def revoke_token(session: Session, token_id: str) -> AccessToken:
    """Revoke a token (kept for the audit trail; revoking twice keeps the first time). Once ``session`` commits,
    every :class:`Authenticator` of this process forgets the token's row, so the next request with it is
    refused; other processes refuse it within ``api.token_cache_seconds``. ``NotFoundError`` when there is no
    such token."""
    token = get_token(session, token_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    sa.event.listen(session, "after_commit", lambda _session: _forget_everywhere(token_id), once=True)
    return token


def _forget_everywhere(token_id: str) -> None:
    for authenticator in list(_authenticators):
        authenticator.forget(token_id)
