"""Clipping in the chunk plan and the audio path, without servers: which source frames a clip keeps, where its
audio starts, and the refusals (the API-level clip tests are in tests/test_clips.py)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from kinoray.errors import InvalidMediaError
from kinoray.media.keyframes import index_keyframes
from kinoray.media.pipeline import TranscodeOptions, transcode_file
from kinoray.media.plan import plan_chunks
from kinoray.media.probe import probe
from tests.media import MediaSpec, make_media

SOURCE = MediaSpec(name="clip_plan", duration_s=Fraction(6))  # 320x180, 30 fps, keyframe every 2 s
AUDIO_ONLY = MediaSpec(name="clip_plan_audio", video_codec=None, duration_s=Fraction(3))


def _plan(path: Path, **clip: Fraction | None):
    info = probe(str(path))
    assert info.video is not None
    return plan_chunks(info, index_keyframes(str(path), info.video.index), segment_seconds=2, chunk_seconds=2,
                       **clip)


def test_a_clip_keeps_the_frames_shown_inside_its_range(media_dir: Path) -> None:
    path = make_media(SOURCE, media_dir)
    whole = _plan(path)
    clip = _plan(path, clip_start=Fraction(3, 2), clip_end=Fraction(17, 4))
    # frames at n/30 s inside [1.5, 4.25): 45 .. 127
    assert (clip.first_slot, clip.frame_count) == (45, 83)
    assert clip.duration_seconds == Fraction(83, 30) and clip.origin_seconds == whole.origin_seconds + Fraction(3, 2)
    assert sum(chunk.frame_count for chunk in clip.chunks) == 83 and clip.segment_count == 2
    source_pts = sorted(p for p in index_keyframes(str(path), 0).presentation_pts)
    assert clip.chunks[0].first_source_pts == source_pts[45] and clip.chunks[-1].last_source_pts == source_pts[127]
    assert clip.slot_of(source_pts[45]) == 0 and clip.slot_of(source_pts[44]) == -1
    assert clip.chunks[0].decode_from_pts <= source_pts[45]  # from the keyframe before it: pre-roll
    # an end past the end is the end
    assert _plan(path, clip_start=Fraction(5), clip_end=Fraction(60)).frame_count == 30


@pytest.mark.parametrize(("start", "end"), [(Fraction(6), None), (Fraction(599, 100), Fraction(7))])
def test_a_clip_without_frames_is_refused(media_dir: Path, start: Fraction, end: Fraction | None) -> None:
    with pytest.raises(InvalidMediaError, match="holds no frame"):
        _plan(make_media(SOURCE, media_dir), clip_start=start, clip_end=end)


def test_an_audio_only_clip_keeps_its_range(media_dir: Path, tmp_path: Path) -> None:
    path = make_media(AUDIO_ONLY, media_dir)
    result = transcode_file(str(path), tmp_path / "out", TranscodeOptions(segment_seconds=2, clip_start=0.5,
                                                                         clip_end=2.0))
    assert result.duration_seconds == pytest.approx(1.5)
    # Debian's ffprobe on the packaged audio: 1.5 s of samples (AAC frames of 1024)
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=duration",
                          "-of", "csv=p=0", str(tmp_path / "out" / "audio" / "index.m3u8")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert abs(sum(int(value) for value in out.split() if value.strip(",").isdigit()) / 48000 - 1.5) < 1024 / 48000
    with pytest.raises(InvalidMediaError, match="holds no audio"):
        transcode_file(str(path), tmp_path / "late", TranscodeOptions(clip_start=5.0))
