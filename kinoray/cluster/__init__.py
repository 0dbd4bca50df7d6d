"""Ray execution of transcodes (worker actors, the per-asset coordinator, progress records) and of live streams
(one transcoder actor per stream, fed by the ingest).

With ``jobs`` and ``serve``, the only packages that import Ray.
"""

from kinoray.cluster.coordinator import TranscodeJob, order_work, transcode
from kinoray.cluster.live import LiveFeed, LiveProgress, LiveTranscodeWorker
from kinoray.cluster.local import ensure_ray
from kinoray.cluster.pool import NodeResources, PoolLayout, WorkerPool
from kinoray.cluster.progress import ChunkEvent, JobRecord, JobState
from kinoray.cluster.workers import EncoderWorker, JobSpec, WorkerCapabilities, WorkItem

__all__ = [
    "ChunkEvent",
    "EncoderWorker",
    "JobRecord",
    "JobSpec",
    "JobState",
    "LiveFeed",
    "LiveProgress",
    "LiveTranscodeWorker",
    "NodeResources",
    "PoolLayout",
    "TranscodeJob",
    "WorkItem",
    "WorkerCapabilities",
    "WorkerPool",
    "ensure_ray",
    "order_work",
    "transcode",
]
