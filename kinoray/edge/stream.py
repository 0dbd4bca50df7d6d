"""Stream delivery on the edge: Mux-shaped stream URLs served straight from ASGI (see
:mod:`kinoray.control.playback` for the URL scheme, the token rules and the HTTP semantics it implements)::

    /{playback_id}.m3u8    /{playback_id}.mpd    /{playback_id}/{rung}/{index.m3u8|init.mp4|seg_N.m4s}
    /{playback_id}/{highest.mp4|720p.mp4|audio.m4a|...}    /{playback_id}/text/{track_id}.{vtt|m3u8}
    /master/{token}    (a master download: the asset's original input while its token lives)

Per request, with warm caches, no I/O but one ``stat`` and the file itself: the playback id's row, the signing
key and the verified token come from the process's :class:`~kinoray.control.resolver.PlaybackResolver`,
rewritten manifests and (S3) object metadata from :class:`StreamCache`. Misses go to a worker thread, so the event
loop never waits on the database or S3. A signed token naming a playback restriction is checked against the
request's ``Referer`` and ``User-Agent`` (:mod:`kinoray.control.restrictions`, the rule cached by the resolver).
A request carrying CMCD (the ``CMCD`` query parameter or ``CMCD-*`` headers) is noted for analytics
(:mod:`kinoray.analytics.cmcd`: a tuple appended to the process's buffer, parsed by its drain thread).
Each media segment sent is counted as delivery usage after it went out (:mod:`kinoray.control.usage`: a dict
increment; the process's flusher thread writes the counts to the database). A live stream's media playlists are
read on every request; a low-latency (LL-HLS) one answers ``_HLS_msn``/``_HLS_part`` blocking reloads and
``_HLS_skip`` delta updates, and a request for a part not written yet is held until it is
(:mod:`kinoray.live.llhls` decides, :mod:`kinoray.edge.live_wait` waits on the event loop).

Bodies: on a local store a whole file goes out with ``http.response.pathsend`` where the server offers it
(Granian sends it from Rust: no Python on the byte path); byte ranges, S3 objects and servers without
pathsend are streamed in 256 KiB blocks read on a worker thread, one block in flight (memory bounded per
response). Every answer, errors and 304s included, carries the CORS headers; errors are ``no-store``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kinoray.analytics.cmcd import CMCD_HEADERS, CmcdBuffer
from kinoray.control import playback as delivery
from kinoray.control.master import TOKEN_PATTERN, master_key
from kinoray.control.platform import Platform
from kinoray.control.resolver import Resolved, TtlCache
from kinoray.control.restrictions import Viewer
from kinoray.control.usage import UsageMeter
from kinoray.edge.live_wait import LivePlaylists
from kinoray.errors import (
    DatabaseUnavailableError,
    InvalidParametersError,
    KinorayError,
    MethodNotAllowedError,
    NotFoundError,
    RangeNotSatisfiableError,
    ServiceUnavailableError,
    StorageError,
)
from kinoray.live import llhls
from kinoray.media.manifest_rewrite import rewrite_hls_media
from kinoray.serve.asgi import EdgeRequest, Receive, Scope, Send, send_error, send_response, send_start
from kinoray.settings import EdgeSettings
from kinoray.store.db import is_transient
from kinoray.store.objects import ObjectStore

__all__ = ["STREAM_PATH", "StreamCache", "StreamDelivery"]

log = logging.getLogger(__name__)

STREAM_PATH = re.compile(
    r"/(?P<id>[^/]+?)\.(?P<manifest>m3u8|mpd)"
    rf"|/(?P<rid>[^/]+)/(?P<rung>{delivery.RUNG_PATTERN.pattern})/(?P<name>[^/]+)"
    rf"|/(?P<sid>[^/]+)/(?P<static>{'|'.join(re.escape(name) for name in delivery.STATIC_RENDITIONS)})"
    rf"|/(?P<tid>[^/]+)/{delivery.TEXT_DIR}/(?P<text>[A-Za-z0-9]{{32}}\.(?:vtt|m3u8))"
    rf"|/master/(?P<master>{TOKEN_PATTERN.pattern})")
"""The stream URLs (``fullmatch`` against the request path)."""

_VIDEO = delivery.AUDIENCES["video"]
_HLS = "application/vnd.apple.mpegurl"
_DASH = "application/dash+xml"
_ALLOWED = "GET, HEAD, OPTIONS"
_PREFLIGHT = {**delivery.CORS_HEADERS, "Access-Control-Allow-Methods": _ALLOWED, "Access-Control-Max-Age": "86400"}
_ERROR_HEADERS = {**delivery.CORS_HEADERS, "Cache-Control": "no-store"}
_DEFAULT_REQUEST_HEADERS = "Range, If-None-Match, If-Range, If-Modified-Since, Accept, Origin"
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")
#: Rewritten manifests and object metadata never change under their key while the asset is ready (the key
#: names the asset, its text tracks and the token); the resolver, not this expiry, stops a deleted asset.
_CACHE_SECONDS = 60.0
_MIB = 1024 * 1024


@dataclass(frozen=True)
class _Manifest:
    body: bytes
    etag: str


async def _send_manifest(request: EdgeRequest, send: Send, playback: delivery.Playback, manifest: _Manifest,
                         media_type: str) -> None:
    """A playlist or MPD: short-lived caching, its ETag, ``304`` when the client has it."""
    headers = {**delivery.CORS_HEADERS, "ETag": manifest.etag,
               "Cache-Control": delivery.cache_control(playback, immutable=False)}
    if delivery.etag_matches(request.headers.get("if-none-match"), manifest.etag):
        await send_response(send, 304, headers)
        return
    await send_response(send, 200, {**headers, "Content-Type": media_type}, manifest.body,
                        head=request.method == "HEAD")


class BodyCache:
    """Whole bodies of small files, keyed by object key and checked against its current ETag (which a ``stat``
    derives from size and modification time), least recently used out past ``max_bytes``.

    Only what :class:`StreamDelivery` has already authorized reaches it, so it changes no access rule: a deleted
    asset or revoked token is refused before the body is looked up. What it saves: Granian sends an in-memory
    body about 1.6× faster than the same file through ``pathsend`` (tokio reads files on its blocking pool;
    measured on this machine, docs/ARCHITECTURE.md), and an S3 store is not asked again for a hot segment."""

    def __init__(self, max_bytes: int, max_object_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = min(max_object_bytes, max_bytes)
        self.size = 0
        self._items: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def keeps(self, size: int) -> bool:
        """Whether a file of ``size`` bytes is one this cache holds."""
        return 0 < size <= self.max_object_bytes

    def get(self, key: str, etag: str) -> bytes | None:
        item = self._items.get(key)
        if item is None or item[0] != etag:
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: str, etag: str, body: bytes) -> None:
        if not self.keeps(len(body)):
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old[1])
        self._items[key] = (etag, body)
        self.size += len(body)
        while self.size > self.max_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self.size -= len(dropped)


class StreamCache:
    """Per-process caches of rewritten manifests and object metadata (``stat``), bounded in entries, and of
    small files' bodies (:class:`BodyCache`), bounded in bytes."""

    def __init__(self, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic,
                 body_bytes: int = 128 * _MIB, body_object_bytes: int = 8 * _MIB) -> None:
        self.clock = clock
        self.manifests: TtlCache[tuple[object, ...], _Manifest] = TtlCache(max_entries)
        self.objects: TtlCache[str, delivery.StoredObject] = TtlCache(max_entries * 4)
        self.bodies = BodyCache(body_bytes, body_object_bytes)

    @classmethod
    def for_edge(cls, settings: EdgeSettings) -> StreamCache:
        return cls(body_bytes=settings.body_cache_mb * _MIB,
                   body_object_bytes=int(settings.body_cache_max_object_mb * _MIB))

    def cached_manifest(self, key: tuple[object, ...]) -> _Manifest | None:
        found, cached = self.manifests.get(key, self.clock())
        return cached if found else None

    def manifest(self, key: tuple[object, ...], render: Callable[[], str]) -> _Manifest:
        """The cached manifest, else ``render()``'s (storage I/O: call it off the event loop)."""
        cached = self.cached_manifest(key)
        if cached is not None:
            return cached
        made = self.render(render)
        self.manifests.put(key, made, self.clock() + _CACHE_SECONDS)
        return made

    @staticmethod
    def render(render: Callable[[], str]) -> _Manifest:
        """``render()``'s manifest with its ETag, not cached (storage I/O: call it off the event loop)."""
        body = render().encode("utf-8")
        return _Manifest(body, delivery.text_etag(body))

    def stat_now(self, store: ObjectStore, key: str) -> delivery.StoredObject | None:
        """The object's metadata without waiting on the network: a local store's ``stat`` (microseconds, and it
        sees a file deleted since at once), an S3 object's cached metadata, else ``None``."""
        if store.is_local:
            return delivery.stat_object(store, key)
        found, cached = self.objects.get(key, self.clock())
        return cached if found else None

    def stat(self, store: ObjectStore, key: str) -> delivery.StoredObject:
        """:meth:`stat_now`, else a metadata request (off the event loop), cached for a minute."""
        stored = self.stat_now(store, key)
        if stored is None:
            stored = delivery.stat_object(store, key)
            self.objects.put(key, stored, self.clock() + _CACHE_SECONDS)
        return stored


class StreamDelivery:
    """The stream URLs of one edge process."""

    def __init__(self, platform: Platform, cache: StreamCache | None = None, usage: UsageMeter | None = None,
                 cmcd: CmcdBuffer | None = None) -> None:
        self.platform = platform
        self.cache = cache or StreamCache.for_edge(platform.settings.edge)
        #: Delivered seconds and bytes of segments (:mod:`kinoray.control.usage`); ``None``: not counted.
        self.usage = usage
        #: Where requests carrying CMCD are noted (:mod:`kinoray.analytics.cmcd`); ``None``: not collected.
        self.cmcd = cmcd
        live = platform.settings.live
        #: LL-HLS blocking reloads and preload-hinted parts wait here (:mod:`kinoray.edge.live_wait`).
        self.playlists = LivePlaylists(platform.store, poll_seconds=live.blocking_poll_seconds,
                                       remote_poll_seconds=live.blocking_poll_remote_seconds,
                                       max_waiting=live.blocking_max_waiting)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, match: re.Match[str]) -> None:
        request = EdgeRequest.from_scope(scope)
        head = request.method == "HEAD"
        try:
            if request.method == "OPTIONS":
                await self._preflight(request, send)
                return
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowedError(f"{request.method[:16]} is not allowed here", _ALLOWED)
            await self._serve(request, send, match, scope.get("client"))
        except KinorayError as error:
            await send_error(send, error, _ERROR_HEADERS, head=head)
        except Exception as error:
            if is_transient(error):
                log.warning("database unavailable", extra={"path": request.path[:200], "error": str(error)[:300]})
                await send_error(send, DatabaseUnavailableError(), _ERROR_HEADERS, head=head)
                return
            log.exception("stream request failed", extra={"path": request.path[:200]})
            await send_error(send, KinorayError("internal error; the server log has the details"), _ERROR_HEADERS,
                             head=head)

    # --- dispatch ----------------------------------------------------------------------------------------
    async def _serve(self, request: EdgeRequest, send: Send, match: re.Match[str], peer: object = None) -> None:
        if match["master"] is not None:
            await self._master(request, send, match["master"])
            return
        playback_id = match["id"] or match["rid"] or match["sid"] or match["tid"]
        token = request.query.get("token")
        viewer = Viewer.from_headers(request.headers)  # what a token's playback restriction checks
        resolved = self.platform.resolver.cached(playback_id, token, _VIDEO, viewer)
        if resolved is None:
            resolved = await asyncio.to_thread(self.platform.resolver.resolve, playback_id, token, _VIDEO, viewer)
        playback, store = resolved.playback, self.platform.store
        if self.cmcd is not None:
            cmcd = request.query.get("CMCD")
            if cmcd is not None or any(name in request.headers for name in CMCD_HEADERS):
                # a dict append: parsed off the request path, never an error for the viewer
                self.cmcd.note(cmcd, request.headers, playback_id, playback.asset_id, match["rung"],
                               match["name"] or match["static"] or match["text"] or match[0].rpartition("/")[2],
                               peer[0] if isinstance(peer, list | tuple) and peer else None)
        if match["manifest"] == "m3u8":
            modifiers = delivery.playback_modifiers(playback, request.query)
            await self._manifest(request, send, resolved, ("master", modifiers), _HLS,
                                 lambda: delivery.hls_master(store, playback, modifiers))
        elif match["manifest"] == "mpd":
            modifiers = delivery.playback_modifiers(playback, request.query)
            await self._manifest(request, send, resolved, ("mpd", modifiers), _DASH,
                                 lambda: delivery.dash_manifest(store, playback, modifiers))
        elif match["rung"] is not None:
            rung, name = match["rung"], match["name"]
            if name == "index.m3u8" and playback.live:
                await self._live_media(request, send, playback, rung)
            elif name == "index.m3u8":
                window = delivery.playback_modifiers(playback, request.query).window
                await self._manifest(request, send, resolved, ("media", rung, window), _HLS,
                                     lambda: delivery.hls_media(store, playback, rung, window))
            else:
                key = delivery.media_file_key(playback, rung, name)
                if playback.live:
                    await self._live_file(playback, rung, name, key)
                sent = await self._file(request, send, playback, key, delivery.media_content_type(rung, name))
                if sent is not None and self.usage is not None:
                    await self._count(playback, rung, name, *sent)
        elif match["static"] is not None:
            name = match["static"]
            key = delivery.static_rendition_key(resolved.record, playback, name)
            await self._file(request, send, playback, key, delivery.media_content_type("", name))
        else:
            name = match["text"]
            if name.endswith(".m3u8"):
                window = delivery.playback_modifiers(playback, request.query).window
                await self._manifest(request, send, resolved, ("text", name, window), _HLS,
                                     lambda: delivery.hls_subtitles(store, playback, name, window))
            else:
                key = delivery.text_file_key(playback, name)
                await self._file(request, send, playback, key, delivery.media_content_type(delivery.TEXT_DIR, name))

    # --- manifests ---------------------------------------------------------------------------------------
    async def _manifest(self, request: EdgeRequest, send: Send, resolved: Resolved,
                        what: tuple[object, ...], media_type: str, render: Callable[[], str]) -> None:
        playback = resolved.playback
        key = (*what, playback.playback_id, playback.media_prefix, playback.text_tracks, playback.query)
        if playback.live:  # a live playlist changes with every segment: read it every time
            manifest = await asyncio.to_thread(self.cache.render, render)
        else:
            cached = self.cache.cached_manifest(key)
            manifest = cached if cached is not None else await asyncio.to_thread(self.cache.manifest, key, render)
        await _send_manifest(request, send, playback, manifest, media_type)

    # --- live playlists: LL-HLS blocking reloads and delta updates ---------------------------------------------
    async def _live_media(self, request: EdgeRequest, send: Send, playback: delivery.Playback, rung: str) -> None:
        """A live rendition's media playlist, read on every request. A low-latency one (parts, blocking reload)
        answers RFC 8216bis's delivery directives: ``_HLS_msn``/``_HLS_part`` hold the request until the playlist
        has that segment or part (no thread held: :class:`~kinoray.edge.live_wait.LivePlaylists`), 400 when it
        is too far ahead, 503 after three target durations; ``_HLS_skip=YES|v2`` answers the delta update.
        Other live playlists are served as the packager wrote them (the directives are ignored)."""
        if not delivery.RUNG_PATTERN.fullmatch(rung):
            raise NotFoundError(f"no rendition {rung[:32]!r}")
        key = playback.key(rung, "index.m3u8")
        text = await self.playlists.read(key)
        try:
            state: llhls.PlaylistState | None = llhls.PlaylistState.parse(text)
        except (ValueError, KeyError):  # not one kinoray's LL-HLS packager wrote: served as it is
            state = None
        if state is not None and state.low_latency:
            directives = llhls.BlockingRequest.from_query(request.query)
            if directives.msn is not None and not state.has(directives.msn, directives.part):
                msn, part = directives.msn, directives.part
                if state.too_far(msn, part):
                    raise InvalidParametersError(
                        f"_HLS_msn={msn}" + (f"&_HLS_part={part}" if part is not None else "")
                        + f" is too far ahead of the playlist (last segment {state.last_msn}, last part "
                          f"{state.last_part})")
                waited = await self.playlists.wait(key, lambda now: now.has(msn, part),
                                                   3 * state.target_duration)
                if waited is None:
                    raise ServiceUnavailableError("the requested segment or part did not appear in time", 1)
                state = waited
            text = llhls.delta_update(state) if directives.skip else "\n".join(state.lines).rstrip("\n") + "\n"
            body = rewrite_hls_media(text, query=playback.query)
        else:
            window = delivery.playback_modifiers(playback, request.query).window
            try:
                body = rewrite_hls_media(text, query=playback.query, window=window)
            except ValueError as error:
                raise InvalidParametersError(str(error)) from None
        await _send_manifest(request, send, playback, self.cache.render(lambda: body), _HLS)

    async def _live_file(self, playback: delivery.Playback, rung: str, name: str, key: str) -> None:
        """A live part or segment that is not written yet but is next (a player asking for the
        ``EXT-X-PRELOAD-HINT`` part, or a segment it expects) is waited for, as a blocking reload would be; one
        that is too far ahead, or of a playlist without parts, is not (the file's own 404 answers)."""
        position = llhls.media_name(name)
        if position is None:
            return
        store = self.platform.store
        try:
            if store.is_local:
                delivery.stat_object(store, key)
            else:
                await asyncio.to_thread(self.cache.stat, store, key)
            return
        except NotFoundError:
            pass
        playlist = playback.key(rung, "index.m3u8")
        try:
            state = llhls.PlaylistState.parse(await self.playlists.read(playlist))
        except (NotFoundError, ValueError, KeyError):
            return
        if not state.low_latency or state.has(*position) or state.too_far(*position):
            return
        await self.playlists.wait(playlist, lambda now: now.has(*position), 3 * state.target_duration)

    # --- files -------------------------------------------------------------------------------------------
    async def _count(self, playback: delivery.Playback, rung: str, name: str, sent_bytes: int, size: int) -> None:
        """Count a sent segment (the rendition's tier and durations are read once per process, after the
        first segment of the rendition has gone out)."""
        assert self.usage is not None
        rendition = self.usage.rendition_now(playback.media_prefix, rung)
        stale = playback.live and rendition is not None and name not in rendition.seconds  # a newer live segment
        if rendition is None or stale:
            rendition = await asyncio.to_thread(self.usage.rendition, self.platform.store, playback.media_prefix,
                                                rung, refresh=stale)
        self.usage.count(playback.asset_id, rendition, name, sent_bytes, size)

    async def _master(self, request: EdgeRequest, send: Send, token: str) -> None:
        """A master download: looked up on every request (it stops at its expiry, to the second), and no cache
        on the way may keep it."""
        def lookup() -> str:
            with self.platform.db.reader() as session:
                return master_key(session, token)

        key = await asyncio.to_thread(lookup)
        await self._file(request, send, None, key, "application/octet-stream",
                         extra={"Content-Disposition": 'attachment; filename="master"'})

    async def _file(self, request: EdgeRequest, send: Send, playback: delivery.Playback | None, key: str,
                    media_type: str, extra: dict[str, str] | None = None) -> tuple[int, int] | None:
        """Send the file (or its range); ``(bytes sent, file size)`` for a body, ``None`` for a 304 or HEAD.
        Without a ``playback`` (a master download) nothing may cache it."""
        store = self.platform.store
        stored = self.cache.stat_now(store, key)
        if stored is None:
            stored = await asyncio.to_thread(self.cache.stat, store, key)
        cache = delivery.cache_control(playback, immutable=True) if playback is not None else "private, no-store"
        headers = {**delivery.CORS_HEADERS, **(extra or {}), "ETag": stored.etag, "Cache-Control": cache,
                   "Accept-Ranges": "bytes"}
        if delivery.etag_matches(request.headers.get("if-none-match"), stored.etag):
            await send_response(send, 304, headers)
            return None
        wanted = None
        if delivery.if_range_allows(request.headers.get("if-range"), stored.etag):
            try:
                wanted = delivery.parse_range(request.headers.get("range"), stored.size)
            except ValueError as error:
                raise RangeNotSatisfiableError(str(error), stored.size) from None
        status, start, length = 200, 0, stored.size
        if wanted is not None:
            status, start, length = 206, wanted.start, wanted.length
            headers["Content-Range"] = wanted.content_range(stored.size)
        headers["Content-Length"] = str(length)
        headers["Content-Type"] = media_type
        if request.method == "HEAD":
            await send_start(send, status, headers)
            await send({"type": "http.response.body", "body": b""})
            return None
        bodies = self.cache.bodies
        if playback is not None and bodies.keeps(stored.size):
            body = bodies.get(key, stored.etag)
            if body is None:
                body = await asyncio.to_thread(_read_whole, store, key, stored.size)
                bodies.put(key, stored.etag, body)
            await send_start(send, status, headers)
            await send({"type": "http.response.body",
                        "body": body if status == 200 else body[start:start + length]})
            return length, stored.size
        if status == 200 and request.pathsend and store.is_local:
            await send_start(send, status, headers)
            await send({"type": "http.response.pathsend", "path": store.path(key)})
            return length, stored.size
        if store.is_local and length <= _INLINE_READ_BYTES:
            # a small local range (a player's byte-range request, a subtitle): one read from the page cache on
            # the loop costs less than the two thread hops of the streamed path
            await send_start(send, status, headers)
            await send({"type": "http.response.body", "body": _read_local(store.path(key), start, length)})
            return length, stored.size
        try:
            blocks = await asyncio.to_thread(delivery.read_object, store, key, start, length)
        except StorageError as error:
            if isinstance(error.__cause__, FileNotFoundError):  # deleted since its metadata was cached
                raise NotFoundError("no such file for this playback id") from None
            raise
        await send_start(send, status, headers)
        await _stream(send, blocks)
        return length, stored.size

    async def _preflight(self, request: EdgeRequest, send: Send) -> None:
        asked = request.headers.get("access-control-request-headers", "").strip()
        allowed = asked if asked and len(asked) < 1024 and _HEADER_LIST.fullmatch(asked) else _DEFAULT_REQUEST_HEADERS
        await send_response(send, 204, {**_PREFLIGHT, "Access-Control-Allow-Headers": allowed})


_DONE = object()
#: Local reads up to this size are made on the event loop in one call (see :meth:`StreamDelivery._file`).
_INLINE_READ_BYTES = 256 * 1024


def _read_local(path: str, start: int, length: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # deleted since its metadata was cached
        raise NotFoundError("no such file for this playback id") from None
    try:
        data = os.pread(fd, length, start)
    finally:
        os.close(fd)
    if len(data) != length:  # replaced by a shorter file since its metadata was cached
        raise StorageError(f"{path}: {len(data)} of {length} bytes readable")
    return data


def _read_whole(store: ObjectStore, key: str, size: int) -> bytes:
    """A whole file of ``size`` bytes (its metadata's), for :class:`BodyCache` (storage I/O: off the loop)."""
    if store.is_local:
        body = _read_local(store.path(key), 0, size)
        if os.stat(store.path(key)).st_size != size:  # replaced since its metadata was read: not kept under it
            raise ServiceUnavailableError("the file changed while it was read: try again", 1)
        return body
    try:
        body = b"".join(delivery.read_object(store, key, 0, size))
    except StorageError as error:
        if isinstance(error.__cause__, FileNotFoundError):  # deleted since its metadata was cached
            raise NotFoundError("no such file for this playback id") from None
        raise
    return body


async def _stream(send: Send, blocks: Iterator[bytes]) -> None:
    """Send ``blocks`` as the body, each read on a worker thread while the previous one is being sent."""
    try:
        while True:
            block = await asyncio.to_thread(next, blocks, _DONE)
            if block is _DONE:
                break
            assert isinstance(block, bytes)
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
