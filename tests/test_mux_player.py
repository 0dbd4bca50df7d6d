"""Mux's own web player (npm ``@mux/mux-player``, unmodified) in Chromium against kinoray as its custom domain.

``<mux-player playback-id=… custom-domain=…>`` builds Mux's URLs on the domain it is given:
``https://stream.<domain>/<id>.m3u8`` for the stream, ``https://image.<domain>/<id>/thumbnail.webp`` for the
poster, ``https://image.<domain>/<id>/storyboard.vtt?format=webp`` for the timeline previews. Here the domain
is ``kinoray.test:<port>``: Chromium resolves every ``*.kinoray.test`` to this machine and trusts only the
edge's own test certificate (by its public key), and the edge (Granian, HTTPS, ``--domain kinoray.test``) routes
``stream.``/``image.`` hosts. The page itself comes from a plain local server (a page from a public origin may
not reach this machine's addresses: Chromium's local network access rules). The browser is the independent client: the video decodes and plays, the poster
and storyboard load, captions show; signed playback uses tokens minted by ``@mux/mux-node``'s ``mux.jwt``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kinoray.media.synthetic import generate_clip
from tests.api_server import self_signed
from tests.browser import chromium as launch_chromium
from tests.browser import require_chromium
from tests.js_clients import PageServer, js_clients, run_node

pytestmark = pytest.mark.slow

DOMAIN = "kinoray.test"
SECONDS = 6
CAPTIONS = """WEBVTT

00:00:00.000 --> 00:00:03.000
first caption

00:00:03.000 --> 00:00:06.000
second caption
"""


class Site:
    """The API with its runner, one ready asset (public and signed playback ids, an English text track), and
    the production edge on HTTPS for ``kinoray.test``."""

    def __init__(self, api: Any, directory: Path) -> None:
        self.api = api
        clip = generate_clip(directory / "clip.mp4", width=640, height=360, fps=24, seconds=SECONDS)
        created = api.client.post(f"{api.url}/video/v1/assets", json={
            "inputs": [{"url": clip.as_uri()}], "playback_policies": ["public", "signed"]}, timeout=30)
        assert created.status_code == 201, created.text
        asset = api.wait_asset(created.json()["data"]["id"], timeout=300)
        assert asset["status"] == "ready", asset
        self.public = next(item["id"] for item in asset["playback_ids"] if item["policy"] == "public")
        self.signed = next(item["id"] for item in asset["playback_ids"] if item["policy"] == "signed")
        captions = directory / "captions.vtt"
        captions.write_text(CAPTIONS)
        track = api.client.post(f"{api.url}/video/v1/assets/{asset['id']}/tracks", json={
            "url": captions.as_uri(), "type": "text", "text_type": "subtitles", "language_code": "en",
            "name": "English"}, timeout=60)
        assert track.status_code == 201, track.text
        key = api.client.post(f"{api.url}/system/v1/signing-keys", timeout=30).json()["data"]
        self.tokens: dict[str, str] = run_node("sign_tokens.mjs", {
            "playbackId": self.signed, "keyId": key["id"], "keySecret": key["private_key"]}, timeout=60)
        certificate = self_signed(directory, dns_names=(f"*.{DOMAIN}", DOMAIN))
        self.cert, self.spki = certificate.cert, certificate.spki_sha256
        self.edge, url = api.start_granian_edge(workers=1, tls_cert=certificate.cert, tls_key=certificate.key,
                                                domain=DOMAIN)
        self.domain = f"{DOMAIN}:{url.rsplit(':', 1)[1]}"
        self.pages = PageServer({"/player.js": js_clients() / "@mux" / "mux-player" / "dist" / "mux-player.js"})

    def close(self) -> None:
        self.pages.shutdown()
        self.pages.server_close()
        self.edge.stop()


@pytest.fixture(scope="module")
def site(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if api_backend.kind != "sqlite":
        pytest.skip("browser tests run on one backend (SQLite); the SDK tests cover both")
    require_chromium()
    from tests.api_server import api_with_runner

    with api_with_runner(api_backend.new_url(), tmp_path_factory.mktemp("mux-player")) as api:
        made = Site(api, tmp_path_factory.mktemp("mux-player-site"))
        try:
            yield made
        finally:
            made.close()


@pytest.fixture(scope="module")
def chromium(site: Site) -> Iterator[Any]:
    with launch_chromium(f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1",
                         f"--ignore-certificate-errors-spki-list={site.spki}") as browser:
        yield browser


class Page:
    """A page holding one ``<mux-player>``; every answer and failed request is recorded (but for Chromecast's
    script, which the player asks Google for and this machine cannot reach, and requests the page cancelled;
    every answer the edge gave is still checked for errors)."""

    def __init__(self, browser: Any, site: Site, attributes: dict[str, str]) -> None:
        self.context = browser.new_context(viewport={"width": 960, "height": 540})
        self.page = self.context.new_page()
        self.answers: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self.page.on("response", lambda answer: self.answers.append((answer.status, answer.url)))
        # a request the page itself cancelled (the player replacing a track or a preview) is not a failure
        self.page.on("requestfailed", lambda request: "gstatic.com/cv/" in request.url
                     or request.failure == "net::ERR_ABORTED"
                     or self.errors.append(f"{request.url}: {request.failure}"))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        markup = " ".join(f'{name}="{value}"' for name, value in attributes.items())
        self.page.goto(site.pages.put(
            f"<!doctype html><html><body><script src='/player.js'></script>"
            f"<mux-player custom-domain='{site.domain}' disable-tracking muted autoplay {markup}"
            f" style='width:960px;height:540px'></mux-player></body></html>"))

    def wait(self, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}; errors: {self.errors}; "
                                     f"answers: {self.answers[-20:]}")
            time.sleep(0.1)

    def fetched(self, host: str, path_part: str) -> list[int]:
        return [status for status, url in self.answers if f"//{host}." in url and path_part in url]

    def close(self) -> None:
        self.context.close()


VIDEO = "document.querySelector('mux-player').media.nativeEl"


def _plays(page: Page) -> None:
    page.wait(f"{VIDEO}.currentTime > 1.5 && !{VIDEO}.paused")
    width, height = page.page.evaluate(f"[{VIDEO}.videoWidth, {VIDEO}.videoHeight]")
    assert height in (240, 360) and abs(width / height - 16 / 9) < 0.02  # a rung of the 640x360 source's ladder
    assert set(page.fetched("stream", ".m3u8")) == {200} and page.fetched("stream", ".m4s")


def _poster_and_storyboard(page: Page, *, signed: bool) -> None:
    deadline = time.monotonic() + 30
    while not (page.fetched("image", "thumbnail.webp") and page.fetched("image", "storyboard.vtt")):
        assert time.monotonic() < deadline, f"poster/storyboard not fetched: {page.answers}"
        time.sleep(0.1)
    assert set(page.fetched("image", "thumbnail.webp")) == {200}
    assert set(page.fetched("image", "storyboard.vtt")) == {200}
    # the storyboard's sprite, named by the VTT, is what the timeline preview shows on hover
    # For a public id the player's ?format=webp picks a WebP sprite; a signed id's image options come from its
    # token's claims only (as Mux), so there the sprite stays the default JPEG.
    sprite = "storyboard.jpg" if signed else "storyboard.webp"
    timeline = page.page.locator("media-time-range").first  # Playwright's CSS pierces the open shadow roots
    deadline = time.monotonic() + 30
    while not page.fetched("image", sprite):
        assert time.monotonic() < deadline, f"storyboard sprite not fetched on hover: {page.answers}"
        box = timeline.bounding_box()
        if box:
            page.page.mouse.move(box["x"] + box["width"] * (0.2 + (time.monotonic() % 1) * 0.6),
                                 box["y"] + box["height"] / 2)
        time.sleep(0.2)
    assert set(page.fetched("image", sprite)) == {200}


def test_public_playback_poster_storyboard_and_captions(site: Site, chromium: Any) -> None:
    page = Page(chromium, site, {"playback-id": site.public})
    try:
        _plays(page)
        _poster_and_storyboard(page, signed=False)
        # captions: the asset's English subtitles appear as a track; shown, the cue at the playhead is ours
        track = ("[...document.querySelector('mux-player').media.nativeEl.textTracks]"
                 ".find(t => t.kind === 'subtitles' && t.language === 'en')")
        page.wait(f"!!{track}")
        page.page.evaluate(f"{track}.mode = 'showing'")
        cue = page.wait(f"{track}.activeCues && {track}.activeCues.length && {track}.activeCues[0].text")
        assert cue in ("first caption", "second caption")
        bad = [(status, url) for status, url in page.answers if status >= 400]
        assert bad == [] and page.errors == []
    finally:
        page.close()


def test_signed_playback_with_mux_node_tokens(site: Site, chromium: Any) -> None:
    page = Page(chromium, site, {"playback-id": site.signed, "playback-token": site.tokens["video"],
                                 "thumbnail-token": site.tokens["thumbnail"],
                                 "storyboard-token": site.tokens["storyboard"]})
    try:
        _plays(page)
        _poster_and_storyboard(page, signed=True)
        bad = [(status, url) for status, url in page.answers if status >= 400]
        assert bad == [] and page.errors == []
    finally:
        page.close()
    # the same URLs without the tokens are refused: the player played because of them
    stream = f"https://stream.{site.domain}/{site.signed}.m3u8"
    assert requests.get(stream.replace(f"stream.{DOMAIN}", "127.0.0.1"), headers={"Host": f"stream.{site.domain}"},
                        verify=site.cert, timeout=30).status_code == 403


def test_viewer_data_goes_to_kinoray_through_beacon_collection_domain(site: Site, chromium: Any) -> None:
    """Without ``disable-tracking``, mux-player's built-in Mux Data SDK reports the view; with
    ``beacon-collection-domain`` pointing at the edge's ``beacon.`` host it reaches kinoray (over the edge's HTTPS),
    never Mux's ``litix.io``, and kinoray's Data API — read with mux-python, whose models deserialize it — holds
    the view with what the browser did."""
    import uuid

    import mux_python as mux

    from tests.compat import mux_python_client

    viewer = f"mux-player-{uuid.uuid4().hex[:8]}"
    context = chromium.new_context(viewport={"width": 960, "height": 540})
    page = context.new_page()
    posts: list[tuple[str, int]] = []
    page.on("response", lambda answer: answer.request.method == "POST"
            and posts.append((answer.url, answer.status)))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(site.pages.put(
            f"<!doctype html><html><body><script src='/player.js'></script>"
            f"<mux-player custom-domain='{site.domain}' beacon-collection-domain='beacon.{site.domain}' "
            f"playback-id='{site.public}' metadata-viewer-user-id='{viewer}' metadata-video-title='Beacon check' "
            "muted autoplay style='width:960px;height:540px'></mux-player></body></html>"))
        deadline = time.monotonic() + 60
        while page.evaluate(f"{VIDEO}.currentTime") < 3:
            assert time.monotonic() < deadline, (posts, requested[-10:])
            time.sleep(0.1)
        page.evaluate("document.querySelector('mux-player').remove()")  # the view ends; its queue is sent
        sdk = mux_python_client(site.api.url, site.api.auth)
        deadline = time.monotonic() + 60
        while True:  # the edge's collector writes what it buffered every few seconds
            listed = mux.VideoViewsApi(sdk).list_video_views(viewer_id=viewer, timeframe=["1:hours"])
            if listed.total_row_count == 1:
                view = mux.VideoViewsApi(sdk).get_video_view(listed.data[0].id).data
                if "playing" in [event.name for event in view.events] and view.watch_time >= 2000:
                    break
            assert time.monotonic() < deadline, (listed.total_row_count, posts)
            time.sleep(0.5)
    finally:
        context.close()
    beacons = [(url, status) for url, status in posts if f"//beacon.{site.domain}/" in url]
    assert beacons and all(status == 202 for _, status in beacons), posts
    assert not [url for url in requested if "litix.io" in url]
    assert view.playback_id == site.public and view.asset_id is not None
    assert view.video_title == "Beacon check" and view.player_software.lower().startswith("mux-player")
    assert view.time_to_first_frame and 0 < view.time_to_first_frame < 30_000
    assert not view.playback_failure and not view.exit_before_video_start
