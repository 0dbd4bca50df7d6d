"""``kinoray up``: the whole platform on one machine — local Ray, Serve (API + runner), SQLite and a storage
directory under ``--data-dir`` (or whatever ``KINORAY_*`` settings say) — plus the bootstrap access token and
the optional demo upload ``make run`` uses.

The token is written to ``DATA_DIR/credentials.json`` (mode 0600) and reused on the next start while it is
valid, so ``kinoray up`` is idempotent.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import threading
import time
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from kinoray.control.auth import create_token
from kinoray.control.platform import Platform
from kinoray.errors import KinorayError
from kinoray.settings import Settings, get_settings
from kinoray.store.models import AccessToken, is_valid_id

__all__ = ["bootstrap_token", "demo_upload", "start", "up"]

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"


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


def _settings_env(host: str, port: int, data_dir: Path) -> dict[str, str]:
    """The ``KINORAY_*`` (and AWS) environment every Ray process of the platform gets."""
    os.environ["KINORAY_DATA_DIR"] = str(data_dir)
    os.environ["KINORAY_SERVE__HOST"] = host
    os.environ["KINORAY_SERVE__PORT"] = str(port)
    get_settings.cache_clear()
    return {key: value for key, value in os.environ.items() if key.startswith(("KINORAY_", "AWS_"))}


def start(host: str, port: int, data_dir: Path) -> tuple[Settings, tuple[str, str]]:
    """Start local Ray and the Serve application; returns the settings and the bootstrap token. Non-blocking:
    call ``serve.shutdown()`` and ``ray.shutdown()`` to stop."""
    import ray
    from ray import serve

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = _settings_env(host, port, data_dir)
    settings = get_settings()
    token = bootstrap_token(settings)  # also migrates the database before any replica starts
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address or "local", runtime_env={"env_vars": env}, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING, namespace="kinoray")
    from ray.serve.schema import LoggingConfig

    # Per-request access log lines cost more CPU than a small API request itself; kinoray's own metrics and
    # logs cover requests.
    serve.start(http_options={"host": host, "port": port},
                logging_config=LoggingConfig(enable_access_log=False, log_level="WARNING"))
    from kinoray.serve.app import app

    serve.run(app, name="kinoray", route_prefix="/", blocking=False)
    _wait_healthy(f"http://{host}:{port}")
    return settings, token


def _wait_healthy(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise KinorayError(f"the API did not answer on {url} within {timeout:.0f} s")
        time.sleep(0.25)


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


def up(host: str, port: int, data_dir: Path, *, demo: bool = False, console: Console | None = None) -> int:
    """Run the platform until SIGINT/SIGTERM."""
    import ray
    from ray import serve

    console = console or Console()
    stop = threading.Event()
    settings, (token_id, secret) = start(host, port, data_dir)
    # After start(): ray.init installs a SIGTERM handler that exits without shutting Serve and Ray down.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    url = f"http://{host}:{port}"
    try:
        console.print(f"[bold green]kinoray is up[/] at {url}  (API docs: {url}/docs)")
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
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
