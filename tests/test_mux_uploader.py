"""Mux's own upload element (npm ``@mux/mux-uploader``, which uploads with ``@mux/upchunk``) in Chromium.

A page holds ``<mux-uploader endpoint="<kinoray's direct upload URL>" chunk-size="256">``; the test picks a file
in it as a user would. UpChunk PUTs the file in 256 KiB chunks with ``Content-Range`` to the delivery edge; the
element's own ``chunksuccess``/``success`` events say what it saw. Independently: the asset's stored input is
byte for byte the file, and the asset plays in Debian's ``ffprobe``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kinoray.media.synthetic import generate_clip
from tests.browser import chromium, require_chromium
from tests.js_clients import PageServer, js_clients

pytestmark = pytest.mark.slow

CHUNK_KB = 256


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if api_backend.kind != "sqlite":
        pytest.skip("browser tests run on one backend (SQLite); the upload tests cover both")
    require_chromium()
    from tests.api_server import api_with_runner

    with api_with_runner(api_backend.new_url(), tmp_path_factory.mktemp("mux-uploader")) as server:
        yield server


@pytest.fixture(scope="module")
def pages() -> Iterator[PageServer]:
    server = PageServer({"/uploader.js": js_clients() / "@mux" / "mux-uploader" / "dist" / "mux-uploader.js"})
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_file_picked_in_mux_uploader_becomes_a_playable_asset(api, pages: PageServer,
                                                                tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "upload.mp4", width=1280, height=720, fps=30, seconds=4)
    size = clip.stat().st_size
    assert size > 3 * CHUNK_KB * 1024, size  # several chunks, the last one short
    created = api.client.post(f"{api.url}/video/v1/uploads", json={
        "cors_origin": "*", "new_asset_settings": {"playback_policies": ["public"]}}, timeout=30)
    assert created.status_code == 201, created.text
    upload = created.json()["data"]

    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(pages.put(
            "<!doctype html><html><body><script src='/uploader.js'></script>"
            f"<mux-uploader endpoint='{upload['url']}' chunk-size='{CHUNK_KB}'></mux-uploader><script>"
            "window.seen = {chunks: 0, success: false, error: null};"
            "const u = document.querySelector('mux-uploader');"
            "u.addEventListener('chunksuccess', () => window.seen.chunks++);"
            "u.addEventListener('success', () => window.seen.success = true);"
            "u.addEventListener('uploaderror', e => window.seen.error = String(e.detail && e.detail.message));"
            "</script></body></html>"))
        page.locator("mux-uploader input[type=file]").first.set_input_files(str(clip))
        deadline = time.monotonic() + 120
        while not (seen := page.evaluate("window.seen"))["success"]:
            assert seen["error"] is None, seen
            assert time.monotonic() < deadline, (seen, errors)
            time.sleep(0.2)
        assert seen["chunks"] == -(-size // (CHUNK_KB * 1024)) and errors == []

    deadline = time.monotonic() + 60
    while not (asset_id := api.client.get(f"{api.url}/video/v1/uploads/{upload['id']}", timeout=10)
               .json()["data"].get("asset_id")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stored = Path(api.settings.storage_url) / "assets" / asset_id / "input"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(clip.read_bytes()).digest()
    asset = api.wait_asset(asset_id, timeout=300)
    assert asset["status"] == "ready", asset
    [playback] = asset["playback_ids"]
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
                            f"{api.edge_url}/{playback['id']}.m3u8"], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert abs(float(json.loads(probe.stdout)["format"]["duration"]) - 4) < 0.5
