"""Playback delivery: Mux-shaped stream URLs (``/{playback_id}.m3u8``, ``.mpd``, segments, static MP4s, text
tracks ``/{playback_id}/text/{track_id}.vtt``).

Viewers are anonymous: no Basic auth here; signed playback ids take ``?token=`` (see
:mod:`kinoray.control.playback`, which also documents the URL scheme). Every answer — errors, 304s and
preflights included — carries CORS headers; bodies are streamed from storage (HTTP ``Range`` honoured),
never read whole. These routes are left out of the OpenAPI document: they serve media, not JSON.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinoray.control import playback as delivery
from kinoray.control.platform import Platform
from kinoray.errors import KinorayError, RangeNotSatisfiableError
from kinoray.serve.deps import PlatformDep

__all__ = ["DeliveryRoute", "router"]

_VIDEO = delivery.AUDIENCES["video"]
_HLS = "application/vnd.apple.mpegurl"
_DASH = "application/dash+xml"
_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
_DEFAULT_REQUEST_HEADERS = "Range, If-None-Match, If-Range, If-Modified-Since, Accept, Origin"
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")


class _Rung(Convertor[str]):
    """A rendition folder name as the packager writes it (``720p``, ``audio``): other APIs' paths never match."""

    regex = delivery.RUNG_PATTERN.pattern

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _StaticName(_Rung):
    regex = "|".join(re.escape(name) for name in delivery.STATIC_RENDITIONS)


class _TextName(_Rung):
    """``<track_id>.vtt`` or ``<track_id>.m3u8``."""

    regex = r"[A-Za-z0-9]{32}\.(?:vtt|m3u8)"


register_url_convertor("kinoray_rung", _Rung())
register_url_convertor("kinoray_static", _StaticName())
register_url_convertor("kinoray_text", _TextName())


class DeliveryRoute(APIRoute):
    """A delivery route: CORS headers on every answer; errors are never stored by caches (a CDN must not keep
    a 409 for a preparing asset or a 401 for a signed one)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except (KinorayError, StarletteHTTPException) as error:
                merged = {**delivery.CORS_HEADERS, "Cache-Control": "no-store",
                          **(getattr(error, "headers", None) or {})}
                error.headers = merged  # type: ignore[union-attr]
                raise
            for name, value in delivery.CORS_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route


router = APIRouter(tags=["playback"], route_class=DeliveryRoute, include_in_schema=False)

_MASTER = "/{playback_id}.m3u8"
_MPD = "/{playback_id}.mpd"
_RENDITION_FILE = "/{playback_id}/{rung:kinoray_rung}/{name}"
_STATIC = "/{playback_id}/{name:kinoray_static}"
_TEXT = f"/{{playback_id}}/{delivery.TEXT_DIR}/{{name:kinoray_text}}"


def _resolve(platform: Platform, request: Request) -> delivery.Playback:
    with platform.db.session() as session:
        return delivery.resolve_playback(session, str(request.path_params["playback_id"]),
                                         token=request.query_params.get("token"), audience=_VIDEO)


def _manifest_response(request: Request, playback: delivery.Playback, body: str, media_type: str) -> Response:
    payload = body.encode("utf-8")
    headers = {"ETag": delivery.text_etag(payload), "Cache-Control": delivery.cache_control(playback, immutable=False)}
    if delivery.etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        return Response(headers={**headers, "Content-Length": str(len(payload))}, media_type=media_type)
    return Response(payload, headers=headers, media_type=media_type)


def _file_response(request: Request, platform: Platform, playback: delivery.Playback, key: str,
                   media_type: str) -> Response:
    stored = delivery.stat_object(platform.store, key)
    headers = {"ETag": stored.etag, "Cache-Control": delivery.cache_control(playback, immutable=True),
               "Accept-Ranges": "bytes"}
    if delivery.etag_matches(request.headers.get("if-none-match"), stored.etag):
        return Response(status_code=304, headers=headers)
    wanted = None
    if delivery.if_range_allows(request.headers.get("if-range"), stored.etag):
        try:
            wanted = delivery.parse_range(request.headers.get("range"), stored.size)
        except ValueError as error:
            refused = RangeNotSatisfiableError(str(error))
            refused.headers = {"Accept-Ranges": "bytes", "Content-Range": f"bytes */{stored.size}"}  # type: ignore[attr-defined]
            raise refused from None
    status, start, length = 200, 0, stored.size
    if wanted is not None:
        status, start, length = 206, wanted.start, wanted.length
        headers["Content-Range"] = wanted.content_range(stored.size)
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(delivery.read_object(platform.store, key, start, length), status_code=status,
                             headers=headers, media_type=media_type)


@router.api_route(_MASTER, methods=["GET", "HEAD"])
def hls_master(request: Request, platform: PlatformDep) -> Response:
    """The HLS master playlist; ``min_resolution``, ``max_resolution``, ``rendition_order`` modifiers."""
    playback = _resolve(platform, request)
    selection = delivery.rendition_filter(playback, request.query_params)
    return _manifest_response(request, playback, delivery.hls_master(platform.store, playback, selection), _HLS)


@router.api_route(_MPD, methods=["GET", "HEAD"])
def dash_manifest(request: Request, platform: PlatformDep) -> Response:
    """The DASH MPD over the same segments, with the same modifiers."""
    playback = _resolve(platform, request)
    selection = delivery.rendition_filter(playback, request.query_params)
    return _manifest_response(request, playback, delivery.dash_manifest(platform.store, playback, selection), _DASH)


@router.api_route(_RENDITION_FILE, methods=["GET", "HEAD"])
def rendition_file(request: Request, platform: PlatformDep) -> Response:
    """A rendition's media playlist (``index.m3u8``), init segment or media segment."""
    rung, name = str(request.path_params["rung"]), str(request.path_params["name"])
    playback = _resolve(platform, request)
    if name == "index.m3u8":
        return _manifest_response(request, playback, delivery.hls_media(platform.store, playback, rung), _HLS)
    key = delivery.media_file_key(playback, rung, name)
    return _file_response(request, platform, playback, key, delivery.media_content_type(rung, name))


@router.api_route(_STATIC, methods=["GET", "HEAD"])
def static_rendition(request: Request, platform: PlatformDep) -> Response:
    """``highest.mp4``, ``capped-1080p.mp4`` or ``audio.m4a``, with byte ranges."""
    name = str(request.path_params["name"])
    playback = _resolve(platform, request)
    key = delivery.static_rendition_key(platform.store, playback, name)
    return _file_response(request, platform, playback, key, delivery.media_content_type("", name))


@router.api_route(_TEXT, methods=["GET", "HEAD"])
def text_file(request: Request, platform: PlatformDep) -> Response:
    """A text track's HLS subtitle playlist (``.m3u8``, a manifest) or its WebVTT (``.vtt``, immutable like a
    segment: a track's file never changes under its id)."""
    name = str(request.path_params["name"])
    playback = _resolve(platform, request)
    if name.endswith(".m3u8"):
        return _manifest_response(request, playback, delivery.hls_subtitles(platform.store, playback, name), _HLS)
    key = delivery.text_file_key(playback, name)
    return _file_response(request, platform, playback, key, delivery.media_content_type(delivery.TEXT_DIR, name))


async def preflight(request: Request) -> Response:
    """CORS preflight for any delivery URL (needed for multi-range or custom-header requests)."""
    asked = request.headers.get("access-control-request-headers", "").strip()
    allowed = asked if asked and len(asked) < 1024 and _HEADER_LIST.fullmatch(asked) else _DEFAULT_REQUEST_HEADERS
    return Response(status_code=204, headers={**_PREFLIGHT, "Access-Control-Allow-Headers": allowed})


for _path in (_MASTER, _MPD, _RENDITION_FILE, _STATIC, _TEXT):
    router.add_api_route(_path, preflight, methods=["OPTIONS"], name=f"preflight {_path}")

