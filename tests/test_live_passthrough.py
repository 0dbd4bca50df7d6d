"""The live ladder's top rung passed through (``kinoray.live.passthrough``, ``LiveOptions.source_passthrough``).

Debian's ``ffmpeg`` makes the publisher's own H.264 + AAC file, then publishes it unchanged over RTMP (or a
paced pipe stands in for the network); ``ffmpeg``/``ffprobe`` judge: the top rung's elementary stream is the
source's byte for byte (the same MD5 through ``h264_mp4toannexb`` on both sides, the same packet sizes), every
rung's segments start with a keyframe at the same presentation time, every rung decodes with no error, the
master's CODECS is the source SPS's profile and level and its BANDWIDTH is at least the source's bitrate. A
source that is not H.264, whose keyframes are too far apart, or ``source_passthrough="off"`` is transcoded.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import m3u8
import pytest

from kinoray.live.cmaf import Sample
from kinoray.live.llhls import KeyframeGrid, PartTrack
from kinoray.live.passthrough import BitrateMeter, SegmentCuts, is_idr, length_size
from kinoray.live.pipe import TagPipe
from kinoray.live.transcode import LiveOptions, LiveResult, LiveTranscoder

FPS, SEGMENT = 25, 2.0
_PROFILES = {"Constrained Baseline": 66, "Baseline": 66, "Main": 77, "High": 100}


def _source(path: Path, *, seconds: int, gop: int = 2 * FPS, bframes: int = 0, codec: str = "libx264") -> Path:
    """The publisher's own output: testsrc2 640x360 + a sine, H.264 (or ``codec``) with an IDR every ``gop``
    frames and no scene-cut keyframes."""
    video = ["-c:v", codec, "-g", str(gop)]
    if codec == "libx264":
        video += ["-preset", "ultrafast", "-bf", str(bframes), "-x264-params", "scenecut=0", "-pix_fmt", "yuv420p"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds), *video,
                    "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(path)], check=True, timeout=120)
    return path


def _transcode(flv: Path, out: Path, **options: object) -> LiveResult:
    """The ladder of a recorded FLV handed over at once (the transcoder reads it as fast as it goes)."""
    pipe = TagPipe(max_bytes=1 << 30)
    pipe.write(flv.read_bytes()[13:])  # the pipe writes its own FLV header
    pipe.ended(None)
    settings: dict = {"segment_seconds": SEGMENT, "heights": (360, 240), "encoder": "libx264",
                      "preset": "ultrafast", "source_passthrough": "auto", **options}
    return LiveTranscoder(pipe, out, LiveOptions(**settings)).run()


def _run(*command: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done


def _annexb_md5(target: Path) -> str:
    """MD5 of the video elementary stream as ``ffmpeg -c copy -bsf:v h264_mp4toannexb -f h264`` writes it."""
    done = _run("ffmpeg", "-v", "error", "-i", str(target), "-map", "0:v", "-c", "copy", "-bsf:v",
                "h264_mp4toannexb", "-f", "h264", "-")
    return hashlib.md5(done.stdout).hexdigest()


def _video_packets(target: Path) -> list[dict]:
    done = _run("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size,pts_time,flags",
                "-of", "json", str(target))
    return json.loads(done.stdout)["packets"]


def _joined(directory: Path, scratch: Path) -> Path:
    """A rung's init and media segments, concatenated (an ordinary fragmented MP4)."""
    joined = scratch / f"{directory.name}.mp4"
    segments = sorted(directory.glob("seg_*.m4s"))
    joined.write_bytes((directory / "init.mp4").read_bytes() + b"".join(s.read_bytes() for s in segments))
    return joined


def _segment_starts(directory: Path, scratch: Path) -> list[tuple[float, bool]]:
    """``(pts, keyframe)`` of each media segment's first picture in presentation order, each segment probed on
    its own behind the init."""
    starts = []
    for segment in sorted(directory.glob("seg_*.m4s")):
        single = scratch / "single.mp4"
        single.write_bytes((directory / "init.mp4").read_bytes() + segment.read_bytes())
        packets = _video_packets(single)
        first = min(packets, key=lambda packet: float(packet["pts_time"]))
        starts.append((round(float(first["pts_time"]), 3), "K" in first["flags"]))
    return starts


def _decodes_cleanly(target: Path) -> None:
    done = _run("ffmpeg", "-v", "error", "-i", str(target), "-f", "null", "-")
    assert done.stderr == b"", done.stderr.decode(errors="replace")


def _check_master(out: Path, source: Path) -> None:
    """CODECS of the passed-through rung = the source SPS's profile and level; BANDWIDTH ≥ its bitrate."""
    master = m3u8.loads((out / "master.m3u8").read_text())
    top = master.playlists[0]
    assert top.uri == "360p/index.m3u8" and top.stream_info.resolution == (640, 360)
    stream = json.loads(_run("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "stream=profile,level:format=duration", "-of", "json", str(source)).stdout)
    avc = top.stream_info.codecs.split(",")[0]
    profile, level = _PROFILES[stream["streams"][0]["profile"]], int(stream["streams"][0]["level"])
    assert re.fullmatch(rf"avc1\.{profile:02x}[0-9a-f]{{2}}{level:02x}", avc), avc
    video_bits = 8 * sum(int(p["size"]) for p in _video_packets(source))
    average = video_bits / float(stream["format"]["duration"])
    assert average <= top.stream_info.bandwidth <= 4 * average + 128_000


# --- the pieces, no media -----------------------------------------------------------------------------------------


def test_segment_cuts_follow_the_source_gop() -> None:
    half_frame = Fraction(1, 50)
    every_other = SegmentCuts.for_gop(Fraction(2), Fraction(1), half_frame)  # 1 s GOP, 2 s segments
    assert [every_other.cut(Fraction(t)) for t in range(7)] == [True, False, True, False, True, False, True]
    longer = SegmentCuts.for_gop(Fraction(2), Fraction(3), half_frame)  # 3 s GOP: 3 s segments
    assert longer.segment == 3 and all(longer.cut(Fraction(t)) for t in (0, 3, 6, 9))
    # a millisecond early (FLV's rounding) is on the line; an extra IDR (a scene cut) does not shift the grid
    grid = SegmentCuts.for_gop(Fraction(2), Fraction(2), half_frame)
    assert [grid.cut(t) for t in (Fraction(0), Fraction(1999, 1000), Fraction(3), Fraction(4))] == \
        [True, True, False, True]


def test_idr_detection_and_the_bitrate_meter() -> None:
    assert length_size(bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0])) == 4
    with pytest.raises(ValueError):
        length_size(b"\x00\x00\x00\x01\x67")
    sei, idr, non_idr = b"\x06\x05\x01\x00", b"\x65\x88\x80", b"\x41\x9a\x00"
    unit = lambda nal: len(nal).to_bytes(4, "big") + nal  # noqa: E731
    assert is_idr(unit(sei) + unit(idr), 4) and not is_idr(unit(sei) + unit(non_idr), 4)
    assert not is_idr(b"\x00\x00\x00\x09\x65", 4)  # a length past the end
    meter = BitrateMeter(1000)
    meter.cut(Fraction(0))
    meter.add(500)
    assert meter.cut(Fraction(2)) and meter.peak == 2000  # 500 bytes in 2 s = 2000 bit/s
    meter.add(100)
    assert not meter.cut(Fraction(4)) and meter.peak == 2000


def test_keyframe_grid_cuts_parts_inside_segments_that_start_at_keyframes(tmp_path: Path) -> None:
    from kinoray.live.cmaf import init_segment
    from kinoray.media.packets import StreamParameters

    grid = KeyframeGrid(Fraction(1, 2), Fraction(1, 50))
    init = init_segment(StreamParameters(codec="aac", time_base=Fraction(1, 1000), extradata=b"\x11\x90",
                                         sample_rate=48_000, channels=2))
    track = PartTrack("t", tmp_path, init, grid, anchor=0.0, part_target=0.54, target_duration=2,
                      window_segments=10, max_sample_ticks=init.timescale, default_ticks=init.timescale // 25)
    # segments announced at 0 and 1.2 s (a source whose IDRs are 1.2 s apart), a sample every 40 ms: parts on
    # a 0.5 s grid from each segment's start (a sample up to 20 ms early is on the line)
    grid.segment_at(Fraction(0))
    grid.segment_at(Fraction(6, 5))
    for index in range(65):
        when = Fraction(index, 25)
        track.push(Sample(b"x", dts=round(when * init.timescale)), when)
    track.finish()
    assert [[round(part.duration, 2) for part in segment.parts] for segment in track.segments] == \
        [[0.48, 0.52, 0.2], [0.48, 0.52, 0.4]]
    assert [segment.parts[0].independent for segment in track.segments] == [True, True]


# --- the ladder -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_rtmp_published_h264_stream_with_b_frames_is_passed_through(tmp_path: Path) -> None:
    """8 s published in real time over RTMP, keyframes every 2 s, two B-frames: the plain HLS ladder."""
    from tests.test_live_rtmp import KEY, TranscodingIngest

    seconds = 8
    source = _source(tmp_path / "published.flv", seconds=seconds, bframes=2)
    out = tmp_path / "live"
    ingest = TranscodingIngest(out, LiveOptions(segment_seconds=SEGMENT, heights=(360, 240), encoder="libx264",
                                                preset="ultrafast", source_passthrough="auto"))
    try:
        done = subprocess.run(["ffmpeg", "-v", "error", "-re", "-i", str(source), "-c", "copy", "-f", "flv",
                               f"rtmp://127.0.0.1:{ingest.port}/live/{KEY}"], capture_output=True, text=True,
                              timeout=60 + seconds)
        assert done.returncode == 0, done.stderr
        transcoder = ingest.finished()
    finally:
        ingest.close()

    result = transcoder.result
    assert result.error is None and result.passthrough == "360p" and result.source_gop == 2
    assert result.encoder == "libx264" and [r.name for r in result.renditions] == ["360p", "240p"]
    assert result.frames_out == {"360p": seconds * FPS, "240p": seconds * FPS}
    source_packets = _video_packets(source)
    presented = [float(packet["pts_time"]) for packet in source_packets]
    assert presented != sorted(presented), "the source has B-frames (pictures out of presentation order)"

    top = out / "360p" / "index.m3u8"
    assert _annexb_md5(top) == _annexb_md5(source)
    assert [int(p["size"]) for p in _video_packets(top)] == [int(p["size"]) for p in source_packets]
    starts = {rung: _segment_starts(out / rung, tmp_path) for rung in ("360p", "240p")}
    assert starts["360p"] == starts["240p"] and len(starts["360p"]) == seconds / SEGMENT
    assert all(keyframe for _, keyframe in starts["360p"])
    for rung in ("360p", "240p", "audio"):
        text = (out / rung / "index.m3u8").read_text()
        assert text.rstrip().endswith("#EXT-X-ENDLIST")
        _decodes_cleanly(out / rung / "index.m3u8")
    assert int(_run("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
                    "stream=nb_read_frames", "-of", "csv=p=0", str(out / "240p" / "index.m3u8")).stdout.split()[0]) == \
        seconds * FPS
    _check_master(out, source)


@pytest.mark.slow
@pytest.mark.parametrize("bframes", [0, 2])
def test_low_latency_parts_of_a_passed_through_stream(tmp_path: Path, bframes: int) -> None:
    """LL-HLS: the top rung's samples are the source's (B-frames: composition offsets in kinoray's own ``trun``);
    each segment's first part alone starts with an IDR, at the same time in every rung, and the audio's segments
    follow the video's."""
    seconds = 6
    source = _source(tmp_path / "published.flv", seconds=seconds, bframes=bframes)
    out = tmp_path / "live"
    result = _transcode(source, out, part_seconds=0.5)
    assert result.error is None and result.passthrough == "360p" and result.segments == seconds / SEGMENT
    joined = {rung: _joined(out / rung, tmp_path) for rung in ("360p", "240p", "audio")}
    assert _annexb_md5(joined["360p"]) == _annexb_md5(source)
    starts = {rung: _segment_starts(out / rung, tmp_path) for rung in ("360p", "240p")}
    assert starts["360p"] == starts["240p"] and all(keyframe for _, keyframe in starts["360p"])
    for rung in ("360p", "240p", "audio"):
        playlist = m3u8.loads((out / rung / "index.m3u8").read_text())
        assert len(playlist.segments) == seconds / SEGMENT
        for segment in playlist.segments:
            if rung != "audio" and segment.parts:
                assert [part.independent for part in segment.parts] == \
                    ["YES"] + [None] * (len(segment.parts) - 1), (rung, segment.uri)
            assert all(part.duration <= playlist.part_inf.part_target for part in segment.parts)
        _decodes_cleanly(joined[rung])
    audio_first = float(_run("ffprobe", "-v", "error", "-show_entries", "packet=pts_time", "-read_intervals",
                             "%+#1", "-of", "csv=p=0", str(joined["audio"])).stdout.split()[0])
    assert abs(audio_first - starts["360p"][0][0]) < 0.025  # within an AAC frame of the first picture
    _check_master(out, source)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["not-h264", "long-gop", "off"])
def test_what_cannot_or_may_not_pass_through_is_transcoded(tmp_path: Path, case: str) -> None:
    seconds = 4
    if case == "not-h264":  # Sorenson H.263, FLV's own codec
        source = _source(tmp_path / "published.flv", seconds=seconds, codec="flv")
    elif case == "long-gop":  # IDRs 4 s apart: more than 1.5 segments of 2 s
        source = _source(tmp_path / "published.flv", seconds=seconds + 2, gop=4 * FPS)
    else:
        source = _source(tmp_path / "published.flv", seconds=seconds)
    out = tmp_path / "live"
    result = _transcode(source, out, source_passthrough="off" if case == "off" else "auto")
    assert result.error is None and result.passthrough is None and result.encoder == "libx264"
    frames = (seconds + 2 if case == "long-gop" else seconds) * FPS
    assert result.frames_in == frames and set(result.frames_out.values()) == {frames}
    starts = {rung: _segment_starts(out / rung, tmp_path) for rung in ("360p", "240p")}
    assert starts["360p"] == starts["240p"] and [t for t, _ in starts["360p"]][:2] == [0.0, SEGMENT]
    _decodes_cleanly(out / "360p" / "index.m3u8")
    if case != "not-h264":
        assert _annexb_md5(out / "360p" / "index.m3u8") != _annexb_md5(source)
