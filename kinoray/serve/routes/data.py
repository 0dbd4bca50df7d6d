"""Player beacons: ``POST /data/v1/events`` (Mux Data's event model; :mod:`kinoray.control.analytics`).

Browsers send these, so there are no credentials: a per-client-IP rate limit (the API's token bucket, keyed
``beacon:<ip>``) bounds what one client can write, and the body is bounded (200 events, 64 KiB) before it is
parsed. CORS allows any origin, on errors too (a player on another site reads the answer), and ``OPTIONS``
answers preflights; ``navigator.sendBeacon`` posts ``text/plain``, which is read as JSON like
``application/json`` (and keeps ``fetch`` posts preflight-free).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinoray.control.analytics import MAX_BATCH_BYTES, BeaconBatch, store_batch
from kinoray.errors import InvalidParametersError, KinorayError, RateLimitedError
from kinoray.serve.deps import PlatformDep, client_address, get_platform
from kinoray.serve.schemas import error_responses

__all__ = ["BeaconAccepted", "BeaconAcceptedEnvelope", "BeaconRoute", "router"]

_CORS = {"Access-Control-Allow-Origin": "*"}
_PREFLIGHT = {**_CORS, "Access-Control-Allow-Methods": "POST, OPTIONS",
              "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "86400"}
_JSON_TYPES = ("application/json", "text/plain", "")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _bounded_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes :data:`MAX_BATCH_BYTES`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BATCH_BYTES:
        raise StarletteHTTPException(413, f"beacon batches are at most {MAX_BATCH_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BATCH_BYTES:
            raise StarletteHTTPException(413, f"beacon batches are at most {MAX_BATCH_BYTES} bytes")
    return bytes(body)


def _validation_message(error: RequestValidationError) -> str:
    problems = []
    for problem in error.errors()[:10]:
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
        if problem.get("type") == "json_invalid":
            where = "body"
        problems.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid beacon batch"


class BeaconRoute(APIRoute):
    """Rate limit, size bound and content type before parsing; a ``text/plain`` body is parsed as JSON; every
    answer, errors included, carries ``Access-Control-Allow-Origin: *``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if "POST" not in (self.methods or ()):
            return handler

        async def route(request: Request) -> Response:
            try:
                platform = get_platform()
                decision = platform.limiter.hit(f"beacon:{client_address(request, platform)}")
                if not decision.allowed:
                    raise RateLimitedError(f"beacon rate limit of {platform.settings.api.rate_limit_per_second:g} "
                                           f"requests/s per client exceeded", decision.retry_after, decision.limit)
                if _media_type(request) not in _JSON_TYPES:
                    raise StarletteHTTPException(415, "send the batch as application/json or text/plain")
                body = await _bounded_body(request)
                headers = [(k, v) for k, v in request.scope["headers"] if k not in (b"content-type", b"content-length")]
                scope = {**request.scope, "headers": [*headers, (b"content-type", b"application/json"),
                                                      (b"content-length", str(len(body)).encode())]}

                async def receive() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                try:
                    response = await handler(Request(scope, receive))
                except RequestValidationError as error:
                    raise InvalidParametersError(_validation_message(error)) from None
            except (KinorayError, StarletteHTTPException) as error:
                error.headers = {**(getattr(error, "headers", None) or {}), **_CORS}  # type: ignore[union-attr]
                raise
            response.headers.update(_CORS)
            return response

        return route


router = APIRouter(tags=["data"], route_class=BeaconRoute)


class BeaconAccepted(BaseModel):
    accepted: int


class BeaconAcceptedEnvelope(BaseModel):
    data: BeaconAccepted


@router.post("/data/v1/events", status_code=202, response_model=BeaconAcceptedEnvelope,
             responses=error_responses(400, 413, 415, 429))
async def post_events(batch: BeaconBatch, platform: PlatformDep) -> BeaconAcceptedEnvelope:
    """Store a batch of player beacons (Mux Data's event model: `playerready`, `viewinit`, `play`, `playing`,
    `pause`, `seeking`, `seeked`, `rebufferstart`, `rebufferend`, `renditionchange`, `error`, `ended`,
    `heartbeat`, `viewend`). No credentials: browsers send these, rate-limited per client IP. The body may be
    sent as `text/plain` too (what `navigator.sendBeacon` uses); at most 200 events and 64 KiB."""
    accepted = await run_in_threadpool(store_batch, platform.db, batch)
    return BeaconAcceptedEnvelope(data=BeaconAccepted(accepted=accepted))


@router.options("/data/v1/events", include_in_schema=False)
def preflight() -> Response:
    return Response(status_code=204, headers=_PREFLIGHT)
