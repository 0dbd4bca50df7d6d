"""Images by playback id, Mux's ``image.mux.com`` URL shapes on the API's host (no access token: the playback id,
or for signed ids the ``?token=``, is the capability):

- ``GET|HEAD /{playback_id}/thumbnail.{jpg|png|webp}?time&width&height&fit_mode``
- ``GET|HEAD /{playback_id}/animated.{gif|webp}?start&end&width&height&fps``
- ``GET|HEAD /{playback_id}/storyboard.{jpg|png|webp|vtt}`` (the VTT takes ``?format=`` for its sprite)

Rendered on first request and stored (:mod:`kinoray.control.images`), within its caps (``KINORAY_IMAGES__*``):
new renders per client address (the peer, or the client a proxy in ``api.trusted_proxies`` names in
``X-Forwarded-For``) and per process, stored images per asset; over a limit the answer is a typed
``429 too_many_requests`` with ``Retry-After``. Answers carry a strong ``ETag`` (304 on ``If-None-Match``),
``Cache-Control`` (a week for public ids; for signed ones no longer than the token is valid), ``X-Image-Cache``
(``hit``; ``miss``: made and stored; ``bypass``: made, not stored) and the CORS headers stream delivery sends.
A live stream's playback id has ``thumbnail.*`` only: a recent frame of its top rung, reused for
``LIVE_THUMBNAIL_SECONDS`` (2 s, also its ``max-age``); an idle stream's is ``412`` as a preparing asset's.
They are left out of the OpenAPI document: they are binary media, not JSON resources, and docs/API.md
describes them.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from kinoray.control.images import (
    LIVE_THUMBNAIL_SECONDS,
    AnimatedParams,
    ImageCache,
    ImageKind,
    ImageResult,
    ImageSource,
    StoryboardParams,
    ThumbnailParams,
    guard_for,
    image_options,
    resolve_source,
)
from kinoray.control.playback import CORS_HEADERS, etag_matches
from kinoray.control.restrictions import Viewer
from kinoray.errors import NotFoundError
from kinoray.media.images import ANIMATED_FORMATS, STILL_FORMATS
from kinoray.serve.deps import PlatformDep, client_address

__all__ = ["PUBLIC_MAX_AGE", "router"]

router = APIRouter(tags=["images"])

#: Seconds a public image may be cached anywhere. Images are cut from immutable media and their storage keys
#: include the render version, so a week is safe; ETags make revalidation after it cheap.
PUBLIC_MAX_AGE = 7 * 24 * 3600

Token = Annotated[str | None, Query(description="JWT for signed playback ids")]


def _cache_control(source: ImageSource, media_type: str) -> str:
    """Public ids: a week anywhere. Signed ids: no longer than the token opens the URL, as stream delivery does
    for segments; a storyboard VTT of a signed id embeds the token, so like a manifest it is never stored."""
    seconds_left = source.playback.seconds_left
    if source.playback.live:  # the live edge's frame: as long as this process reuses it
        age = math.ceil(LIVE_THUMBNAIL_SECONDS)
        return f"public, max-age={age if seconds_left is None else min(age, seconds_left)}"
    if seconds_left is None:
        return f"public, max-age={PUBLIC_MAX_AGE}"
    if media_type.startswith("text/vtt"):
        return "private, no-store"
    return f"public, max-age={min(PUBLIC_MAX_AGE, seconds_left)}"


def _respond(request: Request, source: ImageSource, result: ImageResult) -> Response:
    headers = {**CORS_HEADERS, "ETag": result.etag, "Cache-Control": _cache_control(source, result.media_type),
               "X-Image-Cache": result.cache_status}
    if etag_matches(request.headers.get("if-none-match"), result.etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":  # the length of what GET sends, and no body (whatever server runs the app)
        return Response(headers={**headers, "Content-Length": str(len(result.body))}, media_type=result.media_type)
    return Response(result.body, media_type=result.media_type, headers=headers)


def _source(request: Request, platform: PlatformDep, playback_id: str, token: str | None,
            kind: ImageKind) -> ImageSource:
    return resolve_source(platform.resolver, playback_id, token=token, kind=kind,
                          viewer=Viewer.from_headers(request.headers))


def _cache(request: Request, platform: PlatformDep) -> ImageCache:
    """The process's image cache under its caps, charging new renders to the caller's address (the peer, or
    behind a proxy in ``api.trusted_proxies`` the client it names in ``X-Forwarded-For``)."""
    return ImageCache(platform.store, guard=guard_for(platform), client=client_address(request, platform))


def _known(extension: str, allowed: tuple[str, ...], what: str) -> None:
    if extension not in allowed:
        raise NotFoundError(f"no {what} format {extension[:16]!r} (one of {', '.join(allowed)})")


@router.api_route("/{playback_id}/thumbnail.{extension}", methods=["GET", "HEAD"], include_in_schema=False)
def thumbnail(request: Request, playback_id: str, extension: str, platform: PlatformDep,
              time: float | None = None, width: int | None = None, height: int | None = None,
              fit_mode: str = "preserve", token: Token = None) -> Response:
    """The exact frame at ``time`` seconds (default: the middle)."""
    _known(extension, STILL_FORMATS, "thumbnail")
    source = _source(request, platform, playback_id, token, "thumbnail")
    options = image_options(source, {"time": time, "width": width, "height": height, "fit_mode": fit_mode})
    params = ThumbnailParams.parse(source, extension, **options)
    return _respond(request, source, _cache(request, platform).thumbnail(source, params))


@router.api_route("/{playback_id}/animated.{extension}", methods=["GET", "HEAD"], include_in_schema=False)
def animated(request: Request, playback_id: str, extension: str, platform: PlatformDep,
             start: float | None = None, end: float | None = None, width: int | None = None,
             height: int | None = None, fps: int | None = None, token: Token = None) -> Response:
    """A looping GIF or animated WebP of ``start``..``end``."""
    _known(extension, ANIMATED_FORMATS, "animated image")
    source = _source(request, platform, playback_id, token, "animated")
    options = image_options(source, {"start": start, "end": end, "width": width, "height": height, "fps": fps})
    params = AnimatedParams.parse(source, extension, **options)
    return _respond(request, source, _cache(request, platform).animated(source, params))


@router.api_route("/{playback_id}/storyboard.{extension}", methods=["GET", "HEAD"], include_in_schema=False)
def storyboard(request: Request, playback_id: str, extension: str, platform: PlatformDep,
               image_format: Annotated[str | None, Query(alias="format")] = None, token: Token = None) -> Response:
    """The tiled sprite, or the WebVTT that maps time ranges to its tiles (``#xywh=``)."""
    _known(extension, (*STILL_FORMATS, "vtt"), "storyboard")
    source = _source(request, platform, playback_id, token, "storyboard")
    chosen = image_options(source, {"format": image_format}).get("format")
    params = StoryboardParams.parse(extension, image_format=chosen)
    return _respond(request, source, _cache(request, platform).storyboard(source, params))
