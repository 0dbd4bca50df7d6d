"""Soak: a long mixed workload against ``kinoray up`` with faults on a schedule, ending in a ledger.

    .venv/bin/python benchmarks/soak.py                                   # 60 min, a fault every 10 min
    .venv/bin/python benchmarks/soak.py --minutes 5 --fault-every 1.25 --upload-every 15 --url-every 20

It starts ``kinoray up`` itself (a fresh data dir under ``benchmarks/results/soak-work/``, fixed ports for the
whole run, private input URLs allowed, rate limits out of the way) and, concurrently, at modest rates:

* **uploads** — small clips generated per upload by Debian ``ffmpeg`` (``testsrc`` + ``sine``, 2-6 s, several
  sizes, frame rates and containers), each a fresh file with its own sha256, sent as direct uploads: tus with
  tuspy (some with a PATCH cut off half-way through its body, then resumed from the server's offset) or
  Mux-style ``PUT`` (whole, or in ``Content-Range`` pieces). Once the upload has its asset, the stored input
  (``storage/assets/<id>/input``) is compared with the source: *lost bytes* are the source bytes past the
  longest common prefix (the whole file if the input is missing);
* **URL inputs** — ``POST /video/v1/assets`` from a local ``http.server``; ``--bad-fraction`` of them garbage
  bytes or a truncated MP4 (no ``moov``), which must end ``errored``;
* **playback** — master playlist, one rendition playlist, its init segment and a couple of segments of a random
  ready asset, through the edge;
* **API reads** (list, get) and **beacons** (``POST /data/v1/beacons``, Mux Data's format);
* **webhooks** — a local receiver registered with ``POST /system/v1/webhook-endpoints``, signatures verified,
  ``video.asset.ready`` / ``video.asset.errored`` counted per asset;
* **faults** every ``--fault-every`` minutes, in turn (``--faults``): SIGKILL a Ray worker running a chunk
  (``ray::EncoderWorker.run``), SIGKILL the job runner's replica (``ray::ServeReplica:kinoray:kinoray-runner``),
  restart ``kinoray up`` (SIGTERM, then the same command on the same data dir and ports). Targets are found by
  walking ``/proc`` from the pid this script launched: nothing outside that tree is touched.

Then it stops submitting, waits up to ``--drain-minutes`` for every accepted asset to settle and its webhook to
arrive, and prints the ledger (JSON: ``--json``, default ``benchmarks/results/soak.json``). Exit status 1 when
an asset is stuck (neither ready nor errored) or upload bytes were lost, so it can gate a release.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
from _harness import RESULTS, ROOT, answer_kind, cmdline, free_port, percentile, tree
from rich.console import Console
from rich.table import Table

TERMINAL = ("ready", "errored")
TRANSPORT = ("tus (tuspy)", "tus (cut PATCH)")  # outcomes of upload transfers, not HTTP statuses
FAULT_KINDS = ("worker", "runner", "restart")
WORKER_TITLE = re.compile(r"^ray::EncoderWorker\.run\b")
RUNNER_TITLE = re.compile(r"^ray::\S*(kinoray-runner|JobRunner)")

# (container extension, ffmpeg codec arguments)
CONTAINERS = {
    "mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"],
    "mov": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"],
    "mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "64k"],
    "webm": ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "600k", "-c:a", "libopus",
             "-b:a", "64k"],
    "ts": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
           "-f", "mpegts"],
}
SIZES = ((160, 90), (320, 180), (320, 240), (426, 240), (480, 270), (640, 360))
RATES = (24, 25, 30)


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the media ----------------------------------------------------------------------------------------------


def generate(path: Path, rng: random.Random, seconds: float, container: str) -> dict[str, Any]:
    """A fresh clip from ``testsrc`` + ``sine`` (Debian ffmpeg, one thread); returns its description."""
    width, height = rng.choice(SIZES)
    fps = rng.choice(RATES)
    tone = rng.randrange(200, 2000)
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1",
               "-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={fps}:duration={seconds:.2f}",
               "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000:duration={seconds:.2f}",
               *CONTAINERS[container], "-threads", "1", "-shortest", str(path)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return {"width": width, "height": height, "fps": fps, "seconds": round(seconds, 2), "container": container}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix (64 KiB blocks, then bytes)."""
    n, block = 0, 65536
    limit = min(len(a), len(b))
    while n + block <= limit and a[n:n + block] == b[n:n + block]:
        n += block
    while n < limit and a[n] == b[n]:
        n += 1
    return n


# --- processes: the tree of the `kinoray up` we started --------------------------------------------------------


def _starttime(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        return int(raw.rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Tracker:
    """Every process ever seen under the pids we launched, by (pid, start time): what :meth:`sweep` may kill
    after the launcher exited (a pid reused by another program has another start time and is left alone)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, str]] = {}
        self.lock = threading.Lock()

    def tree(self, root: int) -> list[tuple[int, str]]:
        """(pid, cmdline) of ``root``'s descendants (not ``root``), recorded as ours."""
        found = []
        for pid in tree(root):
            if pid == root:
                continue
            start = _starttime(pid)
            title = cmdline(pid)
            if start is None:
                continue
            with self.lock:
                self.seen.setdefault(pid, (start, title))
            found.append((pid, title))
        return found

    def sweep(self) -> list[str]:
        """SIGKILL whatever of the recorded processes still runs (same pid and start time)."""
        killed = []
        with self.lock:
            items = list(self.seen.items())
        for pid, (start, title) in items:
            if _starttime(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(f"{pid} {title[:80]}")
                except ProcessLookupError:
                    pass
            with self.lock:
                self.seen.pop(pid, None)
        return killed


class Server:
    """``kinoray up`` on fixed ports and one data dir, started and restarted by us."""

    def __init__(self, data_dir: Path, env: dict[str, str], tracker: Tracker, console: Console) -> None:
        self.data_dir, self.env, self.tracker, self.console = data_dir, env, tracker, console
        self.port, self.api_port = free_port(), free_port()
        while self.api_port == self.port:
            self.api_port = free_port()
        self.rtmp_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.logs: list[Path] = []
        self.auth: tuple[str, str] = ("", "")
        self.ray_sessions: set[str] = set()

    def start(self, timeout: float) -> float:
        """Start and wait for ``/healthz`` through the edge; returns the seconds it took."""
        self.starts += 1
        log_path = self.data_dir / f"kinoray-up-{self.starts}.log"
        self.logs.append(log_path)
        command = [sys.executable, "-m", "kinoray.cli", "up", "--host", "127.0.0.1", "--port", str(self.port),
                   "--api-port", str(self.api_port), "--rtmp-port", str(self.rtmp_port), "--data-dir",
                   str(self.data_dir)]
        t0 = time.monotonic()
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        self.console.print(f"[dim]{now_utc()} started kinoray up (pid {self.process.pid}, edge :{self.port}, "
                           f"API :{self.api_port}, log {log_path})[/]")
        credentials = self.data_dir / "credentials.json"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"kinoray up exited with {self.process.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            if credentials.exists():
                try:
                    if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                        saved = json.loads(credentials.read_text())
                        self.auth = (saved["token_id"], saved["token_secret"])
                        self.scan()
                        return time.monotonic() - t0
                except (requests.RequestException, ValueError, KeyError):
                    pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"kinoray up did not answer within {timeout:.0f} s: "
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(1.0)

    def scan(self) -> list[tuple[int, str]]:
        if self.process is None or self.process.poll() is not None:
            return []
        tree = self.tracker.tree(self.process.pid)
        for _, title in tree:
            match = re.search(r"(/tmp/ray/session_[^/\s]+)", title)
            if match:
                self.ray_sessions.add(match.group(1))
        return tree

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120.0,
             after_exit: Any = None) -> dict[str, Any]:
        """``sig`` to ``kinoray up`` (it stops its edge, Serve and Ray), SIGKILL to its group past ``timeout``;
        then SIGKILL to anything of its tree still running. Returns what happened."""
        out: dict[str, Any] = {"signal": signal.Signals(sig).name}
        if self.process is None:
            return out
        self.scan()
        t0 = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                out["exit_code"] = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                out["timed_out"] = True
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                out["exit_code"] = self.process.wait()
        else:
            out["exit_code"] = self.process.returncode
            out["already_exited"] = True
        out["stop_seconds"] = round(time.monotonic() - t0, 1)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own group: ours alone
        except ProcessLookupError:
            pass
        time.sleep(1.0)
        out["leftovers_killed"] = self.tracker.sweep()
        if after_exit is not None:
            after_exit()
        return out


# --- the ledger -------------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One submitted input: an upload or a URL asset."""

    n: int
    kind: str  # tus | tus-cut | put | put-pieces | url | url-garbage | url-truncated
    expect: str  # ready | errored
    media: dict[str, Any]
    size: int = 0
    sha256: str = ""
    submitted_at: float = 0.0
    upload_id: str | None = None
    asset_id: str | None = None
    accepted_at: float | None = None
    status: str | None = None
    settled_at: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    playback_id: str | None = None
    input_check: str | None = None  # ok | mismatch | missing (uploads; url inputs once ready)
    lost_bytes: int = 0
    extra_bytes: int = 0
    attempts: int = 0  # upload resumptions after an error
    failure: str | None = None  # why it was never accepted
    next_poll: float = 0.0


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[Item] = []
        self.api: dict[str, Counter[str]] = defaultdict(Counter)
        self.api_failed_in_restart: Counter[str] = Counter()
        self.playback: dict[str, Counter[str]] = defaultdict(Counter)  # kind -> ok/failed/failed_in_restart
        self.playback_failures: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.skipped: Counter[str] = Counter()
        self.restart_windows: list[list[float]] = []
        self.errors: list[str] = []

    def add(self, item: Item) -> None:
        with self.lock:
            self.items.append(item)

    def accepted(self) -> list[Item]:
        with self.lock:
            return [i for i in self.items if i.asset_id]

    def in_restart(self, t: float, grace: float = 20.0) -> bool:
        with self.lock:
            return any(start <= t <= (end if end else float("inf")) + grace for start, end in self.restart_windows)


class Receiver:
    """Webhook endpoint on 127.0.0.1: every POST answered 200 and recorded by asset, signature checked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secret: str | None = None
        self.by_asset: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.types: Counter[str] = Counter()
        self.deliveries = 0
        self.duplicates = 0
        self.bad_signatures = 0
        self.seen_ids: set[str] = set()
        try:
            from kinoray.control.webhooks import verify
        except Exception:  # noqa: BLE001 - the product module moved: count, do not verify
            verify = None
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.end_headers()
                receiver.record({k.lower(): v for k, v in self.headers.items()}, body, verify)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, name="webhooks", daemon=True).start()

    def record(self, headers: dict[str, str], body: bytes, verify: Any) -> None:
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        ok = True
        if verify is not None and self.secret:
            try:
                verify(self.secret, body, headers.get("mux-signature"))
            except Exception:  # noqa: BLE001
                ok = False
        event_id = headers.get("webhook-id") or str(event.get("id", ""))
        kind = str(event.get("type", "?"))
        obj = event.get("object") or {}
        with self.lock:
            self.deliveries += 1
            self.bad_signatures += not ok
            if event_id and event_id in self.seen_ids:
                self.duplicates += 1
                return
            self.seen_ids.add(event_id)
            self.types[kind] += 1
            if obj.get("type") == "asset" and obj.get("id"):
                self.by_asset[obj["id"]][kind].add(event_id)

    def terminal(self, asset_id: str) -> dict[str, int]:
        with self.lock:
            events = self.by_asset.get(asset_id, {})
            return {k: len(events.get(f"video.asset.{k}", ())) for k in TERMINAL}


class Files:
    """The URL inputs: a directory served by ``http.server`` on 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)

            def log_message(self, *args: object) -> None:
                pass

        self.directory = directory
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="files", daemon=True).start()


# --- the soak -----------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args, self.console = args, console
        self.rng = random.Random(args.seed)
        self.rng_lock = threading.Lock()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.work = (args.work or RESULTS / "soak-work") / stamp
        self.data_dir = self.work / "data"
        self.media = self.work / "media"
        self.data_dir.mkdir(parents=True)
        self.media.mkdir(parents=True)
        self.ledger = Ledger()
        self.tracker = Tracker()
        self.receiver = Receiver()
        self.files = Files(self.work / "served")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KINORAY_")}
        env.pop("RAY_ADDRESS", None)  # a local Ray of its own
        env.update(KINORAY_API__RATE_LIMIT_PER_SECOND="1000000", KINORAY_API__RATE_LIMIT_BURST="1000000",
                   KINORAY_API__ALLOW_PRIVATE_INPUTS="true")
        if args.chunk_seconds:
            env["KINORAY_TRANSCODE__CHUNK_SECONDS"] = f"{args.chunk_seconds:g}"
        for pair in args.server_env:
            key, _, value = pair.partition("=")
            env[key] = value
        self.server_env = {k: v for k, v in env.items() if k.startswith(("KINORAY_", "RAY_"))}
        self.server = Server(self.data_dir, env, self.tracker, console)
        self.t0 = time.monotonic()
        self.submitting = threading.Event()
        self.loading = threading.Event()  # playback, API reads, beacons
        self.stopping = threading.Event()
        self.local = threading.local()
        self.counter = 0
        self.ingest = ThreadPoolExecutor(max_workers=args.ingest_threads, thread_name_prefix="ingest")
        self.in_ingest = 0
        self.fault_lock = threading.Lock()  # one fault at a time

    # --- helpers ---

    def t(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def rand(self) -> random.Random:
        with self.rng_lock:
            return random.Random(self.rng.random())

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def api(self, kind: str, method: str, url: str, *, auth: bool = True, **kwargs: Any) -> requests.Response | None:
        """One request, counted under ``kind`` by status (or exception name)."""
        if not url.startswith("http"):
            url = self.server.url + url
        kwargs.setdefault("timeout", self.args.request_timeout)
        if auth:
            kwargs["auth"] = self.server.auth
        t = time.monotonic()
        try:
            answer = self.session().request(method, url, **kwargs)
            outcome = answer_kind(answer.status_code, answer.content) if answer.status_code >= 400 \
                else str(answer.status_code)
        except requests.RequestException as error:
            answer, outcome = None, type(error).__name__
        with self.ledger.lock:
            self.ledger.api[kind][outcome] += 1
        if (answer is None or answer.status_code >= 500) and self.ledger.in_restart(t - self.t0):
            with self.ledger.lock:
                self.ledger.api_failed_in_restart[kind] += 1
        return answer

    def sleep(self, seconds: float, event: threading.Event | None = None) -> bool:
        """Sleep unless ``event`` is cleared or the soak stops; False if it should end."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.stopping.is_set() or (event is not None and not event.is_set()):
                return False
            time.sleep(min(0.5, end - time.monotonic()))
        return not self.stopping.is_set() and (event is None or event.is_set())

    def pending(self) -> int:
        with self.ledger.lock:
            unsettled = sum(1 for i in self.ledger.items if i.asset_id and i.status not in TERMINAL)
        return unsettled + self.in_ingest

    def next_n(self) -> int:
        with self.ledger.lock:
            self.counter += 1
            return self.counter

    # --- submitting ---

    def submit_loop(self, kind: str, every: float) -> None:
        while self.sleep(self.rand().expovariate(1 / every) if self.args.jitter else every, self.submitting):
            if self.pending() >= self.args.max_pending:
                with self.ledger.lock:
                    self.ledger.skipped[kind] += 1
                continue
            with self.ledger.lock:
                self.in_ingest += 1
            self.ingest.submit(self._guarded, self.upload if kind == "upload" else self.url_asset)

    def _guarded(self, fn: Any) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a bug in the soak itself: recorded, the run goes on
            text = traceback.format_exc()
            with self.ledger.lock:
                self.ledger.errors.append(text)
            self.console.print(f"[red]soak error[/]: {text}")
        finally:
            with self.ledger.lock:
                self.in_ingest -= 1

    def clip(self, rng: random.Random, n: int, containers: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
        container = rng.choice(containers)
        seconds = rng.uniform(self.args.clip_min_seconds, self.args.clip_max_seconds)
        path = self.media / f"clip-{n:05d}.{container}"
        return path, generate(path, rng, seconds, container)

    def upload(self, hold: tuple[threading.Event, threading.Event] | None = None) -> None:
        """One direct upload. With ``hold`` (halfway, go on): tus, one PATCH, then set ``halfway`` and wait for
        ``go on`` before sending the rest (the restart fault sends its SIGTERM in between)."""
        try:
            self._upload(hold)
        finally:
            if hold is not None:
                hold[0].set()

    def _upload(self, hold: tuple[threading.Event, threading.Event] | None) -> None:
        rng = self.rand()
        n = self.next_n()
        path, media = self.clip(rng, n, tuple(self.args.containers))
        data = path.read_bytes()
        if hold is not None:
            kind = "tus-restart"
        elif rng.random() < self.args.put_fraction:
            kind = "put-pieces" if rng.random() < 0.5 else "put"
        else:
            kind = "tus-cut" if rng.random() < self.args.cut_fraction else "tus"
        item = Item(n, kind, "ready", media, len(data), sha256_of(data), self.t())
        self.ledger.add(item)
        created = self.api("create_upload", "POST", "/video/v1/uploads", json={
            "cors_origin": "*", "new_asset_settings": {"playback_policies": ["public"], "passthrough": f"soak {n}"}})
        if created is None or created.status_code != 201:
            item.failure = f"create upload: {created.status_code if created is not None else 'no answer'}"
            return
        upload = created.json()["data"]
        item.upload_id = upload["id"]
        deadline = time.monotonic() + self.args.upload_timeout
        if kind.startswith("tus"):
            done = self.send_tus(item, upload["url"], data, rng, deadline, hold)
        else:
            done = self.send_put(item, upload["url"], data, rng, deadline)
        if not done:
            item.failure = item.failure or "upload not finished before its deadline"
            return
        asset_id = self.wait_upload_asset(item, deadline)
        if asset_id is None:
            # every byte was acknowledged and no asset came of it: those bytes are lost
            item.failure = item.failure or "upload complete but no asset"
            item.lost_bytes = item.size
            item.input_check = "no asset"
            return
        self.accept(item, asset_id)
        self.check_input(item, data)

    def send_tus(self, item: Item, url: str, data: bytes, rng: random.Random, deadline: float,
                 hold: tuple[threading.Event, threading.Event] | None = None) -> bool:
        from tusclient.client import TusClient

        tus = {"Tus-Resumable": "1.0.0"}
        chunk = max(16 * 1024, item.size // rng.randint(2, 6))  # several PATCHes per upload
        if hold is not None:
            chunk = max(1, item.size // 4)
        while True:  # creation (tuspy takes an existing upload URL; kinoray's URL is made by POST /uploads)
            answer = self.api("tus", "POST", url, auth=False, headers={**tus, "Upload-Length": str(item.size)})
            if answer is not None and answer.status_code in (201, 204, 409):
                break  # 409: created already (an answer lost to a restart); the HEAD below says where it is
            if answer is not None and answer.status_code < 500 and answer.status_code not in (423, 429):
                item.failure = f"tus creation: {answer.status_code} {answer.text[:200]}"
                return False
            if time.monotonic() > deadline or not self.sleep(2.0):
                return False
        client = TusClient(url)
        cut = item.kind == "tus-cut"
        while True:
            try:
                stream = io.BytesIO(data)
                uploader = client.uploader(file_stream=stream, url=url, chunk_size=chunk)
                if hold is not None and not hold[0].is_set() and uploader.offset < item.size:
                    uploader.upload_chunk()
                    hold[0].set()  # halfway: the restart fault may go
                    hold[1].wait(self.args.fault_wait + self.args.stop_timeout + 60)
                    continue  # a new uploader: HEAD (fails while the server is down, then resumes)
                if cut and uploader.offset < item.size:
                    if uploader.offset + chunk < item.size:
                        uploader.upload_chunk()  # one whole PATCH first
                    self.cut_patch(url, uploader.offset, data[uploader.offset:uploader.offset + chunk])
                    cut = False
                    time.sleep(1.0)
                    continue  # a new uploader from the server's offset
                uploader.upload()
                with self.ledger.lock:
                    self.ledger.api["tus (tuspy)"]["ok"] += 1
                return True
            except Exception as error:  # noqa: BLE001 - tuspy raises its own and requests' errors
                item.attempts += 1
                with self.ledger.lock:
                    self.ledger.api["tus (tuspy)"][type(error).__name__] += 1
                if time.monotonic() > deadline or not self.sleep(2.0):
                    item.failure = f"tus: {type(error).__name__}: {str(error)[:200]}"
                    return False

    def cut_patch(self, url: str, offset: int, body: bytes) -> None:
        """A tus PATCH declaring ``len(body)`` bytes that sends half of them and drops the connection."""
        host_port, path = url.split("//", 1)[1].split("/", 1)
        host, port = host_port.split(":")
        try:
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                head = (f"PATCH /{path} HTTP/1.1\r\nHost: {host_port}\r\nTus-Resumable: 1.0.0\r\n"
                        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n")
                sock.sendall(head.encode() + body[: len(body) // 2])
                time.sleep(0.5)
            outcome = "cut"
        except OSError as error:
            outcome = type(error).__name__
        with self.ledger.lock:
            self.ledger.api["tus (cut PATCH)"][outcome] += 1

    def send_put(self, item: Item, url: str, data: bytes, rng: random.Random, deadline: float) -> bool:
        """Mux-style PUT: the whole body, or ``Content-Range`` pieces; after an error, ask for the bytes stored
        (``bytes */TOTAL``) and send the rest."""
        total = item.size
        pieces = rng.randint(2, 4) if item.kind == "put-pieces" else 1
        step = -(-total // pieces)
        start = 0
        while True:
            end = min(total, start + step) - 1
            headers = {"Content-Type": "application/octet-stream"}
            if pieces > 1 or start > 0:
                headers["Content-Range"] = f"bytes {start}-{end}/{total}"
            answer = self.api("put", "PUT", url, auth=False, data=data[start:end + 1], headers=headers,
                              timeout=max(self.args.request_timeout, 120))
            if answer is not None and answer.status_code == 200:
                return True
            if answer is not None and answer.status_code == 308 and end + 1 < total:
                start = end + 1
                continue
            # an error (or a 308 for the last piece): where is the server?
            item.attempts += 1
            while True:
                if time.monotonic() > deadline or not self.sleep(2.0):
                    item.failure = f"put: {answer.status_code if answer is not None else 'no answer'}"
                    return False
                status = self.api("put", "PUT", url, auth=False, headers={"Content-Range": f"bytes */{total}"})
                if status is None or status.status_code >= 500 or status.status_code in (423, 429):
                    continue
                if status.status_code == 200:
                    return True
                if status.status_code == 308:
                    stored = status.headers.get("Range")
                    start = int(stored.rsplit("-", 1)[1]) + 1 if stored else 0
                    break
                item.failure = f"put status: {status.status_code} {status.text[:200]}"
                return False

    def wait_upload_asset(self, item: Item, deadline: float) -> str | None:
        while True:
            answer = self.api("get_upload", "GET", f"/video/v1/uploads/{item.upload_id}")
            if answer is not None and answer.status_code == 200:
                upload = answer.json()["data"]
                if upload.get("asset_id"):
                    return str(upload["asset_id"])
                if upload.get("status") in ("errored", "cancelled", "timed_out"):
                    item.failure = f"upload {upload.get('status')}: {upload.get('error')}"
                    return None
            if time.monotonic() > deadline + 60 or not self.sleep(1.0):
                return None

    def accept(self, item: Item, asset_id: str) -> None:
        with self.ledger.lock:
            item.asset_id, item.accepted_at, item.next_poll = asset_id, self.t(), 0.0

    def stored_input(self, asset_id: str) -> Path:
        return self.data_dir / "storage" / "assets" / asset_id / "input"

    def check_input(self, item: Item, data: bytes, attempts: int = 10) -> None:
        assert item.asset_id
        path = self.stored_input(item.asset_id)
        for _ in range(attempts):
            if path.exists():
                break
            time.sleep(1.0)
        if not path.exists():
            item.input_check, item.lost_bytes = "missing", len(data)
            return
        stored = path.read_bytes()
        if sha256_of(stored) == item.sha256:
            item.input_check = "ok"
            return
        prefix = common_prefix(data, stored)
        item.input_check = "mismatch"
        item.lost_bytes = len(data) - prefix
        item.extra_bytes = max(0, len(stored) - prefix)

    def url_asset(self) -> None:
        rng = self.rand()
        n = self.next_n()
        roll = rng.random()
        if roll < self.args.bad_fraction / 2:
            kind, path = "url-garbage", self.files.directory / f"garbage-{n:05d}.mp4"
            path.write_bytes(os.urandom(rng.randint(20_000, 300_000)))
            media: dict[str, Any] = {"container": "garbage"}
        elif roll < self.args.bad_fraction:
            kind = "url-truncated"
            whole, media = self.clip(rng, n, ("mp4", "mov"))
            data = whole.read_bytes()
            path = self.files.directory / f"truncated-{n:05d}{whole.suffix}"
            path.write_bytes(data[: int(len(data) * rng.uniform(0.3, 0.7))])  # moov (at the end) is cut off
            media = {**media, "truncated_from": len(data)}
        else:
            kind = "url"
            whole, media = self.clip(rng, n, tuple(self.args.containers))
            path = self.files.directory / whole.name
            whole.rename(path)
        data = path.read_bytes()
        item = Item(n, kind, "errored" if kind != "url" else "ready", media, len(data), sha256_of(data), self.t())
        self.ledger.add(item)
        answer = self.api("create_asset", "POST", "/video/v1/assets", json={
            "inputs": [{"url": f"{self.files.url}/{path.name}"}], "playback_policies": ["public"],
            "passthrough": f"soak {n}"})
        if answer is None or answer.status_code != 201:
            item.failure = f"create asset: {answer.status_code if answer is not None else 'no answer'}"
            return
        self.accept(item, answer.json()["data"]["id"])

    # --- watching ---

    def watch_loop(self) -> None:
        while not self.stopping.is_set():
            due = [i for i in self.ledger.accepted() if i.status not in TERMINAL and i.next_poll <= time.monotonic()]
            for item in due:
                self.poll(item, "get_asset (watch)")
                item.next_poll = time.monotonic() + self.args.watch_every
            time.sleep(1.0)

    def poll(self, item: Item, kind: str) -> None:
        answer = self.api(kind, "GET", f"/video/v1/assets/{item.asset_id}")
        if answer is None or answer.status_code != 200:
            if answer is not None and answer.status_code == 404:
                item.status = "missing (404)"
            return
        asset = answer.json()["data"]
        status = asset.get("status")
        if asset.get("playback_ids"):
            item.playback_id = asset["playback_ids"][0]["id"]
        if status in TERMINAL and item.status not in TERMINAL:
            item.settled_at = self.t()
            errors = asset.get("errors") or {}
            item.error_type = errors.get("type")
            item.error_message = "; ".join(errors.get("messages") or [])[:300] or None
            if status == "ready" and item.kind == "url":
                path = self.files.directory / f"clip-{item.n:05d}.{item.media['container']}"
                stored = self.stored_input(str(item.asset_id))
                if stored.exists() and path.exists():
                    item.input_check = "ok" if sha256_of(stored.read_bytes()) == item.sha256 else "mismatch"
        item.status = status

    # --- load: playback, API reads, beacons ---

    def ready_items(self) -> list[Item]:
        return [i for i in self.ledger.accepted() if i.status == "ready" and i.playback_id]

    def fetch(self, kind: str, url: str) -> requests.Response | None:
        t = time.monotonic()
        try:
            answer = self.session().get(url, timeout=self.args.request_timeout)
            ok = answer.status_code == 200 and len(answer.content) > 0
            outcome = str(answer.status_code)
        except requests.RequestException as error:
            answer, ok, outcome = None, False, type(error).__name__
        restart = self.ledger.in_restart(t - self.t0)
        with self.ledger.lock:
            counter = self.ledger.playback[kind]
            counter["ok" if ok else ("failed during restart" if restart else "failed")] += 1
            if not ok and not restart and len(self.ledger.playback_failures) < 50:
                self.ledger.playback_failures.append({"t": round(t - self.t0, 1), "url": url, "outcome": outcome})
        return answer if ok else None

    def playback_loop(self) -> None:
        while self.sleep(self.args.playback_every, self.loading):
            ready = self.ready_items()
            if not ready:
                continue
            item = self.rand().choice(ready)
            master_url = f"{self.server.url}/{item.playback_id}.m3u8"
            master = self.fetch("master playlist", master_url)
            if master is None:
                continue
            variants = [line for line in master.text.splitlines() if line and not line.startswith("#")]
            if not variants:
                continue
            media_url = urljoin(master_url, self.rand().choice(variants))
            playlist = self.fetch("media playlist", media_url)
            if playlist is None:
                continue
            lines = playlist.text.splitlines()
            maps = [m.group(1) for line in lines for m in [re.search(r'#EXT-X-MAP:URI="([^"]+)"', line)] if m]
            segments = [line for line in lines if line and not line.startswith("#")]
            for uri in maps[:1]:
                self.fetch("init segment", urljoin(media_url, uri))
            for uri in segments[:2]:
                self.fetch("segment", urljoin(media_url, uri))

    def api_loop(self) -> None:
        turn = 0
        while self.sleep(self.args.api_every, self.loading):
            turn += 1
            accepted = self.ledger.accepted()
            if turn % 2 and accepted:
                self.api("get_asset", "GET", f"/video/v1/assets/{self.rand().choice(accepted).asset_id}")
            else:
                self.api("list_assets", "GET", "/video/v1/assets", params={"limit": 25})

    def beacon_loop(self) -> None:
        while self.sleep(self.args.beacon_every, self.loading):
            ready = self.ready_items()
            if not ready:
                continue
            rng = self.rand()
            item = rng.choice(ready)
            view, session = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
            now_ms = int(time.time() * 1000)
            events = [{"e": name, "uti": now_ms + k * 10, "pphti": k * 500, "xid": view, "sid": session,
                       "vid": item.playback_id, "xsqno": k, "pnm": "kinoray-soak", "psw": "soak.py"}
                      for k, name in enumerate(("viewinit", "playerready", "play", "playing", "hb",
                                                "viewend")[: rng.randint(2, 6)])]
            self.api("beacon", "POST", "/data/v1/beacons", auth=False, json={"metadata": {}, "events": events})

    # --- faults ---

    def fault_loop(self) -> None:
        kinds = list(self.args.faults)
        k = 0
        # fault k is due at k × --fault-every from the start (a slow fault does not push the later ones back)
        while self.sleep(max(0.0, self.t0 + (k + 1) * self.args.fault_every * 60 - time.monotonic()),
                         self.submitting):
            kind = kinds[k % len(kinds)]
            k += 1
            with self.fault_lock:
                try:
                    record = {"worker": self.kill_worker, "runner": self.kill_runner,
                              "restart": self.restart}[kind]()
                except Exception as error:  # noqa: BLE001
                    record = {"result": f"failed: {type(error).__name__}: {error}"}
            record = {"kind": kind, **record}
            with self.ledger.lock:
                self.ledger.faults.append(record)
            self.console.print(f"[bold yellow]{now_utc()} fault[/] {json.dumps(record)}")

    def preparing(self) -> list[str]:
        return [str(i.asset_id) for i in self.ledger.accepted() if i.status not in TERMINAL]

    def find(self, title: re.Pattern[str], wait: float) -> list[tuple[int, str]]:
        deadline = time.monotonic() + wait
        while True:
            found = [(pid, cmd) for pid, cmd in self.server.scan() if title.search(cmd)]
            if found or time.monotonic() > deadline or self.stopping.is_set():
                return found
            time.sleep(0.5)

    def kill_worker(self) -> dict[str, Any]:
        """SIGKILL one Ray worker process running a chunk (``ray::EncoderWorker.run``) under our tree."""
        found = self.find(WORKER_TITLE, self.args.fault_wait)
        base = {"t": self.t(), "utc": now_utc()}
        if not found:
            titles = sorted({cmd[:60] for _, cmd in self.server.scan() if cmd.startswith("ray::")})
            return {**base, "result": f"skipped: no ray::EncoderWorker.run in {self.args.fault_wait:g} s",
                    "ray_titles": titles}
        pid, title = self.rand().choice(found)
        pending = self.preparing()
        os.kill(pid, signal.SIGKILL)
        return {**base, "result": "killed", "pid": pid, "title": title[:120], "unsettled_assets": pending,
                "candidates": len(found)}

    def kill_runner(self) -> dict[str, Any]:
        """SIGKILL the job runner's Serve replica (title ``ray::ServeReplica:kinoray:kinoray-runner``), at a
        moment a chunk runs if one comes within ``--fault-wait``."""
        busy = bool(self.find(WORKER_TITLE, self.args.fault_wait))
        found = self.find(RUNNER_TITLE, 5.0)
        base = {"t": self.t(), "utc": now_utc(), "job_running": busy}
        if not found:
            titles = sorted({cmd[:60] for _, cmd in self.server.scan() if cmd.startswith("ray::")})
            return {**base, "result": "skipped: no runner replica found", "ray_titles": titles}
        pending = self.preparing()
        for pid, _ in found:
            os.kill(pid, signal.SIGKILL)
        return {**base, "result": "killed", "pids": [pid for pid, _ in found], "title": found[0][1][:120],
                "unsettled_assets": pending}

    def restart(self) -> dict[str, Any]:
        """SIGTERM ``kinoray up`` and start it again on the same data dir and ports: when a chunk is running
        (if one comes within ``--fault-wait``), with a tus upload sent up to a quarter and held, which goes on
        once the old server has exited (so it fails until the new one answers, then resumes)."""
        halfway, go_on = threading.Event(), threading.Event()
        with self.ledger.lock:
            self.in_ingest += 1
        self.ingest.submit(self._guarded, lambda: self.upload((halfway, go_on)))
        halfway.wait(120)
        busy = bool(self.find(WORKER_TITLE, self.args.fault_wait))
        base = {"t": self.t(), "utc": now_utc(), "job_running": busy, "unsettled_assets": self.preparing(),
                "held_upload": next((i.upload_id for i in reversed(self.ledger.items) if i.kind == "tus-restart"),
                                    None)}
        window = [self.t(), 0.0]
        with self.ledger.lock:
            self.ledger.restart_windows.append(window)
        try:
            stopped = self.server.stop(signal.SIGTERM, timeout=self.args.stop_timeout, after_exit=go_on.set)
            try:
                took = self.server.start(self.args.start_timeout)
            finally:
                window[1] = self.t()
        finally:
            go_on.set()
        return {**base, "result": "restarted", **stopped, "start_seconds": round(took, 1),
                "down_seconds": round(window[1] - window[0], 1)}

    # --- progress and the end ---

    def counts(self) -> dict[str, Any]:
        accepted = self.ledger.accepted()
        with self.ledger.lock:
            http = [c for kind, c in self.ledger.api.items() if kind not in TRANSPORT]
            api_ok = sum(n for c in http for k, n in c.items() if k[:1] in "23")
            api_all = sum(n for c in http for n in c.values())
            play_ok = sum(c["ok"] for c in self.ledger.playback.values())
            play_all = sum(sum(c.values()) for c in self.ledger.playback.values())
            faults = len(self.ledger.faults)
        return {
            "accepted": len(accepted), "ready": sum(i.status == "ready" for i in accepted),
            "errored": sum(i.status == "errored" for i in accepted),
            "unsettled": sum(i.status not in TERMINAL for i in accepted), "ingesting": self.in_ingest,
            "webhooks": sum(1 for i in accepted if any(self.receiver.terminal(str(i.asset_id)).values())),
            "api": f"{api_ok}/{api_all}", "playback": f"{play_ok}/{play_all}", "faults": faults,
        }

    def progress_loop(self) -> None:
        last = 0.0
        while not self.stopping.is_set():
            time.sleep(1.0)
            self.server.scan()  # also records new processes of the tree for the final sweep
            if time.monotonic() - last >= self.args.progress_every:
                last = time.monotonic()
                c = self.counts()
                phase = "load" if self.submitting.is_set() else "drain"
                self.console.print(
                    f"[dim]{now_utc()}[/] t={self.t():6.0f}s {phase}: accepted {c['accepted']} (ready {c['ready']}, "
                    f"errored {c['errored']}, unsettled {c['unsettled']}, ingesting {c['ingesting']}) · webhooks "
                    f"{c['webhooks']}/{c['accepted']} · API ok {c['api']} · playback ok {c['playback']} · faults "
                    f"{c['faults']} · load {os.getloadavg()[0]:.1f}")

    def run(self) -> dict[str, Any]:
        args = self.args
        self.console.print(f"soak: {args.minutes:g} min of load, drain ≤ {args.drain_minutes:g} min, faults every "
                           f"{args.fault_every:g} min ({', '.join(args.faults) or 'none'}); work dir {self.work}")
        took = self.server.start(args.start_timeout)
        self.console.print(f"kinoray up answered after {took:.0f} s at {self.server.url}")
        hook = self.api("webhook_register", "POST", "/system/v1/webhook-endpoints", json={"url": self.receiver.url})
        if hook is None or hook.status_code != 201:
            raise RuntimeError(f"cannot register the webhook endpoint: {hook.text if hook is not None else 'no answer'}")
        self.receiver.secret = hook.json()["data"]["secret"]
        self.t0 = time.monotonic()
        started_utc = now_utc()
        self.submitting.set()
        self.loading.set()
        threads = [threading.Thread(target=self.progress_loop, name="progress", daemon=True),
                   threading.Thread(target=self.watch_loop, name="watch", daemon=True),
                   threading.Thread(target=self.submit_loop, args=("upload", args.upload_every), daemon=True),
                   threading.Thread(target=self.submit_loop, args=("url", args.url_every), daemon=True),
                   threading.Thread(target=self.playback_loop, name="playback", daemon=True),
                   threading.Thread(target=self.api_loop, name="api", daemon=True),
                   threading.Thread(target=self.beacon_loop, name="beacons", daemon=True)]
        if args.fault_every > 0 and args.faults:
            threads.append(threading.Thread(target=self.fault_loop, name="faults", daemon=True))
        for thread in threads:
            thread.start()
        interrupted = False
        try:
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(1.0)
            self.console.print(f"{now_utc()} load over: draining (≤ {args.drain_minutes:g} min)")
        except KeyboardInterrupt:
            interrupted = True
            self.console.print("[yellow]interrupted: draining[/]")
        self.submitting.clear()
        self.loading.clear()
        load_end = self.t()
        with self.fault_lock:  # a fault under way finishes first (a restart brings the server back)
            pass
        drain_deadline = time.monotonic() + args.drain_minutes * 60
        all_settled: float | None = None
        try:
            while time.monotonic() < drain_deadline:
                accepted = self.ledger.accepted()
                settled = [i for i in accepted if i.status in TERMINAL]
                hooks_in = all(any(self.receiver.terminal(str(i.asset_id)).values()) for i in settled)
                if self.in_ingest == 0 and len(settled) == len(accepted):
                    all_settled = all_settled or time.monotonic()
                    if hooks_in or time.monotonic() - all_settled > args.webhook_grace:
                        break
                else:
                    all_settled = None
                time.sleep(2.0)
        except KeyboardInterrupt:
            interrupted = True
        drain_seconds = round(self.t() - load_end, 1)
        # the source of truth: one last GET of every accepted asset
        for item in self.ledger.accepted():
            self.poll(item, "get_asset (final)")
        self.stopping.set()
        return self.report(started_utc, load_end, drain_seconds, interrupted)

    def close(self) -> dict[str, Any]:
        self.stopping.set()
        self.ingest.shutdown(wait=False, cancel_futures=True)
        stopped = self.server.stop(signal.SIGINT, timeout=self.args.stop_timeout)
        self.receiver.server.shutdown()
        self.files.server.shutdown()
        return stopped

    def job_rows(self, asset_id: str) -> list[dict[str, Any]]:
        """The asset's rows of the ``jobs`` table (SQLite under the data dir, opened read-only; whatever
        columns the schema has now), for a stuck asset."""
        import sqlite3

        path = self.data_dir / "kinoray.db"
        if not path.exists():
            return []
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
                db.row_factory = sqlite3.Row
                rows = db.execute("SELECT * FROM jobs WHERE asset_id = ?", (asset_id,)).fetchall()
                return [{k: (v if not isinstance(v, str) else v[:300]) for k, v in dict(row).items()
                         if k not in ("options", "result")} for row in rows]
        except sqlite3.Error as error:
            return [{"error": f"{type(error).__name__}: {error}"}]

    def server_log_lines(self, asset_id: str, limit: int = 15, also: tuple[str, ...] = ()) -> list[str]:
        """Lines naming ``asset_id`` (or one of ``also``: its job ids) in the ``kinoray up`` outputs, the edge
        log and Ray's session logs."""
        paths = [*self.server.logs, self.data_dir / "edge.log"]
        for session in sorted(self.server.ray_sessions):
            logs = Path(session) / "logs"
            if logs.is_dir():
                paths += sorted(logs.glob("serve/*.log")) + sorted(logs.glob("worker-*.err")) + \
                    sorted(logs.glob("worker-*.out"))
        lines: list[str] = []
        for path in paths:
            try:
                with path.open(errors="replace") as handle:
                    for line in handle:
                        if asset_id in line or any(key in line for key in also):
                            lines.append(f"{path.name}: {line.strip()[:400]}")
            except OSError:
                continue
        return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])

    def report(self, started_utc: str, load_end: float, drain_seconds: float, interrupted: bool) -> dict[str, Any]:
        with self.ledger.lock:
            items = list(self.ledger.items)
        accepted = [i for i in items if i.asset_id]
        stuck = [i for i in accepted if i.status not in TERMINAL]
        uploads = [i for i in items if not i.kind.startswith("url")]
        by_error = Counter(i.error_type or "(none)" for i in accepted if i.status == "errored")
        unexpected = [i for i in accepted if i.status in TERMINAL and i.status != i.expect]
        hooks = {str(i.asset_id): self.receiver.terminal(str(i.asset_id)) for i in accepted}
        delivered = [i for i in accepted if hooks[str(i.asset_id)].get(i.status or "", 0) >= 1]
        extra_hooks = [i for i in accepted if sum(hooks[str(i.asset_id)].values()) > 1]
        wrong_hooks = [i for i in accepted if i.status in TERMINAL and any(
            n for k, n in hooks[str(i.asset_id)].items() if k != i.status)]
        lost = sum(i.lost_bytes for i in uploads)
        upload_problems = [i for i in uploads if i.lost_bytes or i.input_check not in ("ok", None)]
        latencies = sorted(i.settled_at - i.accepted_at for i in accepted
                           if i.settled_at is not None and i.accepted_at is not None)
        with self.ledger.lock:
            api = {kind: dict(sorted(c.items())) for kind, c in sorted(self.ledger.api.items())}
            playback = {kind: dict(c) for kind, c in sorted(self.ledger.playback.items())}
            faults = list(self.ledger.faults)
            skipped = dict(self.ledger.skipped)
        api_by_status: Counter[str] = Counter()
        for kind, counter in api.items():
            if kind not in TRANSPORT:
                api_by_status.update(counter)
        by_asset = {i.asset_id: i for i in accepted}
        by_upload = {i.upload_id: i for i in items if i.upload_id}
        for fault in faults:  # what became of the work a fault hit
            fault["affected"] = [
                {"asset_id": a, "kind": by_asset[a].kind, "status": by_asset[a].status,
                 "settled_s_after_fault": round(by_asset[a].settled_at - fault["t"], 1)
                 if by_asset[a].settled_at is not None else None}
                for a in fault.get("unsettled_assets", []) if a in by_asset]
            held = by_upload.get(fault.get("held_upload"))
            if held is not None:
                fault["held_upload_outcome"] = {"asset_id": held.asset_id, "status": held.status,
                                                "input_check": held.input_check, "lost_bytes": held.lost_bytes,
                                                "resumes": held.attempts, "failure": held.failure}
        play_ok = sum(c.get("ok", 0) for c in playback.values())
        play_failed = sum(c.get("failed", 0) for c in playback.values())
        play_failed_restart = sum(c.get("failed during restart", 0) for c in playback.values())

        def brief(i: Item) -> dict[str, Any]:
            return {"n": i.n, "kind": i.kind, "asset_id": i.asset_id, "upload_id": i.upload_id, "status": i.status,
                    "expect": i.expect, "error_type": i.error_type, "error_message": i.error_message,
                    "accepted_at_s": i.accepted_at, "media": i.media, "size": i.size}

        stuck_detail = []
        for i in stuck:
            jobs = self.job_rows(str(i.asset_id))
            job_ids = tuple(str(j["job_id"]) for j in jobs if j.get("job_id"))
            stuck_detail.append({**brief(i), "jobs": jobs,
                                 "server_log": self.server_log_lines(str(i.asset_id), also=job_ids)})
        return {
            "benchmark": "soak",
            "when": started_utc,
            "ended": now_utc(),
            "interrupted": interrupted,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()},
            "server": {"url": self.server.url, "api_port": self.server.api_port, "data_dir": str(self.data_dir),
                       "logs": [str(p) for p in self.server.logs], "ray_sessions": sorted(self.server.ray_sessions),
                       "env": self.server_env, "starts": self.server.starts},
            "machine": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
            "load_seconds": load_end, "drain_seconds": drain_seconds,
            "ledger": {
                "submitted": len(items),
                "not_accepted": len(items) - len(accepted),
                "accepted": len(accepted),
                "accepted_by_kind": dict(Counter(i.kind for i in accepted)),
                "ready": sum(i.status == "ready" for i in accepted),
                "errored": sum(i.status == "errored" for i in accepted),
                "errored_by_type": dict(by_error),
                "outcome_not_as_expected": len(unexpected),
                "stuck": len(stuck),
                "uploads": len(uploads),
                "uploads_with_asset": sum(1 for i in uploads if i.asset_id),
                "upload_resumes_after_error": sum(i.attempts for i in uploads),
                "tus_cut_uploads": sum(1 for i in uploads if i.kind == "tus-cut"),
                "upload_bytes_checked": sum(i.size for i in uploads if i.input_check is not None),
                "lost_upload_bytes": lost,
                "url_inputs_stored_mismatch": sum(1 for i in accepted if i.kind == "url" and i.input_check == "mismatch"),
                "webhooks_delivered": len(delivered),
                "webhooks_expected": len(accepted),
                "webhook_assets_with_extra_terminal_events": len(extra_hooks),
                "webhook_assets_with_wrong_terminal_event": len(wrong_hooks),
                "webhook_deliveries": self.receiver.deliveries,
                "webhook_duplicate_deliveries": self.receiver.duplicates,
                "webhook_bad_signatures": self.receiver.bad_signatures,
                "webhook_types": dict(self.receiver.types),
                "playback_ok": play_ok, "playback_failed": play_failed,
                "playback_failed_during_restart": play_failed_restart,
                "api_by_status": dict(sorted(api_by_status.items())),
                "faults_injected": sum(1 for f in faults if f.get("result") in ("killed", "restarted")),
                "submissions_skipped_backpressure": skipped,
                "settle_seconds_p50": percentile(latencies, 50), "settle_seconds_p95": percentile(latencies, 95),
                "settle_seconds_max": round(latencies[-1], 1) if latencies else None,
            },
            "pass": not stuck and lost == 0,
            "rule": "exit 1 if stuck > 0 or lost upload bytes > 0",
            "faults": faults,
            "api": api,
            "api_failed_during_restart": dict(self.ledger.api_failed_in_restart),
            "playback": playback,
            "playback_failures": self.ledger.playback_failures,
            "stuck_assets": stuck_detail,
            "unexpected_outcomes": [brief(i) for i in unexpected],
            "upload_problems": [{**brief(i), "input_check": i.input_check, "lost_bytes": i.lost_bytes,
                                 "extra_bytes": i.extra_bytes} for i in upload_problems],
            "not_accepted": [{**brief(i), "failure": i.failure} for i in items if not i.asset_id],
            "missing_webhooks": [brief(i) for i in accepted if i not in delivered],
            "soak_errors": self.ledger.errors,
            "items": [{k: v for k, v in asdict(i).items() if k != "next_poll"} for i in items],
        }


# --- output -------------------------------------------------------------------------------------------------


def show(result: dict[str, Any], console: Console) -> None:
    ledger = result["ledger"]
    table = Table(title=f"soak ledger — {result['config']['minutes']:g} min load + {result['drain_seconds']:.0f} s "
                        f"drain, {result['machine']['cpus']} CPUs (load average at the end "
                        f"{result['machine']['loadavg_end'][0]:.1f})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("", justify="left")

    def row(name: str, value: Any, verdict: str = "") -> None:
        table.add_row(name, str(value), verdict)

    ok, bad = "[green]ok[/]", "[bold red]FAIL[/]"
    row("submitted (uploads + URL inputs)", ledger["submitted"])
    row("accepted assets", ledger["accepted"], ", ".join(f"{k} {n}" for k, n in sorted(ledger["accepted_by_kind"].items())))
    row("not accepted (refused / server away)", ledger["not_accepted"])
    row("ready", ledger["ready"])
    row("errored", ledger["errored"], ", ".join(f"{k} {n}" for k, n in ledger["errored_by_type"].items()))
    row("outcome not as expected (good errored / bad ready)", ledger["outcome_not_as_expected"],
        ok if not ledger["outcome_not_as_expected"] else "[yellow]see unexpected_outcomes[/]")
    row("stuck after the drain", ledger["stuck"], ok if not ledger["stuck"] else bad)
    row("uploads (with an asset)", f"{ledger['uploads']} ({ledger['uploads_with_asset']})",
        f"{ledger['tus_cut_uploads']} cut mid-PATCH, {ledger['upload_resumes_after_error']} resumes after errors")
    row("lost upload bytes", f"{ledger['lost_upload_bytes']} of {ledger['upload_bytes_checked']}",
        ok if not ledger["lost_upload_bytes"] else bad)
    row("webhooks delivered / expected", f"{ledger['webhooks_delivered']} / {ledger['webhooks_expected']}",
        ok if ledger["webhooks_delivered"] == ledger["webhooks_expected"] else "[yellow]missing[/]")
    row("webhook extras (dup. deliveries, extra / wrong terminal events, bad signatures)",
        f"{ledger['webhook_duplicate_deliveries']}, {ledger['webhook_assets_with_extra_terminal_events']} / "
        f"{ledger['webhook_assets_with_wrong_terminal_event']}, {ledger['webhook_bad_signatures']}")
    row("playback requests ok / failed", f"{ledger['playback_ok']} / {ledger['playback_failed']}",
        f"+{ledger['playback_failed_during_restart']} failed during restarts")
    row("API requests by status", ", ".join(f"{k}×{n}" for k, n in ledger["api_by_status"].items()))
    row("faults injected", ledger["faults_injected"],
        ", ".join(f"{f['kind']}@{f.get('t', '?')}s {f.get('result', '')[:30]}" for f in result["faults"]))
    row("accepted → settled s (p50 / p95 / max)",
        f"{ledger['settle_seconds_p50']} / {ledger['settle_seconds_p95']} / {ledger['settle_seconds_max']}")
    if ledger["submissions_skipped_backpressure"]:
        row("submissions skipped (max pending)", ledger["submissions_skipped_backpressure"])
    console.print(table)

    api = Table(title="API requests by kind")
    api.add_column("kind")
    api.add_column("outcomes")
    for kind, counts in result["api"].items():
        api.add_row(kind, ", ".join(f"{k}×{n}" for k, n in counts.items()))
    console.print(api)
    faults = Table(title="faults")
    for column in ("t s", "kind", "result", "detail", "work it hit → outcome"):
        faults.add_column(column)
    for f in result["faults"]:
        if f["kind"] == "restart":
            detail = (f"exit {f.get('exit_code')} after {f.get('stop_seconds')} s, up again in "
                      f"{f.get('start_seconds')} s (down {f.get('down_seconds')} s), "
                      f"{len(f.get('leftovers_killed') or [])} leftovers killed")
        else:
            detail = f"pid {f.get('pid') or f.get('pids')} {f.get('title', '')}"
        hit = [f"{a['asset_id'][:8]}… {a['status']} +{a['settled_s_after_fault']} s" for a in f.get("affected", [])]
        if f.get("held_upload_outcome"):
            held = f["held_upload_outcome"]
            hit.append(f"held tus upload → {held['status']} ({held['input_check']}, {held['resumes']} resumes)")
        faults.add_row(str(f.get("t")), f["kind"], str(f.get("result")), detail, "; ".join(hit))
    console.print(faults)
    for stuck in result["stuck_assets"]:
        console.print(f"[red]stuck[/] {stuck['asset_id']} ({stuck['kind']}, last status {stuck['status']})")
        for job in stuck["jobs"]:
            console.print(f"    job {json.dumps(job, default=str)[:600]}")
        for line in stuck["server_log"]:
            console.print(f"    {line}")
    for problem in result["upload_problems"]:
        console.print(f"[red]upload[/] {problem['asset_id'] or problem['upload_id']} ({problem['kind']}): "
                      f"{problem['input_check']}, lost {problem['lost_bytes']} B")
    for item in result["unexpected_outcomes"]:
        console.print(f"[yellow]unexpected[/] {item['asset_id']} {item['kind']} {item['media']}: {item['status']} "
                      f"(expected {item['expect']}) {item['error_type'] or ''} {item['error_message'] or ''}")
    verdict = "[bold green]PASS[/]" if result["pass"] else "[bold red]FAIL[/]"
    console.print(f"{verdict}: stuck {ledger['stuck']}, lost upload bytes {ledger['lost_upload_bytes']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of load")
    parser.add_argument("--drain-minutes", type=float, default=10.0,
                        help="most minutes to wait after the load for assets to settle and webhooks to arrive")
    parser.add_argument("--fault-every", type=float, default=10.0, help="minutes between faults (0: none)")
    parser.add_argument("--faults", type=lambda s: [k for k in s.split(",") if k], default=list(FAULT_KINDS),
                        help="fault kinds, in turn: worker,runner,restart")
    parser.add_argument("--fault-wait", type=float, default=90.0,
                        help="seconds a worker/runner fault waits for a chunk to be running")
    parser.add_argument("--upload-every", type=float, default=30.0, help="seconds between uploads (mean)")
    parser.add_argument("--url-every", type=float, default=45.0, help="seconds between URL-input assets (mean)")
    parser.add_argument("--bad-fraction", type=float, default=0.25, help="share of URL inputs that are bad")
    parser.add_argument("--put-fraction", type=float, default=0.4, help="share of uploads sent with PUT, not tus")
    parser.add_argument("--cut-fraction", type=float, default=0.4, help="share of tus uploads cut mid-PATCH")
    parser.add_argument("--playback-every", type=float, default=3.0, help="seconds between playback sessions")
    parser.add_argument("--api-every", type=float, default=2.0, help="seconds between API reads")
    parser.add_argument("--beacon-every", type=float, default=5.0, help="seconds between beacon batches")
    parser.add_argument("--max-pending", type=int, default=8,
                        help="skip a submission while this many accepted assets are unsettled (plus ingesting)")
    parser.add_argument("--ingest-threads", type=int, default=4)
    parser.add_argument("--clip-min-seconds", type=float, default=2.0)
    parser.add_argument("--clip-max-seconds", type=float, default=6.0)
    parser.add_argument("--containers", type=lambda s: [c for c in s.split(",") if c],
                        default=list(CONTAINERS), help=f"of {','.join(CONTAINERS)}")
    parser.add_argument("--chunk-seconds", type=float, default=4.0,
                        help="KINORAY_TRANSCODE__CHUNK_SECONDS for the server (0: its default)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for kinoray up (repeatable)")
    parser.add_argument("--webhook-grace", type=float, default=90.0,
                        help="seconds to wait for missing webhooks once every asset has settled (within the drain)")
    parser.add_argument("--watch-every", type=float, default=4.0, help="seconds between GETs of an unsettled asset")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--upload-timeout", type=float, default=600.0, help="seconds an upload may take, retries in")
    parser.add_argument("--start-timeout", type=float, default=420.0)
    parser.add_argument("--stop-timeout", type=float, default=120.0)
    parser.add_argument("--progress-every", type=float, default=30.0)
    parser.add_argument("--no-jitter", dest="jitter", action="store_false",
                        help="submit at fixed intervals instead of exponential gaps")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None,
                        help="parent of the run's work dir (default benchmarks/results/soak-work)")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args(argv)
    unknown = set(args.faults) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {sorted(unknown)}")
    if set(args.containers) - set(CONTAINERS):
        parser.error(f"containers are some of {','.join(CONTAINERS)}")
    if args.clip_min_seconds <= 0 or args.clip_max_seconds < args.clip_min_seconds:
        parser.error("--clip-min-seconds must be positive and at most --clip-max-seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    soak = Soak(args, console)
    result: dict[str, Any] | None = None
    try:
        result = soak.run()
    finally:
        stopped = soak.close()
        console.print(f"[dim]stopped kinoray up: {json.dumps(stopped)}[/]")
    result["server"]["final_stop"] = stopped
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    show(result, console)
    console.print(f"wrote {args.json} (work dir, server logs and media: {soak.work})")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
