"""Live recordings made of the live ladder's own segments (``kinoray.live.recording``): no second encode.

Two levels. The recorder and the publication on their own: the live transcoder (FFmpeg's HLS muxer, and the
LL-HLS packager) fed an FLV made by Debian's ``ffmpeg`` at a few times real time, a :class:`SegmentRecorder`
beside it with a DVR window of 3 segments (so the recording must keep what the live playlists drop), two
transcoder runs as two sections; then :func:`publish_recording`. And end to end: a live stream made through the
API, Debian's ``ffmpeg`` publishing over RTMP, the recording ``ready`` seconds after the publisher stops, with
the same HTTP surface as any VOD asset (HLS, ``highest.mp4``, thumbnail, storyboard).

Judged independently: ``ffprobe``/``ffmpeg`` decode the HLS, DASH and MP4 with no error and count the frames;
the ``m3u8`` and ``mpegdash`` libraries parse the manifests; keyframe times are compared across rungs.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import m3u8
import pytest
import requests
from mpegdash.parser import MPEGDASHParser

from kinoray.errors import InvalidMediaError, UnsupportedMediaError
from kinoray.live.fragments import read_init, segment_timing, shift_segment
from kinoray.live.recording import (
    RecordingTarget,
    SegmentRecorder,
    publish_recording,
    recording_sections,
)
from kinoray.store.objects import ObjectStore
from tests.live_runtime import paced_pipe

log = logging.getLogger(__name__)

FPS, SECONDS, SEGMENT = 25, 4, 1.0
ASSET = "recording0000000000001"


def _flv(path: Path, size: str = "320x180", seconds: int = SECONDS) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-c:a", "aac", "-f", "flv", str(path)],
                   check=True, timeout=120)
    return path.read_bytes()


def _record(store: ObjectStore, flv: bytes, connection: int, *, part_seconds: float | None = None,
            speed: float = 4.0, asset_id: str = ASSET) -> Any:
    """One transcoder run (a section) writing the live output where a local store's live prefix is, paced at
    ``speed`` × real time, with its recorder polling beside it; the transcoder's result."""
    from kinoray.live.transcode import LiveOptions, LiveTranscoder

    out = Path(store.path("live/stream"))
    out.mkdir(parents=True, exist_ok=True)
    target = RecordingTarget(asset_id, connection)
    recorder = SegmentRecorder(out, store, target, target.section(0))
    stop = threading.Event()
    polling = threading.Thread(target=recorder.run, args=(stop, 0.1), daemon=True)
    polling.start()
    result = LiveTranscoder(paced_pipe(flv, speed), out, LiveOptions(segment_seconds=SEGMENT, part_seconds=part_seconds,
                                                   heights=(180, 120), encoder="libx264", preset="ultrafast",
                                                   window_segments=3)).run()
    stop.set()
    polling.join(10)
    recorder.close(encoder=result.encoder, error=result.error, frames=result.frames_in)
    assert result.error is None and result.frames_in == SECONDS * FPS
    return result


def _frames(target: str | Path) -> tuple[int, str]:
    """Video frames ffprobe decodes from ``target`` and what it printed on stderr."""
    done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                           "stream=nb_read_frames", "-of", "json", str(target)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["streams"][0]["nb_read_frames"]), done.stderr


def _decode_errors(target: str | Path) -> str:
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(target), "-f", "null", "-"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _keyframes(playlist: Path) -> list[float]:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey",
                           "-show_entries", "frame=pts_time", "-of", "csv=p=0", str(playlist)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [round(float(line.strip().rstrip(",")), 3) for line in done.stdout.split() if line.strip()]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _flv(tmp_path_factory.mktemp("recording-source") / "source.flv")


@pytest.fixture(scope="module", params=["hls", "llhls"])
def two_sections(request: pytest.FixtureRequest, source: bytes,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ObjectStore, Any]]:
    """A recording of two transcoder runs (a cut and a resume) in a local store, published."""
    store = ObjectStore(str(tmp_path_factory.mktemp(f"recording-{request.param}")))
    part = 0.5 if request.param == "llhls" else None
    for connection in (0, 1):
        _record(store, source, connection, part_seconds=part)
    started = time.monotonic()
    published = publish_recording(store, ASSET, SEGMENT)
    took = time.monotonic() - started
    log.info("%s: %.2f s of recording published in %.3f s", request.param, float(published.duration), took)
    yield store, published


def test_the_recording_keeps_every_segment_the_window_dropped(two_sections: tuple[ObjectStore, Any]) -> None:
    store, published = two_sections
    media = Path(store.path(f"assets/{ASSET}/media"))
    assert published.sections == 2 and [track.name for track in published.video] == ["180p", "120p"]
    assert abs(float(published.duration) - 2 * SECONDS) <= SEGMENT  # both sections, ±1 segment
    # the live playlists kept 3 segments; the recording has every one, numbered on across the sections
    for track in (*published.video, published.audio):
        names = sorted(path.name for path in (media / track.name).glob("seg_*.m4s"))
        assert names == [f"seg_{n:05d}.m4s" for n in range(1, len(track.segments) + 1)]
        assert len(names) >= 2 * SECONDS / SEGMENT - 1
    playlist = m3u8.load(str(media / "180p" / "index.m3u8"))
    assert playlist.playlist_type == "vod" and playlist.is_endlist
    assert [segment.discontinuity for segment in playlist.segments].count(True) == 1
    text = (media / "180p" / "index.m3u8").read_text()
    assert text.count("#EXT-X-MAP") == 2  # its map again after the discontinuity
    master = m3u8.load(str(media / "master.m3u8"))
    assert [p.stream_info.resolution for p in master.playlists] == [(320, 180), (214, 120)]
    assert [m.type for m in master.media] == ["AUDIO"]
    # DASH: one period over the same files, every segment on the timeline
    mpd = MPEGDASHParser.parse(str(media / "manifest.mpd"))
    [period] = mpd.periods
    video = next(a for a in period.adaptation_sets if a.content_type == "video")
    top = video.representations[0]
    timeline = top.segment_templates[0].segment_timelines[0].Ss
    assert sum((entry.r or 0) + 1 for entry in timeline) == len(published.video[0].segments)
    assert store.exists(f"assets/{ASSET}/media/highest.mp4")


def test_the_recording_decodes_end_to_end_with_the_published_frames(two_sections: tuple[ObjectStore, Any]) -> None:
    store, published = two_sections
    media = Path(store.path(f"assets/{ASSET}/media"))
    published_frames = 2 * SECONDS * FPS
    per_segment = int(SEGMENT * FPS)
    for target in (media / "master.m3u8", media / "manifest.mpd", media / "highest.mp4",
                   media / "120p" / "index.m3u8"):
        frames, _ = _frames(target)
        assert abs(frames - published_frames) <= per_segment, (target.name, frames)
        assert _decode_errors(target) == "", target.name
    # one timeline: keyframes on every rung at the same instants, about a segment apart (a section's last
    # segment may be shorter), rising across the cut
    top, low = (_keyframes(media / name / "index.m3u8") for name in ("180p", "120p"))
    assert top == low and len(top) >= 2 * SECONDS - 1
    assert all(0 < b - a <= 1.1 * SEGMENT for a, b in zip(top, top[1:], strict=False)), top


def test_segment_timing_and_shift(two_sections: tuple[ObjectStore, Any]) -> None:
    store, published = two_sections
    track = published.video[0]
    header = read_init(store.get_bytes(f"assets/{ASSET}/media/{track.name}/init.mp4"))
    assert (header.kind, header.codec, header.width, header.height) == ("video", "h264", 320, 180)
    data = store.get_bytes(f"assets/{ASSET}/media/{track.name}/seg_00002.m4s")
    timing = segment_timing(data, header.default_duration)
    assert (timing.start, timing.duration) == (track.segments[1].start, track.segments[1].duration)
    assert timing.samples == round(timing.duration * FPS / header.timescale)  # one sample per frame
    moved = segment_timing(shift_segment(data, 9000, header.timescale), header.default_duration)
    assert (moved.start, moved.duration) == (timing.start + 9000, timing.duration)
    with pytest.raises(InvalidMediaError):
        shift_segment(data, -timing.start - 1, header.timescale)  # before 0
    with pytest.raises(InvalidMediaError):
        segment_timing(b"\x00\x00\x00\x08free")


def test_a_format_change_between_connections_is_refused(source: bytes, tmp_path: Path) -> None:
    """A publisher that comes back at another picture shape makes other init segments: not one track per rung."""
    store = ObjectStore(str(tmp_path / "store"))
    _record(store, source, 0)
    _record(store, _flv(tmp_path / "square.flv", size="240x180"), 1)
    with pytest.raises(UnsupportedMediaError, match="changed its format"):
        publish_recording(store, ASSET, SEGMENT)


def test_a_run_that_wrote_no_segment_is_unusable_with_its_reason(tmp_path: Path) -> None:
    store = ObjectStore(str(tmp_path / "store"))
    (tmp_path / "live").mkdir()
    recorder = SegmentRecorder(tmp_path / "live", store, RecordingTarget(ASSET, 0), "0000-00")
    recorder.close(error="UnsupportedMediaError: live audio must be AAC, not mp3", frames=0)
    assert [section["error"] for section in recording_sections(store, ASSET)] == [
        "UnsupportedMediaError: live audio must be AAC, not mp3"]
    with pytest.raises(InvalidMediaError, match="no segment: UnsupportedMediaError"):
        publish_recording(store, ASSET)
    quiet = SegmentRecorder(tmp_path / "live", store, RecordingTarget("other0000000000000001", 0), "0000-00")
    quiet.close()  # connected and sent nothing: no log at all (the asset is deleted, as before)
    assert recording_sections(store, "other0000000000000001") == []


# --- the control plane: the session's end publishes the recording (no Ray, no HTTP; SQLite and PostgreSQL) --------


@pytest.fixture(scope="module")
def platform(api_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from kinoray.control.platform import Platform
    from kinoray.settings import Settings

    platform = Platform.from_settings(Settings(data_dir=tmp_path_factory.mktemp("recording-control"),
                                               database_url=api_backend.new_url(), environment="test"))
    try:
        yield platform
    finally:
        platform.close()


def _session(platform: Any, **fields: Any) -> Any:
    from kinoray.control.live import LiveStreamCreate, authorize_publish, create_live_stream

    with platform.db.session() as session:
        stream, key = create_live_stream(session, LiveStreamCreate(playback_policies=["public"], **fields))
    publish = authorize_publish(platform, key)
    assert publish is not None and not publish.keep_source
    return publish


def _row(platform: Any, asset_id: str) -> Any:
    from kinoray.store.models import Asset

    with platform.db.reader() as session:
        asset = session.get(Asset, asset_id)
        if asset is not None:
            session.expunge(asset)
        return asset


def test_the_session_end_publishes_the_recorded_segments(platform: Any, source: bytes) -> None:
    import sqlalchemy as sa

    from kinoray.control.live import complete_live_stream, publish_active, publish_ended
    from kinoray.control.master import set_master_access
    from kinoray.errors import ConflictError
    from kinoray.store.models import Asset, Event, Job

    publish = _session(platform, reconnect_window=60)
    _record(platform.store, source, publish.part, asset_id=publish.asset_id)
    assert publish_active(platform, publish.live_stream_id)
    publish_ended(platform, publish.live_stream_id, None)
    assert _row(platform, publish.asset_id).progress_state == "live"  # within the window: still recording
    started = time.monotonic()
    complete_live_stream(platform, publish.live_stream_id)  # ends the session: published in this call
    took = time.monotonic() - started
    log.info("the session's end published the recording in %.3f s", took)
    asset = _row(platform, publish.asset_id)
    assert (asset.status.value, asset.progress_state) == ("ready", "completed")
    assert abs(asset.duration - SECONDS) <= SEGMENT and asset.aspect_ratio == "16:9"
    assert (asset.resolution_tier, asset.video_codec, asset.encoder_backend) == ("720p", "h264", "libx264")
    assert asset.max_stored_frame_rate == FPS
    assert sorted(track["type"] for track in asset.tracks) == ["audio", "video"]
    video = next(track for track in asset.tracks if track["type"] == "video")
    assert (video["max_width"], video["max_height"]) == (320, 180)
    with platform.db.reader() as session:
        events = list(session.scalars(sa.select(Event.type).where(Event.object_id == publish.asset_id)
                                      .order_by(Event.created_at, Event.id)))
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)
                              .where(Job.asset_id == publish.asset_id)) == 0, "no transcode job"
    assert events.index("video.asset.ready") < events.index("video.asset.live_stream_completed")
    assert recording_sections(platform.store, publish.asset_id) == []  # the logs are gone
    frames, _ = _frames(platform.store.path(f"assets/{publish.asset_id}/media/master.m3u8"))
    assert abs(frames - SECONDS * FPS) <= SEGMENT * FPS
    with platform.db.session() as session, pytest.raises(ConflictError, match="kept no source"):
        set_master_access(session, session.get(Asset, publish.asset_id), "temporary", platform.settings)


def test_a_recording_without_segments_ends_errored_with_the_reason(platform: Any, tmp_path: Path) -> None:
    from kinoray.control.live import publish_ended

    publish = _session(platform, reconnect_window=0)
    (tmp_path / "live").mkdir()
    SegmentRecorder(tmp_path / "live", platform.store, RecordingTarget(publish.asset_id, 0), "0000-00").close(
        error="UnsupportedMediaError: live audio must be AAC, not mp3", frames=0)
    publish_ended(platform, publish.live_stream_id, "UnsupportedMediaError: live audio must be AAC, not mp3")
    asset = _row(platform, publish.asset_id)
    assert asset.status.value == "errored", asset.progress_state
    assert asset.errors["type"] == "invalid_media"
    assert "no segment: UnsupportedMediaError: live audio must be AAC" in asset.errors["messages"][0]


def test_a_recording_still_written_is_published_when_its_transcoder_ends(platform: Any, source: bytes) -> None:
    """A session may end while its feed still shows the slate: the recording waits for that transcoder
    (:func:`recording_ended`), never published without its last segments."""
    from kinoray.control.live import complete_live_stream, publish_ended, recording_ended

    publish = _session(platform, reconnect_window=60)
    _record(platform.store, source, publish.part, asset_id=publish.asset_id)
    log = f"assets/{publish.asset_id}/recording/0000-00.json"
    closed = platform.store.get_bytes(log)
    platform.store.put_bytes(closed.replace(b'"closed": true', b'"closed": false'), log)  # still being written
    publish_ended(platform, publish.live_stream_id, None)
    complete_live_stream(platform, publish.live_stream_id)
    assert _row(platform, publish.asset_id).progress_state == "live", "not published before its transcoder ends"
    platform.store.put_bytes(closed, log)  # the transcoder ended: its recorder closed the section
    recording_ended(platform, publish.asset_id)
    assert _row(platform, publish.asset_id).status.value == "ready"


# --- end to end: the API, the RTMP ingest, Debian's ffmpeg ------------------------------------------------------


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.live_runtime import live_api

    with live_api(api_backend, tmp_path_factory.mktemp("live-recording")) as server:
        yield server


@pytest.fixture(scope="module")
def ingest(api) -> Iterator[Any]:
    from tests.live_runtime import live_ingest

    with live_ingest(api) as service:
        yield service


def _create(api, **body: Any) -> dict[str, Any]:
    created = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "latency_mode": "reduced", **body}, timeout=30)
    assert created.status_code == 201, created.text
    return dict(created.json()["data"])


def _asset(api, asset_id: str) -> dict[str, Any]:
    answer = api.client.get(f"{api.url}/video/v1/assets/{asset_id}", timeout=10)
    answer.raise_for_status()
    return dict(answer.json()["data"])


def _events(api, object_id: str) -> list[str]:
    import sqlalchemy as sa

    from kinoray.store.models import Event

    with api.platform.db.reader() as session:
        return list(session.scalars(sa.select(Event.type).where(Event.object_id == object_id)
                                    .order_by(Event.created_at, Event.id)))


def _eventually_gone(path: Path, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while path.exists():
        assert time.monotonic() < deadline, f"{path} is still there"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_broadcast_is_a_ready_vod_asset_seconds_after_it_ends(api, ingest) -> None:
    from tests.test_live_rtmp import publish

    stream = _create(api, reconnect_window=0, new_asset_settings={
        "playback_policies": ["public"], "static_renditions": [{"resolution": "highest"}]})
    done = publish(ingest.port, stream["stream_key"], seconds=SECONDS, size="320x180")
    ended = time.monotonic()
    assert done.returncode == 0, done.stderr
    answer = api.client.get(f"{api.url}/video/v1/live-streams/{stream['id']}", timeout=10).json()["data"]
    asset_id = answer["active_asset_id"] or answer["recent_asset_ids"][-1]
    while (asset := _asset(api, asset_id))["status"] == "preparing":
        assert time.monotonic() - ended < 60, asset
        time.sleep(0.1)
    took = time.monotonic() - ended
    log.info("recording ready %.2f s after the publisher ended", took)
    assert asset["status"] == "ready", asset.get("errors")
    assert took < 20  # seconds, not a transcode (a loaded 2-core test machine; measured ~2-4 s alone)
    assert abs(asset["duration"] - SECONDS) <= 1.0 and asset["aspect_ratio"] == "16:9"
    assert {track["type"] for track in asset["tracks"]} == {"video", "audio"}
    assert asset["live_stream_id"] == stream["id"] and asset["is_live"] is False
    storage = Path(api.settings.storage_url, "assets", asset_id)
    assert not list(storage.glob("input*")), "no source kept without master access"
    _eventually_gone(storage / "recording")  # the segment logs go once published (just after ready)

    [playback] = asset["playback_ids"]
    frames, _ = _frames(f"{api.edge_url}/{playback['id']}.m3u8")
    assert abs(frames - SECONDS * FPS) <= SEGMENT * FPS
    assert _decode_errors(f"{api.edge_url}/{playback['id']}.m3u8") == ""
    deadline = time.monotonic() + 60
    while (mp4 := requests.get(f"{api.edge_url}/{playback['id']}/highest.mp4", timeout=30)).status_code != 200:
        assert time.monotonic() < deadline, mp4.text
        time.sleep(0.3)
    (storage.parent / f"{asset_id}.mp4").write_bytes(mp4.content)
    frames, _ = _frames(storage.parent / f"{asset_id}.mp4")
    assert abs(frames - SECONDS * FPS) <= SEGMENT * FPS
    thumbnail = requests.get(f"{api.edge_url}/{playback['id']}/thumbnail.jpg", params={"time": 2}, timeout=60)
    assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff", thumbnail.text[:200]
    storyboard = requests.get(f"{api.edge_url}/{playback['id']}/storyboard.vtt", timeout=60)
    assert storyboard.status_code == 200 and storyboard.text.startswith("WEBVTT"), storyboard.text[:200]
    events = _events(api, asset_id)
    assert events.index("video.asset.ready") < events.index("video.asset.live_stream_completed")


@pytest.mark.slow
@pytest.mark.parametrize("latency_mode", ["standard", "reduced"])
def test_a_cut_and_resume_is_one_recording(api, ingest, latency_mode: str) -> None:
    """Back within the reconnect window: the same recording. Standard latency (no slate): the second
    connection's transcoder is a second section, after ``EXT-X-DISCONTINUITY``. Reduced latency: the slate fills
    the gap in one transcoder run, the recording holds it, and it is published when that run ends after the
    session does. ``master_access: temporary`` keeps the source too (joined for the master download)."""
    from tests.test_live_rtmp import publish

    stream = _create(api, latency_mode=latency_mode, reconnect_window=30, new_asset_settings={
        "playback_policies": ["public"], "master_access": "temporary"})
    key = stream["stream_key"]
    assert publish(ingest.port, key, seconds=3, size="320x180").returncode == 0
    deadline = time.monotonic() + 30  # the runtime reports the publisher gone once its transcoder drained
    while (live := api.client.get(f"{api.url}/video/v1/live-streams/{stream['id']}", timeout=10).json()["data"]
           )["kinoray_session"] != "disconnected":
        assert time.monotonic() < deadline, live
        time.sleep(0.1)
    assert publish(ingest.port, key, seconds=3, size="320x180").returncode == 0
    live = api.client.get(f"{api.url}/video/v1/live-streams/{stream['id']}", timeout=10).json()["data"]
    asset_id = live["active_asset_id"]
    assert asset_id
    ended = time.monotonic()
    assert api.client.put(f"{api.url}/video/v1/live-streams/{stream['id']}/complete", timeout=30).status_code == 200
    asset = api.wait_asset(asset_id, timeout=60)
    log.info("%s: resumed recording ready %.2f s after complete", latency_mode, time.monotonic() - ended)
    assert asset["status"] == "ready", asset.get("errors")
    assert asset["master_access"] == "temporary" and asset["master"]["status"] == "ready"
    storage = Path(api.settings.storage_url, "assets", asset_id)
    assert (storage / "input").is_file() and not list(storage.glob("input.part-*"))
    _eventually_gone(storage / "recording")  # the segment logs go once published (just after ready)
    [playlist] = (storage / "media").glob("*p/index.m3u8")  # the test ladder's one rung
    [playback] = asset["playback_ids"]
    url = f"{api.edge_url}/{playback['id']}.m3u8"
    frames, _ = _frames(url)
    assert _decode_errors(url) == ""
    if latency_mode == "standard":
        assert playlist.read_text().count("#EXT-X-DISCONTINUITY") == 1
        assert abs(asset["duration"] - 6) <= 2.0  # two sections of 3 s (2 s segments)
        assert abs(frames - 6 * FPS) <= 2 * FPS
    else:
        assert playlist.read_text().count("#EXT-X-DISCONTINUITY") == 0
        assert asset["duration"] >= 6 - 1  # both connections and the slate between them
        assert frames >= 5 * FPS
