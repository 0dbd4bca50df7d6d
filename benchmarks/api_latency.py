"""API latency under a fixed open-loop load: ``GET /video/v1/assets/{id}`` and ``GET /video/v1/assets``.

    .venv/bin/python benchmarks/api_latency.py --start                        # launch `kinoray up` in a temp dir
    .venv/bin/python benchmarks/api_latency.py --url http://127.0.0.1:8000 --token-id=ID --token-secret=SECRET
    .venv/bin/python benchmarks/api_latency.py --url ... --credentials DATA_DIR/credentials.json --rate 200

Requests are sent on a fixed schedule (``--rate`` per second in all, alternating between the two endpoints,
for ``--seconds``) whatever the server's answers: request *i* is due at ``t0 + i / rate`` and its latency is
measured from that due time, not from when it was actually sent, so a slow server cannot slow the load down and
hide its own queueing (coordinated omission). One keep-alive connection pool (aiohttp) carries the load. A
warm-up (``--warmup-seconds`` at the same rate) runs first and is discarded.

Percentiles are over successful (2xx) answers; everything else is an error, by kind (``429``, ``timeout``,
``ConnectionError`` ...). 429s mean the server's rate limit is below ``--rate``: ``--start`` raises it, for a
server of your own set ``KINORAY_API__RATE_LIMIT_PER_SECOND`` and ``KINORAY_API__RATE_LIMIT_BURST``.
``client_lag`` is how late the client itself started requests (the client's own CPU); when it is high, the
numbers measure the client, not the server.

Assets read: ``--asset-id`` (repeatable), else up to ``--assets`` existing ones, else that many created with
``POST /video/v1/assets`` from ``--input-url`` (the runner will error them since nothing serves that URL; the
GETs do not care). ``--start`` allows private input URLs so that works.

Target: p95 < 20 ms for each endpoint. Exit status 0 either way (1 only when the run itself failed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_P95_MS = 20.0
DEFAULT_INPUT_URL = "http://127.0.0.1:9/kinoray-benchmark-input.mp4"  # the discard port: nothing answers


@dataclass
class Endpoint:
    name: str
    path: str
    latencies_ms: list[float] = field(default_factory=list)  # successful answers, from the due time
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    first_due: float = math.inf
    last_due: float = 0.0
    last_ok: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok = sorted(self.latencies_ms)
        ok_span = self.last_ok - self.first_due
        return {
            "path": self.path,
            "requests": self.sent,
            "ok": len(ok),
            "errors": dict(sorted(self.errors.items())),
            "error_count": sum(self.errors.values()),
            "offered_rps": round((self.sent - 1) / (self.last_due - self.first_due), 1) if self.sent > 1 else None,
            "achieved_rps": round(len(ok) / ok_span, 1) if ok and ok_span > 0 else None,
            "p50_ms": percentile(ok, 50),
            "p95_ms": percentile(ok, 95),
            "p99_ms": percentile(ok, 99),
            "max_ms": round(ok[-1], 2) if ok else None,
            "mean_ms": round(sum(ok) / len(ok), 2) if ok else None,
        }


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 2)


# --- the load ----------------------------------------------------------------------------------------------


async def _one(session: aiohttp.ClientSession, base: str, endpoint: Endpoint, due: float, timeout: float,
               lags: list[float] | None) -> None:
    started = time.perf_counter()
    if lags is not None:
        lags.append((started - due) * 1000)
    try:
        async with session.get(base + endpoint.path, timeout=aiohttp.ClientTimeout(total=timeout)) as answer:
            await answer.read()
            status = answer.status
    except TimeoutError:
        status, kind = None, "timeout"
    except aiohttp.ClientError as error:
        status, kind = None, type(error).__name__
    done = time.perf_counter()
    if lags is None:  # warm-up
        return
    if status is not None and 200 <= status < 300:
        endpoint.last_ok = max(endpoint.last_ok, done)
        endpoint.latencies_ms.append((done - due) * 1000)
    else:
        kind = str(status) if status is not None else kind
        endpoint.errors[kind] = endpoint.errors.get(kind, 0) + 1


async def open_loop(session: aiohttp.ClientSession, base: str, endpoints: list[Endpoint], rate: float,
                    seconds: float, timeout: float, lags: list[float] | None) -> None:
    """Start request i at t0 + i/rate (round-robin over ``endpoints``) without waiting for earlier answers."""
    count = max(1, round(rate * seconds))
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter() + 0.05
    for i in range(count):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        endpoint = endpoints[i % len(endpoints)]
        if lags is not None:
            endpoint.sent += 1
            endpoint.first_due = min(endpoint.first_due, due)
            endpoint.last_due = due
        tasks.append(asyncio.create_task(_one(session, base, endpoint, due, timeout, lags)))
    await asyncio.gather(*tasks)


async def prepare_assets(session: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> list[str]:
    if args.asset_id:
        return list(args.asset_id)
    async with session.get(f"{base}/video/v1/assets", params={"limit": str(args.assets)}) as answer:
        answer.raise_for_status()
        ids = [asset["id"] for asset in (await answer.json())["data"]]
    while len(ids) < args.assets:
        body = {"inputs": [{"url": args.input_url}], "playback_policies": ["public"],
                "passthrough": "api_latency benchmark"}
        async with session.post(f"{base}/video/v1/assets", json=body) as answer:
            payload = await answer.json()
            if answer.status != 201:
                raise SystemExit(f"cannot create a benchmark asset ({answer.status}: {payload}); pass --asset-id, "
                                 "or --input-url with a URL the server accepts")
            ids.append(payload["data"]["id"])
    return ids


async def run(base: str, auth: tuple[str, str], args: argparse.Namespace) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=args.connections, keepalive_timeout=60)
    credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        asset_ids = await prepare_assets(session, base, args)
        endpoints = [Endpoint("asset", f"/video/v1/assets/{asset_ids[0]}"), Endpoint("list", "/video/v1/assets")]
        if args.warmup_seconds > 0:
            warm = [Endpoint(e.name, e.path) for e in endpoints]
            await open_loop(session, base, warm, args.rate, args.warmup_seconds, args.timeout, None)
        lags: list[float] = []
        cpu0, wall0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()
        await open_loop(session, base, endpoints, args.rate, args.seconds, args.timeout, lags)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    every = Endpoint("all", "both")
    for endpoint in endpoints:
        every.latencies_ms += endpoint.latencies_ms
        every.sent += endpoint.sent
        every.first_due = min(every.first_due, endpoint.first_due)
        every.last_due = max(every.last_due, endpoint.last_due)
        every.last_ok = max(every.last_ok, endpoint.last_ok)
        for kind, n in endpoint.errors.items():
            every.errors[kind] = every.errors.get(kind, 0) + n
    summaries = {e.name: e.summary() for e in [*endpoints, every]}
    lags.sort()
    passed = all(summaries[e.name]["p95_ms"] is not None and summaries[e.name]["p95_ms"] < TARGET_P95_MS
                 and summaries[e.name]["error_count"] == 0 for e in endpoints)
    return {
        "benchmark": "api_latency",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": base,
        "config": {"rate": args.rate, "seconds": args.seconds, "warmup_seconds": args.warmup_seconds,
                   "connections": args.connections, "timeout_s": args.timeout, "assets": asset_ids,
                   "started_server": bool(args.start)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_before": load0,
                    "loadavg_after": os.getloadavg()},
        "client": {"cpu_s": round(cpu, 2), "cpu_share": round(cpu / wall, 3),
                   "lag_p50_ms": percentile(lags, 50), "lag_p99_ms": percentile(lags, 99),
                   "lag_max_ms": round(lags[-1], 2) if lags else None},
        "endpoints": summaries,
        "target": {"p95_ms": TARGET_P95_MS, "pass": passed,
                   "rule": "p95 < target and no errors, for each endpoint"},
        "definitions": {
            "latency": "from the request's scheduled send time (t0 + i/rate) to the last byte of its answer",
            "offered_rps": "requests scheduled per second (the schedule, whatever the server did)",
            "achieved_rps": "successful answers / (last successful answer - first due time)",
            "client lag": "how late the client started a request relative to its schedule",
        },
    }


def show(result: dict[str, Any], console: Console) -> None:
    config = result["config"]
    table = Table(title=f"API latency — {config['rate']:g} req/s open-loop for {config['seconds']:g} s "
                        f"({result['url']})")
    for column in ("endpoint", "requests", "ok", "errors", "offered req/s", "achieved req/s", "p50 ms", "p95 ms",
                   "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for name, row in result["endpoints"].items():
        errors = ", ".join(f"{kind}×{n}" for kind, n in row["errors"].items()) or "0"
        table.add_row(name, str(row["requests"]), str(row["ok"]), errors,
                      *(f"{row[key]}" for key in ("offered_rps", "achieved_rps", "p50_ms", "p95_ms", "p99_ms",
                                                  "max_ms")))
    table.caption = "  ".join(f"{name}: GET {row['path']}" for name, row in result["endpoints"].items()
                              if name != "all")
    console.print(table)
    client = result["client"]
    console.print(f"client: {client['cpu_share'] * 100:.0f} % of a core, start lag p99 {client['lag_p99_ms']} ms "
                  f"(max {client['lag_max_ms']} ms); load average {result['machine']['loadavg_after'][0]:.2f} "
                  f"on {result['machine']['cpus']} CPUs")
    verdict = "[bold green]PASS[/]" if result["target"]["pass"] else "[bold red]FAIL[/]"
    console.print(f"target p95 < {TARGET_P95_MS:g} ms with no errors, each endpoint: {verdict}")
    if any("429" in row["errors"] for row in result["endpoints"].values()):
        console.print("[yellow]429s: the server's rate limit is below --rate (set KINORAY_API__RATE_LIMIT_PER_SECOND "
                      "and KINORAY_API__RATE_LIMIT_BURST on the server)[/]")


# --- a server of our own -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, console: Console, timeout: float = 240.0) -> tuple[subprocess.Popen[bytes], dict]:
    """``kinoray up`` in ``data_dir`` with rate limits out of the way; returns it and its credentials."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("KINORAY_")}
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own, not whatever cluster this shell points at
    env.update(KINORAY_API__RATE_LIMIT_PER_SECOND="1000000", KINORAY_API__RATE_LIMIT_BURST="1000000",
               KINORAY_API__ALLOW_PRIVATE_INPUTS="true", KINORAY_LOG_LEVEL="WARNING")
    log = (data_dir / "kinoray-up.log").open("wb")
    command = [sys.executable, "-m", "kinoray.cli", "up", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir)]
    console.print(f"starting: {' '.join(command)} (log: {log.name})")
    # Its own process group, so that stop_server can end the Ray processes it started if it exits uncleanly.
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    credentials = data_dir / "credentials.json"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"kinoray up exited with {process.returncode}; see {log.name}")
        if credentials.exists():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        saved = json.loads(credentials.read_text())
                        saved["url"] = f"http://127.0.0.1:{port}"
                        return process, saved
            except (OSError, json.JSONDecodeError):
                pass
        if time.monotonic() > deadline:
            stop_server(process)
            raise SystemExit(f"kinoray up did not answer within {timeout:.0f} s; see {log.name}")
        time.sleep(0.5)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to ``kinoray up`` (it shuts Serve and its Ray down; Ray's own SIGTERM handler would kill the
    driver before that), then SIGKILL to whatever is left of its process group."""
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


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="base URL of a running API (default http://127.0.0.1:8000)")
    where.add_argument("--start", action="store_true", help="launch `kinoray up` in a temporary data dir")
    parser.add_argument("--token-id")
    parser.add_argument("--token-secret")
    parser.add_argument("--credentials", type=Path, help="a credentials.json written by `kinoray up`")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second, both endpoints together")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=256, help="most open keep-alive connections")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds (then an error)")
    parser.add_argument("--asset-id", action="append", help="an existing asset to GET (else found or created)")
    parser.add_argument("--assets", type=int, default=3, help="assets to find or create")
    parser.add_argument("--input-url", default=DEFAULT_INPUT_URL, help="input URL of created assets")
    parser.add_argument("--json", type=Path, default=RESULTS / "api_latency.json")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=140)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    server = None
    with tempfile.TemporaryDirectory(prefix="kinoray-bench-") as temp:
        try:
            if args.start:
                server, saved = start_server(Path(temp), console)
                base, auth = saved["url"], (saved["token_id"], saved["token_secret"])
            else:
                saved = json.loads(args.credentials.read_text()) if args.credentials else {}
                base = (args.url or saved.get("url") or "http://127.0.0.1:8000").rstrip("/")
                token_id, secret = args.token_id or saved.get("token_id"), args.token_secret or saved.get("token_secret")
                if not (token_id and secret):
                    console.print("[red]give --token-id and --token-secret, --credentials, or --start[/]")
                    return 1
                auth = (token_id, secret)
            result = asyncio.run(run(base, auth, args))
        finally:
            if server is not None:
                stop_server(server)
    show(result, console)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
