"""WebRTC ingest and playback: WHIP (RFC 9725) for publishers — a browser, OBS 30+ — and WHEP for viewers who
want the stream in well under a second, through aiortc, on the live runtime's event loop.

**WHIP** ``POST /live/v1/whip/{stream_key}`` (or ``POST /live/v1/whip`` with ``Authorization: Bearer
<stream_key>``, as OBS sends it): an SDP offer (``application/sdp``) in; the key is authorised (:data:`Authorize`,
the same control-plane call as RTMP's) **before the answer is made**, so no media flows for a refused key:
``401 stream_key_refused`` (no key, or no stream has it), ``403 forbidden`` (the stream is disabled), ``409
conflict`` (its publisher is still connected), each counted in
:data:`~kinoray.telemetry.LIVE_INGEST_REFUSED` like RTMP's refusals. Accepted: ``201`` with the SDP answer (every
candidate in it: aiortc does not trickle) and ``Location: /live/v1/whip/sessions/{id}``; ``DELETE`` on that
ends the session, ``PATCH`` (trickle ICE, ICE restart) answers ``405``. The received tracks (aiortc decodes them:
VP8, H.264 or whatever the browser chose; Opus audio) go through :class:`~kinoray.live.bridge.FlvBridge` to the
runtime's :class:`Publisher` as FLV tags — the recording, live ladder and simulcast then work as for RTMP. The
bridge takes the newest video frame when it falls behind (frames are dropped, never queued without bound) and
all audio.

**WHEP** ``POST /live/v1/whep/{playback_id}[?token=…]``: the playback id is admitted as the edge admits a stream
request (public, or signed with a token for audience ``v``, its playback restriction applied), and the viewer
gets the WHIP publisher's tracks relayed (:class:`aiortc.contrib.media.MediaRelay`: the decoded frames, encoded
again for each viewer by aiortc, which has no packet forwarding) — the source, which is the top rung. A stream
published over RTMP is tapped instead (``tap_source``: the runtime's session gives its FLV tags, header tags
first): while it has WHEP viewers one :class:`~kinoray.live.flv_frames.FlvDecoder` per stream decodes the
publisher's H.264/AAC from the next keyframe on, and its frames are relayed the same way. A stream with no
publisher: ``412 asset_not_ready``. At most ``live.whep_max_viewers`` per stream (``503 over_capacity``): every
viewer costs an encoder.

The HTTP part is a small aiohttp server on the runtime's loop, on the ingest actor's node: the SDP answer must
come from the peer connection that will receive the media, so the signalling is answered where the media lands.
The delivery edge forwards ``/live/v1/whip/`` and ``/live/v1/whep/`` to it (``edge.whip_url``). CORS is open
(``*``, ``Location`` exposed): a publishing page may be anywhere.

Bounded: an offer is at most 64 KiB; a peer that has not connected after ``connect_seconds`` is closed; a
publisher that sends no video for ``idle_seconds`` is ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from kinoray.errors import (
    AssetNotReadyError,
    ConflictError,
    IngestRefusedError,
    InvalidParametersError,
    KinorayError,
    MethodNotAllowedError,
    NotFoundError,
    OverCapacityError,
    PermissionDeniedError,
    RequestTooLargeError,
    StreamKeyRefusedError,
    http_status,
)
from kinoray.live.bridge import FlvBridge
from kinoray.live.flv_frames import FlvDecoder
from kinoray.live.ingest import Tappable
from kinoray.live.rtmp import Authorize, Publisher, PublishRequest
from kinoray.media.flv import FlvTag
from kinoray.telemetry import LIVE_INGEST_REFUSED

__all__ = ["WHEP_PREFIX", "WHIP_PREFIX", "AdmitViewer", "WhipServer"]

log = logging.getLogger(__name__)

WHIP_PREFIX = "/live/v1/whip"
WHEP_PREFIX = "/live/v1/whep"
_MAX_OFFER_BYTES = 64 * 1024
_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Location, Link, ETag"}
#: What :func:`WhipServer` answers for a refused key, by the reason ``refusal`` gives.
_REFUSALS: dict[str, Callable[[], KinorayError]] = {
    "no_key": lambda: StreamKeyRefusedError("a WHIP publish needs the stream key: in the URL or as "
                                            "Authorization: Bearer <stream key>"),
    "bad_key": lambda: StreamKeyRefusedError("no live stream has this stream key"),
    "disabled": lambda: PermissionDeniedError("the live stream is disabled"),
    "busy": lambda: ConflictError("the live stream's publisher is still connected (one ingest per stream)"),
}

#: The live stream a WHEP viewer may watch: ``(playback_id, token, headers)`` → its id, or a typed error
#: (``NotFoundError``, ``PlaybackForbiddenError``, ...). Runs off the loop.
AdmitViewer = Callable[[str, str | None, dict[str, str]], str]
#: Where a WHEP viewer of a stream not published over WHIP gets its media: the live stream id → its publisher's
#: :class:`~kinoray.live.ingest.Tappable` session, or ``None`` when nobody publishes it.
TapSource = Callable[[str], Tappable | None]
#: How many decoded frames a tapped stream's track holds for its viewers (the oldest go first): a few pictures,
#: about a second of audio (AAC frames decode in bursts).
_TAP_FRAMES = {"video": 8, "audio": 48}
#: How many FLV tags a tapped stream's decoder may fall behind before it skips to the next keyframe.
_TAP_TAGS = 600


def _error(error: KinorayError) -> web.Response:
    return web.Response(status=http_status(error), headers={**_CORS, **error.http_headers()},
                        content_type="application/json",
                        text=json.dumps({"error": {"type": error.type, "messages": [str(error)]}}))


async def _offer(request: web.Request) -> RTCSessionDescription:
    """The SDP offer a WHIP or WHEP ``POST`` carries (typed errors for anything else)."""
    if request.content_type != "application/sdp":
        raise InvalidParametersError(f"the offer must be Content-Type: application/sdp, not {request.content_type!r}")
    try:
        body = await request.text()
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLargeError(f"an SDP offer is at most {_MAX_OFFER_BYTES} bytes") from None
    if not body.startswith("v=0"):
        raise InvalidParametersError("the body is not an SDP offer")
    return RTCSessionDescription(sdp=body, type="offer")


@dataclass(eq=False)
class _Peer:
    """One WHIP publisher or WHEP viewer: its resource id and peer connection."""

    id: str
    pc: RTCPeerConnection
    peer: str
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


@dataclass(eq=False)
class _Publish(_Peer):
    key: str = ""
    live_stream_id: str = ""
    publisher: Publisher | None = None
    bridge: FlvBridge | None = None
    relay: MediaRelay = field(default_factory=MediaRelay)
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    viewers: set[_Peer] = field(default_factory=set)
    error: str | None = None


class _FrameTrack(MediaStreamTrack):
    """A track fed with decoded frames (a tapped stream's): bounded, the oldest dropped; ``None`` ends it."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.frames: asyncio.Queue[Any] = asyncio.Queue(maxsize=_TAP_FRAMES[kind])

    def put(self, frame: Any) -> None:
        if self.frames.full():
            self.frames.get_nowait()
        self.frames.put_nowait(frame)

    async def recv(self) -> Any:
        frame = await self.frames.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


@dataclass(eq=False)
class _Tap:
    """A stream published over another protocol (RTMP), decoded for its WHEP viewers while it has some."""

    live_stream_id: str
    relay: MediaRelay = field(default_factory=MediaRelay)
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    viewers: set[_Peer] = field(default_factory=set)
    tags: asyncio.Queue[FlvTag | None] = field(default_factory=asyncio.Queue)
    decoder: FlvDecoder = field(default_factory=FlvDecoder)
    untap: Callable[[], None] | None = None
    task: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class WhipServer:
    """The WHIP/WHEP HTTP listener and every WebRTC peer (see the module docstring); an
    :class:`~kinoray.live.ingest.IngestServer` named ``whip``.

    ``authorize``: the runtime's, as for RTMP (the :class:`PublishRequest` has ``app="whip"``); the publisher it
    returns must have a ``live_stream_id`` for WHEP to find it. ``refusal(key)``: why a key was refused
    (``bad_key``, ``disabled``, ``busy``), asked only after a refusal. ``admit_viewer``: see :data:`AdmitViewer`.
    """

    protocol = "whip"

    def __init__(self, authorize: Authorize, refusal: Callable[[str], Awaitable[str]], admit_viewer: AdmitViewer,
                 *, tap_source: TapSource | None = None, host: str = "0.0.0.0", port: int = 8189,
                 ice_servers: list[str] | None = None,
                 encoder: str = "libx264", preset: str = "ultrafast", connect_seconds: float = 15.0,
                 idle_seconds: float = 30.0, max_viewers: int = 8) -> None:
        self.authorize, self.refusal, self.admit_viewer, self.tap_source = authorize, refusal, admit_viewer, tap_source
        self.host, self.port = host, port
        self.ice_servers = [RTCIceServer(urls=url) for url in ice_servers or []]
        self.encoder, self.preset = encoder, preset
        self.connect_seconds, self.idle_seconds, self.max_viewers = connect_seconds, idle_seconds, max_viewers
        self._publishes: dict[str, _Publish] = {}  # by resource id
        self._viewers: dict[str, tuple[_Peer, _Publish | _Tap]] = {}
        self._taps: dict[str, _Tap] = {}  # by live stream id
        self._runner: web.AppRunner | None = None

    # --- IngestServer ----------------------------------------------------------------------------------------

    async def start(self) -> int:
        app = web.Application(client_max_size=_MAX_OFFER_BYTES)
        app.router.add_route("OPTIONS", "/{tail:.*}", self._options)
        app.router.add_post(WHIP_PREFIX, self._whip)
        app.router.add_delete(WHIP_PREFIX + "/sessions/{id}", self._whip_delete)
        app.router.add_patch(WHIP_PREFIX + "/sessions/{id}", self._no_trickle)
        app.router.add_post(WHIP_PREFIX + "/{key}", self._whip)
        app.router.add_post(WHEP_PREFIX + "/{playback_id}", self._whep)
        app.router.add_delete(WHEP_PREFIX + "/sessions/{id}", self._whep_delete)
        app.router.add_patch(WHEP_PREFIX + "/sessions/{id}", self._no_trickle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        server = site._server  # noqa: SLF001 - aiohttp keeps the bound port there only
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("whip ingest listening", extra={"host": self.host, "port": self.port})
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.gather(*(self._end(publish, "the ingest server stopped")
                               for publish in list(self._publishes.values())), return_exceptions=True)
        await asyncio.gather(*(self._end_tap(tap) for tap in list(self._taps.values())), return_exceptions=True)

    def drop(self, key: str) -> bool:
        found = [publish for publish in self._publishes.values() if publish.key == key]
        for publish in found:
            log.info("whip publisher dropped", extra={"peer": publish.peer})
            asyncio.get_running_loop().create_task(self._end(publish, None), name="whip-drop")
        return bool(found)

    @property
    def publishing(self) -> int:
        return len(self._publishes)

    @property
    def viewers(self) -> int:
        """WHEP viewers connected now."""
        return len(self._viewers)

    @property
    def tapped(self) -> int:
        """Streams published over another protocol whose tags are decoded for WHEP viewers now."""
        return len(self._taps)

    # --- HTTP ------------------------------------------------------------------------------------------------

    async def _options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            **_CORS, "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match", "Access-Control-Max-Age": "600",
            "Accept-Post": "application/sdp"})

    async def _no_trickle(self, request: web.Request) -> web.Response:
        return _error(MethodNotAllowedError("trickle ICE and ICE restarts are not offered: send every candidate "
                                            "in the offer", "DELETE, OPTIONS"))

    @staticmethod
    def _peer_of(request: web.Request) -> str:
        forwarded = request.headers.get("X-Forwarded-For")
        return forwarded.split(",")[0].strip() if forwarded else str(request.remote)

    def _new_pc(self) -> RTCPeerConnection:
        return RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))

    async def _whip(self, request: web.Request) -> web.Response:
        key = request.match_info.get("key") or ""
        authorization = request.headers.get("Authorization", "")
        if not key and authorization[:7].lower() == "bearer ":
            key = authorization[7:].strip()
        try:
            offer = await _offer(request)
            if not key:
                raise self._refuse("no_key")
            return await self._publish(key, offer, self._peer_of(request))
        except KinorayError as error:
            return _error(error)

    def _refuse(self, reason: str) -> KinorayError:
        LIVE_INGEST_REFUSED.labels(reason=reason).inc()
        log.warning("whip publish refused", extra={"reason": reason})
        return _REFUSALS[reason]()

    async def _publish(self, key: str, offer: RTCSessionDescription, peer: str) -> web.Response:
        pc = self._new_pc()
        publish = _Publish(id=secrets.token_urlsafe(16), pc=pc, peer=peer, key=key)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            publish.tracks.setdefault(track.kind, track)

        try:
            try:
                await pc.setRemoteDescription(offer)
            except (ValueError, AssertionError) as error:
                raise InvalidParametersError(f"the SDP offer cannot be used: {error}") from error
            if "video" not in publish.tracks:
                raise InvalidParametersError("the offer sends no video (a WHIP publish needs a video track)")
            try:
                publisher = await self.authorize(PublishRequest(app="whip", key=key, peer=peer, protocol="whip"))
            except IngestRefusedError as refusal:  # a scheduled stream outside its schedule
                LIVE_INGEST_REFUSED.labels(reason=refusal.reason).inc()
                raise
            if publisher is None:
                raise self._refuse(await self.refusal(key))
        except BaseException:
            await pc.close()
            raise
        publish.publisher = publisher
        publish.live_stream_id = str(getattr(publisher, "live_stream_id", key))
        publish.bridge = FlvBridge(has_audio="audio" in publish.tracks, encoder=self.encoder, preset=self.preset)
        self._publishes[publish.id] = publish
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as error:  # noqa: BLE001 - accepted, so the session must end with the reason
            await self._end(publish, f"the WebRTC answer failed: {error}"[:300])
            raise InvalidParametersError(f"the SDP offer cannot be answered: {error}") from error
        self._watch(publish, lambda: self._end(publish, "the publisher's WebRTC connection failed"))
        video = publish.relay.subscribe(publish.tracks["video"], buffered=False)  # newest frame when behind
        publish.tasks.append(asyncio.get_running_loop().create_task(self._pump(publish, video), name="whip-video"))
        if "audio" in publish.tracks:
            audio = publish.relay.subscribe(publish.tracks["audio"])
            publish.tasks.append(asyncio.get_running_loop().create_task(self._pump(publish, audio),
                                                                        name="whip-audio"))
        log.info("whip publish started", extra={"peer": peer, "tracks": sorted(publish.tracks)})
        return web.Response(status=201, headers={**_CORS, "Location": f"{WHIP_PREFIX}/sessions/{publish.id}"},
                            content_type="application/sdp", text=pc.localDescription.sdp)

    def _watch(self, peer: _Peer, end: Callable[[], Awaitable[None]]) -> None:
        """End ``peer`` when its connection fails or closes, or has not connected within ``connect_seconds``."""
        pc = peer.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await end()

        async def connect_deadline() -> None:
            await asyncio.sleep(self.connect_seconds)
            if pc.connectionState != "connected":
                log.warning("webrtc peer never connected", extra={"peer": peer.peer, "state": pc.connectionState})
                await end()

        peer.tasks.append(asyncio.get_running_loop().create_task(connect_deadline(), name="webrtc-connect"))

    async def _pump(self, publish: _Publish, track: MediaStreamTrack) -> None:
        """One track's frames through the bridge (its encodes on a thread) to the publisher."""
        bridge, publisher = publish.bridge, publish.publisher
        assert bridge is not None and publisher is not None
        convert: Callable[[Any], list[FlvTag]] = bridge.video if track.kind == "video" else bridge.audio
        error: str | None = None
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(track.recv(), self.idle_seconds)
                except MediaStreamError:
                    break  # the publisher stopped sending
                tags: list[FlvTag] = await asyncio.to_thread(convert, frame)
                if publish.ended.is_set():
                    return
                for tag in tags:
                    publisher.media(tag)
        except TimeoutError:
            if track.kind == "audio":  # a silent microphone is not a dead publisher: the video decides
                log.info("whip audio stopped", extra={"peer": publish.peer})
                return
            error = f"no video received for {self.idle_seconds:g} s"
        except Exception as problem:  # noqa: BLE001 - a frame the bridge cannot take ends this session only
            error = f"the {track.kind} bridge failed: {type(problem).__name__}: {problem}"[:300]
            log.warning("whip bridge failed", extra={"peer": publish.peer, "error": error})
        if track.kind == "video" or error is not None:
            asyncio.get_running_loop().create_task(self._end(publish, error), name="whip-end")

    async def _end(self, publish: _Publish, error: str | None) -> None:
        """The session is over: tasks stopped, the encoders' last packets sent, the publisher told once."""
        if publish.ended.is_set():
            return
        publish.ended.set()
        self._publishes.pop(publish.id, None)
        current = asyncio.current_task()
        for task in publish.tasks:
            if task is not current:
                task.cancel()
        for viewer in list(publish.viewers):
            await self._end_viewer(viewer)
        with contextlib.suppress(Exception):
            await publish.pc.close()
        tail: list[FlvTag] = []
        if publish.bridge is not None:
            try:
                tail = await asyncio.to_thread(publish.bridge.close)
            except Exception as problem:  # noqa: BLE001 - the session ends either way
                error = error or f"the bridge failed while closing: {problem}"[:300]
        if publish.publisher is not None:
            for tag in tail:
                publish.publisher.media(tag)
            publish.publisher.ended(error)
        log.info("whip publish ended", extra={"peer": publish.peer, "error": error,
                                              "frames": publish.bridge.frames if publish.bridge else 0})

    async def _whip_delete(self, request: web.Request) -> web.Response:
        publish = self._publishes.get(request.match_info["id"])
        if publish is None:
            return _error(NotFoundError("no WHIP session here (ended, or never started)"))
        await self._end(publish, None)
        return web.Response(status=200, headers=_CORS)

    # --- WHEP ------------------------------------------------------------------------------------------------

    async def _whep(self, request: web.Request) -> web.Response:
        try:
            offer = await _offer(request)
            headers = {name.lower(): value for name, value in request.headers.items()}
            live_stream_id = await asyncio.to_thread(self.admit_viewer, request.match_info["playback_id"],
                                                     request.query.get("token"), headers)
            source = self._source(live_stream_id)
            if source is None:
                raise AssetNotReadyError("the live stream has no publisher now")
            if len(source.viewers) >= self.max_viewers:
                raise OverCapacityError(f"the stream has its {self.max_viewers} WHEP viewers", retry_after=5)
            return await self._play(source, offer, self._peer_of(request))
        except KinorayError as error:
            return _error(error)

    def _source(self, live_stream_id: str) -> _Publish | _Tap | None:
        """What a WHEP viewer of the stream watches: its WHIP publish, else its publisher's session tapped."""
        publish = next((publish for publish in self._publishes.values()
                        if publish.live_stream_id == live_stream_id and not publish.ended.is_set()), None)
        if publish is not None:
            return publish
        tap = self._taps.get(live_stream_id)
        if tap is not None:
            return tap
        session = self.tap_source(live_stream_id) if self.tap_source is not None else None
        if session is None:
            return None
        tap = self._taps[live_stream_id] = _Tap(live_stream_id)
        tap.tracks = {"video": _FrameTrack("video"), "audio": _FrameTrack("audio")}

        def listener(tag: FlvTag | None) -> None:  # on the loop, with every tag the publisher sends
            if tag is not None and tap.tags.qsize() >= _TAP_TAGS:  # the decoder fell behind: start again
                while not tap.tags.empty():
                    tap.tags.get_nowait()
                tap.decoder.waiting_for_keyframe = True
            tap.tags.put_nowait(tag)

        tap.untap = session.tap(listener)
        tap.task = asyncio.get_running_loop().create_task(self._decode(tap), name="whep-tap")
        log.info("whep tap started", extra={"live_stream": live_stream_id})
        return tap

    async def _decode(self, tap: _Tap) -> None:
        """The tapped stream's tags to frames (on a thread, a batch at a time) until it ends."""
        ending = False
        while not ending:
            batch = [await tap.tags.get()]
            while not tap.tags.empty():
                batch.append(tap.tags.get_nowait())
            ending = None in batch
            tags = [tag for tag in batch if tag is not None]
            frames = await asyncio.to_thread(tap.decoder.decode_all, tags)
            for frame in frames:
                track = tap.tracks["video" if isinstance(frame, av.VideoFrame) else "audio"]
                assert isinstance(track, _FrameTrack)
                track.put(frame)
        asyncio.get_running_loop().create_task(self._end_tap(tap), name="whep-tap-end")

    async def _end_tap(self, tap: _Tap) -> None:
        if tap.ended.is_set():
            return
        tap.ended.set()
        if self._taps.get(tap.live_stream_id) is tap:
            del self._taps[tap.live_stream_id]
        if tap.untap is not None:
            tap.untap()
        if tap.task is not None and tap.task is not asyncio.current_task():
            tap.task.cancel()
        for track in tap.tracks.values():
            assert isinstance(track, _FrameTrack)
            track.put(None)
        for viewer in list(tap.viewers):
            await self._end_viewer(viewer)
        log.info("whep tap ended", extra={"live_stream": tap.live_stream_id, "undecodable": tap.decoder.errors})

    async def _play(self, source: _Publish | _Tap, offer: RTCSessionDescription, peer: str) -> web.Response:
        pc = self._new_pc()
        viewer = _Peer(id=secrets.token_urlsafe(16), pc=pc, peer=peer)
        try:
            await pc.setRemoteDescription(offer)
            kinds = {transceiver.kind for transceiver in pc.getTransceivers()}
            if "video" not in kinds:
                raise InvalidParametersError("the offer receives no video (a WHEP offer needs a video m-line)")
            for kind, track in source.tracks.items():
                if kind in kinds:
                    pc.addTrack(source.relay.subscribe(track, buffered=kind == "audio"))
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, AssertionError) as error:
            await self._close_unwatched(pc, source)
            raise InvalidParametersError(f"the SDP offer cannot be answered: {error}") from error
        except BaseException:
            await self._close_unwatched(pc, source)
            raise
        source.viewers.add(viewer)
        self._viewers[viewer.id] = (viewer, source)
        self._watch(viewer, lambda: self._end_viewer(viewer))
        log.info("whep viewer joined", extra={"peer": peer, "viewers": len(source.viewers)})
        return web.Response(status=201, headers={**_CORS, "Location": f"{WHEP_PREFIX}/sessions/{viewer.id}"},
                            content_type="application/sdp", text=pc.localDescription.sdp)

    async def _close_unwatched(self, pc: RTCPeerConnection, source: _Publish | _Tap) -> None:
        """A viewer that never joined: its peer closed, and a tap opened for it alone ended."""
        await pc.close()
        if isinstance(source, _Tap) and not source.viewers:
            await self._end_tap(source)

    async def _end_viewer(self, viewer: _Peer) -> None:
        if viewer.ended.is_set():
            return
        viewer.ended.set()
        _, source = self._viewers.pop(viewer.id, (None, None))
        if source is not None:
            source.viewers.discard(viewer)
            if isinstance(source, _Tap) and not source.viewers:  # nobody watches: stop decoding
                asyncio.get_running_loop().create_task(self._end_tap(source), name="whep-tap-end")
        current = asyncio.current_task()
        for task in viewer.tasks:
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            await viewer.pc.close()

    async def _whep_delete(self, request: web.Request) -> web.Response:
        found = self._viewers.get(request.match_info["id"])
        if found is None:
            return _error(NotFoundError("no WHEP session here (ended, or never started)"))
        await self._end_viewer(found[0])
        return web.Response(status=200, headers=_CORS)
