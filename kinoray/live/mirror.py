"""Live output to object storage: FFmpeg's HLS muxer writes files; when the store is not a local directory
(S3), :class:`DirectoryMirror` copies the output directory to the store as it changes.

Order is what keeps viewers safe: every new media file (``init.mp4``, ``seg_*.m4s``, LL-HLS ``part_*.m4s``, once
the packager has renamed it into place — ``*.tmp`` files are never copied) is uploaded before any playlist that
may list it, and a
segment the muxer deleted (out of the DVR window) is deleted from the store after the playlists that no longer
list it. A playlist is uploaded only when it changed.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from kinoray.errors import StorageError
from kinoray.live.hlsmux import MUXER_PLAYLIST
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
        # what the playlists already here list (a resumed stream's, fetched from the store): in the store already
        self._inherited = {_relative(path.parent.relative_to(self.directory).as_posix(), name)
                           for path in self.directory.rglob("*.m3u8") for name in _listed_media(path.read_bytes())}
        self.uploads = self.deletes = self.failures = 0

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    def sync_once(self) -> None:
        """One pass: new media, then changed playlists, then deletions. The playlists are read *before* the
        directory is listed for media, and those bytes are what is uploaded: every file a playlist read then
        lists was already in place (the packagers write media before the playlists that list it), so it is
        uploaded first even when the packager writes a newer playlist meanwhile (LL-HLS: several a second)."""
        present: dict[str, tuple[int, int]] = {}
        snapshots: dict[str, bytes] = {}
        for path in sorted(self.directory.rglob("*.m3u8")):
            if path.name == MUXER_PLAYLIST:
                continue  # FFmpeg's own, never served: kinoray's index.m3u8 is written from it
            name = path.relative_to(self.directory).as_posix()
            try:
                stat = path.stat()
                if self._seen.get(name) != (stat.st_mtime_ns, stat.st_size):
                    snapshots[name] = path.read_bytes()
            except FileNotFoundError:
                continue
            present[name] = (stat.st_mtime_ns, stat.st_size)
        for path in self.directory.rglob("*"):
            if path.is_file() and not path.name.endswith((".tmp", ".recording", ".m3u8")):
                try:
                    stat = path.stat()
                except FileNotFoundError:  # deleted by the packager meanwhile
                    continue
                present[path.relative_to(self.directory).as_posix()] = (stat.st_mtime_ns, stat.st_size)
        media = sorted(name for name in present if not name.endswith(".m3u8"))
        for name in media:
            if self._seen.get(name) != present[name]:
                self._upload(name, present[name])
        for name, data in snapshots.items():
            folder = name.rpartition("/")[0]
            listed = [_relative(folder, uri) for uri in _listed_media(data)]
            gone = [uri for uri in listed if uri not in present and uri not in self._seen and uri not in self._inherited]
            if gone:  # deleted after the playlist was read and never uploaded (a packager far ahead): next pass
                log.debug("live mirror skipped a playlist naming files already gone", extra={"key": name,
                                                                                           "gone": gone[:3]})
                continue
            self._upload(name, present[name], data)
        for name in sorted(set(self._seen) - set(present)):
            try:
                self.store.delete(self._key(name))
                self.deletes += 1
            except StorageError as error:
                self.failures += 1
                log.warning("live mirror could not delete", extra={"key": self._key(name), "error": str(error)})
            self._seen.pop(name, None)

    def _upload(self, name: str, version: tuple[int, int], data: bytes | None = None) -> None:
        try:
            if data is not None:
                self.store.put_bytes(data, self._key(name))
            else:
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


_URI = re.compile(rb'URI="([^"?]+)')


def _relative(folder: str, name: str) -> str:
    """``name`` listed by a playlist in ``folder`` (relative to the mirrored directory), relative to that."""
    return name if folder in ("", ".") else f"{folder}/{name}"


def _listed_media(playlist: bytes) -> list[str]:
    """The media files a media playlist lists (segments, parts, its map), relative to it; not the preload hint
    (a part still to be written) nor other playlists (rendition reports)."""
    names = []
    for line in playlist.splitlines():
        if line.startswith(b"#EXT-X-PRELOAD-HINT") or line.startswith(b"#EXT-X-RENDITION-REPORT"):
            continue
        if line.startswith(b"#"):
            names += [match.decode() for match in _URI.findall(line)]
        elif line.strip():
            names.append(line.strip().split(b"?")[0].decode())
    return [name for name in names if not name.endswith(".m3u8")]


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
