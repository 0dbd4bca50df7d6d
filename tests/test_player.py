"""The web player and the beacon ingest.

Without a browser (SQLite and PostgreSQL): the vendored hls.js/dash.js are exactly what the lockfile's packages
hold; the static allow-list, its caching and compression; the embeddable pages. (The beacon collector's own
tests are ``tests/test_analytics.py`` and ``tests/test_data_api.py``.)

In a browser (marker ``browser``, SQLite only): Debian's headless Chromium, driven by Playwright, plays a ready
asset through ``/player/{id}`` (hls.js) to 5 s of playhead, switches rendition from the quality menu, shows the
captions menu, the storyboard preview and the keyboard shortcuts, and its beacons (Mux Data's format) reach the collector; a
text track added through the API shows its cues (menu and ``c``, on and off, on screen above the controls);
the DASH page plays through dash.js; a signed id plays with a valid token and shows the typed error with an
expired one. Waits poll ``page.evaluate`` (not ``wait_for_function``, whose string predicates the page's
Content-Security-Policy rightly refuses to ``eval``).
"""

from __future__ import annotations

import base64
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from kinoray.player import STATIC_DIR, static_file, static_names, vendored
from kinoray.player.assets import PLAYER
from kinoray.store.models import Asset, AssetStatus, PlaybackId, PlaybackPolicy, new_id
from tests.browser import BrowserTab
from tests.browser import chromium as launch_chromium
from tests.vendored import assert_vendored_from_the_lock

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The module's one API server, with ``file://`` inputs allowed so a test adds caption files from disk."""
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("player-api-data"),
                       api={"allow_file_inputs": True})
    try:
        yield server
    finally:
        server.close()


# --- vendored players ----------------------------------------------------------------------------------------


def test_vendored_files_are_the_lockfiles_packages() -> None:
    files = assert_vendored_from_the_lock(PLAYER, "player")
    assert {"hls.min.js", "dash.all.min.js"} <= set(files)


def test_vendored_versions_are_the_ones_the_scripts_report() -> None:
    hls = (STATIC_DIR / "hls.min.js").read_text()
    assert f'"{vendored()["hls.min.js"]["version"]}"' in hls
    assert vendored()["dash.all.min.js"]["version"] in (STATIC_DIR / "dash.all.min.js").read_text()


# --- static files and pages ------------------------------------------------------------------------------------


def test_static_files_are_an_allow_list_with_long_caching(api) -> None:
    for name in sorted(static_names()):
        shipped = static_file(name)
        versioned = requests.get(f"{api.edge_url}/player/{shipped_url(name)}", timeout=10)
        assert versioned.status_code == 200, name
        assert versioned.content == shipped.body  # requests undoes the gzip
        assert versioned.headers["Cache-Control"] == IMMUTABLE
        assert versioned.headers["Content-Type"] == shipped.content_type
        assert versioned.headers["X-Content-Type-Options"] == "nosniff"
        assert versioned.headers["Access-Control-Allow-Origin"] == "*"
        plain = requests.get(f"{api.edge_url}/player/static/{name}", timeout=10)
        assert plain.headers["Cache-Control"] == "public, max-age=300"
        again = requests.get(f"{api.edge_url}/player/static/{name}", headers={"If-None-Match": plain.headers["ETag"]},
                             timeout=10)
        assert again.status_code == 304 and not again.content
    hls = requests.get(f"{api.edge_url}/player/static/hls.min.js", headers={"Accept-Encoding": "gzip"}, stream=True,
                       timeout=10)
    assert hls.headers["Content-Encoding"] == "gzip"
    assert int(hls.headers["Content-Length"]) < len(static_file("hls.min.js").body) / 2
    identity = requests.get(f"{api.edge_url}/player/static/hls.min.js", headers={"Accept-Encoding": "identity"},
                            timeout=10)
    assert "Content-Encoding" not in identity.headers and identity.content == static_file("hls.min.js").body
    head = requests.head(f"{api.edge_url}/player/static/kinoray-player.js", timeout=10)
    assert head.status_code == 200 and head.headers["ETag"] == static_file("kinoray-player.js").etag
    for name in ("vendor.json", "__init__.py", "..%2F__init__.py", "%2e%2e", "hls.js", "build.mjs", "vendor.mjs",
                 "package.json", ".gitignore"):
        answer = requests.get(f"{api.edge_url}/player/static/{name}", timeout=10)
        assert answer.status_code == 404, name
        if answer.headers.get("Content-Type", "").startswith("application/json"):
            assert answer.json()["error"]["type"] == "not_found"


def shipped_url(name: str) -> str:
    from kinoray.player import static_url

    return static_url(name)


def test_player_page_passes_tokens_as_attributes(api) -> None:
    playback_id = new_id()
    public = requests.get(f"{api.edge_url}/player/{playback_id}", timeout=10)
    assert public.status_code == 200
    assert public.headers["Content-Type"] == "text/html; charset=utf-8"
    assert public.headers["Cache-Control"] == "public, max-age=300"
    policy = public.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors *" in policy
    assert "media-src 'self' blob: data:" in policy  # hls.js's <track src="data:,WEBVTT"> per subtitle track
    assert f'<kinoray-player playback-id="{playback_id}"' in public.text
    assert "<script>" not in public.text  # no inline script: everything travels as attributes
    for name in ("hls.min.js", "kinoray-player.js", "kinoray-player.css"):
        assert shipped_url(name) in public.text
    token = jwt.encode({"sub": playback_id, "aud": "v"}, "s" * 32, algorithm="HS256")
    signed = requests.get(f"{api.edge_url}/player/{playback_id}",
                          params={"token": token, "thumbnail_token": token, "storyboard_token": token,
                                  "autoplay": "true", "muted": "1"}, timeout=10)
    assert signed.status_code == 200
    assert signed.headers["Cache-Control"] == "private, no-store"
    for attribute in (f'token="{token}"', f'thumbnail-token="{token}"', f'storyboard-token="{token}"',
                      " autoplay", " muted"):
        assert attribute in signed.text
    dash = requests.get(f"{api.edge_url}/player/{playback_id}/dash", params={"token": token}, timeout=10)
    assert dash.status_code == 200
    assert f'data-src="../../{playback_id}.mpd?token={token}"' in dash.text
    assert shipped_url("dash.all.min.js") in dash.text
    assert requests.head(f"{api.edge_url}/player/{playback_id}", timeout=10).status_code == 200


@pytest.mark.parametrize("query", [{"token": '"><script>alert(1)</script>'}, {"thumbnail_token": "a.b"},
                                   {"storyboard_token": "x" * 9000}, {"autoplay": "maybe"}])
def test_player_page_refuses_what_is_not_a_token(api, query: dict[str, str]) -> None:
    answer = requests.get(f"{api.edge_url}/player/{new_id()}", params=query, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_parameters"
    assert "<script>" not in answer.text


@pytest.mark.parametrize("playback_id", ["a" * 65, "abc.def", "ab%2Fcd", "ab_cd"])
def test_player_page_for_a_malformed_id_is_not_found(api, playback_id: str) -> None:
    answer = requests.get(f"{api.edge_url}/player/{playback_id}", timeout=10)
    assert answer.status_code == 404
    if answer.headers.get("Content-Type", "").startswith("application/json"):
        assert answer.json()["error"]["type"] == "not_found"


# --- in Chromium ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ready_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An 8 s 640x360 H.264/AAC clip transcoded in-process to 360p + 240p (2 s segments): its media folder and
    the asset columns the runner would write."""
    from kinoray.media.pipeline import TranscodeOptions, transcode_file
    from kinoray.media.synthetic import generate_clip
    from kinoray.serve.runner import asset_fields

    work = tmp_path_factory.mktemp("player-media")
    source = generate_clip(work / "source.mp4", width=640, height=360, fps=30, seconds=8)
    result = transcode_file(str(source), work / "media",
                            TranscodeOptions(ladder=(360, 240), chunk_seconds=4, segment_seconds=2))
    return work / "media", asset_fields(result)


def publish(server, ready_media: tuple[Path, dict[str, Any]], policy: PlaybackPolicy = PlaybackPolicy.PUBLIC) -> str:
    """A ready asset (a copy of the transcoded media) with one playback id of ``policy``; the playback id."""
    media, fields = ready_media
    asset_id, playback_id = new_id(), new_id()
    shutil.copytree(media, Path(server.settings.storage_url) / "assets" / asset_id / "media")
    with server.platform.db.session() as session:
        session.add(Asset(id=asset_id, status=AssetStatus.READY, storage_prefix=f"assets/{asset_id}",
                          progress_state="completed", progress_fraction=1.0, **fields))
        session.flush()
        session.add(PlaybackId(id=playback_id, asset_id=asset_id, policy=policy))
    return playback_id


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture()
def browser_api(api, api_backend) -> Any:
    if api_backend.kind != "sqlite":
        pytest.skip("browser tests run on one backend (SQLite); the ingest tests above cover both")
    return api


class Tab(BrowserTab):
    """A player page: a timed-out wait also reports the player's state."""

    def state(self) -> str:
        found = self.page.evaluate(PLAYER_STATE) if self.page.query_selector("kinoray-player") else None
        return f"player: {found}; "


PLAYER_STATE = """(() => {
  const p = document.querySelector('kinoray-player');
  return {time: p.video.currentTime, paused: p.video.paused, height: p.video.videoHeight, error: p.error,
          level: p.hls ? p.hls.currentLevel : null, auto: p.hls ? p.hls.autoLevelEnabled : null,
          levels: p.hls ? p.hls.levels.map(l => l.height) : [], muted: p.video.muted, viewId: p.viewId,
          timings: p.timings};
})()"""
P = "document.querySelector('kinoray-player')"


@pytest.fixture()
def tab(chromium) -> Iterator[Tab]:
    opened = Tab(chromium)
    try:
        yield opened
    finally:
        opened.close()


def label(selector: str, text: str) -> str:
    """A page expression: the control's aria-label is ``text`` (labels follow media events, asynchronously)."""
    return f"{P}.shadowRoot.querySelector('{selector}').getAttribute('aria-label') === '{text}'"


def shadow(tab: Tab, selector: str) -> Any:
    return tab.page.locator(f"kinoray-player {selector}")


def events_of(api, view_id: str, wanted: set[str], timeout: float = 10.0) -> tuple[list[dict[str, Any]], Any]:
    """The player's beacons for ``view_id`` as the collector stored them (Mux Data's format, in the Parquet event
    log), once ``wanted`` event names are there: ``(events, view)``, each event with its fields carried forward."""
    from kinoray.analytics.query import Query, Timeframe
    from kinoray.control.analytics import flush_collector
    from kinoray.errors import NotFoundError

    deadline = time.monotonic() + timeout
    while True:
        flush_collector(api.platform)
        now = datetime.now(UTC)
        try:
            view = Query(api.platform.store, Timeframe(now - timedelta(hours=1), now)).view(view_id)
        except NotFoundError:
            view = None
        if view is not None and (wanted <= {event["event"] for event in view.events} or time.monotonic() > deadline):
            return view.events, view
        assert time.monotonic() < deadline, f"no beacons of view {view_id}"
        time.sleep(0.2)


@pytest.mark.browser
def test_hls_plays_switches_rendition_and_reports_beacons(browser_api, ready_media, tab: Tab) -> None:
    api = browser_api
    playback_id = publish(api, ready_media)
    tab.page.goto(f"{api.edge_url}/player/{playback_id}?muted=1")
    tab.wait(f"{P} && {P}.hls && {P}.hls.levels.length === 2", what="hls.js to parse the master playlist")
    assert tab.eval(f"{P}.video.poster").endswith(f"/{playback_id}/thumbnail.jpg")
    assert tab.eval(f"{P}.video.muted") is True
    # keyboard: the page focused the player, so "k" starts playback
    assert tab.eval(f"document.activeElement === {P}")
    tab.page.keyboard.press("k")
    tab.wait(f"{P}.video.currentTime >= 5", timeout=30, what="5 s of playhead")
    assert tab.eval(f"{P}.error") is None
    assert tab.eval(f"{P}.timings.firstframe > 0")

    # quality menu: Auto plus each rung, highest first; choosing the other rung switches the picture
    shadow(tab, ".kr-quality-button").click()
    assert shadow(tab, ".kr-quality-button").get_attribute("aria-expanded") == "true"
    items = shadow(tab, "#kr-quality-menu [role=menuitemradio]")
    labels = items.all_inner_texts()
    assert re.fullmatch(r"Auto( \((360|240)p\))?", labels[0]) and labels[1:] == ["360p", "240p"], labels
    height = tab.eval(f"{P}.video.videoHeight")
    target = 240 if height == 360 else 360
    shadow(tab, f"#kr-quality-menu [role=menuitemradio] >> text='{target}p'").click()
    tab.wait(f"{P}.video.videoHeight === {target} && {P}.hls.levels[{P}.hls.currentLevel].height === {target}",
             what=f"the {target}p rendition on screen")
    assert tab.eval(f"{P}.hls.autoLevelEnabled") is False
    shadow(tab, ".kr-quality-button").click()
    checked = shadow(tab, "#kr-quality-menu [aria-checked=true]").all_inner_texts()
    assert checked == [f"{target}p"]
    tab.page.keyboard.press("Escape")
    assert shadow(tab, "#kr-quality-menu").is_hidden()

    # captions: the asset has no text track, and the menu says so
    shadow(tab, ".kr-captions-button").click()
    assert shadow(tab, "#kr-captions-menu").inner_text() == "No captions available"
    assert shadow(tab, ".kr-captions-button").get_attribute("aria-label") == "Captions (none available)"
    tab.page.keyboard.press("Escape")

    # storyboard preview on seek-bar hover: a tile of storyboard.jpg, positioned by the VTT's #xywh
    bar = shadow(tab, ".kr-seek").bounding_box()
    tab.page.mouse.move(bar["x"] + bar["width"] * 0.75, bar["y"] + bar["height"] / 2)
    tab.wait(f"!{P}.shadowRoot.querySelector('.kr-preview').hidden", what="the preview")
    tab.wait(f"{P}.shadowRoot.querySelector('.kr-preview-image').style.backgroundImage.includes('storyboard.jpg')",
             what="a storyboard tile")
    tile = tab.eval(f"(() => {{ const s = {P}.shadowRoot.querySelector('.kr-preview-image').style; "
                    "return [s.width, s.height, s.backgroundPosition]; })()")
    assert all(value.endswith("px") for value in tile[:2]), tile
    tab.page.mouse.move(5, 5)
    view_id = tab.eval(f"{P}.viewId")
    played_ms = tab.eval(f"Math.round({P}.video.currentTime * 1000)")
    assert tab.page_errors == []
    assert tab.bad_answers == []

    tab.page.goto("about:blank")  # pagehide: the rest goes with sendBeacon, closed by viewend
    wanted = {"playerready", "viewinit", "play", "playing", "renditionchange", "viewend"}
    rows, view = events_of(api, view_id, wanted)
    types = [row["event"] for row in rows]
    assert wanted <= set(types), types
    assert types.index("playerready") < types.index("viewinit") < types.index("play") < types.index("playing")
    assert [row["view_sequence_number"] for row in rows] == sorted(row["view_sequence_number"] for row in rows)
    first = rows[0]
    assert (first["video_id"], first["player_name"], first["player_software"]) == (playback_id, "kinoray-player",
                                                                                   "hls.js")
    assert view.dimensions["playback_id"] == playback_id and view.dimensions["asset_id"]
    assert first["player_software_version"] == vendored()["hls.min.js"]["version"]
    assert view.dimensions["browser"] in ("HeadlessChrome", "Chrome", "Chromium")
    assert view.dimensions["operating_system"] == "Linux"
    assert len({row["session_id"] for row in rows}) == 1
    switches = [row for row in rows if row["event"] == "renditionchange"]
    assert switches[-1]["video_source_height"] == target and switches[-1]["video_source_bitrate"]
    assert "avc1" in (switches[-1].get("video_source_codec") or "")
    assert rows[-1]["event"] == "viewend" and rows[-1]["player_playhead_time"] >= played_ms - 1000
    assert all("player_error_code" not in row for row in rows)
    assert view.video_startup_time is not None and view.watch_time > 0 and not view.playback_failure


@pytest.mark.browser
def test_keyboard_shortcuts_and_labelled_controls(browser_api, ready_media, tab: Tab) -> None:
    api = browser_api
    playback_id = publish(api, ready_media)
    tab.page.goto(f"{api.edge_url}/player/{playback_id}?muted=1&autoplay=1")
    tab.wait(f"{P} && {P}.video.currentTime > 0.5", what="autoplay")
    for selector in (".kr-play", ".kr-mute", ".kr-fullscreen", ".kr-quality-button", ".kr-captions-button",
                     ".kr-seek", ".kr-volume"):
        assert shadow(tab, selector).get_attribute("aria-label"), selector
    tab.wait(label(".kr-play", "Pause"), what="the play button to say Pause")
    tab.page.keyboard.press("Space")
    tab.wait(f"{P}.video.paused && {label('.kr-play', 'Play')}", what="space to pause")
    before = tab.eval(f"{P}.video.currentTime")
    tab.page.keyboard.press("ArrowRight")
    tab.wait(f"{P}.video.currentTime >= {before} + 4.9", what="ArrowRight to seek 5 s")
    tab.page.keyboard.press("ArrowLeft")
    tab.wait(f"Math.abs({P}.video.currentTime - {before}) < 0.1", what="ArrowLeft to seek back")
    tab.page.keyboard.press("m")
    tab.wait(f"!{P}.video.muted && {label('.kr-mute', 'Mute')}", what="m to unmute")
    tab.page.keyboard.press("m")
    tab.wait(f"{P}.video.muted && {label('.kr-mute', 'Unmute')}", what="m to mute")
    tab.page.keyboard.press("f")
    tab.wait(f"document.fullscreenElement === {P} && {label('.kr-fullscreen', 'Exit fullscreen')}",
             what="f for fullscreen")
    tab.page.keyboard.press("f")
    tab.wait(f"document.fullscreenElement === null && {label('.kr-fullscreen', 'Fullscreen')}",
             what="f to leave fullscreen")
    tab.page.keyboard.press("c")  # no captions: nothing to toggle, nothing breaks
    # the quality menu is reachable and operable from the keyboard alone
    shadow(tab, ".kr-quality-button").focus()
    tab.page.keyboard.press("Enter")
    tab.wait(f"{P}.shadowRoot.activeElement && {P}.shadowRoot.activeElement.getAttribute('role') === 'menuitemradio'",
             what="focus in the quality menu")
    tab.page.keyboard.press("End")
    tab.page.keyboard.press("Enter")
    tab.wait(f"{P}.hls.currentLevel === {P}.hls.levels.findIndex(l => l.height === 240)", what="240p by keyboard")
    assert tab.eval(f"{P}.shadowRoot.activeElement.className") == "kr-quality-button"
    tab.page.keyboard.press("k")
    tab.wait(f"!{P}.video.paused", what="k to play")
    assert tab.page_errors == []


CAPTIONS_SRT = """1
00:00:00,500 --> 00:00:03,500
kinoray caption one

2
00:00:03,500 --> 00:00:07,000
kinoray caption two
"""
TEXT_TRACKS = (f"Array.from({P}.video.textTracks).filter(t => t.kind === 'subtitles' || t.kind === 'captions')"
               ".map(t => ({label: t.label, language: t.language, kind: t.kind, mode: t.mode, "
               "cues: t.activeCues ? Array.from(t.activeCues, c => [c.text, c.startTime, c.endTime]) : null}))")
# Where two same-size PNG screenshots differ, decoded by the browser (in a blank page: no CSP to refuse data:).
PIXEL_DIFF = """async ([a, b]) => {
  const load = async (data) => {
    const image = new Image();
    image.src = 'data:image/png;base64,' + data;
    await image.decode();
    const canvas = document.createElement('canvas');
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    return context.getImageData(0, 0, canvas.width, canvas.height);
  };
  const [x, y] = await Promise.all([load(a), load(b)]);
  let count = 0, left = x.width, top = x.height, right = -1, bottom = -1;
  for (let i = 0; i < x.data.length; i += 4) {
    const d = Math.abs(x.data[i] - y.data[i]) + Math.abs(x.data[i + 1] - y.data[i + 1]) +
              Math.abs(x.data[i + 2] - y.data[i + 2]);
    if (d <= 96) continue;
    const p = i / 4, px = p % x.width, py = Math.floor(p / x.width);
    count++;
    left = Math.min(left, px); right = Math.max(right, px); top = Math.min(top, py); bottom = Math.max(bottom, py);
  }
  return {count, left, top, right, bottom, width: x.width, height: x.height, same: x.width === y.width && x.height === y.height};
}"""


def pixel_diff(tab: Tab, before: bytes, after: bytes) -> dict[str, Any]:
    """``{count, left, top, right, bottom}``: the pixels (and their bounding box) where two screenshots differ."""
    scratch = tab.context.new_page()
    try:
        diff = scratch.evaluate(PIXEL_DIFF, [base64.b64encode(before).decode(), base64.b64encode(after).decode()])
    finally:
        scratch.close()
    assert diff["same"], diff
    return diff


def picture(tab: Tab) -> bytes:
    """The player as a viewer sees it, once the page has painted twice more (cue rendering follows the clock)."""
    tab.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return tab.page.locator("kinoray-player").screenshot(animations="disabled")


def shown_cues(tab: Tab) -> list[str]:
    return [cue[0] for track in tab.eval(TEXT_TRACKS) if track["mode"] == "showing" for cue in track["cues"] or []]


def _with_captions(api: Any, ready_media: tuple[Path, dict[str, Any]], tmp_path: Path) -> str:
    """A ready asset with :data:`CAPTIONS_SRT` added as English subtitles (named "English" by kinoray): its
    public playback id."""
    playback_id = publish(api, ready_media)
    with api.platform.db.session() as session:
        asset_id = session.get(PlaybackId, playback_id).asset_id
    srt = tmp_path / "captions.srt"
    srt.write_text(CAPTIONS_SRT)
    added = api.client.post(f"{api.edge_url}/video/v1/assets/{asset_id}/tracks", timeout=30, json={
        "url": srt.as_uri(), "type": "text", "text_type": "subtitles", "language_code": "en",
        "closed_captions": False})
    assert added.status_code == 201, added.text
    assert added.json()["data"]["name"] == "English"
    return playback_id


@pytest.mark.browser
def test_captions_show_from_the_menu_and_the_c_key(browser_api, ready_media, tab: Tab,
                                                   tmp_path: Path) -> None:
    api = browser_api
    playback_id = _with_captions(api, ready_media, tmp_path)

    tab.page.goto(f"{api.edge_url}/player/{playback_id}?muted=1")
    tab.wait(f"{P} && {P}.hls && {P}.hls.subtitleTracks.length === 1", what="hls.js to list the subtitle track")
    tab.wait(label(".kr-captions-button", "Captions: Off"), what="the captions button to offer the track")
    assert tab.eval(f"{P}.hls.subtitleTrack") == -1  # not DEFAULT in the manifest: off until the viewer asks
    # the menu lists the track by its name; choosing it makes hls.js load it and the browser show it
    shadow(tab, ".kr-captions-button").click()
    assert shadow(tab, "#kr-captions-menu [role=menuitemradio]").all_inner_texts() == ["Off", "English"]
    assert shadow(tab, "#kr-captions-menu [aria-checked=true]").all_inner_texts() == ["Off"]
    shadow(tab, "#kr-captions-menu [role=menuitemradio] >> text='English'").click()
    assert shadow(tab, "#kr-captions-menu").is_hidden()
    tab.wait(f"{P}.hls.subtitleTrack === 0 && {P}.hls.subtitleDisplay", what="hls.js to select the track")
    tab.wait(label(".kr-captions-button", "Captions: English"), what="the button to name the track")
    assert shadow(tab, ".kr-captions-button").get_attribute("aria-pressed") == "true"
    tab.page.keyboard.press("k")
    tab.wait(f"{P}.video.currentTime >= 1", what="1 s of playhead")
    tab.page.keyboard.press("k")
    tab.wait(f"{P}.video.paused", what="k to pause")
    # where the pause lands depends on the machine's load: put the playhead at 1.5 s, inside the first cue, so
    # the 5 s step below lands at 6.5 s, inside the second (3.5–7 s)
    tab.eval(f"{P}.video.currentTime = 1.5")
    tab.wait(f"Math.abs({P}.video.currentTime - 1.5) < 0.01 && !{P}.video.seeking", what="the playhead at 1.5 s")
    tab.wait(f"{TEXT_TRACKS}.some(t => t.mode === 'showing' && t.cues && t.cues.length)", what="an active cue")
    (track,) = tab.eval(TEXT_TRACKS)
    assert (track["label"], track["language"], track["kind"], track["mode"]) == ("English", "en", "subtitles",
                                                                                "showing")
    (cue,) = track["cues"]  # on the video's timeline: hls.js mapped X-TIMESTAMP-MAP onto the fMP4 stream
    assert cue[0] == "kinoray caption one" and abs(cue[1] - 0.5) < 0.05 and abs(cue[2] - 3.5) < 0.05, cue
    with_cue = picture(tab)

    # c turns them off: the cue disappears from the picture, and only it
    tab.page.keyboard.press("c")
    tab.wait(f"{P}.hls.subtitleTrack === -1 && {label('.kr-captions-button', 'Captions: Off')}",
             what="c to turn captions off")
    tab.wait(f"{TEXT_TRACKS}.every(t => t.mode !== 'showing')", what="the text track to stop showing")
    assert shown_cues(tab) == []
    without = picture(tab)
    diff = pixel_diff(tab, with_cue, without)
    player = tab.page.locator("kinoray-player").bounding_box()
    controls = shadow(tab, ".kr-seek").bounding_box()  # the controls' row (they show while paused)
    assert diff["count"] > 300, diff  # the cue's text and its backdrop
    assert player["height"] / 2 < diff["top"] and diff["bottom"] < controls["y"] - player["y"], (diff, controls)
    assert player["width"] * 0.2 < diff["left"] < diff["right"] < player["width"] * 0.8, diff  # centred
    # c again: the same track back, the same picture
    tab.page.keyboard.press("c")
    tab.wait(f"{P}.hls.subtitleTrack === 0 && {label('.kr-captions-button', 'Captions: English')}",
             what="c to turn captions back on")
    tab.wait(f"{TEXT_TRACKS}.some(t => t.mode === 'showing' && t.cues && t.cues.length)", what="the cue again")
    assert shown_cues(tab) == ["kinoray caption one"]
    assert pixel_diff(tab, with_cue, picture(tab))["count"] < 30
    # the second cue takes over at 3.5 s
    tab.page.keyboard.press("ArrowRight")
    tab.wait(f"Math.abs({P}.video.currentTime - 6.5) < 0.01 && !{P}.video.seeking",
             what="a seek into the second cue")
    tab.wait(f"{TEXT_TRACKS}.some(t => t.cues && t.cues.some(c => c[0] === 'kinoray caption two'))",
             what="the second cue")
    assert shown_cues(tab) == ["kinoray caption two"]
    # Off in the menu hides it again
    shadow(tab, ".kr-captions-button").click()
    assert shadow(tab, "#kr-captions-menu [aria-checked=true]").all_inner_texts() == ["English"]
    shadow(tab, "#kr-captions-menu [role=menuitemradio] >> text='Off'").click()
    tab.wait(f"{P}.hls.subtitleTrack === -1 && {TEXT_TRACKS}.every(t => t.mode !== 'showing')",
             what="Off to turn captions off")
    assert shown_cues(tab) == []
    assert tab.page_errors == [] and tab.bad_answers == []


CLIPPED_PAGE = """<!doctype html><html><body><video id="v" muted></video><script src="/hls.js"></script><script>
  const video = document.getElementById('v'), hls = new Hls();
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play());
  hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, () => { hls.subtitleTrack = 0; hls.subtitleDisplay = true; });
  hls.loadSource('SOURCE'); hls.attachMedia(video);
</script></body></html>"""


@pytest.mark.browser
def test_captions_follow_an_instant_clip(browser_api, ready_media, tab: Tab, tmp_path: Path) -> None:
    """Instant clipping (``asset_start_time=4&asset_end_time=8``, on the 2 s segment grid) starts hls.js's
    timeline at the first kept segment, and the text track follows: the subtitle playlist is cut to the same
    window and the cue from 3.5–7 s of the asset shows from 0 to 3 s of the clip (hls.js maps the WebVTT's
    X-TIMESTAMP-MAP onto the clipped fMP4 stream); the cue that ends before the clip is not shown."""
    from tests.js_clients import PageServer

    api = browser_api
    playback_id = _with_captions(api, ready_media, tmp_path)
    source = f"{api.edge_url}/{playback_id}.m3u8?asset_start_time=4&asset_end_time=8"
    pages = PageServer({"/hls.js": STATIC_DIR / "hls.min.js"})
    try:
        tab.page.goto(pages.put(CLIPPED_PAGE.replace("SOURCE", source)))
        cues = ("[...document.getElementById('v').textTracks].flatMap(t => { t.mode = 'showing';"
                " return t.cues ? [...t.cues].map(c => [c.text, c.startTime, c.endTime]) : []; })")
        tab.wait(f"document.getElementById('v').currentTime > 1 && {cues}.length > 0", timeout=30,
                 what="the clip to play with its cues loaded")
        assert tab.eval("document.getElementById('v').duration") == pytest.approx(4, abs=0.05)
        (cue,) = [c for c in tab.eval(cues) if c[2] > 0]
        assert cue[0] == "kinoray caption two" and cue[1] == pytest.approx(0, abs=0.05) and cue[2] == pytest.approx(
            3, abs=0.05), cue
    finally:
        pages.shutdown()
        pages.server_close()
    # the subtitle playlist is cut like the media playlists: one cue file, listed for the clip's 4 s
    master = requests.get(source, timeout=10).text
    subtitles = re.search(r'TYPE=SUBTITLES.*URI="([^"]+)"', master)[1]
    playlist = requests.get(f"{api.edge_url}/{subtitles}", timeout=10).text
    assert [float(line[8:].split(",")[0]) for line in playlist.splitlines() if line.startswith("#EXTINF:")] == [4.0]
    assert tab.page_errors == [] and tab.bad_answers == []


@pytest.mark.browser
def test_dash_plays_through_dash_js(browser_api, ready_media, tab: Tab) -> None:
    api = browser_api
    playback_id = publish(api, ready_media)
    tab.page.goto(f"{api.edge_url}/player/{playback_id}/dash?muted=1&autoplay=1")
    tab.wait("window.kinorayDash && window.kinorayDash.player && document.getElementById('video').currentTime >= 3",
             timeout=30, what="3 s of DASH playhead")
    assert tab.eval("window.kinorayDash.errors") == []
    assert tab.eval("document.getElementById('video').videoHeight") in (240, 360)
    assert tab.eval("window.kinorayDash.player.getVersion()") == vendored()["dash.all.min.js"]["version"]
    assert tab.page_errors == [] and tab.bad_answers == []


def mint(key_id: str, private_pem: bytes, playback_id: str, audience: str, expires_in: int) -> str:
    return jwt.encode({"sub": playback_id, "aud": audience, "exp": int(time.time()) + expires_in}, private_pem,
                      algorithm="RS256", headers={"kid": key_id})


@pytest.fixture()
def signed(browser_api, ready_media) -> tuple[Any, str, str, bytes]:
    from kinoray.control.signing import create_signing_key

    playback_id = publish(browser_api, ready_media, PlaybackPolicy.SIGNED)
    with browser_api.platform.db.session() as session:
        key, private_key = create_signing_key(session)
        key_id = key.id
    return browser_api, playback_id, key_id, base64.b64decode(private_key)


@pytest.mark.browser
def test_signed_playback_plays_with_valid_tokens(signed, tab: Tab) -> None:
    api, playback_id, key_id, private_pem = signed
    tokens = {name: mint(key_id, private_pem, playback_id, audience, 600)
              for name, audience in (("token", "v"), ("thumbnail_token", "t"), ("storyboard_token", "s"))}
    tab.page.goto(f"{api.edge_url}/player/{playback_id}?muted=1&autoplay=1&" +
                  "&".join(f"{name}={value}" for name, value in tokens.items()))
    tab.wait(f"{P} && {P}.video.currentTime >= 2", timeout=30, what="2 s of signed playback")
    assert tab.eval(f"{P}.error") is None
    assert tab.eval(f"{P}.video.poster").endswith(f"thumbnail.jpg?token={tokens['thumbnail_token']}")
    poster = requests.get(tab.eval(f"{P}.video.poster"), timeout=30)
    assert poster.status_code == 200 and poster.headers["Content-Type"] == "image/jpeg"
    assert tab.page_errors == [] and tab.bad_answers == []


@pytest.mark.browser
def test_signed_playback_with_an_expired_token_shows_the_typed_error(signed, tab: Tab) -> None:
    api, playback_id, key_id, private_pem = signed
    expired = mint(key_id, private_pem, playback_id, "v", -60)
    tab.page.goto(f"{api.edge_url}/player/{playback_id}?muted=1&autoplay=1&token={expired}")
    error = tab.wait(f"{P} && {P}.error", what="the player's error")
    assert (error["type"], error["status"]) == ("playback_forbidden", 403)
    assert "token expired" in error["message"]
    overlay = shadow(tab, ".kr-error")
    assert overlay.is_visible() and overlay.get_attribute("role") == "alert"
    assert "token expired" in overlay.inner_text() and "playback_forbidden" in overlay.inner_text()
    assert tab.eval(f"{P}.getAttribute('error-type')") == "playback_forbidden"
    assert tab.eval(f"{P}.video.poster") == ""  # a signed id without a thumbnail token gets no poster
    assert tab.eval(f"{P}.video.currentTime") == 0
    view_id = tab.eval(f"{P}.viewId")
    rows, view = events_of(api, view_id, {"error"})
    errors = [row for row in rows if row["event"] == "error"]
    assert errors and (errors[0]["player_error_code"], errors[0]["player_error_type"]) == (403, "playback_forbidden")
    assert view.playback_failure and view.video_startup_failure
    assert tab.page_errors == []
