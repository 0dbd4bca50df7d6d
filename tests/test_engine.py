"""End-to-end engine checks over the generated media matrix, judged by independent tools only:
Debian ffprobe/ffmpeg for frames, timestamps, keyframes and decode errors; the m3u8 and mpegdash libraries
for the manifests."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser

from kinoray.media import TranscodeOptions, TranscodeResult, transcode_file
from tests import oracles
from tests.media import MATRIX, make_media

SEGMENT_SECONDS = 2
LADDER = (180, 120)
VIDEO_CASES = [name for name, spec in MATRIX.items() if spec.video_codec is not None]


def concat_track(track_dir: Path, target: Path) -> Path:
    """init + media segments in order: the byte stream a player's MSE buffer receives."""
    with open(target, "wb") as out:
        out.write((track_dir / "init.mp4").read_bytes())
        for segment in sorted(track_dir.glob("seg_*.m4s")):
            out.write(segment.read_bytes())
    return target


@pytest.fixture(scope="module")
def transcoded(media_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    cache: dict[str, tuple[TranscodeResult, Path]] = {}

    def get(name: str) -> tuple[TranscodeResult, Path]:
        if name not in cache:
            source = make_media(MATRIX[name], media_dir)
            out = tmp_path_factory.mktemp(name) / "out"
            result = transcode_file(str(source), out, TranscodeOptions(
                segment_seconds=SEGMENT_SECONDS, chunk_seconds=2 * SEGMENT_SECONDS, ladder=LADDER))
            cache[name] = (result, source)
        return cache[name]

    return get


def expected_frames(name: str, result: TranscodeResult) -> int:
    """Frames after the CFR rule, computed independently of the plan: CFR sources keep every frame; VFR
    sources are sampled at the output rate over their displayed duration."""
    spec = MATRIX[name]
    if not spec.vfr:
        return spec.expected_video_frames
    return round(spec.expected_video_duration * Fraction(result.frame_rate))


@pytest.mark.parametrize("name", VIDEO_CASES)
def test_every_rung_is_frame_exact_and_switchable(name: str, transcoded, tmp_path: Path) -> None:
    result, _source = transcoded(name)
    out = Path(result.out_dir)
    rate = Fraction(result.frame_rate)
    frames = expected_frames(name, result)
    assert result.frames == frames
    keyframe_sets = []
    for rendition in result.renditions:
        stream = concat_track(out / rendition.name, tmp_path / f"{rendition.name}.mp4")
        assert oracles.count_frames(stream) == frames, rendition.name
        times = oracles.frame_pts(stream)
        assert times == [Fraction(n) / rate for n in range(frames)], f"{rendition.name}: not CFR from 0"
        keys = oracles.keyframe_times(stream)
        segment_frames = math.floor(SEGMENT_SECONDS * rate)
        assert keys == [Fraction(n) / rate for n in range(0, frames, segment_frames)], rendition.name
        idr = [t for t, _key, nals in oracles.nal_unit_types(stream) if 5 in nals]
        assert sorted(idr) == keys, f"{rendition.name}: every segment must start with an IDR, and only those"
        keyframe_sets.append(keys)
        info = oracles.stream_info(stream)
        assert (info["width"], info["height"]) == (rendition.width, rendition.height)
    assert all(keys == keyframe_sets[0] for keys in keyframe_sets), "renditions switch at different times"


@pytest.mark.parametrize("name", VIDEO_CASES)
def test_manifests_parse_and_reference_real_files(name: str, transcoded, tmp_path: Path) -> None:
    result, _ = transcoded(name)
    out = Path(result.out_dir)
    master = m3u8.load(str(out / "master.m3u8"))
    assert master.is_variant and master.version == 7
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in (out / "master.m3u8").read_text()
    assert len(master.playlists) == len(result.renditions)
    for variant, rendition in zip(master.playlists, result.renditions, strict=True):
        info = variant.stream_info
        assert info.resolution == (rendition.width, rendition.height)
        assert info.bandwidth >= info.average_bandwidth > 0
        assert abs(info.frame_rate - float(Fraction(result.frame_rate))) < 0.001
        media = m3u8.load(str(out / variant.uri))
        assert media.is_endlist and media.playlist_type == "vod" and media.segment_map
        assert (out / rendition.name / media.segment_map[0].uri).exists()
        assert all(s.duration <= SEGMENT_SECONDS + 1e-9 for s in media.segments)
        assert all(round(s.duration) <= media.target_duration for s in media.segments)
        for segment in media.segments:
            assert (out / rendition.name / segment.uri).exists()
        assert len(media.segments) == rendition.segments
        total = sum(Fraction(s.duration).limit_denominator(100000) for s in media.segments)
        assert abs(total - Fraction(result.duration_seconds).limit_denominator(100000)) < Fraction(1, 1000)
        # CODECS from the bitstream: the rung's avc1 string must agree with ffprobe's profile and level
        probe = oracles.codec_string_from_ffprobe(concat_track(out / rendition.name, tmp_path / "rung.mp4"))
        codecs = info.codecs.split(",")
        assert codecs[0] == _avc1(probe), f"{codecs[0]} vs ffprobe {probe}"
    if result.audio:
        assert any(m.type == "AUDIO" for m in master.media)
        assert "mp4a.40.2" in master.playlists[0].stream_info.codecs
    mpd = MPEGDASHParser.parse(str(out / "manifest.mpd"))
    sets = mpd.periods[0].adaptation_sets
    video_set = next(a for a in sets if a.content_type == "video")
    for representation in video_set.representations:
        template = representation.segment_templates[0]
        count = sum((s.r or 0) + 1 for s in template.segment_timelines[0].Ss)
        assert (out / template.initialization).exists()
        for number in range(template.start_number, template.start_number + count):
            assert (out / template.media.replace("$Number%05d$", f"{number:05d}")).exists()
        hls_dir = representation.id
        assert template.media.startswith(f"{hls_dir}/"), "DASH must reference the same files as HLS"


def _avc1(probe: dict) -> str:
    profiles = {"High": 0x64, "Main": 0x4D, "Constrained Baseline": 0x42, "Baseline": 0x42}
    return f"avc1.{profiles[probe['profile']]:02x}00{int(probe['level']):02x}"


@pytest.mark.parametrize("name", VIDEO_CASES)
def test_independent_decoder_plays_master_cleanly_and_av_in_sync(name: str, transcoded) -> None:
    result, _ = transcoded(name)
    out = Path(result.out_dir)
    assert oracles.decode_errors(out / "master.m3u8") == ""
    static = out / "highest.mp4"
    assert oracles.count_frames(static) == result.frames
    with open(static, "rb") as handle:
        head = handle.read(64)
    assert b"moov" in head, "static MP4 must be faststart (moov before mdat)"
    if MATRIX[name].audio_channels:
        frame = 1 / Fraction(result.frame_rate)
        video = oracles.count_frames(static) * frame
        audio = oracles.decoded_audio_seconds(static)
        assert abs(video - audio) <= frame, f"A/V drift {float(video - audio):.4f}s"
        audio_info = oracles.audio_info(static)
        assert int(audio_info["channels"]) == (1 if MATRIX[name].audio_channels == 1 else 2)
        assert audio_info["codec_name"] == "aac" and audio_info.get("profile") == "LC"


def test_rotation_is_applied_like_ffmpeg_autorotate(transcoded, tmp_path: Path) -> None:
    for name in ("rotation_90", "rotation_270"):
        result, source = transcoded(name)
        top = result.renditions[0]
        assert (top.width, top.height) == (180, 320)
        stream = concat_track(Path(result.out_dir) / top.name, tmp_path / f"{name}.mp4")
        assert oracles.display_rotation(stream) in (None, 0)
        # ffmpeg applies the source's display matrix itself: a wrong turn direction would score ~10 dB
        assert oracles.psnr(stream, source) > 30, name


def test_audio_only_input_gives_audio_only_asset(media_dir: Path, tmp_path: Path) -> None:
    source = make_media(MATRIX["audio_only"], media_dir)
    result = transcode_file(str(source), tmp_path / "out", TranscodeOptions(segment_seconds=SEGMENT_SECONDS))
    out = Path(result.out_dir)
    assert result.renditions == () and result.audio is not None
    master = m3u8.load(str(out / "master.m3u8"))
    assert [p.stream_info.codecs for p in master.playlists] == ["mp4a.40.2"]
    assert oracles.decode_errors(out / "master.m3u8") == ""
    assert (out / "audio.m4a").exists() and not (out / "highest.mp4").exists()
    assert abs(oracles.decoded_audio_seconds(out / "audio.m4a") - MATRIX["audio_only"].duration) < Fraction(1, 50)
