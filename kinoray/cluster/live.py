"""Live streams on Ray: one transcoder actor per active stream, fed by the ingest, replaced if it dies.

:class:`LiveTranscodeWorker` (the actor body) runs :class:`~kinoray.live.transcode.LiveTranscoder` on a thread
and takes the publisher's FLV in batches. It asks Ray for one CPU (``live.cpus_per_stream``), so streams spread
over the nodes that have room, and it keeps the default niceness: live work is real-time, unlike the batch
encoders that yield the CPU (:mod:`kinoray.priority`).

:class:`LiveFeed` is the ingest's side (a :class:`~kinoray.live.rtmp.Publisher`): it batches tags every
``batch_seconds``, sends them to the actor, and if the actor or its node dies it starts another with
``resume=True`` and sends it the stream's header tags (metadata, the AVC and AAC sequence headers) and the
stream from the next keyframe on. Viewers see a discontinuity in the playlists, not an end. What the publisher
sends meanwhile is held up to ``max_pending_bytes``; past that the session ends with an error.

A transcoder that has not started ``reclaim_after`` seconds after it was asked for, on a cluster with fewer free
CPUs than it needs, takes the CPUs of the encoder actors finished VOD jobs keep for their next job
(:func:`~kinoray.cluster.pool.release_kept_workers`, anywhere in the cluster; never one a job is using), and
again as often while it waits: a live stream cannot wait ``cluster.keep_workers_seconds`` to start.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ray

from kinoray.cluster.pool import release_kept_workers
from kinoray.live.mirror import DirectoryMirror, fetch_playlists
from kinoray.live.pipe import TagPipe
from kinoray.live.recording import RecordingTarget, SegmentRecorder
from kinoray.live.slate import SessionTimeline, build_slate
from kinoray.live.transcode import LiveOptions, LiveResult, LiveTranscoder
from kinoray.media.flv import AUDIO, VIDEO, FlvTag
from kinoray.store.objects import ObjectStore

__all__ = ["LiveFeed", "LiveProgress", "LiveTranscodeWorker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveProgress:
    """What a live transcoder has done so far: segments of its top rung written (in this actor's life),
    frames decoded, and the error that ended it, if one did; the top rung's size and the source's frame rate once
    known (0 before: what a slate is made at)."""

    segments: int
    frames_in: int
    error: str | None
    done: bool
    width: int = 0
    height: int = 0
    frame_rate: Fraction | None = None
    #: LL-HLS parts of the top rung on disk before its first segment (low latency; 0 otherwise): the stream is
    #: playable from the first
    parts: int = 0


class LiveTranscodeWorker:
    """The actor body (wrapped with ``ray.remote`` by :class:`LiveFeed`): one stream's live ladder, written to
    ``store``/``prefix`` — directly into a local store's directory, else into a scratch directory that a
    :class:`~kinoray.live.mirror.DirectoryMirror` copies to the store as it changes. Given ``recording``, a
    :class:`~kinoray.live.recording.SegmentRecorder` copies every segment into the recording asset as the
    section ``section`` (closed by :meth:`finish`)."""

    def __init__(self, store: ObjectStore, prefix: str, options: LiveOptions, resume: bool,
                 recording: RecordingTarget | None = None, section: str = "") -> None:
        from kinoray.logs import setup_logging
        from kinoray.settings import get_settings

        settings = get_settings()
        setup_logging(settings.log_level, settings.native_log_level)
        self.mirror: DirectoryMirror | None = None
        self._mirror_thread: threading.Thread | None = None
        self._stop_mirror = threading.Event()
        if store.is_local:
            directory = Path(store.path(prefix))
        else:
            directory = Path(tempfile.mkdtemp(prefix="kinoray-live-"))
            if resume:
                fetch_playlists(store, prefix, directory)
            self.mirror = DirectoryMirror(directory, store, prefix)
            self._mirror_thread = threading.Thread(target=self.mirror.run, args=(self._stop_mirror,),
                                                   name="live-mirror", daemon=True)
            self._mirror_thread.start()
        # the recording's section: made before the transcoder writes, so what is in the directory already is
        # an earlier section's
        self.recorder = SegmentRecorder(directory, store, recording, section) if recording is not None else None
        self._stop_recorder = threading.Event()
        if self.recorder is not None:
            threading.Thread(target=self.recorder.run, args=(self._stop_recorder,), name="live-recorder",
                             daemon=True).start()
        self.pipe = TagPipe()
        self.transcoder = LiveTranscoder(self.pipe, directory, options, resume=resume)
        self.thread = threading.Thread(target=self.transcoder.run, name="live-transcode", daemon=True)
        self.thread.start()

    def feed(self, data: bytes, tags: int) -> LiveProgress:
        self.pipe.write(data, tags)
        return self.progress()

    def progress(self) -> LiveProgress:
        result, top = self.transcoder.result, self.transcoder.top
        segments = sum(1 for _ in top.glob("seg_*.m4s")) if top is not None and top.exists() else 0
        top_rung = result.renditions[0] if result.renditions else None
        return LiveProgress(segments, result.frames_in, result.error or self.pipe.error, not self.thread.is_alive(),
                            width=top_rung.width if top_rung else 0, height=top_rung.height if top_rung else 0,
                            frame_rate=result.frame_rate,
                            parts=sum(1 for _ in top.glob("part_*.m4s")) if not segments and top is not None
                            and self.transcoder.options.part_seconds and top.exists() else 0)

    def finish(self, error: str | None, timeout: float = 60.0) -> LiveResult:
        """End the stream (the playlists get ``EXT-X-ENDLIST``), wait for the transcoder to drain and the last
        files to reach the store."""
        self.pipe.ended(error)
        self.thread.join(timeout)
        result = self.transcoder.result
        if self.recorder is not None:  # before the mirror's scratch directory goes
            self._stop_recorder.set()
            self.recorder.close(encoder=result.encoder or None, error=result.error or self.pipe.error,
                                frames=result.frames_in)
        if self._mirror_thread is not None:
            # its last pass, done before the directory goes: a pass over a half-deleted directory would delete
            # from the store what is no longer there (seen under load: playlists and segments gone from S3)
            self._stop_mirror.set()
            self._mirror_thread.join(timeout)
            shutil.rmtree(self.transcoder.directory, ignore_errors=True)
        return self.transcoder.result


_RemoteWorker = ray.remote(LiveTranscodeWorker)


def _is_header(tag: FlvTag) -> bool:
    """Metadata, or a codec configuration record (:attr:`~kinoray.media.flv.FlvTag.is_header`)."""
    return tag.is_header


class LiveFeed:
    """Feeds one publisher's stream to a transcoder actor from the ingest's event loop (see the module
    docstring); the actor writes the live HLS under ``store``/``prefix`` and, given ``recording``, records its
    segments as the recording asset's (:mod:`kinoray.live.recording`). ``on_segment(count)`` is called (on the
    loop) when the stream is playable — its first segment, at low latency its first LL-HLS part; ``on_end(result,
    error)`` once the session is over, with the last actor's result. ``reclaim_after``: seconds a transcoder may
    wait to start before kept encoder actors are released for its CPUs (module docstring); ``None``: it waits."""

    def __init__(self, store: ObjectStore, prefix: str, options: LiveOptions, *, cpus: float = 1.0,
                 max_restarts: int = 3, recording: RecordingTarget | None = None,
                 batch_seconds: float = 0.1, max_pending_bytes: int = 64 << 20,
                 on_segment: Callable[[int], None] | None = None,
                 on_end: Callable[[LiveResult | None, str | None], None] | None = None,
                 actor_options: dict[str, Any] | None = None, reclaim_after: float | None = 1.0) -> None:
        self.store, self.prefix, self.options = store, prefix, options
        self.cpus, self.max_restarts, self.recording = cpus, max_restarts, recording
        self.reclaim_after = reclaim_after
        #: kept encoder actors released for this session's transcoders (their CPUs)
        self.encoders_released = 0
        self._reclaim: asyncio.Task[None] | None = None
        self.batch_seconds, self.max_pending_bytes = batch_seconds, max_pending_bytes
        self.on_segment, self.on_end = on_segment, on_end
        self.actor_options = actor_options or {}
        self.headers: list[FlvTag] = []
        self.pending: list[bytes] = []
        self.pending_tags = self.pending_bytes = 0
        self.restarts = 0
        self.waiting_for_keyframe = False
        self.segments_seen = 0
        self.error: str | None = None
        #: the session's one FLV timeline: publisher connections and the slate between them (kinoray.live.slate)
        self.timeline = SessionTimeline()
        self._slate_image: bytes | None = None
        self._slate_wanted = False
        self._slate_build: asyncio.Task[None] | None = None
        self._announce = False
        self._stalled = False  # the publisher, still connected, sent nothing for a while: the slate runs
        self._last_media = time.monotonic()
        self._ended = asyncio.Event()
        self._actor = self._start(resume=False)
        self._task = asyncio.get_running_loop().create_task(self._pump(), name="live-feed")

    # --- Publisher --------------------------------------------------------------------------------------

    def media(self, tag: FlvTag) -> None:
        self._last_media = time.monotonic()
        if self._stalled:  # it sends again: from its next keyframe, after the slate
            self._stalled = False
            self.timeline.reconnected()
        for out in self.timeline.publisher(tag, time.time()):
            self._queue(out)

    def _queue(self, tag: FlvTag) -> None:
        if _is_header(tag):
            self.headers = [kept for kept in self.headers if (kept.kind, _is_header(kept)) != (tag.kind, True)]
            self.headers.append(tag)
        if self.waiting_for_keyframe:
            # audio only: every AAC frame starts cleanly
            start = AUDIO if self.options.audio_only else VIDEO
            if not (tag.kind == start and (tag.is_keyframe or start == AUDIO) and not _is_header(tag)):
                return
            self.waiting_for_keyframe = False
        data = tag.to_bytes()
        self.pending.append(data)
        self.pending_tags += 1
        self.pending_bytes += len(data)
        if self.pending_bytes > self.max_pending_bytes and self.error is None:
            self.error = f"the live transcoder fell more than {self.max_pending_bytes} bytes behind"
            self._ended.set()

    def ended(self, error: str | None) -> None:
        if self.error is None:
            self.error = error
        self._ended.set()

    # --- slates (kinoray.live.slate) ---------------------------------------------------------------------

    def use_slate(self, image: bytes | None) -> None:
        """Make this session's slate (``image``, or the default slate for ``None``) as soon as the transcoder
        knows the stream's size and frame rate, so :meth:`hold` can start it at once."""
        self._slate_image, self._slate_wanted = image, True

    def hold(self) -> bool:
        """The publisher is gone but the session goes on (its reconnect window): the transcoder keeps producing,
        from the slate, until :meth:`adopt` or :meth:`ended`. ``False`` (nothing changed) when there is no slate
        (none asked for, or not made yet)."""
        return not self._ended.is_set() and self.timeline.publisher_left(time.time())

    def adopt(self, on_segment: Callable[[int], None] | None,
              on_end: Callable[[LiveResult | None, str | None], None] | None) -> None:
        """A publisher of the same session connected while the slate runs: its tags (through :meth:`media`)
        follow the slate from its first keyframe; ``on_segment`` is called once its media is being sent, ``on_end``
        when the session ends."""
        self.timeline.reconnected()
        self.on_segment, self.on_end = on_segment, on_end
        self._announce, self._stalled = True, False

    def _stall_check(self) -> None:
        """Mux's slate for "brief interruptions in the live stream media": a connected publisher that sent
        nothing for a segment's time (at least 1 s) gets the slate until it sends again."""
        if self._slate_wanted and not self._stalled and not self.timeline.slating and \
                time.monotonic() - self._last_media > max(1.0, self.options.segment_seconds) and \
                self.timeline.publisher_left(time.time()):
            self._stalled = True
            log.info("live publisher silent: slate", extra={"prefix": self.prefix})

    def _slate_due(self, progress: LiveProgress) -> None:
        if not self._slate_wanted or self._slate_build is not None or self.timeline.slate_media is not None or \
                not progress.width or progress.frame_rate is None:
            return
        audio = next((tag for tag in self.headers if tag.kind == AUDIO and tag.is_header), None)
        image, rate = self._slate_image, progress.frame_rate

        async def build() -> None:
            try:
                self.timeline.slate_media = await asyncio.to_thread(
                    build_slate, image, width=progress.width, height=progress.height, frame_rate=rate,
                    audio_header=audio)
            except Exception as error:  # noqa: BLE001 - no slate: the session ends at a disconnect as before
                log.error("live slate not made", extra={"prefix": self.prefix, "error": str(error)[:300]})

        self._slate_build = asyncio.get_running_loop().create_task(build(), name="live-slate")

    # --- the actor ---------------------------------------------------------------------------------------

    def _start(self, *, resume: bool) -> Any:
        options = {"num_cpus": self.cpus, "max_restarts": 0, "max_task_retries": 0, **self.actor_options}
        section = self.recording.section(self.restarts) if self.recording is not None else ""
        actor = _RemoteWorker.options(**options).remote(self.store, self.prefix, self.options, resume,
                                                        self.recording, section)
        if self.reclaim_after is not None:
            if self._reclaim is not None:
                self._reclaim.cancel()
            self._reclaim = asyncio.get_running_loop().create_task(self._make_room(actor), name="live-reclaim")
        return actor

    async def _make_room(self, actor: Any) -> None:
        """Until ``actor`` has started: every ``reclaim_after`` seconds, if the cluster has fewer free CPUs than it
        asks for, release the kept encoder actors (see the module docstring)."""
        assert self.reclaim_after is not None
        started = actor.__ray_ready__.remote()  # done once it runs (or died: _send finds out and replaces it)
        while not (await asyncio.to_thread(ray.wait, [started], timeout=self.reclaim_after))[0]:
            free = (await asyncio.to_thread(ray.available_resources)).get("CPU", 0.0)
            if free >= self.cpus:
                continue  # not waiting for CPUs: starting (a new process imports for a while)
            released = await asyncio.to_thread(release_kept_workers)
            self.encoders_released += released
            log.info("live transcoder waits for CPUs", extra={"prefix": self.prefix, "free_cpus": free,
                                                              "encoders_released": released})

    def _replace(self, reason: str) -> bool:
        """A new actor after the old one died; ``False`` once the restarts are spent."""
        if self.restarts >= self.max_restarts:
            self.error = f"the live transcoder died {self.restarts + 1} times; last: {reason}"
            return False
        self.restarts += 1
        log.warning("live transcoder lost; starting another", extra={"prefix": self.prefix,
                                                                    "reason": reason, "restart": self.restarts})
        self._actor = self._start(resume=True)
        # the new transcoder needs the codec configuration, then a keyframe to start decoding from
        self.pending = [tag.to_bytes() for tag in self.headers]
        self.pending_tags = len(self.pending)
        self.pending_bytes = sum(len(item) for item in self.pending)
        self.waiting_for_keyframe = True
        return True

    async def _send(self) -> None:
        data, tags = b"".join(self.pending), self.pending_tags
        self.pending, self.pending_tags, self.pending_bytes = [], 0, 0
        try:
            progress: LiveProgress = await self._actor.feed.remote(data, tags)
        except ray.exceptions.RayActorError as error:
            if not self._replace(str(error)[:300]):
                self._ended.set()
            return
        self._slate_due(progress)
        if self._announce and not self.timeline.slating and self.on_segment is not None:
            self._announce = False  # a reconnected publisher's media is on the way: no new first segment to wait for
            self.on_segment(progress.segments)
        if progress.error and progress.done:
            self.error = self.error or progress.error
            self._ended.set()
        elif progress.segments > self.segments_seen or (progress.parts and not self.segments_seen):
            # playable: a segment, or at low latency the first LL-HLS part (a player starts from parts)
            first = self.segments_seen == 0
            self.segments_seen = max(progress.segments, 1)
            if first and self.on_segment is not None:
                self.on_segment(progress.segments)

    async def _pump(self) -> None:
        result: LiveResult | None = None
        try:
            while not self._ended.is_set():
                try:
                    await asyncio.wait_for(self._ended.wait(), self.batch_seconds)
                except TimeoutError:
                    pass
                self._stall_check()
                for tag in self.timeline.slate_tags(time.time()):
                    self._queue(tag)
                if self.pending and not (self._ended.is_set() and self.error and "behind" in self.error):
                    await self._send()
            if self.pending:
                await self._send()
            try:
                result = await self._actor.finish.remote(self.error)
            except ray.exceptions.RayActorError as error:
                self.error = self.error or f"the live transcoder died while finishing: {error}"[:300]
        finally:
            if self._reclaim is not None:
                self._reclaim.cancel()
            if self.on_end is not None:
                self.on_end(result, self.error)

    async def wait(self) -> None:
        """Until the session is over and the last actor has finished."""
        await self._task

    @property
    def done(self) -> bool:
        """Whether the session is over and its last actor finished."""
        return self._task.done()

    @property
    def actor(self) -> Any:
        """The stream's current transcoder actor."""
        return self._actor
