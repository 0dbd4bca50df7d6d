"""``kinoray up``: the whole platform on one machine — local Ray, Serve (management API + job runner), the
delivery edge in front of it, SQLite and a storage directory under ``--data-dir`` (or whatever ``KINORAY_*``
settings say) — plus the bootstrap access token and the optional demo upload ``make run`` uses.

Ports: the edge listens on ``--port`` (what users open: streams, images, uploads, beacons, the player, and the
API by forwarding), Serve's proxy on ``--api-port`` (default ``--port`` + 1, same host), which is the API
alone for those who want to split them. The edge runs as a child process group (``kinoray edge``, Granian
workers) that dies with ``kinoray up``.

The token is written to ``DATA_DIR/credentials.json`` (mode 0600) and reused on the next start while it is
valid, so ``kinoray up`` is idempotent.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from kinoray.control.auth import create_token
from kinoray.control.platform import Platform
from kinoray.edge.server import EdgeProcess, wait_ok
from kinoray.errors import ClusterError, ConfigurationError, KinorayError
from kinoray.priority import SHARED_NODE_EDGE_NICE, ray_env, shared_node_edge_cpus
from kinoray.settings import LiveSettings, Settings, get_settings
from kinoray.store.models import AccessToken, is_valid_id

__all__ = ["Running", "bootstrap_token", "demo_upload", "start", "up"]

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
#: The watchdog probes the API this often; this many failures in a row mean the Ray cluster under it is gone.
WATCHDOG_SECONDS = 5.0
WATCHDOG_TIMEOUT_SECONDS = 5.0
WATCHDOG_FAILURES = 3
#: Starts of a local cluster whose HAProxy found a port picked for it taken meanwhile (:func:`start`).
INGRESS_ATTEMPTS = 3


def bootstrap_token(settings: Settings) -> tuple[str, str]:
    """The access token saved in ``DATA_DIR/credentials.json`` if it is still valid, else a new one (saved)."""
    path = Path(settings.data_dir) / CREDENTIALS_FILE
    platform = Platform.from_settings(settings)
    try:
        if path.exists():
            saved = json.loads(path.read_text())
            token_id, secret = str(saved.get("token_id", "")), str(saved.get("token_secret", ""))
            with platform.db.session() as session:
                token = session.get(AccessToken, token_id) if is_valid_id(token_id) else None
                if token is not None and not token.revoked and token.check_secret(secret):
                    return token_id, secret
        with platform.db.session() as session:
            info, secret = create_token(session, name="bootstrap (kinoray up)")
    finally:
        platform.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"url": settings.public_url, "token_id": info.id, "token_secret": secret}, handle, indent=2)
    return info.id, secret


def _settings_env(host: str, port: int, api_port: int, data_dir: Path,
                  rtmp_port: int | None = None) -> dict[str, str]:
    """The ``KINORAY_*`` (and AWS) environment every process of the platform (Ray's, the edge's) gets."""
    api_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    os.environ.setdefault("KINORAY_LIVE__RTMP_HOST", host)
    if rtmp_port is not None:
        os.environ["KINORAY_LIVE__RTMP_PORT"] = str(rtmp_port)
    # WHIP/WHEP: the ingest actor runs on this node; the edge forwards the signalling to its listener
    os.environ.setdefault("KINORAY_LIVE__WHIP_HOST", host)
    whip_port = os.environ.get("KINORAY_LIVE__WHIP_PORT", str(LiveSettings.model_fields["whip_port"].default))
    if whip_port.isdigit() and whip_port != "0":
        os.environ.setdefault("KINORAY_EDGE__WHIP_URL", f"http://{api_host}:{whip_port}")
    os.environ.update({
        "KINORAY_DATA_DIR": str(data_dir), "KINORAY_SERVE__HOST": host, "KINORAY_SERVE__PORT": str(api_port),
        "KINORAY_EDGE__HOST": host, "KINORAY_EDGE__PORT": str(port),
        "KINORAY_EDGE__API_URL": f"http://{api_host}:{api_port}"})
    if not os.environ.get("RAY_ADDRESS"):  # the edge shares this node with the API and the encoders: half of
        # its CPUs, below the API's priority and above the encoders', unless told (kinoray.priority)
        os.environ.setdefault("KINORAY_EDGE__CPUS", str(shared_node_edge_cpus(len(os.sched_getaffinity(0)))))
        os.environ.setdefault("KINORAY_EDGE__NICE", str(SHARED_NODE_EDGE_NICE))
    get_settings.cache_clear()
    return {key: value for key, value in os.environ.items() if key.startswith(("KINORAY_", "AWS_"))}


def _free_port() -> int:
    """A port that no socket on any of this machine's addresses holds now: HAProxy binds its stats and metrics
    ports on every address, so a port free on 127.0.0.1 alone is not enough."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))  # noqa: S104 - a probe, closed at once
        return int(probe.getsockname()[1])


#: HAProxy's refusal to start, as Serve reports it: "... cannot bind socket (Address already in use) for
#: [0.0.0.0:PORT]".
_BIND_REFUSED = re.compile(r"cannot bind socket \([^)]*\) for \[[^\]]*:(\d+)\]")


def _ports_refused(error: BaseException) -> set[int]:
    """The ports HAProxy could not bind, if that is why Serve failed to start (else empty)."""
    return {int(port) for port in _BIND_REFUSED.findall(str(error))} if "HAProxy" in str(error) else set()


def _ingress_env(settings: Settings) -> dict[str, str]:
    """Ray's environment for Serve's ingress on a local cluster (``serve.ingress``, docs/ARCHITECTURE.md says why).

    HAProxy keeps its configuration, admin socket and state files under fixed ``/tmp/haproxy-serve`` paths and
    listens on fixed stats/metrics ports unless told otherwise: each ``kinoray up`` gets its own (a short
    directory: the admin socket is a Unix socket, whose path must stay under 108 bytes), so two can run on one
    machine. A stopping replica stays reachable for ``serve.ingress_drain_seconds`` (Ray's 30 s default made
    every stop of ``kinoray up`` take 35 s). HAProxy's request metrics are off: with them HAProxy sends a syslog
    datagram per request that Serve's proxy actor parses in Python, which cost more CPU than the replica's own
    request metrics that replace them (docs/ARCHITECTURE.md, "Cheaper reads again")."""
    if settings.serve.ingress != "haproxy":
        return {}
    stats_port = settings.serve.ingress_stats_port or _free_port()
    metrics_port = settings.serve.ingress_metrics_port or _free_port()
    state = Path(tempfile.mkdtemp(prefix="kinoray-haproxy-"))
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port), "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{settings.serve.ingress_drain_seconds:g}"}


@dataclass
class Running:
    """What :func:`start` started: call :meth:`stop` (edge, Serve, Ray)."""

    settings: Settings
    token: tuple[str, str]
    edge: EdgeProcess
    #: HAProxy's private directory (configuration, admin socket, state), removed at stop.
    ingress_state: Path | None = None

    @property
    def url(self) -> str:
        return self.settings.public_url

    def stop(self, *, cluster_alive: bool = True) -> None:
        """Stop the edge, the Serve application and local Ray. With ``cluster_alive=False`` (the watchdog found
        it gone) Serve is not asked to shut down, which would wait for a control store that is not there."""
        import ray
        from ray import serve

        self.edge.stop()
        if cluster_alive:
            serve.shutdown()
        ray.shutdown()
        if self.ingress_state is not None:
            shutil.rmtree(self.ingress_state, ignore_errors=True)

    def api_answers(self) -> bool:
        """Whether the management API (Serve's proxy and an API replica, so the Ray cluster under them) answers
        its liveness probe now."""
        try:
            with urllib.request.urlopen(f"{self.settings.edge.api_url}/healthz",  # noqa: S310 - our own URL
                                        timeout=WATCHDOG_TIMEOUT_SECONDS) as answer:
                return answer.status == 200
        except OSError:
            return False


def start(host: str, port: int, data_dir: Path, api_port: int | None = None,
          rtmp_port: int | None = None) -> Running:
    """Start local Ray, the Serve application (on ``api_port``, default ``port`` + 1) and the edge (on
    ``port``); returns what to stop. Non-blocking."""
    import ray

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    api_port = api_port or port + 1
    env = _settings_env(host, port, api_port, data_dir, rtmp_port)
    settings = get_settings()
    token = bootstrap_token(settings)  # also migrates the database before any replica starts
    state: Path | None = None
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):  # a cluster already there: Serve on it
        if not ray.is_initialized():
            _init_ray(os.environ["RAY_ADDRESS"], env)
        _start_serve(settings, host, api_port)
    else:
        state = _start_local_cluster(settings, env, host, api_port)
    edge: EdgeProcess | None = None
    try:
        _wait_healthy(settings.edge.api_url or "")
        edge = EdgeProcess(env, log_path=data_dir / "edge.log").start()
        edge.wait_ready(settings.public_url)
        _wait_healthy(settings.public_url)  # the API through the edge
    except BaseException:
        if edge is not None:
            edge.stop()
        if state is not None:
            shutil.rmtree(state, ignore_errors=True)
        raise
    return Running(settings, token, edge, state)


def _init_ray(address: str, env: dict[str, str]) -> None:
    import ray

    ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, namespace="kinoray")


def _start_serve(settings: Settings, host: str, api_port: int) -> None:
    """Serve's ingress on ``api_port`` and kinoray's application on it."""
    from ray import serve
    from ray.serve.schema import LoggingConfig

    from kinoray.serve.app import build_app

    # Per-request access log lines cost more CPU than a small API request itself; kinoray's own metrics and
    # logs cover requests. This is the proxy's and the controller's; the API replicas' is their deployment's
    # (kinoray/serve/app.py).
    serve.start(http_options={"host": host, "port": api_port},
                logging_config=LoggingConfig(enable_access_log=False, log_level="WARNING"))
    serve.run(build_app(settings.serve.api_replicas), name="kinoray", route_prefix="/", blocking=False)


def _stop_local_cluster() -> None:
    """Stop what a failed start left of the local cluster: Serve first (which also forgets its cached client:
    a new cluster's first driver has the same job id, so a stale one passes for current), then Ray."""
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        except Exception:  # noqa: BLE001 - the cluster is going anyway
            log.debug("serve shutdown after a failed start", exc_info=True)
    ray.shutdown()


def _start_local_cluster(settings: Settings, env: dict[str, str], host: str, api_port: int) -> Path | None:
    """Local Ray and Serve on it; returns HAProxy's private directory (None with Serve's Python proxy).

    HAProxy binds its stats and metrics ports only once Ray and Serve are up, and a free port picked before
    can be taken meanwhile (by one of the many processes a cluster starts, or anything else on the machine):
    the cluster is then stopped and started again with ports picked anew, up to :data:`INGRESS_ATTEMPTS` times
    (then a :class:`ClusterError`).
    A port that was given (``--api-port``, ``serve.ingress_stats_port``/``ingress_metrics_port``) and is taken
    is a :class:`ConfigurationError` naming it, at once."""
    given = {api_port: "--api-port (serve.port)"}
    given |= {port: f"serve.{name}" for name, port in (("ingress_stats_port", settings.serve.ingress_stats_port),
                                                      ("ingress_metrics_port", settings.serve.ingress_metrics_port))
              if port}
    attempt = 0
    while True:
        attempt += 1
        # a local cluster's processes (Serve's controller, HAProxy, replicas) inherit this process's
        # environment; Ray's workers at niceness 0 (kinoray.priority)
        ingress = _ingress_env(settings)
        state = ingress.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
        os.environ.update({**ingress, **ray_env()})
        try:
            _init_ray("local", env)
            _start_serve(settings, host, api_port)
            return Path(state) if state else None
        except Exception as error:
            if state:
                shutil.rmtree(state, ignore_errors=True)
            _stop_local_cluster()
            refused = _ports_refused(error)
            named = sorted(f"{port} ({given[port]})" for port in refused & given.keys())
            if named:
                raise ConfigurationError(f"Serve's HAProxy could not listen on {', '.join(named)}: the port is "
                                         "in use") from error
            if not refused:
                raise
            if attempt >= INGRESS_ATTEMPTS:
                raise ClusterError(f"Serve's HAProxy could not listen on ports picked free for it at each of "
                                   f"{attempt} start(s) (last: {', '.join(map(str, sorted(refused)))} in use): something on "
                                   "this machine keeps taking them") from error
            log.warning("ingress port taken before HAProxy bound it: starting the cluster again",
                        extra={"ports": sorted(refused), "attempt": attempt})


def _wait_healthy(url: str, timeout: float = 120.0) -> None:
    wait_ok(f"{url}/healthz", timeout, what="the API")


def _call(method: str, url: str, auth: tuple[str, str] | None = None, body: Any = None,
          headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, Message, Any]:
    request_headers = dict(headers or {})
    if auth is not None:
        request_headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    if body is not None:
        data = json.dumps(body).encode()
        request_headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=request_headers)
    with urllib.request.urlopen(request, timeout=60) as answer:
        raw = answer.read()
        payload = json.loads(raw) if raw and answer.headers.get_content_type() == "application/json" else None
        return answer.status, answer.headers, payload  # case-insensitive header lookups


def demo_upload(url: str, auth: tuple[str, str], data_dir: Path, console: Console) -> dict[str, Any]:
    """Generate a 20 s 720p clip, upload it with tus as a direct upload (public playback), wait until the asset
    is ready and return it."""
    from kinoray.media.synthetic import generate_clip

    source = data_dir / "demo" / "source.mp4"
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"generating a 20 s 720p demo clip at {source}")
        generate_clip(source, width=1280, height=720, fps=30, seconds=20)
    _, _, created = _call("POST", f"{url}/video/v1/uploads", auth,
                          {"new_asset_settings": {"playback_policies": ["public"], "passthrough": "kinoray demo"}})
    upload = created["data"]
    size = source.stat().st_size
    tus = {"Tus-Resumable": "1.0.0"}
    _call("POST", upload["url"], headers={**tus, "Upload-Length": str(size)})
    offset, piece = 0, 4 * 1024 * 1024
    with source.open("rb") as handle:
        while offset < size:
            chunk = handle.read(piece)
            _, headers, _ = _call("PATCH", upload["url"], data=chunk, headers={
                **tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
            offset = int(headers.get("Upload-Offset", "-1"))
            if offset < 0:
                raise KinorayError("the upload endpoint answered a PATCH without Upload-Offset")
    console.print(f"uploaded {size} bytes with tus (upload {upload['id']})")
    asset_id = None
    with Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), TextColumn("{task.percentage:>5.1f} %"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("waiting for the asset", total=100)
        while True:
            if asset_id is None:
                _, _, answer = _call("GET", f"{url}/video/v1/uploads/{upload['id']}", auth)
                asset_id = answer["data"].get("asset_id")
            else:
                _, _, answer = _call("GET", f"{url}/video/v1/assets/{asset_id}", auth)
                asset = answer["data"]
                bar.update(task, completed=asset["progress"]["progress"],
                           description=f"asset {asset['status']} ({asset['progress']['state']})")
                if asset["status"] in ("ready", "errored"):
                    return dict(asset)
            time.sleep(0.5)


def up(host: str, port: int, data_dir: Path, *, demo: bool = False, console: Console | None = None,
       api_port: int | None = None, rtmp_port: int | None = None) -> int:
    """Run the platform until SIGINT/SIGTERM, or until the edge exits or the API (so the Ray cluster under it)
    stops answering :data:`WATCHDOG_FAILURES` probes in a row (then non-zero, so a supervisor restarts it)."""
    console = console or Console()
    stop = threading.Event()
    cluster_alive = True
    running = start(host, port, data_dir, api_port, rtmp_port)
    settings, (token_id, secret) = running.settings, running.token
    # After start(): ray.init installs a SIGTERM handler that exits without shutting Serve and Ray down.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    url = settings.public_url
    try:
        console.print(f"[bold green]kinoray is up[/] at {url}  (API docs: {url}/docs; the Data dashboard: "
                      f"{url}/dashboard/; the API alone: {settings.edge.api_url})")
        if settings.live.enabled:
            rtmp_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            console.print(f"live: publish to rtmp://{rtmp_host}:{settings.live.rtmp_port}/app/<stream key> "
                          "(POST /video/v1/live-streams gives a key)")
            if settings.live.rtmps_port is not None and settings.edge.tls_cert is not None:
                console.print(f"      or rtmps://{rtmp_host}:{settings.live.rtmps_port}/app/<stream key>")
            if settings.edge.whip_url:
                console.print(f"      or WHIP (OBS 30+, a browser): {url}/live/v1/whip with Bearer <stream key>")
        console.print(f"access token id:     {token_id}\naccess token secret: {secret}\n"
                      f"(saved in {Path(settings.data_dir) / CREDENTIALS_FILE}; try: "
                      f"curl -u {token_id}:{secret} {url}/video/v1/assets)")
        if demo:
            asset = demo_upload(url, (token_id, secret), Path(settings.data_dir), console)
            if asset["status"] == "ready":
                playback = asset["playback_ids"][0]["id"]
                media = Path(settings.storage_url) / "assets" / asset["id"] / "media"
                console.print(f"[bold green]demo asset ready[/]: {asset['id']} ({asset['duration']:.1f} s, "
                              f"{asset['resolution_tier']}, encoded with {asset.get('encoder_backend')})\n"
                              f"playback id: {playback}\nplayback URL: {url}/{playback}.m3u8\n"
                              f"HLS on disk: {media / 'master.m3u8'} (ffplay it, or serve the folder)")
            else:
                console.print(f"[bold red]demo asset errored[/]: {asset.get('errors')}")
        console.print("Ctrl-C stops kinoray.")
        failures, next_probe = 0, time.monotonic() + WATCHDOG_SECONDS
        while not stop.wait(1.0):
            if not running.edge.alive:
                console.print("[bold red]the delivery edge exited[/]: stopping (see edge.log in the data dir)")
                return 1
            if time.monotonic() < next_probe:
                continue
            failures = 0 if running.api_answers() else failures + 1
            next_probe = time.monotonic() + WATCHDOG_SECONDS
            if failures >= WATCHDOG_FAILURES:
                cluster_alive = False
                console.print(f"[bold red]the API and the Ray cluster under it stopped answering[/] "
                              f"({failures} probes of {settings.edge.api_url}/healthz failed): stopping")
                log.error("ray cluster gone", extra={"api_url": settings.edge.api_url, "failures": failures})
                return 1
    finally:
        running.stop(cluster_alive=cluster_alive)
    return 0
