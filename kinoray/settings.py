"""One Settings object for the whole product (environment prefix ``KINORAY_``, nested with ``__``).

Example: ``KINORAY_LIMITS__MAX_PIXELS=8294400`` or ``KINORAY_TRANSCODE__SEGMENT_SECONDS=6``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kinoray.errors import ConfigurationError

__all__ = ["ApiSettings", "ClusterSettings", "EdgeSettings", "InputLimits", "ServeSettings", "Settings", "StorageSettings",
           "TranscodeDefaults", "get_settings", "settings_env"]

_DEV_SECRET = "dev-insecure-change-me"


class InputLimits(BaseModel):
    """Checked by ``probe`` from container headers, before a single frame is decoded."""

    max_file_bytes: int = Field(default=50 * 1024**3, gt=0)
    max_pixels: int = Field(default=8192 * 4320, gt=0, description="width × height of the video stream")
    max_dimension: int = Field(default=16384, gt=0, description="largest width or height")
    max_duration_seconds: float = Field(default=12 * 3600, gt=0)
    max_streams: int = Field(default=32, gt=0)


class TranscodeDefaults(BaseModel):
    segment_seconds: float = Field(default=4.0, gt=0.5, le=20)
    chunk_seconds: float = Field(default=20.0, gt=0)
    max_frame_rate: int = Field(default=60, ge=1, le=240)
    codec: Literal["h264", "hevc", "av1"] = "h264"
    encoder: str = "auto"
    preset: str | None = Field(default=None, description="encoder preset; None picks the backend's default")
    audio_bitrate: int = Field(default=128_000, ge=32_000, le=512_000)
    threads_per_encoder: int = Field(default=1, ge=0, description="0 lets the encoder choose")

    @property
    def segment_fraction(self) -> Fraction:
        return Fraction(self.segment_seconds).limit_denominator(1000)


class StorageSettings(BaseModel):
    """Object storage (fsspec): a local directory or ``s3://bucket/prefix``. S3 credentials come from the
    standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) or the instance role."""

    work_url: str | None = Field(
        default=None,
        description="where chunk outputs are written between encode and package; every worker node must "
                    "reach it (an s3:// prefix on a multi-machine cluster); None = DATA_DIR/work",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, moto, R2)")
    s3_region: str | None = None
    url: str | None = Field(default=None, description="where assets and uploads live (a directory or an "
                                                    "s3:// prefix); None = DATA_DIR/storage")
    transient_retries: int = Field(default=4, ge=0, description="retries of a storage call on a transient error")


class ClusterSettings(BaseModel):
    """How chunks fan out over Ray."""

    chunk_retries: int = Field(default=3, ge=0, description="re-runs of a chunk whose worker or node died")
    gpu_sessions_per_gpu: int = Field(default=2, ge=1, le=16,
                                      description="GPU encoder actors per GPU (each asks for 1/N of a GPU)")
    cpu_encoder_threads: int = Field(default=1, ge=1, description="encoder threads per CPU actor")
    max_workers: int | None = Field(default=None, ge=1,
                                    description="cap on a job's encoder actors; None = sized from the cluster")
    worker_start_timeout_seconds: float = Field(
        default=180.0, gt=0,
        description="how long a job waits for a worker to start or restart before it errors (no hang)")
    keep_workers_seconds: float = Field(
        default=30.0, ge=0,
        description="how long a finished job's encoder actors wait for the next job in the same process "
                    "(it then starts encoding at once instead of after ~1 s of actor start-up); 0: every job "
                    "starts and kills its own")
    scale_up_workers: int = Field(
        default=0, ge=0,
        description="workers a job asks for beyond the slots the cluster has when it starts (at most one per "
                    "work item left), placed anywhere: on an autoscaling cluster (KubeRay) their pending requests "
                    "make the autoscaler add nodes and they join the job as they start; 0 on a fixed cluster")
    scale_up_kind: Literal["cpu", "gpu"] = Field(
        default="cpu", description="the kind of those workers (gpu: each asks for 1/gpu_sessions_per_gpu GPU)")
    rescan_nodes_seconds: float = Field(
        default=2.0, ge=0,
        description="how often a running job looks for nodes that joined the cluster and starts workers on "
                    "them while chunks are still queued; 0: the pool is sized once, at the start")


class ServeSettings(BaseModel):
    """The management API on Ray Serve's HTTP proxy (``kinoray up`` puts it on the edge's port + 1 and the
    edge forwards to it; on KubeRay it is the RayService's serve port)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str | None = Field(
        default=None,
        description="base URL clients reach kinoray at (upload URLs are built on it); None = the edge's "
                    "SCHEME://EDGE_HOST:EDGE_PORT")
    max_concurrent_jobs: int = Field(default=2, ge=1, description="transcode jobs the runner runs at once")
    poll_seconds: float = Field(default=0.5, gt=0, description="how often the runner looks for due work")


class EdgeSettings(BaseModel):
    """The delivery edge (``kinoray edge``; :mod:`kinoray.edge`): streams, images, the upload data plane, beacons
    and the player, served by Granian worker processes outside Ray Serve. Everything else it forwards to
    ``api_url`` (Serve's HTTP proxy), so one port gives the whole product."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=0, ge=0, description="worker processes (SO_REUSEPORT); 0 = one per CPU")
    api_url: str | None = Field(
        default=None,
        description="the management API (Serve's proxy) that paths the edge does not serve are forwarded to; "
                    "None = such paths answer 404")
    cache_seconds: float = Field(
        default=2.0, ge=0, le=5,
        description="how long a process keeps a playback id's row, a signing key and a verified token; a "
                    "deleted asset or playback id or a revoked key stops playing within this bound")
    domain: str | None = Field(
        default=None,
        description="host-based routing (Mux-style custom domains): stream.DOMAIN serves streams only, "
                    "image.DOMAIN images only, beacon.DOMAIN beacons only; other hosts get everything")
    tls_cert: Path | None = Field(default=None, description="PEM certificate chain: the edge speaks HTTPS")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    forward_timeout_seconds: float = Field(default=60.0, gt=0, description="limit on one forwarded API call")

    @model_validator(mode="after")
    def _tls_pair(self) -> EdgeSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("edge TLS needs both tls_cert and tls_key")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"


class ApiSettings(BaseModel):
    """Limits and policies of the control plane (the REST API, uploads, ingest, webhooks)."""

    rate_limit_per_second: float = Field(default=100.0, gt=0, description="sustained requests/s per token")
    rate_limit_burst: int = Field(default=200, ge=1, description="bucket size: requests a token may burst")
    max_upload_bytes: int = Field(default=50 * 1024**3, gt=0, description="largest direct upload (413 beyond)")
    allow_file_inputs: bool = Field(default=False, description="accept file:// input URLs (trusted setups only)")
    allow_private_inputs: bool = Field(
        default=False,
        description="accept input and webhook URLs that resolve to loopback, link-local or private addresses "
                    "(off: SSRF protection)")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_hours: float = Field(default=24.0, gt=0, description="how long a delivery is retried")
    idempotency_hours: float = Field(default=24.0, gt=0, description="how long Idempotency-Key responses are kept")
    ingest_timeout_seconds: float = Field(default=600.0, gt=0, description="limit on fetching one input URL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KINORAY_", env_nested_delimiter="__", extra="ignore")

    environment: Literal["dev", "test", "production"] = "dev"
    data_dir: Path = Path("./data")
    log_level: str = "INFO"
    native_log_level: str = Field(default="WARNING", description="level for FFmpeg/x264/x265/SVT-AV1 lines")
    secret_key: str = _DEV_SECRET
    database_url: str | None = Field(
        default=None,
        description="metadata database (postgresql+psycopg://user@host/db, or sqlite:///path); "
                    "None = the SQLite file DATA_DIR/kinoray.db",
    )
    limits: InputLimits = InputLimits()
    transcode: TranscodeDefaults = TranscodeDefaults()
    storage: StorageSettings = StorageSettings()
    api: ApiSettings = ApiSettings()
    redis_url: str | None = Field(default=None, description="Redis for shared rate limits; None = in-process")
    cluster: ClusterSettings = ClusterSettings()
    serve: ServeSettings = ServeSettings()
    edge: EdgeSettings = EdgeSettings()

    @field_validator("log_level", "native_log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment == "production" and self.secret_key == _DEV_SECRET:
            raise ConfigurationError("KINORAY_SECRET_KEY must be set to a non-default value in production")
        return self

    @property
    def storage_url(self) -> str:
        """Where assets and uploads live: ``storage.url`` or the directory ``DATA_DIR/storage``."""
        return self.storage.url or str((Path(self.data_dir) / "storage").resolve())

    @property
    def public_url(self) -> str:
        if self.serve.public_url:
            return self.serve.public_url.rstrip("/")
        host = "127.0.0.1" if self.edge.host in ("0.0.0.0", "::", "") else self.edge.host
        return f"{self.edge.scheme}://{host}:{self.edge.port}"


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``KINORAY_*`` environment that rebuilds them in another process (a Ray worker, an
    edge worker): sections as JSON, plain values as text, unset values left out."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json", exclude_none=True).items():
        env[f"KINORAY_{name.upper()}"] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once (``get_settings.cache_clear()`` to reread)."""
    return Settings()
