"""The per-asset coordinator: plan → chunks over a worker pool (with bounded retries) → package → publish.

Scheduling order: the first chunk goes first (it is what a viewer needs to start playing), then the audio,
then the remaining chunks longest first (so the last worker to finish is not stuck with a long chunk).

Failures:

- a worker process or its node dies (``RayActorError`` and friends) → the chunk is re-run on another worker,
  at most ``cluster.chunk_retries`` times; the dead worker is restarted by Ray and rejoins when it answers;
- a transient storage error that outlived the store's own retries → same bounded re-run;
- anything else (bad media, an encoder failure, a frame-count mismatch) → the job errors with that reason at
  once: re-running a deterministic failure only delays the answer.

Workers that join mid-job (unpinned scale-up workers once the autoscaler has made room, or workers the job
starts on nodes that joined: see ``cluster/pool.py``) take queued items as soon as they answer.

Outputs are deterministic keys under the job's work prefix; a re-run overwrites them, so the packaged result
is byte-identical to a run without faults. Whatever happens, the pool is killed and the work prefix deleted.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from kinoray.cluster.local import ensure_ray
from kinoray.cluster.pool import PoolLayout, WorkerPool
from kinoray.cluster.progress import ChunkEvent, JobRecord, JobState
from kinoray.cluster.publish import package_and_publish
from kinoray.cluster.workers import JobSpec, WorkItem
from kinoray.encoders import select_encoder
from kinoray.errors import JobCancelledError, KinorayError, StorageError, TranscodeError, WorkerLostError
from kinoray.media.pipeline import (
    AssetPlan,
    EncoderUsed,
    TranscodeOptions,
    TranscodeResult,
    prepare_asset,
    summarise_asset,
)
from kinoray.media.transcode import ChunkResult
from kinoray.settings import Settings, get_settings
from kinoray.store import ObjectStore, join_url

__all__ = ["TranscodeJob", "order_work", "transcode"]

log = logging.getLogger(__name__)

_WORKER_LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError)


def order_work(asset: AssetPlan) -> list[WorkItem]:
    """The dispatch order: first chunk, audio, then the other chunks by decreasing cost (decoded frames)."""
    items: list[WorkItem] = []
    plan = asset.plan
    if plan is not None:
        for chunk in plan.chunks:
            preroll = (chunk.first_source_pts - chunk.decode_from_pts) * plan.source_time_base * plan.frame_rate
            items.append(WorkItem("video", chunk.index, chunk.frame_count + round(preroll)))
    first, rest = items[:1], sorted(items[1:], key=lambda item: (-item.cost, item.index))
    audio = [WorkItem("audio", 0, 0)] if asset.info.audio is not None else []
    return first + audio + rest


class TranscodeJob:
    """One asset transcoded on the Ray cluster. ``run()`` blocks; ``cancel()`` and ``record`` are thread-safe.

    ``output`` is a local directory or an object-storage prefix (``s3://bucket/assets/abc``). Local outputs
    are swapped in by a directory rename; remote ones get every segment before any manifest.
    """

    def __init__(
        self,
        source: str,
        output: str,
        options: TranscodeOptions | None = None,
        *,
        job_id: str | None = None,
        settings: Settings | None = None,
        on_update: Callable[[JobRecord], None] | None = None,
        on_event: Callable[[ChunkEvent], None] | None = None,
    ) -> None:
        self.source = source
        self.output = output.rstrip("/")
        self.options = options or TranscodeOptions()
        self.settings = settings or get_settings()
        self.job_id = job_id or uuid.uuid4().hex
        self.on_update = on_update
        self.on_event = on_event
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._record = JobRecord(job_id=self.job_id, source=source, output=self.output)
        work_root = self.settings.storage.work_url or str(Path(self.settings.data_dir).resolve() / "work")
        self.work = ObjectStore(join_url(work_root, "jobs", self.job_id), self.settings.storage)

    @property
    def record(self) -> JobRecord:
        with self._lock:
            return self._record

    def cancel(self) -> None:
        """Stop dispatching, kill the job's workers (stopping chunks mid-encode) and clean up. Idempotent."""
        self._cancelled.set()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._record = self._record.update(**changes)
            record = self._record
        if self.on_update is not None:
            _notify(self.on_update, record)

    def _event(self, event: ChunkEvent) -> None:
        log.debug("chunk event", extra={"job": self.job_id, **{k: v for k, v in vars(event).items() if v}})
        if self.on_event is not None:
            _notify(self.on_event, event)

    def _check_cancel(self) -> None:
        if self._cancelled.is_set():
            raise JobCancelledError(f"job {self.job_id} was cancelled")

    def _scale_up(self, layout: PoolLayout, items: int) -> int:
        """Unpinned workers to ask for beyond the cluster's slots: ``scale_up_workers``, but never more than
        the items the slots leave over, nor beyond ``max_workers``."""
        cluster = self.settings.cluster
        wanted = min(cluster.scale_up_workers, items - layout.total)
        if cluster.max_workers is not None:
            wanted = min(wanted, cluster.max_workers - layout.total)
        return max(0, wanted)

    def run(self) -> TranscodeResult:
        """Run the job to the end. Raises the typed error that ended it (the record says the same)."""
        started = time.perf_counter()
        pool: WorkerPool | None = None
        clean = False
        try:
            ensure_ray()
            self._update(state=JobState.PLANNING)
            layout = PoolLayout.from_cluster(self.settings.cluster)
            options = self.options
            if options.parallelism is None:
                options = replace(options, parallelism=layout.total)
            asset = prepare_asset(self.source, options)
            items = order_work(asset)
            self._check_cancel()
            layout = layout.limited(len(items))
            pool = WorkerPool(layout, self.settings.cluster, scale_up=self._scale_up(layout, len(items)))
            ready = pool.wait_ready()
            choice = (select_encoder(options.codec, options.encoder, probe=pool.capability)
                      if asset.plan is not None else None)
            used = EncoderUsed.of(choice)
            spec = JobSpec(self.job_id, asset, used.name or "", self.work.url, self.settings.storage)
            self._update(state=JobState.ENCODING, chunks_total=len(asset.plan.chunks) if asset.plan else 0,
                         frames_total=asset.frame_count, duration_seconds=float(asset.duration_seconds),
                         workers=len(ready), encoder=used.name, fallback_from=used.fallback_from,
                         fallback_reason=used.fallback_reason, encode_started_at=time.time())
            stages = {"plan": time.perf_counter() - started}
            mark = time.perf_counter()
            results = _Dispatcher(self, pool, spec, items, ready).run()
            stages["encode"] = time.perf_counter() - mark
            self._check_cancel()
            self._update(state=JobState.PACKAGING)
            mark = time.perf_counter()
            chunk_results = [results[item] for item in sorted(results, key=lambda i: i.index) if item.kind == "video"]
            audio = next((r for i, r in results.items() if i.kind == "audio"), None)
            tracks, audio_track = package_and_publish(asset, chunk_results, audio, output=self.output,
                                                      work=self.work, settings=self.settings, tag=self.job_id,
                                                      before_publish=self._check_cancel)
            stages["package"] = time.perf_counter() - mark
            result = summarise_asset(asset, used, chunk_results, audio, tracks, audio_track, self.output,
                                     time.perf_counter() - started, stages, retries=self.record.retries)
            self._update(state=JobState.READY, finished_at=time.time(), decoders=result.decoders,
                         scalers=result.scalers)
            clean = self.record.retries == 0  # a worker that died and restarted is not handed on
            return result
        except JobCancelledError as e:
            self._update(state=JobState.CANCELLED, finished_at=time.time(), error_type=e.type, error=str(e))
            raise
        except KinorayError as e:
            self._update(state=JobState.ERRORED, finished_at=time.time(), error_type=e.type, error=str(e))
            raise
        except Exception as e:
            self._update(state=JobState.ERRORED, finished_at=time.time(), error_type="internal_error",
                         error=f"{type(e).__name__}: {e}")
            raise
        finally:
            if pool is not None:
                if clean:
                    pool.release()
                else:
                    pool.shutdown()
            self._delete_work(settle=not clean)

    def _delete_work(self, *, settle: bool) -> None:
        """Delete the job's work prefix; after a failure or cancel (``settle``) once more a second later: Ray can
        report a killed worker dead a moment before its process stops, and a chunk finishing its commit in that
        moment would otherwise leave keys behind (seen about once in 15 cancelled test jobs)."""
        for attempt in range(2 if settle else 1):
            if attempt:
                time.sleep(1.0)
            try:
                self.work.delete_prefix("")
            except StorageError as e:
                log.warning("could not delete a job's work prefix", extra={"job": self.job_id, "error": str(e)})


class _Dispatcher:
    """Feeds work items to idle workers, one in flight per worker, and handles their outcomes."""

    def __init__(self, job: TranscodeJob, pool: WorkerPool, spec: JobSpec, items: list[WorkItem],
                 ready: list[int]) -> None:
        self.job, self.pool = job, pool
        self.spec_ref = ray.put(spec)
        self.codec, self.encoder = spec.asset.options.codec, spec.encoder
        self.queue = list(items)
        self.idle = list(ready)
        self.starting: dict[Any, int] = {}  # capabilities() ref -> worker (starting or restarting)
        self.inflight: dict[Any, tuple[int, WorkItem, int]] = {}  # run() ref -> (worker, item, attempt)
        self.attempts: dict[WorkItem, int] = {}
        self.results: dict[WorkItem, Any] = {}
        self.gone: set[int] = set()  # workers that will not come back
        self.waiting_since: float | None = None
        self.rescan = pool.settings.rescan_nodes_seconds
        self.next_rescan = time.monotonic() + self.rescan
        for position in range(len(pool)):
            if position not in ready:
                self.starting[pool.actors[position].capabilities.remote()] = position

    def _eligible(self, worker: int, item: WorkItem) -> bool:
        capabilities = self.pool.capabilities[worker]
        if capabilities is None:
            return False
        return item.kind == "audio" or capabilities.can_encode(self.codec, self.encoder)

    def _dispatch(self) -> None:
        restarting = set(self.starting.values())
        for worker in list(self.idle):
            if worker in restarting:  # died since it went idle: it takes work again once it answers
                self.idle.remove(worker)
                continue
            item = next((i for i in self.queue if self._eligible(worker, i)), None)
            if item is None:
                continue
            self.queue.remove(item)
            self.idle.remove(worker)
            attempt = self.attempts.get(item, 0) + 1
            self.attempts[item] = attempt
            ref = self.pool.actors[worker].run.remote(self.spec_ref, item)
            self.inflight[ref] = (worker, item, attempt)
            capabilities = self.pool.capabilities[worker]
            self.job._event(ChunkEvent("dispatched", item.label, item.index if item.kind == "video" else None,
                                       capabilities.pid if capabilities else None,
                                       capabilities.node_id if capabilities else None, attempt))

    def run(self) -> dict[WorkItem, Any]:
        timeout = self.pool.settings.worker_start_timeout_seconds
        try:
            while self.queue or self.inflight:
                self.job._check_cancel()
                self._dispatch()
                if self.rescan and self.queue and time.monotonic() >= self.next_rescan:
                    self._grow()
                if not self.inflight and not self.idle:
                    # Every worker is (re)starting: wait, but not forever.
                    self.waiting_since = self.waiting_since or time.monotonic()
                    if time.monotonic() - self.waiting_since > timeout or not self.starting:
                        raise WorkerLostError(f"no encoder worker is available to finish the job "
                                              f"({len(self.queue)} items left, none started within {timeout:.0f}s)")
                else:
                    self.waiting_since = None
                refs = list(self.starting) + list(self.inflight)
                if ray.wait(refs, num_returns=1, timeout=0.5)[0]:
                    # Everything that is ready, workers that answered first: one ref per turn would leave
                    # the later ones in the list waiting behind a steady stream of completions.
                    for ref in ray.wait(refs, num_returns=len(refs), timeout=0)[0]:
                        if ref in self.starting:
                            self._worker_back(ref)
                        elif ref in self.inflight:
                            self._finished(ref)
        except BaseException:
            for ref in self.inflight:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - the pool is killed next anyway
                    pass
            raise
        return self.results

    def _grow(self) -> None:
        """Start workers on nodes that joined the cluster, for the queued items no starting worker will take."""
        self.next_rescan = time.monotonic() + self.rescan
        limit = len(self.queue) - len(self.starting)
        if limit <= 0:
            return
        for position in self.pool.grow(limit):
            self.starting[self.pool.actors[position].capabilities.remote()] = position

    def _count_workers(self) -> None:
        """The record's ``workers``: those up and taking work (not starting, restarting or gone)."""
        workers = len(self.pool) - len(self.starting) - len(self.gone)
        if workers != self.job.record.workers:
            self.job._update(workers=workers)

    def _worker_back(self, ref: Any) -> None:
        worker = self.starting.pop(ref)
        try:
            self.pool.capabilities[worker] = ray.get(ref)
            if worker not in self.idle and worker not in {w for w, _, _ in self.inflight.values()}:
                self.idle.append(worker)
        except ray.exceptions.RayError as e:
            self.gone.add(worker)
            log.warning("encoder worker is gone for good", extra={"worker": worker, "error": str(e)})
        self._count_workers()

    def _finished(self, ref: Any) -> None:
        worker, item, attempt = self.inflight.pop(ref)
        capabilities = self.pool.capabilities[worker]
        pid, node = (capabilities.pid, capabilities.node_id) if capabilities else (None, None)
        try:
            result = ray.get(ref)
        except _WORKER_LOST as e:
            # The worker (or its node) died mid-item: Ray restarts it; the item goes back to the front.
            self.starting[self.pool.actors[worker].capabilities.remote()] = worker
            self._count_workers()
            self._retry(item, attempt, pid, node, f"worker died: {type(e).__name__}")
            return
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else e
            self.idle.append(worker)
            if isinstance(cause, StorageError):
                self._retry(item, attempt, pid, node, str(cause))
                return
            self.job._event(ChunkEvent("failed", item.label, _chunk(item), pid, node, attempt, error=str(cause)))
            if isinstance(cause, KinorayError):
                raise _with_item(cause, item) from e
            raise TranscodeError(f"{item.label}: {type(cause).__name__}: {cause}") from e
        self.idle.append(worker)
        self.results[item] = result
        frames = result.frame_count if isinstance(result, ChunkResult) else 0
        seconds = result.wall_seconds if isinstance(result, ChunkResult) else 0.0
        self.job._event(ChunkEvent("done", item.label, _chunk(item), pid, node, attempt, frames=frames,
                                   seconds=seconds))
        record = self.job.record
        if isinstance(result, ChunkResult):
            self.job._update(chunks_done=record.chunks_done + 1, frames_done=record.frames_done + frames,
                             decoders=tuple(sorted({*record.decoders, result.decoder})),
                             scalers=tuple(sorted({*record.scalers, result.scaler})))

    def _retry(self, item: WorkItem, attempt: int, pid: int | None, node: str | None, reason: str) -> None:
        retries = self.pool.settings.chunk_retries
        if attempt > retries:
            self.job._event(ChunkEvent("failed", item.label, _chunk(item), pid, node, attempt, error=reason))
            raise WorkerLostError(f"{item.label} failed {attempt} times (retry limit {retries}); last: {reason}")
        log.warning("re-running a work item", extra={"item": item.label, "attempt": attempt, "reason": reason})
        self.job._event(ChunkEvent("retry", item.label, _chunk(item), pid, node, attempt, error=reason))
        self.job._update(retries=self.job.record.retries + 1)
        self.queue.insert(0, item)


def _notify(callback: Callable[[Any], None], payload: Any) -> None:
    """Call a progress callback; a failing callback is logged, it never fails the job."""
    try:
        callback(payload)
    except Exception:  # noqa: BLE001
        log.exception("progress callback failed")


def _chunk(item: WorkItem) -> int | None:
    return item.index if item.kind == "video" else None


def _with_item(error: KinorayError, item: WorkItem) -> KinorayError:
    """The worker's error, retyped as itself, with which item failed in its message."""
    try:
        return type(error)(f"{item.label}: {error}")
    except TypeError:
        return error


def transcode(source: str, output: str, options: TranscodeOptions | None = None, **kwargs: Any) -> TranscodeResult:
    """Transcode ``source`` to ``output`` on the Ray cluster (see :class:`TranscodeJob`)."""
    return TranscodeJob(source, output, options, **kwargs).run()

