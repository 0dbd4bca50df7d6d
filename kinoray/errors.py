"""The one exception tree of kinoray.

::

    KinorayError
    ├── ConfigurationError
    ├── MediaError
    │   ├── InvalidMediaError (also ValueError)      input is unreadable, corrupt or has nothing to play
    │   │   └── MediaLimitError                      input exceeds a configured limit (size, pixels, ...)
    │   └── UnsupportedMediaError                    readable, but a feature we do not handle
    ├── EncoderError
    │   └── EncoderUnavailableError                  backend missing or its capability probe failed
    ├── TranscodeError                               a chunk or package step failed after planning
    │   ├── FrameMismatchError                       output frame count differs from the plan
    │   └── WorkerLostError                          a chunk's worker died more often than the retry budget
    ├── ClusterError                                 no worker can run the job (no resources, none started)
    ├── JobCancelledError                            the job was cancelled; its temporary outputs are gone
    └── StorageError

Every error has a stable ``type`` string and an HTTP status in :data:`ERROR_TABLE`; the API layer turns them
into ``{"error": {"type": ..., "messages": [...]}}`` bodies from that one table.
"""

from __future__ import annotations

__all__ = [
    "ERROR_TABLE",
    "ClusterError",
    "ConfigurationError",
    "EncoderError",
    "EncoderUnavailableError",
    "FrameMismatchError",
    "InvalidMediaError",
    "JobCancelledError",
    "KinorayError",
    "MediaError",
    "MediaLimitError",
    "StorageError",
    "TranscodeError",
    "UnsupportedMediaError",
    "WorkerLostError",
    "http_status",
]


class KinorayError(Exception):
    """Root of every error kinoray raises on purpose."""

    type: str = "internal_error"


class ConfigurationError(KinorayError):
    type = "configuration_error"


class MediaError(KinorayError):
    type = "media_error"


class InvalidMediaError(MediaError, ValueError):
    """The input cannot be turned into an asset; the message says why in words a user can act on."""

    type = "invalid_media"


class MediaLimitError(InvalidMediaError):
    type = "media_limit_exceeded"


class UnsupportedMediaError(MediaError):
    type = "unsupported_media"


class EncoderError(KinorayError):
    type = "encoder_error"


class EncoderUnavailableError(EncoderError):
    type = "encoder_unavailable"


class TranscodeError(KinorayError):
    type = "transcode_error"


class FrameMismatchError(TranscodeError):
    type = "frame_mismatch"


class WorkerLostError(TranscodeError):
    type = "worker_lost"


class ClusterError(KinorayError):
    type = "cluster_unavailable"


class JobCancelledError(KinorayError):
    type = "job_cancelled"


class StorageError(KinorayError):
    type = "storage_error"


#: error class -> HTTP status. Looked up along the MRO, so a subclass inherits its parent's status.
ERROR_TABLE: dict[type[KinorayError], int] = {
    KinorayError: 500,
    ConfigurationError: 500,
    MediaError: 400,
    InvalidMediaError: 400,
    MediaLimitError: 413,
    UnsupportedMediaError: 415,
    EncoderError: 500,
    EncoderUnavailableError: 503,
    TranscodeError: 500,
    FrameMismatchError: 500,
    WorkerLostError: 500,
    ClusterError: 503,
    JobCancelledError: 409,
    StorageError: 502,
}


def http_status(error: KinorayError) -> int:
    """The HTTP status for ``error`` from :data:`ERROR_TABLE` (nearest class in its MRO)."""
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500
