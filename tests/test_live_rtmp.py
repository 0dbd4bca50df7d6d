"""RTMP ingest (``kinoray.live.rtmp``) against Debian's ``ffmpeg`` as the publisher and ``ffprobe`` as the judge.

A publisher with the right key is accepted and everything it sent comes out as an FLV stream that ffprobe
decodes frame for frame; a wrong or empty key is refused before any media is accepted (ffmpeg itself reports
the refusal); malformed, silent and oversized connections end with nothing but their own session, while a real
publisher on the same server goes on; the refusals are counted.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from kinoray.errors import IngestProtocolError
from kinoray.live import FlvTag, PublishRequest, RtmpServer, flv_header
from kinoray.live.amf import decode_all, encode
from kinoray.live.pipe import TagPipe
from kinoray.live.transcode import LiveOptions, LiveTranscoder
from kinoray.media.flv import AUDIO, SCRIPT, VIDEO

KEY = "k3y-Of-a-live-stream"
SECONDS, FPS = 3, 25


class Recorder:
    """A publisher sink: the tags it got and how it ended."""

    def __init__(self, request: PublishRequest) -> None:
        self.request, self.tags, self.error = request, [], "not ended"
        self.done = threading.Event()

    def media(self, tag: FlvTag) -> None:
        self.tags.append(tag)

    def ended(self, error: str | None) -> None:
        self.error = error
        self.done.set()

    def flv(self, path: Path) -> Path:
        path.write_bytes(flv_header() + b"".join(tag.to_bytes() for tag in self.tags))
        return path


class Ingest:
    """An RtmpServer on its own event loop thread, accepting :data:`KEY` on app ``live``."""

    def __init__(self, **options) -> None:
        self.recorders: list[Recorder] = []
        self.asked: list[PublishRequest] = []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="rtmp-test", daemon=True).start()

        async def authorize(request: PublishRequest) -> Recorder | None:
            self.asked.append(request)
            if request.app != "live" or request.key != KEY:
                return None
            recorder = Recorder(request)
            self.recorders.append(recorder)
            return recorder

        self.server = RtmpServer(authorize, host="127.0.0.1", port=0, **options)
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class TranscodingIngest(Ingest):
    """An :class:`Ingest` whose publishers (with :data:`KEY`, or any key with ``any_key``) each feed a
    :class:`~kinoray.live.transcode.LiveTranscoder` writing ``out`` with ``options``, run on a thread (started
    ``start_after`` seconds after the publisher connects)."""

    def __init__(self, out: Path, options: LiveOptions, *, any_key: bool = False, start_after: float = 0.0) -> None:
        super().__init__()
        self.transcoders: list[LiveTranscoder] = []
        self.threads: list[threading.Thread] = []

        async def authorize(request: PublishRequest) -> TagPipe | None:
            if not any_key and request.key != KEY:
                return None
            pipe = TagPipe()
            self.transcoders.append(LiveTranscoder(pipe, out, options))
            thread = threading.Timer(start_after, self.transcoders[-1].run)
            thread.name, thread.daemon = "live-transcode", True
            thread.start()
            self.threads.append(thread)
            return pipe

        self.server.authorize = authorize

    def finished(self, timeout: float = 60) -> LiveTranscoder:
        """The first publisher's transcoder, once it has ended."""
        self.threads[0].join(timeout)
        assert not self.threads[0].is_alive(), "the transcoder did not end"
        return self.transcoders[0]


@pytest.fixture()
def ingest() -> Iterator[Ingest]:
    server = Ingest(handshake_seconds=1.0, idle_seconds=3.0, max_message_bytes=1 << 20)
    try:
        yield server
    finally:
        server.close()


def publisher_command(port: int, key: str, *, seconds: int = SECONDS, app: str = "live", size: str = "320x240",
                      fps: int = FPS, gop: int = FPS) -> list[str]:
    """Debian's ffmpeg publishing ``seconds`` of ``testsrc2`` + a sine in real time, H.264 + AAC over RTMP."""
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-f", "flv", f"rtmp://127.0.0.1:{port}/{app}/{key}"]


def publish(port: int, key: str, *, seconds: int = SECONDS, app: str = "live", size: str = "320x240"
            ) -> subprocess.CompletedProcess:
    return subprocess.run(publisher_command(port, key, seconds=seconds, app=app, size=size),
                          capture_output=True, text=True, timeout=60 + seconds)


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("kinoray_live_ingest_refused_total", {"reason": reason}) or 0.0


def probe(path: Path) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                           "stream=codec_type,codec_name,width,height,nb_read_frames,sample_rate:format=duration",
                           "-of", "json", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_publisher_with_the_key_is_received_whole(ingest: Ingest, tmp_path: Path) -> None:
    done = publish(ingest.port, KEY + "?token=ignored")
    assert done.returncode == 0, done.stderr
    [recorder] = ingest.recorders
    assert recorder.done.wait(10) and recorder.error is None  # the publisher ended the session itself
    assert recorder.request.app == "live" and recorder.request.key == KEY
    assert recorder.tags[0].kind == SCRIPT and recorder.tags[1].is_keyframe
    stamps = [tag.timestamp for tag in recorder.tags if tag.kind == VIDEO]
    assert stamps == sorted(stamps) and abs(stamps[-1] - (SECONDS * FPS - 1) * 1000 / FPS) <= 40

    info = probe(recorder.flv(tmp_path / "received.flv"))
    video = next(stream for stream in info["streams"] if stream["codec_type"] == "video")
    audio = next(stream for stream in info["streams"] if stream["codec_type"] == "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)
    assert int(video["nb_read_frames"]) == SECONDS * FPS  # every frame, decodable
    assert (audio["codec_name"], audio["sample_rate"]) == ("aac", "48000") and int(audio["nb_read_frames"]) > 100
    assert abs(float(info["format"]["duration"]) - SECONDS) < 0.2

    # the product's own reader, PyAV, demuxes the same stream
    import av

    with av.open(str(tmp_path / "received.flv")) as container:
        assert sum(1 for packet in container.demux(video=0) if packet.size) == SECONDS * FPS


@pytest.mark.parametrize(("app", "key", "reason"), [("live", "wrong-key", "bad_key"), ("other", KEY, "bad_key"),
                                                    ("live", "", "no_key")])
def test_a_wrong_key_is_refused_before_any_media(ingest: Ingest, app: str, key: str, reason: str) -> None:
    before = refused(reason)
    done = publish(ingest.port, key, seconds=1, app=app)
    assert done.returncode != 0  # ffmpeg saw the refusal
    assert ingest.recorders == [] and refused(reason) == before + 1
    assert [request.key for request in ingest.asked] == ([key] if key else [])


def _handshake(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(b"\x03" + bytes(1536))
    received = b""
    while len(received) < 1 + 2 * 1536:
        received += connection.recv(65536)
    connection.sendall(bytes(1536))
    return connection


def _closed(connection: socket.socket, within: float) -> bool:
    connection.settimeout(within)
    try:
        while connection.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("garbage", [
    pytest.param(b"\x43" + bytes(7), id="first-header-not-type-0"),
    pytest.param(b"\x02" + b"\x00\x00\x00" + (8 << 20).to_bytes(3, "big") + b"\x09" + bytes(4), id="oversized"),
    pytest.param(b"\x02" + bytes(3) + (12).to_bytes(3, "big") + b"\x14" + bytes(4) + b"\x11" * 12, id="bad-amf"),
    pytest.param(b"\x02" + bytes(3) + (4).to_bytes(3, "big") + b"\x01" + bytes(4) + bytes(4), id="chunk-size-0"),
])
def test_malformed_streams_end_only_their_own_session(ingest: Ingest, garbage: bytes, tmp_path: Path) -> None:
    before = refused("protocol")
    result: dict = {}
    publisher = threading.Thread(target=lambda: result.update(done=publish(ingest.port, KEY)))
    publisher.start()
    time.sleep(0.5)
    for _ in range(3):  # while a real publisher streams
        connection = _handshake(ingest.port)
        connection.sendall(garbage)
        assert _closed(connection, within=5)
        connection.close()
    publisher.join(60)
    assert result["done"].returncode == 0, result["done"].stderr
    assert refused("protocol") == before + 3
    [recorder] = ingest.recorders
    assert recorder.done.wait(10) and recorder.error is None
    assert int(next(s for s in probe(recorder.flv(tmp_path / "r.flv"))["streams"]
                    if s["codec_type"] == "video")["nb_read_frames"]) == SECONDS * FPS


def test_silent_connections_are_closed(ingest: Ingest) -> None:
    before = refused("timeout")
    silent = socket.create_connection(("127.0.0.1", ingest.port), timeout=10)  # never handshakes
    started = time.monotonic()
    assert _closed(silent, within=5) and time.monotonic() - started < 3
    quiet = _handshake(ingest.port)  # handshakes, then says nothing
    assert _closed(quiet, within=8)
    assert refused("timeout") == before + 2


def test_amf0_round_trip_and_limits() -> None:
    values = ["connect", 1.0, {"app": "live", "nested": {"list": [1.0, True, None, "é"]}}, None]
    assert decode_all(encode(*values)) == values
    with pytest.raises(IngestProtocolError):
        decode_all(encode("x")[:-1])  # cut short
    deep = b"".join([b"\x0a" + struct.pack(">I", 1)] * 40) + b"\x05"
    with pytest.raises(IngestProtocolError):
        decode_all(deep)
    with pytest.raises(IngestProtocolError):
        decode_all(b"\x0a" + struct.pack(">I", 10**6))
    tag = FlvTag(AUDIO, 0x01020304, b"abc")
    assert tag.to_bytes() == b"\x08\x00\x00\x03\x02\x03\x04\x01\x00\x00\x00abc\x00\x00\x00\x0e"


def test_flv_tags_read_back_as_written_and_a_torn_tag_is_an_error() -> None:
    import io

    from kinoray.errors import InvalidMediaError
    from kinoray.media.flv import read_header, read_tags

    tags = [FlvTag(SCRIPT, 0, b"meta"), FlvTag(VIDEO, 40, b"\x17\x01frame"), FlvTag(AUDIO, 0x01000000, b"\xaf\x01")]
    data = flv_header() + b"".join(tag.to_bytes() for tag in tags)
    source = io.BytesIO(data)
    assert read_header(source) == flv_header()
    assert list(read_tags(source)) == tags
    torn = io.BytesIO(data[:-3])
    read_header(torn)
    with pytest.raises(InvalidMediaError):
        list(read_tags(torn))


async def _bad_key_publish(port: int, key: str) -> bytes:
    """A publisher that speaks RTMP properly up to ``publish`` with ``key``; what the server answered until it
    closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\x03" + bytes(1536))
        await reader.readexactly(1 + 2 * 1536)
        writer.write(bytes(1536))

        def message(payload: bytes, stream_id: int = 0) -> bytes:  # chunk stream 3, 128-byte chunks
            header = b"\x03" + bytes(3) + len(payload).to_bytes(3, "big") + b"\x14" + stream_id.to_bytes(4, "little")
            pieces = [payload[i:i + 128] for i in range(0, len(payload), 128)]
            return header + b"\xc3".join(pieces)

        writer.write(message(encode("connect", 1.0, {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://x/live"})))
        writer.write(message(encode("createStream", 2.0, None)))
        writer.write(message(encode("publish", 3.0, None, key, "live"), stream_id=1))
        await writer.drain()
        answered = b""
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            answered += chunk
        return answered
    finally:
        writer.close()


def test_a_flood_of_connects_without_a_valid_key_leaves_a_running_stream_whole(ingest: Ingest,
                                                                               tmp_path: Path) -> None:
    """While a real publisher streams, 150 publishers with wrong keys and 100 connections that never handshake
    arrive at once: each wrong key is refused by name and counted, the silent ones are dropped, the running
    stream comes out whole, and the server still takes a new publisher afterwards."""
    seconds = 6
    bad_before, timeout_before = refused("bad_key"), refused("timeout")
    result: dict = {}
    publisher = threading.Thread(target=lambda: result.update(done=publish(ingest.port, KEY, seconds=seconds)))
    publisher.start()
    deadline = time.monotonic() + 30
    while not ingest.recorders:
        assert time.monotonic() < deadline, "the publisher never started"
        time.sleep(0.05)

    async def flood() -> list[bytes]:
        silent = [await asyncio.open_connection("127.0.0.1", ingest.port) for _ in range(100)]
        try:
            return await asyncio.gather(*(_bad_key_publish(ingest.port, f"guess-{n}") for n in range(150)))
        finally:
            for _, writer in silent:
                writer.close()

    started = time.monotonic()
    answers = asyncio.run(flood())
    assert time.monotonic() - started < 20
    assert all(b"NetStream.Publish.BadName" in answer for answer in answers)
    publisher.join(60 + seconds)
    assert result["done"].returncode == 0, result["done"].stderr
    assert refused("bad_key") == bad_before + 150
    assert refused("timeout") <= timeout_before + 100  # silent ones closed by us or gone first
    [recorder] = ingest.recorders
    assert recorder.done.wait(10) and recorder.error is None
    video = next(s for s in probe(recorder.flv(tmp_path / "r.flv"))["streams"] if s["codec_type"] == "video")
    assert int(video["nb_read_frames"]) == seconds * FPS  # every frame of the running stream
    stamps = [tag.timestamp for tag in recorder.tags if tag.kind == VIDEO]
    assert stamps == sorted(stamps) and abs(stamps[-1] - (seconds * FPS - 1) * 1000 / FPS) <= 40
    assert publish(ingest.port, KEY, seconds=1).returncode == 0 and len(ingest.recorders) == 2
