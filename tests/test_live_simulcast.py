"""Simulcast pushing end to end: Debian's ``ffmpeg`` publishes to kinoray's RTMP ingest; the live stream's two
simulcast targets are Debian ``ffmpeg`` RTMP listeners (``-listen 1``) writing what they receive to FLV files.
One listens from the start; the other is not listening when the stream starts, so its pushes are refused until
it starts listening — it must be retried and reach ``broadcasting``.

Checked independently: ``ffprobe`` decodes video frames of both received files; the targets' statuses through
the API (``GET …/simulcast-targets/{id}``) and Mux's ``video.live_stream.simulcast_target.*`` webhooks as a local
receiver got them (signature verified) go through the expected sequences; after the publisher stops both
targets are ``idle`` again. A target that accepts the TCP connection and then reads nothing (a stalled
platform) is dropped within its bounded buffer and write timeout without holding the live ladder back.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kinoray.control.webhooks import verify
from kinoray.store.models import Event, SimulcastTarget
from tests.api_server import Receiver
from tests.test_live_rtmp import publisher_command

SIZE = "426x240"


@pytest.fixture(scope="module")
def platform(api_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from kinoray.control.platform import Platform
    from kinoray.settings import Settings

    platform = Platform.from_settings(Settings(data_dir=tmp_path_factory.mktemp("simulcast-control"),
                                               database_url=api_backend.new_url(), environment="test"))
    try:
        yield platform
    finally:
        platform.close()


def test_target_statuses_are_stored_with_mux_s_events_and_end_with_the_session(platform: Any) -> None:
    """The control plane's side, on both backends: a publish carries the targets; each status change is stored
    once with its event; a late report after the session is ignored; the session's end leaves every target
    idle."""
    from kinoray.control.live import (
        LiveStreamCreate,
        authorize_publish,
        create_live_stream,
        publish_ended,
        set_simulcast_status,
    )
    from kinoray.errors import InvalidParametersError

    with platform.db.session() as session:
        stream, key = create_live_stream(session, LiveStreamCreate.model_validate({
            "reconnect_window": 0, "simulcast_targets": [{"url": "rtmp://a.example/app", "stream_key": "k1"},
                                                         {"url": "rtmps://b.example:443/live/k2"}]}))
        live_id = stream.id
    assert set_simulcast_status(platform, "no-such-target", "idle") is False
    publish = authorize_publish(platform, key)
    assert publish is not None
    first, second = publish.simulcast_targets
    assert (first.url, first.stream_key, second.stream_key) == ("rtmp://a.example/app", "k1", None)
    assert "k1" not in repr(first), "a target's stream key is not logged"
    assert set_simulcast_status(platform, first.target_id, "starting")
    assert not set_simulcast_status(platform, first.target_id, "starting"), "no change, no event"
    assert set_simulcast_status(platform, first.target_id, "broadcasting")
    assert set_simulcast_status(platform, second.target_id, "starting")
    assert set_simulcast_status(platform, second.target_id, "errored", "fatal")
    with pytest.raises(InvalidParametersError):
        set_simulcast_status(platform, second.target_id, "paused")  # type: ignore[arg-type]
    with platform.db.reader() as session:
        rows = {row.id: (row.status, row.error_severity) for row in session.scalars(
            sa.select(SimulcastTarget).where(SimulcastTarget.live_stream_id == live_id))}
    assert rows == {first.target_id: ("broadcasting", None), second.target_id: ("errored", "fatal")}

    assert publish_ended(platform, live_id)  # window 0: the session ends, every target idle
    assert not set_simulcast_status(platform, first.target_id, "broadcasting"), "a late report is ignored"
    assert _stored_events(platform, first.target_id) == ["starting", "broadcasting", "idle"]
    assert _stored_events(platform, second.target_id) == ["starting", "errored", "idle"]
    with platform.db.reader() as session:
        assert {row.status for row in session.scalars(
            sa.select(SimulcastTarget).where(SimulcastTarget.live_stream_id == live_id))} == {"idle"}


@pytest.fixture(scope="module")
def api(api_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if api_backend.kind != "sqlite":
        pytest.skip("the live runtime runs on one backend; the control plane's tests cover both")
    from tests.live_runtime import live_api

    with live_api(api_backend, tmp_path_factory.mktemp("live-simulcast"),
                  api={"allow_file_inputs": True, "allow_private_inputs": True},
                  live={"simulcast_retry_seconds": 0.5, "simulcast_max_retry_seconds": 1.5,
                        "simulcast_buffer_bytes": 256 << 10, "simulcast_write_seconds": 3,
                        "simulcast_socket_buffer_bytes": 64 << 10}) as server:
        yield server


@pytest.fixture(scope="module")
def ingest(api: Any) -> Iterator[Any]:
    from tests.live_runtime import live_ingest

    with live_ingest(api) as service:
        yield service


@pytest.fixture(scope="module")
def hooks(api: Any) -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    answer = api.client.post(f"{api.url}/system/v1/webhook-endpoints", json={"url": receiver.url}, timeout=10)
    assert answer.status_code == 201, answer.text
    yield receiver, answer.json()["data"]["secret"]
    receiver.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port``, or already took its connection there (from the kernel's table:
    connecting would use up the single connection an ``ffmpeg -listen 1`` accepts; once it has accepted one it
    closes its listening socket, and a retrying pusher can get in between two looks)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in ("0A", "01"):  # LISTEN, ESTABLISHED
                return True
    return False


def _eventually(check: Callable[[], Any], within: float, what: Callable[[], str] | str) -> Any:
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.2)
    return value


class _RtmpReceiver:
    """Debian's ffmpeg as a simulcast target: listens for one publisher and copies what it gets into a file."""

    def __init__(self, port: int, key: str, output: Path) -> None:
        self.port, self.output = port, output
        self.process = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-listen", "1", "-i",
             f"rtmp://127.0.0.1:{port}/app/{key}", "-c", "copy", "-y", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _eventually(lambda: _listening(port) or self.process.poll() is not None, 30, "the receiver listens")
        assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""

    def finish(self, timeout: float = 30) -> None:
        try:
            self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)

    def video_frames(self, size: str = SIZE) -> int:
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(self.output)],
                               capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0 and not probe.stderr.strip(), probe.stderr
        [video] = json.loads(probe.stdout)["streams"]
        assert (video["codec_name"], f"{video['width']}x{video['height']}") == ("h264", size), video
        return int(video["nb_read_frames"])


def _target(api: Any, live_id: str, target_id: str) -> dict[str, Any]:
    answer = api.client.get(f"{api.url}/video/v1/live-streams/{live_id}/simulcast-targets/{target_id}", timeout=10)
    answer.raise_for_status()
    return dict(answer.json()["data"])


def _stored_events(platform: Any, object_id: str) -> list[str]:
    with platform.db.reader() as session:
        return [name.removeprefix("video.live_stream.simulcast_target.") for name in session.scalars(
            sa.select(Event.type).where(Event.object_id == object_id).order_by(Event.created_at, Event.id))]


def _publish(port: int, key: str, seconds: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(publisher_command(port, key, seconds=seconds, app="app", size=SIZE),
                          capture_output=True, text=True, timeout=120 + seconds)


@pytest.mark.parametrize(("url", "key", "expected"), [
    ("rtmp://a.example/live2", "abc", ("a.example", 1935, False, "live2", "rtmp://a.example/live2", "abc")),
    ("rtmps://b.example:4443/app/inst?x=1", "k", ("b.example", 4443, True, "app/inst?x=1",
                                                  "rtmps://b.example:4443/app/inst?x=1", "k")),
    ("rtmps://c.example/app/key-in-url", None, ("c.example", 443, True, "app", "rtmps://c.example/app",
                                                 "key-in-url")),
])
def test_destinations_are_read_as_ffmpeg_reads_rtmp_urls(url: str, key: str | None,
                                                         expected: tuple[Any, ...]) -> None:
    from kinoray.live.simulcast import parse_destination

    found = parse_destination("t", url, key)
    assert (found.host, found.port, found.tls, found.app, found.tc_url, found.stream_name) == expected
    assert (key or "key-in-url") not in repr(found)


@pytest.mark.parametrize(("url", "key"), [("http://a.example/app", "k"), ("rtmp:///app", "k"),
                                          ("rtmp://a.example", None), ("rtmp://a.example:99999/app", "k")])
def test_unusable_destinations_are_fatal(url: str, key: str | None) -> None:
    from kinoray.errors import SimulcastError
    from kinoray.live.simulcast import parse_destination

    with pytest.raises(SimulcastError) as refused:
        parse_destination("t", url, key)
    assert refused.value.fatal


@pytest.fixture(scope="module")
def source_tags(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """Debian ffmpeg's FLV (H.264 with a keyframe a second, AAC), read back as tags."""
    from kinoray.media.flv import read_header, read_tags

    path = tmp_path_factory.mktemp("simulcast-source") / "source.flv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=48000", "-t", "4", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", "-c:a", "aac", "-f", "flv", str(path)], check=True, timeout=120)
    with path.open("rb") as source:
        read_header(source)
        return list(read_tags(source))


def test_the_pusher_speaks_rtmp_to_a_server_that_refuses_accepts_and_drops_it(source_tags: list[Any]) -> None:
    """The pusher against kinoray's own RTMP server (in process): a refused publish is ``errored`` and retried;
    accepted, the server receives the source's tags unchanged from the first keyframe on, after the codec
    configuration; dropped mid-stream, the pusher connects again and the new publish starts with the
    configuration and a keyframe; the end is ``idle`` and the server sees the publisher leave."""
    from kinoray.live.rtmp import PublishRequest, RtmpServer
    from kinoray.live.simulcast import SimulcastPusher
    from kinoray.media.flv import AUDIO, SCRIPT, VIDEO

    class Recorder:
        def __init__(self) -> None:
            self.tags: list[Any] = []
            self.ended_with: list[str | None] = []

        def media(self, tag: Any) -> None:
            self.tags.append(tag)

        def ended(self, error: str | None) -> None:
            self.ended_with.append(error)

    async def until(check: Callable[[], bool], within: float = 20) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        accept, publishes, requests_seen = False, [], []

        async def authorize(request: PublishRequest) -> Recorder | None:
            requests_seen.append(request)
            if not accept:
                return None
            publishes.append(Recorder())
            return publishes[-1]

        server = RtmpServer(authorize, host="127.0.0.1", port=0)
        port = await server.start()
        statuses: list[tuple[str, str | None]] = []
        pusher = SimulcastPusher("t", f"rtmp://127.0.0.1:{port}/live", "the-key",
                                 lambda _, status, severity, error: statuses.append((status, severity)),
                                 retry_seconds=0.05, max_retry_seconds=0.2)
        await until(lambda: ("errored", "normal") in statuses)
        assert requests_seen[0].app == "live" and requests_seen[0].key == "the-key"
        accept = True
        await until(lambda: pusher.status == "broadcasting")
        half = len(source_tags) // 2
        for tag in source_tags[:half]:
            pusher.media(tag)
            await asyncio.sleep(0)
        await until(lambda: len(publishes[0].tags) >= 40)
        first = publishes[0].tags
        start = next(i for i, tag in enumerate(source_tags) if tag.kind == VIDEO and tag.is_keyframe
                     and not tag.is_header)
        assert [tag.kind for tag in first[:3]] == [SCRIPT, VIDEO, AUDIO]  # the configuration, then media
        assert all(tag.is_header for tag in first[:3])
        sent = [(tag.kind, tag.timestamp, tag.body) for tag in source_tags[start:start + len(first) - 3]]
        assert [(tag.kind, tag.timestamp, tag.body) for tag in first[3:]] == sent, "the tags as published"

        assert server.drop("the-key")  # the target drops the push: errored, then back
        await until(lambda: len(publishes) == 2 and pusher.status == "broadcasting")
        for tag in source_tags[half:]:
            pusher.media(tag)
            await asyncio.sleep(0)
        await until(lambda: any(tag.is_keyframe and not tag.is_header for tag in publishes[1].tags))
        second = publishes[1].tags
        assert [tag.kind for tag in second[:3]] == [SCRIPT, VIDEO, AUDIO] and second[3].is_keyframe
        assert second[3].timestamp > first[-1].timestamp, "the publisher's clock, unchanged"
        pusher.ended()
        await pusher.wait()
        await until(lambda: bool(publishes[1].ended_with))
        assert statuses == [("starting", None), ("errored", "normal"), ("broadcasting", None),
                            ("errored", "normal"), ("broadcasting", None), ("idle", None)]
        assert publishes[1].ended_with == [None], "a clean unpublish"
        await server.close()

    asyncio.run(scenario())


def test_a_push_arrives_whole_at_ffmpeg(source_tags: list[Any], tmp_path: Path) -> None:
    """Every frame the pusher is given reaches Debian ffmpeg's RTMP listener, also when given much faster than
    real time (the end of a push is a clean unpublish and half-close, never a reset that loses the tail)."""
    from kinoray.live.simulcast import SimulcastPusher

    port = _free_port()
    receiver = _RtmpReceiver(port, "whole", tmp_path / "whole.flv")

    async def push() -> list[str]:
        statuses: list[str] = []
        pusher = SimulcastPusher("t", f"rtmp://127.0.0.1:{port}/app", "whole",
                                 lambda _, status, severity, error: statuses.append(status))
        deadline = time.monotonic() + 30
        while pusher.status != "broadcasting":
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.02)
        for tag in source_tags:
            pusher.media(tag)
        pusher.ended()
        await pusher.wait()
        return statuses

    try:
        assert asyncio.run(push()) == ["starting", "broadcasting", "idle"]
    finally:
        receiver.finish()
    assert receiver.video_frames(size="320x240") == 4 * 25


@pytest.mark.slow
def test_the_source_is_pushed_to_every_target_and_a_refusing_one_is_retried(
        api: Any, ingest: Any, hooks: tuple[Receiver, str], tmp_path: Path) -> None:
    receiver, secret = hooks
    early_port, late_port = _free_port(), _free_port()
    early = _RtmpReceiver(early_port, "early-key", tmp_path / "early.flv")
    created = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "latency_mode": "reduced", "reconnect_window": 2,
        "simulcast_targets": [{"url": f"rtmp://127.0.0.1:{early_port}/app", "stream_key": "early-key"},
                              {"url": f"rtmp://127.0.0.1:{late_port}/app", "stream_key": "late-key",
                               "passthrough": "late"}]}, timeout=30)
    assert created.status_code == 201, created.text
    stream = created.json()["data"]
    live_id = stream["id"]
    first, second = (target["id"] for target in stream["simulcast_targets"])
    assert [_target(api, live_id, target)["status"] for target in (first, second)] == ["idle", "idle"]

    results: list[subprocess.CompletedProcess[str]] = []
    publisher = threading.Thread(target=lambda: results.append(_publish(ingest.port, stream["stream_key"], 16)))
    publisher.start()
    late: _RtmpReceiver | None = None
    try:
        _eventually(lambda: _target(api, live_id, first)["status"] == "broadcasting", 30,
                    lambda: f"first target: {_target(api, live_id, first)}")
        errored = _eventually(lambda: (view := _target(api, live_id, second))["status"] == "errored" and view, 30,
                              lambda: f"second target: {_target(api, live_id, second)}")
        assert errored["error_severity"] == "normal" and errored["passthrough"] == "late"
        assert publisher.is_alive(), "the stream ended before the second target could be retried"
        late = _RtmpReceiver(late_port, "late-key", tmp_path / "late.flv")  # now it listens: the retry lands
        _eventually(lambda: _target(api, live_id, second)["status"] == "broadcasting", 20,
                    lambda: f"second target: {_target(api, live_id, second)}")
        assert "error_severity" not in _target(api, live_id, second)
        assert publisher.is_alive(), "the retried target reached broadcasting while the stream was live"
    finally:
        publisher.join(120)
        early.finish()
        if late is not None:
            late.finish()
    [published] = results
    assert published.returncode == 0, published.stderr

    for target in (first, second):
        _eventually(lambda target=target: _target(api, live_id, target)["status"] == "idle", 30,
                    lambda target=target: f"after the stream: {_target(api, live_id, target)}")
    early_frames, late_frames = early.video_frames(), late.video_frames()
    assert early_frames >= 12 * 25, early_frames  # ~all of 16 s at 25 fps (joins at a keyframe)
    assert 25 <= late_frames < early_frames, (late_frames, early_frames)

    assert _stored_events(api.platform, first) == ["starting", "broadcasting", "idle"]
    assert _stored_events(api.platform, second) == ["starting", "errored", "broadcasting", "idle"]

    def delivered(target: str) -> list[str]:
        names = []
        for headers, body in receiver.received:
            event = json.loads(body)
            if event["object"]["id"] == target:
                verify(secret, body, headers["mux-signature"])
                assert event["object"]["type"] == "simulcast_target" and event["data"]["id"] == target
                names.append(event["type"].removeprefix("video.live_stream.simulcast_target."))
        return names

    _eventually(lambda: sorted(delivered(first) + delivered(second)) == sorted(
        ["starting", "broadcasting", "idle"] * 2 + ["errored"]), 60,
        lambda: f"webhooks: {delivered(first)} {delivered(second)}")


def _media_sequence(edge_url: str, playback_id: str) -> int:
    """The live top rung's newest segment number, from the edge's playlists."""
    import requests

    master = requests.get(f"{edge_url}/{playback_id}.m3u8", timeout=10)
    if master.status_code != 200:
        return -1
    rung = next(line for line in master.text.splitlines() if line.endswith("index.m3u8") and "audio" not in line)
    media = requests.get(f"{edge_url}/{rung}", timeout=10).text
    sequence = next(int(line.split(":", 1)[1]) for line in media.splitlines() if line.startswith("#EXT-X-MEDIA-SEQUENCE"))
    return sequence + sum(1 for line in media.splitlines() if line.startswith("#EXTINF"))


@pytest.mark.slow
def test_a_stalled_target_is_dropped_and_the_ladder_goes_on(api: Any, ingest: Any, tmp_path: Path) -> None:
    """A target that stops reading mid-stream (its ffmpeg stopped with SIGSTOP: the connection stays open, the
    socket buffers fill): the pusher drops it (``errored``) within its bounded buffer and write timeout, and
    the stream's own live ladder keeps producing segments meanwhile."""
    port = _free_port()
    target_process = _RtmpReceiver(port, "stalled", tmp_path / "stalled.flv")
    created = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "latency_mode": "reduced",
        "simulcast_targets": [{"url": f"rtmp://127.0.0.1:{port}/app", "stream_key": "stalled"}]}, timeout=30)
    stream = created.json()["data"]
    [target] = stream["simulcast_targets"]
    playback_id = stream["playback_ids"][0]["id"]
    results: list[subprocess.CompletedProcess[str]] = []
    publisher = threading.Thread(target=lambda: results.append(_publish(ingest.port, stream["stream_key"], 24)))
    publisher.start()
    try:
        _eventually(lambda: _target(api, stream["id"], target["id"])["status"] == "broadcasting", 30,
                    lambda: f"{_target(api, stream['id'], target['id'])}")
        target_process.process.send_signal(signal.SIGSTOP)
        view = _eventually(lambda: (found := _target(api, stream["id"], target["id"]))["status"] == "errored"
                           and found, 40, "the stalled target is dropped")
        assert view["error_severity"] == "normal"
        before = _media_sequence(api.edge_url, playback_id)
        _eventually(lambda: _media_sequence(api.edge_url, playback_id) >= before + 2, 20,
                    "the live ladder goes on while the target is stalled")
        assert publisher.is_alive()
    finally:
        target_process.process.send_signal(signal.SIGCONT)
        publisher.join(120)
        target_process.process.kill()
        target_process.finish()
    assert results and results[0].returncode == 0, results[0].stderr if results else "no publisher result"
    _eventually(lambda: _target(api, stream["id"], target["id"])["status"] == "idle", 30, "idle at the end")
