"""Rate limits: the in-process and Redis token buckets, the fallback when Redis is down, and the HTTP surface
(429 with a typed body, ``Retry-After``, ``X-RateLimit-*`` headers).

Redis tests use the server on 127.0.0.1:6379 with a unique key prefix each, removed afterwards.
"""

from __future__ import annotations

import logging
import math
import time
import uuid

import pytest
import redis

from kinoray.control.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from kinoray.settings import ApiSettings, Settings
from kinoray.telemetry import API_REGISTRY

REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def prefix():
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"kinoray:test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def redis_limiter(prefix: str, rate: float, burst: int, **options) -> RedisRateLimiter:
    return RedisRateLimiter(REDIS_URL, rate, burst, prefix=prefix, **options)


def fallbacks() -> float:
    return API_REGISTRY.get_sample_value("kinoray_ratelimit_fallback_total") or 0.0


def unused_redis_url() -> str:
    from tests.conftest import free_port

    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: connection refused


# --- in-process buckets ------------------------------------------------------------------------------------


def test_local_burst_then_refusal() -> None:
    limiter = LocalRateLimiter(rate=1.0, burst=3, clock=FakeClock())
    decisions = [limiter.hit("token") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert all(d.limit == 3 for d in decisions)
    assert [d.retry_after for d in decisions[:3]] == [0.0, 0.0, 0.0]


def test_local_refill_and_retry_after() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(rate=2.0, burst=2, clock=clock)
    assert limiter.hit("t").allowed and limiter.hit("t").allowed
    refused = limiter.hit("t")
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    clock.now += 0.25  # half a token back: still refused, and the wait shrinks accordingly
    refused = limiter.hit("t")
    assert not refused.allowed and refused.retry_after == pytest.approx(0.25)
    clock.now += refused.retry_after  # exactly when Retry-After said
    assert limiter.hit("t").allowed
    assert not limiter.hit("t").allowed
    clock.now += 3600  # a long idle time refills to the burst, never beyond
    assert [limiter.hit("t").allowed for _ in range(3)] == [True, True, False]


def test_local_keys_are_isolated() -> None:
    limiter = LocalRateLimiter(rate=1.0, burst=1, clock=FakeClock())
    assert limiter.hit("a").allowed
    assert not limiter.hit("a").allowed
    assert limiter.hit("b").allowed


def test_from_settings_picks_the_backend() -> None:
    local = RateLimiter.from_settings(Settings(api=ApiSettings(rate_limit_per_second=3, rate_limit_burst=7)))
    assert isinstance(local, LocalRateLimiter) and (local.rate, local.burst) == (3, 7)
    shared = RateLimiter.from_settings(Settings(redis_url=REDIS_URL, api=ApiSettings(rate_limit_burst=9)))
    try:
        assert isinstance(shared, RedisRateLimiter) and shared.burst == 9
        assert shared.prefix == "kinoray:ratelimit:"
    finally:
        shared.close()


# --- Redis buckets -----------------------------------------------------------------------------------------


def test_redis_burst_refusal_and_retry_after(prefix: str) -> None:
    limiter = redis_limiter(prefix, rate=2.0, burst=3)
    try:
        decisions = [limiter.hit("token") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        # Refilling at 2/s, the next token is at most 0.5 s away (less by however long the hits took).
        assert 0 < decisions[3].retry_after <= 0.5
        assert math.ceil(decisions[3].retry_after) == 1  # the Retry-After header the API sends
    finally:
        limiter.close()


def test_redis_refill(prefix: str) -> None:
    limiter = redis_limiter(prefix, rate=10.0, burst=2)
    try:
        assert limiter.hit("t").allowed and limiter.hit("t").allowed
        refused = limiter.hit("t")
        assert not refused.allowed
        time.sleep(refused.retry_after + 0.02)
        assert limiter.hit("t").allowed
    finally:
        limiter.close()


def test_redis_keys_are_isolated_and_expire(prefix: str) -> None:
    limiter = redis_limiter(prefix, rate=1.0, burst=2)
    try:
        assert limiter.hit("a").allowed and limiter.hit("a").allowed
        assert not limiter.hit("a").allowed
        assert limiter.hit("b").allowed
        # An idle bucket disappears once it would be full again (2 tokens at 1/s), plus a second of slack.
        ttl_ms = limiter.client.pttl(prefix + "a")
        assert 0 < ttl_ms <= 3000
        assert set(limiter.client.hkeys(prefix + "a")) == {b"tokens", b"at"}
    finally:
        limiter.close()


def test_two_replicas_share_one_bucket(prefix: str) -> None:
    first, second = redis_limiter(prefix, rate=0.5, burst=3), redis_limiter(prefix, rate=0.5, burst=3)
    try:
        assert [first.hit("t").allowed, second.hit("t").allowed, first.hit("t").allowed] == [True] * 3
        assert not second.hit("t").allowed
        assert not first.hit("t").allowed
    finally:
        first.close()
        second.close()


def test_redis_down_falls_back_to_local_limits(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RedisRateLimiter(unused_redis_url(), rate=0.5, burst=2, prefix="unused:")
    before = fallbacks()
    try:
        with caplog.at_level(logging.WARNING, logger="kinoray.control.ratelimit"):
            started = time.perf_counter()
            decisions = [limiter.hit("t") for _ in range(3)]
            elapsed = time.perf_counter() - started
        assert [d.allowed for d in decisions] == [True, True, False]  # still limited, in-process
        assert decisions[2].retry_after > 1.0
        assert limiter.hit("other").allowed
        assert fallbacks() - before == 4
        warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
        assert len(warnings) == 1  # logged once per outage, not per request
        assert elapsed < 1.0  # no retries with backoff on the request path
    finally:
        limiter.close()


def test_redis_comes_back(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limiter = redis_limiter(prefix, rate=1.0, burst=5, retry_seconds=5.0, clock=clock)
    script, calls = limiter._script, []

    def unreachable(*args, **kwargs):
        calls.append(1)
        raise redis.ConnectionError("connection refused")

    try:
        limiter._script = unreachable  # type: ignore[assignment]
        with caplog.at_level(logging.WARNING, logger="kinoray.control.ratelimit"):
            assert limiter.hit("t").allowed
            assert limiter.hit("t").allowed
            assert len(calls) == 1  # Redis is not asked again before retry_seconds
            limiter._script = script
            clock.now += 5.0
            decision = limiter.hit("t")
        assert decision.allowed and decision.remaining == 4  # a fresh shared bucket, not the fallback's
        assert limiter.client.exists(prefix + "t")
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        limiter.close()


# --- over HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_api(tmp_path_factory: pytest.TempPathFactory):
    """An API (SQLite) whose tokens may burst 3 requests and then get one every 2 s, shared through Redis."""
    from tests.api_server import ApiServer, Backend

    backend = Backend("sqlite", tmp_path_factory.mktemp("ratelimit-db"))
    server = ApiServer(backend.new_url(), tmp_path_factory.mktemp("ratelimit-data"),
                       api={"rate_limit_per_second": 0.5, "rate_limit_burst": 3}, redis_url=REDIS_URL)
    assert isinstance(server.platform.limiter, RedisRateLimiter)
    server.platform.limiter.close()
    prefix = f"kinoray:test:{uuid.uuid4().hex[:12]}:"
    server.platform.limiter = redis_limiter(prefix, rate=0.5, burst=3)
    try:
        yield server
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
        server.close()


def test_http_429_after_the_burst(limited_api) -> None:
    import requests

    auth = limited_api.new_token("burst")
    url = f"{limited_api.url}/video/v1/assets"
    with requests.Session() as client:
        client.auth = auth
        allowed = [client.get(url, timeout=10) for _ in range(3)]
        refused = client.get(url, timeout=10)
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [r.headers["X-RateLimit-Limit"] for r in allowed] == ["3", "3", "3"]
    assert [r.headers["X-RateLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"]["type"] == "too_many_requests" and body["error"]["messages"]
    # A token comes back 2 s after the last one went (1 s if this machine took over a second for 3 requests).
    assert refused.headers["Retry-After"] in ("1", "2")
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def test_http_tokens_have_their_own_buckets(limited_api) -> None:
    import requests

    first, second = limited_api.new_token("first"), limited_api.new_token("second")
    url = f"{limited_api.url}/video/v1/assets"
    statuses = [requests.get(url, auth=first, timeout=10).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    answer = requests.get(url, auth=second, timeout=10)
    assert answer.status_code == 200 and answer.headers["X-RateLimit-Remaining"] == "2"
