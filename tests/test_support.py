"""Fast self-tests of the test-support modules :mod:`tests.media` and :mod:`tests.oracles`.

The ``media_dir`` fixture comes from ``tests/conftest.py``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest

from tests import oracles
from tests.media import BAD_KINDS, MATRIX, MediaSpec, make_bad_media, make_media

VIDEO_CLIPS = [name for name, spec in MATRIX.items() if spec.video_codec]
MS = Fraction(1, 1000)


def clip(name: str, media_dir: Path) -> Path:
    """Path of the generated MATRIX clip ``name``."""
    return make_media(MATRIX[name], media_dir)


@pytest.mark.parametrize("name", VIDEO_CLIPS)
def test_frame_count_matches_spec(name: str, media_dir: Path) -> None:
    assert oracles.count_frames(clip(name, media_dir)) == MATRIX[name].expected_video_frames


@pytest.mark.parametrize("name", list(MATRIX))
def test_clip_decodes_cleanly(name: str, media_dir: Path) -> None:
    assert oracles.decode_errors(clip(name, media_dir)) == ""


@pytest.mark.parametrize("name", ["h264_25fps", "h264_2997fps", "h264_60fps", "vfr", "mpegts", "mkv", "webm"])
def test_frame_times_match_spec(name: str, media_dir: Path) -> None:
    spec = MATRIX[name]
    times = oracles.frame_pts(clip(name, media_dir))
    expected = [t + times[0] for t in spec.expected_frame_times]
    tolerance = MS if spec.container in ("mkv", "webm") else 0
    assert len(times) == len(expected)
    assert max(abs(a - b) for a, b in zip(times, expected, strict=True)) <= tolerance


def test_vfr_gaps_alternate(media_dir: Path) -> None:
    times = oracles.frame_pts(clip("vfr", media_dir))
    gaps = {b - a for a, b in zip(times, times[1:], strict=False)}
    assert gaps == {Fraction(1, 30), Fraction(2, 30)}


def test_cfr_duration(media_dir: Path) -> None:
    path = clip("h264_2997fps", media_dir)
    assert oracles.stream_duration(path) == MATRIX["h264_2997fps"].expected_video_duration


@pytest.mark.parametrize("name", ["rotation_90", "rotation_270"])
def test_rotation_reported(name: str, media_dir: Path) -> None:
    spec = MATRIX[name]
    assert oracles.display_rotation(clip(name, media_dir)) == spec.expected_ffprobe_rotation
    assert spec.expected_ffprobe_rotation == {90: -90, 270: 90}[spec.rotation]


def test_no_rotation_on_plain_clip(media_dir: Path) -> None:
    assert oracles.display_rotation(clip("h264_30fps", media_dir)) is None


def test_anamorphic_sar(media_dir: Path) -> None:
    info = oracles.stream_info(clip("anamorphic", media_dir))
    assert info["sample_aspect_ratio"] == "4:3"
    assert info["display_aspect_ratio"] == "16:9"


@pytest.mark.parametrize(
    ("name", "channels", "layout", "rate"),
    [("audio_51", 6, "5.1", 48000), ("audio_44k", 2, "stereo", 44100), ("long_gop", 1, "mono", 48000)],
)
def test_audio_facts(name: str, channels: int, layout: str, rate: int, media_dir: Path) -> None:
    info = oracles.audio_info(clip(name, media_dir))
    assert (info["channels"], info["channel_layout"], info["sample_rate"]) == (channels, layout, rate)


def test_webm_codecs(media_dir: Path) -> None:
    path = clip("webm", media_dir)
    assert oracles.codec_string_from_ffprobe(path)["codec_name"] == "vp9"
    assert oracles.audio_info(path)["codec_name"] == "opus"


def test_audio_only_has_no_video(media_dir: Path) -> None:
    data = oracles.ffprobe_json(clip("audio_only", media_dir), "-show_streams")
    assert [s["codec_type"] for s in data["streams"]] == ["audio"]


def test_no_audio_has_no_audio(media_dir: Path) -> None:
    data = oracles.ffprobe_json(clip("no_audio", media_dir), "-show_streams")
    assert [s["codec_type"] for s in data["streams"]] == ["video"]


@pytest.mark.parametrize(
    ("name", "profile", "pix_fmt", "size"),
    [
        ("hevc_10bit", "Main 10", "yuv420p10le", (320, 180)),
        ("h264_10bit", "High 10", "yuv420p10le", (320, 180)),
        ("odd_dims", "Simple Profile", "yuv420p", (321, 181)),
        ("odd_dims_h264_444", "High 4:4:4 Predictive", "yuv444p", (321, 181)),
        ("portrait", "High", "yuv420p", (180, 320)),
    ],
)
def test_codec_facts(name: str, profile: str, pix_fmt: str, size: tuple[int, int], media_dir: Path) -> None:
    info = oracles.codec_string_from_ffprobe(clip(name, media_dir))
    assert (info["profile"], info["pix_fmt"], (info["width"], info["height"])) == (profile, pix_fmt, size)


def test_long_gop_keyframes_30s_apart(media_dir: Path) -> None:
    assert oracles.keyframe_times(clip("long_gop", media_dir)) == [0, 30]


@pytest.mark.parametrize("name", ["h264_30fps", "h264_bpyramid", "odd_dims", "webm", "av1"])
def test_keyframes_every_gop(name: str, media_dir: Path) -> None:
    spec = MATRIX[name]
    gop_s = spec.resolved_gop / spec.fps
    expected = [i * gop_s for i in range(math.ceil(spec.duration / gop_s))]
    assert oracles.keyframe_times(clip(name, media_dir)) == expected


def test_hevc_open_gop_has_cra_and_rasl(media_dir: Path) -> None:
    units = oracles.nal_unit_types(clip("hevc_open_gop", media_dir))
    key_types = [types for _, key, types in units if key]
    assert key_types[0] == [20] and all(types == [21] for types in key_types[1:])
    assert any(t in (8, 9) for _, _, types in units for t in types), "no RASL leading pictures"


def test_hevc_closed_gop_has_only_idr(media_dir: Path) -> None:
    units = oracles.nal_unit_types(clip("hevc_closed_gop", media_dir))
    assert all(types in ([19], [20]) for _, key, types in units if key)


def test_h264_open_gop_uses_recovery_points(media_dir: Path) -> None:
    units = oracles.nal_unit_types(clip("h264_open_gop", media_dir))
    key_types = [types for _, key, types in units if key]
    assert 5 in key_types[0] and all(5 not in types and 6 in types for types in key_types[1:])


def test_h264_bpyramid_has_b_frames_out_of_order(media_dir: Path) -> None:
    pkts = oracles.packets(clip("h264_bpyramid", media_dir))
    assert any(p.pts is not None and p.dts is not None and p.pts > p.dts for p in pkts)
    assert len(oracles.idr_times(clip("h264_bpyramid", media_dir))) == 6


def test_psnr(media_dir: Path) -> None:
    ref = clip("h264_30fps", media_dir)
    assert oracles.psnr(ref, ref) == math.inf
    assert 30 < oracles.psnr(clip("h264_10bit", media_dir), ref, shortest=True) < 80
    assert oracles.psnr(clip("rotation_90", media_dir), ref, scale_to=(160, 90), shortest=True) < 20


def test_make_media_is_cached(media_dir: Path) -> None:
    path = clip("h264_30fps", media_dir)
    mtime = path.stat().st_mtime_ns
    assert make_media(MATRIX["h264_30fps"], media_dir) == path
    assert path.stat().st_mtime_ns == mtime


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        MediaSpec(name="x", rotation=45)
    with pytest.raises(ValueError):
        MediaSpec(name="x", container="webm", video_codec="vp9", audio_rate=44100)


@pytest.mark.parametrize(
    "kind", ["truncated", "truncated_faststart", "corrupt", "zero", "text", "garbage", "invalid_dimensions"]
)
def test_bad_media_reports_errors(kind: str, media_dir: Path) -> None:
    assert oracles.decode_errors(make_bad_media(kind, media_dir)) != ""


def test_truncated_ts_loses_frames(media_dir: Path) -> None:
    assert 0 < oracles.count_frames(make_bad_media("truncated_ts", media_dir)) < 120


def test_absurd_dimensions_probe(media_dir: Path) -> None:
    info = oracles.stream_info(make_bad_media("absurd_dimensions", media_dir))
    assert (info["width"], info["height"]) == (100_000, 2_000)


@pytest.mark.parametrize("kind", ["no_video_frames", "no_video_frames_mp4"])
def test_no_video_frames(kind: str, media_dir: Path) -> None:
    path = make_bad_media(kind, media_dir)
    assert oracles.stream_info(path, "v:0")["codec_name"] == "h264"
    assert oracles.count_packets(path, "v:0") == 0
    assert oracles.count_packets(path, "a:0") > 0


def test_every_bad_kind_is_generated(media_dir: Path) -> None:
    for kind in BAD_KINDS:
        assert make_bad_media(kind, media_dir).exists()


def test_oracle_failure_is_assertion(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="ffprobe failed"):
        oracles.ffprobe_json(tmp_path / "missing.mp4", "-show_streams")
