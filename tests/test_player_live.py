"""kinoray's web player on a live playback id, in Chromium: Debian's ffmpeg publishes over RTMP to the ingest,
the live ladder runs on a local Ray, and ``<kinoray-player>`` plays the stream from the edge.

Checked from outside the player: the player calls itself live and at the live edge; the latency it shows is
the glass-to-glass delay read independently from the playlist the edge serves (``now`` minus the newest
segment's ``EXT-X-PROGRAM-DATE-TIME``, within a few segments); seeking back 10 s (``j``) puts it about 10 s
behind the edge inside the DVR window, the time shows it, and the LIVE button brings it back to the edge; the
frames keep coming (``currentTime`` advances) through all of it, and no request fails.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import m3u8
import pytest
import requests

from tests.browser import chromium
from tests.live_runtime import LIVE_SETTINGS, live_api, live_ingest
from tests.test_live_rtmp import publisher_command

pytestmark = pytest.mark.slow

SEGMENT = LIVE_SETTINGS["segment_seconds"]["reduced"]
SECONDS = 90  # the publisher's length: the test ends it sooner


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with live_api(api_backend, tmp_path_factory.mktemp("player-live")) as server:
        yield server


@pytest.fixture(scope="module")
def broadcast(api) -> Iterator[tuple[str, str]]:
    """``(playback id, media playlist URL)`` of a reduced-latency live stream being published."""
    with live_ingest(api) as ingest:
        yield from _broadcast(api, ingest.port)


def _broadcast(api: Any, port: int) -> Iterator[tuple[str, str]]:
    publisher = None
    try:
        created = api.client.post(f"{api.url}/video/v1/live-streams", json={
            "playback_policies": ["public"], "latency_mode": "reduced",
            "new_asset_settings": {"playback_policies": ["public"]}}, timeout=10)
        assert created.status_code == 201, created.text
        stream = created.json()["data"]
        playback_id = stream["playback_ids"][0]["id"]
        publisher = subprocess.Popen(publisher_command(port, stream["stream_key"], seconds=SECONDS, app="app",
                                                       size="426x240"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        master_url = f"{api.edge_url}/{playback_id}.m3u8"
        deadline = time.monotonic() + 120
        while True:  # the ladder's first segments are up: the edge answers the master and a media playlist
            answer = requests.get(master_url, timeout=10)
            if answer.status_code == 200:
                master = m3u8.loads(answer.text, uri=master_url)
                media_url = master.playlists[0].absolute_uri
                media = m3u8.loads(requests.get(media_url, timeout=10).text)
                if len(media.segments) >= 4:
                    break
            assert publisher.poll() is None, publisher.stderr.read() if publisher.stderr else ""
            assert time.monotonic() < deadline, (answer.status_code, answer.text[:200])
            time.sleep(0.5)
        yield playback_id, media_url
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.terminate()
            publisher.wait(timeout=30)


def _edge_latency(media_url: str) -> float:
    """Seconds from the end of the newest segment's capture (its PROGRAM-DATE-TIME + duration) to now."""
    media = m3u8.loads(requests.get(media_url, timeout=10).text)
    newest = media.segments[-1]
    assert isinstance(newest.current_program_date_time, datetime), "no EXT-X-PROGRAM-DATE-TIME"
    return time.time() - newest.current_program_date_time.timestamp() - newest.duration


PLAYER = "document.querySelector('kinoray-player')"


def test_the_player_plays_live_shows_latency_and_seeks_in_the_dvr_window(api, broadcast) -> None:
    playback_id, media_url = broadcast
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 960, "height": 540})
        page = context.new_page()
        failed: list[str] = []
        errors: list[str] = []
        page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
        page.on("pageerror", lambda error: errors.append(str(error)))

        def wait(expression: str, timeout: float = 60, what: str = "") -> Any:
            deadline = time.monotonic() + timeout
            while not (value := page.evaluate(expression)):
                assert time.monotonic() < deadline, (what, page.evaluate(f"{PLAYER}.live"), failed, errors)
                time.sleep(0.2)
            return value

        try:
            page.goto(f"{api.edge_url}/player/{playback_id}?muted=1&autoplay=1")
            wait(f"{PLAYER}.live.live && {PLAYER}.live.latency !== null && !{PLAYER}.video.paused",
                 what="the player to play live")
            wait(f"{PLAYER}.live.atEdge", what="playback at the live edge")
            live, shown = page.evaluate(f"[{PLAYER}.live, "
                                        f"{PLAYER}.shadowRoot.querySelector('.kr-latency').textContent]")
            # the latency shown is the glass-to-glass delay the playlist tells anyone: the player is a few
            # segments (hls.js's live sync distance) behind the newest segment's capture, not more
            edge = _edge_latency(media_url)
            # the label is redrawn on the video's timeupdate (~4 per second; later on a busy machine) while the
            # latency grows with the clock between frames: the label is at most that far behind
            assert re.fullmatch(r"\d+\.\d s", shown), shown
            assert abs(float(shown.removesuffix(" s")) - live["latency"]) <= 0.6, (shown, live)
            assert edge - 1 <= live["latency"] <= edge + 6 * SEGMENT + 3, (live, edge)
            button = page.evaluate(f"(() => {{ const b = {PLAYER}.shadowRoot.querySelector('.kr-live');"
                                   " return {hidden: b.hidden, pressed: b.getAttribute('aria-pressed'),"
                                   " lit: b.classList.contains('kr-at-edge')}; })()")
            assert button == {"hidden": False, "pressed": "true", "lit": True}
            # a DVR window to seek in: the sliding playlist's segments
            wait(f"{PLAYER}.live.window && {PLAYER}.live.window[1] - {PLAYER}.live.window[0] >= 12",
                 timeout=60, what="12 s of DVR window")
            page.focus("kinoray-player")
            page.keyboard.press("j")  # back 10 s
            wait(f"{PLAYER}.live.behind >= 7 && !{PLAYER}.live.atEdge", timeout=20, what="10 s behind live")
            behind = page.evaluate(f"{PLAYER}.live")
            assert 7 <= behind["behind"] <= 14 and behind["window"][0] <= page.evaluate(
                f"{PLAYER}.video.currentTime"), behind
            # the time label is redrawn on the next timeupdate after the seek (late on a busy machine): wait for it
            label = wait(f"(t => /^-0:\\d\\d$/.test(t) && Number(t.slice(3)) >= 6 && t)"
                         f"({PLAYER}.shadowRoot.querySelector('.kr-time').textContent)", timeout=10,
                         what="the time to show how far behind live")
            assert label.startswith("-0:") and int(label[3:]) >= 6, label
            before = page.evaluate(f"{PLAYER}.video.currentTime")
            wait(f"{PLAYER}.video.currentTime > {before + 1}", timeout=20, what="playback going on behind live")
            page.evaluate(f"{PLAYER}.shadowRoot.querySelector('.kr-live').click()")
            wait(f"{PLAYER}.live.atEdge", timeout=20, what="the LIVE button to return to the edge")
            assert page.evaluate(f"{PLAYER}.shadowRoot.querySelector('.kr-time').hidden")
            assert failed == [] and errors == []
        finally:
            context.close()
