"""Direct uploads: the Mux-shaped resource (:data:`management`: ``/video/v1/uploads``, authenticated, on the
management API) and the upload URL itself (:data:`tus`: ``/upload/v1/{id}``, on the delivery edge), which speaks tus 1.0.0 (core, creation, creation-with-upload, creation-defer-length,
termination, checksum) and UpChunk's ``PUT`` with ``Content-Range``.

The upload URL takes no credentials: its 190-bit random id is the capability, as Mux's signed upload URL is.
Every tus answer, errors included, carries ``Tus-Resumable``; a browser origin named by the upload's
``cors_origin`` gets CORS headers on every answer and its preflight. The protocol itself lives in
:mod:`kinoray.control.uploads`; this module parses headers and moves the body from the event loop to the worker
thread that writes it.

A client that goes away mid-body keeps the bytes that arrived: the body reader takes every chunk the server
delivered before ``http.disconnect`` (or, if the server cancels the request instead, before the cancellation),
the worker thread commits them as a part, and the upload's lock is released as the request ends, so a ``HEAD``
and the resuming ``PATCH`` right after the cut see the new offset and no ``423``.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from kinoray.control import uploads
from kinoray.control.platform import Platform
from kinoray.control.uploads import UploadCreate
from kinoray.control.views import UploadView
from kinoray.errors import (
    InvalidParametersError,
    KinorayError,
    UnsupportedContentTypeError,
    UnsupportedVersionError,
)
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PageDep, PlatformDep, get_platform
from kinoray.serve.schemas import AUTHENTICATED, CursorListing, Envelope, error_responses
from kinoray.store.models import Upload, UploadStatus
from kinoray.telemetry import UPLOAD_BYTES

__all__ = ["TUS_EXTENSIONS", "TUS_VERSION", "TusRoute", "management", "tus"]

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,checksum"
OFFSET_STREAM = "application/offset+octet-stream"
#: Bodies being received at once per replica; each holds a worker thread (and, on PostgreSQL, a pooled
#: connection) for as long as its client takes to send. Further uploads wait for a slot.
UPLOAD_CONCURRENCY = 64
#: Seconds a body may go without a byte before the request ends as if the client had gone: what arrived is
#: kept, the upload's lock is released (a client whose network died silently can resume at once), and the
#: answer carries the new offset.
BODY_IDLE_TIMEOUT = 60.0
_BATCH = 1024 * 1024  # bytes handed from the event loop to the writing thread at a time
_CORS_METHODS = "POST, HEAD, PATCH, PUT, DELETE, OPTIONS"
_CORS_REQUEST_HEADERS = ("Tus-Resumable, Upload-Length, Upload-Defer-Length, Upload-Offset, Upload-Metadata, "
                         "Upload-Checksum, Content-Type, Content-Range, X-HTTP-Method-Override, X-Requested-With")
_CORS_EXPOSED = ("Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, Upload-Offset, "
                 "Upload-Length, Upload-Defer-Length, Upload-Metadata, Upload-Expires, Location, Range")
_CORS_MAX_AGE = "86400"
_INTEGER = re.compile(r"[0-9]{1,19}")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d{1,19})-(\d{1,19})|\*)/(\d{1,19}|\*)")


# --- the resource ------------------------------------------------------------------------------------------

management = APIRouter(prefix="/video/v1/uploads", tags=["uploads"], route_class=IdempotentRoute)


@management.post("", status_code=201, response_model=Envelope[UploadView],
                 responses=error_responses(*AUTHENTICATED, 409, 422))
def create_upload(body: UploadCreate, platform: PlatformDep, token: CurrentToken) -> Envelope[UploadView]:
    """A new direct upload (``waiting``); send the file to its ``url``. The asset is created, with
    ``new_asset_settings``, once the last byte is in."""
    with platform.db.session() as session:
        return Envelope(data=uploads.upload_view(uploads.create_upload(session, platform.settings, body),
                                                 platform.settings))


@management.get("", response_model=CursorListing[UploadView], response_model_exclude_none=True,
                responses=error_responses(*AUTHENTICATED))
def list_uploads(platform: PlatformDep, token: CurrentToken, pages: PageDep) -> CursorListing[UploadView]:
    """Newest first (``next_cursor`` is left out on the last page)."""
    with platform.db.reader() as session:
        rows, next_cursor = uploads.list_uploads(session, limit=pages.limit, cursor=pages.cursor, page=pages.page)
        return CursorListing(data=[uploads.upload_view(row, platform.settings) for row in rows],
                             next_cursor=next_cursor)


@management.get("/{upload_id}", response_model=Envelope[UploadView], responses=error_responses(*AUTHENTICATED, 404))
def get_upload(upload_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[UploadView]:
    with platform.db.reader() as session:
        return Envelope(data=uploads.upload_view(uploads.get_upload(session, upload_id), platform.settings))


@management.put("/{upload_id}/cancel", response_model=Envelope[UploadView],
                responses=error_responses(*AUTHENTICATED, 404, 409, 423))
def cancel_upload(upload_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[UploadView]:
    """Stop a ``waiting`` upload: ``cancelled``, received bytes deleted, no asset. Cancelling again returns it;
    an upload that already ended otherwise is a 409."""
    return Envelope(data=uploads.upload_view(uploads.cancel_upload(platform, upload_id), platform.settings))


# --- the upload URL ----------------------------------------------------------------------------------------


def _cors_headers(request: Request, allowed: str | None) -> dict[str, str]:
    origin = request.headers.get("origin")
    if not origin or allowed is None or allowed not in ("*", origin):
        return {}
    headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": _CORS_EXPOSED,
               "Vary": "Origin"}
    if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
        headers.update({"Access-Control-Allow-Methods": _CORS_METHODS,
                        "Access-Control-Allow-Headers": _CORS_REQUEST_HEADERS,
                        "Access-Control-Max-Age": _CORS_MAX_AGE})
    return headers


class TusRoute(APIRoute):
    """A route of the upload URL: ``Tus-Resumable`` and (for the upload's ``cors_origin``) CORS headers on every
    answer, errors included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            allowed = None
            if "origin" in request.headers:
                allowed = await run_in_threadpool(uploads.cors_origin, get_platform(),
                                                  str(request.path_params.get("upload_id", "")))
            extra = {"Tus-Resumable": TUS_VERSION, **_cors_headers(request, allowed)}
            try:
                response = await handler(request)
            except KinorayError as error:
                error.add_headers(extra)
                raise
            for name, value in extra.items():
                if name not in response.headers:
                    response.headers[name] = value
            return response

        return route


tus = APIRouter(prefix="/upload/v1", tags=["upload endpoint"], route_class=TusRoute)
_TUS_ERRORS = error_responses(400, 404, 409, 410, 412, 413, 415, 423, 460)


def _header(name: str, description: str, *, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


_TUS_RESUMABLE = _header("Tus-Resumable", "the tus version; anything else is a 412", required=True,
                         type="string", enum=[TUS_VERSION])
_BYTES = {"schema": {"type": "string", "format": "binary"}}


def _documented(*parameters: dict[str, Any], body: str | None = None) -> dict[str, Any]:
    """OpenAPI for headers (and a raw body) the handler reads itself, so tus errors keep their own status codes.
    tus bodies (``application/offset+octet-stream``) are described in words only: OpenAPI tools cannot make
    that media type."""
    extra: dict[str, Any] = {"parameters": list(parameters)}
    if body is not None:
        extra["requestBody"] = {"required": False, "content": {body: _BYTES}}
    return extra


def _require_tus(request: Request) -> None:
    """tus: a request without ``Tus-Resumable: 1.0.0`` is refused (412) before anything is looked at."""
    version = request.headers.get("tus-resumable")
    if version != TUS_VERSION:
        error = UnsupportedVersionError(f"Tus-Resumable {version!r} is not supported; this server speaks "
                                        f"{TUS_VERSION}" if version else "the Tus-Resumable header is required")
        raise error.add_headers({"Tus-Version": TUS_VERSION})


def _int_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not _INTEGER.fullmatch(value.strip()):
        raise InvalidParametersError(f"{name} must be a non-negative integer")
    return int(value)


def _is_offset_stream(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == OFFSET_STREAM


def _state_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.upload_offset)}
    if upload.status == UploadStatus.WAITING:
        headers["Upload-Expires"] = uploads.expires_header(upload)
    return headers


class _RequestBody:
    """The request body as a blocking iterator for a worker thread; each step fetches up to ``_BATCH`` bytes
    from the event loop, straight from the ASGI ``receive`` (no async generator: nothing to close, nothing
    that can be closed while it runs). The body ends early (``interrupted``) instead of raising when the client
    goes away (``http.disconnect``), sends nothing for :data:`BODY_IDLE_TIMEOUT` seconds, or the server cancels
    the request (:meth:`abort`, or the worker's call into the event loop is cancelled): every byte received
    before that is still handed over, so it is kept."""

    def __init__(self, request: Request) -> None:
        self._receive = request.receive
        self._batch = bytearray()  # filled by the event loop, taken by the worker thread between fills
        self._reading: anyio.CancelScope | None = None  # the wait for the next message, while there is one
        self._done = self._aborted = False
        self.interrupted = False

    def abort(self) -> None:
        """End the body where it is (on the event loop, when the request's task was cancelled): the worker
        thread gets what was received and commits it, and the upload's lock goes with it, at once rather than
        after :data:`BODY_IDLE_TIMEOUT`."""
        self._aborted = True
        if self._reading is not None:
            self._reading.cancel()

    async def _fill(self) -> None:
        while len(self._batch) < _BATCH and not self._done:
            message: dict[str, Any] = {}
            if not self._aborted:
                with anyio.move_on_after(BODY_IDLE_TIMEOUT) as self._reading:
                    message = dict(await self._receive())
                self._reading = None
            kind = message.get("type")
            if kind == "http.request":
                chunk = message.get("body", b"")
                UPLOAD_BYTES.inc(len(chunk))
                self._batch += chunk
                self._done = not message.get("more_body", False)
            else:  # http.disconnect, silence past the idle timeout, or aborted
                self._done = self.interrupted = True

    def __iter__(self) -> Iterator[bytes]:
        while not self._done:
            try:
                anyio.from_thread.run(self._fill)
            except (concurrent.futures.CancelledError, anyio.RunFinishedError):
                self._done = self.interrupted = True  # the request was cancelled: keep what it had received
            if self._batch:
                data = bytes(self._batch)
                self._batch.clear()
                yield data


def _upload_slots(request: Request) -> anyio.CapacityLimiter:
    # Made on first use: a limiter belongs to the event loop it was created in.
    slots = getattr(request.app.state, "upload_slots", None)
    if slots is None:
        slots = request.app.state.upload_slots = anyio.CapacityLimiter(UPLOAD_CONCURRENCY)
    return slots


async def _receive(request: Request, platform: Platform, upload_id: str, *, offset: int,
                   content_length: int | None, **options: Any) -> Upload:
    """Stream the body into the upload from a worker thread (its own pool of :data:`UPLOAD_CONCURRENCY`, so
    slow clients cannot starve the API's ordinary threads). A server that cancels the request when its client
    goes (instead of sending ``http.disconnect``) stops the body where it is: the thread, which a cancellation
    cannot stop, still commits what arrived and releases the upload's lock."""
    body = _RequestBody(request)
    try:
        return await anyio.to_thread.run_sync(
            partial(uploads.receive, platform, upload_id, body, offset=offset, content_length=content_length,
                    **options),
            limiter=_upload_slots(request))
    except anyio.get_cancelled_exc_class():
        body.abort()
        raise


def _lookup(platform: Platform, upload_id: str) -> Upload:
    with platform.db.reader() as session:
        return uploads.get_upload(session, upload_id)


@tus.options("/{upload_id}", status_code=204, responses=error_responses(404))
async def tus_options(upload_id: str, platform: PlatformDep) -> Response:
    """What this server supports (tus discovery), and the CORS preflight for the upload's ``cors_origin``."""
    await run_in_threadpool(_lookup, platform, upload_id)
    return Response(status_code=204, headers={
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(platform.settings.api.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(uploads.CHECKSUM_ALGORITHMS),
    })


@tus.head("/{upload_id}", status_code=200, responses=_TUS_ERRORS, openapi_extra=_documented(_TUS_RESUMABLE))
async def tus_head(upload_id: str, request: Request, platform: PlatformDep) -> Response:
    """The upload's offset (the bytes stored, all of them once complete), length and metadata."""
    _require_tus(request)
    upload = await run_in_threadpool(uploads.tus_status, platform, upload_id)
    headers = {**_state_headers(upload), "Cache-Control": "no-store"}
    if upload.upload_length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.upload_length)
    if upload.upload_metadata:
        headers["Upload-Metadata"] = uploads.encode_metadata(upload.upload_metadata)
    return Response(status_code=200, headers=headers)


@tus.post("/{upload_id}", status_code=201, responses=_TUS_ERRORS, openapi_extra=_documented(
    _TUS_RESUMABLE,
    _header("Upload-Length", "the file's size in bytes (or send Upload-Defer-Length)", type="integer", minimum=0),
    _header("Upload-Defer-Length", "1: the size is given later, with a PATCH", type="string", enum=["1"]),
    _header("Upload-Metadata", "comma-separated 'key base64(value)' pairs"),
    _header("Upload-Checksum", "'<sha1|sha256|md5> <base64 digest>' of a body sent with the creation"),
    _header("X-HTTP-Method-Override", "PATCH or DELETE, for clients that cannot send those methods")))
async def tus_create(upload_id: str, request: Request, platform: PlatformDep) -> Response:
    """tus creation on the upload's own URL: ``Upload-Length`` (or ``Upload-Defer-Length: 1``) and
    ``Upload-Metadata``; with an ``application/offset+octet-stream`` body, its first bytes too. Also takes
    ``X-HTTP-Method-Override: PATCH|DELETE`` for clients that cannot send those methods."""
    override = request.headers.get("x-http-method-override", "").strip().upper()
    if override == "PATCH":
        return await tus_patch(upload_id, request, platform)
    if override == "DELETE":
        return await tus_delete(upload_id, request, platform)
    _require_tus(request)
    await run_in_threadpool(_lookup, platform, upload_id)
    length = _int_header(request, "upload-length")
    defer = request.headers.get("upload-defer-length")
    if defer is not None and defer.strip() != "1":
        raise InvalidParametersError("Upload-Defer-Length must be 1")
    if (length is None) == (defer is None):
        raise InvalidParametersError("give exactly one of Upload-Length and Upload-Defer-Length: 1")
    metadata = uploads.parse_metadata(request.headers.get("upload-metadata"))
    checksum = uploads.parse_checksum(request.headers.get("upload-checksum"))
    upload = await run_in_threadpool(partial(uploads.tus_create, platform, upload_id, length=length,
                                             metadata=metadata))
    if _is_offset_stream(request) and upload.status == UploadStatus.WAITING:
        upload = await _receive(request, platform, upload_id, offset=0,
                                content_length=_int_header(request, "content-length"), checksum=checksum)
    return Response(status_code=201, headers={"Location": uploads.upload_url(platform.settings, upload_id),
                                              **_state_headers(upload)})


@tus.patch("/{upload_id}", status_code=204, responses=_TUS_ERRORS, openapi_extra=_documented(
    _TUS_RESUMABLE,
    _header("Upload-Offset", "where the body goes: the upload's current offset", required=True, type="integer",
            minimum=0),
    _header("Upload-Checksum", "'<sha1|sha256|md5> <base64 digest>' of the body; a mismatch is a 460"),
    _header("Upload-Length", "the size, once, if creation deferred it", type="integer", minimum=0)))
async def tus_patch(upload_id: str, request: Request, platform: PlatformDep) -> Response:
    """Append the body at ``Upload-Offset`` (which must be the upload's offset); 204 with the new offset. A body
    cut short by a lost connection is kept as far as it arrived, unless it carried ``Upload-Checksum``. An upload
    whose tus creation did not complete (no ``Upload-Length``, no ``Upload-Defer-Length``) takes nothing: 409
    ``upload_not_created``."""
    _require_tus(request)
    await run_in_threadpool(_lookup, platform, upload_id)
    if not _is_offset_stream(request):
        raise UnsupportedContentTypeError(f"PATCH needs Content-Type: {OFFSET_STREAM}")
    offset = _int_header(request, "upload-offset")
    if offset is None:
        raise InvalidParametersError("the Upload-Offset header is required")
    checksum = uploads.parse_checksum(request.headers.get("upload-checksum"))
    upload = await _receive(request, platform, upload_id, offset=offset,
                            content_length=_int_header(request, "content-length"), checksum=checksum,
                            upload_length=_int_header(request, "upload-length"))
    return Response(status_code=204, headers=_state_headers(upload))


@tus.delete("/{upload_id}", status_code=204, responses=_TUS_ERRORS, openapi_extra=_documented(_TUS_RESUMABLE))
async def tus_delete(upload_id: str, request: Request, platform: PlatformDep) -> Response:
    """tus termination: the upload is cancelled and its bytes deleted; later requests get 410."""
    _require_tus(request)
    await run_in_threadpool(uploads.terminate, platform, upload_id)
    return Response(status_code=204)


def _content_range(header: str) -> tuple[int | None, int | None, int | None]:
    """``bytes START-END/TOTAL`` (TOTAL may be ``*``) or ``bytes */TOTAL`` (a status query)."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        raise InvalidParametersError("Content-Range must be 'bytes START-END/TOTAL' or 'bytes */TOTAL'")
    first, last, total_text = match.groups()
    total = None if total_text == "*" else int(total_text)
    if first is None or last is None:
        return None, None, total
    start, end = int(first), int(last)
    if end < start or (total is not None and end >= total):
        raise InvalidParametersError(f"Content-Range {header.strip()!r} is not a range inside the file")
    return start, end, total


@tus.put("/{upload_id}", status_code=308, responses={
    200: {"model": Envelope[UploadView], "description": "the last byte is in: the upload with its asset_id"},
    308: {"description": "more to come; Range: bytes=0-LAST names the bytes stored"},
    **error_responses(400, 404, 409, 410, 413, 423)}, openapi_extra=_documented(
        _header("Content-Range", "'bytes START-END/TOTAL' (TOTAL may be *), or 'bytes */TOTAL' to ask for the "
                "bytes stored; absent: the body is the whole file"),
        body="application/octet-stream"))
async def put_chunk(upload_id: str, request: Request, platform: PlatformDep) -> Response:
    """UpChunk / resumable-PUT style: ``Content-Range: bytes START-END/TOTAL`` with START at the bytes stored
    (a chunk already stored is acknowledged again); without Content-Range the body is the whole file."""
    await run_in_threadpool(_lookup, platform, upload_id)
    content_length = _int_header(request, "content-length")
    header = request.headers.get("content-range")
    total: int | None
    if header is None:
        if content_length is None:
            raise InvalidParametersError("PUT needs Content-Range, or Content-Length for the whole file")
        start, end, total = 0, content_length - 1, content_length
    else:
        first, last, total = _content_range(header)
        if first is None or last is None:
            upload = await run_in_threadpool(uploads.tus_status, platform, upload_id)
            return _put_answer(upload, platform)
        start, end = first, last
    size = end - start + 1
    if content_length is not None and content_length != size:
        raise InvalidParametersError(f"Content-Length {content_length} does not match Content-Range ({size} bytes)")
    upload = await _receive(request, platform, upload_id, offset=start, content_length=size, upload_length=total,
                            acknowledge_stored=True, creates=True)
    return _put_answer(upload, platform)


def _put_answer(upload: Upload, platform: Platform) -> Response:
    if upload.status == UploadStatus.ASSET_CREATED:
        return JSONResponse(Envelope(data=uploads.upload_view(upload, platform.settings)).model_dump(mode="json"),
                            status_code=200)
    headers = {"Range": f"bytes=0-{upload.upload_offset - 1}"} if upload.upload_offset else {}
    return Response(status_code=308, headers=headers)


