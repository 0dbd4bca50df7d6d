"""The analytics dashboard: ``GET /dashboard/`` (the page), ``GET /dashboard`` (a redirect to it) and
``GET /dashboard/static/{name}`` (its script, CSS and uPlot; an allow-list of names). Served by the delivery edge,
so the one port ``kinoray up`` opens reaches it, next to the Data API the edge forwards (same origin).

No credentials here: the page is the same for everyone and holds no data. The user signs in on the page with an
access token id and secret, which the script keeps in the tab's session storage and sends to ``/data/v1/…`` as
HTTP Basic (never in a URL). Left out of the OpenAPI document (HTML and scripts); docs/API.md describes them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from kinoray.control.playback import etag_matches
from kinoray.dashboard import CONTENT_SECURITY_POLICY, dashboard_page, page_etag, static_file
from kinoray.player.assets import StaticFile

__all__ = ["router"]

router = APIRouter(tags=["dashboard"], include_in_schema=False)

_IMMUTABLE = "public, max-age=31536000, immutable"
#: Unversioned files and the page: cached, but revalidated (by ETag) on every use, so an upgrade shows at once.
_REVALIDATE = "no-cache"
_NOT_Q0 = frozenset({"q=0", "q=0.0", "q=0.00", "q=0.000"})


def _accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in _NOT_Q0
    return False


def _answer(request: Request, body: bytes, gzipped: bytes | None, content_type: str,
            headers: dict[str, str]) -> Response:
    if etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if gzipped is not None and _accepts_gzip(request.headers.get("accept-encoding")):
        body, headers = gzipped, {**headers, "Content-Encoding": "gzip"}
    if request.method == "HEAD":
        return Response(headers={**headers, "Content-Length": str(len(body))}, media_type=content_type)
    return Response(body, headers=headers, media_type=content_type)


@router.api_route("/dashboard/static/{name}", methods=["GET", "HEAD"])
def static(request: Request, name: str) -> Response:
    """A dashboard file. With ``?v=`` equal to the file's current version (what the page links) the answer is
    immutable for a year; without it, revalidated by ETag on every use."""
    shipped: StaticFile = static_file(name)
    headers = {
        "ETag": shipped.etag,
        "Cache-Control": _IMMUTABLE if request.query_params.get("v") == shipped.version else _REVALIDATE,
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    return _answer(request, shipped.body, shipped.gzipped, shipped.content_type, headers)


@router.api_route("/dashboard/", methods=["GET", "HEAD"])
def page(request: Request) -> Response:
    """The dashboard page (sign in with an access token that has the ``data`` permission)."""
    html = dashboard_page().encode("utf-8")
    headers = {
        "ETag": page_etag(),
        "Cache-Control": _REVALIDATE,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    return _answer(request, html, None, "text/html; charset=utf-8", headers)


@router.api_route("/dashboard", methods=["GET", "HEAD"])
def to_page() -> Response:
    """``/dashboard`` → ``/dashboard/`` (relative, so it holds behind a path prefix): the page's relative URLs
    resolve from there."""
    return Response(status_code=308, headers={"Location": "dashboard/"})
