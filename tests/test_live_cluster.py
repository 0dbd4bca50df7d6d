"""Live streams on Ray (``kinoray.cluster.live``): the ingest feeds a transcoder actor; when that actor is
killed mid-stream (what a lost node does), another takes over and the playlists go on after a discontinuity
while the publisher keeps sending; the recording (``kinoray.live.recording``) holds both transcoders' segments
as two sections of one VOD timeline. Judged by Debian's ``ffprobe`` on the rung playlists and the recording.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from kinoray.cluster.live import LiveFeed
from kinoray.live import PublishRequest
from kinoray.live.recording import RecordingTarget, publish_recording, recording_sections
from kinoray.live.transcode import LiveOptions
from kinoray.store.objects import ObjectStore
from tests.test_live_rtmp import KEY, Ingest, publisher_command

pytestmark = pytest.mark.slow

FPS, SEGMENT = 25, 1.0
PREFIX = "live/stream1"
RECORDING = "recording000000000001"


@pytest.fixture(scope="module")
def local_ray(s3_server) -> Iterator[None]:  # S3's credentials first, for the actors' processes to inherit
    from kinoray.cluster.local import ensure_ray

    started = not ray.is_initialized()
    ensure_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


def _publish(port: int, seconds: int) -> subprocess.Popen:
    return subprocess.Popen(publisher_command(port, KEY, seconds=seconds, size="426x240"), stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return ObjectStore(str(tmp_path / "storage"))
    return ObjectStore(f"s3://{request.getfixturevalue('s3_bucket')}/storage")


def test_a_killed_transcoder_is_replaced_and_the_stream_goes_on(local_ray, store: ObjectStore,
                                                               tmp_path: Path) -> None:
    out = Path(store.path(PREFIX)) if store.is_local else tmp_path / "downloaded"
    feeds: list[LiveFeed] = []
    events: list[tuple[str, object]] = []
    ingest = Ingest()

    async def authorize(request: PublishRequest) -> LiveFeed | None:
        if request.key != KEY:
            return None
        feed = LiveFeed(store, PREFIX, LiveOptions(segment_seconds=SEGMENT, heights=(240,), encoder="libx264",
                                                   preset="ultrafast"), cpus=0.5,
                        recording=RecordingTarget(RECORDING, 0),
                        on_segment=lambda count: events.append(("segment", count)),
                        on_end=lambda result, error: events.append(("end", error)))
        feeds.append(feed)
        return feed

    ingest.server.authorize = authorize
    try:
        publisher = _publish(ingest.port, 14)
        key = f"{PREFIX}/240p/index.m3u8"
        deadline = time.monotonic() + 60
        while not (store.exists(key) and store.get_bytes(key).count(b"#EXTINF") >= 3):
            assert publisher.poll() is None and time.monotonic() < deadline, "no segments while live"
            time.sleep(0.1)
        [feed] = feeds
        first = feed.actor
        ray.kill(first, no_restart=True)  # what losing the actor's node does
        assert publisher.wait(60) == 0, publisher.stderr.read() if publisher.stderr else ""
        asyncio.run_coroutine_threadsafe(feed.wait(), ingest.loop).result(120)
    finally:
        ingest.close()

    if not store.is_local:  # what the store holds, copied here for ffprobe
        for stored in store.list(PREFIX):
            store.get_file(stored, out / stored.removeprefix(f"{PREFIX}/"))
    playlist = out / "240p" / "index.m3u8"
    assert feed.restarts == 1 and feed.actor is not first
    assert events[0] == ("segment", events[0][1]) and events[-1] == ("end", None)
    # (FFmpeg's muxer, appending to the list, also marks its very first segment; a player ignores that one)
    text = playlist.read_text().split("#EXT-X-MAP", 1)[1]
    assert text.count("#EXT-X-DISCONTINUITY") == 1 and text.rstrip().endswith("#EXT-X-ENDLIST")
    before, after = text.split("#EXT-X-DISCONTINUITY")
    assert before.count("#EXTINF") >= 3 and after.count("#EXTINF") >= 3  # the stream went on after the loss
    numbers = [int(n) for n in re.findall(r"seg_(\d+)\.m4s", text)]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # one continuous media sequence
    assert sorted(path.name for path in (out / "240p").glob("seg_*.m4s")) == [f"seg_{n:05d}.m4s" for n in numbers]
    done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
                           "-of", "csv=p=0", str(playlist)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    decoded = int(done.stdout.split()[0])  # the stream, also listed under its HLS program
    assert 9 * FPS <= decoded <= 14 * FPS  # all but the few seconds the replacement took to start

    # the recording: both transcoders' segments, the second's after a discontinuity, on one timeline
    assert [section["section"] for section in recording_sections(store, RECORDING)] == ["0000-00", "0000-01"]
    published = publish_recording(store, RECORDING, SEGMENT)
    assert published.sections == 2
    media = tmp_path / "recording"
    for stored in store.list(f"assets/{RECORDING}/media"):
        store.get_file(stored, media / stored.removeprefix(f"assets/{RECORDING}/media/"))
    assert (media / "240p" / "index.m3u8").read_text().count("#EXT-X-DISCONTINUITY") == 1
    for target in (media / "master.m3u8", media / "highest.mp4"):
        done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                               "stream=nb_read_frames", "-of", "csv=p=0", str(target)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        # what the live playlists listed, give or take the segment a dying transcoder had not logged
        assert abs(int(done.stdout.split()[0]) - decoded) <= SEGMENT * FPS, target.name
