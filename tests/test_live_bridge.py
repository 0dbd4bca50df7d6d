"""The ingest layer's pieces without a browser: the frames-to-FLV bridge a WHIP publish goes through
(``kinoray.live.bridge``), checked by Debian's ``ffprobe``; the WHIP/WHEP server's HTTP answers with aiortc as
the publishing and viewing peer; the one interface RTMP and WHIP share; and the fact that PyAV's FFmpeg has no
SRT (docs/ARCHITECTURE.md says so: this test fails when that changes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from kinoray.live.bridge import FlvBridge, avc_configuration
from kinoray.live.flv_frames import FlvDecoder
from kinoray.live.ingest import IngestServer, protocols_available
from kinoray.live.rtmp import PublishRequest, RtmpServer
from kinoray.live.whip import WhipServer
from kinoray.media.flv import AUDIO, SCRIPT, VIDEO, FlvTag, flv_header, read_header, read_tags

FPS = 25


def _picture(index: int, width: int, height: int) -> av.VideoFrame:
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, : (index * 7) % width] = (200, 40, 90)  # something that moves
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def test_bridge_makes_the_flv_an_rtmp_publisher_would_send(tmp_path: Path) -> None:
    """Frames with WebRTC's clocks (RTP timestamps from random origins, 90 kHz video, 48 kHz Opus-decoded s16
    audio) and a resolution drop mid-stream: the FLV starts with metadata and both sequence headers, every
    picture is in it at the first frame's size, its timestamps follow the frames, and ffprobe decodes it all."""
    now = [100.0]
    bridge = FlvBridge(has_audio=True, gop_seconds=1.0, clock=lambda: now[0])
    tags: list[FlvTag] = []
    video_origin, audio_origin = 3_000_000_000, 1_234_567
    for index in range(3 * FPS):
        now[0] = 100.0 + index / FPS
        width, height = (320, 240) if index < 2 * FPS else (160, 120)  # the browser adapts its resolution
        frame = _picture(index, width, height)
        frame.pts, frame.time_base = video_origin + index * 90_000 // FPS, Fraction(1, 90_000)
        tags += bridge.video(frame)
        assert frame.pts == video_origin + index * 90_000 // FPS  # a shared frame is never stamped
        for part in range(2):  # 40 ms of audio per picture, in 20 ms frames
            audio = av.AudioFrame.from_ndarray(np.zeros((1, 960 * 2), dtype=np.int16), format="s16",
                                               layout="stereo")
            audio.sample_rate, audio.pts = 48_000, audio_origin + (index * 2 + part) * 960
            tags += bridge.audio(audio)
    tags += bridge.close()

    assert all(0 <= tag.timestamp < 4000 for tag in tags)  # the AAC encoder's priming is not before 0
    assert [tag.kind for tag in tags[:2]] == [SCRIPT, VIDEO] and tags[0].is_header and tags[1].is_header
    assert any(tag.kind == AUDIO and tag.is_header for tag in tags[:4])
    pictures = [tag for tag in tags if tag.kind == VIDEO and not tag.is_header]
    assert len(pictures) == 3 * FPS and pictures[0].is_keyframe
    assert [tag.timestamp for tag in pictures] == [index * 1000 // FPS for index in range(3 * FPS)]
    assert sum(tag.is_keyframe for tag in pictures) == 3  # an IDR every gop_seconds
    sounds = [tag.timestamp for tag in tags if tag.kind == AUDIO and not tag.is_header]
    assert sounds == sorted(sounds) and abs(sounds[-1] - 3000) < 100

    path = tmp_path / "bridge.flv"
    path.write_bytes(flv_header() + b"".join(tag.to_bytes() for tag in tags))
    with path.open("rb") as source:  # kinoray's own reader agrees on the framing
        read_header(source)
        assert len(list(read_tags(source))) == len(tags)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames,sample_rate,channels", "-of", "json",
                            str(path)], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and probe.stderr == "", probe.stderr
    streams = {stream["codec_name"]: stream for stream in json.loads(probe.stdout)["streams"]}
    assert (streams["h264"]["width"], streams["h264"]["height"]) == (320, 240)
    assert int(streams["h264"]["nb_read_frames"]) == 3 * FPS
    assert streams["aac"]["sample_rate"] == "48000" and streams["aac"]["channels"] == 2
    assert int(streams["aac"]["nb_read_frames"]) >= 3 * 48_000 // 1024 - 2

    # and back (what a WHEP viewer of an RTMP publish is sent): every picture, audio as aiortc's Opus takes it
    frames = FlvDecoder().decode_all(tags)
    pictures_out = [frame for frame in frames if isinstance(frame, av.VideoFrame)]
    sound_out = [frame for frame in frames if isinstance(frame, av.AudioFrame)]
    assert len(pictures_out) == 3 * FPS and {(f.width, f.height) for f in pictures_out} == {(320, 240)}
    assert [frame.pts for frame in pictures_out] == [index * 1000 // FPS for index in range(3 * FPS)]
    assert {(f.format.name, f.layout.name, f.sample_rate) for f in sound_out} == {("s16", "stereo", 48_000)}
    assert abs(sum(f.samples for f in sound_out) - 3 * 48_000) < 3 * 1024


def test_flv_decoder_starts_at_a_keyframe_and_skips_what_it_cannot_read() -> None:
    bridge = FlvBridge(has_audio=False, gop_seconds=1.0, clock=lambda: 0.0)
    tags: list[FlvTag] = []
    for index in range(2 * FPS):
        frame = _picture(index, 160, 120)
        frame.pts, frame.time_base = index * 90_000 // FPS, Fraction(1, 90_000)
        tags += bridge.video(frame)
    tags += bridge.close()
    headers = [tag for tag in tags if tag.is_header]
    pictures = [tag for tag in tags if not tag.is_header]
    decoder = FlvDecoder()
    assert decoder.decode_all(pictures[:5]) == []  # no configuration yet
    # joining mid-GOP (as a viewer does): the headers, then nothing until the next keyframe
    frames = decoder.decode_all([*headers, *pictures[3:FPS]])
    assert frames == []
    frames = decoder.decode_all(pictures[FPS:])
    assert len(frames) == FPS and frames[0].pts == 1000
    # a tag FFmpeg cannot read gives no frame and raises nothing; a new configuration waits for a keyframe
    assert decoder.decode(FlvTag(VIDEO, 3000, pictures[1].body[:5] + b"\x00\x00\x00\x07garbage")) == []
    assert decoder.decode_all([headers[-1], pictures[FPS + 1]]) == []


def test_avc_configuration_from_annex_b_parameter_sets() -> None:
    sps, pps = bytes.fromhex("6742c01e8c8d40501e"), bytes.fromhex("68ce3c80")
    record = avc_configuration(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps)
    assert record[:4] == bytes([1, 0x42, 0xC0, 0x1E]) and record[5] == 0xE1
    assert record[6:8] == len(sps).to_bytes(2, "big") and record[8:8 + len(sps)] == sps
    assert record[8 + len(sps)] == 1 and record[-len(pps):] == pps
    assert avc_configuration(record) == record
    with pytest.raises(ValueError):
        avc_configuration(b"\x00\x00\x01" + pps)


def test_rtmp_and_whip_are_ingest_servers_of_one_interface() -> None:
    async def authorize(request: PublishRequest) -> None:
        return None

    async def refusal(key: str) -> str:
        return "bad_key"

    servers: list[IngestServer] = [RtmpServer(authorize), WhipServer(authorize, refusal, lambda *args: "")]
    assert all(isinstance(server, IngestServer) for server in servers)
    assert [server.protocol for server in servers] == ["rtmp", "whip"]


def test_pyav_ffmpeg_has_no_srt() -> None:
    """Why SRT is not offered (docs/ARCHITECTURE.md, kinoray/live/ingest.py): PyAV's wheel has no libsrt."""
    available = protocols_available()
    assert {"rtmp", "rtmps", "tcp", "udp"} <= available
    assert "srt" not in available


class _Sink:
    """Where an accepted WHIP session's tags go (the runtime's session in production)."""

    live_stream_id = "stream-1"

    def __init__(self) -> None:
        self.tags: list[FlvTag] = []
        self.done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def media(self, tag: FlvTag) -> None:
        assert not self.done.done(), "media after the end"
        self.tags.append(tag)

    def ended(self, error: str | None) -> None:
        self.done.set_result(error)  # a second call would raise: ended comes once


def test_whip_server_http_answers_and_a_python_peer(tmp_path: Path) -> None:
    """aiortc publishing (lavfi test source and a sine, 320x240) and viewing: the refusals and protocol answers
    of RFC 9725, a publish whose tags ffprobe decodes, a WHEP viewer that receives frames, and DELETE."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer
    from aiortc.mediastreams import MediaStreamError

    async def scenario() -> None:
        sink = _Sink()

        async def authorize(request: PublishRequest) -> _Sink | None:
            assert request.protocol == "whip" and request.app == "whip"
            return sink if request.key == "good-key" else None

        async def refusal(key: str) -> str:
            return "bad_key"

        def admit(playback_id: str, token: str | None, headers: dict[str, str]) -> str:
            return "stream-1"

        server = WhipServer(authorize, refusal, admit, host="127.0.0.1", port=0, connect_seconds=20)
        base = f"http://127.0.0.1:{await server.start()}/live/v1"
        sdp = {"Content-Type": "application/sdp"}
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        video = MediaPlayer(f"testsrc=size=320x240:rate={FPS}", format="lavfi")
        audio = MediaPlayer("sine=frequency=440:sample_rate=48000", format="lavfi")
        viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            assert video.video is not None and audio.audio is not None
            pc.addTrack(video.video)
            pc.addTrack(audio.audio)
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            async with aiohttp.ClientSession() as http:
                async with http.options(f"{base}/whip/good-key") as answer:
                    assert answer.status == 204 and answer.headers["Access-Control-Allow-Origin"] == "*"
                async with http.post(f"{base}/whip/good-key", data=offer, headers={"Content-Type": "text/plain"}) \
                        as answer:
                    assert answer.status == 400 and (await answer.json())["error"]["type"] == "invalid_parameters"
                async with http.post(f"{base}/whip/good-key", data="v=0\r\n" + "a=x\r\n" * 20_000,
                                     headers=sdp) as answer:
                    assert answer.status == 413 and (await answer.json())["error"]["type"] == "request_too_large"
                async with http.post(f"{base}/whip", data=offer, headers=sdp) as answer:  # no key at all
                    assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
                async with http.post(f"{base}/whip/wrong", data=offer, headers=sdp) as answer:
                    assert answer.status == 401 and (await answer.json())["error"]["type"] == "stream_key_refused"
                assert server.publishing == 0 and not sink.tags
                async with http.post(f"{base}/whip", data=offer,
                                     headers={**sdp, "Authorization": "Bearer good-key"}) as answer:
                    assert answer.status == 201 and answer.content_type == "application/sdp"
                    location = answer.headers["Location"]
                    await pc.setRemoteDescription(RTCSessionDescription(await answer.text(), "answer"))
                async with http.patch(f"http://127.0.0.1:{server.port}{location}", data="a=",
                                      headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as answer:
                    assert answer.status == 405 and "DELETE" in answer.headers["Allow"]
                for _ in range(300):
                    if sum(tag.kind == VIDEO for tag in sink.tags) >= FPS:
                        break
                    await asyncio.sleep(0.1)

                received: list[str] = []
                viewer.addTransceiver("video", direction="recvonly")

                @viewer.on("track")
                def on_track(track: object) -> None:
                    async def read() -> None:
                        with contextlib.suppress(MediaStreamError):  # the end of the stream
                            while True:
                                await track.recv()  # type: ignore[attr-defined]
                                received.append("frame")

                    asyncio.ensure_future(read())

                await viewer.setLocalDescription(await viewer.createOffer())
                async with http.post(f"{base}/whep/some-playback-id", data=viewer.localDescription.sdp,
                                     headers=sdp) as answer:
                    assert answer.status == 201, await answer.text()
                    await viewer.setRemoteDescription(RTCSessionDescription(await answer.text(), "answer"))
                for _ in range(300):
                    if len(received) >= 10:
                        break
                    await asyncio.sleep(0.1)
                assert len(received) >= 10 and server.viewers == 1
                async with http.delete(f"http://127.0.0.1:{server.port}{location}") as answer:
                    assert answer.status == 200
                assert await asyncio.wait_for(sink.done, 30) is None
                assert server.publishing == 0 and server.viewers == 0  # the viewers end with their source
        finally:
            await pc.close()
            await viewer.close()
            await server.close()
        path = tmp_path / "whip.flv"
        path.write_bytes(flv_header() + b"".join(tag.to_bytes() for tag in sink.tags))
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                                "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0 and probe.stderr == "", probe.stderr
        streams = {stream["codec_name"]: stream for stream in json.loads(probe.stdout)["streams"]}
        assert (streams["h264"]["width"], streams["h264"]["height"]) == (320, 240)
        assert int(streams["h264"]["nb_read_frames"]) >= FPS and "aac" in streams

    asyncio.run(asyncio.wait_for(scenario(), 180))
