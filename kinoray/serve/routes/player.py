"""The web player: ``GET /player/{playback_id}`` (an embeddable page with the ``<kinoray-player>`` web component),
``GET /player/{playback_id}/dash`` (dash.js's reference player on the same asset) and
``GET /player/static/{name}`` (the component, its CSS, hls.js and dash.js; an allow-list of names).

No access token: the page only names the playback id and passes the signed-playback tokens from its query
(``?token=&thumbnail_token=&storyboard_token=``, Mux's ``aud`` v, t and s) to the player as attributes; the
stream and image URLs check them. The page does not look the playback id up, so it says nothing about
which ids exist: the player shows the delivery's typed error. Left out of the OpenAPI document (HTML and
scripts, not JSON resources); docs/API.md describes them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from kinoray.control.playback import etag_matches
from kinoray.errors import NotFoundError
from kinoray.player import PlayerPage, dash_page, player_page, static_file
from kinoray.player.pages import CONTENT_SECURITY_POLICY
from kinoray.store.models import is_valid_id

__all__ = ["PAGE_MAX_AGE", "router"]

router = APIRouter(tags=["player"], include_in_schema=False)

#: Seconds a shared cache may keep a page without tokens (it changes only when kinoray is upgraded).
PAGE_MAX_AGE = 300
_IMMUTABLE = "public, max-age=31536000, immutable"
_Token = Annotated[str | None, Query(max_length=8192)]


def _accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


@router.api_route("/player/static/{name}", methods=["GET", "HEAD"])
def static(request: Request, name: str) -> Response:
    """A player file. With ``?v=`` equal to the file's current version (what the pages link) the answer is
    immutable for a year; without it (a hand-written ``<script src>``) five minutes, revalidated by ETag."""
    shipped = static_file(name)
    headers = {
        "ETag": shipped.etag,
        "Cache-Control": _IMMUTABLE if request.query_params.get("v") == shipped.version
        else f"public, max-age={PAGE_MAX_AGE}",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if etag_matches(request.headers.get("if-none-match"), shipped.etag):
        return Response(status_code=304, headers=headers)
    body = shipped.body
    if shipped.gzipped is not None and _accepts_gzip(request.headers.get("accept-encoding")):
        body = shipped.gzipped
        headers["Content-Encoding"] = "gzip"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(headers=headers, media_type=shipped.content_type)
    return Response(body, headers=headers, media_type=shipped.content_type)


def _page(playback_id: str, token: str | None, thumbnail_token: str | None, storyboard_token: str | None,
          autoplay: bool, muted: bool) -> PlayerPage:
    if not is_valid_id(playback_id):
        raise NotFoundError("no such playback id")
    return PlayerPage(playback_id, token=token or None, thumbnail_token=thumbnail_token or None,
                      storyboard_token=storyboard_token or None, autoplay=autoplay, muted=muted)


def _html(request: Request, page: PlayerPage, html: str) -> Response:
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        # a page with tokens in it belongs to one viewer: never stored by a shared cache
        "Cache-Control": "private, no-store" if page.has_tokens else f"public, max-age={PAGE_MAX_AGE}",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }
    body = html.encode("utf-8")
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        body = b""
    return Response(body, headers=headers, media_type="text/html; charset=utf-8")


@router.api_route("/player/{playback_id}", methods=["GET", "HEAD"])
def player(request: Request, playback_id: str, token: _Token = None, thumbnail_token: _Token = None,
           storyboard_token: _Token = None, autoplay: bool = False, muted: bool = False) -> Response:
    """The embeddable player page (``<iframe src="…/player/ID" allow="autoplay; fullscreen">``)."""
    page = _page(playback_id, token, thumbnail_token, storyboard_token, autoplay, muted)
    return _html(request, page, player_page(page))


@router.api_route("/player/{playback_id}/dash", methods=["GET", "HEAD"])
def dash(request: Request, playback_id: str, token: _Token = None, autoplay: bool = False,
         muted: bool = False) -> Response:
    """dash.js on ``/{playback_id}.mpd``: a reference DASH client for checking the MPD in a browser."""
    page = _page(playback_id, token, None, None, autoplay, muted)
    return _html(request, page, dash_page(page))
