"""The transcode job lifecycle, Ray-free: claim, heartbeat, progress, finish (publish or fail), release, reconcile.

Every change of a job's state goes through :class:`JobLifecycle`; the runner (:mod:`kinoray.serve.runner`) is a
loop around it that runs the transcodes. States are :class:`~kinoray.store.states.JobState`::

    queued ──claim──▶ planning ─▶ encoding ─▶ packaging ──publish──▶ ready      (asset ready + video.asset.ready)
      ▲                 │            │           │        ──fail─────▶ errored    (asset errored + video.asset.errored)
      └──── release (graceful stop) / reconcile (lease expired, owner presumed dead) ◀┘

Rules:

- **Leases.** A claim sets ``owner`` (this runner's id) and ``lease_expires_at = now + jobs.lease_seconds`` and
  counts an attempt. The owner's heartbeat, and every progress write, push the lease forward. Every write the
  owner makes is *fenced*: ``WHERE job_id = ? AND owner = me AND state IN (active)``; a write that matches
  nothing means the job is no longer ours (stolen after our lease ran out, or the asset was deleted), and the
  runner stops working on it.
- **Finish is one transaction**: the job's final state, the asset's status and fields, and the event (the
  webhook outbox row) commit together or not at all, so a job is never ``ready`` while its asset is still
  ``preparing``. It is idempotent: repeating it after an ambiguous commit (the connection died during
  ``COMMIT``) finds the job already final and emits nothing; an event is emitted only by the transaction that
  moves the asset out of ``preparing``, so each asset gets exactly one ``ready``/``errored`` webhook.
- **Transient database errors** (:func:`kinoray.store.db.is_transient`: SQLite busy/locked, a lost or refused
  connection) are retried with bounded exponential backoff (:func:`retry_transient`, ``jobs.retry_seconds``);
  past that the runner keeps the outcome in memory, keeps the job's lease alive, and retries it on every loop
  tick.
- **The reconciler** (:meth:`JobLifecycle.reconcile`, every ``jobs.reconcile_seconds`` and at start) repairs
  what a crash or a lost write can leave: an active job whose lease expired is re-queued (or, after
  ``jobs.max_attempts`` claims, errored); an asset still ``preparing`` with no queued or active job is finished
  from its job — published from the stored result of a ``ready`` job, errored like an ``errored`` job, or given
  its job back (``ready`` without a result, ``cancelled``, or no job at all: a new one). So every accepted asset
  ends ``ready`` or ``errored``, with its webhook.

Lease times are epoch seconds from the runners' clocks: runners on several machines need clocks in sync to well
under ``jobs.lease_seconds``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from enum import StrEnum
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from kinoray.control.assets import (
    NewAssetSettings,
    asset_view,
    job_options,
    job_source,
    media_prefix,
    resolution_tier,
)
from kinoray.control.events import emit
from kinoray.control.master import fail_master, master_ready
from kinoray.control.static_renditions import fail_static_renditions, renditions_ready
from kinoray.settings import JobSettings, Settings, get_settings
from kinoray.store.db import Database, is_transient
from kinoray.store.models import Asset, AssetStatus, Job, new_id, utcnow
from kinoray.store.states import ACTIVE_JOB_STATES, JobRecord, JobState

if TYPE_CHECKING:
    from kinoray.media.pipeline import TranscodeResult

__all__ = [
    "ClaimedJob",
    "FinishOutcome",
    "JobLifecycle",
    "ReconcileReport",
    "asset_fields",
    "error_asset",
    "media_fields",
    "new_owner",
    "publish_asset",
    "ready_fields",
    "retry_transient",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ACTIVE = tuple(state.value for state in ACTIVE_JOB_STATES)
_LIVE = (JobState.QUEUED.value, *_ACTIVE)  # a job that will still move its asset on
#: Record fields a progress write never copies: the row's identity and storage keys, and what only a finish
#: decides (the final state's error and time).
_NOT_FROM_PROGRESS = {"job_id", "source", "output", "created_at", "state", "error_type", "error", "finished_at"}


# --- transient errors ----------------------------------------------------------------------------------------


def retry_transient(call: Callable[[], T], settings: JobSettings, *, what: str,
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> T:
    """``call()``, retried while it raises a transient database error (:func:`kinoray.store.db.is_transient`:
    SQLite busy or locked, a refused, lost or invalidated connection, an exhausted pool), with exponential
    backoff from ``settings.retry_backoff_seconds`` up to ``retry_max_backoff_seconds``, for at most
    ``retry_seconds``; then the last error is raised. ``call`` must be one whole transaction (it is re-run from the start)."""
    deadline = clock() + settings.retry_seconds
    pause = settings.retry_backoff_seconds
    attempt = 1
    while True:
        try:
            return call()
        except Exception as error:
            if not is_transient(error) or clock() + pause > deadline:
                raise
            log.warning("transient database error; retrying",
                        extra={"what": what, "attempt": attempt, "error": str(error).splitlines()[0][:200]})
        sleep(pause)
        pause = min(pause * 2, settings.retry_max_backoff_seconds)
        attempt += 1


def new_owner() -> str:
    """A runner's identity in ``jobs.owner``: ``host:pid:random`` (unique per process start)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


# --- what a finished transcode publishes ---------------------------------------------------------------------


def asset_fields(result: TranscodeResult) -> dict[str, Any]:
    """Asset columns from a :class:`~kinoray.media.pipeline.TranscodeResult` (Mux's derived fields)."""
    top = max(result.renditions, key=lambda r: r.width * r.height) if result.renditions else None
    return media_fields(duration=result.duration_seconds, encoder=result.encoder,
                        top=(top.width, top.height) if top is not None else None,
                        frame_rate=float(Fraction(result.frame_rate)) if result.frame_rate else None,
                        audio=(result.audio["channels"], result.audio["duration_seconds"]) if result.audio else None)


def media_fields(*, duration: float, encoder: str | None, top: tuple[int, int] | None, frame_rate: float | None,
                 audio: tuple[int, float] | None) -> dict[str, Any]:
    """Asset columns (Mux's derived fields) of packaged media: its duration (seconds), the encoder that made
    it, the top rendition's ``(width, height)`` (``None``: audio only), its frame rate and the audio's
    ``(channels, duration)``. What a transcode publishes (:func:`asset_fields`) and a live recording too."""
    fields_: dict[str, Any] = {"duration": round(duration, 6), "encoder_backend": encoder}
    tracks: list[dict[str, Any]] = []
    if top is not None:
        width, height = top
        divisor = math.gcd(width, height)
        fields_.update(aspect_ratio=f"{width // divisor}:{height // divisor}",
                       resolution_tier=resolution_tier(min(width, height)), max_stored_frame_rate=frame_rate)
        tracks.append({"type": "video", "id": new_id(), "max_width": width, "max_height": height,
                       "max_frame_rate": frame_rate, "duration": round(duration, 6)})
    else:
        fields_.update(resolution_tier="audio-only", max_stored_frame_rate=-1)
    if audio is not None:
        tracks.append({"type": "audio", "id": new_id(), "max_channels": audio[0], "duration": round(audio[1], 6)})
    fields_["tracks"] = tracks
    return fields_


def ready_fields(result: TranscodeResult, *, codec: str | None) -> dict[str, Any]:
    """Everything :meth:`JobLifecycle.publish` writes onto the asset for ``result``: :func:`asset_fields` and
    the codec. (Static renditions are rows the runner makes once the asset is ready:
    :mod:`kinoray.control.static_renditions`.)"""
    published = asset_fields(result)
    published["video_codec"] = codec
    return published


# --- results -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedJob:
    """What a runner needs to run a job it has just claimed."""

    job_id: str
    asset_id: str
    source: str  # object-store key of the input
    output: str  # object-store prefix of the media
    options: dict[str, Any]
    input_url: str | None  # to fetch into ``source`` first, unless already stored
    attempt: int  # 1 on the first claim

    def __post_init__(self) -> None:
        if self.attempt < 1:
            raise ValueError(f"attempt must be at least 1, not {self.attempt}")


class FinishOutcome(StrEnum):
    """What :meth:`JobLifecycle.publish` / :meth:`~JobLifecycle.fail` found."""

    DONE = "done"  # this call moved the job (and its asset) to the final state
    ALREADY = "already"  # an earlier call did (an ambiguous commit retried): nothing changed, nothing emitted
    LOST = "lost"  # the job is no longer ours (re-queued or claimed by another runner): nothing changed
    GONE = "gone"  # the job's asset was deleted


@dataclass(frozen=True)
class ReconcileReport:
    """Job and asset ids one :meth:`JobLifecycle.reconcile` pass repaired, by what it did."""

    requeued: tuple[str, ...] = ()  # jobs whose lease expired, back to queued
    abandoned: tuple[str, ...] = ()  # jobs whose lease expired max_attempts times: errored, with their asset
    published: tuple[str, ...] = ()  # assets published from their ready job's stored result
    errored: tuple[str, ...] = ()  # assets errored like their errored job
    rerun: tuple[str, ...] = ()  # assets whose job was re-queued, or given a new one

    @property
    def total(self) -> int:
        return sum(len(getattr(self, field.name)) for field in fields(self))


# --- the lifecycle -------------------------------------------------------------------------------------------


class JobLifecycle:
    """Every state change of transcode jobs in one database, as runner ``owner``.

    Each method is one transaction (or one per job), safe to call from any thread, and raises the database's
    error when it fails; wrap it in :func:`retry_transient` (the runner does) to ride out transient ones.
    ``settings.jobs`` sets the lease and the attempts; ``settings.transcode`` the options of a job the reconciler
    has to recreate. ``clock`` gives epoch seconds (leases); tests pass a fake one.
    """

    def __init__(self, db: Database, settings: Settings | None = None, *, owner: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.settings = settings or get_settings()
        self.config: JobSettings = self.settings.jobs
        self.owner = owner or new_owner()
        self.clock = clock

    def _lease(self) -> float:
        return self.clock() + self.config.lease_seconds

    def _ours(self, job_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(Job.job_id == job_id, Job.owner == self.owner, Job.state.in_(_ACTIVE))

    # --- claim, heartbeat, progress --------------------------------------------------------------------------

    def claim(self, limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` queued jobs, oldest first: each becomes ``planning``, ours, under a fresh lease.
        A job another runner claimed first is skipped (the claim is a conditional ``UPDATE``)."""
        if limit <= 0:
            return []
        with self.db.reader() as session:
            candidates = list(session.scalars(
                sa.select(Job.job_id).where(Job.state == JobState.QUEUED.value)
                .order_by(Job.created_at, Job.job_id).limit(limit)))
        claimed: list[ClaimedJob] = []
        for job_id in candidates:
            job = self._claim_one(job_id)
            if job is not None:
                claimed.append(job)
        return claimed

    def _claim_one(self, job_id: str) -> ClaimedJob | None:
        now = self.clock()
        with self.db.session() as session:
            result = session.execute(
                sa.update(Job).where(Job.job_id == job_id, Job.state == JobState.QUEUED.value)
                .values(state=JobState.PLANNING.value, owner=self.owner, lease_expires_at=now + self.config.lease_seconds,
                        attempts=Job.attempts + 1, updated_at=now)
                .execution_options(synchronize_session=False))
            if not _count(result):
                return None
            job = session.get_one(Job, job_id)
            asset = session.get_one(Asset, job.asset_id)
            claimed = ClaimedJob(job_id=job_id, asset_id=job.asset_id, source=job.source, output=job.output,
                                 options=dict(job.options or {}), input_url=asset.input_url,
                                 attempt=job.attempts)
        log.info("job claimed", extra={"job": job_id, "asset": claimed.asset_id, "attempt": claimed.attempt})
        return claimed

    def heartbeat(self, job_ids: Collection[str]) -> set[str]:
        """Renew the leases of ``job_ids``; the ids that are still ours (the others were re-queued, stolen,
        finished or deleted: stop working on them)."""
        if not job_ids:
            return set()
        lease = self._lease()
        kept: set[str] = set()
        with self.db.session() as session:
            for job_id in sorted(job_ids):
                result = session.execute(sa.update(Job).where(self._ours(job_id)).values(lease_expires_at=lease)
                                         .execution_options(synchronize_session=False))
                if _count(result):
                    kept.add(job_id)
        return kept

    def progress(self, job_id: str, record: JobRecord | None = None, *, stage: str | None = None,
                 fraction: float | None = None) -> bool:
        """Write ``record`` (the coordinator's snapshot) into our job, renew its lease, and set the asset's
        ``progress`` (``stage``: ingesting | transcoding; ``fraction`` 0..1) while it is preparing. A record in
        a final state changes no state: only :meth:`publish` and :meth:`fail` finish a job. ``False``: the
        job is no longer ours (nothing was written)."""
        now = self.clock()
        values: dict[str, Any] = {"lease_expires_at": now + self.config.lease_seconds, "updated_at": now}
        if record is not None:
            if record.job_id != job_id:
                raise ValueError(f"record of job {record.job_id!r} written to job {job_id!r}")
            values.update(_record_values(record))
            if record.state.active:
                values["state"] = record.state.value
        with self.db.session() as session:
            result = session.execute(sa.update(Job).where(self._ours(job_id)).values(**values)
                                     .execution_options(synchronize_session=False))
            if not _count(result):
                return False
            if stage is not None:
                asset_id = session.scalar(sa.select(Job.asset_id).where(Job.job_id == job_id))
                changes: dict[str, Any] = {"progress_state": stage, "updated_at": utcnow()}
                if fraction is not None:
                    changes["progress_fraction"] = min(max(fraction, 0.0), 1.0)
                session.execute(sa.update(Asset).where(Asset.id == asset_id, Asset.status == AssetStatus.PREPARING)
                                .values(**changes).execution_options(synchronize_session=False))
        return True

    # --- finish ----------------------------------------------------------------------------------------------

    def publish(self, job_id: str, published: dict[str, Any], record: JobRecord | None = None) -> FinishOutcome:
        """Finish our job as ``ready``: store ``published`` (asset columns, from :func:`ready_fields`) as the
        job's result and on the asset, mark the asset ``ready`` and emit ``video.asset.ready`` — one
        transaction. Idempotent (see the module docstring)."""
        now = self.clock()
        values: dict[str, Any] = {**(_record_values(record) if record is not None else {}),
                                  "state": JobState.READY.value, "result": published, "error_type": None,
                                  "error": None, "finished_at": now, "updated_at": now, "owner": None,
                                  "lease_expires_at": None}
        with self.db.session() as session:
            outcome = self._finish(session, job_id, values, JobState.READY)
            if outcome is FinishOutcome.DONE or outcome is FinishOutcome.ALREADY:
                job = session.get_one(Job, job_id)
                if publish_asset(session, job.asset_id, job.result or published, self.settings):
                    outcome = FinishOutcome.DONE
        log.info("job published", extra={"job": job_id, "outcome": outcome.value})
        return outcome

    def fail(self, job_id: str, error_type: str, message: str, record: JobRecord | None = None) -> FinishOutcome:
        """Finish our job as ``errored`` with ``error_type``/``message``, mark its asset ``errored`` and emit
        ``video.asset.errored`` — one transaction. Idempotent."""
        now = self.clock()
        values: dict[str, Any] = {**(_record_values(record) if record is not None else {}),
                                  "state": JobState.ERRORED.value, "error_type": error_type, "error": message,
                                  "finished_at": now, "updated_at": now, "owner": None, "lease_expires_at": None}
        with self.db.session() as session:
            outcome = self._finish(session, job_id, values, JobState.ERRORED)
            if outcome is FinishOutcome.DONE or outcome is FinishOutcome.ALREADY:
                job = session.get_one(Job, job_id)
                if error_asset(session, job.asset_id, job.error_type or error_type, job.error or message):
                    outcome = FinishOutcome.DONE
        log.info("job failed", extra={"job": job_id, "outcome": outcome.value, "type": error_type})
        return outcome

    def _finish(self, session: Session, job_id: str, values: dict[str, Any], final: JobState) -> FinishOutcome:
        result = session.execute(sa.update(Job).where(self._ours(job_id)).values(**values)
                                 .execution_options(synchronize_session=False))
        if _count(result):
            return FinishOutcome.DONE
        state = session.scalar(sa.select(Job.state).where(Job.job_id == job_id))
        if state is None:
            return FinishOutcome.GONE
        return FinishOutcome.ALREADY if state == final.value else FinishOutcome.LOST

    def release(self, job_id: str) -> bool:
        """Give our job back to the queue (the runner is stopping); the claim does not count as an attempt.
        ``False``: it was not ours any more."""
        with self.db.session() as session:
            result = session.execute(
                sa.update(Job).where(self._ours(job_id))
                .values(state=JobState.QUEUED.value, owner=None, lease_expires_at=None,
                        attempts=sa.case((Job.attempts > 0, Job.attempts - 1), else_=0), updated_at=self.clock())
                .execution_options(synchronize_session=False))
            return bool(_count(result))

    def asset_exists(self, asset_id: str) -> bool:
        with self.db.reader() as session:
            return session.scalar(sa.select(Asset.id).where(Asset.id == asset_id)) is not None

    # --- reconcile -------------------------------------------------------------------------------------------

    def reconcile(self, held: Collection[str] = (), *, limit: int = 100) -> ReconcileReport:
        """One pass of repairs (see the module docstring); ``held`` are the jobs this runner is working on, whose
        leases it renews itself. Each repair is its own transaction and re-checks its condition, so concurrent
        reconcilers, runners and API requests never undo each other; at most ``limit`` of each kind per pass."""
        repairs: dict[str, list[str]] = {"requeued": [], "abandoned": [], "published": [], "errored": [],
                                         "rerun": []}
        for kind, ids, repair in (("job", self._expired(held, limit), self._expire),
                                  ("asset", self._stranded(limit), self._repair_asset)):
            for row_id in ids:
                try:
                    action = repair(row_id)
                except Exception as error:
                    if is_transient(error):
                        raise  # the database is away: the whole pass runs again next time
                    log.exception("reconciler could not repair a row", extra={kind: row_id})
                    continue
                if action is not None:
                    repairs[action].append(row_id)
        report = ReconcileReport(**{name: tuple(ids) for name, ids in repairs.items()})
        if report.total:
            log.warning("reconciled jobs and assets", extra={
                field.name: list(getattr(report, field.name)) for field in fields(report)
                if getattr(report, field.name)})
        return report

    def _expired_condition(self, now: float) -> sa.ColumnElement[bool]:
        return sa.and_(Job.state.in_(_ACTIVE),
                       sa.or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now))

    def _expired(self, held: Collection[str], limit: int) -> list[str]:
        with self.db.reader() as session:
            rows = session.execute(sa.select(Job.job_id, Job.owner).where(self._expired_condition(self.clock()))
                                   .order_by(Job.lease_expires_at, Job.job_id).limit(limit)).all()
        # Our own jobs are renewed by our heartbeat, even when a stall let their lease run out.
        return [job_id for job_id, owner in rows if not (owner == self.owner and job_id in held)]

    def _expire(self, job_id: str) -> str | None:
        now = self.clock()
        with self.db.session() as session:
            attempts = session.scalar(sa.select(Job.attempts).where(Job.job_id == job_id))
            if attempts is None:
                return None
            expired = sa.and_(Job.job_id == job_id, self._expired_condition(now))
            if attempts < self.config.max_attempts:
                result = session.execute(sa.update(Job).where(expired)
                                         .values(state=JobState.QUEUED.value, owner=None, lease_expires_at=None,
                                                 updated_at=now).execution_options(synchronize_session=False))
                return "requeued" if _count(result) else None
            message = (f"the transcode was interrupted {attempts} times (its runner stopped answering); "
                       "giving up")
            result = session.execute(sa.update(Job).where(expired)
                                     .values(state=JobState.ERRORED.value, error_type="internal_error",
                                             error=message, owner=None, lease_expires_at=None, finished_at=now,
                                             updated_at=now).execution_options(synchronize_session=False))
            if not _count(result):
                return None
            asset_id = session.scalar(sa.select(Job.asset_id).where(Job.job_id == job_id))
            if asset_id is not None:
                error_asset(session, asset_id, "internal_error", message)
            return "abandoned"

    @staticmethod
    def _no_live_job(asset_id: sa.ColumnElement[str] | InstrumentedAttribute[str] | str) -> sa.ColumnElement[bool]:
        return ~sa.exists().where(Job.asset_id == asset_id, Job.state.in_(_LIVE))

    def _stranded(self, limit: int) -> list[str]:
        with self.db.reader() as session:
            return list(session.scalars(
                sa.select(Asset.id).where(Asset.status == AssetStatus.PREPARING, Asset.progress_state != "live",
                                          self._no_live_job(Asset.id))
                .order_by(Asset.created_at, Asset.id).limit(limit)))

    def _repair_asset(self, asset_id: str) -> str | None:
        """Finish, error or re-run one asset that is preparing with no live job."""
        with self.db.session() as session:
            # Take the asset's row first (publish and fail write it too, so they wait for us or we for them),
            # then re-check that it is still stranded.
            locked = session.execute(
                sa.update(Asset).where(Asset.id == asset_id, Asset.status == AssetStatus.PREPARING,
                                       Asset.progress_state != "live", self._no_live_job(asset_id))
                .values(updated_at=utcnow()).execution_options(synchronize_session=False))
            if not _count(locked):
                return None
            job = session.scalars(sa.select(Job).where(Job.asset_id == asset_id)
                                  .order_by(Job.created_at.desc(), Job.job_id.desc()).limit(1)).first()
            if job is not None and job.state == JobState.READY.value and job.result is not None:
                publish_asset(session, asset_id, job.result, self.settings)
                return "published"
            if job is not None and job.state == JobState.ERRORED.value:
                error_asset(session, asset_id, job.error_type or "internal_error",
                             job.error or "the transcode failed")
                return "errored"
            now = self.clock()
            if job is not None and job.attempts >= self.config.max_attempts:
                message = f"the transcode did not finish after {job.attempts} attempts; giving up"
                job.state, job.error_type, job.error, job.finished_at = (JobState.ERRORED.value, "internal_error",
                                                                          message, now)
                error_asset(session, asset_id, "internal_error", message)
                return "errored"
            if job is not None:  # ready without a result, or cancelled: run it again
                job.state, job.owner, job.lease_expires_at, job.result = JobState.QUEUED.value, None, None, None
                job.error_type = job.error = job.finished_at = None
                job.updated_at = now
                return "rerun"
            asset = session.get_one(Asset, asset_id)
            try:
                create = NewAssetSettings.model_validate(
                    {key: value for key, value in (asset.create_settings or {}).items() if key != "inputs"})
            except ValueError as error:
                error_asset(session, asset_id, "internal_error",
                             f"the asset has no transcode job and its settings cannot make one: {error}")
                return "errored"
            source, clip = job_source(asset)
            session.add(Job(job_id=new_id(), asset_id=asset_id, options=job_options(create, self.settings, **clip),
                            source=source, output=media_prefix(asset_id),
                            state=JobState.QUEUED.value, created_at=now, updated_at=now))
            return "rerun"


# --- helpers -------------------------------------------------------------------------------------------------


def _count(result: sa.Result[Any]) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _record_values(record: JobRecord) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in fields(record):
        if field.name in _NOT_FROM_PROGRESS:
            continue
        value = getattr(record, field.name)
        values[field.name] = list(value) if isinstance(value, tuple) else value
    return values


def publish_asset(session: Session, asset_id: str, published: dict[str, Any], settings: Settings) -> bool:
    """Mark the asset ready with ``published`` and emit ``video.asset.ready``, if it is still preparing; its
    legacy MP4s are requested and a preparing master download opens (their events follow)."""
    asset = session.get(Asset, asset_id, populate_existing=True)
    if asset is None or asset.status != AssetStatus.PREPARING:
        return False
    for name, value in published.items():
        setattr(asset, name, value)
    asset.status = AssetStatus.READY
    asset.progress_state, asset.progress_fraction = "completed", 1.0
    asset.errors = None
    asset.updated_at = utcnow()
    session.flush()
    emit(session, "video.asset.ready", "asset", asset.id, asset_view(asset))
    if asset.live_stream_id is not None:  # a live stream's recording, now an ordinary asset (Mux's event)
        emit(session, "video.asset.live_stream_completed", "asset", asset.id, asset_view(asset))
    renditions_ready(session, asset)
    master_ready(session, asset, settings)
    return True


def error_asset(session: Session, asset_id: str, error_type: str, message: str) -> bool:
    """Mark the asset errored and emit ``video.asset.errored``, if it is still preparing."""
    asset = session.get(Asset, asset_id, populate_existing=True)
    if asset is None or asset.status != AssetStatus.PREPARING:
        return False
    asset.status = AssetStatus.ERRORED
    asset.errors = {"type": error_type, "messages": [message]}
    asset.progress_state = "errored"
    fail_static_renditions(session, asset, message)
    fail_master(session, asset)
    asset.updated_at = utcnow()
    session.flush()
    emit(session, "video.asset.errored", "asset", asset.id, asset_view(asset))
    return True
