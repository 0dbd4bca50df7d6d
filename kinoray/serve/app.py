"""The Ray Serve application: a FastAPI ingress (``kinoray-api``) and the job runner (``kinoray-runner``).

``kinoray.serve.app:app`` is the import path ``serve run``/``serve deploy`` and the RayService in
``ray-cluster.yaml`` use. :func:`build_api` makes the FastAPI app; tests serve it with uvicorn directly
(after :func:`kinoray.serve.deps.set_platform`), the Serve deployment wraps the module-level :data:`api`.

Errors: every :class:`~kinoray.errors.KinorayError` becomes ``{"error": {"type", "messages"}}`` with the status
from :data:`kinoray.errors.ERROR_TABLE`; request validation errors are ``400 invalid_parameters``; anything
unexpected is a ``500 internal_error`` whose details go to the log, not the client.
"""

from __future__ import annotations

import logging
import math
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

import kinoray
from kinoray.errors import AuthenticationError, KinorayError, RateLimitedError, http_status
from kinoray.serve import metrics
from kinoray.serve.routes import (
    assets,
    data,
    images,
    playback,
    player,
    signing_keys,
    system,
    tracks,
    uploads,
    webhooks,
)

__all__ = ["ApiIngress", "api", "app", "build_api", "error_response"]

log = logging.getLogger(__name__)

_HTTP_TYPES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type"}


def error_response(status: int, error_type: str, messages: list[str],
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": error_type, "messages": messages}}, status_code=status, headers=headers)


def _kinoray_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, KinorayError)
    status = http_status(error)
    headers: dict[str, str] = dict(getattr(error, "headers", None) or {})
    if isinstance(error, RateLimitedError):
        headers.update({"Retry-After": str(max(1, math.ceil(error.retry_after))),
                        "X-RateLimit-Limit": str(error.limit), "X-RateLimit-Remaining": "0"})
    elif isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = 'Basic realm="kinoray"'
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


def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path, "method": request.method})
    return error_response(500, "internal_error", ["internal error; the server log has the details"])


def build_api() -> FastAPI:
    """The FastAPI app with every route, the error handlers and the request metrics."""
    app = FastAPI(
        title="kinoray",
        version=kinoray.__version__,
        description="Self-hostable video infrastructure: a Mux-shaped REST API over a Ray transcode cluster. "
                    "Management endpoints take HTTP Basic with an access token id and secret.",
    )
    app.add_exception_handler(KinorayError, _kinoray_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    # playback and images last: their paths start with a playback id, so they must not shadow the API's
    for module in (system, assets, tracks, uploads, signing_keys, webhooks, metrics, player, data, images, playback):
        app.include_router(module.router)
    metrics.install(app)
    return app


api = build_api()


@serve.deployment(name="kinoray-api", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
@serve.ingress(api)
class ApiIngress:
    """The HTTP ingress. Each replica holds one :class:`~kinoray.control.Platform` (database pool, storage,
    rate limiter) and a handle to the job runner (for its metrics)."""

    def __init__(self, runner: Any = None) -> None:
        from kinoray.control.platform import Platform
        from kinoray.logs import setup_logging
        from kinoray.serve.deps import set_platform

        setup_logging()
        set_platform(Platform.from_settings())
        metrics.set_runner(runner)


def _build_app() -> serve.Application:
    from kinoray.serve.runner import JobRunner

    return cast(serve.Deployment, ApiIngress).bind(cast(serve.Deployment, JobRunner).bind())


app: serve.Application = _build_app()
