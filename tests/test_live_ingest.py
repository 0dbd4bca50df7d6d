"""The live runtime end to end (``kinoray.serve.live_ingest``): a live stream made through the API, Debian's
``ffmpeg`` publishing to the RTMP ingest with its stream key, the transcoder actor on a local Ray (recording
the live segments), the job runner ending the session after the reconnect window and the recording published
from those segments (``tests/test_live_recording.py`` judges the recording itself).

Checked independently: ``ffprobe`` decodes the live playlists while the publisher sends; a publisher that drops
and returns within the reconnect window continues the same recording (one asset, both parts in it); the
recording becomes an ordinary ready asset whose stream ``ffprobe`` decodes for the published duration; the
lifecycle's webhooks are recorded in order; a wrong key is refused.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from kinoray.store.models import Event
from tests.live_runtime import live_api, live_ingest
from tests.test_live_rtmp import publish

pytestmark = pytest.mark.slow

FPS = 25


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with live_api(api_backend, tmp_path_factory.mktemp("live-ingest")) as server:
        yield server


@pytest.fixture(scope="module")
def ingest(api) -> Iterator[Any]:
    with live_ingest(api) as service:
        yield service


def _publish(port: int, key: str, seconds: int) -> subprocess.CompletedProcess:
    return publish(port, key, seconds=seconds, app="app", size="426x240")


def _events(api, live_stream_id: str) -> list[str]:
    with api.platform.db.reader() as session:
        return list(session.scalars(sa.select(Event.type).where(Event.object_id == live_stream_id)
                                    .order_by(Event.created_at, Event.id)))


def _stream(api, live_stream_id: str) -> dict[str, Any]:
    answer = api.client.get(f"{api.url}/video/v1/live-streams/{live_stream_id}", timeout=10)
    answer.raise_for_status()
    return dict(answer.json()["data"])


def test_publish_reconnect_and_the_recording_becomes_an_asset(api, ingest) -> None:
    created = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "latency_mode": "reduced", "reconnect_window": 4,
        "new_asset_settings": {"playback_policies": ["public"]}}, timeout=30)
    assert created.status_code == 201, created.text
    stream = created.json()["data"]
    key, live_id = stream["stream_key"], stream["id"]
    assert _publish(ingest.port, "not-" + key, 1).returncode != 0  # a wrong key: refused before any media

    [playback] = stream["playback_ids"]
    live_url = f"{api.edge_url}/{playback['id']}.m3u8"
    assert requests.get(live_url, timeout=10).status_code == 412  # nothing live yet

    publisher = threading.Thread(target=lambda: results.append(_publish(ingest.port, key, 6)))
    results: list[subprocess.CompletedProcess] = []
    publisher.start()
    # live through the delivery edge while the publisher sends: a master, a rung playlist that grows, and
    # segments ffprobe decodes
    deadline = time.monotonic() + 30
    while (master := requests.get(live_url, timeout=10)).status_code != 200:
        assert time.monotonic() < deadline and publisher.is_alive(), master.text
        time.sleep(0.2)
    assert master.headers["Cache-Control"] == "public, max-age=1"
    rung = next(line for line in master.text.splitlines() if line.endswith("index.m3u8") and "240p" in line)
    media = requests.get(f"{api.edge_url}/{rung}", timeout=10)
    assert media.status_code == 200 and "#EXT-X-PROGRAM-DATE-TIME" in media.text
    assert "#EXT-X-ENDLIST" not in media.text
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,height", "-of", "json",
                            live_url], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert {(s["codec_type"], s.get("height")) for s in json.loads(probe.stdout)["streams"]} >= {("video", 240)}
    publisher.join(60)
    [first] = results
    assert first.returncode == 0, first.stderr
    during = _stream(api, live_id)
    asset_id = during["active_asset_id"]
    assert asset_id and during["status"] == "active"
    second = _publish(ingest.port, key, 4)  # back within the 4 s window: the same session and recording
    assert second.returncode == 0, second.stderr
    assert _stream(api, live_id)["active_asset_id"] == asset_id

    deadline = time.monotonic() + 60  # the window runs out; the runner's sweep ends the session
    while _stream(api, live_id)["status"] != "idle":
        assert time.monotonic() < deadline, _stream(api, live_id)
        time.sleep(0.3)
    assert requests.get(live_url, timeout=10).status_code in (404, 412)  # the session is over
    asset = api.wait_asset(asset_id, timeout=300)
    assert asset["status"] == "ready", asset
    # both parts of the recording (10 s), and the slate the transcoder showed meanwhile: between them and for the
    # reconnect window after the last (4 s) — the recording is the live output itself
    assert 9.0 < asset["duration"] < 10.0 + 4 + 3
    [playback] = asset["playback_ids"]
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
                            f"{api.edge_url}/{playback['id']}.m3u8"], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert abs(float(json.loads(probe.stdout)["format"]["duration"]) - asset["duration"]) < 0.5

    lifecycle = [name.removeprefix("video.live_stream.") for name in _events(api, live_id)]
    assert lifecycle[0] == "created"
    for expected in ("connected", "recording", "active", "disconnected", "idle"):
        assert expected in lifecycle, lifecycle
    assert lifecycle.index("connected") < lifecycle.index("active") < lifecycle.index("idle")
    assert lifecycle.count("connected") == 2 and lifecycle.count("disconnected") == 2
    completed = [name for name in _events(api, asset_id) if name == "video.asset.live_stream_completed"]
    assert completed, _events(api, asset_id)


def test_recorded_parts_are_the_published_bytes(api, ingest, tmp_path: Path) -> None:
    """A recording whose master is kept (``master_access: temporary``) keeps its source: each part holds what
    the publisher sent; ffprobe reads every frame of a 3 s publish."""
    stream = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "reconnect_window": 60,
        "new_asset_settings": {"master_access": "temporary"}}, timeout=30).json()["data"]
    assert _publish(ingest.port, stream["stream_key"], 3).returncode == 0
    asset_id = _stream(api, stream["id"])["active_asset_id"]
    deadline = time.monotonic() + 30
    part = None
    while part is None:
        parts = sorted(Path(api.settings.storage_url, "assets", asset_id).glob("input.part-[0-9][0-9][0-9][0-9]"))
        part = parts[0] if parts else None
        assert time.monotonic() < deadline
        time.sleep(0.2)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
                            "stream=nb_read_frames", "-of", "csv=p=0", str(part)], capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0 and int(probe.stdout.split()[0]) == 3 * FPS, probe.stderr
