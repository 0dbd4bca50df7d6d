"""Encoder worker actors: one process per encode slot, probing what it can do when it starts.

A worker runs one work item at a time: a video chunk (decode once → scale to every rung → encode every rung)
or an asset's audio. It reads the source straight from its URL (seeking to the chunk's keyframe), encodes
into a private scratch directory, and commits the packet stores to the job's work prefix in object storage
under deterministic keys (temporary key, then rename), so a retried chunk overwrites rather than duplicates,
and only small result records travel through Ray.

Two kinds, same class:

- ``cpu``: swscale and the CPU encoders (x264/x265/SVT-AV1 through PyAV).
- ``gpu``: asks Ray for ``1/N`` of a GPU; decodes with NVDEC when the probe decodes a real clip on the device,
  scales with torch on CUDA when torch sees one, and encodes with NVENC when the job's encoder is NVENC.
  On an H100/A100 (NVDEC, no NVENC) it therefore decodes on the GPU and encodes on the CPU.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kinoray.encoders import available_encoders, get_backend
from kinoray.encoders.determinism import deterministic_heap
from kinoray.encoders.nvenc import nvdec_hwaccel
from kinoray.media.audio import AudioResult
from kinoray.media.frames import RenditionScaler, Scaler
from kinoray.media.ladder import Rendition
from kinoray.media.pipeline import AssetPlan, audio_call
from kinoray.media.probe import VideoStreamInfo
from kinoray.media.transcode import ChunkResult, transcode_chunk
from kinoray.priority import yield_cpu
from kinoray.settings import StorageSettings
from kinoray.store import ObjectStore

__all__ = ["CONTROL_GROUP", "EncoderWorker", "JobSpec", "Tenure", "WorkItem", "WorkerCapabilities", "probe_worker"]

log = logging.getLogger(__name__)

AUDIO_KEY = "audio/audio"
#: The Ray concurrency group (one thread) of a worker's tenure calls (:meth:`EncoderWorker.keep` and friends), so
#: they are answered while a chunk runs on the actor's main thread.
CONTROL_GROUP = "control"


@dataclass(frozen=True)
class WorkerCapabilities:
    """What one worker process found it can do (probed by opening real sessions, not by reading flags)."""

    kind: str  # "cpu" | "gpu"
    pid: int
    node_id: str
    hostname: str
    encoders: tuple[str, ...]  # usable "codec/backend" pairs, e.g. "h264/libx264", "h264/nvenc"
    unavailable: dict[str, str]  # "codec/backend" -> why it cannot run here
    nvdec: bool
    scaler: str  # "swscale" | "torch-cuda"
    notes: tuple[str, ...] = ()

    def can_encode(self, codec: str, backend: str) -> bool:
        return f"{codec}/{backend}" in self.encoders


@dataclass(frozen=True)
class WorkItem:
    """A unit of scheduling: one video chunk or the asset's audio."""

    kind: str  # "video" | "audio"
    index: int  # chunk index; 0 for audio
    cost: int  # frames decoded (pre-roll included) — the scheduler's size estimate

    @property
    def label(self) -> str:
        return f"chunk {self.index}" if self.kind == "video" else "audio"


@dataclass(frozen=True)
class JobSpec:
    """What every worker needs for one job; put in the object store once and passed by reference."""

    job_id: str
    asset: AssetPlan
    encoder: str  # backend name for the asset's codec, the same for every chunk
    work_url: str  # the job's work prefix (object storage)
    storage: StorageSettings = field(default_factory=StorageSettings)


def probe_worker(kind: str) -> WorkerCapabilities:
    """Probe this process: encoders (a real session each), NVDEC (a real GPU decode) and torch CUDA."""
    import ray

    encoders, unavailable = [], {}
    for name, capability in available_encoders().items():
        if capability.available:
            encoders.append(name)
        else:
            unavailable[name] = capability.reason
    notes = []
    scaler = "swscale"
    nvdec = False
    if kind == "gpu":
        from kinoray.media.torch_scale import torch_device_available

        nvdec = nvdec_hwaccel() is not None
        usable, reason = torch_device_available("cuda")
        if usable:
            scaler = "torch-cuda"
        else:
            notes.append(f"scaling on CPU: {reason}")
        if not nvdec:
            notes.append("decoding on CPU: NVDEC probe failed")
    context = ray.get_runtime_context() if ray.is_initialized() else None
    return WorkerCapabilities(
        kind=kind, pid=os.getpid(), node_id=context.get_node_id() if context else "local",
        hostname=socket.gethostname(), encoders=tuple(sorted(encoders)), unavailable=unavailable,
        nvdec=nvdec, scaler=scaler, notes=tuple(notes),
    )


@dataclass
class Tenure:
    """Whose an encoder worker is: in use by the job that started or took it, *kept* (idle, between jobs), or
    *given up* (a live stream took its CPU back; only a kill follows). Of a claim and a give-up, exactly one
    wins when they are called one at a time (the worker runs both on one thread)."""

    kept: bool = False
    given_up: bool = False

    def keep(self) -> bool:
        """Its job ended cleanly and its pool keeps it for the next job; ``False`` if it was given up."""
        self.kept = not self.given_up
        return self.kept

    def claim(self) -> bool:
        """A job takes this kept worker; ``False`` if it was given up meanwhile (the job starts another)."""
        claimed, self.kept = self.kept, False
        return claimed

    def give_up(self) -> bool:
        """Give up this worker if it is kept (idle), for its CPU; ``False`` (nothing changes) if a job uses it."""
        self.given_up, self.kept = self.given_up or self.kept, False
        return self.given_up


class EncoderWorker:
    """The actor body (wrapped with ``ray.remote`` by the pool, which sets its resources).

    It knows its own tenure, so that any process of the cluster can ask it (:mod:`kinoray.cluster.pool`): in use
    by the job that started or took it, *kept* (idle, between jobs: :meth:`keep`), or *given up* (a live stream
    took its CPU back: :meth:`give_up`, after which only a kill follows). The job that would reuse a kept worker
    first claims it (:meth:`claim`); of a claim and a give-up arriving together exactly one wins, because both run on
    the one thread of :data:`CONTROL_GROUP`.
    """

    def __init__(self, kind: str = "cpu") -> None:
        from kinoray.logs import setup_logging
        from kinoray.settings import get_settings

        settings = get_settings()
        setup_logging(settings.log_level, settings.native_log_level)
        yield_cpu(settings.cluster.worker_nice)
        if not deterministic_heap():
            log.warning("encoder worker without a fixed heap fill: a retried chunk may differ in bytes")
        self.capabilities_ = probe_worker(kind)
        self.scratch = Path(tempfile.mkdtemp(prefix="kinoray-worker-"))
        self.tenure = Tenure()
        log.info("encoder worker ready", extra={"kind": kind, "pid": self.capabilities_.pid,
                                                "encoders": self.capabilities_.encoders})

    def capabilities(self) -> WorkerCapabilities:
        return self.capabilities_

    def keep(self) -> bool:
        """:meth:`Tenure.keep`."""
        return self.tenure.keep()

    def claim(self) -> bool:
        """:meth:`Tenure.claim`."""
        return self.tenure.claim()

    def give_up(self) -> bool:
        """:meth:`Tenure.give_up`."""
        return self.tenure.give_up()

    def _scaler(self) -> Callable[[VideoStreamInfo, tuple[Rendition, ...]], Scaler]:
        if self.capabilities_.scaler == "torch-cuda":
            from kinoray.media.torch_scale import TorchRenditionScaler

            return functools.partial(TorchRenditionScaler, device="cuda")
        return RenditionScaler

    def run(self, spec: JobSpec, item: WorkItem) -> ChunkResult | AudioResult:
        """Encode ``item`` and commit its packet stores under the job's work prefix; returns their keys."""
        store = ObjectStore(spec.work_url, spec.storage)
        local = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            if item.kind == "audio":
                audio = audio_call(spec.asset)(local / AUDIO_KEY)
                _commit(store, local, Path(audio.store))
                return replace(audio, store=AUDIO_KEY)
            plan = spec.asset.plan
            assert plan is not None
            options = spec.asset.options.encode_options()
            result = transcode_chunk(plan, plan.chunks[item.index], spec.asset.ladder,
                                     get_backend(options.codec, spec.encoder), work_dir=local, options=options,
                                     scaler=self._scaler())
            renditions = tuple(replace(r, store=_commit(store, local, Path(r.store))) for r in result.renditions)
            return replace(result, renditions=renditions)
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)


def _commit(store: ObjectStore, local_root: Path, base: Path) -> str:
    """Upload a packet store (``.bin`` first, ``.json`` last: the ``.json`` marks it complete); its key."""
    key = base.relative_to(local_root).as_posix()
    store.put_file(base.with_suffix(".bin"), key + ".bin")
    store.put_file(base.with_suffix(".json"), key + ".json")
    return key


def worker_options(kind: str, gpu_fraction: float, max_restarts: int) -> dict[str, Any]:
    """Ray actor options for a worker of ``kind``: 1 CPU each; GPU workers also ``gpu_fraction`` of a GPU.
    Retries are the coordinator's (``max_task_retries=0``), so every re-run is counted and bounded."""
    options: dict[str, Any] = {"num_cpus": 1, "max_restarts": max_restarts, "max_task_retries": 0}
    if kind == "gpu":
        options["num_gpus"] = gpu_fraction
    return options
