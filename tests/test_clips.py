"""Clips (``mux://assets/{id}`` inputs with ``start_time``/``end_time``), ``normalize_audio`` and test assets,
created with Mux's Python SDK against a real runner, on SQLite and PostgreSQL.

Independent checks: Debian's ffprobe/ffmpeg read the HLS the edge serves (durations, frame counts, decoded
pixels), FFmpeg's ``ebur128`` filter measures loudness, and the SDK's own models read ``source_asset_id``,
``normalize_audio`` and ``test``. The input is made by Debian's ffmpeg (lavfi ``testsrc2`` + loud noise), so
frame ``n`` of every encode shows the same picture.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mux_python as mux
import numpy as np
import pytest
import sqlalchemy as sa

from kinoray.media.audio import LOUDNESS_TARGET_LUFS
from kinoray.media.watermark import mark_box
from kinoray.store.models import Asset, Event, new_id
from tests.compat import mux_python_client
from tests.test_playback import frame_count

pytestmark = pytest.mark.slow

FPS, SECONDS, WIDTH, HEIGHT = 30, 12, 320, 180
_SETTINGS: dict[str, Any] = {"serve": {"poll_seconds": 0.1, "sweep_seconds": 0.5}}


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A loud 12 s video (keyframe every 2 s) and a quiet audio-only file."""
    folder = tmp_path_factory.mktemp("clip-inputs")
    video, quiet = folder / "loud.mp4", folder / "quiet.m4a"
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={WIDTH}x{HEIGHT}:r={FPS}:d={SECONDS}",
            "-f", "lavfi", "-i", f"anoisesrc=d={SECONDS}:a=0.9:r=48000", "-ac", "2", "-c:v", "libx264",
            "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(video))
    _ffmpeg("-f", "lavfi", "-i", "sine=f=500:d=6:r=48000,volume=0.005", "-ac", "2", "-c:a", "aac", str(quiet))
    return {"video": video, "quiet": quiet}


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.api_server import api_with_runner

    with api_with_runner(api_backend.new_url(), tmp_path_factory.mktemp("clips"), **_SETTINGS) as server:
        yield server


@pytest.fixture(scope="module")
def assets(api) -> mux.AssetsApi:
    return mux.AssetsApi(mux_python_client(api.url, api.auth))


def _wait_ready(assets: mux.AssetsApi, asset_id: str, timeout: float = 300) -> mux.Asset:
    deadline = time.monotonic() + timeout
    while True:
        asset = assets.get_asset(asset_id).data
        if asset.status in ("ready", "errored"):
            assert asset.status == "ready", asset.errors
            return asset
        assert time.monotonic() < deadline, f"asset {asset_id} still {asset.status}"
        time.sleep(0.3)


def _create(assets: mux.AssetsApi, url: str, **fields: Any) -> mux.Asset:
    request = mux.CreateAssetRequest(
        inputs=[mux.InputSettings(url=url, **fields.pop("input", {}))], playback_policies=[mux.PlaybackPolicy.PUBLIC],
        **fields)
    return assets.create_asset(request).data


@pytest.fixture(scope="module")
def source(assets, inputs) -> mux.Asset:
    return _wait_ready(assets, _create(assets, inputs["video"].as_uri()).id)


def _rendition_url(api, asset: mux.Asset) -> str:
    """The top video rendition's media playlist on the edge."""
    master = subprocess.run(["curl", "-sf", f"{api.edge_url}/{asset.playback_ids[0].id}.m3u8"],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    rung = next(line.split("/")[1] for line in master.splitlines() if line.endswith("index.m3u8")
                and not line.startswith("#") and "/audio/" not in line)
    return f"{api.edge_url}/{asset.playback_ids[0].id}/{rung}/index.m3u8"


def _gray(url: str, index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Frame ``index`` of ``url`` decoded by Debian's ffmpeg, as a luma array."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", url, "-vf", f"select=eq(n\\,{index})",
                          "-fps_mode", "passthrough", "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, timeout=120, check=True).stdout
    assert len(raw) == width * height, len(raw)
    return np.frombuffer(raw, np.uint8).reshape(height, width).astype(np.int16)


def _seconds(url: str, stream: str) -> float:
    """How long stream ``v:0``/``a:0`` of ``url`` lasts, from its packets' timestamps (first to last, plus one
    frame: 1/30 s of video, 1024 samples of 48 kHz AAC)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries", "packet=pts_time",
                          "-of", "csv=p=0", url], capture_output=True, text=True, timeout=120, check=True).stdout
    times = sorted(float(line.strip(",")) for line in out.split() if line.strip(",") not in ("", "N/A"))
    return times[-1] - times[0] + (1 / FPS if stream.startswith("v") else 1024 / 48000)


def _loudness(url: str) -> float:
    """Integrated loudness (LUFS) of ``url``'s audio by FFmpeg's ebur128 filter."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-nostats", "-i", url, "-map", "0:a:0", "-af", "ebur128",
                           "-f", "null", "-"], capture_output=True, text=True, timeout=120, check=True)
    return float(re.findall(r"I:\s+(-?[0-9.]+) LUFS", done.stderr)[-1])


def test_a_clip_is_a_new_asset_trimmed_frame_accurately(api, assets, source) -> None:
    clip = _create(assets, f"mux://assets/{source.id}", input={"start_time": 2.5, "end_time": 6.1})
    assert clip.source_asset_id == source.id and clip.status == "preparing"
    clip = _wait_ready(assets, clip.id)
    assert clip.source_asset_id == source.id and abs(clip.duration - 3.6) < 1e-6
    [info] = assets.get_asset_input_info(clip.id).data  # the clip's input: its source's stored bytes
    assert info.settings.url == f"mux://assets/{source.id}"
    assert {track.type: round(track.duration) for track in info.file.tracks} == {"video": SECONDS, "audio": SECONDS}
    # [2.5 s, 6.1 s) at 30 fps: source frames 75..182, 108 of them
    master = f"{api.edge_url}/{clip.playback_ids[0].id}.m3u8"
    assert frame_count(master) == 108
    assert abs(_seconds(master, "v:0") - 3.6) < 0.02 and abs(_seconds(master, "a:0") - 3.6) < 0.03
    clip_url, source_url = _rendition_url(api, clip), _rendition_url(api, source)
    for clip_frame, expected in ((0, 75), (107, 182)):
        picture = _gray(clip_url, clip_frame)
        errors = {n: float(np.abs(picture - _gray(source_url, n)).mean()) for n in (expected - 1, expected,
                                                                                     expected + 1)}
        assert min(errors, key=errors.get) == expected, errors
        assert errors[expected] < 2.0, errors
    # a clip of the clip: [0.5 s, 1.1 s) of the clip is the source's frames 90..107, cut from the source's input
    inner = _wait_ready(assets, _create(assets, f"mux://assets/{clip.id}",
                                        input={"start_time": 0.5, "end_time": 1.1}).id)
    assert inner.source_asset_id == clip.id and abs(inner.duration - 0.6) < 1e-6
    inner_url = _rendition_url(api, inner)
    assert frame_count(f"{api.edge_url}/{inner.playback_ids[0].id}.m3u8") == 18
    errors = {n: float(np.abs(_gray(inner_url, 0) - _gray(source_url, n)).mean()) for n in (89, 90, 91)}
    assert min(errors, key=errors.get) == 90, errors


def test_clips_are_refused_with_typed_errors(api, assets, source, inputs) -> None:
    def refused(url: str, **settings: Any) -> tuple[int, str]:
        with pytest.raises(mux.ApiException) as error:
            _create(assets, url, input=settings)
        return error.value.status, error.value.body

    status, body = refused(f"mux://assets/{new_id()}", start_time=1)
    assert status == 404 and "not_found" in body
    status, body = refused(f"mux://assets/{source.id}", start_time=30)
    assert status == 400 and "past the source's end" in body
    status, body = refused(f"mux://assets/{source.id}", start_time=4, end_time=3)
    assert status == 400 and "before end_time" in body
    status, body = refused(inputs["video"].as_uri(), start_time=1)
    assert status == 400 and "only for clips" in body
    status, body = refused("mux://playback/xyz")
    assert status == 400 and "mux://assets/" in body
    preparing = _create(assets, inputs["video"].as_uri())
    status, body = refused(f"mux://assets/{preparing.id}", start_time=1)
    assert status == 400 and "only ready assets" in body
    assets.delete_asset(preparing.id)


def test_normalize_audio_brings_loud_and_quiet_input_to_the_target(api, assets, source, inputs) -> None:
    loud = _create(assets, inputs["video"].as_uri(), normalize_audio=True)
    quiet = _create(assets, inputs["quiet"].as_uri(), normalize_audio=True)
    for asset, original in ((loud, inputs["video"]), (quiet, inputs["quiet"])):
        before = _loudness(str(original))
        assert abs(before - LOUDNESS_TARGET_LUFS) > 10, before  # the input is far from the target
        asset = _wait_ready(assets, asset.id)
        assert asset.normalize_audio is True
        after = _loudness(f"{api.edge_url}/{asset.playback_ids[0].id}/audio/index.m3u8")
        assert abs(after - LOUDNESS_TARGET_LUFS) <= 1.0, (before, after)
    # without normalize_audio the loud input stays loud
    assert source.normalize_audio is False
    assert _loudness(f"{api.edge_url}/{source.playback_ids[0].id}/audio/index.m3u8") > -10


def test_a_test_asset_is_ten_seconds_and_marked(api, assets, source, inputs) -> None:
    made = _create(assets, inputs["video"].as_uri(), test=True)
    assert made.test is True
    asset = _wait_ready(assets, made.id)
    assert asset.test is True and asset.duration <= 10
    with api.platform.db.reader() as session:
        row = session.get_one(Asset, asset.id)
        assert abs((row.expires_at - row.created_at).total_seconds() - 24 * 3600) < 60  # the default 24 h
        assert session.get_one(Asset, source.id).expires_at is None
    master = f"{api.edge_url}/{asset.playback_ids[0].id}.m3u8"
    assert frame_count(master) == 10 * FPS and _seconds(master, "v:0") <= 10.0 + 1e-3
    # the mark: frame 45 of the test encode against frame 45 of the plain encode of the same input
    marked, plain = _gray(_rendition_url(api, asset), 45), _gray(_rendition_url(api, source), 45)
    box = mark_box(WIDTH, HEIGHT)
    inside = (slice(box.top, box.top + box.height), slice(box.left, box.left + box.width))
    outside = (slice(box.top + box.height + 8, None), slice(None))
    assert float(np.abs(marked[inside] - plain[inside]).mean()) > 40
    assert float(np.abs(marked[outside] - plain[outside]).mean()) < 2.0
    assert float((marked[inside] > 200).mean()) > 0.5 and float((marked[inside] < 60).mean()) > 0.1  # box, ink


def test_test_assets_are_deleted_when_they_expire(api_backend, inputs, tmp_path_factory) -> None:
    """A runner whose test assets live 3 s deletes one as DELETE does (event, files); other assets stay."""
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("expiry"),
                       api={"allow_file_inputs": True, "test_asset_hours": 3 / 3600},
                       transcode={"chunk_seconds": 4, "segment_seconds": 2},
                       cluster={"max_workers": 1, "keep_workers_seconds": 0}, **_SETTINGS)
    try:
        server.start_runner()
        url = inputs["video"].as_uri()
        made = {name: server.client.post(f"{server.url}/video/v1/assets", json={
            "inputs": [{"url": url}], "test": name == "test"}, timeout=30).json()["data"] for name in ("test", "kept")}
        deadline = time.monotonic() + 120
        while server.client.get(f"{server.url}/video/v1/assets/{made['test']['id']}", timeout=10).status_code != 404:
            assert time.monotonic() < deadline, "the expired test asset was not deleted"
            time.sleep(0.3)
        assert server.client.get(f"{server.url}/video/v1/assets/{made['kept']['id']}", timeout=10).status_code == 200
        with server.platform.db.reader() as session:
            deleted = session.scalars(sa.select(Event.type).where(Event.object_id == made["test"]["id"])).all()
        assert "video.asset.deleted" in deleted
        assert not (Path(server.settings.storage_url) / "assets" / made["test"]["id"]).exists()
    finally:
        server.close()
