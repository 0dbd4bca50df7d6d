"""The dashboard's static files: an explicit allow-list (kinoray's own files plus what ``static/vendor.json``
records: uPlot, vendored from npm by ``build.mjs``), each read once and kept in memory with a gzip copy, a strong
ETag and a version for cache busting — the same scheme as the player's (:mod:`kinoray.player.assets`), whose
:class:`~kinoray.player.assets.StaticBundle` serves both. The whole set is under 100 KB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kinoray.player.assets import StaticBundle, StaticFile

__all__ = ["DASHBOARD", "OWN_FILES", "STATIC_DIR", "static_file", "static_names", "static_url", "vendored"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: kinoray's own files in ``static/`` (written by hand; ``build.mjs`` writes the vendored ones).
OWN_FILES = ("kinoray-dashboard.js", "kinoray-dashboard.css")
DASHBOARD = StaticBundle(STATIC_DIR, OWN_FILES, "dashboard")


def vendored() -> dict[str, dict[str, Any]]:
    """``static/vendor.json``'s ``files``: name → ``{package, version, path, sha256}``."""
    return DASHBOARD.vendored


def static_names() -> frozenset[str]:
    """Every name ``GET /dashboard/static/{name}`` may serve; anything else is a 404 before the disk is touched."""
    return DASHBOARD.names


def static_file(name: str) -> StaticFile:
    """The allow-listed dashboard file ``name`` (:meth:`~kinoray.player.assets.StaticBundle.file`)."""
    return DASHBOARD.file(name)


def static_url(name: str) -> str:
    """``static/NAME?v=VERSION``, relative to ``/dashboard/``."""
    return DASHBOARD.url(name)
