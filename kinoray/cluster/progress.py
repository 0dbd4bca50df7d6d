"""A transcode job's state as the coordinator sees it: one record, updated from per-chunk events.

The record is what the API persists and exposes, and what the CLI draws its progress bar from. The record and
state types live in :mod:`kinoray.store.states` (Ray-free, shared with the store and the control plane); they
are re-exported here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kinoray.store.states import JobRecord, JobState

__all__ = ["ChunkEvent", "JobRecord", "JobState"]


@dataclass(frozen=True)
class ChunkEvent:
    """One thing that happened to one work item (a video chunk, or the asset's audio)."""

    kind: str  # dispatched | done | retry | failed
    item: str  # "chunk 3" or "audio"
    chunk_index: int | None
    worker_pid: int | None
    worker_node: str | None
    attempt: int
    at: float = field(default_factory=time.time)
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
