"""Per-token rate limits: a token bucket (``rate_limit_per_second`` refill, ``rate_limit_burst`` size).

In-process by default (:class:`LocalRateLimiter`); shared through Redis when ``KINORAY_REDIS_URL`` is set
(:class:`RedisRateLimiter`: several API replicas then share one bucket per token).

If Redis cannot be reached, requests are not failed: each replica falls back to its own in-process buckets
(so N replicas allow up to N times the limit meanwhile), logs the outage once, counts every request it
decided alone in ``kinoray_ratelimit_fallback_total`` and tries Redis again after ``retry_seconds``.
"""

from __future__ import annotations

import abc
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kinoray.settings import Settings
from kinoray.telemetry import RATE_LIMIT_FALLBACKS

if TYPE_CHECKING:
    import redis

__all__ = ["Decision", "LocalRateLimiter", "RateLimiter", "RedisRateLimiter"]

log = logging.getLogger(__name__)

_PRUNE_FLOOR = 4096  # buckets kept before the refilled ones are dropped


@dataclass(frozen=True)
class Decision:
    """The outcome of one request against a bucket."""

    allowed: bool
    limit: int  # the bucket size (X-RateLimit-Limit)
    remaining: int  # whole tokens left after this request (X-RateLimit-Remaining)
    retry_after: float  # seconds until one token is back (0 when allowed)


def _decision(allowed: bool, tokens: float, rate: float, burst: int) -> Decision:
    retry_after = 0.0 if allowed else (1.0 - tokens) / rate
    return Decision(allowed, burst, max(0, math.floor(tokens)), retry_after)


class RateLimiter(abc.ABC):
    """The protocol: ``hit(key)`` takes one token from ``key``'s bucket."""

    #: Whether :meth:`hit` only touches this process's memory (never blocks on I/O: callable on an event loop).
    in_process: bool = False

    @abc.abstractmethod
    def hit(self, key: str) -> Decision:
        """Charge one request to ``key``'s bucket."""

    def close(self) -> None:  # noqa: B027 - a default: most limiters hold no connection
        """Release connections."""

    @staticmethod
    def from_settings(settings: Settings, rate: float | None = None, burst: int | None = None) -> RateLimiter:
        """A :class:`RedisRateLimiter` when ``settings.redis_url`` is set, else a :class:`LocalRateLimiter`;
        ``rate``/``burst`` default to the API's per-token limits."""
        rate = settings.api.rate_limit_per_second if rate is None else rate
        burst = settings.api.rate_limit_burst if burst is None else burst
        if settings.redis_url:
            return RedisRateLimiter(settings.redis_url, rate, burst)
        return LocalRateLimiter(rate, burst)


class LocalRateLimiter(RateLimiter):
    """Buckets in this process's memory (one API replica)."""

    in_process = True

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._prune_at = _PRUNE_FLOOR
        self._lock = threading.Lock()

    def hit(self, key: str) -> Decision:
        return self._take(key, charge=True)

    def peek(self, key: str) -> Decision:
        """Whether ``key`` has a token left, without taking it (``allowed`` is ``False`` when its bucket is empty)."""
        return self._take(key, charge=False)

    def refund(self, key: str) -> None:
        """Give back the token a :meth:`hit` took (the charged work turned out not to count)."""
        with self._lock:
            if key in self._buckets:
                tokens, at = self._buckets[key]
                self._buckets[key] = (min(float(self.burst), tokens + 1.0), at)

    def _take(self, key: str, *, charge: bool) -> Decision:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            allowed = tokens >= 1.0
            if charge:
                if allowed:
                    tokens -= 1.0
                self._buckets[key] = (tokens, now)
                if len(self._buckets) > self._prune_at:
                    self._prune(now)
        return _decision(allowed, tokens, self.rate, self.burst)

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled: a missing bucket *is* a full one, so many idle keys (client
        addresses) cost no memory."""
        self._buckets = {key: (tokens, at) for key, (tokens, at) in self._buckets.items()
                         if tokens + (now - at) * self.rate < self.burst}
        self._prune_at = max(_PRUNE_FLOOR, 2 * len(self._buckets))


# One round trip per request. The clock is Redis's (TIME), so replicas whose clocks disagree still refill the
# bucket at the same pace. A bucket expires once it would be full again: a missing bucket *is* a full one, so
# idle tokens cost no memory. Numbers are written with string.format because Lua's default conversion keeps
# 14 digits (about 0.1 ms of a Unix time) and Redis truncates numbers in replies to integers.
_TOKEN_BUCKET = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
local tokens_text = string.format('%.17g', tokens)
redis.call('HSET', KEYS[1], 'tokens', tokens_text, 'at', string.format('%.6f', math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tokens_text}
"""


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, shared by every replica that uses the same Redis and ``prefix``.

    Each :meth:`hit` is one ``EVALSHA`` of an atomic Lua script (bucket = a hash ``{tokens, at}`` under
    ``prefix + key``). Calls time out after ``timeout`` seconds (default 0.25) and are not retried: a slow or
    absent Redis costs a request at most that much once per ``retry_seconds`` (default 5), while the
    in-process fallback answers.
    """

    def __init__(self, url: str, rate: float, burst: int, *, prefix: str = "kinoray:ratelimit:",
                 timeout: float = 0.25, retry_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.rate, self.burst, self.prefix = rate, burst, prefix
        self.retry_seconds, self.clock = retry_seconds, clock
        # from_url opens no connection yet: building a Platform stays free of I/O.
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
        self._script = self.client.register_script(_TOKEN_BUCKET)
        self.fallback = LocalRateLimiter(rate, burst, clock)
        self._down_until: float | None = None  # while set, Redis is not asked before this clock() time
        self._lock = threading.Lock()

    def hit(self, key: str) -> Decision:
        import redis

        down_until = self._down_until
        if down_until is not None and self.clock() < down_until:
            return self._fallback(key)
        try:
            allowed, tokens = self._script(keys=[self.prefix + key], args=[self.rate, self.burst])
        except redis.RedisError as error:
            with self._lock:
                if self._down_until is None:
                    log.warning("Redis unreachable for rate limits; each replica limits on its own until it "
                                "is back", extra={"error": repr(error), "retry_seconds": self.retry_seconds})
                self._down_until = self.clock() + self.retry_seconds
            return self._fallback(key)
        if down_until is not None:
            with self._lock:
                if self._down_until is not None:
                    log.warning("Redis reachable again: rate limits are shared again")
                self._down_until = None
        return _decision(bool(allowed), float(tokens), self.rate, self.burst)

    def _fallback(self, key: str) -> Decision:
        RATE_LIMIT_FALLBACKS.inc()
        return self.fallback.hit(key)

    def close(self) -> None:
        self.client.close()
