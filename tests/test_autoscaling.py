"""A job on an autoscaling Ray cluster: its scale-up workers are the demand that adds a node, and they join it.

The cluster is Ray's own autoscaler (the monitor process a head started with an autoscaling config runs, as
KubeRay's in-tree autoscaler does) with its fake multi-node provider, which launches each "node" as another raylet on
this machine. Nothing in kinoray is told a node is coming: the job only asks Ray for workers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from fractions import Fraction
from pathlib import Path

import pytest
import ray

from kinoray.cluster import ChunkEvent, JobState, TranscodeJob
from kinoray.media.pipeline import TranscodeOptions
from kinoray.settings import ClusterSettings, Settings
from tests.conftest import free_port
from tests.media import MediaSpec, make_media
from tests.reference import engine_digest, tree_digest

pytestmark = pytest.mark.slow

SOURCE = MediaSpec(name="autoscale_source", width=320, height=180, duration_s=Fraction(16), gop=30)
OPTIONS = TranscodeOptions(ladder=(180, 144), segment_seconds=2, chunk_seconds=2, parallelism=2)
MAX_NODES = 2


def _autoscaling_config(gcs_address: str) -> dict:
    """A head with no CPU (as in ray-cluster.yaml) and one worker type of 1 CPU: 1 node to start, at most 2."""
    return {
        "cluster_name": "kinoray-autoscale-test",
        "max_workers": MAX_NODES,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 1, "max_workers": MAX_NODES},
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _cpu_nodes() -> list[str]:
    return [node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU")]


def _stop(port: int) -> None:
    """Stop every process of this cluster (and only this one): those whose arguments name its GCS port."""
    def ours() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            if entry.name.isdigit() and int(entry.name) != os.getpid() and any(
                    a.endswith(f":{port}".encode()) or a == f"--gcs_server_port={port}".encode() for a in args):
                pids.append(int(entry.name))
        return pids

    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in ours():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def autoscaling_cluster(tmp_path_factory):
    """A head (no CPU) whose monitor runs Ray's autoscaler over the fake provider; the driver connected.

    The head is a ``ray.cluster_utils.Cluster`` started from this process, so it shares the process's Ray
    settings (token authentication among them), and its monitor and the nodes it launches inherit them.
    Stopped afterwards, nodes launched by the autoscaler included.
    """
    from ray.cluster_utils import Cluster

    port = free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    config = tmp_path_factory.mktemp("autoscaler") / "cluster.json"
    config.write_text(json.dumps(_autoscaling_config(address)))
    cluster = None
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_FAKE_CLUSTER", "1")  # read by the fake provider, in the monitor process
        env.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "1")
        try:
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 0, "gcs_server_port": port, "autoscaling_config": str(config),
                "include_dashboard": False})
            ray.init(address=cluster.address, log_to_driver=False)
            deadline = time.monotonic() + 120
            while len(_cpu_nodes()) < 1 and time.monotonic() < deadline:  # min_workers: 1
                time.sleep(0.5)
            assert len(_cpu_nodes()) == 1, "the autoscaler did not start the minimum worker node"
            yield
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
            _stop(port)


def settings_for(tmp_path: Path, **cluster: object) -> Settings:
    return Settings(data_dir=tmp_path / "data").model_copy(update={
        "cluster": ClusterSettings(worker_start_timeout_seconds=120, keep_workers_seconds=0, **cluster)})


def test_scale_up_workers_make_the_autoscaler_add_a_node_that_joins_the_job(autoscaling_cluster, media_dir,
                                                                               tmp_path):
    source = make_media(SOURCE, media_dir)
    reference = engine_digest(source, OPTIONS, tmp_path / "reference")
    start_nodes = set(_cpu_nodes())

    # Without scale-up workers a job asks for nothing beyond the node it has: no node is added.
    TranscodeJob(str(source), str(tmp_path / "fixed"), OPTIONS, settings=settings_for(tmp_path)).run()
    time.sleep(3)  # three autoscaler rounds
    assert set(_cpu_nodes()) == start_nodes
    assert tree_digest(tmp_path / "fixed") == reference

    # With one: its pending request makes the autoscaler add a node, and the worker joins there.
    events: list[ChunkEvent] = []
    records: list = []
    late = {"seen": False}

    def hook(event: ChunkEvent) -> None:
        events.append(event)
        if event.kind == "dispatched" and event.worker_node not in start_nodes:
            late["seen"] = True
        elif event.kind == "done" and not late["seen"]:
            time.sleep(1.0)  # hold completions (at most ~9 s) so the queue outlasts the node's start

    job = TranscodeJob(str(source), str(tmp_path / "scaled"), OPTIONS,
                       settings=settings_for(tmp_path, scale_up_workers=1), on_event=hook,
                       on_update=records.append)
    result = job.run()
    nodes = set(_cpu_nodes())
    assert len(nodes) == MAX_NODES and nodes > start_nodes
    (new_node,) = nodes - start_nodes
    assert any(e.kind == "done" and e.worker_node == new_node for e in events), "the new node did no work"
    assert records[-1].state is JobState.READY and max(r.workers for r in records) == 2
    assert result.retries == 0
    assert tree_digest(tmp_path / "scaled") == reference
    # Every worker is gone with the job (the autoscaler may now retire the idle node).
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < MAX_NODES and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == MAX_NODES
