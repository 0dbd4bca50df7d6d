"""The job runner: a loop around the job lifecycle (:mod:`kinoray.control.jobs`) that runs transcodes on Ray, and
the control plane's other periodic work.

:class:`Runner`, polling every ``serve.poll_seconds``:

- claims ``queued`` jobs up to ``serve.max_concurrent_jobs`` and runs each in a thread: fetch the input URL
  into ``assets/<id>/input`` (:mod:`kinoray.control.ingest`), transcode it on the Ray cluster
  (:class:`kinoray.cluster.TranscodeJob`, output ``assets/<id>/media``), then finish the job — publish
  (asset ready) or fail (asset errored), with the event — in one transaction;
- renews the leases of the jobs it holds every ``jobs.heartbeat_seconds`` (a thread of its own, so a slow tick
  never lets a live runner's lease run out), and stops working on a job that is no longer its own;
- retries a finish the database refused for longer than ``jobs.retry_seconds`` on every tick, holding the job's
  lease meanwhile: a database outage delays an asset, it never strands it;
- reconciles at start and every ``jobs.reconcile_seconds`` (expired leases, assets preparing beside a finished
  job or without one: :meth:`kinoray.control.jobs.JobLifecycle.reconcile`);
- cancels a running job whose asset was deleted (the transcode stops; its files are removed);
- sends due webhooks in a thread of its own (:func:`kinoray.control.webhooks.deliver_loop`), times out abandoned
  uploads (:func:`kinoray.control.uploads.expire_uploads`), deletes expired test assets as ``DELETE`` does
  (:func:`kinoray.control.assets.expire_assets`), ends live sessions whose reconnect window is over
  (:func:`kinoray.control.live.expire_live`), prunes expired idempotency keys and deletes analytics events past
  ``analytics.retention_days`` (:func:`kinoray.control.analytics.sweep_analytics`) and writes the finished days'
  view exports (:func:`kinoray.control.analytics.export_views`) and rolls final views up into view Parquet, saving
  the open ones for starting API processes (:func:`kinoray.control.analytics.roll_up_views`), every
  ``serve.sweep_seconds``;
- evaluates the Data alert rules (:func:`kinoray.control.alerts.evaluate_alerts`) in a thread of its own every
  ``analytics.alert_seconds``, anomaly rules scored by the ``kinoray-anomaly`` deployment (:mod:`kinoray.serve.anomaly`)
  when the runner runs under Serve.

Several runners may share a database (leases keep them off each other's jobs); the ``kinoray-runner`` Serve
deployment runs one replica (:class:`JobRunner`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from ray import serve

from kinoray.control import idempotency
from kinoray.control.alerts import Scorer, evaluate_alerts, local_scorer
from kinoray.control.analytics import export_views, roll_up_views, sweep_analytics
from kinoray.control.assets import expire_assets
from kinoray.control.ingest import fetch_input
from kinoray.control.jobs import (
    ClaimedJob,
    FinishOutcome,
    JobLifecycle,
    asset_fields,
    ready_fields,
    retry_transient,
)
from kinoray.control.live import expire_live
from kinoray.control.master import expire_masters
from kinoray.control.platform import Platform
from kinoray.control.static_renditions import RenditionTask, StaticRenditionWork, discard, produce
from kinoray.control.webhooks import deliver_loop
from kinoray.errors import InvalidMediaError, JobCancelledError, KinorayError
from kinoray.priority import yield_cpu
from kinoray.store import keys
from kinoray.store.db import is_transient
from kinoray.store.models import Asset
from kinoray.store.states import JobRecord

if TYPE_CHECKING:
    from kinoray.cluster.coordinator import TranscodeJob
    from kinoray.cluster.progress import ChunkEvent
from kinoray.telemetry import CHUNKS_ENCODED, JOBS_FINISHED

__all__ = ["JobRunner", "Runner", "asset_fields"]

log = logging.getLogger(__name__)

_PROGRESS_INTERVAL = 1.0


@dataclass(frozen=True)
class _Outcome:
    """How a job thread ended: what the lifecycle must be told."""

    kind: str  # ready | errored | release | drop
    published: dict[str, Any] | None = None
    record: JobRecord | None = None  # the coordinator's last record
    error_type: str = ""
    message: str = ""


class _Running:
    def __init__(self, claimed: ClaimedJob) -> None:
        self.claimed = claimed
        self.job_id, self.asset_id = claimed.job_id, claimed.asset_id
        self.transcode: TranscodeJob | None = None  # once it exists
        self.cancelled = threading.Event()
        self.lost = threading.Event()  # the job is no longer ours (deleted, or re-queued after our lease ran out)
        self.last_saved = 0.0
        self.thread: threading.Thread | None = None

    def cancel(self) -> None:
        self.cancelled.set()
        if self.transcode is not None:
            self.transcode.cancel()


class Runner:
    """The runner loop over one :class:`~kinoray.control.Platform` (see the module docstring)."""

    def __init__(self, platform: Platform, *, max_jobs: int | None = None, poll_seconds: float | None = None,
                 lifecycle: JobLifecycle | None = None, scorer: Scorer | None = None) -> None:
        self.platform = platform
        #: What anomaly alert rules are scored with: the kinoray-anomaly deployment under Serve, else this process.
        self.scorer = scorer or local_scorer
        self.settings = platform.settings
        self.max_jobs = max_jobs or self.settings.serve.max_concurrent_jobs
        self.poll_seconds = poll_seconds or self.settings.serve.poll_seconds
        self.lifecycle = lifecycle or JobLifecycle(platform.db, self.settings)
        self.renditions = StaticRenditionWork(platform.db, self.settings, owner=self.lifecycle.owner)
        #: Static renditions being made, by id (their leases renewed with the jobs').
        self.making: dict[str, threading.Thread] = {}
        self.running: dict[str, _Running] = {}
        #: Finished jobs whose finish the database has refused so far; retried every tick, leases kept.
        self.deferred: dict[str, tuple[_Running, _Outcome]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_sweep = 0.0
        self._last_reconcile: float | None = None
        self.last_tick: float | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("kinoray-runner", self._loop), ("kinoray-heartbeat", self._heartbeat_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        # Webhooks get their own thread: a slow receiver must not delay claiming jobs.
        webhooks = threading.Thread(target=deliver_loop, args=(self.platform, self._stop),
                                    kwargs={"interval": self.poll_seconds}, name="kinoray-webhooks", daemon=True)
        webhooks.start()
        self._threads.append(webhooks)
        # Alert rules too: an evaluation reads hours of views and may wait on the anomaly detector.
        alerts = threading.Thread(target=self._alerts_loop, name="kinoray-alerts", daemon=True)
        alerts.start()
        self._threads.append(alerts)

    def _alerts_loop(self) -> None:
        """Evaluate the alert rules (:func:`kinoray.control.alerts.evaluate_alerts`) now and every
        ``analytics.alert_seconds``."""
        while not self._stop.is_set():
            self._periodic("alerts", lambda: evaluate_alerts(self.platform, self.scorer))
            self._stop.wait(self.settings.analytics.alert_seconds)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling, cancel running jobs (they go back to the queue for the next runner) and wait for them."""
        self._stop.set()
        running = self._held_items()
        for item in running:
            item.cancel()
        for item in running:
            if item.thread is not None:
                item.thread.join(timeout)
        self._retry_deferred()
        with self._lock:
            making = list(self.making.values())
        for thread in making:  # a remux is short; one that outlives this is taken again after its lease
            thread.join(timeout)
        for thread in self._threads:
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and self._threads[0].is_alive()

    def _held_items(self) -> list[_Running]:
        with self._lock:
            return list(self.running.values()) + [item for item, _ in self.deferred.values()]

    def held(self) -> set[str]:
        """Ids of the jobs this runner holds: running, or finished with the finish not yet written."""
        with self._lock:
            return set(self.running) | set(self.deferred)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive a bad tick (DB restart, ...)
                log.exception("runner tick failed")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> None:
        """One pass of everything the runner loop does."""
        self.last_tick = time.time()
        self._retry_deferred()
        now = time.monotonic()
        if self._last_reconcile is None or now - self._last_reconcile >= self.settings.jobs.reconcile_seconds:
            self._last_reconcile = now
            self.lifecycle.reconcile(self.held())
        self._cancel_deleted()
        self._claim_jobs()
        self._periodic("static renditions", self._claim_renditions)
        if now - self._last_sweep >= self.settings.serve.sweep_seconds:
            self._last_sweep = now
            self._periodic("master downloads", lambda: expire_masters(self.platform.db))
            self._periodic("uploads", self._expire_uploads)
            self._periodic("test assets", lambda: expire_assets(self.platform))
            self._periodic("live sessions", lambda: expire_live(self.platform))
            self._periodic("analytics retention", lambda: sweep_analytics(self.platform))
            self._periodic("view exports", lambda: export_views(self.platform))
            self._periodic("view rollup", lambda: roll_up_views(self.platform))
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

    def _claim_renditions(self) -> None:
        """Claim static renditions up to ``serve.max_concurrent_jobs`` being made at once, each in a thread."""
        with self._lock:
            free = self.max_jobs - len(self.making)
        if free <= 0 or self._stop.is_set():
            return
        for task in self.renditions.claim(free):
            thread = threading.Thread(target=self._make_rendition, args=(task,), name=f"rendition-{task.id[:8]}",
                                      daemon=True)
            with self._lock:
                self.making[task.id] = thread
            thread.start()

    def _make_rendition(self, task: RenditionTask) -> None:
        try:
            produced = produce(self.platform.store, task)
            if not retry_transient(lambda: self.renditions.finish(task.id, produced), self.settings.jobs,
                                   what=f"finish rendition {task.id}"):
                # deleted meanwhile (or taken over after our lease ran out): its file is no one's
                if produced.status.value == "ready" and not self.renditions.exists(task.id):
                    discard(self.platform.store, task)
        except Exception:  # noqa: BLE001 - the lease runs out and the next claim tries again
            log.exception("static rendition crashed", extra={"rendition": task.id})
        finally:
            with self._lock:
                self.making.pop(task.id, None)

    def _heartbeat_loop(self) -> None:
        interval = self.settings.jobs.heartbeat_interval
        while not self._stop.wait(interval):
            with self._lock:
                making = set(self.making)
            if making:
                try:
                    self.renditions.heartbeat(making)
                except Exception as error:  # noqa: BLE001 - the next beat tries again
                    log.warning("rendition heartbeat failed", extra={"error": str(error).splitlines()[0]})
            held = self.held()
            if not held:
                continue
            try:
                kept = self.lifecycle.heartbeat(held)
            except Exception as error:  # noqa: BLE001 - the next beat tries again; the lease has slack
                log.warning("heartbeat failed", extra={"jobs": len(held), "error": str(error).splitlines()[0]})
                continue
            for item in self._held_items():
                if item.job_id in held and item.job_id not in kept:
                    self._lose(item)

    def _lose(self, item: _Running) -> None:
        if not item.lost.is_set():
            log.warning("job is no longer ours: stopping it", extra={"job": item.job_id, "asset": item.asset_id})
            item.lost.set()
        item.cancel()
        with self._lock:
            self.deferred.pop(item.job_id, None)

    # --- jobs ----------------------------------------------------------------------------------------------

    def _claim_jobs(self) -> None:
        with self._lock:
            free = self.max_jobs - len(self.running) - len(self.deferred)
        if free <= 0 or self._stop.is_set():
            return
        for claimed in self.lifecycle.claim(free):
            item = _Running(claimed)
            item.thread = threading.Thread(target=self._run, args=(item,), name=f"job-{claimed.job_id[:8]}",
                                           daemon=True)
            with self._lock:
                self.running[claimed.job_id] = item
            item.thread.start()

    def _cancel_deleted(self) -> None:
        with self._lock:
            running = list(self.running.values())
        if not running:
            return
        with self.platform.db.reader() as session:
            present = set(session.scalars(sa.select(Asset.id).where(Asset.id.in_([r.asset_id for r in running]))))
        for item in running:
            if item.asset_id not in present and not item.cancelled.is_set():
                log.info("asset deleted: cancelling its job", extra={"asset": item.asset_id, "job": item.job_id})
                item.lost.set()
                item.cancel()

    def _run(self, item: _Running) -> None:
        try:
            outcome = self._execute(item)
        except Exception as error:  # noqa: BLE001 - an asset must end errored, never stuck preparing
            log.exception("job crashed", extra={"job": item.job_id})
            outcome = _Outcome("errored", error_type="internal_error", message=f"{type(error).__name__}: {error}")
        try:
            retry_transient(lambda: self._settle(item, outcome), self.settings.jobs, what=f"finish {item.job_id}")
        except Exception as error:  # noqa: BLE001
            if is_transient(error) and not item.lost.is_set():
                log.warning("database unavailable: the job's finish is retried by the runner loop",
                            extra={"job": item.job_id, "outcome": outcome.kind})
                with self._lock:
                    self.deferred[item.job_id] = (item, outcome)
            else:
                log.exception("could not finish the job", extra={"job": item.job_id})
        finally:
            with self._lock:
                self.running.pop(item.job_id, None)

    def _retry_deferred(self) -> None:
        with self._lock:
            pending = list(self.deferred.values())
        for item, outcome in pending:
            try:
                self._settle(item, outcome)
            except Exception as error:  # noqa: BLE001
                if is_transient(error):
                    log.warning("finish still refused by the database", extra={"job": item.job_id})
                    return  # the next tick tries again
                log.exception("could not finish the job", extra={"job": item.job_id})
            with self._lock:
                self.deferred.pop(item.job_id, None)

    def _execute(self, item: _Running) -> _Outcome:
        from kinoray.cluster.coordinator import TranscodeJob
        from kinoray.media.pipeline import TranscodeOptions

        claimed, store = item.claimed, self.platform.store
        options = dict(claimed.options)
        try:
            if self._stop.is_set() or item.cancelled.is_set():
                raise JobCancelledError("the runner is stopping")
            if claimed.input_url is not None and not store.exists(claimed.source):
                if claimed.input_url.startswith("mux://"):
                    raise InvalidMediaError("the clip's source asset was deleted before the clip was made")
                self._progress(item, None, "ingesting", 0.0)
                fetch_input(claimed.input_url, store, claimed.source, self.settings)
            self._progress(item, None, "transcoding", 0.0)
            if options.get("ladder") is not None:
                options["ladder"] = tuple(options["ladder"])
            transcode = TranscodeJob(store.url_of(claimed.source), store.url_of(claimed.output),
                                     TranscodeOptions(**options, limits=self.settings.limits),
                                     job_id=item.job_id, settings=self.settings,
                                     on_update=lambda record: self._save_record(item, record),
                                     on_event=lambda event: self._count_chunk(item, event))
            item.transcode = transcode
            if item.cancelled.is_set():
                transcode.cancel()
            result = transcode.run()
            published = ready_fields(result, codec=options.get("codec"))
        except JobCancelledError as error:
            log.info("job stopped", extra={"job": item.job_id, "asset": item.asset_id, "reason": str(error)})
            return _Outcome("drop") if item.lost.is_set() else _Outcome("release")
        except KinorayError as error:
            record = item.transcode.record if item.transcode is not None else None
            return _Outcome("errored", record=record, error_type=error.type, message=str(error))
        log.info("transcode done", extra={"asset": item.asset_id, "seconds": round(result.wall_seconds, 2),
                                          "encoder": result.encoder})
        return _Outcome("ready", published=published, record=transcode.record)

    def _settle(self, item: _Running, outcome: _Outcome) -> None:
        """Tell the lifecycle how the job ended (one transaction; the caller retries it)."""
        if outcome.kind == "release":
            self.lifecycle.release(item.job_id)
            finished = None
        elif outcome.kind == "ready":
            assert outcome.published is not None
            finished = self.lifecycle.publish(item.job_id, outcome.published, outcome.record)
        elif outcome.kind == "errored":
            finished = self.lifecycle.fail(item.job_id, outcome.error_type, outcome.message, outcome.record)
        else:
            finished = None
        if finished is FinishOutcome.DONE:
            JOBS_FINISHED.labels(state=outcome.kind).inc()
        elif finished is FinishOutcome.LOST:
            log.warning("job was taken over before it finished: its result is dropped", extra={"job": item.job_id})
        if (outcome.kind == "drop" or finished is FinishOutcome.GONE) and not self.lifecycle.asset_exists(
                item.asset_id):
            self._remove_files(item.asset_id)
            JOBS_FINISHED.labels(state="cancelled").inc()

    def _progress(self, item: _Running, record: JobRecord | None, stage: str, fraction: float) -> None:
        """Persist progress; a failed write is skipped (the next one carries newer data), a fenced-out one means
        the job is no longer ours."""
        try:
            ours = self.lifecycle.progress(item.job_id, record, stage=stage, fraction=fraction)
        except Exception as error:  # noqa: BLE001 - progress is best effort; the finish is what must land
            if not is_transient(error):
                raise
            log.warning("progress not saved", extra={"job": item.job_id, "error": str(error).splitlines()[0]})
            return
        if not ours:
            self._lose(item)
            raise JobCancelledError(f"job {item.job_id} is no longer this runner's")

    def _save_record(self, item: _Running, record: JobRecord) -> None:
        now = time.monotonic()
        if now - item.last_saved < _PROGRESS_INTERVAL or record.state.finished or item.lost.is_set():
            return
        item.last_saved = now
        try:
            self._progress(item, record, "transcoding", record.progress)
        except JobCancelledError:
            pass  # _lose cancelled the transcode; its run() ends with JobCancelledError

    @staticmethod
    def _count_chunk(item: _Running, event: ChunkEvent) -> None:
        if event.kind == "done" and event.chunk_index is not None:
            encoder = item.transcode.record.encoder if item.transcode is not None else None
            CHUNKS_ENCODED.labels(backend=encoder or "unknown").inc()

    def _remove_files(self, asset_id: str) -> None:
        try:
            self.platform.store.delete_prefix(keys.asset_prefix(asset_id))
        except KinorayError as error:
            log.warning("could not remove a deleted asset's files", extra={"asset": asset_id, "error": str(error)})


def _start_live_ingest(platform: Platform) -> Any:
    """The RTMP ingest as a Ray actor beside this replica (at Ray's niceness 0: live work is real-time), or the
    one a previous replica left running."""
    import ray

    from kinoray.serve.live_ingest import LiveIngestActor

    pinned = dict(platform.settings.live.ingest_resources)
    return ray.remote(LiveIngestActor).options(name="kinoray-live-ingest", get_if_exists=True, num_cpus=0,
                                               max_restarts=3, **({"resources": pinned} if pinned else {})).remote()


@serve.deployment(name="kinoray-runner", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  health_check_period_s=10)
class JobRunner:
    """The runner as a Serve deployment (one replica). The ingress calls :meth:`metrics_text` for /metrics."""

    def __init__(self, anomaly: Any = None) -> None:
        from kinoray.logs import setup_logging
        from kinoray.serve.anomaly import HandleScorer

        setup_logging()
        platform = Platform.from_settings()
        self.live = _start_live_ingest(platform) if platform.settings.live.enabled else None
        yield_cpu(platform.settings.cluster.worker_nice)  # batch work: the API's replicas come first
        scorer = (HandleScorer(anomaly, platform.settings.analytics.anomaly_timeout_seconds)
                  if anomaly is not None else None)
        self.runner = Runner(platform, scorer=scorer)
        self.runner.start()

    def metrics_text(self) -> str:
        from prometheus_client import REGISTRY, generate_latest

        return generate_latest(REGISTRY).decode()

    def status(self) -> dict[str, Any]:
        return {"running_jobs": len(self.runner.running), "deferred_finishes": len(self.runner.deferred),
                "last_tick": self.runner.last_tick, "alive": self.runner.alive}

    def live_status(self) -> dict[str, Any]:
        """The RTMP ingest: its port, why it is off (if it is), how many publishers are sending."""
        if self.live is None:
            return {"port": None, "error": "live.enabled is false", "publishing": 0}
        import ray

        return dict(ray.get(self.live.status.remote(), timeout=30))

    def check_health(self) -> None:
        if not self.runner.alive:
            raise RuntimeError("the runner loop has stopped")

    def __del__(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.stop(timeout=10)
            runner.platform.close()
