"""What the API benchmarks share: a ``kinoray up`` of their own (``--start``) or the address and token of a
running one, percentiles, typed-error classification, a ready asset, and CPU/RSS of a process tree read from
``/proc``. Imported by ``api_latency.py``, ``abuse.py`` and ``delivery.py`` (run as scripts from this folder, so
``benchmarks/`` is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 2)


def basic_auth(token_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{token_id}:{secret}".encode()).decode()


def answer_kind(status: int, body: bytes) -> str:
    """``"503 over_capacity"`` for kinoray's typed errors (``{"error": {"type": ...}}``), the bare status
    otherwise (``"503"``: Serve's plain-text refusal)."""
    try:
        kind = json.loads(body)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return str(status)
    return f"{status} {kind}" if isinstance(kind, str) else str(status)


def write_json(result: dict[str, Any], path: Path, console: Console) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path}")


# --- a server of our own, or one given ---------------------------------------------------------------------


@dataclass
class Target:
    """The server a benchmark runs against: ``url`` (the edge for ``kinoray up``), ``api_url`` (Serve's proxy,
    the API alone), the token, and when we started it the process and its data dir."""

    url: str
    api_url: str | None
    auth: tuple[str, str]
    process: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None
    root: int | None = None  # the pid of a `kinoray up` we did not start (its process tree is the server)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self.root


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="base URL of a running kinoray (default http://127.0.0.1:8000)")
    where.add_argument("--start", action="store_true", help="launch `kinoray up` in a temporary data dir")
    parser.add_argument("--token-id")
    parser.add_argument("--token-secret")
    parser.add_argument("--credentials", type=Path, help="a credentials.json written by `kinoray up`")


def open_target(args: argparse.Namespace, temp: Path, console: Console,
                env: Mapping[str, str] | None = None) -> Target:
    """``--start``: ``kinoray up`` in ``temp`` (with ``env`` on top of :func:`start_server`'s); else the
    ``--url``/``--credentials``/``--token-*`` given. ``SystemExit`` without a token."""
    if args.start:
        return start_server(temp, console, env=env)
    saved = json.loads(args.credentials.read_text()) if args.credentials else {}
    base = (args.url or saved.get("url") or "http://127.0.0.1:8000").rstrip("/")
    token_id, secret = args.token_id or saved.get("token_id"), args.token_secret or saved.get("token_secret")
    if not (token_id and secret):
        raise SystemExit("give --token-id and --token-secret, --credentials, or --start")
    return Target(base, getattr(args, "api_url", None), (token_id, secret), data_dir=getattr(args, "data_dir", None),
                  root=getattr(args, "pid", None))


def start_server(data_dir: Path, console: Console, timeout: float = 240.0,
                 env: Mapping[str, str] | None = None) -> Target:
    """``kinoray up`` in ``data_dir`` (edge and Serve on two free ports) with rate limits out of the way. It runs
    in ``data_dir``, not in this directory: ``python -m`` puts its working directory first on ``sys.path`` (and
    Ray hands the driver's path to its workers), so started in a checkout it would serve that checkout's code
    whatever ``PYTHONPATH`` says. The code served is ``PYTHONPATH``'s, else this benchmark's checkout."""
    data_dir = data_dir.resolve()
    port, api_port = free_port(), free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("KINORAY_")}
    environment.pop("RAY_ADDRESS", None)  # a local Ray of its own, not whatever cluster this shell points at
    environment.setdefault("PYTHONPATH", str(ROOT))
    environment.update(KINORAY_API__RATE_LIMIT_PER_SECOND="1000000", KINORAY_API__RATE_LIMIT_BURST="1000000",
                       KINORAY_API__ALLOW_PRIVATE_INPUTS="true", KINORAY_LOG_LEVEL="WARNING", **(env or {}))
    log = (data_dir / "kinoray-up.log").open("wb")
    command = [sys.executable, "-m", "kinoray.cli", "up", "--host", "127.0.0.1", "--port", str(port),
               "--api-port", str(api_port), "--rtmp-port", str(free_port()), "--data-dir", str(data_dir)]
    console.print(f"starting: {' '.join(command)} (log: {log.name})")
    # Its own process group, so that stop_server can end the Ray processes it started if it exits uncleanly.
    process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=data_dir)
    credentials = data_dir / "credentials.json"
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"kinoray up exited with {process.returncode}; see {log.name}")
        if credentials.exists():
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        saved = json.loads(credentials.read_text())
                        return Target(url, f"http://127.0.0.1:{api_port}",
                                      (saved["token_id"], saved["token_secret"]), process, data_dir)
            except (OSError, json.JSONDecodeError):
                pass
        if time.monotonic() > deadline:
            stop_server(process)
            raise SystemExit(f"kinoray up did not answer within {timeout:.0f} s; see {log.name}")
        time.sleep(0.5)


def stop_server(process: subprocess.Popen[bytes] | None) -> None:
    """Ctrl-C to ``kinoray up`` (it shuts Serve and its Ray down; Ray's own SIGTERM handler would kill the
    driver before that), then SIGKILL to whatever is left of its process group."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


# --- a ready asset -------------------------------------------------------------------------------------------


def ready_asset(target: Target, work: Path, console: Console, *, seconds: float = 6, width: int = 640,
                height: int = 360) -> dict[str, Any]:
    """A ready asset with a public playback id: a small generated clip uploaded with tus and transcoded by the
    server (``kinoray up --demo``'s :func:`kinoray.serve.launch.demo_upload`, on our own clip)."""
    sys.path.insert(0, str(ROOT))
    from kinoray.media.synthetic import generate_clip
    from kinoray.serve.launch import demo_upload

    source = work / "demo" / "source.mp4"  # where demo_upload looks first
    source.parent.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        generate_clip(source, width=width, height=height, fps=30, seconds=seconds)
    asset = demo_upload(target.url, target.auth, work, console)
    if asset["status"] != "ready":
        raise SystemExit(f"the benchmark asset did not become ready: {asset.get('errors')}")
    return asset


def first_segment_url(base: str, playback_id: str) -> str:
    """The first media segment of the first video rendition listed in the HLS master of ``playback_id``."""
    def lines(url: str) -> list[str]:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return [line.strip() for line in answer.read().decode().splitlines() if line.strip()]

    master = f"{base}/{playback_id}.m3u8"
    variants = [line for line in lines(master) if not line.startswith("#")]
    media = urllib.parse.urljoin(master, variants[0])
    segments = [line for line in lines(media) if not line.startswith("#")]
    return re.sub(r"\?.*$", "", urllib.parse.urljoin(media, segments[0]))


# --- a process tree, from /proc ----------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it (parent links read from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def edge_pids(root: int) -> list[int]:
    """The delivery edge (``kinoray edge``: Granian's main process and its workers) under ``root``."""
    for pid in tree(root):
        if "kinoray.cli edge" in cmdline(pid):
            return tree(pid)
    return []


def sample(pids: Iterable[int]) -> dict[int, tuple[float, int]]:
    """``{pid: (CPU seconds, RSS bytes)}`` of those still alive."""
    out = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            out[pid] = ((int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[21]) * PAGE_SIZE)
    return out


def cpu_seconds(before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]]) -> float:
    """CPU the processes in ``after`` used since ``before`` (a process new in ``after`` counts from 0)."""
    return sum(cpu - before.get(pid, (0.0, 0))[0] for pid, (cpu, _) in after.items())


def rss_mb(snapshot: dict[int, tuple[float, int]]) -> float:
    return sum(rss for _, rss in snapshot.values()) / 1e6
