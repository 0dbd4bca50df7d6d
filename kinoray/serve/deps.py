"""FastAPI dependencies: the process's :class:`~kinoray.control.Platform`, the authenticated token (with its
rate limit applied), and the ``Idempotency-Key`` route class for POSTs.

The platform is process-global: the Serve ingress sets it in its constructor, tests with
:func:`set_platform`. Handlers open their own transaction with ``platform.db.session()`` so the commit happens
before the response is built.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from kinoray.control import environments, idempotency, permissions
from kinoray.control.auth import TokenInfo
from kinoray.control.platform import Platform
from kinoray.errors import ConfigurationError, RateLimitedError
from kinoray.store import scoping
from kinoray.store.models import request_fingerprint

__all__ = ["MAX_PAGE_SIZE", "AdminToken", "CurrentToken", "IdempotentRoute", "PageDep", "Pagination", "PlatformDep",
           "RankedPageDep", "admin_token", "client_address", "get_platform", "pagination", "rate_limit_headers",
           "read_database", "set_platform"]

_platform: Platform | None = None
P = ParamSpec("P")
T = TypeVar("T")


def set_platform(platform: Platform | None) -> None:
    """Install (or with ``None`` remove) the platform this process's handlers use."""
    global _platform
    _platform = platform


def get_platform() -> Platform:
    if _platform is None:
        raise ConfigurationError("the API has no platform: call kinoray.serve.deps.set_platform() first")
    return _platform


async def _platform_dependency() -> Platform:
    """:func:`get_platform` as a dependency. Every dependency of the API is ``async`` and does no I/O: FastAPI
    runs a sync one in a worker thread, a hop that cost more than the work (one per dependency per request)."""
    return get_platform()


PlatformDep = Annotated[Platform, Depends(_platform_dependency)]


async def read_database(platform: Platform, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``read(*args, **kwargs)``, a short database read, on the event loop when the database is SQLite, else in a
    worker thread. SQLite runs in this process: its read is CPU work that waits for nothing (under WAL not for a
    writer either; only a busy database, rare for a reader, would sleep in its busy handler), so a worker thread
    adds only its hop, a wakeup each way: ~0.14 ms of CPU of a ~0.8 ms request (docs/ARCHITECTURE.md, "Cheaper
    reads again"). PostgreSQL's read waits on the server, which the loop must not."""
    if platform.db.dialect == "sqlite":
        return read(*args, **kwargs)
    return await run_in_threadpool(read, *args, **kwargs)


def rate_limit_headers(limit: int, remaining: int) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}


def client_address(request: Request, platform: Platform) -> str:
    """The caller's address, which per-client limits are charged to: the connection's peer, or behind a proxy in
    ``api.trusted_proxies`` the client it names in ``X-Forwarded-For`` (:mod:`kinoray.control.clients`)."""
    return platform.clients.client(request.client.host if request.client else None,
                                   request.headers.get("x-forwarded-for"))


def _authenticate(platform: Platform, request: Request) -> TokenInfo:
    cached = getattr(request.state, "token", None)
    if cached is not None:
        return cached
    token = platform.authenticator.authenticate(request.headers.get("authorization"), client_address(request, platform))
    request.state.token = token
    return token


async def current_token(request: Request, response: Response, platform: PlatformDep) -> AsyncIterator[TokenInfo]:
    """The caller's access token, once its permissions cover the request (``403 forbidden`` otherwise:
    :mod:`kinoray.control.permissions`); charges one request to its rate-limit bucket. The rest of the request
    runs scoped to the token's environment: every database session it opens sees only that environment's rows
    (:mod:`kinoray.store.scoping`). Async, so the scope is set in the request's own context, which the
    handler's thread inherits. A token the process remembers (:meth:`Authenticator.remembered`) charged to an
    in-process rate limiter is admitted here on the event loop; anything needing the database, an scrypt or
    Redis in a worker thread."""
    token = _admit_remembered(platform, request, response)
    if token is None:
        token = await run_in_threadpool(_admit, platform, request, response)
    env_key_filters: tuple[tuple[str, bool], ...] = ()
    if permissions.product_of(request.url.path) == "data":
        env_key_filters = await run_in_threadpool(_env_key_filters, platform, token.environment_id)
    with scoping.scoped(token.environment_id, env_key_filters):
        yield token


def _env_key_filters(platform: Platform, environment_id: str) -> tuple[tuple[str, bool], ...]:
    with platform.db.reader() as session:
        return environments.data_filters(session, environment_id)


def _admit_remembered(platform: Platform, request: Request, response: Response) -> TokenInfo | None:
    if not platform.limiter.in_process:
        return None
    token = platform.authenticator.remembered(request.headers.get("authorization"))
    if token is None:
        return None
    request.state.token = token
    return _charge(platform, request, response, token)


def _admit(platform: Platform, request: Request, response: Response) -> TokenInfo:
    return _charge(platform, request, response, _authenticate(platform, request))


def _charge(platform: Platform, request: Request, response: Response, token: TokenInfo) -> TokenInfo:
    permissions.check(token.permissions, request.method, request.url.path)
    decision = platform.limiter.hit(token.id)
    if not decision.allowed:
        raise RateLimitedError(f"rate limit of {platform.settings.api.rate_limit_per_second:g} requests/s "
                               f"(burst {decision.limit}) exceeded", decision.retry_after, decision.limit)
    response.headers.update(rate_limit_headers(decision.limit, decision.remaining))
    return token


CurrentToken = Annotated[TokenInfo, Depends(current_token)]


#: The most rows one page of any list may hold (Mux: 100).
MAX_PAGE_SIZE = 100
#: The deepest numbered page (offset pages cost the database the rows skipped; go further with ``cursor``).
MAX_PAGE = 10_000


@dataclass(frozen=True)
class Pagination:
    """Which page of a list: ``limit`` rows, Mux's numbered ``page`` (1 = newest) or, where the list answers a
    ``next_cursor``, the keyset ``cursor`` it gave (which wins over ``page``)."""

    limit: int = 25
    page: int = 1
    cursor: str | None = None


async def _keyset(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="rows per page")] = 25,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Mux's numbered pages (1 = newest); cursor wins")] = 1,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$",
                                        description="next_cursor of the previous page")] = None,
) -> Pagination:
    return Pagination(limit=limit, page=page, cursor=cursor)


async def _numbered(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="rows per page")] = 100,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Mux's numbered pages (1 = first)")] = 1,
) -> Pagination:
    return Pagination(limit=limit, page=page)


def pagination(*, cursor: bool = True) -> Callable[..., Awaitable[Pagination]]:
    """The pagination dependency of a list route: Mux's ``limit`` (default 25, at most 100) and numbered ``page``,
    and kinoray's keyset ``cursor`` (from the previous page's ``next_cursor``, stable while rows are added). A
    list in another order than newest first (a ranking) takes ``cursor=False``: numbered pages only, Mux's
    default of 100 rows."""
    return _keyset if cursor else _numbered


#: Every newest-first list: ``limit``, ``page`` and ``cursor``.
PageDep = Annotated[Pagination, Depends(pagination())]
#: A ranked list (delivery usage): ``limit`` (default 100) and ``page``.
RankedPageDep = Annotated[Pagination, Depends(pagination(cursor=False))]


class IdempotentRoute(APIRoute):
    """An ``APIRoute`` whose POST honours ``Idempotency-Key`` (see :mod:`kinoray.control.idempotency`).

    Only 2xx JSON responses are kept; a request that fails releases its key. A replay carries
    ``Idempotent-Replayed: true``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if "POST" not in (self.methods or ()):
            return handler

        async def route(request: Request) -> Response:
            key = request.headers.get("idempotency-key")
            if key is None:
                return await handler(request)
            platform = get_platform()
            body = await request.body()
            token = await run_in_threadpool(_authenticate, platform, request)
            fingerprint = request_fingerprint("POST", request.url.path, body)
            ttl = timedelta(hours=platform.settings.api.idempotency_hours)
            stored = await run_in_threadpool(idempotency.claim, platform.db, token.id, key, fingerprint, ttl)
            if stored is not None:
                return JSONResponse(stored.body, status_code=stored.status, headers={"Idempotent-Replayed": "true"})
            try:
                response = await handler(request)
            except BaseException:
                await run_in_threadpool(idempotency.release, platform.db, token.id, key)
                raise
            if 200 <= response.status_code < 300 and response.media_type == "application/json":
                payload = json.loads(bytes(response.body))
                await run_in_threadpool(idempotency.remember, platform.db, token.id, key, response.status_code,
                                        payload)
            else:
                await run_in_threadpool(idempotency.release, platform.db, token.id, key)
            return response

        return route


async def admin_token(token: CurrentToken) -> TokenInfo:
    """:data:`CurrentToken` with ``system=full`` (:func:`kinoray.control.permissions.require_admin`)."""
    permissions.require_admin(token.permissions)
    return token


#: The caller's token, when it may manage access tokens and environments.
AdminToken = Annotated[TokenInfo, Depends(admin_token)]
