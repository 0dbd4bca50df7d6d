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
    ├── StorageError
    ├── IngestProtocolError                          a live publisher sent a malformed RTMP stream
    ├── IngestRefusedError                           a live publish refused for a reason of its stream (has reason)
    ├── SimulcastError                               a simulcast target refused or dropped a live stream's push
    └── ApiError                                     a request the control plane refuses
        ├── InvalidParametersError (also ValueError)  a malformed or out-of-range parameter
        │   └── InputUrlRefusedError                  an input/webhook URL the SSRF policy forbids
        ├── AuthenticationError                      missing, wrong or revoked credentials
        │   └── StreamKeyRefusedError                 a WHIP publisher's stream key is missing or unknown
        ├── PermissionDeniedError                    the access token's permissions do not cover the request
        ├── DownloadLinkError                        a signed download link that is altered or has expired
        ├── PlaybackForbiddenError                   a signed playback URL without a valid token
        │   └── PlaybackRestrictedError               the token's playback restriction refuses this viewer
        ├── NotFoundError
        ├── AssetNotReadyError                       the asset is still preparing (try again later)
        ├── RangeNotSatisfiableError                 no requested byte range overlaps the file
        ├── MethodNotAllowedError                    a method the URL does not take (carries Allow)
        ├── ConflictError                            the resource's state does not allow the request
        │   └── IdempotencyInProgressError            the first request with this Idempotency-Key still runs
        ├── IdempotencyKeyReusedError                same key, different request
        ├── RateLimitedError                         over a request or image-render limit (has retry_after)
        ├── ServiceUnavailableError                  try again shortly (503 with Retry-After)
        │   ├── ApiUnavailableError                   the delivery edge could not reach the management API (502)
        │   ├── DatabaseUnavailableError              the metadata database is down, locked or unreachable
        │   ├── OverCapacityError                     this process is past its capacity: the request is shed
        │   └── AnomalyDetectorUnavailableError       the anomaly-detection deployment did not answer
        ├── RequestTooLargeError                     a request body over the route's limit (refused unread)
        ├── RequestTimeoutError                      a request body that did not arrive in time
        └── UploadError                              the tus / Content-Range upload protocol
            ├── OffsetMismatchError                   Upload-Offset is not the upload's offset
            ├── ChecksumMismatchError                 Upload-Checksum did not match the chunk
            ├── UploadTooLargeError                   over Upload-Length or the configured maximum
            ├── UnsupportedVersionError               Tus-Resumable is not 1.0.0
            ├── UnsupportedContentTypeError           PATCH without application/offset+octet-stream
            ├── UploadLockedError                     another request is writing this upload
            ├── UploadNotCreatedError                 bytes for an upload whose tus creation never completed
            └── UploadGoneError                       the upload was terminated, cancelled or timed out

Every error has a stable ``type`` string and an HTTP status in :data:`ERROR_TABLE`; the API layer turns them
into ``{"error": {"type": ..., "messages": [...]}}`` bodies from that one table. The HTTP headers an error
answers with (``Retry-After``, ``WWW-Authenticate``, ``Allow``, ...) come from its typed fields
(:meth:`KinorayError.http_headers`); :data:`ERROR_HEADERS` names them per class, for the OpenAPI document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

__all__ = [
    "ERROR_HEADERS",
    "ERROR_TABLE",
    "AnomalyDetectorUnavailableError",
    "ApiError",
    "ApiUnavailableError",
    "AssetNotReadyError",
    "AuthenticationError",
    "ChecksumMismatchError",
    "ClusterError",
    "ConfigurationError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DownloadLinkError",
    "EncoderError",
    "EncoderUnavailableError",
    "FrameMismatchError",
    "IdempotencyInProgressError",
    "IdempotencyKeyReusedError",
    "IngestProtocolError",
    "IngestRefusedError",
    "InputUrlRefusedError",
    "InvalidMediaError",
    "InvalidParametersError",
    "JobCancelledError",
    "KinorayError",
    "MediaError",
    "MediaLimitError",
    "MethodNotAllowedError",
    "NotFoundError",
    "OffsetMismatchError",
    "OverCapacityError",
    "PermissionDeniedError",
    "PlaybackForbiddenError",
    "PlaybackRestrictedError",
    "RangeNotSatisfiableError",
    "RateLimitedError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "SimulcastError",
    "StorageError",
    "StreamKeyRefusedError",
    "TranscodeError",
    "UnsupportedContentTypeError",
    "UnsupportedMediaError",
    "UnsupportedVersionError",
    "UploadError",
    "UploadGoneError",
    "UploadLockedError",
    "UploadNotCreatedError",
    "UploadTooLargeError",
    "WorkerLostError",
    "error_headers",
    "http_status",
]


class KinorayError(Exception):
    """Root of every error kinoray raises on purpose."""

    type: str = "internal_error"
    #: Headers added where the error is passed on rather than where it is made (CORS, ``Tus-Resumable``).
    context_headers: Mapping[str, str] = MappingProxyType({})

    def typed_headers(self) -> dict[str, str]:
        """The headers this error's own fields call for (its class's names in :data:`ERROR_HEADERS`)."""
        return {}

    def http_headers(self) -> dict[str, str]:
        """Every header the HTTP answer to this error carries: the context's, then the error's own."""
        return {**self.context_headers, **(getattr(self, "headers", None) or {}), **self.typed_headers()}

    def add_headers(self, headers: Mapping[str, str]) -> KinorayError:
        """Add response headers (the context's: an error's own headers win); returns the error, to re-raise."""
        self.context_headers = {**self.context_headers, **headers}
        return self


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


class IngestProtocolError(KinorayError):
    type = "ingest_protocol_error"


class IngestRefusedError(KinorayError):
    """A live publish refused for a reason of its stream other than a wrong key (a scheduled stream before its
    start or after its end); ``reason`` labels ``kinoray_live_ingest_refused_total`` and the message is what the
    publisher is told."""

    type = "ingest_refused"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SimulcastError(KinorayError):
    """A simulcast target refused or dropped the push (why is the message); ``fatal``: retrying cannot help (an
    unusable URL). Never an API answer: the target's status and ``error_severity`` report it."""

    type = "simulcast_error"

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class ApiError(KinorayError):
    type = "invalid_request"


class InvalidParametersError(ApiError, ValueError):
    type = "invalid_parameters"


class InputUrlRefusedError(InvalidParametersError):
    type = "input_url_refused"


class AuthenticationError(ApiError):
    type = "unauthorized"
    #: The challenge every 401 carries (HTTP Basic with an access token id and secret).
    www_authenticate: ClassVar[str] = 'Basic realm="kinoray"'

    def typed_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.www_authenticate}


class StreamKeyRefusedError(AuthenticationError):
    """A WHIP publisher (RFC 9725) without a stream key, or with one no live stream has: the challenge is a
    Bearer token, the key."""

    type = "stream_key_refused"
    www_authenticate: ClassVar[str] = 'Bearer realm="kinoray-live"'


class PlaybackForbiddenError(ApiError):
    """Not an ``AuthenticationError``: a viewer's token is refused, no Basic credentials are asked for."""

    type = "playback_forbidden"


class PlaybackRestrictedError(PlaybackForbiddenError):
    """A valid token whose playback restriction refuses this viewer (its ``Referer`` or ``User-Agent``)."""

    type = "playback_restricted"


class PermissionDeniedError(ApiError):
    """Authenticated, but the access token's permissions do not cover the request (a read-only token writing,
    or a product the token was not given)."""

    type = "forbidden"


class DownloadLinkError(ApiError):
    """A signed download link (a Data export's) whose signature does not match, or that has expired."""

    type = "invalid_download_link"


class NotFoundError(ApiError):
    type = "not_found"


class AssetNotReadyError(ApiError):
    type = "asset_not_ready"


class RangeNotSatisfiableError(ApiError):
    type = "range_not_satisfiable"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size  #: the file's size in bytes

    def typed_headers(self) -> dict[str, str]:
        return {"Accept-Ranges": "bytes", "Content-Range": f"bytes */{self.size}"}


class MethodNotAllowedError(ApiError):
    type = "method_not_allowed"

    def __init__(self, message: str, allowed: str) -> None:
        super().__init__(message)
        self.allowed = allowed  #: the methods the URL takes, as the Allow header lists them

    def typed_headers(self) -> dict[str, str]:
        return {"Allow": self.allowed}


class ConflictError(ApiError):
    type = "conflict"


class IdempotencyInProgressError(ConflictError):
    type = "idempotency_key_in_use"


class IdempotencyKeyReusedError(ApiError):
    type = "idempotency_key_reused"


class RateLimitedError(ApiError):
    """``retry_after`` is the number of seconds until a request would be allowed again."""

    type = "too_many_requests"

    def __init__(self, message: str, retry_after: float, limit: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit

    def typed_headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after))), "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": "0"}


class ServiceUnavailableError(ApiError):
    """A refusal that says when to come back (``Retry-After``); nothing was changed."""

    type = "service_unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after  #: seconds to wait before trying again

    def typed_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ApiUnavailableError(ServiceUnavailableError):
    """The delivery edge forwards management paths to the API (Serve's proxy); it did not answer (502)."""

    type = "api_unavailable"


class DatabaseUnavailableError(ServiceUnavailableError):
    type = "database_unavailable"

    def __init__(self, message: str = "the metadata database is unavailable; nothing was changed, try again",
                 retry_after: int = 2) -> None:
        super().__init__(message, retry_after)


class OverCapacityError(ServiceUnavailableError):
    type = "over_capacity"


class AnomalyDetectorUnavailableError(ServiceUnavailableError):
    """The anomaly-detection Serve deployment is down or did not answer in time: anomaly rules wait for the next
    evaluation (threshold rules go on)."""

    type = "anomaly_detector_unavailable"


class RequestTooLargeError(ApiError):
    type = "request_too_large"


class RequestTimeoutError(ApiError):
    type = "request_timeout"


class UploadError(ApiError):
    type = "upload_error"


class OffsetMismatchError(UploadError):
    type = "offset_mismatch"


class ChecksumMismatchError(UploadError):
    type = "checksum_mismatch"


class UploadTooLargeError(UploadError):
    type = "upload_too_large"


class UnsupportedVersionError(UploadError):
    type = "unsupported_version"


class UnsupportedContentTypeError(UploadError):
    type = "unsupported_content_type"


class UploadLockedError(UploadError):
    type = "upload_locked"


class UploadGoneError(UploadError):
    type = "upload_gone"


class UploadNotCreatedError(UploadError):
    """A tus ``PATCH`` on an upload whose creation (``POST`` with ``Upload-Length`` or ``Upload-Defer-Length``)
    never completed: without a length, or the word that it comes later, the bytes could never finish it."""

    type = "upload_not_created"


#: error class -> HTTP status. Looked up along the MRO, so a subclass inherits its parent's status.
ERROR_TABLE: dict[type[KinorayError], int] = {
    KinorayError: 500,
    ConfigurationError: 500,
    IngestProtocolError: 400,
    IngestRefusedError: 403,
    SimulcastError: 502,
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
    ApiError: 400,
    InvalidParametersError: 400,
    InputUrlRefusedError: 400,
    AuthenticationError: 401,
    StreamKeyRefusedError: 401,
    PlaybackForbiddenError: 403,
    PlaybackRestrictedError: 403,
    PermissionDeniedError: 403,
    DownloadLinkError: 403,
    NotFoundError: 404,
    AssetNotReadyError: 412,
    RangeNotSatisfiableError: 416,
    MethodNotAllowedError: 405,
    ConflictError: 409,
    IdempotencyInProgressError: 409,
    IdempotencyKeyReusedError: 422,
    RateLimitedError: 429,
    ApiUnavailableError: 502,
    ServiceUnavailableError: 503,
    DatabaseUnavailableError: 503,
    OverCapacityError: 503,
    AnomalyDetectorUnavailableError: 503,
    RequestTooLargeError: 413,
    RequestTimeoutError: 408,
    UploadError: 400,
    OffsetMismatchError: 409,
    ChecksumMismatchError: 460,  # tus checksum extension
    UploadTooLargeError: 413,
    UnsupportedVersionError: 412,
    UnsupportedContentTypeError: 415,
    UploadLockedError: 423,
    UploadGoneError: 410,
    UploadNotCreatedError: 409,
}


#: error class -> the HTTP headers its answer always carries (from its typed fields). Looked up along the MRO.
ERROR_HEADERS: dict[type[KinorayError], tuple[str, ...]] = {
    AuthenticationError: ("WWW-Authenticate",),
    RangeNotSatisfiableError: ("Accept-Ranges", "Content-Range"),
    MethodNotAllowedError: ("Allow",),
    RateLimitedError: ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"),
    ServiceUnavailableError: ("Retry-After",),
}


def error_headers(cls: type[KinorayError]) -> tuple[str, ...]:
    """The headers an error of class ``cls`` answers with, from :data:`ERROR_HEADERS` (nearest class)."""
    return next((ERROR_HEADERS[base] for base in cls.__mro__ if base in ERROR_HEADERS), ())


def http_status(error: KinorayError) -> int:
    """The HTTP status for ``error`` from :data:`ERROR_TABLE` (nearest class in its MRO)."""
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500
