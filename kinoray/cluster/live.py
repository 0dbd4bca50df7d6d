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
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from kinoray.live.mirror import DirectoryMirror, fetch_playlists
from kinoray.live.pipe import TagPipe
from kinoray.live.transcode import LiveOptions, LiveResult, LiveTranscoder
from kinoray.media.flv import VIDEO, FlvTag
from kinoray.store.objects import ObjectStore

__all__ = ["LiveFeed", "LiveProgress", "LiveTranscodeWorker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveProgress:
    """What a live transcoder has done so far: segments of its top rung written (in this actor's life),
    frames decoded, and the error that ended it, if one did."""

    segments: int
    frames_in: int
    error: str | None
    done: bool


class LiveTranscodeWorker:
    """The actor body (wrapped with ``ray.remote`` by :class:`LiveFeed`): one stream's live ladder, written to
    ``store``/``prefix`` — directly into a local store's directory, else into a scratch directory that a
    :class:`~kinoray.live.mirror.DirectoryMirror` copies to the store as it changes."""

    def __init__(self, store: ObjectStore, prefix: str, options: LiveOptions, resume: bool) -> None:
        from kinoray.logs import setup_logging
        from kinoray.settings import get_settings

        settings = get_settings()
        setup_logging(settings.log_level, settings.native_log_level)
        self.mirror: DirectoryMirror | None = None
        self._stop_mirror = threading.Event()
        if store.is_local:
            directory = Path(store.path(prefix))
        else:
            directory = Path(tempfile.mkdtemp(prefix="kinoray-live-"))
            if resume:
                fetch_playlists(store, prefix, directory)
            self.mirror = DirectoryMirror(directory, store, prefix)
            threading.Thread(target=self.mirror.run, args=(self._stop_mirror,), name="live-mirror",
                             daemon=True).start()
        self.pipe = TagPipe()
        self.transcoder = LiveTranscoder(self.pipe, directory, options, resume=resume)
        self.thread = threading.Thread(target=self.transcoder.run, name="live-transcode", daemon=True)
        self.thread.start()

    def feed(self, data: bytes, tags: int) -> LiveProgress:
        self.pipe.write(data, tags)
        return self.progress()

    def progress(self) -> LiveProgress:
        result = self.transcoder.result
        top = self.transcoder.directory / result.renditions[0].name if result.renditions else None
        segments = sum(1 for _ in top.glob("seg_*.m4s")) if top is not None and top.exists() else 0
        return LiveProgress(segments, result.frames_in, result.error or self.pipe.error, not self.thread.is_alive())

    def finish(self, error: str | None, timeout: float = 60.0) -> LiveResult:
        """End the stream (the playlists get ``EXT-X-ENDLIST``), wait for the transcoder to drain and the last
        files to reach the store."""
        self.pipe.ended(error)
        self.thread.join(timeout)
        if self.mirror is not None:
            self._stop_mirror.set()
            self.mirror.sync_once()
            shutil.rmtree(self.transcoder.directory, ignore_errors=True)
        return self.transcoder.result


_RemoteWorker = ray.remote(LiveTranscodeWorker)


def _is_header(tag: FlvTag) -> bool:
    """Metadata, or a codec configuration record (:attr:`~kinoray.media.flv.FlvTag.is_header`)."""
    return tag.is_header


class LiveFeed:
    """Feeds one publisher's stream to a transcoder actor from the ingest's event loop (see the module
    docstring); the actor writes the live HLS under ``store``/``prefix``. ``on_segment(count)`` is called (on the loop) when the first segments appear; ``on_end(result,
    error)`` once the session is over, with the last actor's result."""

    def __init__(self, store: ObjectStore, prefix: str, options: LiveOptions, *, cpus: float = 1.0,
                 max_restarts: int = 3,
                 batch_seconds: float = 0.1, max_pending_bytes: int = 64 << 20,
                 on_segment: Callable[[int], None] | None = None,
                 on_end: Callable[[LiveResult | None, str | None], None] | None = None,
                 actor_options: dict[str, Any] | None = None) -> None:
        self.store, self.prefix, self.options = store, prefix, options
        self.cpus, self.max_restarts = cpus, max_restarts
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
        self._ended = asyncio.Event()
        self._actor = self._start(resume=False)
        self._task = asyncio.get_running_loop().create_task(self._pump(), name="live-feed")

    # --- Publisher --------------------------------------------------------------------------------------

    def media(self, tag: FlvTag) -> None:
        if _is_header(tag):
            self.headers = [kept for kept in self.headers if (kept.kind, _is_header(kept)) != (tag.kind, True)]
            self.headers.append(tag)
        if self.waiting_for_keyframe:
            if not (tag.kind == VIDEO and tag.is_keyframe and not _is_header(tag)):
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

    # --- the actor ---------------------------------------------------------------------------------------

    def _start(self, *, resume: bool) -> Any:
        options = {"num_cpus": self.cpus, "max_restarts": 0, "max_task_retries": 0, **self.actor_options}
        return _RemoteWorker.options(**options).remote(self.store, self.prefix, self.options, resume)

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
        if progress.error and progress.done:
            self.error = self.error or progress.error
            self._ended.set()
        elif progress.segments > self.segments_seen:
            first = self.segments_seen == 0
            self.segments_seen = progress.segments
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
                if self.pending and not (self._ended.is_set() and self.error and "behind" in self.error):
                    await self._send()
            if self.pending:
                await self._send()
            try:
                result = await self._actor.finish.remote(self.error)
            except ray.exceptions.RayActorError as error:
                self.error = self.error or f"the live transcoder died while finishing: {error}"[:300]
        finally:
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
