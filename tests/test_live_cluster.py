"""Live streams on Ray (``kinoray.cluster.live``): the ingest feeds a transcoder actor; when that actor is
killed mid-stream (what a lost node does), another takes over and the playlists go on after a discontinuity
while the publisher keeps sending; the recording (``kinoray.live.recording``) holds both transcoders' segments
as two sections of one VOD timeline. Judged by Debian's ``ffprobe`` on the rung playlists and the recording.

A stream's transcoder on a node whose CPUs the encoder actors of a finished VOD job hold (kept for the next job,
``cluster.keep_workers_seconds``) releases them and starts; encoders a running job uses are left alone.
"""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import ray

from kinoray.cluster import ChunkEvent, TranscodeJob
from kinoray.cluster.live import LiveFeed
from kinoray.cluster.pool import kept_workers, release_kept_workers
from kinoray.live import PublishRequest
from kinoray.live.recording import RecordingTarget, publish_recording, recording_sections
from kinoray.live.transcode import LiveOptions
from kinoray.media.pipeline import TranscodeOptions, TranscodeResult
from kinoray.settings import ClusterSettings, Settings
from kinoray.store.objects import ObjectStore
from tests import oracles
from tests.media import MediaSpec, make_media
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
    text = playlist.read_text()
    assert text.count("#EXT-X-DISCONTINUITY") == 1 and text.rstrip().endswith("#EXT-X-ENDLIST")
    before, after = text.split("#EXT-X-DISCONTINUITY")
    # the replacement's segments decode with its own init, the first's with theirs (never overwritten)
    assert re.findall(r'#EXT-X-MAP:URI="([^"]+)"', before) == ["init.mp4"]
    assert re.findall(r'#EXT-X-MAP:URI="([^"]+)"', after) == ["init-1.mp4"]
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


# --- a live transcoder takes the CPUs of the encoder actors finished VOD jobs keep ---------------------------

VOD = MediaSpec(name="live_cluster_vod", width=320, height=180, fps=Fraction(25), duration_s=Fraction(8), gop=25)
VOD_OPTIONS = TranscodeOptions(ladder=(180,), segment_seconds=1, chunk_seconds=1)


@pytest.fixture()
def vod(local_ray, media_dir: Path, tmp_path: Path) -> Iterator[Callable[..., tuple[TranscodeResult, set[int]]]]:
    """Run a VOD job on the module's 2-CPU Ray whose clean end keeps its encoder actors for 120 s (far longer
    than this test waits): its result and its workers' pids. Kept actors are released at the end, for the next
    test's CPUs."""
    source = make_media(VOD, media_dir)
    settings = Settings(data_dir=tmp_path / "data").model_copy(update={"cluster": ClusterSettings(
        keep_workers_seconds=120, worker_start_timeout_seconds=120)})
    runs = 0
    gc.collect()  # an earlier test's transcoders die with their last handle, which a reference cycle may hold
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0.0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0.0) == 2, "an earlier test's actors still hold CPUs"

    def run(on_event: Callable[[ChunkEvent], None] | None = None, *,
            workers: int = 2) -> tuple[TranscodeResult, set[int]]:
        """``workers``: completions are held 0.5 s each until that many workers took items — a fresh worker
        process takes seconds to start, and only those that started before the job ends are kept."""
        nonlocal runs
        runs += 1
        events: list[ChunkEvent] = []

        def hook(event: ChunkEvent) -> None:
            events.append(event)
            if event.kind == "done" and len({e.worker_pid for e in events if e.kind == "dispatched"}) < workers:
                time.sleep(0.5)
            if on_event is not None:
                on_event(event)

        result = TranscodeJob(str(source), str(tmp_path / f"vod{runs}"), VOD_OPTIONS, settings=settings,
                              on_event=hook).run()
        assert result.retries == 0 and oracles.count_frames(tmp_path / f"vod{runs}" / "180p" / "index.m3u8") == 200
        return result, {e.worker_pid for e in events if e.kind == "dispatched" and e.worker_pid is not None}

    yield run
    release_kept_workers()


def _live_feed(store: ObjectStore, **options: Any) -> LiveFeed:
    return LiveFeed(store, PREFIX, LiveOptions(segment_seconds=SEGMENT, heights=(240,), encoder="libx264",
                                               preset="ultrafast"), cpus=1.0, **options)


async def _started(feed: LiveFeed, timeout: float = 90.0) -> bool:
    """Whether the feed's transcoder actor runs within ``timeout`` (well under the 120 s the encoders are kept)."""
    ready, _ = await asyncio.to_thread(ray.wait, [feed.actor.__ray_ready__.remote()], timeout=timeout)
    return bool(ready)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _gone(pids: set[int], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(pid) for pid in pids)


def test_a_live_transcoder_takes_the_cpus_of_kept_encoders(vod, tmp_path: Path) -> None:
    """The encoder actors a finished VOD job keeps hold both CPUs; a live stream's transcoder (1 CPU) releases
    them and starts, and the next VOD job, finding its kept actors given up, starts new ones and is unharmed."""
    _, first = vod()
    assert kept_workers() == 2 and all(_alive(pid) for pid in first)
    assert ray.available_resources().get("CPU", 0.0) == 0  # what the live transcoder would wait 120 s for

    async def live() -> LiveFeed:
        feed = _live_feed(ObjectStore(str(tmp_path / "storage")), reclaim_after=0.5)
        started = await _started(feed)
        feed.ended(None)
        await feed.wait()
        assert started
        return feed

    feed = asyncio.run(live())
    assert feed.encoders_released == 2 and feed.error is None and feed.restarts == 0
    assert _gone(first)
    # still listed as kept by this process, but given up and dead: the next job starts its own (as many as the
    # CPUs the transcoder, still referenced here, leaves it) and finishes as if nothing happened
    assert kept_workers() == 2
    _, second = vod(workers=1)
    assert second and not second & first


def test_encoders_a_job_is_using_are_never_released(vod, tmp_path: Path) -> None:
    """A second VOD job takes over the first one's kept actors and is held mid-job; a live stream waits for CPUs
    meanwhile and its releases (and one made here) leave the job's actors alone. Once the job ends its actors are
    kept — and the waiting transcoder releases them and starts."""
    _, first = vod()
    holding, go = threading.Event(), threading.Event()

    def hold(event: ChunkEvent) -> None:
        if event.kind == "done" and not holding.is_set():
            holding.set()
            assert go.wait(120)

    outcome: list[tuple[TranscodeResult, set[int]]] = []
    job = threading.Thread(target=lambda: outcome.append(vod(hold)))
    job.start()
    try:
        assert holding.wait(120)

        async def live() -> LiveFeed:
            feed = _live_feed(ObjectStore(str(tmp_path / "storage")), reclaim_after=0.3)
            waited = not await _started(feed, timeout=2.0)  # several of the feed's release rounds
            released_here = await asyncio.to_thread(release_kept_workers)
            assert waited and released_here == 0 and feed.encoders_released == 0
            assert all(_alive(pid) for pid in first)
            go.set()
            started = await _started(feed)
            feed.ended(None)
            await feed.wait()
            assert started
            return feed

        feed = asyncio.run(live())
    finally:
        go.set()
        job.join(180)
    [(_, second)] = outcome  # the held job finished cleanly (vod() checked its output and that it retried nothing)
    assert first <= second  # on the first job's actors, which it claimed
    assert feed.encoders_released == kept_workers() == 2 and _gone(second)
