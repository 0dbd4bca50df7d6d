"""The live ladder (``kinoray.live.transcode``): Debian's ``ffmpeg`` publishes over RTMP to the ingest server,
the transcoder writes HLS while the stream runs, and ``ffprobe`` judges the output: every published frame in
every rung, keyframes at the same times in every rung (segments aligned), a segment grid of the asked length,
``EXT-X-PROGRAM-DATE-TIME`` on each segment — the publisher's clock at the segment's first frame, read from the
clock burned into that frame (:mod:`tests.live_clock`) — the audio, and playlists that were live before the end.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import time
from pathlib import Path

import av
import m3u8
import pytest

from kinoray.live.transcode import LiveOptions
from tests.live_clock import clock_publisher_command, read_clock, unwrap
from tests.test_live_rtmp import KEY, TranscodingIngest

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

SECONDS, FPS, SEGMENT = 8, 25, 2.0


def _probe(url: Path, *entries: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", *entries, "-of", "json", str(url)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_published_stream_becomes_a_live_aligned_ladder(tmp_path: Path) -> None:
    out = tmp_path / "live"
    # the transcoder gets going 1.5 s after the publisher (an actor starting, a ladder's encoders opening): the
    # pipe holds the stream meanwhile, and the dates must not move with that (FFmpeg's own would)
    ingest = TranscodingIngest(out, LiveOptions(segment_seconds=SEGMENT, heights=(360, 240), encoder="libx264",
                                                preset="ultrafast"), start_after=1.5)
    try:
        # the publisher's own keyframes every 3 s: the ladder's IDRs every 2 s come from kinoray, not the source
        publisher = subprocess.Popen(clock_publisher_command(ingest.port, KEY, seconds=SECONDS, app="live",
                                                             size="640x360", fps=FPS, gop=FPS * 3),
                                     stderr=subprocess.PIPE, text=True)
        # live: the rung's playlist lists segments while the publisher is still sending
        deadline = time.monotonic() + 30
        playlist = out / "360p" / "index.m3u8"
        while not (playlist.exists() and "#EXTINF" in playlist.read_text()):
            assert publisher.poll() is None, "the publisher ended before any segment was listed"
            assert time.monotonic() < deadline, "no segment listed while live"
            time.sleep(0.1)
        assert "#EXT-X-ENDLIST" not in playlist.read_text() and (out / "master.m3u8").exists()
        assert publisher.wait(60) == 0, publisher.stderr.read() if publisher.stderr else ""
        transcoder = ingest.finished()
    finally:
        ingest.close()

    result = transcoder.result
    assert result.error is None and result.encoder == "libx264"
    assert [r.name for r in result.renditions] == ["360p", "240p"]
    assert result.frames_in == SECONDS * FPS and set(result.frames_out.values()) == {SECONDS * FPS}

    master = (out / "master.m3u8").read_text()
    assert master.count("#EXT-X-STREAM-INF") == 2 and 'CODECS="avc1.' in master and "mp4a.40.2" in master
    keyframes = {}
    for rung in ("360p", "240p"):
        text = (out / rung / "index.m3u8").read_text()
        assert text.rstrip().endswith("#EXT-X-ENDLIST")
        durations = [float(value) for value in re.findall(r"#EXTINF:([0-9.]+)", text)]
        assert len(durations) == SECONDS / SEGMENT and all(abs(d - SEGMENT) < 0.05 for d in durations)
        assert text.count("#EXT-X-PROGRAM-DATE-TIME") == len(durations)
        info = _probe(out / rung / "index.m3u8", "-count_frames", "-show_entries",
                      "stream=width,height,nb_read_frames")
        [stream] = info["streams"]
        assert int(stream["nb_read_frames"]) == SECONDS * FPS
        packets = _probe(out / rung / "index.m3u8", "-select_streams", "v", "-show_entries", "packet=pts_time,flags")
        keyframes[rung] = [round(float(p["pts_time"]), 3) for p in packets["packets"] if "K" in p["flags"]]
    assert keyframes["360p"] == keyframes["240p"]
    steps = [b - a for a, b in zip(keyframes["360p"], keyframes["360p"][1:], strict=False)]
    assert len(keyframes["360p"]) == SECONDS / SEGMENT and all(abs(step - SEGMENT) < 0.05 for step in steps)
    audio = _probe(out / "audio" / "index.m3u8", "-show_entries", "stream=codec_name:format=duration")
    assert audio["streams"][0]["codec_name"] == "aac"
    assert abs(float(audio["format"]["duration"]) - SECONDS) < 0.3
    dates = _dates_against_the_burned_in_clock(out / "360p")
    # the audio's segments are dated on the same clock: they follow the video's segment grid (give or take an AAC
    # frame and the FLV's millisecond stamps)
    audio_dates = [segment.program_date_time.timestamp() for segment in
                   m3u8.loads((out / "audio" / "index.m3u8").read_text()).segments]
    offsets = [(when - dates[0]) - round((when - dates[0]) / SEGMENT) * SEGMENT for when in audio_dates]
    assert len(audio_dates) >= SECONDS / SEGMENT - 1 and max(abs(offset) for offset in offsets) < 0.1, offsets


def _dates_against_the_burned_in_clock(rung: Path) -> list[float]:
    """Each segment's ``EXT-X-PROGRAM-DATE-TIME`` against the publisher's clock burned into its first frame
    (decoded with the init its ``EXT-X-MAP`` names). The dates, in Unix seconds."""
    playlist = m3u8.loads((rung / "index.m3u8").read_text())
    dates, errors = [], []
    for segment in playlist.segments:
        assert segment.program_date_time is not None and segment.init_section is not None
        dated = segment.program_date_time.timestamp()
        data = (rung / segment.init_section.uri).read_bytes() + (rung / segment.uri).read_bytes()
        with av.open(io.BytesIO(data)) as container:
            first = next(container.decode(video=0))
            low_bits = read_clock(first.to_ndarray(format="gray"))
        assert low_bits is not None, segment.uri
        captured = unwrap(low_bits, dated * 1000 + 5000) / 1000
        errors.append(dated - captured)
        dates.append(dated)
    log.info("EXT-X-PROGRAM-DATE-TIME less the burned-in clock of each segment's first frame, s: %s",
             [round(error, 3) for error in errors])
    # every segment is dated by its own first frame (the spread: a date from the muxer's start plus durations, or
    # from the moment the transcoder got going, shifts with the ladder's start-up); all of them by the publisher's
    # clock as the pipe estimates it — its frames' arrival less their FLV timestamps, later than the capture by the
    # publisher's own output buffering (~0.35 s for Debian's ffmpeg over RTMP here), never earlier
    # (after the first: Debian's ffmpeg draws its first frame before it connects, a stall of 0.1–0.5 s on a busy
    # machine that its FLV timestamps do not show)
    assert len(errors) >= SECONDS / SEGMENT - 1 and max(errors[1:]) - min(errors[1:]) < 0.2, errors
    assert -0.05 < min(errors) and max(errors[1:]) < 0.6, errors
    return dates
