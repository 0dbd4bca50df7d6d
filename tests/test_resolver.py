"""The playback resolver's caches, without HTTP or Ray: a real SQLite database, a clock the test moves, and
counts of the database sessions each call opened. Tokens are minted with PyJWT and checked by the resolver's
own ``verify_token``; what is cached, for how long, and what is never cached."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import jwt
import pytest

from kinoray.control.resolver import PlaybackResolver
from kinoray.control.signing import create_signing_key, delete_signing_key, get_signing_key
from kinoray.errors import AssetNotReadyError, NotFoundError, PlaybackForbiddenError
from kinoray.settings import Settings
from kinoray.store.db import Database
from kinoray.store.models import Asset, AssetStatus, PlaybackId, PlaybackPolicy, new_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingDatabase:
    """The real database, counting the sessions opened through it."""

    def __init__(self, db: Database) -> None:
        self.db, self.sessions = db, 0

    def reader(self):  # noqa: ANN201 - the database's own context manager
        self.sessions += 1
        return self.db.reader()


@pytest.fixture()
def world(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, environment="test")
    db = Database.from_settings(settings)
    db.migrate()
    clock = Clock()
    counting = CountingDatabase(db)
    resolver = PlaybackResolver(counting, ttl=2.0, negative_ttl=1.0, clock=clock)  # type: ignore[arg-type]
    yield db, counting, clock, resolver
    db.dispose()


def _asset(db: Database, status: AssetStatus, policy: PlaybackPolicy = PlaybackPolicy.PUBLIC) -> tuple[str, str]:
    asset_id, playback_id = new_id(), new_id()
    with db.session() as session:
        session.add(Asset(id=asset_id, status=status, storage_prefix=f"assets/{asset_id}"))
        session.flush()
        session.add(PlaybackId(id=playback_id, asset_id=asset_id, policy=policy))
    return asset_id, playback_id


def _delete(db: Database, asset_id: str) -> None:
    with db.session() as session:
        session.delete(session.get(Asset, asset_id))


def test_a_ready_row_is_kept_for_the_ttl_then_read_again(world) -> None:
    db, counting, clock, resolver = world
    asset_id, playback_id = _asset(db, AssetStatus.READY)
    assert resolver.cached(playback_id, None, "v") is None  # nothing cached yet: the caller must resolve
    first = resolver.resolve(playback_id, None, "v")
    assert first.playback.media_prefix == f"assets/{asset_id}/media" and counting.sessions == 1
    assert resolver.cached(playback_id, None, "v") == first
    resolver.resolve(playback_id, None, "v")
    assert counting.sessions == 1  # served from the cache
    _delete(db, asset_id)
    clock.now += 1.9
    assert resolver.resolve(playback_id, None, "v") == first  # within the bound: still the cached row
    clock.now += 0.2
    assert resolver.cached(playback_id, None, "v") is None
    with pytest.raises(NotFoundError):
        resolver.resolve(playback_id, None, "v")  # past it: the deletion is seen


def test_preparing_is_never_cached_and_unknown_ids_briefly(world) -> None:
    db, counting, clock, resolver = world
    asset_id, playback_id = _asset(db, AssetStatus.PREPARING)
    for _ in range(2):
        with pytest.raises(AssetNotReadyError):
            resolver.resolve(playback_id, None, "v")
    assert counting.sessions == 2 and resolver.cached(playback_id, None, "v") is None
    with db.session() as session:
        session.get(Asset, asset_id).status = AssetStatus.READY
    assert resolver.resolve(playback_id, None, "v").playback.asset_id == asset_id  # ready at once

    unknown = new_id()
    with pytest.raises(NotFoundError):
        resolver.resolve(unknown, None, "v")
    sessions = counting.sessions
    with pytest.raises(NotFoundError):
        resolver.cached(unknown, None, "v")  # the refusal is cached: no query
    assert counting.sessions == sessions
    clock.now += 1.1
    assert resolver.cached(unknown, None, "v") is None  # the negative entry expired after 1 s


def _key(db: Database) -> tuple[str, bytes]:
    with db.session() as session:
        key, private_b64 = create_signing_key(session)
        return key.id, base64.b64decode(private_b64)


def test_signed_tokens_are_verified_once_per_window_and_revocation_is_seen(world) -> None:
    db, counting, clock, resolver = world
    _, playback_id = _asset(db, AssetStatus.READY, PlaybackPolicy.SIGNED)
    kid, private = _key(db)
    token = jwt.encode({"sub": playback_id, "aud": "v", "exp": int(time.time()) + 600}, private,
                       algorithm="RS256", headers={"kid": kid})
    with pytest.raises(PlaybackForbiddenError):
        resolver.resolve(playback_id, None, "v")
    resolved = resolver.resolve(playback_id, token, "v")
    assert resolved.playback.token == token and resolved.playback.claims["sub"] == playback_id
    assert resolver.cached(playback_id, token, "v") == resolved
    assert resolver.cached(playback_id, token, "t") is None  # another audience is another verification
    with pytest.raises(PlaybackForbiddenError):
        resolver.resolve(playback_id, token, "t")
    with pytest.raises(PlaybackForbiddenError):
        resolver.cached(playback_id, token, "t")  # the refusal is cached too
    with db.session() as session:
        delete_signing_key(session, get_signing_key(session, kid))
    assert resolver.cached(playback_id, token, "v") == resolved  # within the bound
    clock.now += 2.1
    assert resolver.cached(playback_id, token, "v") is None
    with pytest.raises(PlaybackForbiddenError, match="kid"):
        resolver.resolve(playback_id, token, "v")


def test_a_cached_verification_is_not_used_past_the_tokens_exp(world) -> None:
    db, _, _, resolver = world
    _, playback_id = _asset(db, AssetStatus.READY, PlaybackPolicy.SIGNED)
    kid, private = _key(db)
    # exp in the past but within the 5 s leeway: valid now (for 2 s at least: a loaded machine may take a while to
    # get here), expired once the leeway has passed (real time), while the cache entry (2 s) may still be fresh
    exp = int(time.time()) - 3
    token = jwt.encode({"sub": playback_id, "aud": "v", "exp": exp}, private, algorithm="RS256",
                       headers={"kid": kid})
    assert resolver.resolve(playback_id, token, "v").playback.claims is not None
    time.sleep(max(0.0, exp + 5.2 - time.time()))
    assert resolver.cached(playback_id, token, "v") is None  # expired since, though the cache entry is fresh
    with pytest.raises(PlaybackForbiddenError, match="expired"):
        resolver.resolve(playback_id, token, "v")


def test_ttl_zero_reads_the_database_every_time(world) -> None:
    db, counting, clock, _ = world
    _, playback_id = _asset(db, AssetStatus.READY)
    resolver = PlaybackResolver(counting, ttl=0, clock=clock)  # type: ignore[arg-type]
    for _ in range(3):
        resolver.resolve(playback_id, None, "v")
        assert resolver.cached(playback_id, None, "v") is None
    assert counting.sessions == 3


def test_a_tokens_playback_restriction_is_read_once_per_window_and_checked_per_request(world) -> None:
    from kinoray.control.restrictions import CreateRestriction, ReferrerRule, Viewer, create_restriction
    from kinoray.errors import PlaybackRestrictedError
    from kinoray.store.models import PlaybackRestriction

    db, counting, clock, resolver = world
    _, playback_id = _asset(db, AssetStatus.READY, PlaybackPolicy.SIGNED)
    kid, private = _key(db)
    with db.session() as session:
        restriction_id = create_restriction(session, CreateRestriction(
            referrer=ReferrerRule(allowed_domains=["*.example.com"]))).id
    token = jwt.encode({"sub": playback_id, "aud": "v", "exp": int(time.time()) + 600,
                        "playback_restriction_id": restriction_id}, private, algorithm="RS256", headers={"kid": kid})
    allowed, other = Viewer("https://www.example.com/", "Chrome"), Viewer("https://other.test/", "Chrome")
    assert resolver.cached(playback_id, token, "v", allowed) is None  # nothing cached yet
    resolver.resolve(playback_id, token, "v", allowed)
    sessions = counting.sessions
    assert resolver.cached(playback_id, token, "v", allowed) is not None  # rule cached: no I/O
    with pytest.raises(PlaybackRestrictedError):
        resolver.cached(playback_id, token, "v", other)  # ... but checked against each request's headers
    with pytest.raises(PlaybackRestrictedError):
        resolver.resolve(playback_id, token, "v", None)  # no Referer: allow_no_referrer is false
    assert counting.sessions == sessions
    with db.session() as session:
        session.get(PlaybackRestriction, restriction_id).allowed_domains = ["other.test"]
    resolver.resolve(playback_id, token, "v", allowed)  # within the window: the rule as it was
    clock.now += 2.01
    with pytest.raises(PlaybackRestrictedError):
        resolver.resolve(playback_id, token, "v", allowed)  # past it: the change is seen
    with db.session() as session:
        session.delete(session.get(PlaybackRestriction, restriction_id))
    clock.now += 2.01
    with pytest.raises(PlaybackForbiddenError, match="does not exist"):
        resolver.resolve(playback_id, token, "v", other)
