"""The job runner: turns queued jobs into ready (or errored) assets, and runs the control plane's periodic work.

One loop (:class:`Runner`), polling every ``serve.poll_seconds``:

- claims ``queued`` jobs (a conditional ``UPDATE ... WHERE state = 'queued'``, so a job runs once) up to
  ``serve.max_concurrent_jobs`` and runs each in a thread: fetch the input URL into ``assets/<id>/input``
  (:mod:`kinoray.control.ingest`), transcode it on the Ray cluster (:class:`kinoray.cluster.TranscodeJob`,
  output ``assets/<id>/media``), then mark the asset ``ready`` or ``errored`` and emit the event;
- persists job progress into the job row and the asset's ``progress`` (at most once a second per job);
- cancels a running job whose asset was deleted (the transcode stops; its files are removed);
- sends due webhooks in a thread of its own (:func:`kinoray.control.webhooks.deliver_loop`), times out abandoned uploads
  (:func:`kinoray.control.uploads.expire_uploads`) and prunes expired idempotency keys.

On start it re-queues jobs a previous runner left in ``planning``/``encoding``/``packaging`` (it died with
them), so a restarted platform finishes every accepted asset. Run exactly one runner per database: it is the
``kinoray-runner`` Serve deployment with one replica (:class:`JobRunner`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import timedelta
from fractions import Fraction
from typing import Any

import sqlalchemy as sa
from ray import serve

from kinoray.control import idempotency
from kinoray.control.assets import asset_view
from kinoray.control.events import emit
from kinoray.control.ingest import fetch_input
from kinoray.control.platform import Platform
from kinoray.control.webhooks import deliver_loop
from kinoray.errors import JobCancelledError, KinorayError
from kinoray.store.models import Asset, AssetStatus, Job, new_id, utcnow
from kinoray.telemetry import CHUNKS_ENCODED, JOBS_FINISHED

__all__ = ["JobRunner", "Runner", "asset_fields"]

log = logging.getLogger(__name__)

_ACTIVE = ("planning", "encoding", "packaging")
_PROGRESS_INTERVAL = 1.0
_SWEEP_INTERVAL = 60.0


def _tier(short_side: int) -> str:
    for tier, height in (("720p", 720), ("1080p", 1080), ("1440p", 1440)):
        if short_side <= height:
            return tier
    return "2160p"


def asset_fields(result: Any) -> dict[str, Any]:
    """Asset columns from a :class:`~kinoray.media.pipeline.TranscodeResult` (Mux's derived fields)."""
    fields: dict[str, Any] = {"duration": round(result.duration_seconds, 6), "encoder_backend": result.encoder}
    tracks: list[dict[str, Any]] = []
    if result.renditions:
        top = max(result.renditions, key=lambda r: r.width * r.height)
        divisor = math.gcd(top.width, top.height)
        rate = float(Fraction(result.frame_rate)) if result.frame_rate else None
        fields.update(aspect_ratio=f"{top.width // divisor}:{top.height // divisor}",
                      resolution_tier=_tier(min(top.width, top.height)), max_stored_frame_rate=rate)
        tracks.append({"type": "video", "id": new_id(), "max_width": top.width, "max_height": top.height,
                       "max_frame_rate": rate, "duration": round(result.duration_seconds, 6)})
    else:
        fields.update(resolution_tier="audio-only", max_stored_frame_rate=-1)
    if result.audio:
        tracks.append({"type": "audio", "id": new_id(), "max_channels": result.audio["channels"],
                       "duration": round(result.audio["duration_seconds"], 6)})
    fields["tracks"] = tracks
    return fields


class _Running:
    def __init__(self, job_id: str, asset_id: str) -> None:
        self.job_id, self.asset_id = job_id, asset_id
        self.transcode: Any = None  # the TranscodeJob once it exists
        self.codec: str | None = None  # from the job's options
        self.cancelled = threading.Event()
        self.last_saved = 0.0
        self.thread: threading.Thread | None = None


class Runner:
    """The runner loop over one :class:`~kinoray.control.Platform` (see the module docstring)."""

    def __init__(self, platform: Platform, *, max_jobs: int | None = None, poll_seconds: float | None = None) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.max_jobs = max_jobs or self.settings.serve.max_concurrent_jobs
        self.poll_seconds = poll_seconds or self.settings.serve.poll_seconds
        self.running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._webhooks: threading.Thread | None = None
        self._last_sweep = 0.0
        self.last_tick: float | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.requeue_interrupted()
        self._thread = threading.Thread(target=self._loop, name="kinoray-runner", daemon=True)
        self._thread.start()
        # Webhooks get their own thread: a slow receiver must not delay claiming jobs.
        self._webhooks = threading.Thread(target=deliver_loop, args=(self.platform, self._stop),
                                          kwargs={"interval": self.poll_seconds}, name="kinoray-webhooks",
                                          daemon=True)
        self._webhooks.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling, cancel running jobs (they are re-queued by the next runner) and wait for them."""
        self._stop.set()
        with self._lock:
            running = list(self.running.values())
        for item in running:
            item.cancelled.set()
            if item.transcode is not None:
                item.transcode.cancel()
        for item in running:
            if item.thread is not None:
                item.thread.join(timeout)
        for thread in (self._thread, self._webhooks):
            if thread is not None:
                thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def requeue_interrupted(self) -> int:
        """Put jobs left active by a dead runner back in the queue; returns how many."""
        with self.platform.db.session() as session:
            result = session.execute(sa.update(Job).where(Job.state.in_(_ACTIVE))
                                     .values(state="queued", updated_at=time.time()))
            count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            log.warning("re-queued interrupted jobs", extra={"jobs": count})
        return count

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive a bad tick (DB restart, ...)
                log.exception("runner tick failed")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> None:
        """One pass of everything the runner does."""
        self.last_tick = time.time()
        self._cancel_deleted()
        self._claim_jobs()
        now = time.monotonic()
        if now - self._last_sweep >= _SWEEP_INTERVAL:
            self._last_sweep = now
            self._periodic("uploads", self._expire_uploads)
            self._periodic("idempotency", lambda: idempotency.sweep(
                self.platform.db, timedelta(hours=self.settings.api.idempotency_hours)))

    @staticmethod
    def _periodic(name: str, call: Any) -> None:
        try:
            call()
        except Exception:  # noqa: BLE001 - one failing duty must not stop the others
            log.exception("runner duty failed", extra={"duty": name})

    def _expire_uploads(self) -> None:
        from kinoray.control.uploads import expire_uploads

        expire_uploads(self.platform)

    # --- jobs ----------------------------------------------------------------------------------------------

    def _claim_jobs(self) -> None:
        with self._lock:
            free = self.max_jobs - len(self.running)
        if free <= 0 or self._stop.is_set():
            return
        with self.platform.db.session() as session:
            candidates = list(session.execute(
                sa.select(Job.job_id, Job.asset_id).where(Job.state == "queued")
                .order_by(Job.created_at, Job.job_id).limit(free)))
        for job_id, asset_id in candidates:
            with self.platform.db.session() as session:
                claimed = session.execute(sa.update(Job).where(Job.job_id == job_id, Job.state == "queued")
                                          .values(state="planning", updated_at=time.time()))
                if not claimed.rowcount:  # type: ignore[attr-defined]
                    continue
            item = _Running(job_id, asset_id)
            item.thread = threading.Thread(target=self._run, args=(item,), name=f"job-{job_id[:8]}", daemon=True)
            with self._lock:
                self.running[job_id] = item
            item.thread.start()

    def _cancel_deleted(self) -> None:
        with self._lock:
            running = list(self.running.values())
        if not running:
            return
        with self.platform.db.session() as session:
            present = set(session.scalars(sa.select(Asset.id).where(Asset.id.in_([r.asset_id for r in running]))))
        for item in running:
            if item.asset_id not in present and not item.cancelled.is_set():
                log.info("asset deleted: cancelling its job", extra={"asset": item.asset_id, "job": item.job_id})
                item.cancelled.set()
                if item.transcode is not None:
                    item.transcode.cancel()

    def _run(self, item: _Running) -> None:
        try:
            self._run_job(item)
        except Exception:  # noqa: BLE001
            log.exception("job crashed", extra={"job": item.job_id})
        finally:
            with self._lock:
                self.running.pop(item.job_id, None)

    def _run_job(self, item: _Running) -> None:
        from kinoray.cluster.coordinator import TranscodeJob
        from kinoray.media.pipeline import TranscodeOptions

        store = self.platform.store
        with self.platform.db.session() as session:
            job = session.get(Job, item.job_id)
            asset = session.get(Asset, item.asset_id)
            if job is None or asset is None:
                return
            input_url, source_key, options = asset.input_url, job.source, dict(job.options or {})
            output_key = job.output
            item.codec = options.get("codec")
        try:
            if self._stop.is_set() or item.cancelled.is_set():
                raise JobCancelledError("the runner is stopping")
            if input_url is not None and not store.exists(source_key):
                self._progress(item, "ingesting", 0.0)
                fetch_input(input_url, store, source_key, self.settings)
            self._progress(item, "transcoding", 0.0)
            if "ladder" in options and options["ladder"] is not None:
                options["ladder"] = tuple(options["ladder"])
            transcode_options = TranscodeOptions(**options, limits=self.settings.limits)
            transcode = TranscodeJob(store.url_of(source_key), store.url_of(output_key), transcode_options,
                                     job_id=item.job_id, settings=self.settings,
                                     on_update=lambda record: self._save_record(item, record),
                                     on_event=lambda event: self._count_chunk(item, event))
            item.transcode = transcode
            if item.cancelled.is_set():
                transcode.cancel()
            result = transcode.run()
            self._save_record(item, transcode.record, force=True)
        except JobCancelledError as error:
            self._finish_cancelled(item, error)
            return
        except KinorayError as error:
            if item.transcode is not None:
                self._save_record(item, item.transcode.record, force=True)
            self._finish_errored(item, error.type, str(error))
            return
        except Exception as error:  # noqa: BLE001 - an asset must end errored, never stuck preparing
            log.exception("transcode failed unexpectedly", extra={"job": item.job_id})
            self._finish_errored(item, "internal_error", f"{type(error).__name__}: {error}")
            return
        self._finish_ready(item, result)

    @staticmethod
    def _count_chunk(item: _Running, event: Any) -> None:
        if event.kind == "done" and event.chunk_index is not None:
            encoder = item.transcode.record.encoder if item.transcode is not None else None
            CHUNKS_ENCODED.labels(backend=encoder or "unknown").inc()

    def _progress(self, item: _Running, state: str, fraction: float) -> None:
        with self.platform.db.session() as session:
            session.execute(sa.update(Asset).where(Asset.id == item.asset_id, Asset.status == AssetStatus.PREPARING)
                            .values(progress_state=state, progress_fraction=fraction, updated_at=utcnow()))

    def _save_record(self, item: _Running, record: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - item.last_saved < _PROGRESS_INTERVAL and not record.state.finished:
            return
        item.last_saved = now
        with self.platform.db.session() as session:
            job = session.get(Job, item.job_id)
            if job is None:  # the asset (and its jobs) were deleted
                return
            source, output = job.source, job.output  # storage keys: the record holds their URLs
            job.apply_record(record)
            job.source, job.output = source, output
        if not record.state.finished:
            self._progress(item, "transcoding", record.progress)

    def _finish_ready(self, item: _Running, result: Any) -> None:
        fields = asset_fields(result)
        with self.platform.db.session() as session:
            asset = session.get(Asset, item.asset_id)
            if asset is None:
                self._remove_files(item.asset_id)
                return
            for name, value in fields.items():
                setattr(asset, name, value)
            asset.video_codec = item.codec
            if asset.static_renditions is not None:
                asset.static_renditions = self._static_renditions(item.asset_id, result)
            asset.status = AssetStatus.READY
            asset.progress_state, asset.progress_fraction = "completed", 1.0
            asset.errors = None
            asset.updated_at = utcnow()
            session.flush()
            emit(session, "video.asset.ready", "asset", asset.id, asset_view(asset))
        JOBS_FINISHED.labels(state="ready").inc()
        log.info("asset ready", extra={"asset": item.asset_id, "seconds": round(result.wall_seconds, 2),
                                       "encoder": result.encoder})

    def _static_renditions(self, asset_id: str, result: Any) -> dict[str, Any]:
        key = result.static_rendition.rsplit("/", 1)[-1]
        media = f"assets/{asset_id}/media/{key}"
        top = max(result.renditions, key=lambda r: r.height, default=None)
        entry: dict[str, Any] = {"name": key, "ext": key.rsplit(".", 1)[-1], "status": "ready",
                                 "filesize": str(self.platform.store.size(media))}
        if top is not None:
            entry.update(width=top.width, height=top.height, bitrate=top.average_bandwidth)
        return {"status": "ready", "files": [entry]}

    def _finish_errored(self, item: _Running, error_type: str, message: str) -> None:
        with self.platform.db.session() as session:
            asset = session.get(Asset, item.asset_id)
            if asset is None:
                self._remove_files(item.asset_id)
                return
            job = session.get(Job, item.job_id)
            if job is not None and job.state not in ("errored", "cancelled"):
                job.state, job.error_type, job.error, job.finished_at = "errored", error_type, message, time.time()
            asset.status = AssetStatus.ERRORED
            asset.errors = {"type": error_type, "messages": [message]}
            asset.progress_state = "errored"
            if asset.static_renditions is not None:
                asset.static_renditions = {"status": "errored", "files": []}
            asset.updated_at = utcnow()
            session.flush()
            emit(session, "video.asset.errored", "asset", asset.id, asset_view(asset))
        JOBS_FINISHED.labels(state="errored").inc()
        log.warning("asset errored", extra={"asset": item.asset_id, "type": error_type, "error": message})

    def _finish_cancelled(self, item: _Running, error: KinorayError) -> None:
        with self.platform.db.session() as session:
            asset_exists = session.get(Asset, item.asset_id) is not None
            job = session.get(Job, item.job_id)
            if job is not None and self._stop.is_set():
                job.state = "queued"  # the runner is stopping: the next one runs it again
        if not asset_exists:
            self._remove_files(item.asset_id)
            JOBS_FINISHED.labels(state="cancelled").inc()
        log.info("job stopped", extra={"job": item.job_id, "asset": item.asset_id, "reason": str(error)})

    def _remove_files(self, asset_id: str) -> None:
        try:
            self.platform.store.delete_prefix(f"assets/{asset_id}")
        except KinorayError as error:
            log.warning("could not remove a deleted asset's files", extra={"asset": asset_id, "error": str(error)})


@serve.deployment(name="kinoray-runner", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  health_check_period_s=10)
class JobRunner:
    """The runner as a Serve deployment (one replica). The ingress calls :meth:`metrics_text` for /metrics."""

    def __init__(self) -> None:
        from kinoray.logs import setup_logging

        setup_logging()
        self.runner = Runner(Platform.from_settings())
        self.runner.start()

    def metrics_text(self) -> str:
        from prometheus_client import REGISTRY, generate_latest

        return generate_latest(REGISTRY).decode()

    def status(self) -> dict[str, Any]:
        return {"running_jobs": len(self.runner.running), "last_tick": self.runner.last_tick,
                "alive": self.runner.alive}

    def check_health(self) -> None:
        if not self.runner.alive:
            raise RuntimeError("the runner loop has stopped")

    def __del__(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.stop(timeout=10)
            runner.platform.close()
