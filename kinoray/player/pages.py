"""The HTML of the embeddable pages: ``/player/{playback_id}`` (the ``<kinoray-player>`` web component on hls.js)
and ``/player/{playback_id}/dash`` (dash.js's stock player on the same asset's MPD).

Pages carry no inline script or style (the Content-Security-Policy allows only the app's own files); every
setting travels as an attribute. Every URL in them is relative, so the pages work behind any host or path
prefix a CDN maps them to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

from kinoray.errors import InvalidParametersError
from kinoray.player.assets import static_url

__all__ = ["CONTENT_SECURITY_POLICY", "PlayerPage", "dash_page", "player_page"]

#: Only the app's own scripts and styles; media and beacons go to the same origin; dash.js and hls.js feed
#: ``blob:`` MediaSource URLs (hls.js runs without its worker). hls.js gives each subtitle track a
#: ``<track src="data:,WEBVTT">``: refused, the track fails to load and Chromium never shows its cues again once
#: captions are turned off and on. Any site may frame the page.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "media-src 'self' blob: data:", "connect-src 'self'", "base-uri 'none'",
    "form-action 'none'", "frame-ancestors *",
])
_PLAYBACK_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_TOKEN_MAX_LENGTH = 8192  # what delivery accepts (kinoray.control.playback.TOKEN_MAX_LENGTH)


@dataclass(frozen=True)
class PlayerPage:
    """What a page is about: a playback id, its signed-playback tokens (``aud`` v, t and s) and start options."""

    playback_id: str
    token: str | None = None
    thumbnail_token: str | None = None
    storyboard_token: str | None = None
    autoplay: bool = False
    muted: bool = False

    def __post_init__(self) -> None:
        if not _PLAYBACK_ID.fullmatch(self.playback_id):
            raise InvalidParametersError("playback_id: must be 1-64 characters of [A-Za-z0-9]")
        for name in ("token", "thumbnail_token", "storyboard_token"):
            value = getattr(self, name)
            if value is not None and (len(value) > _TOKEN_MAX_LENGTH or not _JWT.fullmatch(value)):
                raise InvalidParametersError(f"{name}: not a JWT (three base64url parts, at most "
                                             f"{_TOKEN_MAX_LENGTH} characters)")

    @property
    def has_tokens(self) -> bool:
        """Pages with tokens in them are private: a shared cache must not hand one viewer's token to another."""
        return any((self.token, self.thumbnail_token, self.storyboard_token))


def _attributes(values: dict[str, str | bool | None]) -> str:
    parts = []
    for name, value in values.items():
        if value is True:
            parts.append(name)
        elif isinstance(value, str):
            parts.append(f'{name}="{escape(value, quote=True)}"')
    return " ".join(parts)


def _head(title: str, styles: list[str], scripts: list[str]) -> str:
    links = "".join(f'<link rel="stylesheet" href="{escape(href)}">\n' for href in styles)
    tags = "".join(f'<script src="{escape(src)}" defer></script>\n' for src in scripts)
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="referrer" content="same-origin">\n<title>{escape(title)}</title>\n{links}{tags}</head>\n')


def player_page(page: PlayerPage) -> str:
    """``/player/{playback_id}``: the web component filling the page, focused so keyboard shortcuts work."""
    player = _attributes({
        "playback-id": page.playback_id, "token": page.token, "thumbnail-token": page.thumbnail_token,
        "storyboard-token": page.storyboard_token, "autoplay": page.autoplay, "muted": page.muted,
        "autofocus": True,
    })
    head = _head("kinoray player", [static_url("kinoray-player.css")],
                 [static_url("hls.min.js"), static_url("kinoray-player.js")])
    return (f"{head}<body>\n<kinoray-player {player}></kinoray-player>\n"
            f"<noscript>This video player needs JavaScript.</noscript>\n</body>\n</html>\n")


def dash_page(page: PlayerPage) -> str:
    """``/player/{playback_id}/dash``: dash.js's ``MediaPlayer`` on ``/{playback_id}.mpd`` with the browser's
    own controls (a reference DASH client, not kinoray's player UI)."""
    source = f"../../{page.playback_id}.mpd" + (f"?token={page.token}" if page.token else "")
    video = _attributes({"id": "video", "data-src": source, "controls": True, "playsinline": True,
                         "autoplay": page.autoplay, "muted": page.muted})
    head = _head("kinoray DASH player", [f"../{static_url('kinoray-player.css')}"],
                 [f"../{static_url('dash.all.min.js')}", f"../{static_url('kinoray-dash.js')}"])
    return (f'{head}<body class="kr-dash-page">\n<video {video}></video>\n'
            f'<p id="error" class="kr-dash-error" role="alert" hidden></p>\n</body>\n</html>\n')
