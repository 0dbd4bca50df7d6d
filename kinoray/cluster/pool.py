"""A job's encoder actors, sized from what the cluster has (``ray.cluster_resources()``), not from constants.

A job's actors are its own while it runs. When it ends cleanly (no failure, no retry, not cancelled) and no
other job in this process is using a pool, they stay up for ``keep_workers_seconds`` and the next job with
the same layout takes them over instead of starting new processes; otherwise — and when that time is up —
they are killed. Kept actors hold their Ray CPUs, which is why the wait is short and why a job that starts
while another runs never leaves its actors behind (they could keep that job's pending actors waiting).

Which actors are kept is known in the process that ran the job (the job runner's replica under Serve, or a
``ray job`` driver), but a live stream's transcoder is started by another (the ingest actor) and cannot wait
for those CPUs. So every encoder actor is named (``kinoray-encoder-…`` in the ``kinoray`` namespace) and keeps
its own tenure (:class:`~kinoray.cluster.workers.EncoderWorker`: in use, kept, given up):
:func:`release_kept_workers`, from any process, kills the kept ones cluster-wide and never one a job uses. A job
claims each kept actor before using it; one given up meanwhile is replaced by a new actor.

A pool also grows while its job runs:

- **Scale-up demand** (``scale_up_workers``): besides one worker per slot the cluster has, a job may ask for a
  few more, not pinned to any node. On a fixed cluster they just wait; on an autoscaling one (KubeRay's in-tree
  autoscaler) their pending resource requests are the demand that adds nodes, and each joins the job as soon
  as it starts there.
- **Nodes that join** (``rescan_nodes_seconds``): the job looks at ``ray.nodes()`` now and then and starts
  workers on nodes it has not seen (added by the autoscaler for anyone, or by hand), less those its own
  unpinned workers are about to take.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from kinoray.cluster.workers import CONTROL_GROUP, EncoderWorker, WorkerCapabilities, worker_options
from kinoray.encoders import Capability
from kinoray.errors import ClusterError
from kinoray.settings import ClusterSettings

__all__ = ["ENCODER_NAMESPACE", "ENCODER_PREFIX", "NodeResources", "PoolLayout", "WorkerPool", "kept_workers",
           "release_kept_workers"]

log = logging.getLogger(__name__)

#: Where encoder actors are named (``ENCODER_PREFIX`` + a random id), whichever namespace their job runs in.
ENCODER_NAMESPACE = "kinoray"
ENCODER_PREFIX = "kinoray-encoder-"
#: How long an actor may take to answer a tenure call (an idle one: milliseconds) before it counts as a no: when it
#: is kept or claimed, and when a live stream asks every encoder (one still starting cannot answer).
_TENURE_SECONDS = 10.0
_GIVE_UP_SECONDS = 2.0

# (Ray's typed overloads of remote() leave concurrency_groups out; it is a documented actor option.)
_RemoteWorker = ray.remote(concurrency_groups={CONTROL_GROUP: 1})(EncoderWorker)  # type: ignore[call-overload]


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


#: Where a worker goes and what it is: ``(node_id, "gpu" | "cpu")``; node ``None`` = anywhere (scale-up demand).
Slot = tuple[str | None, str]


@dataclass(frozen=True)
class PoolLayout:
    """Which kind of worker goes on which node: ``(node_id, "gpu" | "cpu")`` per worker, GPU workers first.

    Each GPU gets ``gpu_sessions_per_gpu`` GPU workers (each also takes one of its node's CPUs: demux, and the
    encode on GPUs without NVENC); every other CPU gets a CPU worker. Nodes with no CPU (a KubeRay head with
    ``num-cpus: 0``) get none. ``nodes`` are all the nodes it was sized from (a pool grows onto others only).
    """

    workers: tuple[tuple[str, str], ...]
    nodes: frozenset[str] = frozenset()

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
        layout = cls(tuple(gpu + cpu), frozenset(node.node_id for node in nodes))
        if not layout.workers:
            raise ClusterError(f"the Ray cluster has no CPU for an encoder worker (nodes: {nodes})")
        return layout.limited(settings.max_workers) if settings.max_workers else layout

    def limited(self, count: int) -> PoolLayout:
        """The first ``count`` workers (GPU workers are kept first)."""
        return PoolLayout(self.workers[: max(1, count)], self.nodes)


class WorkerPool:
    """The encoder actors of one job: kept ones from an earlier job where they fit, new ones for the rest.

    End it with :meth:`release` (a clean finish: the actors may be kept for the next job) or :meth:`shutdown`
    (kill them: failures, retries, cancellation).
    """

    def __init__(self, layout: PoolLayout, settings: ClusterSettings, *, scale_up: int = 0) -> None:
        """Start (or take over) one worker per slot of ``layout``, plus ``scale_up`` unpinned workers of kind
        ``settings.scale_up_kind`` (scale-up demand: see the module doc)."""
        self.settings = settings
        self._ended = False
        self.session, self.options = _session(), _start_options(settings)
        self.nodes = set(layout.nodes)
        self.sized = layout.total  # the workers the cluster had room for when the pool was made
        slots: tuple[Slot, ...] = (*layout.workers, *[(None, settings.scale_up_kind)] * max(0, scale_up))
        kept = _KEPT.take(slots, self.session, self.options)
        self.actors: list[Any] = []
        self.capabilities: list[WorkerCapabilities | None] = []
        self.slots: list[Slot] = []
        try:
            kept = _claim(kept)
            for position, slot in enumerate(slots):
                if position in kept:
                    self._add(slot, kept[position].actor, kept[position].capabilities)
                else:
                    self._add(slot, self._start(slot), None)
        except BaseException:
            self.shutdown()  # leaves the in-use count too, so later jobs can still keep their actors
            _kill([k.actor for p, k in kept.items() if p >= len(self.actors)])
            raise

    def _start(self, slot: Slot) -> Any:
        node_id, kind = slot
        # Placed on its node, softly: a worker whose node is gone restarts wherever there is room.
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=True) if node_id else "DEFAULT"
        options = worker_options(kind, 1.0 / self.settings.gpu_sessions_per_gpu, self.settings.chunk_retries)
        return _RemoteWorker.options(**options, scheduling_strategy=strategy, name=ENCODER_PREFIX + uuid.uuid4().hex,
                                     namespace=ENCODER_NAMESPACE).remote(kind)

    def _add(self, slot: Slot, actor: Any, capabilities: WorkerCapabilities | None) -> int:
        self.slots.append(slot)
        self.actors.append(actor)
        self.capabilities.append(capabilities)
        return len(self.actors) - 1

    def grow(self, limit: int) -> list[int]:
        """Start workers on nodes that joined the cluster since the pool was sized; their positions.

        At most ``limit`` of them (and never beyond ``max_workers`` in all). Unpinned workers that have not
        started yet are expected to land on the new nodes, so that many fewer are started. A node is looked
        at once: later calls only consider nodes that joined after it.
        """
        fresh = [node for node in NodeResources.of_cluster() if node.node_id not in self.nodes]
        if not fresh or self._ended:
            return []
        self.nodes.update(node.node_id for node in fresh)
        room = limit if self.settings.max_workers is None else min(limit, self.settings.max_workers - len(self))
        unplaced = sum(node is None and capabilities is None
                       for (node, _), capabilities in zip(self.slots, self.capabilities, strict=True))
        try:
            slots = PoolLayout.from_cluster(self.settings.model_copy(update={"max_workers": None}), fresh).workers
        except ClusterError:  # only CPU-less nodes joined
            return []
        slots = slots[unplaced:][: max(0, room)]
        positions = [self._add(slot, self._start(slot), None) for slot in slots]
        if positions:
            log.info("encoder pool grew onto new nodes", extra={"workers": len(positions),
                                                                 "nodes": sorted({n for n, _ in slots})})
        return positions

    def __len__(self) -> int:
        return len(self.actors)

    def wait_ready(self) -> list[int]:
        """Wait until at least one worker answers (others may still be starting); the ready positions.

        Raises:
            ClusterError: no worker started within ``worker_start_timeout_seconds``.
        """
        # Scale-up workers are left out: they start when the cluster has room, maybe never.
        refs = {actor.capabilities.remote(): position for position, actor in enumerate(self.actors[: self.sized])}
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

    def release(self) -> None:
        """The job finished cleanly: keep the actors for the next job (see the module doc), else kill them."""
        if self._end() and self.settings.keep_workers_seconds > 0:
            # Kept under the node each one runs on (an unpinned worker's slot says "anywhere").
            kept = [_Kept((capabilities.node_id, kind), self.session, self.options, actor, capabilities)
                    for (_, kind), actor, capabilities in zip(self.slots, self.actors, self.capabilities, strict=True)
                    if capabilities is not None]
            # Each told first: a job claiming one later (and a live stream giving one up) must find it kept.
            kept = [worker for worker, ok in zip(kept, _ask([k.actor for k in kept], "keep"), strict=True) if ok]
            if _KEPT.keep(kept, self.settings.keep_workers_seconds):
                listed = {id(worker.actor) for worker in kept}
                _kill([actor for actor in self.actors if id(actor) not in listed])  # never started, or gone
                return
        _kill(self.actors)

    def shutdown(self, wait_seconds: float = 10.0) -> None:
        """Kill the actors (stopping whatever they run) and wait, at most ``wait_seconds``, until Ray reports
        each one dead: a chunk cut off mid-commit cannot then write into a work prefix deleted after this."""
        self._end()
        _kill(self.actors)
        if wait_seconds > 0 and self.actors:
            try:
                # A call to a killed actor fails once Ray knows it is dead; until then it waits.
                probes = [actor.__ray_ready__.remote() for actor in self.actors]
                ray.wait(probes, num_returns=len(probes), timeout=wait_seconds)
            except Exception:  # noqa: BLE001 - the Ray session is gone: so are its actors
                pass

    def _end(self) -> bool:
        """Leave the process's count of pools in use; True the first time."""
        if self._ended:
            return False
        self._ended = True
        _KEPT.ended()
        return True


def _kill(actors: list[Any]) -> None:
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead, or its Ray session is gone
            pass


def _ask(actors: list[Any], method: str, timeout: float = _TENURE_SECONDS) -> list[bool]:
    """Call a tenure method (``keep``/``claim``/``give_up``) on each actor at once; its answer, ``False`` for one
    that is dead or did not answer within ``timeout`` seconds."""
    refs = []
    for actor in actors:
        try:
            refs.append(getattr(actor, method).options(concurrency_group=CONTROL_GROUP).remote())
        except Exception:  # noqa: BLE001 - its Ray session is gone
            refs.append(None)
    pending = [ref for ref in refs if ref is not None]
    if pending:
        ray.wait(pending, num_returns=len(pending), timeout=timeout)
    answers = []
    for ref in refs:
        try:
            answers.append(ref is not None and bool(ray.get(ref, timeout=0)))
        except Exception:  # noqa: BLE001 - dead (killed by a live stream, say), or still busy
            answers.append(False)
    return answers


def _claim(kept: dict[int, _Kept]) -> dict[int, _Kept]:
    """The kept actors that are still this process's to use: those given up meanwhile (a live stream took their
    CPUs back, :func:`release_kept_workers`) are killed, and the pool starts new ones in their slots."""
    positions = sorted(kept)
    answers = _ask([kept[p].actor for p in positions], "claim")
    lost = [kept.pop(p).actor for p, ok in zip(positions, answers, strict=True) if not ok]
    if lost:
        _kill(lost)
        log.info("kept encoder workers were given up meanwhile: starting others", extra={"workers": len(lost)})
    return kept


def release_kept_workers() -> int:
    """Kill the encoder actors that are kept between jobs (idle), in every process of the cluster, so that their
    CPUs go to whoever waits for them (a live stream's transcoder: :class:`~kinoray.cluster.live.LiveFeed`);
    how many. An actor a job is using says no and is left alone; a job about to take a kept one finds it given
    up and starts another. One that answers too late (``_GIVE_UP_SECONDS``) stays given up, and the next call or
    its own job's expiry kills it."""
    named = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
             if entry["namespace"] == ENCODER_NAMESPACE and entry["name"].startswith(ENCODER_PREFIX)]
    actors = []
    for name in named:
        try:
            actors.append(ray.get_actor(name, namespace=ENCODER_NAMESPACE))
        except ValueError:  # gone since it was listed
            continue
    idle = [actor for actor, ok in zip(actors, _ask(actors, "give_up", _GIVE_UP_SECONDS), strict=True) if ok]
    _kill(idle)
    if idle:
        log.info("kept encoder workers released for their CPUs", extra={"workers": len(idle), "named": len(named)})
    return len(idle)


def _start_options(settings: ClusterSettings) -> tuple[int, int]:
    """The settings an actor was started with (``worker_options``): another job may use it only if they match."""
    return (settings.gpu_sessions_per_gpu, settings.chunk_retries)


@dataclass
class _Kept:
    slot: Slot  # (node_id, kind)
    session: tuple[Any, ...]  # the Ray session it lives in (_session)
    options: tuple[int, int]  # what it was started with (_start_options)
    actor: Any
    capabilities: WorkerCapabilities
    until: float = 0.0


class _KeptWorkers:
    """The process's actors kept between jobs, and how many pools are in use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: list[_Kept] = []
        self._in_use = 0

    def take(self, slots: tuple[Slot, ...], session: tuple[Any, ...],
             options: tuple[int, int]) -> dict[int, _Kept]:
        """Kept actors for ``slots`` (by position); the others kept from this session are killed, since the new
        pool may need their CPUs. Counts the new pool as in use."""
        now = time.monotonic()
        with self._lock:
            self._in_use += 1
            pool, self._kept = self._kept, []
        taken: dict[int, _Kept] = {}
        leftover = []
        for worker in pool:
            position = next((i for i, slot in enumerate(slots) if slot == worker.slot and i not in taken), None)
            if worker.session != session:
                continue  # from an earlier Ray session: nothing to kill any more
            if worker.options == options and worker.until > now and position is not None:
                taken[position] = worker
            else:
                leftover.append(worker.actor)
        _kill(leftover)
        if taken:
            log.info("encoder workers reused", extra={"workers": len(taken), "of": len(slots)})
        return taken

    def ended(self) -> None:
        with self._lock:
            self._in_use -= 1

    def keep(self, workers: list[_Kept], seconds: float) -> bool:
        """Keep ``workers`` for ``seconds`` unless another pool is in use; False when not kept."""
        with self._lock:
            if self._in_use > 0 or not workers:
                return False
            until = time.monotonic() + seconds
            for worker in workers:
                worker.until = until
            self._kept.extend(workers)
        timer = threading.Timer(seconds + 0.1, self.expire)
        timer.daemon = True
        timer.start()
        return True

    def expire(self) -> None:
        """Kill the kept actors whose time is up."""
        now = time.monotonic()
        with self._lock:
            expired = [w for w in self._kept if w.until <= now]
            self._kept = [w for w in self._kept if w.until > now]
        if expired and ray.is_initialized():
            current = _session()
            _kill([w.actor for w in expired if w.session == current])

    def count(self) -> int:
        with self._lock:
            return len(self._kept)


def _session() -> tuple[Any, ...]:
    """This driver's Ray session: a new ``ray.init`` (or cluster) gives a new one."""
    context = ray.get_runtime_context()
    return (context.get_job_id(), context.get_node_id())


_KEPT = _KeptWorkers()


def kept_workers() -> int:
    """How many encoder actors this process keeps for its next job right now."""
    return _KEPT.count()
