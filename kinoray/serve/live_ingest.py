"""The live runtime: the RTMP ingest of a deployment, joining the ingest server (:mod:`kinoray.live.rtmp`), the
live control plane (:mod:`kinoray.control.live`) and the transcoder actors (:mod:`kinoray.cluster.live`).

:class:`LiveIngest` runs the RTMP server on an event loop thread (RTMPS too on ``live.rtmps_port`` when the edge
has TLS: the edge's certificate and key), and the WHIP/WHEP server (:mod:`kinoray.live.whip`, on
``live.whip_port``) beside it: every ingest protocol is an :class:`~kinoray.live.ingest.IngestServer` in
:attr:`LiveIngest.servers`, and a session does not know which one it came by. For each publish it asks
:func:`~kinoray.control.live.authorize_publish` (the key, one session per stream), then

- feeds it to a :class:`~kinoray.cluster.live.LiveFeed` (a transcoder actor on the cluster, replaced if it dies)
  writing the live HLS under the stream's live prefix, which the delivery edge serves for the stream's playback
  ids, and recording every segment into the session's recording asset (:mod:`kinoray.live.recording`; the
  control plane publishes it as a VOD asset when the session ends);
- where the recording keeps its master (``LivePublish.keep_source``: ``master_access: temporary``), records
  what the publisher sends, unchanged, as this connection's part of the source FLV (``LivePublish.source_key``;
  joined into the asset's ``input`` when the session ends);
- pushes it on to each of the stream's simulcast targets (:class:`~kinoray.live.simulcast.SimulcastPusher`, one
  per target on this loop, each with its own bounded queue, so a slow or dead target affects only itself), and
  stores each target's status changes in order (:func:`~kinoray.control.live.set_simulcast_status`, one report
  at a time per session, off the loop);
- reports the stream playable — its first segment, at low latency its first LL-HLS part
  (:func:`~kinoray.control.live.publish_active`) and the end
  (:func:`~kinoray.control.live.publish_ended`, after the recording part is in place);
- when the publisher leaves a stream with a slate (:func:`~kinoray.control.live.uses_slate`), holds its feed on
  the slate (:mod:`kinoray.live.slate`) until the session's next connection adopts it or the reconnect window
  is over;
- every ``poll_seconds`` asks :func:`~kinoray.control.live.publish_should_stop` and drops the publisher of a
  stream that was disabled, completed, deleted or ran past ``max_continuous_duration``.

The job runner starts it as a Ray actor (``kinoray-live-ingest``, no CPU of its own, Ray's default niceness),
so the listening port is on the runner's node. The live output and the recording go to the object store
(local directory or S3; :mod:`kinoray.live.mirror`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kinoray.cluster.live import LiveFeed
from kinoray.control import live as live_control
from kinoray.control.ingest import read_url
from kinoray.control.platform import Platform
from kinoray.errors import KinorayError
from kinoray.live.ingest import IngestServer
from kinoray.live.recording import RecordingTarget
from kinoray.live.rtmp import PublishRequest, RtmpServer
from kinoray.live.simulcast import SimulcastPusher, SimulcastStatus
from kinoray.live.slate import MAX_SLATE_BYTES
from kinoray.live.transcode import LiveOptions, LiveResult
from kinoray.live.whip import WhipServer
from kinoray.media.flv import FlvTag, flv_header
from kinoray.settings import Settings
from kinoray.store.objects import ObjectStore

__all__ = ["LiveIngest", "LiveIngestActor"]

log = logging.getLogger(__name__)


class _Recording:
    """One connection's source FLV: written to a temporary file (beside its key in a local store, else in a
    scratch directory) and moved or uploaded to its key when it ends."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store, self.key = store, key
        if store.is_local:
            self.temporary = Path(store.path(key) + ".recording")
            self.temporary.parent.mkdir(parents=True, exist_ok=True)
        else:
            self.temporary = Path(tempfile.mkdtemp(prefix="kinoray-recording-")) / "part.flv"
        # written on the ingest's event loop: a large buffer keeps that to a system call per MiB of media
        self.file = self.temporary.open("wb", buffering=1 << 20)
        self.file.write(flv_header())
        self.bytes = 0

    def write(self, tag: FlvTag) -> None:
        data = tag.to_bytes()
        self.file.write(data)
        self.bytes += len(data)

    def close(self) -> None:
        """Put the part at its key (blocking: call it off the event loop)."""
        if self.file.closed:
            return
        self.file.close()
        if self.store.is_local:
            os.replace(self.temporary, self.store.path(self.key))
        else:
            try:
                self.store.put_file(self.temporary, self.key)
            finally:
                shutil.rmtree(self.temporary.parent, ignore_errors=True)


class _StatusReports:
    """Simulcast status changes of one session, stored one at a time in the order they happened (off the loop:
    database work), so a quick ``starting`` → ``broadcasting`` is never stored the other way round."""

    def __init__(self, ingest: LiveIngest) -> None:
        self.ingest = ingest
        self.queue: asyncio.Queue[tuple[str, SimulcastStatus, str | None] | None] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="simulcast-status")

    def __call__(self, target_id: str, status: SimulcastStatus, severity: str | None, error: str | None) -> None:
        self.queue.put_nowait((target_id, status, severity))

    async def _run(self) -> None:
        while (report := await self.queue.get()) is not None:
            try:
                await asyncio.to_thread(live_control.set_simulcast_status, self.ingest.platform, *report)
            except Exception as error:  # noqa: BLE001 - logged; the next report still goes
                log.error("simulcast status not stored", extra={"target": report[0], "status": report[1],
                                                                "error": str(error)[:300]})

    async def close(self) -> None:
        """After the last report is stored."""
        self.queue.put_nowait(None)
        await self.task


class _Session:
    """The publisher of one accepted publish: every tag to the recording, the live feed and the simulcast
    targets."""

    def __init__(self, ingest: LiveIngest, publish: live_control.LivePublish, request: PublishRequest,
                 feed: LiveFeed | None = None) -> None:
        self.ingest, self.publish, self.key = ingest, publish, request.key
        #: why the runtime dropped the publisher (publish_should_stop), and whether the session's feed is
        #: holding on the slate (its disconnect already reported)
        self.stop_reason: str | None = None
        self.held = False
        platform, settings = ingest.platform, ingest.platform.settings.live
        options = LiveOptions(segment_seconds=settings.segment_seconds.get(publish.latency_mode, 4.0),
                              window_segments=settings.window_segments, heights=settings.heights,
                              encoder=settings.encoder, preset=settings.preset,
                              part_seconds=settings.part_seconds if publish.latency_mode == "low" else None,
                              audio_only=publish.audio_only,
                              # a slate is encoded H.264 of its own configuration: a passed-through rung cannot
                              # switch to it (or back to a returning publisher's) within one init segment
                              source_passthrough="off" if publish.slate else settings.source_passthrough,
                              passthrough_max_gop=settings.source_passthrough_max_gop)
        self.recording = _Recording(platform.store, publish.source_key) if publish.keep_source else None
        if feed is not None:  # the session's feed, on the slate since the last publisher left
            self.feed = feed
            feed.adopt(self._first_segment, self._end)
        else:
            self.feed = LiveFeed(platform.store, publish.live_prefix, options, cpus=settings.cpus_per_stream,
                                 max_restarts=settings.max_restarts, on_segment=self._first_segment,
                                 on_end=self._end, recording=RecordingTarget(publish.asset_id, publish.part),
                                 reclaim_after=settings.reclaim_encoders_seconds)
            if publish.slate:
                asyncio.get_running_loop().create_task(self._make_slate(), name="live-slate-image")
        self.reports = _StatusReports(ingest)
        self.closing: asyncio.Task[None] | None = None
        self.pushers = [SimulcastPusher(
            target.target_id, target.url, target.stream_key, self.reports,
            max_buffer_bytes=settings.simulcast_buffer_bytes, connect_timeout=settings.simulcast_connect_seconds,
            write_timeout=settings.simulcast_write_seconds, retry_seconds=settings.simulcast_retry_seconds,
            max_retry_seconds=settings.simulcast_max_retry_seconds,
            socket_buffer=settings.simulcast_socket_buffer_bytes) for target in publish.simulcast_targets]
        self.watch = asyncio.get_running_loop().create_task(self._watch(), name="live-watch")
        #: whether the publisher is still sending, and who follows its tags (WHEP viewers: :meth:`tap`)
        self.publishing = True
        self.taps: list[Callable[[FlvTag | None], None]] = []

    @property
    def live_stream_id(self) -> str:
        """The stream this session publishes (WHEP finds a WHIP source by it)."""
        return self.publish.live_stream_id

    def tap(self, listener: Callable[[FlvTag | None], None]) -> Callable[[], None]:
        """Follow the publisher's tags (:class:`~kinoray.live.ingest.Tappable`): the header tags now, every tag
        after, ``None`` at the end."""
        for tag in self.feed.headers:
            listener(tag)
        self.taps.append(listener)
        return lambda: self.taps.remove(listener) if listener in self.taps else None

    def media(self, tag: FlvTag) -> None:
        if self.recording is not None:
            self.recording.write(tag)
        self.feed.media(tag)
        for pusher in self.pushers:
            pusher.media(tag)
        for listener in self.taps:
            listener(tag)

    def ended(self, error: str | None) -> None:
        self.publishing = False
        for listener in self.taps:
            listener(None)
        self.taps.clear()
        if not self._hold(error):
            self.feed.ended(error)
        for pusher in self.pushers:
            pusher.ended(error)
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self._close_pushers(), name="simulcast-close")

    async def _close_pushers(self) -> None:
        await asyncio.gather(*(pusher.wait() for pusher in self.pushers), return_exceptions=True)
        await self.reports.close()  # their last word (idle) stored

    async def wait(self) -> None:
        """Until the live feed, the pushers and their status reports are done (after :meth:`ended`)."""
        await asyncio.gather(self.feed.wait(), *([self.closing] if self.closing else []), return_exceptions=True)

    @property
    def done(self) -> bool:
        """The feed finished and the pushers have reported their end."""
        return self.feed.done and (not self.pushers or (self.closing is not None and self.closing.done()))

    def _first_segment(self, count: int) -> None:
        self.ingest.background(live_control.publish_active, self.ingest.platform, self.publish.live_stream_id)

    def _end(self, result: LiveResult | None, error: str | None) -> None:
        self.watch.cancel()
        log.info("live session ended", extra={"live_stream": self.publish.live_stream_id, "error": error,
                                              "frames": result.frames_in if result else None,
                                              "source_bytes": self.recording.bytes if self.recording else None})

        if not self.held:
            self._report_end(error)
        else:  # its end was reported when the publisher left; the recording's last segments are in now
            self.ingest.background(live_control.recording_ended, self.ingest.platform, self.publish.asset_id)

    def _report_end(self, error: str | None) -> None:
        def finish() -> None:  # the part must be at its key before the session may end and join the parts
            if self.recording is not None:
                self.recording.close()
            live_control.publish_ended(self.ingest.platform, self.publish.live_stream_id, error)

        self.ingest.background(finish)

    # --- the slate while the publisher is away (kinoray.live.slate) -------------------------------------------

    async def _make_slate(self) -> None:
        """Fetch the stream's slate image once per recording (the SSRF policy of input URLs); a refused or
        failed fetch gives the default slate."""
        image = None
        if self.publish.slate_url:
            try:
                image = await asyncio.to_thread(read_url, self.publish.slate_url, self.ingest.platform.settings,
                                                max_bytes=MAX_SLATE_BYTES)
            except KinorayError as error:
                log.warning("slate image not fetched: the default slate is used",
                            extra={"live_stream": self.publish.live_stream_id, "error": str(error)[:300]})
        self.feed.use_slate(image)

    def _hold(self, error: str | None) -> bool:
        """The publisher left: when the stream shows a slate and the runtime did not drop it, the feed goes on
        with the slate and the disconnect is reported now; the feed waits for the next connection of the session
        (:meth:`LiveIngest._authorize`) or the end of the reconnect window."""
        if not self.publish.slate or self.stop_reason is not None or not self.feed.hold():
            return False
        self.held = True
        self.watch.cancel()
        self.ingest.holding[self.publish.live_stream_id] = self
        self._report_end(error)
        self.watch = asyncio.get_running_loop().create_task(self._slate_watch(), name="live-slate-watch")
        log.info("live publisher gone: slate", extra={"live_stream": self.publish.live_stream_id})
        return True

    async def _slate_watch(self) -> None:
        """End the held feed when the reconnect window is over or the session ended (completed, disabled,
        deleted, expired), unless the next publisher adopted it first (which cancels this)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish.reconnect_window
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(left, self.ingest.poll_seconds))
            if await asyncio.to_thread(live_control.publish_should_stop, self.ingest.platform,
                                       self.publish.live_stream_id, self.publish.asset_id) is not None:
                break
        if self.ingest.holding.get(self.publish.live_stream_id) is self:
            del self.ingest.holding[self.publish.live_stream_id]
            self.feed.ended(None)

    def adopted(self) -> LiveFeed:
        """The held feed, handed to the session's next connection."""
        self.watch.cancel()
        return self.feed

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.ingest.poll_seconds)
            reason = await asyncio.to_thread(live_control.publish_should_stop, self.ingest.platform,
                                             self.publish.live_stream_id, self.publish.asset_id)
            if reason is not None:
                log.info("live publisher stopped", extra={"live_stream": self.publish.live_stream_id,
                                                          "reason": reason})
                self.stop_reason = reason
                for server in self.ingest.servers:
                    server.drop(self.key)
                return


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """RTMPS: the edge's certificate and key, when the edge has TLS and ``live.rtmps_port`` is set. A certificate
    that cannot be loaded turns RTMPS off (logged), never the rest of the ingest: RTMP and WHIP go on."""
    if settings.live.rtmps_port is None or settings.edge.tls_cert is None or settings.edge.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.edge.tls_cert, settings.edge.tls_key)
    except (OSError, ssl.SSLError) as error:
        log.error("RTMPS is off: the certificate could not be loaded",
                  extra={"tls_cert": str(settings.edge.tls_cert), "error": f"{type(error).__name__}: {error}"})
        return None
    return context


class LiveIngest:
    """The deployment's RTMP ingest (see the module docstring). :meth:`start` returns the port it listens on;
    :meth:`stop` ends every session."""

    def __init__(self, platform: Platform, *, host: str | None = None, port: int | None = None,
                 poll_seconds: float = 2.0) -> None:
        settings = platform.settings.live
        self.platform, self.poll_seconds = platform, poll_seconds
        self.loop = asyncio.new_event_loop()
        self.server = RtmpServer(self._authorize, host=settings.rtmp_host if host is None else host,
                                 port=settings.rtmp_port if port is None else port,
                                 tls=_tls_context(platform.settings), tls_port=settings.rtmps_port or 0)
        #: WHIP ingest and WHEP playback (:mod:`kinoray.live.whip`) on ``live.whip_port``; ``None``: off
        self.whip = None if settings.whip_port is None else WhipServer(
            self._authorize, self._refusal, self._admit_viewer, tap_source=self._publishing_session,
            host=settings.whip_host, port=settings.whip_port,
            ice_servers=settings.webrtc_ice_servers,
            connect_seconds=settings.whip_connect_seconds, idle_seconds=settings.whip_idle_seconds,
            max_viewers=settings.whep_max_viewers)
        #: Every ingest protocol (:class:`~kinoray.live.ingest.IngestServer`), started and stopped together.
        self.servers: list[IngestServer] = [self.server, *([self.whip] if self.whip is not None else [])]
        self.sessions: list[_Session] = []
        #: live stream id → the session whose feed shows the slate until its publisher comes back
        self.holding: dict[str, _Session] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-ingest", daemon=True)
        self._pending: set[asyncio.Future[Any]] = set()

    def start(self) -> int:
        """Start every ingest protocol; the RTMP port (the others: their servers' ``port``). Another protocol
        that cannot listen (its port taken) is left off and logged: RTMP goes on without it."""
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        for server in self.servers[1:]:
            try:
                asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(30)
            except OSError as error:
                log.error("live ingest protocol not started", extra={"protocol": server.protocol,
                                                                    "error": str(error)})
                self.servers.remove(server)
                self.whip = None if server is self.whip else self.whip
        return port

    def stop(self, timeout: float = 60.0) -> None:
        if not self._thread.is_alive():
            return
        for server in self.servers:
            asyncio.run_coroutine_threadsafe(server.close(), self.loop).result(timeout)

        async def drain() -> None:
            for held in self.holding.values():
                held.feed.ended(None)
            await asyncio.gather(*(session.wait() for session in self.sessions), return_exceptions=True)
            await asyncio.gather(*self._pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def background(self, call: Any, *args: Any) -> None:
        """Run a control-plane call (database work) off the event loop; failures are logged."""
        future = asyncio.ensure_future(asyncio.to_thread(call, *args), loop=self.loop)
        self._pending.add(future)

        def done(finished: asyncio.Future[Any]) -> None:
            self._pending.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("live control call failed", extra={"call": getattr(call, "__name__", str(call)),
                                                             "error": str(finished.exception())[:300]})

        future.add_done_callback(done)

    async def _authorize(self, request: PublishRequest) -> _Session | None:
        publish = await asyncio.to_thread(live_control.authorize_publish, self.platform, request.key,
                                          protocol=request.protocol)
        if publish is None:
            return None
        held = self.holding.pop(publish.live_stream_id, None)
        feed = held.adopted() if held is not None and publish.continued and not held.feed.done else None
        if held is not None and feed is None:  # a slate from a session that is over: its last files first
            held.feed.ended(None)
            try:
                await asyncio.wait_for(held.feed.wait(), 90)
            except TimeoutError:
                log.warning("a held live feed did not end", extra={"live_stream": publish.live_stream_id})
        if not publish.continued:  # a new session: the last one's playlists must not be appended to
            await asyncio.to_thread(self.platform.store.delete_prefix, publish.live_prefix)
        session = _Session(self, publish, request, feed)
        self.sessions = [kept for kept in self.sessions if not kept.done] + [session]
        return session

    def _publishing_session(self, live_stream_id: str) -> _Session | None:
        """The session whose publisher sends the stream now (for WHEP viewers of an RTMP publish)."""
        return next((session for session in self.sessions
                     if session.live_stream_id == live_stream_id and session.publishing), None)

    async def _refusal(self, key: str) -> str:
        return await asyncio.to_thread(live_control.publish_refusal, self.platform, key)

    def _admit_viewer(self, playback_id: str, token: str | None, headers: dict[str, str]) -> str:
        return live_control.admit_live_viewer(self.platform, playback_id, token, headers)


class LiveIngestActor:
    """:class:`LiveIngest` as the Ray actor the job runner starts (``kinoray-live-ingest``). A port already in
    use leaves the ingest off (logged, ``status()`` says why) rather than failing the runner."""

    def __init__(self) -> None:
        from kinoray.logs import setup_logging

        setup_logging()
        self.platform = Platform.from_settings()
        self.ingest: LiveIngest | None = None
        self.port: int | None = None
        self.error: str | None = None
        try:
            self.ingest = LiveIngest(self.platform)
            self.port = self.ingest.start()
        except OSError as error:
            self.error = f"live ingest off: {error}"
            log.error("live ingest not started", extra={"error": str(error)})

    def status(self) -> dict[str, Any]:
        publishing = sum(server.publishing for server in self.ingest.servers) if self.ingest is not None else 0
        rtmps = self.ingest.server.tls_port if self.ingest is not None and self.ingest.server.tls else None
        whip = self.ingest.whip.port if self.ingest is not None and self.ingest.whip is not None else None
        return {"port": self.port, "rtmps_port": rtmps, "whip_port": whip, "error": self.error,
                "publishing": publishing}

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
