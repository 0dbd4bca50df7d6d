"""Bad input: a typed error with a reason, never a crash or a hang, nothing half-published, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinoray.errors import InvalidMediaError, MediaLimitError
from kinoray.media import TranscodeOptions, probe, transcode_file
from kinoray.settings import InputLimits
from tests.media import MATRIX, make_bad_media, make_media

REJECTED = {
    "truncated": "not a readable media file",
    "truncated_faststart": "truncated",
    "truncated_ts": "truncated",
    "corrupt": "corrupt",
    "zero": "empty",
    "text": "not a readable media file",
    "garbage": "not a readable media file",
    "absurd_dimensions": "100000x2000",
    "invalid_dimensions": "not a readable media file",
    "no_video_frames": "no decodable frame",
    "no_video_frames_mp4": "no decodable frame",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(REJECTED))
def test_rejected_with_reason_and_nothing_published(kind: str, media_dir: Path, tmp_path: Path) -> None:
    source = make_bad_media(kind, media_dir)
    out = tmp_path / "asset"
    with pytest.raises(InvalidMediaError, match=REJECTED[kind]):
        transcode_file(str(source), out, TranscodeOptions(ladder=(180,)))
    assert list(tmp_path.iterdir()) == [], "no output, staging or work directory may remain"


def test_failed_retranscode_keeps_previous_output(media_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "asset"
    good = make_media(MATRIX["h264_30fps"], media_dir)
    transcode_file(str(good), out, TranscodeOptions(ladder=(180,)))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(InvalidMediaError):
        transcode_file(str(make_bad_media("corrupt", media_dir)), out, TranscodeOptions(ladder=(180,)))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asset"]


def test_limits_are_checked_before_decoding(media_dir: Path) -> None:
    source = str(make_media(MATRIX["h264_30fps"], media_dir))
    with pytest.raises(MediaLimitError, match="pixels"):
        probe(source, InputLimits(max_pixels=320 * 100))
    with pytest.raises(MediaLimitError, match="duration"):
        probe(source, InputLimits(max_duration_seconds=1))
    with pytest.raises(MediaLimitError, match="bytes"):
        probe(source, InputLimits(max_file_bytes=1000))
    with pytest.raises(MediaLimitError, match="streams"):
        probe(source, InputLimits(max_streams=1))


def test_missing_file_is_invalid_media(tmp_path: Path) -> None:
    with pytest.raises(InvalidMediaError, match="cannot read input"):
        probe(str(tmp_path / "nope.mp4"))


def test_corrupt_audio_is_reported_not_concealed(media_dir: Path, tmp_path: Path) -> None:
    from kinoray.media import encode_audio

    source = make_bad_media("corrupt", media_dir)
    info = probe(str(source))
    assert info.audio is not None
    with pytest.raises(InvalidMediaError, match=r"audio data is corrupt near \d+\.\d+s"):
        encode_audio(str(source), info.audio, tmp_path / "audio", origin_seconds=None, duration_seconds=None)
    assert list(tmp_path.iterdir()) == [], "a failed audio encode leaves no packet store behind"


def test_nvdec_requested_without_a_device_is_a_typed_error(media_dir: Path, tmp_path: Path) -> None:
    from kinoray.encoders.nvenc import nvdec_hwaccel
    from kinoray.errors import EncoderUnavailableError

    if nvdec_hwaccel() is not None:
        pytest.skip("this machine has a usable NVDEC device")
    source = make_media(MATRIX["h264_30fps"], media_dir)
    with pytest.raises(EncoderUnavailableError, match="NVDEC"):
        transcode_file(str(source), tmp_path / "out", TranscodeOptions(ladder=(180,), decoder="nvdec"))
    assert list(tmp_path.iterdir()) == []
