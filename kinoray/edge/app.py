"""The delivery edge's ASGI application: one per worker process, outside Ray Serve.

What it serves, by path (and, with ``edge.domain`` set, by host — see :func:`surface_of`):

- stream URLs (:mod:`kinoray.edge.stream`): served straight from ASGI, caches per process; the segments sent
  are counted as delivery usage and flushed to the database every ``edge.usage_flush_seconds``
  (:mod:`kinoray.control.usage`);
- images, the upload URL (tus and chunked ``PUT``), player beacons, the player pages and files, the analytics
  dashboard (``/dashboard/``), live chat rooms (WebSockets under ``/live/v1/chat/``), and the edge's own ``/edge/healthz``, ``/edge/readyz`` and ``/edge/openapi.json``:
  a FastAPI app of kinoray's routers (:func:`build_edge_api`), the same code the management API used to run for
  them;
- WHIP ingest and WHEP playback (``/live/v1/whip/``, ``/live/v1/whep/``): forwarded to the live ingest's
  listener (``edge.whip_url``, :mod:`kinoray.live.whip`), where the WebRTC peer that gets the media lives;
- anything else: forwarded to the management API (``edge.api_url``, :mod:`kinoray.edge.forward`), or a typed
  404 when none is configured.

``kinoray edge`` (:mod:`kinoray.edge.server`) runs it on Granian with one process per CPU; tests run it on
uvicorn in a thread (no ``pathsend`` there: the body is streamed instead, same bytes).
"""

from __future__ import annotations

import asyncio
import re

from fastapi import FastAPI, Response
from pydantic import BaseModel

import kinoray
from kinoray.control.analytics import close_collector, cmcd_of
from kinoray.control.platform import Platform
from kinoray.control.usage import UsageFlusher, UsageMeter
from kinoray.edge.forward import Forwarder
from kinoray.edge.stream import STREAM_PATH, StreamDelivery
from kinoray.errors import NotFoundError
from kinoray.serve import readiness
from kinoray.serve.api import install_error_handlers
from kinoray.serve.asgi import Receive, Scope, Send, client_of_scope, identify_worker, send_error, served_by
from kinoray.serve.deps import PlatformDep
from kinoray.serve.readiness import Readiness
from kinoray.serve.routes import chat, dashboard, data, images, player, uploads

__all__ = ["EdgeApp", "EdgeHealth", "build_edge_api", "create_app", "surface_of"]

IMAGE_PATH = re.compile(r"/[^/]+/(?:thumbnail|animated|storyboard)\.[^/]+")
#: The Mux Data collector's paths (``POST /``: what an SDK's ``beaconCollectionDomain`` posts to, and
#: ``/data/v1/beacons``); the rest of ``/data/v1/`` (the query API) is the management API's.
BEACON_PATHS = data.COLLECTOR_PATHS
_APP_PREFIXES = ("/upload/v1/", "/player/", "/edge/", "/dashboard")
#: Live chat rooms: the only WebSockets the edge takes (:mod:`kinoray.serve.routes.chat`).
CHAT_PREFIX = "/live/v1/chat/"
_SURFACES = ("stream", "image", "beacon")
#: WebRTC signalling (WHIP, WHEP): forwarded to the live ingest's listener when ``edge.whip_url`` is set.
WEBRTC_PREFIXES = ("/live/v1/whip", "/live/v1/whep")


class EdgeHealth(BaseModel):
    status: str
    version: str
    role: str = "edge"
    worker: str  # the answering worker process, as in ``X-Served-By``


def build_edge_api() -> FastAPI:
    """The edge's FastAPI part: images, the tus/``PUT`` upload URL, beacons and the player (kinoray's routers,
    kinoray's error bodies), with its own OpenAPI document at ``/edge/openapi.json``."""
    app = FastAPI(title="kinoray edge", version=kinoray.__version__, openapi_url="/edge/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="Viewer-facing paths of kinoray: direct upload URLs (tus 1.0.0 and chunked PUT) "
                              "and player beacons. Streams, images and player pages are documented in "
                              "docs/API.md.")
    install_error_handlers(app)
    for router in (uploads.tus, data.collector, player.router, images.router, dashboard.router, chat.viewer):
        app.include_router(router)

    @app.get("/edge/healthz", tags=["system"])
    def healthz() -> EdgeHealth:
        """Liveness of this edge process (it does not ask the database or the API)."""
        return EdgeHealth(status="ok", version=kinoray.__version__, worker=served_by())

    @app.get("/edge/readyz", tags=["system"], responses=readiness.UNREADY)
    async def readyz(platform: PlatformDep, response: Response) -> Readiness:
        """Whether this edge process can serve: the database it resolves playback ids in and the object store
        it reads media from (``503`` with the same body when one fails)."""
        return await readiness.answer(platform, response)

    return app


def surface_of(host: str, domain: str | None) -> str | None:
    """``"stream"``, ``"image"`` or ``"beacon"`` when ``host`` is that subdomain of ``domain``; ``None`` (every
    path) for any other host or when no domain is set."""
    if not domain:
        return None
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    label, _, rest = name.lower().rstrip(".").partition(".")
    return label if rest == domain.lower().rstrip(".") and label in _SURFACES else None


class EdgeApp:
    """Routes one process's requests: streams natively, the FastAPI part, or the management API."""

    def __init__(self, platform: Platform, *, api_url: str | None = None, domain: str | None = None,
                 owns_platform: bool = False) -> None:
        from kinoray.serve.deps import set_platform

        set_platform(platform)  # the FastAPI part's routers read the process's platform
        identify_worker()
        self.platform, self.domain, self.owns_platform = platform, domain, owns_platform
        self.usage = UsageMeter()
        self.usage_flusher = UsageFlusher(self.usage, platform.db, platform.settings.edge.usage_flush_seconds)
        self.stream = StreamDelivery(platform, usage=self.usage, cmcd=cmcd_of(platform))  # CMCD → analytics
        self.api = build_edge_api()
        edge, api = platform.settings.edge, platform.settings.api

        def forwarder(url: str) -> Forwarder:
            return Forwarder(url, timeout=edge.forward_timeout_seconds, max_body_bytes=api.max_body_bytes,
                             max_in_flight=edge.max_forwarded_in_flight,
                             max_in_flight_per_client=api.max_in_flight_per_client,
                             client_of=lambda scope: client_of_scope(platform.clients, scope))

        self.forward = forwarder(api_url) if api_url else None
        self.forward_webrtc = forwarder(edge.whip_url) if edge.whip_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        surface = None
        if self.domain:
            host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), "")
            surface = surface_of(host, self.domain)
        if surface in (None, "stream"):
            match = STREAM_PATH.fullmatch(path)
            if match is not None:
                await self.stream(scope, receive, send, match)
                return
        if (surface is None and path.startswith(_APP_PREFIXES)) \
                or (surface in (None, "image") and IMAGE_PATH.fullmatch(path)) \
                or (surface in (None, "beacon") and path in BEACON_PATHS
                    and (path != "/" or scope["method"] in ("POST", "OPTIONS"))):
            await self.api(scope, receive, send)
            return
        if surface is None and self.forward_webrtc is not None and path.startswith(WEBRTC_PREFIXES):
            await self.forward_webrtc(scope, receive, send)
            return
        if surface is None and self.forward is not None:
            await self.forward(scope, receive, send)
            return
        where = f" on {surface}.{self.domain}" if surface else ""
        await send_error(send, NotFoundError(f"nothing at {path[:120]!r}{where}"), head=scope["method"] == "HEAD")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Live chat rooms (on the main host or ``stream.``); any other WebSocket is closed (1003)."""
        surface = None
        if self.domain:
            host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), "")
            surface = surface_of(host, self.domain)
        if surface in (None, "stream") and scope["path"].startswith(CHAT_PREFIX):
            await self.api(scope, receive, send)
            return
        # accepted, then closed (1003): a close before the accept leaves some servers' clients waiting
        if (await receive())["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def close(self) -> None:
        await asyncio.to_thread(close_collector, self.platform)  # buffered beacons reach the store
        if self.forward is not None:
            await self.forward.close()
        if self.forward_webrtc is not None:
            await self.forward_webrtc.close()
        await asyncio.to_thread(self.usage_flusher.close)  # what this process counted since the last flush
        if self.owns_platform:
            self.platform.close()


def create_app() -> EdgeApp:
    """The app of one edge worker process, from the ``KINORAY_*`` settings (Granian's factory target). The
    database is not migrated here: the management API (or ``kinoray up``) does that once."""
    from kinoray.logs import setup_logging
    from kinoray.settings import get_settings

    settings = get_settings()
    setup_logging(settings.log_level, settings.native_log_level)
    platform = Platform.from_settings(settings, migrate=False)
    return EdgeApp(platform, api_url=settings.edge.api_url, domain=settings.edge.domain, owns_platform=True)

