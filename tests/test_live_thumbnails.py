"""Live thumbnails: ``/{playback_id}/thumbnail.{jpg,png,webp}`` of a live stream's playback id, served by the
delivery edge, is a recent frame of the stream while it is active, and the typed ``412 asset_not_ready`` of a
preparing asset while it is idle.

Debian's ``ffmpeg`` publishes ``testsrc2`` (its moving pattern and counter change every frame) to kinoray's
RTMP ingest; Debian's ``ffprobe`` reads each image's codec and size and ``ffmpeg`` decodes it to pixels, so a
thumbnail taken seconds later is shown to be a different picture, not only different bytes.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.live_runtime import live_api, live_ingest
from tests.test_live_rtmp import publisher_command

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 426, 240


@pytest.fixture(scope="module")
def api(api_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with live_api(api_backend, tmp_path_factory.mktemp("live-thumbnails")) as server:
        yield server


@pytest.fixture(scope="module")
def ingest(api: Any) -> Iterator[Any]:
    with live_ingest(api) as service:
        yield service


def _eventually(check: Callable[[], Any], within: float, what: Callable[[], str] | str) -> Any:
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.25)
    return value


def _probe(path: Path) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    [stream] = json.loads(done.stdout)["streams"]
    return dict(stream)


def _pixels(path: Path, width: int, height: int) -> np.ndarray:
    """The image decoded by Debian's ffmpeg to 8-bit gray."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    return np.frombuffer(done.stdout, dtype=np.uint8).reshape(height, width)


def test_a_live_playback_id_s_thumbnail_is_a_recent_frame(api: Any, ingest: Any, tmp_path: Path) -> None:
    created = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "latency_mode": "reduced"}, timeout=30)
    assert created.status_code == 201, created.text
    stream = created.json()["data"]
    playback_id = stream["playback_ids"][0]["id"]
    thumbnail = f"{api.edge_url}/{playback_id}/thumbnail"

    idle = requests.get(f"{thumbnail}.jpg", timeout=10)  # idle: the preparing asset's typed error
    assert idle.status_code == 412 and idle.json()["error"]["type"] == "asset_not_ready", idle.text

    results: list[subprocess.CompletedProcess[str]] = []
    publisher = threading.Thread(target=lambda: results.append(subprocess.run(
        publisher_command(ingest.port, stream["stream_key"], seconds=16, app="app", size=f"{WIDTH}x{HEIGHT}"),
        capture_output=True, text=True, timeout=140)))
    publisher.start()
    try:
        first = _eventually(lambda: (answer := requests.get(f"{thumbnail}.jpg", timeout=10)).status_code == 200
                            and answer, 40, lambda: requests.get(f"{thumbnail}.jpg", timeout=10).text)
        assert first.headers["Content-Type"] == "image/jpeg"
        assert first.headers["Cache-Control"] == "public, max-age=2"
        assert first.headers["X-Image-Cache"] in ("bypass", "hit") and first.headers["ETag"]
        (tmp_path / "first.jpg").write_bytes(first.content)
        assert _probe(tmp_path / "first.jpg") == {"codec_name": "mjpeg", "width": WIDTH, "height": HEIGHT}
        again = requests.get(f"{thumbnail}.jpg", timeout=10)  # within 2 s: the same frame, from memory
        if again.content == first.content:
            assert again.headers["ETag"] == first.headers["ETag"]

        # seconds later the live edge has moved on: another picture
        def changed() -> requests.Response | None:
            answer = requests.get(f"{thumbnail}.jpg", timeout=10)
            return answer if answer.status_code == 200 and answer.content != first.content else None

        later = _eventually(changed, 20, "the live thumbnail changes as the stream goes on")
        (tmp_path / "later.jpg").write_bytes(later.content)
        assert _probe(tmp_path / "later.jpg") == {"codec_name": "mjpeg", "width": WIDTH, "height": HEIGHT}
        difference = np.abs(_pixels(tmp_path / "first.jpg", WIDTH, HEIGHT).astype(int)
                            - _pixels(tmp_path / "later.jpg", WIDTH, HEIGHT).astype(int))
        assert (difference > 40).mean() > 0.005, "another frame, not the same one encoded again"

        for extension, codec in (("png", "png"), ("webp", "webp")):
            answer = requests.get(f"{thumbnail}.{extension}", params={"width": 160}, timeout=10)
            assert answer.status_code == 200, answer.text
            (tmp_path / f"small.{extension}").write_bytes(answer.content)
            assert _probe(tmp_path / f"small.{extension}") == {"codec_name": codec, "width": 160, "height": 90}
        animated = requests.get(f"{api.edge_url}/{playback_id}/animated.gif", timeout=10)
        assert animated.status_code == 404 and animated.json()["error"]["type"] == "not_found", animated.text
    finally:
        publisher.join(150)
    assert results and results[0].returncode == 0, results[0].stderr if results else "no publisher result"

    def idle_again() -> bool:  # the session is over: the stream's thumbnail is not served any more
        answer = requests.get(f"{thumbnail}.jpg", timeout=10)
        return answer.status_code == 412 and answer.json()["error"]["type"] == "asset_not_ready"

    _eventually(idle_again, 30, "412 once the stream is idle")
