"""HEVC/AV1 output, encoder registry and fallbacks, chunked-vs-unchunked quality, keyframe index rules."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from kinoray.encoders import EncoderChoice, available_encoders, select_encoder
from kinoray.errors import EncoderUnavailableError
from kinoray.media import TranscodeOptions, index_keyframes, probe, transcode_file
from tests import oracles
from tests.media import MATRIX, MediaSpec, make_media
from tests.test_engine import concat_track


@pytest.mark.parametrize(("codec", "tag", "prefix"), [("hevc", "hvc1", "hvc1."), ("av1", "av01", "av01.")])
def test_hevc_and_av1_ladders(codec: str, tag: str, prefix: str, media_dir: Path, tmp_path: Path) -> None:
    source = make_media(MATRIX["h264_30fps"], media_dir)
    result = transcode_file(str(source), tmp_path / "out", TranscodeOptions(
        codec=codec, segment_seconds=2, chunk_seconds=2, ladder=(180, 120)))
    out = Path(result.out_dir)
    assert result.encoder in {"libx265", "libsvtav1"}
    for rendition in result.renditions:
        stream = concat_track(out / rendition.name, tmp_path / f"{rendition.name}.mp4")
        info = oracles.codec_string_from_ffprobe(stream)
        assert info["codec_tag_string"] == tag
        assert rendition.codec_string.startswith(prefix)
        assert oracles.count_frames(stream) == MATRIX["h264_30fps"].expected_video_frames
        assert oracles.keyframe_times(stream) == [Fraction(0), Fraction(2), Fraction(4)]
        if codec == "hevc":
            assert _hevc_string_matches(rendition.codec_string, info)
            idr = [t for t, _k, nals in oracles.nal_unit_types(stream) if {19, 20} & set(nals)]
            assert idr == [Fraction(0), Fraction(2), Fraction(4)], "HEVC segment starts must be IDR, not CRA"
        else:
            level = rendition.codec_string.split(".")[2]
            assert rendition.codec_string.endswith(".08") and level[-1] in "MH"
    assert oracles.decode_errors(out / "master.m3u8") == ""


def _hevc_string_matches(codec_string: str, info: dict) -> bool:
    parts = codec_string.split(".")
    profile = {"Main": "1", "Main 10": "2"}[info["profile"]]
    return parts[1] == profile and parts[3] == f"L{info['level']}"


def test_chunked_encode_matches_unchunked_quality(media_dir: Path, tmp_path: Path) -> None:
    """Default segment/chunk sizes (4 s / 20 s) against one chunk: PSNR vs the source within 0.1 dB."""
    source = make_media(MediaSpec(name="psnr_40s", width=320, height=180, fps=Fraction(25),
                                  duration_s=Fraction(40), gop=50, audio_channels=0), media_dir)
    results = {}
    for label, chunk_seconds in (("chunked", 20), ("whole", 1000)):
        results[label] = transcode_file(str(source), tmp_path / label, TranscodeOptions(
            segment_seconds=4, chunk_seconds=chunk_seconds, ladder=(180, 120)))
    assert results["chunked"].chunks == 2 and results["whole"].chunks == 1
    for position, rendition in enumerate(results["whole"].renditions):
        scores = {}
        for label, result in results.items():
            name = result.renditions[position].name
            stream = concat_track(Path(result.out_dir) / name, tmp_path / f"{label}-{name}.mp4")
            scores[label] = oracles.psnr(stream, source, scale_to=(rendition.width, rendition.height))
        assert abs(scores["chunked"] - scores["whole"]) <= 0.1, (rendition.name, scores)
        assert scores["whole"] > 30


def test_registry_probes_real_sessions_and_auto_falls_back_visibly() -> None:
    capabilities = available_encoders()
    assert capabilities["h264/libx264"].available
    assert capabilities["hevc/libx265"].available and capabilities["av1/libsvtav1"].available
    before = REGISTRY.get_sample_value("kinoray_encoder_fallbacks_total",
                                       {"codec": "h264", "requested": "nvenc", "used": "libx264"}) or 0
    choice = select_encoder("h264", "auto")
    assert isinstance(choice, EncoderChoice)
    if capabilities["h264/nvenc"].available:
        assert choice.name == "nvenc" and choice.fallback_from is None
    else:
        assert choice.name == "libx264" and choice.fallback_from == "nvenc"
        assert choice.fallback_reason == capabilities["h264/nvenc"].reason
        after = REGISTRY.get_sample_value("kinoray_encoder_fallbacks_total",
                                          {"codec": "h264", "requested": "nvenc", "used": "libx264"})
        assert after == before + 1
        with pytest.raises(EncoderUnavailableError, match="nvenc"):
            select_encoder("h264", "nvenc")
    with pytest.raises(EncoderUnavailableError):
        select_encoder("h264", "libsvtav1")
    with pytest.raises(EncoderUnavailableError):
        select_encoder("vp8")


@pytest.mark.gpu
@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_gpu_decode_and_auto_encoder(codec: str, media_dir: Path, tmp_path: Path) -> None:
    """On a GPU machine: ``auto`` uses NVENC where it exists and falls back to CPU on NVENC-less GPUs
    (H100/A100), and the output is frame-exact either way."""
    source = make_media(MATRIX["h264_30fps"], media_dir)
    result = transcode_file(str(source), tmp_path / "out", TranscodeOptions(codec=codec, ladder=(180,)))
    nvenc = available_encoders()[f"{codec}/nvenc"]
    assert result.encoder == ("nvenc" if nvenc.available else {"h264": "libx264", "hevc": "libx265"}[codec])
    stream = concat_track(Path(result.out_dir) / result.renditions[0].name, tmp_path / "gpu.mp4")
    assert oracles.count_frames(stream) == MATRIX["h264_30fps"].expected_video_frames


def test_open_gop_keyframes_are_classified_by_nal_type(media_dir: Path) -> None:
    hevc = index_keyframes(str(make_media(MATRIX["hevc_open_gop"], media_dir)))
    nals = oracles.nal_unit_types(make_media(MATRIX["hevc_open_gop"], media_dir))
    cra_or_idr = sorted(t for t, _k, types in nals if {19, 20, 21} & set(types))
    assert [p * hevc.time_base for p in hevc.random_access_pts] == cra_or_idr

    h264 = index_keyframes(str(make_media(MATRIX["h264_open_gop"], media_dir)))
    flagged = sum(h264.keyframe)
    # Recovery-point I-frames count (recovery_frame_cnt = 0); nothing else that is flagged is rejected.
    assert len(h264.random_access_pts) + h264.rejected_keyframes == flagged
    assert len(h264.random_access_pts) == MATRIX["h264_open_gop"].expected_video_frames // MATRIX["h264_open_gop"].resolved_gop


def test_keyframe_index_reads_packets_only(media_dir: Path) -> None:
    path = make_media(MATRIX["h264_bpyramid"], media_dir)
    index = index_keyframes(str(path))
    packets = oracles.packets(path)
    assert index.packet_count == len(packets)
    assert list(index.keyframe) == [p.keyframe for p in packets]
    assert sorted(p for p in index.pts if p is not None) == list(index.presentation_pts)
    assert all(pos is not None for pos in index.position)
    assert probe(str(path)).video.frame_count == index.packet_count
