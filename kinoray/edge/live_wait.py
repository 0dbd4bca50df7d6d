"""Waiting for live playlists on the edge without a thread per viewer: LL-HLS blocking playlist reloads
(``_HLS_msn``/``_HLS_part``) and requests for a part that is not written yet (``EXT-X-PRELOAD-HINT``).

A waiting request is a future on the event loop. Each playlist someone waits on has one watcher task per edge
process that short-polls it — a local store's ``stat`` (a system call on the loop, every
``live.blocking_poll_seconds``), an S3 object's bytes (a worker thread, every
``live.blocking_poll_remote_seconds``) — reads it when it changed, and resolves the waiters whose condition the
new text meets. The task ends when nobody waits. Waiters per process are capped (``live.blocking_max_waiting``;
past it: 503), and each wait is bounded by its caller's timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from kinoray.errors import NotFoundError, OverCapacityError, StorageError
from kinoray.live.llhls import PlaylistState
from kinoray.store.objects import ObjectStore

__all__ = ["LivePlaylists"]

log = logging.getLogger(__name__)

_Ready = Callable[[PlaylistState], bool]


@dataclass
class _Watched:
    waiters: list[tuple[_Ready, asyncio.Future[PlaylistState]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class LivePlaylists:
    """Live playlist reads and waits of one edge process (see the module docstring)."""

    def __init__(self, store: ObjectStore, *, poll_seconds: float = 0.02, remote_poll_seconds: float = 0.1,
                 max_waiting: int = 10_000) -> None:
        self.store = store
        self.poll_seconds = poll_seconds if store.is_local else remote_poll_seconds
        self.max_waiting = max_waiting
        self.waiting = 0
        self._watched: dict[str, _Watched] = {}

    # --- reading -------------------------------------------------------------------------------------------

    def _version(self, key: str) -> tuple[int, int] | None:
        try:
            status = os.stat(self.store.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return status.st_mtime_ns, status.st_size

    def _read_local(self, key: str) -> str:
        try:
            with open(self.store.path(key), "rb") as file:
                return file.read().decode("utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError("no such live playlist for this playback id") from None

    def _read_remote(self, key: str) -> str:
        try:
            return self.store.get_bytes(key).decode("utf-8")
        except StorageError as error:
            if isinstance(error.__cause__, FileNotFoundError | IsADirectoryError | NotADirectoryError):
                raise NotFoundError("no such live playlist for this playback id") from None
            raise

    async def read(self, key: str) -> str:
        """The playlist as it is now (a local one, a few KiB, read on the loop; an S3 one on a thread).

        Raises:
            NotFoundError: no such playlist.
        """
        if self.store.is_local:
            return self._read_local(key)
        return await asyncio.to_thread(self._read_remote, key)

    # --- waiting -------------------------------------------------------------------------------------------

    async def wait(self, key: str, ready: _Ready, timeout: float) -> PlaylistState | None:
        """The playlist once ``ready(playlist)`` holds (checked on each change from now on; parsed once per
        change for all its waiters), ``None`` after ``timeout`` seconds.

        Raises:
            OverCapacityError: this process already holds ``max_waiting`` waiting requests (503).
        """
        if self.waiting >= self.max_waiting:
            raise OverCapacityError("too many blocked playlist requests on this edge process; retry", 1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PlaylistState] = loop.create_future()
        watched = self._watched.get(key)
        if watched is None:
            watched = self._watched[key] = _Watched()
        entry = (ready, future)
        watched.waiters.append(entry)
        if watched.task is None or watched.task.done():
            watched.task = loop.create_task(self._watch(key, watched), name="live-playlist-watch")
        self.waiting += 1
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self.waiting -= 1
            if entry in watched.waiters:
                watched.waiters.remove(entry)

    async def _watch(self, key: str, watched: _Watched) -> None:
        seen: object = None
        try:
            while watched.waiters:
                text: str | None = None
                if self.store.is_local:
                    version = self._version(key)
                    if version is not None and version != seen:
                        seen = version
                        try:
                            text = self._read_local(key)
                        except NotFoundError:
                            text = None
                else:
                    try:
                        text = await asyncio.to_thread(self._read_remote, key)
                    except (NotFoundError, StorageError):
                        text = None
                    if text == seen:
                        text = None
                    elif text is not None:
                        seen = text
                state = _parse(text) if text is not None else None
                if state is not None:
                    for ready, future in list(watched.waiters):
                        if not future.done() and ready(state):
                            future.set_result(state)
                await asyncio.sleep(self.poll_seconds)
        except Exception:  # a watcher must never take the waiters down with it: they time out instead
            log.exception("live playlist watch failed", extra={"key": key})
        finally:
            if self._watched.get(key) is watched and not watched.waiters:
                del self._watched[key]


def _parse(text: str) -> PlaylistState | None:
    try:
        return PlaylistState.parse(text)
    except (ValueError, KeyError) as error:  # not a playlist kinoray wrote: nothing to wake anyone for
        log.warning("live playlist unreadable", extra={"error": str(error)[:200]})
        return None
