"""Live ingest options (issue 17): RTMPS ingest, scheduled streams and audio-only live streams.

- **RTMPS**: Debian's ``ffmpeg`` publishes over ``rtmps://`` to the ingest server's TLS port with a certificate
  made for the test; what it sent arrives whole (``ffprobe`` decodes it), a wrong key is refused there as on
  plain RTMP, and a TLS handshake that never finishes is closed after the handshake limit while a publisher
  goes on.
- **Scheduled streams** (the control plane, real clock and a fake one): the key is refused with the typed
  reason before ``kinoray_scheduled_start`` and from ``kinoray_scheduled_end``, accepted between; a publisher
  past the end is stopped.
- **Audio only**: the live ladder of an ``audio_only`` stream is one audio variant (``CODECS="mp4a…"``, no
  video in what ``ffprobe`` reads), from a publisher sending only a sine, and from one sending video too
  (dropped), as plain HLS and as LL-HLS parts.
- **End to end** (slow): a scheduled, audio-only stream made through the API refuses an RTMPS publisher before
  its start (counted under ``not_started``), takes it after, goes active with ``active_ingest_protocol``, plays
  audio only through the edge, answers its thumbnail with a typed error, and its recording becomes an
  audio-only asset.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from kinoray.control.live import (
    LiveStreamCreate,
    LiveStreamUpdate,
    authorize_publish,
    create_live_stream,
    live_stream_view,
    publish_ended,
    publish_should_stop,
    update_live_stream,
)
from kinoray.control.platform import Platform
from kinoray.errors import IngestRefusedError, InvalidParametersError
from kinoray.live import PublishRequest
from kinoray.live.transcode import MASTER, LiveOptions
from kinoray.settings import Settings
from tests.api_server import self_signed
from tests.test_live_rtmp import KEY, Ingest, TranscodingIngest, probe, publisher_command, refused
from tests.test_live_thumbnails import _eventually


def _tls_context(directory: Path) -> ssl.SSLContext:
    certificate = self_signed(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


def _rtmps(command: list[str], port: int, key: str, app: str = "live") -> list[str]:
    """``publisher_command`` publishing to ``rtmps://`` (ffmpeg does not verify the certificate by default)."""
    return [*command[:-1], f"rtmps://127.0.0.1:{port}/{app}/{key}"]


# --- RTMPS -----------------------------------------------------------------------------------------------------


@pytest.fixture()
def tls_ingest(tmp_path: Path) -> Iterator[Ingest]:
    server = Ingest(tls=_tls_context(tmp_path), tls_port=0, handshake_seconds=1.0, idle_seconds=3.0,
                    max_message_bytes=1 << 20)
    try:
        yield server
    finally:
        server.close()


def test_an_rtmps_publisher_is_received_whole_and_a_stalled_tls_handshake_is_closed(tls_ingest: Ingest,
                                                                                      tmp_path: Path) -> None:
    port = tls_ingest.server.tls_port
    assert port and port != tls_ingest.port
    # a connection that never finishes the TLS handshake (half a ClientHello) is closed after handshake_seconds
    stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01")
    opened = time.monotonic()

    bad = refused("bad_key")
    wrong = subprocess.run(_rtmps(publisher_command(0, KEY, seconds=1), port, "wrong-key"), capture_output=True,
                           text=True, timeout=60)
    assert wrong.returncode != 0 and refused("bad_key") == bad + 1  # refused over TLS as over plain RTMP

    done = subprocess.run(_rtmps(publisher_command(0, KEY, seconds=2), port, KEY), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert stalled.recv(1) == b"", "the stalled handshake was closed"
    assert time.monotonic() - opened < 8
    stalled.close()

    recorders = [recorder for recorder in tls_ingest.recorders if recorder.request.key == KEY]
    [recorder] = recorders
    assert recorder.done.wait(10) and recorder.error is None and recorder.request.protocol == "rtmps"
    info = probe(recorder.flv(tmp_path / "received.flv"))
    video = next(stream for stream in info["streams"] if stream["codec_type"] == "video")
    assert (video["codec_name"], int(video["nb_read_frames"])) == ("h264", 2 * 25)
    assert any(stream["codec_type"] == "audio" for stream in info["streams"])

    plain = subprocess.run(publisher_command(tls_ingest.port, KEY, seconds=1), capture_output=True, text=True,
                           timeout=60)  # the plain port still speaks RTMP beside it
    assert plain.returncode == 0, plain.stderr
    assert tls_ingest.recorders[-1].request.protocol == "rtmp"


# --- scheduled streams (control plane) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(api_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform.from_settings(Settings(data_dir=tmp_path_factory.mktemp("live-schedule"),
                                               database_url=api_backend.new_url(), environment="test"))
    try:
        yield platform
    finally:
        platform.close()


def _refusal(platform: Platform, key: str, now: datetime | None = None) -> str:
    with pytest.raises(IngestRefusedError) as refusal:
        authorize_publish(platform, key, now=now)
    return refusal.value.reason


def test_a_scheduled_stream_takes_its_key_only_within_its_schedule(platform: Platform) -> None:
    start = datetime.now(UTC) + timedelta(seconds=3)
    with platform.db.session() as session:
        stream, key = create_live_stream(session, LiveStreamCreate(
            playback_policies=["public"], kinoray_scheduled_start=int(start.timestamp()) + 1))
        stream_id = stream.id
        view = live_stream_view(stream)
    assert view.kinoray_scheduled_start == str(int(start.timestamp()) + 1) and view.kinoray_scheduled_end is None
    assert _refusal(platform, key) == "not_started"
    assert authorize_publish(platform, "not-" + key) is None  # a wrong key is still just unknown

    # wait for the start (the real clock), then the key works
    time.sleep(max(0.0, int(start.timestamp()) + 1 - time.time()) + 0.2)
    publish = authorize_publish(platform, key, protocol="rtmps")
    assert publish is not None
    with platform.db.reader() as session:
        view = live_stream_view(session.get(type(stream), stream_id))
    assert (view.active_ingest_protocol, view.kinoray_active_ingest_protocol) == ("rtmp", "rtmps")

    # an end: a running publisher is stopped at it and the key is refused from it on (a fake clock from here)
    end = datetime.now(UTC) + timedelta(minutes=10)
    with platform.db.session() as session:
        update_live_stream(session, stream_id, LiveStreamUpdate(kinoray_scheduled_end=end.isoformat()))
    assert publish_should_stop(platform, stream_id, publish.asset_id, now=end - timedelta(seconds=1)) is None
    assert publish_should_stop(platform, stream_id, publish.asset_id, now=end) == "scheduled_end"
    assert publish_ended(platform, stream_id, now=end)
    with platform.db.reader() as session:
        row = session.get(type(stream), stream_id)
        assert row.session_state == "none" and row.active_ingest_protocol is None  # no reconnect window past it
    assert _refusal(platform, key, now=end + timedelta(seconds=5)) == "schedule_ended"

    # PATCH null clears the schedule; an end before the start is refused by name
    with platform.db.session() as session:
        update_live_stream(session, stream_id, LiveStreamUpdate(kinoray_scheduled_end=None))
        with pytest.raises(InvalidParametersError, match="kinoray_scheduled_end"):
            update_live_stream(session, stream_id, LiveStreamUpdate(
                kinoray_scheduled_end=int(start.timestamp()) - 60))
    with pytest.raises(ValueError, match="kinoray_scheduled_end"):
        LiveStreamCreate(kinoray_scheduled_start="2027-01-02T00:00:00Z", kinoray_scheduled_end="2027-01-01T00:00:00Z")
    assert authorize_publish(platform, key, now=end + timedelta(seconds=6)) is not None


# --- audio-only ladder -----------------------------------------------------------------------------------------

SINE = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]


def _audio_publisher(port: int, seconds: int, *, with_video: bool) -> list[str]:
    video = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-c:v", "libx264", "-preset", "ultrafast",
             "-g", "25"] if with_video else []
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *SINE, *video, "-t", str(seconds),
            "-c:a", "aac", "-b:a", "64k", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{KEY}"]


def _ffprobe(target: str | Path) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name:format=duration",
                           "-of", "json", str(target)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(("part_seconds", "with_video"), [(None, False), (0.5, True)],
                         ids=["hls-sine", "llhls-video-dropped"])
def test_an_audio_only_stream_is_one_audio_variant(tmp_path: Path, part_seconds: float | None,
                                                   with_video: bool) -> None:
    seconds, out = 5, tmp_path / "live"
    ingest = TranscodingIngest(out, LiveOptions(segment_seconds=1.0, part_seconds=part_seconds, audio_only=True),
                               any_key=True)
    try:
        publisher = subprocess.Popen(_audio_publisher(ingest.port, seconds, with_video=with_video),
                                     stderr=subprocess.PIPE, text=True)
        # live: the audio playlist lists segments while the publisher still sends
        playlist = out / "audio" / "index.m3u8"
        _eventually(lambda: (playlist.exists() and "#EXTINF" in playlist.read_text()) or publisher.poll() is not None,
                    30, "no segment listed while live")
        assert publisher.poll() is None, "the publisher ended before any segment was listed"
        assert publisher.wait(60) == 0, publisher.stderr.read() if publisher.stderr else ""
        transcoder = ingest.finished()
    finally:
        ingest.close()
    result = transcoder.result
    assert result.error is None and result.renditions == [] and result.frames_in == 0
    assert result.segments >= seconds - 1 and (result.parts > result.segments if part_seconds else True)
    assert transcoder.top == out / "audio"

    master = (out / MASTER).read_text()
    assert master.count("#EXT-X-STREAM-INF") == 1 and 'CODECS="mp4a.40.2"' in master
    assert "RESOLUTION" not in master and "avc1" not in master and "audio/index.m3u8" in master
    if part_seconds:
        assert "#EXT-X-PART:" in (out / "audio" / "index.m3u8").read_text()
    info = _ffprobe(out / MASTER)
    assert [stream["codec_type"] for stream in info["streams"]] == ["audio"]
    assert info["streams"][0]["codec_name"] == "aac"
    assert abs(float(info["format"]["duration"]) - seconds) < 0.5


# --- end to end ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_scheduled_audio_only_stream_over_rtmps_end_to_end(api_backend: Any,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.live_runtime import live_api, live_ingest

    directory = tmp_path_factory.mktemp("live-options")
    certificate = self_signed(tmp_path_factory.mktemp("tls"))
    with live_api(api_backend, directory, live={"rtmps_port": 0},
                  edge={"tls_cert": certificate.cert, "tls_key": certificate.key}) as api, \
            live_ingest(api) as ingest:
        port = ingest.server.tls_port
        start = int(time.time()) + 5
        created = api.client.post(f"{api.url}/video/v1/live-streams", json={
            "playback_policies": ["public"], "latency_mode": "reduced", "audio_only": True,
            "kinoray_scheduled_start": start, "new_asset_settings": {"playback_policies": ["public"]}}, timeout=30)
        assert created.status_code == 201, created.text
        stream = created.json()["data"]
        key, live_id, playback_id = stream["stream_key"], stream["id"], stream["playback_ids"][0]["id"]
        assert stream["kinoray_scheduled_start"] == str(start) and stream.get("active_ingest_protocol") is None

        def publish(seconds: int) -> subprocess.CompletedProcess[str]:
            command = [*_audio_publisher(0, seconds, with_video=False)[:-1], f"rtmps://127.0.0.1:{port}/app/{key}"]
            return subprocess.run(command, capture_output=True, text=True, timeout=60 + seconds)

        early = refused("not_started")
        assert publish(1).returncode != 0  # before the start: refused, counted by its reason
        assert refused("not_started") == early + 1
        time.sleep(max(0.0, start - time.time()) + 0.5)  # wait for the start rather than race it

        results: list[subprocess.CompletedProcess[str]] = []
        publisher = threading.Thread(target=lambda: results.append(publish(8)))
        publisher.start()
        try:
            def live() -> dict[str, Any] | None:
                data = api.client.get(f"{api.url}/video/v1/live-streams/{live_id}", timeout=10).json()["data"]
                return data if data["status"] == "active" else None

            active = _eventually(live, 40, "the stream goes active")
            assert (active["active_ingest_protocol"], active["kinoray_active_ingest_protocol"]) == ("rtmp", "rtmps")
            info = _ffprobe(f"{api.edge_url}/{playback_id}.m3u8")
            assert [item["codec_type"] for item in info["streams"]] == ["audio"]
            thumbnail = requests.get(f"{api.edge_url}/{playback_id}/thumbnail.jpg", timeout=10)
            assert thumbnail.status_code == 404 and thumbnail.json()["error"]["type"] == "not_found", thumbnail.text
            asset_id = active["active_asset_id"]
        finally:
            publisher.join(90)
        assert results and results[0].returncode == 0, results[0].stderr if results else "no publisher result"

        def ready() -> dict[str, Any] | None:
            data = api.client.get(f"{api.url}/video/v1/assets/{asset_id}", timeout=10).json()["data"]
            assert data["status"] != "errored", data
            return data if data["status"] == "ready" else None

        asset = _eventually(ready, 120, "the recording becomes a ready asset")
        assert [track["type"] for track in asset["tracks"]] == ["audio"]
        assert abs(float(asset["duration"]) - 8) < 1.5
        after = api.client.get(f"{api.url}/video/v1/live-streams/{live_id}", timeout=10).json()["data"]
        assert after.get("active_ingest_protocol") is None and after["status"] == "idle"


@pytest.mark.slow
def test_an_audio_only_stream_goes_on_after_its_transcoder_is_killed(tmp_path: Path) -> None:
    import asyncio

    import ray

    from kinoray.cluster.live import LiveFeed
    from kinoray.cluster.local import ensure_ray
    from kinoray.store.objects import ObjectStore

    started = not ray.is_initialized()
    ensure_ray(num_cpus=2)
    store, feeds = ObjectStore(str(tmp_path / "storage")), []
    ingest = Ingest()

    async def authorize(request: PublishRequest) -> LiveFeed:
        feeds.append(LiveFeed(store, "live/audio", LiveOptions(segment_seconds=1.0, audio_only=True), cpus=0.5))
        return feeds[-1]

    ingest.server.authorize = authorize
    playlist = Path(store.path("live/audio/audio/index.m3u8"))
    try:
        publisher = subprocess.Popen(_audio_publisher(ingest.port, 14, with_video=False), stderr=subprocess.PIPE,
                                     text=True)
        _eventually(lambda: playlist.exists() and playlist.read_text().count("#EXTINF") >= 3, 60,
                    "no segments while live")
        [feed] = feeds
        first = feed.actor
        ray.kill(first, no_restart=True)
        assert publisher.wait(60) == 0, publisher.stderr.read() if publisher.stderr else ""
        asyncio.run_coroutine_threadsafe(feed.wait(), ingest.loop).result(120)
    finally:
        ingest.close()
        if started:
            ray.shutdown()
    assert feed.restarts == 1 and feed.actor is not first
    text = playlist.read_text().split("#EXT-X-MAP", 1)[1]
    before, after = text.split("#EXT-X-DISCONTINUITY")
    assert before.count("#EXTINF") >= 3 and after.count("#EXTINF") >= 3, text  # the audio went on after the loss
    info = _ffprobe(playlist)
    assert [stream["codec_type"] for stream in info["streams"]] == ["audio"]
    assert float(info["format"]["duration"]) >= 9


def test_an_unreadable_certificate_turns_rtmps_off_and_nothing_else(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from kinoray.serve.live_ingest import _tls_context

    certificate = self_signed(tmp_path)
    cert, key = Path(certificate.cert), Path(certificate.key)
    settings = Settings(edge={"tls_cert": cert, "tls_key": key})
    assert isinstance(_tls_context(settings), ssl.SSLContext)
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate\n")
    for bad in (Settings(edge={"tls_cert": broken, "tls_key": key}),
                Settings(edge={"tls_cert": tmp_path / "missing.pem", "tls_key": key})):
        caplog.clear()
        assert _tls_context(bad) is None
        assert any("RTMPS is off" in record.getMessage() for record in caplog.records)
    assert _tls_context(Settings(edge={"tls_cert": cert, "tls_key": key}, live={"rtmps_port": None})) is None
