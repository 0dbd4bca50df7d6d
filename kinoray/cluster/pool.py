"""A job's encoder actors, sized from what the cluster has (``ray.cluster_resources()``), not from constants."""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from kinoray.cluster.workers import EncoderWorker, WorkerCapabilities, worker_options
from kinoray.encoders import Capability
from kinoray.errors import ClusterError
from kinoray.settings import ClusterSettings

__all__ = ["NodeResources", "PoolLayout", "WorkerPool"]

log = logging.getLogger(__name__)

_RemoteWorker = ray.remote(EncoderWorker)


@dataclass(frozen=True)
class NodeResources:
    node_id: str
    cpus: float
    gpus: float

    @classmethod
    def of_cluster(cls) -> list[NodeResources]:
        """The alive nodes and their total CPU/GPU (``ray.nodes()``)."""
        return [cls(node["NodeID"], node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
                for node in ray.nodes() if node.get("Alive")]


@dataclass(frozen=True)
class PoolLayout:
    """Which kind of worker goes on which node: ``(node_id, "gpu" | "cpu")`` per worker, GPU workers first.

    Each GPU gets ``gpu_sessions_per_gpu`` GPU workers (each also takes one of its node's CPUs: demux, and the
    encode on GPUs without NVENC); every other CPU gets a CPU worker. Nodes with no CPU (a KubeRay head with
    ``num-cpus: 0``) get none.
    """

    workers: tuple[tuple[str, str], ...]

    @property
    def total(self) -> int:
        return len(self.workers)

    @property
    def gpu_workers(self) -> int:
        return sum(kind == "gpu" for _, kind in self.workers)

    @property
    def cpu_workers(self) -> int:
        return self.total - self.gpu_workers

    @classmethod
    def from_cluster(cls, settings: ClusterSettings, nodes: list[NodeResources] | None = None) -> PoolLayout:
        nodes = NodeResources.of_cluster() if nodes is None else nodes
        gpu: list[tuple[str, str]] = []
        cpu_slots: list[list[tuple[str, str]]] = []
        for node in sorted(nodes, key=lambda n: n.node_id):
            cpus = math.floor(node.cpus)
            on_gpu = min(math.floor(node.gpus) * settings.gpu_sessions_per_gpu, cpus)
            gpu += [(node.node_id, "gpu")] * on_gpu
            cpu_slots.append([(node.node_id, "cpu")] * (cpus - on_gpu))
        # Round-robin over nodes, so a pool cut short by the work-item count is still spread out.
        cpu = [slot for row in itertools.zip_longest(*cpu_slots) for slot in row if slot is not None]
        layout = cls(tuple(gpu + cpu))
        if not layout.workers:
            raise ClusterError(f"the Ray cluster has no CPU for an encoder worker (nodes: {nodes})")
        return layout.limited(settings.max_workers) if settings.max_workers else layout

    def limited(self, count: int) -> PoolLayout:
        """The first ``count`` workers (GPU workers are kept first)."""
        return PoolLayout(self.workers[: max(1, count)])


class WorkerPool:
    """Actors started for one job and killed when it ends (so cancelling a job stops its chunks at once)."""

    def __init__(self, layout: PoolLayout, settings: ClusterSettings) -> None:
        self.settings = settings
        fraction = 1.0 / settings.gpu_sessions_per_gpu
        # Each worker is placed on its node, softly: a worker whose node is gone restarts wherever there is room.
        self.actors: list[Any] = [
            _RemoteWorker.options(
                **worker_options(kind, fraction, settings.chunk_retries),
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=True),
            ).remote(kind)
            for node_id, kind in layout.workers
        ]
        self.capabilities: list[WorkerCapabilities | None] = [None] * len(self.actors)

    def __len__(self) -> int:
        return len(self.actors)

    def wait_ready(self) -> list[int]:
        """Wait until at least one worker answers (others may still be starting); the ready positions.

        Raises:
            ClusterError: no worker started within ``worker_start_timeout_seconds``.
        """
        refs = {actor.capabilities.remote(): position for position, actor in enumerate(self.actors)}
        deadline = time.monotonic() + self.settings.worker_start_timeout_seconds
        ready: list[int] = []
        pending = list(refs)
        while pending and time.monotonic() < deadline:
            # Once one worker is up, give the rest a moment rather than the whole timeout.
            timeout = 5.0 if ready else max(0.0, deadline - time.monotonic())
            done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
            if not done:
                break
            for ref in done:
                try:
                    self.capabilities[refs[ref]] = ray.get(ref)
                    ready.append(refs[ref])
                except ray.exceptions.RayError as e:
                    log.warning("encoder worker failed to start", extra={"error": str(e)})
        if not ready:
            raise ClusterError(f"no encoder worker started within {self.settings.worker_start_timeout_seconds:.0f}s "
                               f"(cluster resources: {ray.cluster_resources()})")
        return sorted(ready)

    def capability(self, codec: str, backend: str) -> Capability:
        """Whether any started worker can run (codec, backend), with the reason from one that cannot."""
        known = [c for c in self.capabilities if c is not None]
        if any(c.can_encode(codec, backend) for c in known):
            return Capability(True, f"{sum(c.can_encode(codec, backend) for c in known)} worker(s)")
        reasons = sorted({c.unavailable.get(f"{codec}/{backend}", "not registered") for c in known})
        return Capability(False, "; ".join(reasons) or "no worker")

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
