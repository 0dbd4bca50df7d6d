"""The player's static files: an explicit allow-list (kinoray's own files plus what ``static/vendor.json``
records), each read once and kept in memory with a gzip copy, a strong ETag and a version for cache busting.

The whole set is about 1.5 MB (hls.js 0.6 MB, dash.js 0.8 MB, gzip copies a third of that), so holding it is
cheaper than a disk read per request and lets every answer be immutable: pages link ``static/NAME?v=VERSION``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinoray.errors import NotFoundError

__all__ = ["OWN_FILES", "PLAYER", "STATIC_DIR", "StaticBundle", "StaticFile", "static_file", "static_names",
           "static_url", "vendored"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: kinoray's own files in ``static/`` (written by hand; ``build.mjs`` writes the vendored ones).
OWN_FILES = ("kinoray-player.js", "kinoray-player.css", "kinoray-dash.js")
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_GZIP_MIN_BYTES = 1024  # below that the gzip header costs more than it saves


@dataclass(frozen=True)
class StaticFile:
    """One servable file. ``version`` (16 hex digits of its sha256) is what :func:`static_url` appends."""

    name: str
    body: bytes
    gzipped: bytes | None  # None when not worth compressing
    content_type: str
    etag: str
    version: str

    def __post_init__(self) -> None:
        if "/" in self.name or self.name.startswith("."):
            raise ValueError(f"static file name {self.name!r} must be a plain file name")


class StaticBundle:
    """An allow-listed folder of static files, each read once and kept in memory with a gzip copy, a strong ETag
    and a version: ``own`` (kinoray's files) plus what the folder's ``vendor.json`` records (``build.mjs``
    writes both). The player and the dashboard each have one; ``what`` names it in errors."""

    def __init__(self, directory: Path, own: tuple[str, ...], what: str) -> None:
        self.directory, self.own, self.what = directory, own, what
        self._files: dict[str, StaticFile] = {}

    @functools.cached_property
    def vendored(self) -> dict[str, dict[str, Any]]:
        """``vendor.json``'s ``files``: name → ``{package, version, path, sha256}``."""
        return dict(json.loads((self.directory / "vendor.json").read_text())["files"])

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """Every name that may be served; anything else is a 404 before the disk is touched."""
        return frozenset(self.own) | frozenset(self.vendored)

    def file(self, name: str) -> StaticFile:
        """The allow-listed file ``name``, loaded on first use.

        Raises:
            NotFoundError: ``name`` is not on the allow-list.
        """
        found = self._files.get(name)
        if found is not None:
            return found
        if name not in self.names:
            raise NotFoundError(f"no {self.what} file named {name[:80]!r}")
        body = (self.directory / name).read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        gzipped = gzip.compress(body, compresslevel=9, mtime=0) if len(body) >= _GZIP_MIN_BYTES else None
        made = self._files[name] = StaticFile(
            name=name, body=body, gzipped=gzipped, content_type=_CONTENT_TYPES[Path(name).suffix],
            etag=f'"{digest[:32]}"', version=digest[:16])
        return made

    def url(self, name: str) -> str:
        """``static/NAME?v=VERSION``, relative to the page: the version changes whenever the bytes do, so the
        answer can be cached for a year."""
        return f"static/{name}?v={self.file(name).version}"


PLAYER = StaticBundle(STATIC_DIR, OWN_FILES, "player")


def vendored() -> dict[str, dict[str, Any]]:
    """``static/vendor.json``'s ``files``: name → ``{package, version, path, sha256}``."""
    return PLAYER.vendored


def static_names() -> frozenset[str]:
    """Every name ``GET /player/static/{name}`` may serve; anything else is a 404 before the disk is touched."""
    return PLAYER.names


def static_file(name: str) -> StaticFile:
    """The allow-listed player file ``name`` (:meth:`StaticBundle.file`)."""
    return PLAYER.file(name)


def static_url(name: str) -> str:
    """``static/NAME?v=VERSION``, relative to ``/player/``."""
    return PLAYER.url(name)
