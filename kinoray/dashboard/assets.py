"""The dashboard's static files: an explicit allow-list (kinoray's own files plus what ``static/vendor.json``
records: uPlot, vendored from npm by ``build.mjs``), each read once and kept in memory with a gzip copy, a strong
ETag and a version for cache busting — the same scheme as the player's (:mod:`kinoray.player.assets`), whose
:class:`~kinoray.player.assets.StaticFile` it shares. The whole set is under 100 KB.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from kinoray.errors import NotFoundError
from kinoray.player.assets import StaticFile

__all__ = ["OWN_FILES", "STATIC_DIR", "static_file", "static_names", "static_url", "vendored"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: kinoray's own files in ``static/`` (written by hand; ``build.mjs`` writes the vendored ones).
OWN_FILES = ("kinoray-dashboard.js", "kinoray-dashboard.css")
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_GZIP_MIN_BYTES = 1024  # below that the gzip header costs more than it saves


@functools.cache
def vendored() -> dict[str, dict[str, Any]]:
    """``static/vendor.json``'s ``files``: name → ``{package, version, path, sha256}``."""
    return dict(json.loads((STATIC_DIR / "vendor.json").read_text())["files"])


@functools.cache
def static_names() -> frozenset[str]:
    """Every name ``GET /dashboard/static/{name}`` may serve; anything else is a 404 before the disk is touched."""
    return frozenset(OWN_FILES) | frozenset(vendored())


@functools.cache
def static_file(name: str) -> StaticFile:
    """The allow-listed file ``name``, loaded on first use.

    Raises:
        NotFoundError: ``name`` is not on the allow-list.
    """
    if name not in static_names():
        raise NotFoundError(f"no dashboard file named {name[:80]!r}")
    body = (STATIC_DIR / name).read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    gzipped = gzip.compress(body, compresslevel=9, mtime=0) if len(body) >= _GZIP_MIN_BYTES else None
    return StaticFile(name=name, body=body, gzipped=gzipped, content_type=_CONTENT_TYPES[Path(name).suffix],
                      etag=f'"{digest[:32]}"', version=digest[:16])


def static_url(name: str) -> str:
    """``static/NAME?v=VERSION``, relative to ``/dashboard/``: the version changes whenever the bytes do, so the
    answer can be cached for a year."""
    return f"static/{name}?v={static_file(name).version}"
