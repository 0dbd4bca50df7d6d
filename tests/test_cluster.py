"""The Ray cluster layer on a real multi-node cluster (``ray.cluster_utils.Cluster``, three raylets here).

Faults are real: a worker process is SIGKILLed mid-chunk, a node's raylet is removed mid-job. The output of a
faulted run must be byte-identical to a clean one (x264 with fixed settings is deterministic — checked too),
and to the in-process engine's. One node advertises a GPU to Ray; its worker probes for real (no CUDA here),
so it reports CPU decode/scale/encode — the scheduling of GPU workers is exercised, no encoder is faked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
import ray

from kinoray.cluster import ChunkEvent, JobState, NodeResources, PoolLayout, TranscodeJob, order_work
from kinoray.cluster.pool import kept_workers
from kinoray.cluster.workers import WorkerCapabilities
from kinoray.errors import ClusterError, InvalidMediaError, JobCancelledError, WorkerLostError
from kinoray.media.pipeline import TranscodeOptions, prepare_asset
from kinoray.settings import ClusterSettings, Settings
from kinoray.store import ObjectStore
from tests import oracles
from tests.media import MATRIX, MediaSpec, make_bad_media, make_media
from tests.reference import engine_digest
from tests.reference import tree_digest as digest

SOURCE = MediaSpec(name="cluster_source", width=640, height=360, duration_s=Fraction(16), gop=30)
# 8 chunks of one 2 s segment: enough items that faults land mid-job.
OPTIONS = TranscodeOptions(ladder=(360, 240), segment_seconds=2, chunk_seconds=2, parallelism=3)


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """Head (1 CPU) + a CPU node (1 CPU) + a node advertising 1 GPU (1 CPU); the driver connected to it."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cpu_node = cluster.add_node(num_cpus=1)
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, cpu_node, gpu_node
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def source(media_dir) -> Path:
    return make_media(SOURCE, media_dir)


def settings_for(tmp_path: Path, **cluster: object) -> Settings:
    base = Settings(data_dir=tmp_path / "data")
    return base.model_copy(update={
        "cluster": ClusterSettings(gpu_sessions_per_gpu=1, worker_start_timeout_seconds=60, **cluster)})


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> dict[str, str]:
    """The in-process engine's output for the same plan (no Ray at all), in a process started with the same
    deterministic-heap setting as the workers."""
    return engine_digest(source, OPTIONS, tmp_path_factory.mktemp("reference") / "out")


def test_pool_layout_follows_node_resources():
    settings = ClusterSettings(gpu_sessions_per_gpu=2)
    nodes = [NodeResources("head", 0, 0), NodeResources("a", 4, 0), NodeResources("g", 8, 1)]
    layout = PoolLayout.from_cluster(settings, nodes)
    assert (layout.gpu_workers, layout.cpu_workers) == (2, 10)
    assert layout.workers[:2] == (("g", "gpu"), ("g", "gpu"))
    assert not any(node == "head" for node, _ in layout.workers)
    # a short pool is spread over nodes, not packed on the first
    assert {node for node, _ in layout.limited(4).workers[2:]} == {"a", "g"}
    assert PoolLayout.from_cluster(ClusterSettings(max_workers=3), nodes).total == 3
    with pytest.raises(ClusterError, match="no CPU"):
        PoolLayout.from_cluster(settings, [NodeResources("head", 0, 0)])


def test_dispatch_order_first_chunk_then_audio_then_longest(source):
    asset = prepare_asset(str(source), replace(OPTIONS, chunk_seconds=6, parallelism=None))
    items = order_work(asset)
    assert items[0].kind == "video" and items[0].index == 0
    assert items[1].kind == "audio"
    rest = items[2:]
    assert [i.cost for i in rest] == sorted((i.cost for i in rest), reverse=True)
    assert sorted(i.index for i in items if i.kind == "video") == list(range(len(asset.plan.chunks)))


def test_cluster_output_identical_to_engine_and_deterministic(cluster, source, reference, tmp_path):
    settings = settings_for(tmp_path)
    for run in range(2):
        records: list = []
        out = tmp_path / f"out{run}"
        job = TranscodeJob(str(source), str(out), OPTIONS, settings=settings, on_update=records.append)
        result = job.run()
        assert digest(out) == reference, f"run {run} differs from the in-process engine"
        assert result.retries == 0 and result.chunks == 8
    # The GPU-advertising node got a GPU worker, which probed honestly and fell back to CPU everything.
    assert records[-1].state is JobState.READY and records[-1].workers == 3
    assert records[-1].encoder == "libx264" and records[-1].fallback_from == "nvenc"
    assert records[-1].decoders == ("cpu",) and records[-1].scalers == ("swscale",)
    done = [r.frames_done for r in records if r.state is JobState.ENCODING]
    assert done == sorted(done) and records[-1].frames_done == records[-1].frames_total == 480
    assert oracles.count_frames(tmp_path / "out0" / "360p" / "index.m3u8") == 480
    assert not list((tmp_path / "data" / "work" / "jobs").iterdir()), "work prefix not cleaned"


def _once_running(pid: int, timeout: float = 10.0) -> bool:
    """Wait until worker ``pid`` is executing its item (Ray titles the process ``ray::EncoderWorker.run`` then).

    A fault must land inside the item: a worker killed before Ray has pushed the task to it is restarted and
    runs the queued task itself — not a retry — and an item that has already finished is not affected at all.
    Either would make a fault test pass or fail by timing (both happened at a fixed 20 ms after dispatch).
    Returns whether it saw the worker in an item (``False``: it never started one within ``timeout``, or is gone).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::EncoderWorker.run"):
                return True
        except OSError:
            return False
        time.sleep(0.002)
    return False


def _kill_on(predicate, action):
    """An on_event hook that runs ``action(event)`` in a thread for the first event matching ``predicate``."""
    fired = threading.Event()

    def hook(event: ChunkEvent) -> None:
        if not fired.is_set() and predicate(event):
            fired.set()
            threading.Thread(target=action, args=(event,), daemon=True).start()

    return hook, fired


def test_worker_killed_mid_chunk_is_retried_and_output_identical(cluster, source, reference, tmp_path):
    def kill(event: ChunkEvent) -> None:
        _once_running(event.worker_pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(event.worker_pid, signal.SIGKILL)

    # On a loaded 2-core machine the kill can land after the worker's last item (the job is done and its worker
    # gone): such a run proves nothing either way and is run again.
    for run in range(3):
        hook, fired = _kill_on(lambda e: e.kind == "dispatched" and e.chunk_index == 3, kill)
        events: list[ChunkEvent] = []
        out = tmp_path / f"out{run}"
        job = TranscodeJob(str(source), str(out), OPTIONS, settings=settings_for(tmp_path / f"run{run}"),
                           on_event=lambda e, hook=hook, events=events: (events.append(e), hook(e)))
        result = job.run()
        assert fired.is_set()
        assert digest(out) == reference
        if result.retries:
            break
    else:
        pytest.fail("every kill of chunk 3's worker missed in 3 runs")
    assert result.retries >= 1 and job.record.retries == result.retries
    assert kept_workers() == 0  # a job that lost a worker hands none on
    killed = next(e.worker_pid for e in events if e.kind == "dispatched" and e.chunk_index == 3)
    # whatever the killed worker held at that moment (chunk 3, or the next item if 3 had just finished) re-ran
    assert any(e.kind == "retry" and e.worker_pid == killed for e in events)


def test_always_dying_chunk_errors_the_asset_without_hanging(cluster, source, tmp_path):
    def kill(event: ChunkEvent) -> None:
        if not _once_running(event.worker_pid):
            idle_kills.append(event.worker_pid)  # chunk 5 was done and no item followed: nothing to kill
        with contextlib.suppress(ProcessLookupError):
            os.kill(event.worker_pid, signal.SIGKILL)

    def hook(event: ChunkEvent) -> None:
        events.append(event)
        if event.kind == "dispatched" and event.chunk_index == 5:
            killers.append(threading.Thread(target=kill, args=(event,), daemon=True))
            killers[-1].start()

    # The harness races the chunk (~0.2 s) on a loaded 2-core machine: a kill can land after chunk 5 is done
    # (it then hits the worker's next item, or an idle worker at the end of the job). Such a run proves nothing
    # either way and is run again.
    for run in range(3):
        events: list[ChunkEvent] = []
        idle_kills: list[int] = []
        killers: list[threading.Thread] = []
        out = tmp_path / f"out{run}"
        job = TranscodeJob(str(source), str(out), OPTIONS,
                           settings=settings_for(tmp_path / f"run{run}", chunk_retries=1), on_event=hook)
        started = time.monotonic()
        try:
            job.run()
        except WorkerLostError as error:
            if "chunk 5 failed 2 times" in str(error):
                break
            missed = error
        else:
            missed = None
        for killer in killers:  # what each kill hit is known once it is done
            killer.join(15)
        assert idle_kills or any(e.kind == "retry" and e.chunk_index != 5 for e in events), (
            f"chunk 5's kills all landed, yet the job ended with {missed!r}")
    else:
        pytest.fail("every kill of chunk 5 missed in 3 runs")
    assert time.monotonic() - started < 120
    assert job.record.state is JobState.ERRORED and job.record.error_type == "worker_lost"
    assert not out.exists(), "nothing may be published for an errored asset"
    assert not list((tmp_path / f"run{run}" / "data" / "work" / "jobs").iterdir())


def test_corrupt_chunk_errors_with_its_reason_and_is_not_retried(cluster, media_dir, tmp_path):
    bad = make_bad_media("corrupt", media_dir)
    events: list[ChunkEvent] = []
    job = TranscodeJob(str(bad), str(tmp_path / "out"), replace(OPTIONS, ladder=(180,), chunk_seconds=2),
                       settings=settings_for(tmp_path), on_event=events.append)
    # The damage hits video or audio samples (they are interleaved): the item is named either way.
    with pytest.raises(InvalidMediaError, match=r"((chunk \d+|audio): )?the (video|audio) data is corrupt"):
        job.run()
    assert job.record.state is JobState.ERRORED and job.record.error_type == "invalid_media"
    assert job.record.retries == 0 and not any(e.kind == "retry" for e in events)
    assert not (tmp_path / "out").exists()


def test_cancel_stops_chunks_and_cleans_temporary_outputs(cluster, source, tmp_path):
    out = tmp_path / "out"
    holder: dict[str, TranscodeJob] = {}
    hook, fired = _kill_on(lambda e: e.kind == "done" and e.chunk_index is not None,
                           lambda e: holder["job"].cancel())
    job = TranscodeJob(str(source), str(out), OPTIONS, settings=settings_for(tmp_path), on_event=hook)
    holder["job"] = job
    with pytest.raises(JobCancelledError):
        job.run()
    assert fired.is_set() and job.record.state is JobState.CANCELLED
    assert job.record.chunks_done < job.record.chunks_total
    assert not out.exists()
    assert not list((tmp_path / "data" / "work" / "jobs").iterdir())
    assert kept_workers() == 0
    # its workers are gone: the cluster's CPUs come back
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 3


@pytest.mark.parametrize("clip", ["audio_only", "no_audio"])
def test_audio_only_and_silent_inputs(cluster, clip, media_dir, tmp_path):
    source = make_media(MATRIX[clip], media_dir)
    job = TranscodeJob(str(source), str(tmp_path / "out"), TranscodeOptions(ladder=(180,)),
                       settings=settings_for(tmp_path))
    result = job.run()
    assert job.record.state is JobState.READY
    if clip == "audio_only":
        assert result.chunks == 0 and result.encoder is None
        assert oracles.decoded_audio_seconds(tmp_path / "out" / "audio.m4a") > 5
    else:
        assert result.audio is None and not (tmp_path / "out" / "audio").exists()
        assert oracles.count_frames(tmp_path / "out" / "180p" / "index.m3u8") == job.record.frames_total > 0


def test_s3_input_work_and_output(cluster, source, s3_bucket, tmp_path):
    """Workers read the source from S3 by range, commit chunks to an S3 work prefix, and the package is
    published to S3 with manifests last; the result equals the local run."""
    bucket = ObjectStore(f"s3://{s3_bucket}")
    bucket.put_file(source, "in/source.mp4")
    settings = settings_for(tmp_path)
    settings = settings.model_copy(update={"storage": settings.storage.model_copy(
        update={"work_url": f"s3://{s3_bucket}/work", "s3_endpoint_url": os.environ["KINORAY_STORAGE__S3_ENDPOINT_URL"]})})
    output = f"s3://{s3_bucket}/assets/a1"
    result = TranscodeJob(f"s3://{s3_bucket}/in/source.mp4", output, OPTIONS, settings=settings).run()
    assert result.master_playlist == f"{output}/master.m3u8"
    keys = bucket.list()
    assert not [k for k in keys if k.startswith("work/")], "work prefix not cleaned"
    assert not list(bucket.iter_temporary())
    local = tmp_path / "downloaded"
    for key in bucket.list("assets/a1"):
        bucket.get_file(key, local / key.removeprefix("assets/a1/"))
    assert oracles.count_frames(local / "240p" / "index.m3u8") == 480
    # A re-publish to the same prefix replaces it completely (no stale keys).
    assert "assets/a1/master.m3u8" in keys


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _worker_pids(events: list[ChunkEvent]) -> set[int]:
    return {e.worker_pid for e in events if e.kind == "dispatched" and e.worker_pid is not None}


def test_workers_are_not_kept_while_another_pool_is_in_use():
    """Kept actors hold Ray CPUs: a job that ends while another job's pool is starting or running kills its
    actors, or it could keep the other job's new actors waiting for those CPUs."""
    from kinoray.cluster.pool import _Kept, _KeptWorkers

    kept = _KeptWorkers()
    session, options, slot = ("job", "node"), (1, 3), ("node", "cpu")
    capabilities = WorkerCapabilities("cpu", 1, "node", "host", ("h264/libx264",), {}, False, "swscale")
    assert kept.take((slot,), session, options) == {}  # job A's pool
    assert kept.take((slot,), session, options) == {}  # job B's pool, while A runs
    kept.ended()  # A ends cleanly
    assert not kept.keep([_Kept(slot, session, options, "actor-a", capabilities)], 30)
    kept.ended()  # B ends cleanly, nothing else in use
    assert kept.keep([_Kept(slot, session, options, "actor-b", capabilities)], 0.05) and kept.count() == 1
    assert kept.take((slot, slot), session, (2, 3)) == {}  # other settings: not reused
    kept.ended()
    assert kept.keep([_Kept(slot, session, options, "actor-c", capabilities)], 0.05)
    time.sleep(0.1)
    kept.expire()
    assert kept.count() == 0


def test_a_worker_is_claimed_or_given_up_never_both():
    """A worker's tenure (what lets a live stream take kept workers' CPUs from another process, and a job take
    them over, without the two ever sharing one): a given-up worker cannot be claimed or kept again, a claimed
    one cannot be given up; the calls themselves run on one thread of the actor (tests/test_live_cluster.py).
    (The rules alone: an ``EncoderWorker`` built here would lower this test process's priority for good.)"""
    from kinoray.cluster.workers import Tenure

    worker = Tenure()
    assert not worker.give_up()  # in use by the job that started it
    assert worker.keep() and worker.claim()  # kept, then taken over by the next job
    assert not worker.give_up() and not worker.claim()  # in use again: neither given up nor claimed twice
    assert worker.keep() and worker.give_up()  # kept, then given up for a live stream
    assert not worker.claim() and not worker.keep() and worker.give_up()  # only the kill is left


def test_a_clean_job_hands_its_workers_to_the_next_and_they_expire(cluster, source, reference, tmp_path):
    """Back-to-back jobs in one process: the second encodes on the first one's actors (same processes, no
    start-up), with identical output; kept actors are killed when their time is up."""
    settings = settings_for(tmp_path, keep_workers_seconds=1.5)
    runs = []
    for n in range(2):
        events: list[ChunkEvent] = []
        result = TranscodeJob(str(source), str(tmp_path / f"out{n}"), OPTIONS, settings=settings,
                              on_event=events.append).run()
        assert result.retries == 0 and digest(tmp_path / f"out{n}") == reference
        runs.append((_worker_pids(events), result.stage_seconds["plan"]))
        assert kept_workers() == 3
    (first, _), (second, second_plan) = runs
    assert second == first and len(first) == 3
    assert second_plan < 1.0  # no actor start: probe + index + plan of a 16 s clip
    deadline = time.monotonic() + 30
    while (kept_workers() or any(_alive(pid) for pid in first)
           or ray.available_resources().get("CPU", 0) < 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kept_workers() == 0 and not any(_alive(pid) for pid in first)
    assert ray.available_resources().get("CPU", 0) == 3


def test_without_keeping_every_job_starts_its_own_workers(cluster, source, tmp_path):
    settings = settings_for(tmp_path, keep_workers_seconds=0)
    seen = []
    for n in range(2):
        events: list[ChunkEvent] = []
        TranscodeJob(str(source), str(tmp_path / f"out{n}"), OPTIONS, settings=settings,
                     on_event=events.append).run()
        seen.append(_worker_pids(events))
        assert kept_workers() == 0
    assert not seen[0] & seen[1]


def _slow_until(joined):
    """An on_event hook that holds each completion for 2.5 s until ``joined(event)`` says a late worker took an
    item: the workers already up would otherwise finish a short job before one on a new node answers (2-8 s
    here: a fresh process imports, then probes every encoder)."""
    seen = threading.Event()

    def hook(event: ChunkEvent) -> None:
        if event.kind == "dispatched" and joined(event):
            seen.set()
        elif event.kind == "done" and not seen.is_set():
            time.sleep(2.5)

    return hook, seen


def test_a_node_that_joins_mid_job_gets_workers_and_output_is_identical(cluster, source, reference, tmp_path):
    the_cluster, _, _ = cluster
    before = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    added: list = []

    def add_node(record) -> None:
        # Once the pool is sized (state encoding): the job cannot have seen this node when it started.
        if record.state is JobState.ENCODING and not added:
            added.append(the_cluster.add_node(num_cpus=1))
            the_cluster.wait_for_nodes()

    slow, joined = _slow_until(lambda e: e.worker_node not in before)
    events: list[ChunkEvent] = []
    records: list = []
    settings = settings_for(tmp_path, rescan_nodes_seconds=0.2, keep_workers_seconds=0)
    job = TranscodeJob(str(source), str(tmp_path / "out"), OPTIONS, settings=settings,
                       on_update=lambda r: (records.append(r), add_node(r)),
                       on_event=lambda e: (events.append(e), slow(e)))
    try:
        result = job.run()
        new_node = added[0].node_id
        assert joined.is_set()
        assert {e.worker_node for e in events if e.kind == "done"} >= {new_node}
        assert max(r.workers for r in records) == 4 and result.retries == 0
        assert digest(tmp_path / "out") == reference
    finally:
        for node in added:
            the_cluster.remove_node(node)
    # With rescans off, a node that joins mid-job is left alone.
    added.clear()
    events.clear()
    settings = settings_for(tmp_path, rescan_nodes_seconds=0, keep_workers_seconds=0)
    try:
        TranscodeJob(str(source), str(tmp_path / "out2"), OPTIONS, settings=settings,
                     on_update=add_node, on_event=events.append).run()
        assert added and added[0].node_id not in {e.worker_node for e in events}
    finally:
        for node in added:
            the_cluster.remove_node(node)


# 720p chunks (~0.5-1 s each here): removing a node takes a while, and with the 0.2 s chunks of SOURCE the node's
# chunk sometimes finished before its raylet was gone, so nothing was retried.
HEAVY = MediaSpec(name="cluster_heavy", width=1280, height=720, duration_s=Fraction(12), gop=30)
HEAVY_OPTIONS = TranscodeOptions(ladder=(720, 360), segment_seconds=2, chunk_seconds=2, parallelism=3)


def test_node_removed_mid_job_output_identical(cluster, media_dir, tmp_path):
    """Runs last in this module: it takes a node away (and adds a fresh one back for whatever follows)."""
    the_cluster, cpu_node, _ = cluster
    source = make_media(HEAVY, media_dir)
    reference = engine_digest(source, HEAVY_OPTIONS, tmp_path / "reference")

    # On a loaded machine the node can be gone only after its item finished (nothing lost, nothing retried): such
    # a run proves nothing either way and is run again on a fresh node.
    for run in range(3):
        node = cpu_node

        def remove(event: ChunkEvent, node=node) -> None:
            _once_running(event.worker_pid)
            the_cluster.remove_node(node, allow_graceful=False)

        hook, fired = _kill_on(lambda e, node_id=node.node_id: e.kind == "dispatched" and e.worker_node == node_id
                               and e.chunk_index not in (None, 0), remove)
        out = tmp_path / f"out{run}"
        job = TranscodeJob(str(source), str(out), HEAVY_OPTIONS, settings=settings_for(tmp_path / f"run{run}"),
                           on_event=hook)
        result = job.run()
        assert fired.is_set()
        assert digest(out) == reference
        deadline = time.monotonic() + 60  # the removal runs on the hook's thread: let it finish first
        while node in the_cluster.list_all_nodes():
            assert time.monotonic() < deadline, "the node was never removed"
            time.sleep(0.1)
        cpu_node = the_cluster.add_node(num_cpus=1)
        the_cluster.wait_for_nodes()
        if result.retries:
            break
    else:
        pytest.fail("the node's removal missed its item in 3 runs")
