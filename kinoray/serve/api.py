"""The FastAPI applications kinoray serves, Ray-free: the management API (:func:`build_api`, the Ray Serve
ingress) and the error handling every kinoray FastAPI app shares (:func:`install_error_handlers`, also used by
the delivery edge's app in :mod:`kinoray.edge`).

Errors: every :class:`~kinoray.errors.KinorayError` becomes ``{"error": {"type", "messages"}}`` with the status
from :data:`kinoray.errors.ERROR_TABLE`; request validation errors are ``400 invalid_parameters``; anything
unexpected is a ``500 internal_error`` whose details go to the log, not the client. The database being down,
restarting or locked past the busy timeout is ``503 database_unavailable`` with Retry-After.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import kinoray
from kinoray.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    KinorayError,
    http_status,
)
from kinoray.serve import metrics
from kinoray.serve.asgi import Scope, client_of_scope
from kinoray.serve.deps import get_platform
from kinoray.serve.guard import RequestGuard
from kinoray.serve.routes import (
    access,
    alerts,
    assets,
    chat,
    data,
    data_insights,
    data_monitoring,
    downloads,
    live_streams,
    restrictions,
    signing_keys,
    system,
    tracks,
    uploads,
    usage,
    webhooks,
)
from kinoray.settings import ApiSettings, get_settings
from kinoray.store.db import is_transient

__all__ = ["build_api", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_HTTP_TYPES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type"}


def error_response(status: int, error_type: str, messages: list[str],
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": error_type, "messages": messages}}, status_code=status, headers=headers)


def _kinoray_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, KinorayError)
    status = http_status(error)
    headers = error.http_headers()  # its typed fields' (Retry-After, WWW-Authenticate, Allow, ...) and the context's
    if status >= 500:
        log.error("request failed", extra={"path": request.url.path, "type": error.type, "error": str(error)})
    return error_response(status, error.type, [str(error)], headers)


def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    messages = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "request"
        messages.append(f"{where}: {problem.get('msg', 'invalid')}")
    return error_response(400, "invalid_parameters", messages or ["invalid request"])


def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    error_type = _HTTP_TYPES.get(error.status_code, "invalid_request" if error.status_code < 500 else "internal_error")
    return error_response(error.status_code, error_type, [str(error.detail)], dict(error.headers or {}))


def _database_error(request: Request, error: Exception) -> JSONResponse:
    if is_transient(error):
        log.warning("database unavailable", extra={"path": request.url.path, "error": str(error)[:300]})
        return _kinoray_error(request, DatabaseUnavailableError())
    return _unexpected(request, error)


def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path, "method": request.method})
    return error_response(500, "internal_error", ["internal error; the server log has the details"])


def install_error_handlers(app: FastAPI) -> None:
    """kinoray's error bodies and statuses on ``app``."""
    app.add_exception_handler(KinorayError, _kinoray_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sa.exc.SQLAlchemyError, _database_error)
    app.add_exception_handler(Exception, _unexpected)


def _limits() -> ApiSettings:
    """The API limits of this process's platform (the process's settings before one is installed)."""
    try:
        return get_platform().settings.api
    except ConfigurationError:
        return get_settings().api


def _client(scope: Scope) -> str:
    """The client address of an ASGI request, before any routing (the peer before a platform is installed)."""
    try:
        clients = get_platform().clients
    except ConfigurationError:
        return str((scope.get("client") or ("unknown", 0))[0])
    return client_of_scope(clients, scope)


def build_api() -> FastAPI:
    """The management API: every authenticated resource, health, capabilities and metrics, with the error
    handlers and the request metrics. Viewer-facing paths (streams, images, the upload URL, beacons, the
    player) are the delivery edge's (:func:`kinoray.edge.app.build_edge_api`)."""
    app = FastAPI(
        title="kinoray",
        version=kinoray.__version__,
        description="Self-hostable video infrastructure: a Mux-shaped REST API over a Ray transcode cluster. "
                    "Management endpoints take HTTP Basic with an access token id and secret.",
    )
    install_error_handlers(app)
    for router in (system.router, assets.router, live_streams.router, chat.management, downloads.router,
                   tracks.router,
                   uploads.management, webhooks.router,
                   webhooks.mux_router, restrictions.router, usage.router, data.queries, alerts.router,
                   data_insights.router, data_insights.downloads, data_monitoring.router, metrics.router,
                   access.tokens_router, access.environments_router):
        app.include_router(router)
    for prefix in signing_keys.PREFIXES:
        app.include_router(signing_keys.router, prefix=prefix)
    metrics.install(app)
    # outermost: a shed or oversized request costs no routing, no metrics middleware and no authentication
    app.add_middleware(RequestGuard, limits=_limits, client_of=_client)
    return app


