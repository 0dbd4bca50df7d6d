"""What a hostile caller costs ``kinoray up``: a wrong-secret flood, huge request bodies, image amplification.

    .venv/bin/python benchmarks/abuse.py --start                          # launch `kinoray up` in a temp dir
    .venv/bin/python benchmarks/abuse.py --start --seconds 5 --body-mb 100 --images 80    # smoke
    .venv/bin/python benchmarks/abuse.py --url http://127.0.0.1:8000 --credentials DATA_DIR/credentials.json \\
        --pid PID_OF_KINORAY_UP --data-dir DATA_DIR

Sections (``--sections auth,bodies,images``, default all):

- **auth** — a legitimate client sends ``GET /video/v1/assets`` open-loop at ``--legit-rate`` (20/s) from
  127.0.0.1 with the right secret (verified once before, as a client that was already using the API), for
  ``--seconds`` alone, then for ``--seconds`` while a flooder in another process sends the same request on the
  same token id with a new wrong secret each time (so every one that gets through costs an scrypt) from
  127.0.0.2, closed loop on ``--flood-connections`` connections. Reported: the legitimate client's served share
  and p95 with and without the flood (ratios), the flood's answers by status, and 401s per second (each 401 is
  an scrypt check the server made; a 429 is one it refused to make).
- **bodies** — ``--bodies`` (4) concurrent unauthenticated ``POST /video/v1/assets`` with ``--body-mb`` (600) MB
  bodies, streamed from raw sockets, once with ``Content-Length`` and once chunked, at the edge port and at
  Serve's port (the API alone). Per case: RSS of the ``kinoray up`` process tree (every process under the pid we
  started, from ``/proc``) before, after and at its peak, and the largest growth of one process; the body bytes
  the client got into the connection before the answer (an upper bound of what the server read: the kernel's
  socket buffers on both sides hold a few MB); the time to the answer (413 expected).
- **images** — one ready asset (a small generated clip uploaded with tus, as ``kinoray up --demo`` does), then
  ``--images`` (200) distinct thumbnail URLs (time x width) from one client, ``--image-concurrency`` at once:
  answers by status and ``X-Image-Cache``, files and bytes stored under the asset's ``images/`` prefix on disk,
  and the CPU seconds of the edge's processes (``/proc`` stat deltas; the edge renders images).

Targets (the abuse issue): the legitimate client keeps >= 99 % served with its p95 within 2x of its p95 without
the flood; scrypt checks bounded by ``api.auth_failures_per_second`` (+ the burst); RSS growth from the bodies
well under one body (a few MB per connection at most), every one refused with 413; image renders and storage
bounded by ``KINORAY_IMAGES__*`` (at most ``client_render_burst`` + ``client_renders_per_second`` x t renders,
at most ``max_variants_per_asset`` files and ``max_bytes_per_asset`` bytes stored). Exit status 0 either way.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import platform
import secrets
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from _harness import (
    RESULTS,
    Target,
    add_target_arguments,
    answer_kind,
    basic_auth,
    cmdline,
    cpu_seconds,
    edge_pids,
    open_target,
    percentile,
    ready_asset,
    rss_mb,
    sample,
    stop_server,
    tree,
    write_json,
)
from api_latency import Endpoint, client_session, open_loop
from rich.console import Console
from rich.table import Table

LEGIT, FLOODER = "127.0.0.1", "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to loopback: two client addresses
TARGET_SERVED_SHARE = 0.99
TARGET_P95_RATIO = 2.0
BLOCK = 64 * 1024


# --- (a) a wrong-secret flood ----------------------------------------------------------------------------------


def _flood(url: str, path: str, token_id: str, connections: int, ready: Any, stop: Any, out: Any) -> None:
    """In a process of its own: ``connections`` closed loops of wrong secrets until ``stop`` is set."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> dict[str, Any]:
        kinds: Counter[str] = Counter()
        per_second: Counter[int] = Counter()
        latencies: list[float] = []
        async with client_session(None, connections, FLOODER) as session:
            t0 = time.perf_counter()

            async def loop() -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    headers = {"Authorization": basic_auth(token_id, secrets.token_urlsafe(24))}
                    try:
                        async with session.get(url + path, headers=headers,
                                               timeout=aiohttp.ClientTimeout(total=10)) as answer:
                            body = await answer.read()
                            kind = answer_kind(answer.status, body)
                    except TimeoutError:
                        kind = "timeout"
                    except aiohttp.ClientError as error:
                        kind = type(error).__name__
                        await asyncio.sleep(0.01)
                    done = time.perf_counter()
                    kinds[kind] += 1
                    latencies.append((done - started) * 1000)
                    if kind.startswith("401"):
                        per_second[int(done - t0)] += 1

            ready.set()
            await asyncio.gather(*(loop() for _ in range(connections)))
            seconds = time.perf_counter() - t0
        latencies.sort()
        return {"seconds": round(seconds, 2), "requests": sum(kinds.values()), "answers": dict(kinds),
                "requests_per_second": round(sum(kinds.values()) / seconds, 1),
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "scrypt_checks_per_second": [per_second.get(i, 0) for i in range(int(seconds) + 1)]}

    out.put(asyncio.run(main()))


async def _legit(target: Target, rate: float, seconds: float) -> Endpoint:
    endpoint = Endpoint("legit", "/video/v1/assets?limit=10")
    async with client_session(target.auth, 64, LEGIT) as session:
        await open_loop(session, target.url, [endpoint], rate, seconds, 10.0, [])
    return endpoint


def _legit_row(endpoint: Endpoint) -> dict[str, Any]:
    row = endpoint.summary()
    row["served_share"] = round(row["ok"] / row["requests"], 4) if row["requests"] else None
    return row


def auth_flood(target: Target, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    # The legitimate caller was using the API before the flood: its secret is verified (and remembered) now.
    asyncio.run(_legit(target, 5, 0.4))
    console.print(f"auth: legitimate {args.legit_rate:g} req/s alone for {args.seconds:g} s")
    alone = asyncio.run(_legit(target, args.legit_rate, args.seconds))
    context = multiprocessing.get_context("spawn")
    ready, stop, out = context.Event(), context.Event(), context.Queue()
    flooder = context.Process(target=_flood, args=(target.url, "/video/v1/assets?limit=10", target.auth[0],
                                                   args.flood_connections, ready, stop, out), daemon=True)
    flooder.start()
    if not ready.wait(60):
        flooder.kill()
        raise SystemExit("the flooding process did not start")
    time.sleep(1.0)  # let the flood reach its pace: the first second spends the failure buckets' burst
    console.print(f"auth: legitimate {args.legit_rate:g} req/s for {args.seconds:g} s during a flood from "
                  f"{FLOODER} ({args.flood_connections} connections)")
    during = asyncio.run(_legit(target, args.legit_rate, args.seconds))
    stop.set()
    flood = out.get(timeout=60)
    flooder.join(30)
    a, b = _legit_row(alone), _legit_row(during)
    served_ratio = b["served_share"] / a["served_share"] if a["served_share"] else None
    p95_ratio = b["p95_ms"] / a["p95_ms"] if a["p95_ms"] and b["p95_ms"] else None
    checks = flood["scrypt_checks_per_second"]
    steady = checks[2:-1] or checks  # past the burst, without the partial last second
    return {
        "legit_alone": a, "legit_during_flood": b, "flood": flood,
        "served_ratio": round(served_ratio, 3) if served_ratio is not None else None,
        "p95_ratio": round(p95_ratio, 2) if p95_ratio is not None else None,
        "scrypt_checks_total": sum(checks),
        "scrypt_checks_per_second_steady": round(sum(steady) / len(steady), 2) if steady else None,
        "targets": {"served_share_ge_0.99": (b["served_share"] or 0) >= TARGET_SERVED_SHARE,
                    "p95_within_2x": p95_ratio is not None and p95_ratio <= TARGET_P95_RATIO},
    }


# --- (b) huge bodies ---------------------------------------------------------------------------------------


def _send_body(host: str, port: int, total: int, chunked: bool, timeout: float) -> dict[str, Any]:
    """POST ``total`` body bytes (or until the server answers) from a raw socket; what came back and when."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (f"POST /video/v1/assets HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n").encode()
    block = b" " * BLOCK
    piece = (f"{BLOCK:x}\r\n".encode() + block + b"\r\n") if chunked else block
    result: dict[str, Any] = {"status": None, "kind": None, "error": None, "body_bytes_sent": 0,
                              "answer_s": None}
    received = b""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as error:
        return {**result, "error": type(error).__name__}
    try:
        sock.sendall(head)
        sock.setblocking(False)
        pending = b""
        finished = False
        while time.perf_counter() < deadline:
            wanting = [sock] if not finished else []
            readable, writable, _ = select.select([sock], wanting, [], 0.5)
            if readable:
                data = sock.recv(1 << 16)
                if not data:
                    result["error"] = result["error"] or "closed without an answer"
                    break
                received += data
                if b"\r\n\r\n" in received:
                    break
                continue
            if writable:
                if not pending:
                    if result["body_bytes_sent"] >= total:
                        pending, finished = (b"0\r\n\r\n" if chunked else b""), True
                    else:
                        pending = piece
                try:
                    sent = sock.send(pending) if pending else 0
                except (BrokenPipeError, ConnectionResetError) as error:
                    result["error"] = type(error).__name__
                    finished = True
                    continue
                pending = pending[sent:]
                result["body_bytes_sent"] += sent
        else:
            result["error"] = result["error"] or "timeout"
        if received:
            result["answer_s"] = round(time.perf_counter() - t0, 3)
            # the rest of a short answer (Content-Length) for its typed error
            sock.setblocking(True)
            sock.settimeout(2)
            try:
                while len(received) < 1 << 16:
                    data = sock.recv(1 << 16)
                    if not data:
                        break
                    received += data
                    header, _, body = received.partition(b"\r\n\r\n")
                    length = [line.split(b":", 1)[1] for line in header.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(body) >= int(length[0]):
                        break
            except OSError:
                pass
    except OSError as error:
        result["error"] = type(error).__name__
    finally:
        sock.close()
    if received:
        status_line = received.split(b"\r\n", 1)[0].split()
        result["status"] = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
        body = received.partition(b"\r\n\r\n")[2]
        result["kind"] = answer_kind(result["status"] or 0, body) if result["status"] else None
    return result


class TreeSampler:
    """RSS of the process tree under ``root`` every ``interval`` s, in a thread: before, peak, per process."""

    def __init__(self, root: int | None, interval: float = 0.2) -> None:
        self.root, self.interval = root, interval
        self.samples: list[dict[int, tuple[float, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self) -> dict[int, tuple[float, int]]:
        return sample(tree(self.root)) if self.root is not None else {}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.snapshot())

    def __enter__(self) -> TreeSampler:
        self.before = self.snapshot()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, after: dict[int, tuple[float, int]]) -> dict[str, Any] | None:
        if self.root is None:
            return None
        every = [self.before, *self.samples, after]
        growth, grown = max(((rss - self.before[pid][1], pid) for snap in every for pid, (_, rss) in snap.items()
                             if pid in self.before), default=(0, None))
        return {"rss_before_mb": round(rss_mb(self.before), 1), "rss_after_mb": round(rss_mb(after), 1),
                "rss_peak_mb": round(max(rss_mb(snap) for snap in every), 1),
                "largest_process_growth_mb": round(growth / 1e6, 1),
                "largest_growth_process": cmdline(grown)[:120] if grown is not None else None,
                "processes": len(self.before)}


def huge_bodies(target: Target, args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    total = int(args.body_mb * 1e6)
    rows = []
    ports = [("edge", target.url)] + ([("api", target.api_url)] if target.api_url else [])
    for where, url in ports:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        for chunked in (False, True):
            framing = "chunked" if chunked else "Content-Length"
            console.print(f"bodies: {args.bodies} x {args.body_mb:g} MB POST, {framing}, at the {where} port")
            with TreeSampler(target.pid) as sampler:
                with ThreadPoolExecutor(args.bodies) as pool:
                    send = functools.partial(_send_body, host, port, total, chunked, args.body_timeout)
                    answers = [future.result() for future in [pool.submit(send) for _ in range(args.bodies)]]
                time.sleep(1.0)  # what the server still holds a moment after
            memory = sampler.report(sampler.snapshot())
            kinds = Counter(answer["kind"] or answer["error"] or "none" for answer in answers)
            sent = sorted(answer["body_bytes_sent"] for answer in answers)
            times = sorted(answer["answer_s"] for answer in answers if answer["answer_s"] is not None)
            rows.append({"port": where, "framing": framing, "bodies": args.bodies, "body_bytes": total,
                         "answers": dict(kinds), "sent_bytes_max": sent[-1], "sent_bytes_min": sent[0],
                         "answer_s_max": times[-1] if times else None, "answer_s_min": times[0] if times else None,
                         "errors": [answer["error"] for answer in answers if answer["error"]],
                         "memory": memory,
                         "refused_all_413": all((answer["kind"] or "").startswith("413") for answer in answers)})
    return rows


# --- (c) image amplification ---------------------------------------------------------------------------------


def _stored(directory: Path | None) -> dict[str, Any] | None:
    if directory is None:
        return None
    files = [path for path in directory.rglob("*") if path.is_file()] if directory.exists() else []
    return {"path": str(directory), "files": len(files), "bytes": sum(path.stat().st_size for path in files)}


async def _thumbnails(url: str, playback_id: str, duration: float, count: int,
                      concurrency: int) -> list[dict[str, Any]]:
    widths = [120, 160, 200, 240, 320, 480, 640, 960]
    times = max(1, -(-count // len(widths)))
    urls = [f"{url}/{playback_id}/thumbnail.jpg?time={round((i // len(widths)) * duration / times, 3)}"
            f"&width={widths[i % len(widths)]}" for i in range(count)]
    answers: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(concurrency)
    async with client_session(None, concurrency, LEGIT) as session:

        async def one(address: str) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    async with session.get(address, timeout=aiohttp.ClientTimeout(total=120)) as answer:
                        body = await answer.read()
                        kind = "200" if answer.status == 200 else answer_kind(answer.status, body)
                        cache = answer.headers.get("X-Image-Cache", "-")
                except (TimeoutError, aiohttp.ClientError) as error:
                    kind, cache, body = type(error).__name__, "-", b""
                answers.append({"kind": kind, "cache": cache, "bytes": len(body),
                                "ms": round((time.perf_counter() - started) * 1000, 1)})

        await asyncio.gather(*(one(address) for address in urls))
    return answers


def image_amplification(target: Target, args: argparse.Namespace, work: Path,
                        console: Console) -> dict[str, Any]:
    console.print("images: uploading a small clip (tus) and waiting until it is ready")
    asset = ready_asset(target, work, console)
    playback_id = asset["playback_ids"][0]["id"]
    images = target.data_dir / "storage" / "assets" / asset["id"] / "images" if target.data_dir else None
    edge = edge_pids(target.pid) if target.pid is not None else []
    before, stored_before = sample(edge), _stored(images)
    console.print(f"images: {args.images} distinct thumbnails of {playback_id}, {args.image_concurrency} at once")
    t0 = time.perf_counter()
    answers = asyncio.run(_thumbnails(target.url, playback_id, float(asset["duration"]), args.images,
                                      args.image_concurrency))
    seconds = time.perf_counter() - t0
    after = sample(edge)
    by = Counter(f"{answer['kind']} {answer['cache']}" for answer in answers)
    rendered = [answer["ms"] for answer in answers if answer["cache"] in ("miss", "bypass")]
    return {"asset_id": asset["id"], "playback_id": playback_id, "duration_s": asset["duration"],
            "requests": len(answers), "seconds": round(seconds, 2), "answers": dict(sorted(by.items())),
            "renders": len(rendered), "render_ms_p50": percentile(sorted(rendered), 50),
            "bytes_served": sum(answer["bytes"] for answer in answers),
            "stored_before": stored_before, "stored_after": _stored(images),
            "edge_processes": len(edge), "edge_cpu_s": round(cpu_seconds(before, after), 2) if edge else None}


# --- report --------------------------------------------------------------------------------------------------


def show(result: dict[str, Any], console: Console) -> None:
    auth = result.get("auth")
    if auth:
        table = Table(title=f"(a) wrong-secret flood from {FLOODER} on the token id vs a legitimate client "
                            f"({LEGIT}, open loop)")
        for column in ("legitimate client", "requests", "served", "p50 ms", "p95 ms", "p99 ms", "errors"):
            table.add_column(column, justify="left" if column == "legitimate client" else "right")
        for name, row in (("alone", auth["legit_alone"]), ("during the flood", auth["legit_during_flood"])):
            table.add_row(name, str(row["requests"]), f"{row['served_share']:.1%}", str(row["p50_ms"]),
                          str(row["p95_ms"]), str(row["p99_ms"]),
                          ", ".join(f"{k}×{n}" for k, n in row["errors"].items()) or "0")
        console.print(table)
        flood = auth["flood"]
        console.print(f"flood: {flood['requests']} requests in {flood['seconds']} s ({flood['requests_per_second']} "
                      f"req/s, p50 {flood['p50_ms']} ms), answers "
                      + ", ".join(f"{k}×{n}" for k, n in sorted(flood["answers"].items())))
        console.print(f"scrypt checks (401s) per second: {flood['scrypt_checks_per_second']} → steady "
                      f"{auth['scrypt_checks_per_second_steady']}/s, {auth['scrypt_checks_total']} in all")
        console.print(f"legitimate served ratio (flood/alone) {auth['served_ratio']}, p95 ratio {auth['p95_ratio']}; "
                      f"targets {auth['targets']}")
    bodies = result.get("bodies")
    if bodies:
        table = Table(title="(b) concurrent unauthenticated huge POST bodies (raw sockets)")
        for column in ("port", "framing", "answers", "body MB sent (min-max)", "answer s (min-max)",
                       "RSS MB before", "peak", "after", "1-process growth MB", "errors"):
            table.add_column(column, justify="left" if column in ("port", "framing", "answers", "errors") else "right")
        for row in bodies:
            memory = row["memory"] or {}
            table.add_row(row["port"], row["framing"], ", ".join(f"{k}×{n}" for k, n in row["answers"].items()),
                          f"{row['sent_bytes_min'] / 1e6:.1f}-{row['sent_bytes_max'] / 1e6:.1f}",
                          f"{row['answer_s_min']}-{row['answer_s_max']}", str(memory.get("rss_before_mb")),
                          str(memory.get("rss_peak_mb")), str(memory.get("rss_after_mb")),
                          str(memory.get("largest_process_growth_mb")), ", ".join(sorted(set(row["errors"]))) or "-")
        table.caption = (f"{bodies[0]['bodies']} bodies of {bodies[0]['body_bytes'] / 1e6:g} MB each; 'sent' is what the "
                         "client got into the connection before the answer (kernel socket buffers included)")
        console.print(table)
        for row in bodies:
            memory = row["memory"] or {}
            if (memory.get("largest_process_growth_mb") or 0) >= 5:
                console.print(f"{row['port']} {row['framing']}: the largest growth, "
                              f"{memory['largest_process_growth_mb']} MB, was {memory['largest_growth_process']}")
    images = result.get("images")
    if images:
        table = Table(title=f"(c) {images['requests']} distinct thumbnails of one asset from one client")
        for column in ("answer (status X-Image-Cache)", "count"):
            table.add_column(column, justify="left" if column.startswith("answer") else "right")
        for kind, n in images["answers"].items():
            table.add_row(kind, str(n))
        console.print(table)
        stored = images["stored_after"] or {}
        console.print(f"in {images['seconds']} s: {images['renders']} renders (p50 {images['render_ms_p50']} ms), "
                      f"stored {stored.get('files')} files / {stored.get('bytes')} bytes under "
                      f"{stored.get('path')}; edge CPU {images['edge_cpu_s']} s over {images['edge_processes']} "
                      f"processes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser)
    parser.add_argument("--api-url", help="with --url: Serve's port (the API alone), for the bodies section")
    parser.add_argument("--pid", type=int, help="with --url: the pid of `kinoray up` (RSS and CPU of its tree)")
    parser.add_argument("--data-dir", type=Path, help="with --url: its data dir (stored images on disk)")
    parser.add_argument("--sections", default="auth,bodies,images")
    parser.add_argument("--seconds", type=float, default=20.0, help="auth: each phase (alone, during the flood)")
    parser.add_argument("--legit-rate", type=float, default=20.0)
    parser.add_argument("--flood-connections", type=int, default=128)
    parser.add_argument("--bodies", type=int, default=4)
    parser.add_argument("--body-mb", type=float, default=600.0)
    parser.add_argument("--body-timeout", type=float, default=90.0, help="seconds per body before giving up")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--image-concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, default=RESULTS / "abuse.json")
    parser.add_argument("--keep-logs", action="store_true",
                        help="with --start: copy kinoray's logs (edge.log, kinoray-up.log) next to the JSON")
    args = parser.parse_args(argv)
    args.sections = [part.strip() for part in args.sections.split(",") if part.strip()]
    unknown = set(args.sections) - {"auth", "bodies", "images"}
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=170)
    result: dict[str, Any] = {"benchmark": "abuse", "when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "loadavg_before": os.getloadavg()},
                              "config": {key: (str(value) if isinstance(value, Path) else value)
                                         for key, value in vars(args).items() if key != "token_secret"}}
    target = None
    with tempfile.TemporaryDirectory(prefix="kinoray-abuse-") as temp:
        try:
            target = open_target(args, Path(temp), console)
            result["url"], result["api_url"] = target.url, target.api_url
            if "auth" in args.sections:
                result["auth"] = auth_flood(target, args, console)
            if "bodies" in args.sections:
                result["bodies"] = huge_bodies(target, args, console)
            if "images" in args.sections:
                result["images"] = image_amplification(target, args, Path(temp), console)
        finally:
            if target is not None:
                stop_server(target.process)
                if target.process is not None and args.keep_logs:
                    keep = args.json.parent / "abuse-logs"
                    keep.mkdir(parents=True, exist_ok=True)
                    for log in Path(temp).glob("*.log"):
                        shutil.copy(log, keep / log.name)
                    console.print(f"kinoray's logs: {keep}")
    result["machine"]["loadavg_after"] = os.getloadavg()
    show(result, console)
    write_json(result, args.json, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
