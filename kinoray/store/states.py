"""A transcode job's states and its progress record: the types the job's row, the cluster's coordinator and the
control plane's lifecycle (:mod:`kinoray.control.jobs`) all speak.

They live here, at the bottom of the dependency chain (serve → control → cluster → media/encoders → store), and
import nothing but the standard library: :mod:`kinoray.store.models` builds the ``jobs.state`` CHECK constraint
from :class:`JobState`, :mod:`kinoray.cluster` reports progress as :class:`JobRecord` snapshots, and neither has
to import the other (the cluster package imports Ray; the store must not).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = ["ACTIVE_JOB_STATES", "FINISHED_JOB_STATES", "JOB_STATES", "JobRecord", "JobState"]


class JobState(StrEnum):
    """Where a job is. ``queued`` waits for a runner; ``planning``/``encoding``/``packaging`` are *active*: a
    runner owns the job under a lease (``jobs.owner``, ``jobs.lease_expires_at``); ``ready``, ``errored`` and
    ``cancelled`` are final."""

    QUEUED = "queued"
    PLANNING = "planning"
    ENCODING = "encoding"
    PACKAGING = "packaging"
    READY = "ready"
    ERRORED = "errored"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_JOB_STATES

    @property
    def active(self) -> bool:
        """Owned by a runner that is working on it (the lease applies)."""
        return self in ACTIVE_JOB_STATES


#: Every state's value, in order: the ``jobs.state`` CHECK constraint.
JOB_STATES: tuple[str, ...] = tuple(state.value for state in JobState)
ACTIVE_JOB_STATES: tuple[JobState, ...] = (JobState.PLANNING, JobState.ENCODING, JobState.PACKAGING)
FINISHED_JOB_STATES: tuple[JobState, ...] = (JobState.READY, JobState.ERRORED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobRecord:
    """Snapshot of a job. Frozen: every update makes a new record, so a reader never sees a torn one."""

    job_id: str
    source: str
    output: str
    state: JobState = JobState.QUEUED
    chunks_total: int = 0
    chunks_done: int = 0
    frames_total: int = 0
    frames_done: int = 0
    duration_seconds: float = 0.0  # of the asset
    workers: int = 0
    encoder: str | None = None
    fallback_from: str | None = None
    fallback_reason: str | None = None
    decoders: tuple[str, ...] = ()
    scalers: tuple[str, ...] = ()
    retries: int = 0
    error_type: str | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    encode_started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = field(default_factory=time.time)

    def update(self, **changes: Any) -> JobRecord:
        return replace(self, updated_at=time.time(), **changes)

    @property
    def progress(self) -> float:
        """0..1 over the whole job (encoding is 95 % of it, packaging the rest)."""
        if self.state is JobState.READY:
            return 1.0
        if not self.frames_total:
            return 0.0
        return 0.95 * self.frames_done / self.frames_total

    @property
    def frames_per_second(self) -> float:
        end = self.finished_at or time.time()
        if self.encode_started_at is None or end <= self.encode_started_at:
            return 0.0
        return self.frames_done / (end - self.encode_started_at)

    @property
    def realtime_factor(self) -> float:
        """Asset seconds encoded per wall second of encoding."""
        if not self.frames_total:
            return 0.0
        return self.frames_per_second * self.duration_seconds / self.frames_total

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data.update(progress=round(self.progress, 4), frames_per_second=round(self.frames_per_second, 2),
                    realtime_factor=round(self.realtime_factor, 3))
        return data
