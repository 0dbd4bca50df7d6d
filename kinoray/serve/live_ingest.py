"""The live runtime: the RTMP ingest of a deployment, joining the ingest server (:mod:`kinoray.live.rtmp`), the
live control plane (:mod:`kinoray.control.live`) and the transcoder actors (:mod:`kinoray.cluster.live`).

:class:`LiveIngest` runs the RTMP server on an event loop thread. For each publish it asks
:func:`~kinoray.control.live.authorize_publish` (the key, one session per stream), then

- records what the publisher sends, unchanged, as this connection's part of the recording's source FLV
  (``LivePublish.source_key``; the control plane joins the parts and transcodes the recording as an ordinary
  asset when the session ends);
- feeds it to a :class:`~kinoray.cluster.live.LiveFeed` (a transcoder actor on the cluster, replaced if it dies)
  writing the live HLS under the stream's live prefix, which the delivery edge serves for the stream's playback
  ids;
- pushes it on to each of the stream's simulcast targets (:class:`~kinoray.live.simulcast.SimulcastPusher`, one
  per target on this loop, each with its own bounded queue, so a slow or dead target affects only itself), and
  stores each target's status changes in order (:func:`~kinoray.control.live.set_simulcast_status`, one report
  at a time per session, off the loop);
- reports the first segment (:func:`~kinoray.control.live.publish_active`) and the end
  (:func:`~kinoray.control.live.publish_ended`, after the recording part is in place);
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
import tempfile
import threading
from pathlib import Path
from typing import Any

from kinoray.cluster.live import LiveFeed
from kinoray.control import live as live_control
from kinoray.control.platform import Platform
from kinoray.live.rtmp import PublishRequest, RtmpServer
from kinoray.live.simulcast import SimulcastPusher, SimulcastStatus
from kinoray.live.transcode import LiveOptions, LiveResult
from kinoray.media.flv import FlvTag, flv_header
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

    def __init__(self, ingest: LiveIngest, publish: live_control.LivePublish, request: PublishRequest) -> None:
        self.ingest, self.publish, self.key = ingest, publish, request.key
        platform, settings = ingest.platform, ingest.platform.settings.live
        options = LiveOptions(segment_seconds=settings.segment_seconds.get(publish.latency_mode, 4.0),
                              window_segments=settings.window_segments, heights=settings.heights,
                              encoder=settings.encoder, preset=settings.preset,
                              part_seconds=settings.part_seconds if publish.latency_mode == "low" else None)
        self.recording = _Recording(platform.store, publish.source_key)
        self.feed = LiveFeed(platform.store, publish.live_prefix, options, cpus=settings.cpus_per_stream,
                             max_restarts=settings.max_restarts, on_segment=self._first_segment, on_end=self._end)
        self.reports = _StatusReports(ingest)
        self.closing: asyncio.Task[None] | None = None
        self.pushers = [SimulcastPusher(
            target.target_id, target.url, target.stream_key, self.reports,
            max_buffer_bytes=settings.simulcast_buffer_bytes, connect_timeout=settings.simulcast_connect_seconds,
            write_timeout=settings.simulcast_write_seconds, retry_seconds=settings.simulcast_retry_seconds,
            max_retry_seconds=settings.simulcast_max_retry_seconds,
            socket_buffer=settings.simulcast_socket_buffer_bytes) for target in publish.simulcast_targets]
        self.watch = asyncio.get_running_loop().create_task(self._watch(), name="live-watch")

    def media(self, tag: FlvTag) -> None:
        self.recording.write(tag)
        self.feed.media(tag)
        for pusher in self.pushers:
            pusher.media(tag)

    def ended(self, error: str | None) -> None:
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
                                              "recorded_bytes": self.recording.bytes})

        def finish() -> None:  # the part must be at its key before the session may end and join the parts
            self.recording.close()
            live_control.publish_ended(self.ingest.platform, self.publish.live_stream_id, error)

        self.ingest.background(finish)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.ingest.poll_seconds)
            reason = await asyncio.to_thread(live_control.publish_should_stop, self.ingest.platform,
                                             self.publish.live_stream_id, self.publish.asset_id)
            if reason is not None:
                log.info("live publisher stopped", extra={"live_stream": self.publish.live_stream_id,
                                                          "reason": reason})
                self.ingest.server.drop(self.key)
                return


class LiveIngest:
    """The deployment's RTMP ingest (see the module docstring). :meth:`start` returns the port it listens on;
    :meth:`stop` ends every session."""

    def __init__(self, platform: Platform, *, host: str | None = None, port: int | None = None,
                 poll_seconds: float = 2.0) -> None:
        settings = platform.settings.live
        self.platform, self.poll_seconds = platform, poll_seconds
        self.loop = asyncio.new_event_loop()
        self.server = RtmpServer(self._authorize, host=settings.rtmp_host if host is None else host,
                                 port=settings.rtmp_port if port is None else port)
        self.sessions: list[_Session] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-ingest", daemon=True)
        self._pending: set[asyncio.Future[Any]] = set()

    def start(self) -> int:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def stop(self, timeout: float = 60.0) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(timeout)

        async def drain() -> None:
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
        publish = await asyncio.to_thread(live_control.authorize_publish, self.platform, request.key)
        if publish is None:
            return None
        if not publish.continued:  # a new session: the last one's playlists must not be appended to
            await asyncio.to_thread(self.platform.store.delete_prefix, publish.live_prefix)
        session = _Session(self, publish, request)
        self.sessions = [kept for kept in self.sessions if not kept.done] + [session]
        return session


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
        publishing = self.ingest.server.publishing if self.ingest is not None else 0
        return {"port": self.port, "error": self.error, "publishing": publishing}

    def stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
