"""The web player, HTTP-free: the static files shipped in ``static/`` (kinoray's web component plus hls.js and
dash.js vendored from npm by ``build.mjs``) and the HTML of the embeddable pages.

``kinoray.serve.routes.player`` serves them; nothing here knows about FastAPI.
"""

from kinoray.player.assets import STATIC_DIR, StaticFile, static_file, static_names, static_url, vendored
from kinoray.player.pages import PlayerPage, dash_page, player_page

__all__ = [
    "STATIC_DIR",
    "PlayerPage",
    "StaticFile",
    "dash_page",
    "player_page",
    "static_file",
    "static_names",
    "static_url",
    "vendored",
]
