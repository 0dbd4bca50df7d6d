"""The ``kinoray`` command: probe JSON, transcode with Ray workers, typed errors, native logs routed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import oracles
from tests.media import MATRIX, make_bad_media, make_media

KINORAY = [sys.executable, "-m", "kinoray.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KINORAY, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_probe_prints_json(media_dir: Path) -> None:
    source = make_media(MATRIX["rotation_90"], media_dir)
    proc = run("probe", str(source))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    ffprobe = oracles.stream_info(source)
    assert info["video"]["width"] == ffprobe["width"] and info["video"]["height"] == ffprobe["height"]
    assert (info["video"]["display_width"], info["video"]["display_height"]) == (180, 320)
    assert info["video"]["rotation"] % 360 == (oracles.display_rotation(source) or 0) % 360
    assert info["audio"]["channels"] == 2 and info["audio"]["sample_rate"] == 48000
    assert info["video"]["real_rate"] == "30"


@pytest.mark.timeout(300)
def test_transcode_through_ray_workers(media_dir: Path, tmp_path: Path) -> None:
    source = make_media(MATRIX["h264_25fps"], media_dir)
    out = tmp_path / "out"
    proc = run("transcode", str(source), str(out), "--ladder", "180,120", "--segment-seconds", "2",
               "--chunk-seconds", "2", "--workers", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["chunks"] == 3 and summary["frames"] == MATRIX["h264_25fps"].expected_video_frames
    assert summary["encoder"] == "libx264" and summary["fallback_from"] == "nvenc"
    assert [r["name"] for r in summary["renditions"]] == ["180p", "120p"]
    assert {"master.m3u8", "manifest.mpd", "highest.mp4", "180p", "120p", "audio"} <= {p.name for p in out.iterdir()}
    assert oracles.decode_errors(out / "master.m3u8") == ""


def test_bad_input_exits_2_with_typed_error(media_dir: Path, tmp_path: Path) -> None:
    proc = run("transcode", str(make_bad_media("text", media_dir)), str(tmp_path / "out"), "--workers", "1")
    assert proc.returncode == 2
    error = json.loads(proc.stderr.strip().splitlines()[-1])["error"]
    assert error["type"] == "invalid_media" and "not a readable media file" in error["messages"][0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("codec", "raw_prefix", "logger"), [("hevc", "x265 [", "kinoray.native.x265"),
                                                             ("av1", "Svt[", "kinoray.native.svtav1")])
def test_native_encoder_chatter_goes_through_logging(codec: str, raw_prefix: str, logger: str,
                                                     media_dir: Path, tmp_path: Path) -> None:
    source = make_media(MATRIX["h264_60fps"], media_dir)
    proc = run("transcode", str(source), str(tmp_path / "out"), "--codec", codec, "--ladder", "180",
               "--workers", "1", "--json", env={"KINORAY_NATIVE_LOG_LEVEL": "DEBUG", "SVT_LOG": "4"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert not [line for line in lines if line.lstrip().startswith(raw_prefix)], "raw encoder output on stderr"
    assert any(logger in line for line in lines), f"no {logger} records"
