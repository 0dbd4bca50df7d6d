"""Playback ids resolved with a per-process cache: what the delivery edge asks on every viewer request.

Three small caches, each entry kept at most ``ttl`` seconds (``edge.cache_seconds``, 2 s by default):

- playback id → :class:`~kinoray.control.playback.PlaybackRecord` (one database row read); unknown ids are
  remembered for ``negative_ttl`` seconds, so a flood of made-up ids costs one query per id and window;
- signing key id → PEM public key (``None`` for a deleted key);
- (token, playback id, audience) → verified claims, or the refusal, so a signed viewer's segments cost no RSA
  verification after the first; never used past the token's ``exp``;
- playback restriction id → its rule (``None`` for a deleted one), which a token's ``playback_restriction_id``
  claim opts into; the rule itself is checked against each request's ``Referer`` and ``User-Agent``.

Invalidation is by expiry, which makes the bound hold on every process without any message between them: a
deleted asset or playback id, a revoked signing key, a changed or deleted playback restriction or a changed
text track list reaches every edge process within ``ttl`` seconds plus one request. Only ready assets' records are kept: one that is still preparing is
read again on every request, so it plays as soon as it is ready.

Thread-safe: the edge's event loop reads the caches inline (:meth:`PlaybackResolver.cached`) and resolves
misses on a worker thread (:meth:`PlaybackResolver.resolve`); FastAPI's threadpool routes use ``resolve``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

from sqlalchemy.orm import Session

from kinoray.control.playback import (
    Playback,
    PlaybackRecord,
    authorize,
    load_record,
    token_expired,
    verify_token,
)
from kinoray.control.restrictions import RestrictionRule, Viewer, load_rule, restriction_id_of
from kinoray.control.signing import public_key_pem
from kinoray.errors import KinorayError, NotFoundError, PlaybackForbiddenError
from kinoray.store.db import Database
from kinoray.store.models import AssetStatus, PlaybackPolicy

__all__ = ["PlaybackResolver", "Resolved", "TtlCache"]

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded map whose entries expire: least recently stored entries go first when full."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, now: float) -> tuple[bool, V | None]:
        """``(True, value)`` while ``key``'s entry is fresh at ``now`` (monotonic seconds), else ``(False, None)``."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return False, None
        return True, entry[1]

    def put(self, key: K, value: V, expires: float) -> None:
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)



@dataclass(frozen=True)
class _Refusal:
    """A cached error: its class and message (a new exception is raised each time, never the same object)."""

    error_type: type[KinorayError]
    message: str

    def raise_it(self) -> NoReturn:
        raise self.error_type(self.message)


@dataclass(frozen=True)
class Resolved:
    """A playback id a caller may use now: the database facts and what may be served."""

    record: PlaybackRecord
    playback: Playback


class PlaybackResolver:
    """Resolves ``(playback id, token, audience)`` to a :class:`Resolved`, reading the database only on a cache
    miss. ``ttl=0`` turns caching off (every call reads the database)."""

    def __init__(self, db: Database, *, ttl: float = 2.0, negative_ttl: float = 1.0,
                 max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.ttl, self.negative_ttl, self.clock = db, ttl, min(negative_ttl, ttl), clock
        self._records: TtlCache[str, PlaybackRecord | _Refusal] = TtlCache(max_entries)
        # keyed by (id, environment): a signed playback id opens only with its own environment's keys and rules
        self._keys: TtlCache[tuple[str, str], str | None] = TtlCache(1024)
        self._tokens: TtlCache[tuple[str, str, str], Mapping[str, Any] | _Refusal] = TtlCache(max_entries)
        self._rules: TtlCache[tuple[str, str], RestrictionRule | None] = TtlCache(1024)

    # --- what the caches hold (no I/O; a cached refusal is raised) ------------------------------------------
    def _fresh_record(self, playback_id: str) -> PlaybackRecord | None:
        found, value = self._records.get(playback_id, self.clock())
        if isinstance(value, _Refusal):
            value.raise_it()
        return value if found else None

    def _fresh_claims(self, key: tuple[str, str, str]) -> Mapping[str, Any] | None:
        found, value = self._tokens.get(key, self.clock())
        if isinstance(value, _Refusal):
            value.raise_it()
        return value if found and value is not None and not token_expired(value) else None

    # --- the database and the signature check, on a miss --------------------------------------------------
    def _record(self, playback_id: str) -> PlaybackRecord:
        record = self._fresh_record(playback_id)
        if record is not None:
            return record
        now = self.clock()
        try:
            with self.db.reader() as session:
                record = load_record(session, playback_id)
        except NotFoundError as error:
            if self.negative_ttl > 0:
                self._records.put(playback_id, _Refusal(NotFoundError, str(error)), now + self.negative_ttl)
            raise
        if self.ttl > 0 and record.status == AssetStatus.READY:  # preparing: re-read until it is ready
            self._records.put(playback_id, record, now + self.ttl)
        return record

    def _read_through(self, cache: TtlCache[tuple[str, str], V | None], key: tuple[str, str],
                      load: Callable[[Session, str, str], V | None]) -> V | None:
        """``cache``'s fresh entry for ``key``, else ``load``'s answer (one read), kept for ``ttl`` seconds."""
        now = self.clock()
        found, value = cache.get(key, now)
        if not found:
            with self.db.reader() as session:
                value = load(session, *key)
            if self.ttl > 0:
                cache.put(key, value, now + self.ttl)
        return value

    def _public_key(self, kid: str, environment_id: str) -> str | None:
        return self._read_through(self._keys, (kid, environment_id), public_key_pem)

    def _rule(self, restriction_id: str, environment_id: str) -> RestrictionRule | None:
        return self._read_through(self._rules, (restriction_id, environment_id), load_rule)

    @staticmethod
    def _restrict(rule: RestrictionRule | None, restriction_id: str | None, viewer: Viewer | None) -> None:
        if restriction_id is None:
            return
        if rule is None:
            raise PlaybackForbiddenError(f"token names playback restriction {restriction_id}, which does not exist")
        rule.check(viewer or Viewer())

    def _claims(self, record: PlaybackRecord, token: str | None, audience: str) -> Mapping[str, Any]:
        key = (token or "", record.playback_id, audience)
        claims = self._fresh_claims(key)
        if claims is not None:
            return claims
        now = self.clock()
        try:
            claims = verify_token(record.playback_id, token, audience,
                                  lambda kid: self._public_key(kid, record.environment_id))
        except PlaybackForbiddenError as error:
            if self.ttl > 0 and token:
                self._tokens.put(key, _Refusal(PlaybackForbiddenError, str(error)), now + self.ttl)
            raise
        if self.ttl > 0:
            self._tokens.put(key, claims, now + self.ttl)
        return claims

    def resolve(self, playback_id: str, token: str | None, audience: str, viewer: Viewer | None = None) -> Resolved:
        """What ``playback_id`` may serve to a caller with ``token`` (reads the database on a miss): the id
        exists, then the token (signed ids) and the playback restriction it names, checked against ``viewer``
        (absent headers when ``None``), then the asset's state (:func:`kinoray.control.playback.authorize`).

        Raises:
            NotFoundError: unknown, deleted or malformed id; errored asset.
            PlaybackForbiddenError: a signed id without a valid token for ``audience``, or naming a playback
                restriction that does not exist.
            PlaybackRestrictedError: the token's playback restriction refuses ``viewer``.
            AssetNotReadyError: the asset is still preparing.
        """
        record, claims = self.admit(playback_id, token, audience, viewer)
        return Resolved(record, authorize(record, claims, token))

    def admit(self, playback_id: str, token: str | None, audience: str,
              viewer: Viewer | None = None) -> tuple[PlaybackRecord, Mapping[str, Any] | None]:
        """:meth:`resolve`'s checks but the asset's state: the id exists, a signed id's token opens it for
        ``audience`` and its playback restriction admits ``viewer``. The record and the verified claims (``None``
        for a public id): for what a playback id opens besides its media (a live stream's chat room, open while
        the stream is idle too).

        Raises:
            NotFoundError, PlaybackForbiddenError, PlaybackRestrictedError: as :meth:`resolve`.
        """
        record = self._record(playback_id)
        claims = None
        if record.policy == PlaybackPolicy.SIGNED:
            claims = self._claims(record, token, audience)
            restriction_id = restriction_id_of(claims)
            self._restrict(self._rule(restriction_id, record.environment_id) if restriction_id else None,
                           restriction_id, viewer)
        return record, claims

    def cached(self, playback_id: str, token: str | None, audience: str,
               viewer: Viewer | None = None) -> Resolved | None:
        """:meth:`resolve` when everything it needs is cached (no I/O: safe on an event loop), else ``None``."""
        record = self._fresh_record(playback_id)
        if record is None:
            return None
        claims = None
        if record.policy == PlaybackPolicy.SIGNED:
            claims = self._fresh_claims((token or "", record.playback_id, audience))
            if claims is None:
                return None
            restriction_id = restriction_id_of(claims)
            rule = None
            if restriction_id is not None:
                found, rule = self._rules.get((restriction_id, record.environment_id), self.clock())
                if not found:
                    return None
            self._restrict(rule, restriction_id, viewer)
        return Resolved(record, authorize(record, claims, token))
