"""Slates (``kinoray.live.slate``): what viewers see while a publisher is away within the reconnect window.

Fast tier: the slate made from a solid-colour PNG decodes (PyAV, as FFmpeg's FLV demuxer reads it) to that
colour; a file that is not an image gives the default slate; the session timeline restamps a returning
publisher after the slate and never lets time go back; Mux's rule for which streams get a slate.

End to end (slow; reduced and low latency, a two-rung ladder): Debian's ffmpeg publishes 320x180 to the RTMP
ingest, stops; within seconds the live playlist lists segments that decode to the slate image on every rung (a solid colour served by a local HTTP server, fetched
through the SSRF policy with private addresses allowed); the publisher comes back and its picture returns; the
whole playlist decodes with Debian's ffmpeg without an error, and ``EXT-X-PROGRAM-DATE-TIME`` runs on without a
gap across the slate.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import m3u8
import numpy as np
import pytest
import requests
import sqlalchemy as sa

from kinoray.control.live import uses_slate
from kinoray.live.slate import DEFAULT_BACKGROUND, SessionTimeline, build_slate, decode_slate_image
from kinoray.media.flv import AUDIO, SCRIPT, VIDEO, FlvTag, flv_header
from kinoray.store.models import Event

SLATE_RGB = (40, 200, 60)


def _png(rgb: tuple[int, int, int], width: int = 160, height: int = 90) -> bytes:
    picture = np.empty((height, width, 3), dtype=np.uint8)
    picture[:] = rgb
    context = av.CodecContext.create("png", "w")
    context.width, context.height, context.pix_fmt = width, height, "rgb24"
    [packet] = context.encode(av.VideoFrame.from_ndarray(picture, format="rgb24"))
    return bytes(packet)


def _mean_rgb(frame: av.VideoFrame) -> np.ndarray:
    return np.asarray(frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0))


def _decode_flv(tags: list[FlvTag]) -> list[av.VideoFrame]:
    data = flv_header() + b"".join(tag.to_bytes() for tag in tags)
    with av.open(io.BytesIO(data), format="flv") as container:
        return list(container.decode(video=0))


_AAC_48K_STEREO = FlvTag(AUDIO, 0, bytes([0xAF, 0x00, 0x11, 0x90]))


# --- fast tier ------------------------------------------------------------------------------------------------


def test_the_slate_shows_the_image_with_silence() -> None:
    media = build_slate(_png(SLATE_RGB), width=320, height=180, frame_rate=Fraction(25),
                        audio_header=_AAC_48K_STEREO)
    assert media.video[0].is_keyframe and len(media.video) == 25 and media.audio_frame == Fraction(1024, 48000)
    assert media.headers[-1] == _AAC_48K_STEREO  # the publisher's own audio configuration
    timeline = SessionTimeline(clock=1000.0, slate_media=media)
    assert timeline.publisher_left(1001.0)
    tags = timeline.slate_tags(1003.0)
    frames = _decode_flv(tags)
    assert len(frames) == 51 and (frames[0].width, frames[0].height) == (320, 180)  # 2 s at 25 fps, both ends
    assert np.abs(_mean_rgb(frames[30]) - SLATE_RGB).max() < 6
    audio = [tag for tag in tags if tag.kind == AUDIO and not tag.is_header]
    assert abs(len(audio) - 2 * 48000 / 1024) <= 2
    with av.open(io.BytesIO(flv_header() + b"".join(t.to_bytes() for t in tags)), format="flv") as container:
        sound = np.concatenate([frame.to_ndarray().ravel() for frame in container.decode(audio=0)])
    assert np.abs(sound).max() < 1e-3  # silence


def test_a_file_that_is_not_an_image_gives_the_default_slate() -> None:
    with pytest.raises(Exception, match="slate"):
        decode_slate_image(b"<html>not an image</html>", 320, 180)
    media = build_slate(b"<html>not an image</html>", width=320, height=180, frame_rate=Fraction(30))
    frame = _decode_flv([*media.headers, *media.video])[0]
    corner = frame.to_ndarray(format="rgb24")[:20, :20].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - DEFAULT_BACKGROUND).max() < 6
    assert not media.audio  # no audio in the stream: none in the slate


def test_a_wide_image_is_letterboxed() -> None:
    picture = decode_slate_image(_png((250, 250, 250), 400, 100), 320, 180)
    assert picture.shape == (180, 320, 3)
    assert picture[0, 160].max() == 0 and picture[90, 160].min() > 240  # bars above, the image in the middle


def test_the_timeline_puts_the_returning_publisher_after_the_slate() -> None:
    media = build_slate(None, width=64, height=36, frame_rate=Fraction(25), audio_header=_AAC_48K_STEREO)
    avc = FlvTag(VIDEO, 0, bytes([0x17, 0, 0, 0, 0]) + b"first-config")
    keyframe, delta = FlvTag(VIDEO, 0, bytes([0x17, 1, 0, 0, 0, 1])), FlvTag(VIDEO, 40, bytes([0x27, 1, 0, 0, 0, 2]))
    timeline = SessionTimeline(slate_media=media)
    first = [timeline.publisher(tag, 100.0 + tag.timestamp / 1000) for tag in
             (FlvTag(SCRIPT, 0, b"\x02meta"), avc, _AAC_48K_STEREO, keyframe, delta)]
    assert [len(out) for out in first] == [1, 1, 1, 1, 1]  # the first connection goes through unchanged
    assert timeline.clock == pytest.approx(100.0)
    assert timeline.publisher_left(101.0) and timeline.slating
    slate = timeline.slate_tags(103.0)
    assert slate[0].kind == VIDEO and slate[0].is_header and slate[0].body != avc.body  # the slate's config
    assert not any(tag.kind == AUDIO and tag.is_header for tag in slate)  # the same audio config: not re-sent
    assert slate[-1].timestamp <= 3000 and slate[1].timestamp >= 1000
    timeline.reconnected()
    # the new connection's stamps start at 0 again; nothing of it goes before its keyframe, the slate goes on
    assert timeline.publisher(FlvTag(SCRIPT, 0, b"\x02meta"), 103.5) == []
    assert timeline.publisher(avc, 103.5) == []
    assert timeline.publisher(FlvTag(AUDIO, 0, bytes([0xAF, 1, 9])), 103.5) == []
    assert timeline.slating and timeline.slate_tags(103.5)
    back = timeline.publisher(keyframe, 104.0)
    assert not timeline.slating and timeline.slate_tags(105.0) == []
    assert [tag.is_header for tag in back] == [True, False]  # its configuration again, then the keyframe
    assert back[1].timestamp == 4000 and back[0].timestamp == 4000
    later = timeline.publisher(FlvTag(VIDEO, 40, delta.body), 104.04)
    assert later[0].timestamp == 4040
    [sound] = timeline.publisher(FlvTag(AUDIO, 0, bytes([0xAF, 1, 9])), 104.05)
    assert sound.timestamp == 4000
    # a tag that would not follow what was sent is dropped, not sent back in time
    assert timeline.publisher(FlvTag(AUDIO, 0, bytes([0xAF, 1, 9])), 104.06) == []


def test_a_silent_publisher_resumes_after_the_slate_with_its_configuration() -> None:
    """A publisher that only went silent sends no codec configuration again: the timeline sends its last one
    (the slate's replaced it in the decoder) before its next keyframe."""
    media = build_slate(None, width=64, height=36, frame_rate=Fraction(25))
    avc = FlvTag(VIDEO, 0, bytes([0x17, 0, 0, 0, 0]) + b"publisher-config")
    timeline = SessionTimeline(slate_media=media)
    for tag in (avc, FlvTag(VIDEO, 0, bytes([0x17, 1, 0, 0, 0, 1])), FlvTag(VIDEO, 40, bytes([0x27, 1, 0, 0, 0]))):
        assert timeline.publisher(tag, 100.0 + tag.timestamp / 1000)
    assert timeline.publisher_left(102.0) and timeline.slate_tags(103.0)
    assert timeline.publisher_left(103.0)  # already on the slate: it goes on
    timeline.reconnected()
    assert timeline.publisher(FlvTag(VIDEO, 80, bytes([0x27, 1, 0, 0, 0])), 104.0) == []  # mid-GOP: not yet
    back = timeline.publisher(FlvTag(VIDEO, 1000, bytes([0x17, 1, 0, 0, 0, 9])), 104.1)
    assert [tag.body for tag in back] == [avc.body, bytes([0x17, 1, 0, 0, 0, 9])] and not timeline.slating


@pytest.mark.parametrize(("mode", "window", "standard_slate", "audio_only", "expected"), [
    ("standard", 60, False, False, False), ("standard", 60, True, False, True), ("reduced", 30, False, False, True),
    ("low", 30, False, False, True), ("reduced", 0, False, False, False), ("low", 30, False, True, False)])
def test_mux_rule_for_slates(mode: str, window: float, standard_slate: bool, audio_only: bool,
                             expected: bool) -> None:
    assert uses_slate(mode, window, standard_slate, audio_only) is expected


# --- end to end -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local HTTP server with the slate image (the SSRF policy lets the test's API reach it)."""
    from tests.js_clients import PageServer

    image = tmp_path_factory.mktemp("slate") / "slate.png"
    image.write_bytes(_png(SLATE_RGB, 320, 180))
    server = PageServer({"/slate.png": image})
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/slate.png"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.live_runtime import live_api

    with live_api(api_backend, tmp_path_factory.mktemp("live-slate"),
                  live={"segment_seconds": {"reduced": 1.0, "low": 1.0}, "heights": [180, 120]},
                  api={"allow_file_inputs": True, "allow_private_inputs": True}) as server:
        yield server


@pytest.fixture(scope="module")
def ingest(api) -> Iterator[Any]:
    from tests.live_runtime import live_ingest

    with live_ingest(api) as service:
        yield service


def _segment_colour(base: str, playlist: m3u8.M3U8, segment: m3u8.Segment) -> np.ndarray:
    """Mean RGB of a frame in the middle of ``segment`` (its init segment + its bytes, decoded by PyAV)."""
    init = requests.get(f"{base}/{_init_uri(segment)}", timeout=10).content
    media = requests.get(f"{base}/{segment.uri}", timeout=10).content
    with av.open(io.BytesIO(init + media), "r") as container:
        frames = list(container.decode(video=0))
    return _mean_rgb(frames[len(frames) // 2])


def _init_uri(segment: m3u8.Segment) -> str:
    return segment.init_section.uri if segment.init_section is not None else "init.mp4"


def _is_slate(colour: np.ndarray) -> bool:
    return bool(np.abs(colour - SLATE_RGB).max() < 12)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reduced", "low"])
def test_viewers_see_the_slate_while_the_publisher_is_away(api, ingest, slate_server, mode: str) -> None:
    from tests.test_live_rtmp import publisher_command

    created = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "latency_mode": mode, "reconnect_window": 60,
        "reconnect_slate_url": slate_server}, timeout=30)
    assert created.status_code == 201, created.text
    stream = created.json()["data"]
    live_url = f"{api.edge_url}/{stream['playback_ids'][0]['id']}.m3u8"

    def publish(seconds: int) -> None:
        done = subprocess.run(publisher_command(ingest.port, stream["stream_key"], seconds=seconds, app="app",
                                                size="320x180"), capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr

    publish(5)
    left = time.time()
    deadline = time.monotonic() + 60
    while (master := requests.get(live_url, timeout=10)).status_code != 200:
        assert time.monotonic() < deadline, master.text
        time.sleep(0.2)
    rung = next(line for line in master.text.splitlines() if line.endswith("index.m3u8") and "audio" not in line)
    rung_url = f"{api.edge_url}/{rung}"
    base = rung_url.rsplit("/", 1)[0]

    def playlist() -> m3u8.M3U8:
        return m3u8.loads(requests.get(rung_url, timeout=10).text)

    # the slate: segments after the publisher left, decoding to the slate's colour, within a few seconds
    seen: set[str] = set()
    first_slate = None
    while first_slate is None:
        assert time.monotonic() < deadline, "no slate segment"
        current = playlist()
        assert not current.is_endlist
        for segment in current.segments:
            if segment.uri is not None and segment.uri not in seen and _is_slate(_segment_colour(base, current, segment)):
                first_slate = time.time()
            seen.add(segment.uri)
        time.sleep(0.3)
    print(f"\n{mode}: first slate segment listed {first_slate - left:.1f} s after the publisher left")  # noqa: T201
    assert first_slate - left < 12
    assert api.client.get(f"{api.url}/video/v1/live-streams/{stream['id']}", timeout=10) \
        .json()["data"]["kinoray_session"] == "disconnected"
    time.sleep(2)
    publish(4)  # back within the window: its picture returns
    assert api.client.put(f"{api.url}/video/v1/live-streams/{stream['id']}/complete", timeout=10).status_code == 200
    # the session is over: the edge stops serving it; the output's playlists stay in the store, ended
    output = Path(api.settings.storage_url, "live", stream["id"])
    rungs = [line.split("/")[0] for line in (output / "master.m3u8").read_text().splitlines()
             if line.endswith("index.m3u8") and not line.startswith("#")]
    assert len(rungs) == 2, rungs  # every rung of the ladder shows the slate
    for name in rungs:
        _check_rung(output / name / "index.m3u8", left)
    # the whole live output, audio included, decodes with Debian's ffmpeg without an error
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(output / "master.m3u8"),
                              "-map", "0", "-f", "null", "-"], capture_output=True, text=True, timeout=180)
    assert decoded.returncode == 0 and not decoded.stderr.strip(), decoded.stderr[-2000:]
    with api.platform.db.reader() as session:
        lifecycle = [name.removeprefix("video.live_stream.") for name in session.scalars(
            sa.select(Event.type).where(Event.object_id == stream["id"]).order_by(Event.created_at, Event.id))]
    assert lifecycle.count("disconnected") == 2 and lifecycle.count("connected") == 2, lifecycle


def _check_rung(local: Path, left: float) -> None:
    """A rung's ended playlist: media, then the slate, then media again, on one dated timeline."""
    deadline = time.monotonic() + 60
    while not (final := m3u8.loads(local.read_text())).is_endlist:
        assert time.monotonic() < deadline, local.read_text()[-600:]
        time.sleep(0.5)

    def colour(segment: m3u8.Segment) -> np.ndarray:
        data = (local.parent / _init_uri(segment)).read_bytes() + (local.parent / segment.uri).read_bytes()
        with av.open(io.BytesIO(data), "r") as container:
            frames = list(container.decode(video=0))
        return _mean_rgb(frames[len(frames) // 2])

    final.segments = m3u8.SegmentList(segment for segment in final.segments if segment.uri is not None)
    kinds = ["slate" if _is_slate(colour(segment)) else "media" for segment in final.segments]
    runs = [kind for index, kind in enumerate(kinds) if index == 0 or kinds[index - 1] != kind]
    assert runs[:3] == ["media", "slate", "media"], (local.parent.name, kinds)
    assert "#EXT-X-DISCONTINUITY" not in local.read_text()  # one encoder, one timeline: nothing to reset
    # one timeline: every segment's date follows the one before by its duration
    dates = [segment.program_date_time or segment.current_program_date_time for segment in final.segments]
    for index, (before, after) in enumerate(zip(dates, dates[1:], strict=False)):
        assert isinstance(before, datetime) and isinstance(after, datetime)
        duration = final.segments[index].duration
        assert abs((after - before).total_seconds() - duration) < 0.1, (index, before, after, duration)
    slate_start = dates[kinds.index("slate")].timestamp()
    assert abs(slate_start - left) < 5  # dated on the wall clock: when the slate was shown


@pytest.mark.slow
def test_a_publisher_that_goes_silent_gets_the_slate(api, ingest, slate_server) -> None:
    """Mux's "brief interruptions in the live stream media": ffmpeg stopped (SIGSTOP) for 4 s keeps its
    connection, the stream shows the slate meanwhile, and the publisher's picture comes back when it sends
    again — one connection, no disconnect."""
    from tests.test_live_rtmp import publisher_command

    stream = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "latency_mode": "reduced", "reconnect_window": 30,
        "reconnect_slate_url": slate_server}, timeout=30).json()["data"]
    publisher = subprocess.Popen(publisher_command(ingest.port, stream["stream_key"], seconds=12, app="app",
                                                   size="320x180"), stderr=subprocess.PIPE, text=True)
    output = Path(api.settings.storage_url, "live", stream["id"])
    try:
        deadline = time.monotonic() + 60
        while len(re.findall(r"seg_\d+\.m4s", _read(output / "180p" / "index.m3u8"))) < 3:
            assert publisher.poll() is None and time.monotonic() < deadline, "the stream never started"
            time.sleep(0.2)
        silent = time.time()
        publisher.send_signal(signal.SIGSTOP)
        time.sleep(4)
        publisher.send_signal(signal.SIGCONT)
        assert publisher.wait(60) == 0, publisher.stderr.read() if publisher.stderr else ""
    finally:
        if publisher.poll() is None:
            publisher.send_signal(signal.SIGCONT)
            publisher.kill()
    assert api.client.put(f"{api.url}/video/v1/live-streams/{stream['id']}/complete", timeout=10).status_code == 200
    _check_rung(output / "180p" / "index.m3u8", silent)
    with api.platform.db.reader() as session:
        lifecycle = [name.removeprefix("video.live_stream.") for name in session.scalars(
            sa.select(Event.type).where(Event.object_id == stream["id"]).order_by(Event.created_at, Event.id))]
    assert lifecycle.count("connected") == 1 and lifecycle.count("disconnected") == 1, lifecycle  # at the end


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
