"""Live output to object storage: FFmpeg's HLS muxer writes files; when the store is not a local directory
(S3), :class:`DirectoryMirror` copies the output directory to the store as it changes.

Order is what keeps viewers safe: every new media file (``init.mp4``, ``seg_*.m4s``, once the muxer has renamed
it into place — ``*.tmp`` files are never copied) is uploaded before any playlist that may list it, and a
segment the muxer deleted (out of the DVR window) is deleted from the store after the playlists that no longer
list it. A playlist is uploaded only when it changed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from kinoray.errors import StorageError
from kinoray.store.objects import ObjectStore

__all__ = ["DirectoryMirror", "fetch_playlists"]

log = logging.getLogger(__name__)


class DirectoryMirror:
    """Keeps ``store``/``prefix`` equal to ``directory`` (see the module docstring); :meth:`run` on a thread
    until ``stop`` is set, then one last pass."""

    def __init__(self, directory: Path, store: ObjectStore, prefix: str, *, interval: float = 0.2) -> None:
        self.directory, self.store, self.prefix = Path(directory), store, prefix.strip("/")
        self.interval = interval
        self._seen: dict[str, tuple[int, int]] = {}  # relative path -> (mtime_ns, size) uploaded
        self.uploads = self.deletes = self.failures = 0

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    def sync_once(self) -> None:
        """One pass: new media, then changed playlists, then deletions."""
        present: dict[str, tuple[int, int]] = {}
        for path in self.directory.rglob("*"):
            if path.is_file() and not path.name.endswith((".tmp", ".recording")):
                stat = path.stat()
                present[path.relative_to(self.directory).as_posix()] = (stat.st_mtime_ns, stat.st_size)
        media = sorted(name for name in present if not name.endswith(".m3u8"))
        playlists = sorted(name for name in present if name.endswith(".m3u8"))
        for name in [*media, *playlists]:
            if self._seen.get(name) != present[name]:
                self._upload(name, present[name])
        for name in sorted(set(self._seen) - set(present)):
            try:
                self.store.delete(self._key(name))
                self.deletes += 1
            except StorageError as error:
                self.failures += 1
                log.warning("live mirror could not delete", extra={"key": self._key(name), "error": str(error)})
            self._seen.pop(name, None)

    def _upload(self, name: str, version: tuple[int, int]) -> None:
        try:
            self.store.put_file(self.directory / name, self._key(name))
        except (StorageError, FileNotFoundError) as error:  # gone meanwhile (deleted by the muxer): next pass
            self.failures += 1
            log.warning("live mirror could not upload", extra={"key": self._key(name), "error": str(error)})
            return
        self._seen[name] = version
        self.uploads += 1

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.sync_once()
        self.sync_once()


def fetch_playlists(store: ObjectStore, prefix: str, directory: Path) -> int:
    """Copy the playlists under ``prefix`` into ``directory`` (a transcoder resuming on another machine appends
    to them); how many."""
    count = 0
    prefix = prefix.strip("/")
    for key in store.list(prefix):
        relative = key[len(prefix):].lstrip("/")
        if relative.endswith(".m3u8"):
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            store.get_file(key, target)
            count += 1
    return count
