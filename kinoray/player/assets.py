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

__all__ = ["OWN_FILES", "STATIC_DIR", "StaticFile", "static_file", "static_names", "static_url", "vendored"]

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


@functools.cache
def vendored() -> dict[str, dict[str, Any]]:
    """``static/vendor.json``'s ``files``: name → ``{package, version, path, sha256}``."""
    return dict(json.loads((STATIC_DIR / "vendor.json").read_text())["files"])


@functools.cache
def static_names() -> frozenset[str]:
    """Every name ``GET /player/static/{name}`` may serve; anything else is a 404 before the disk is touched."""
    return frozenset(OWN_FILES) | frozenset(vendored())


@functools.cache
def static_file(name: str) -> StaticFile:
    """The allow-listed file ``name``, loaded on first use.

    Raises:
        NotFoundError: ``name`` is not on the allow-list.
    """
    if name not in static_names():
        raise NotFoundError(f"no player file named {name[:80]!r}")
    body = (STATIC_DIR / name).read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    suffix = Path(name).suffix
    gzipped = gzip.compress(body, compresslevel=9, mtime=0) if len(body) >= _GZIP_MIN_BYTES else None
    return StaticFile(name=name, body=body, gzipped=gzipped, content_type=_CONTENT_TYPES[suffix],
                      etag=f'"{digest[:32]}"', version=digest[:16])


def static_url(name: str) -> str:
    """``static/NAME?v=VERSION``, relative to ``/player/``: the version changes whenever the bytes do, so the
    answer can be cached for a year."""
    return f"static/{name}?v={static_file(name).version}"
