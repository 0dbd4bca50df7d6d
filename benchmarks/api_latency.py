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

**Rate sweep** (``--rates 50,100,200,400,800``): the same load at each rate for ``--seconds`` (default 20), the
steps back to back on one schedule, after a baseline probe (``--probe-rate`` for ``--probe-seconds``) and
followed at once by the same probe for ``--recovery-seconds``. Per step: offered rate, goodput (2xx answers per
second of schedule), p50/p95/p99 of the 2xx latencies (from the due time), the refusals by kind (typed
``503 over_capacity``, Serve's plain-text ``503``, ``429``, ``413``) and timeouts / connection errors, by the
due time of the request. Criteria (the load-shedding issue):

- p95 < 20 ms at 200 req/s;
- goodput at the top rate >= 90 % of the best goodput of any step, the rest refused with a typed error, none
  timed out or cut;
- recovery < 5 s: from the end of the top step until the probe's answers are all 2xx with p95 under twice the
  baseline probe's p95, in 3 consecutive 1 s windows (by due time; the first of them counts).

``--edge-load`` runs ``delivery.py``'s ``wrk`` (64 connections) on a media segment of a ready asset (uploaded
first) through the edge for the whole sweep and reports its req/s. ``wrk`` stands in for viewers on other
machines, so it runs on the CPUs ``kinoray up`` confined the edge to (``edge.cpus``) at the edge's niceness:
generating the load must not take CPU from the API that real viewers would not. ``--api-direct`` (with ``--start``) sends the API load
to Serve's port (where API clients go: Mux's API host is not its stream host) instead of through the edge, one
``X-Forwarded-For`` per simulated client as the load balancer in front of that port would add.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from _harness import (
    RESULTS,
    Target,
    add_target_arguments,
    answer_kind,
    basic_auth,
    first_segment_url,
    open_target,
    percentile,
    ready_asset,
    stop_server,
    tree,
    write_json,
)
from rich.console import Console
from rich.table import Table

TARGET_P95_MS = 20.0
DEFAULT_INPUT_URL = "http://127.0.0.1:9/kinoray-benchmark-input.mp4"  # the discard port: nothing answers
SWEEP_P95_RATE = 200.0  # the rate the sweep's latency criterion is read at
GOODPUT_SHARE = 0.9
RECOVERY_TARGET_S = 5.0
RECOVERY_WINDOW_S = 1.0
RECOVERY_WINDOWS = 3  # consecutive good windows that make a recovery (one good second can be luck)
EDGE_LOAD_CONNECTIONS = 64
CLIENT_POOL_TIMEOUT = "timeout (client pool)"  # timed out before the client's pool had a connection for it
#: Answers that are refusals the server chose (load shedding, rate limits, body limits), not failures.
SHEDS = {"503 over_capacity": "typed", "429 too_many_requests": "typed", "413 request_too_large": "typed",
         "503": "plain"}


#: The first body seen of each kind of non-2xx answer (what a plain-text 503 said, for the report).
ANSWER_SAMPLES: dict[str, str] = {}


@dataclass
class Endpoint:
    name: str
    path: str
    latencies_ms: list[float] = field(default_factory=list)  # successful answers, from the due time
    errors: dict[str, int] = field(default_factory=dict)
    answers: list[tuple[float, float, float, str]] = field(default_factory=list)  # (due, sent, done, kind)
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


def merged(name: str, endpoints: list[Endpoint]) -> Endpoint:
    """One endpoint holding what ``endpoints`` recorded."""
    every = Endpoint(name, "both")
    for endpoint in endpoints:
        every.latencies_ms += endpoint.latencies_ms
        every.answers += endpoint.answers
        every.sent += endpoint.sent
        every.first_due = min(every.first_due, endpoint.first_due)
        every.last_due = max(every.last_due, endpoint.last_due)
        every.last_ok = max(every.last_ok, endpoint.last_ok)
        for kind, n in endpoint.errors.items():
            every.errors[kind] = every.errors.get(kind, 0) + n
    return every


# --- the load ----------------------------------------------------------------------------------------------


async def _one(session: aiohttp.ClientSession, base: str, endpoint: Endpoint, due: float, timeout: float,
               lags: list[float] | None) -> None:
    started = time.perf_counter()
    if lags is not None:
        lags.append((started - due) * 1000)
    pool: dict[str, bool] = {}
    try:
        async with session.get(base + endpoint.path, timeout=aiohttp.ClientTimeout(total=timeout),
                               trace_request_ctx=pool) as answer:
            body = await answer.read()
            status = answer.status
            kind = "2xx" if 200 <= status < 300 else answer_kind(status, body)
            if kind != "2xx" and kind not in ANSWER_SAMPLES:
                ANSWER_SAMPLES[kind] = body[:200].decode(errors="replace")
    except TimeoutError:
        # Still waiting for one of the client's own connections: the client's limit, not the server's answer.
        status, kind = None, CLIENT_POOL_TIMEOUT if pool.get("queued") and not pool.get("connected") else "timeout"
    except aiohttp.ClientError as error:
        status, kind = None, type(error).__name__
    done = time.perf_counter()
    if lags is None:  # warm-up
        return
    endpoint.answers.append((due, started, done, kind))
    if kind == "2xx":
        endpoint.last_ok = max(endpoint.last_ok, done)
        endpoint.latencies_ms.append((done - due) * 1000)
    else:
        endpoint.errors[kind] = endpoint.errors.get(kind, 0) + 1


async def schedule(session: aiohttp.ClientSession | list[aiohttp.ClientSession], base: str,
                   endpoints: list[Endpoint], rate: float, seconds: float, timeout: float, lags: list[float] | None,
                   t0: float | None = None) -> list[asyncio.Task[None]]:
    """Start request i at t0 + i/rate (round-robin over ``endpoints``, and over the sessions when given several:
    one per simulated client) without waiting for earlier answers; returns once the last one is started, with
    the tasks still running."""
    sessions = session if isinstance(session, list) else [session]
    count = max(1, round(rate * seconds))
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter() + 0.05 if t0 is None else t0
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
        tasks.append(asyncio.create_task(_one(sessions[i % len(sessions)], base, endpoint, due, timeout, lags)))
    return tasks


async def open_loop(session: aiohttp.ClientSession, base: str, endpoints: list[Endpoint], rate: float,
                    seconds: float, timeout: float, lags: list[float] | None) -> None:
    """:func:`schedule`, then wait for every answer."""
    await asyncio.gather(*await schedule(session, base, endpoints, rate, seconds, timeout, lags))


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


def client_session(auth: tuple[str, str] | None, connections: int, local_address: str | None = None,
                   forwarded_for: bool = False) -> aiohttp.ClientSession:
    """A keep-alive pool of ``connections``, sending from ``local_address`` when given (another loopback
    address is another client to the server's per-address limits). ``forwarded_for``: also name that address in
    ``X-Forwarded-For``, as the load balancer in front of Serve's port would (Serve's HAProxy adds none)."""
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=60,
                                     local_addr=(local_address, 0) if local_address else None)
    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(_mark("queued"))
    trace.on_connection_create_end.append(_mark("connected"))
    trace.on_connection_reuseconn.append(_mark("connected"))
    headers = {"Authorization": basic_auth(*auth)} if auth is not None else {}
    if forwarded_for and local_address:
        headers["X-Forwarded-For"] = local_address
    return aiohttp.ClientSession(connector=connector, headers=headers, trace_configs=[trace])


def _mark(what: str) -> Any:
    """A trace callback setting ``what`` in the request's ``trace_request_ctx`` dict: ``queued`` (it waited for
    one of the pool's connections), ``connected`` (it got one)."""
    async def mark(_session: aiohttp.ClientSession, context: Any, _params: Any) -> None:
        if isinstance(context.trace_request_ctx, dict):
            context.trace_request_ctx[what] = True

    return mark


def _pair(asset_id: str) -> list[Endpoint]:
    return [Endpoint("asset", f"/video/v1/assets/{asset_id}"), Endpoint("list", "/video/v1/assets")]


def _machine(load0: tuple[float, float, float]) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_before": load0,
            "loadavg_after": os.getloadavg()}


async def run(base: str, auth: tuple[str, str], args: argparse.Namespace) -> dict[str, Any]:
    async with client_session(auth, args.connections) as session:
        asset_ids = await prepare_assets(session, base, args)
        endpoints = _pair(asset_ids[0])
        if args.warmup_seconds > 0:
            await open_loop(session, base, _pair(asset_ids[0]), args.rate, args.warmup_seconds, args.timeout, None)
        lags: list[float] = []
        cpu0, wall0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()
        await open_loop(session, base, endpoints, args.rate, args.seconds, args.timeout, lags)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    summaries = {e.name: e.summary() for e in [*endpoints, merged("all", endpoints)]}
    lags.sort()
    passed = all(summaries[e.name]["p95_ms"] is not None and summaries[e.name]["p95_ms"] < TARGET_P95_MS
                 and summaries[e.name]["error_count"] == 0 for e in endpoints)
    return {
        "benchmark": "api_latency",
        "mode": "single",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": base,
        "config": {"rate": args.rate, "seconds": args.seconds, "warmup_seconds": args.warmup_seconds,
                   "connections": args.connections, "timeout_s": args.timeout, "assets": asset_ids,
                   "started_server": bool(args.start)},
        "machine": _machine(load0),
        "client": {"cpu_s": round(cpu, 2), "cpu_share": round(cpu / wall, 3),
                   "lag_p50_ms": percentile(lags, 50), "lag_p99_ms": percentile(lags, 99),
                   "lag_max_ms": round(lags[-1], 2) if lags else None},
        "endpoints": summaries,
        "answer_samples": ANSWER_SAMPLES,
        "target": {"p95_ms": TARGET_P95_MS, "pass": passed,
                   "rule": "p95 < target and no errors, for each endpoint"},
        "definitions": {
            "latency": "from the request's scheduled send time (t0 + i/rate) to the last byte of its answer",
            "offered_rps": "requests scheduled per second (the schedule, whatever the server did)",
            "achieved_rps": "successful answers / (last successful answer - first due time)",
            "client lag": "how late the client started a request relative to its schedule",
            "errors": "non-2xx answers as '<status> <error.type>' for kinoray's typed errors, the bare status "
                      "otherwise (e.g. Serve's plain-text 503), or the client's exception (timeout, ...)",
        },
    }


# --- the rate sweep ------------------------------------------------------------------------------------------


def _peak_pending(answers: list[tuple[float, float, float, str]]) -> int:
    """Most requests the client had open at once (sent, not yet answered)."""
    events = sorted([(sent, 1) for _, sent, _, _ in answers] + [(done, -1) for _, _, done, _ in answers])
    peak = pending = 0
    for _, delta in events:
        pending += delta
        peak = max(peak, pending)
    return peak


def step_summary(rate: float, seconds: float, endpoints: list[Endpoint], lags: list[float]) -> dict[str, Any]:
    every = merged("all", endpoints)
    ok = sorted(every.latencies_ms)
    errors = every.errors
    typed = sum(n for kind, n in errors.items() if SHEDS.get(kind) == "typed")
    plain = sum(n for kind, n in errors.items() if SHEDS.get(kind) == "plain")
    timeouts = errors.get("timeout", 0)
    pool_timeouts = errors.get(CLIENT_POOL_TIMEOUT, 0)
    other = sum(errors.values()) - typed - plain - timeouts - pool_timeouts
    shed_ms = sorted((done - due) * 1000 for due, _, done, kind in every.answers if kind in SHEDS)
    lags = sorted(lags)
    return {
        "rate": rate, "seconds": seconds, "requests": every.sent,
        "offered_rps": round(every.sent / seconds, 1),
        "goodput_rps": round(len(ok) / seconds, 1),
        "ok": len(ok), "p50_ms": percentile(ok, 50), "p95_ms": percentile(ok, 95), "p99_ms": percentile(ok, 99),
        "max_ms": round(ok[-1], 2) if ok else None,
        "shed_over_capacity": errors.get("503 over_capacity", 0), "shed_serve_plain_503": plain,
        "shed_429": errors.get("429 too_many_requests", 0), "shed_413": errors.get("413 request_too_large", 0),
        "shed_typed": typed, "timeouts": timeouts, "client_pool_timeouts": pool_timeouts, "other_errors": other,
        "errors": dict(sorted(errors.items())),
        "shed_p50_ms": percentile(shed_ms, 50), "shed_p99_ms": percentile(shed_ms, 99),
        "client_lag_p99_ms": percentile(lags, 99), "client_peak_pending": _peak_pending(every.answers),
        "endpoints": {e.name: e.summary() for e in endpoints},
    }


def recovery(probe: Endpoint, start: float, baseline_p95: float | None) -> dict[str, Any]:
    """Seconds from ``start`` (the end of the top step) until the probe's answers are all 2xx with p95 under
    2 x ``baseline_p95`` in :data:`RECOVERY_WINDOWS` consecutive :data:`RECOVERY_WINDOW_S` windows (by due
    time): the start of the first of them."""
    windows: dict[int, list[tuple[float, str]]] = {}
    for due, _, done, kind in probe.answers:
        windows.setdefault(int((due - start) // RECOVERY_WINDOW_S), []).append(((done - due) * 1000, kind))
    limit = 2 * baseline_p95 if baseline_p95 is not None else None
    rows, good = [], []
    for index in sorted(windows):
        answers = windows[index]
        ok = sorted(ms for ms, kind in answers if kind == "2xx")
        p95 = percentile(ok, 95)
        fine = limit is not None and len(ok) == len(answers) and p95 is not None and p95 < limit
        rows.append({"from_s": round(index * RECOVERY_WINDOW_S, 1), "requests": len(answers), "ok": len(ok),
                     "p95_ms": p95, "recovered": fine})
        good.append(fine)
    recovered_at = None
    for i in range(len(good)):
        if all(good[i:i + RECOVERY_WINDOWS]) and len(good[i:i + RECOVERY_WINDOWS]) == RECOVERY_WINDOWS:
            recovered_at = rows[i]["from_s"]
            break
    return {"seconds": recovered_at, "limit_p95_ms": round(limit, 2) if limit is not None else None,
            "windows": rows, "probe": merged("probe", [probe]).summary()}


def _edge_load(url: str, seconds: float, placement: tuple[set[int] | None, int], out: dict[str, Any]) -> None:
    from delivery import wrk

    cpus, nice = placement
    out.update(url=url, connections=EDGE_LOAD_CONNECTIONS, seconds=seconds, cpus=sorted(cpus) if cpus else None,
               nice=nice, **wrk(url, EDGE_LOAD_CONNECTIONS, seconds, cpus=cpus, nice=nice))


def edge_placement(target: Target) -> tuple[set[int] | None, int]:
    """The CPUs the target's edge is confined to (None: all of this machine's, or not ours to see) and its
    niceness (``kinoray up`` gives it part of the node, below the API's priority)."""
    for pid in tree(target.pid) if target.pid is not None else []:
        try:
            if b"kinoray.cli\x00edge" in Path(f"/proc/{pid}/cmdline").read_bytes():
                cpus = os.sched_getaffinity(pid)
                return (cpus if cpus != os.sched_getaffinity(0) else None), os.getpriority(os.PRIO_PROCESS, pid)
        except OSError:
            continue
    return None, 0


async def sweep(target: Target, base: str, args: argparse.Namespace, console: Console,
                segment_url: str | None) -> dict[str, Any]:
    rates = args.rates
    async with client_session(target.auth, args.connections) as session:
        asset_ids = await prepare_assets(session, base, args)
        if args.warmup_seconds > 0:
            await open_loop(session, base, _pair(asset_ids[0]), rates[0], args.warmup_seconds, args.timeout, None)
        baseline = [Endpoint("probe", f"/video/v1/assets/{asset_ids[0]}")]
        console.print(f"baseline probe: {args.probe_rate:g} req/s for {args.probe_seconds:g} s")
        await open_loop(session, base, baseline, args.probe_rate, args.probe_seconds, args.timeout, [])
        baseline_summary = baseline[0].summary()
        load0, cpu0, wall0 = os.getloadavg(), time.process_time(), time.perf_counter()
        edge: dict[str, Any] = {}
        edge_thread = None
        if segment_url is not None:
            edge_thread = threading.Thread(target=_edge_load,
                                           args=(segment_url, len(rates) * args.seconds, edge_placement(target), edge),
                                           daemon=True)
            edge_thread.start()
        t0 = time.perf_counter() + 0.1
        steps: list[tuple[float, list[Endpoint], list[float]]] = []
        tasks: list[asyncio.Task[None]] = []
        # the steps' load comes from --clients loopback addresses (one per simulated client: the API's per-client
        # share applies to each), the probes from the first session's
        direct = base != target.url  # Serve's port: its HAProxy names no client, a load balancer would
        clients = [client_session(target.auth, max(8, args.connections // args.clients), f"127.0.0.{10 + n}",
                                  forwarded_for=direct)
                   for n in range(args.clients)] if args.clients > 1 else [session]
        for index, rate in enumerate(rates):
            endpoints, lags = _pair(asset_ids[0]), []
            console.print(f"step {index + 1}/{len(rates)}: {rate:g} req/s for {args.seconds:g} s "
                          f"from {len(clients)} client address(es)")
            tasks += await schedule(clients, base, endpoints, rate, args.seconds, args.timeout, lags,
                                    t0=t0 + index * args.seconds)
            steps.append((rate, endpoints, lags))
        top_end = t0 + len(rates) * args.seconds
        probe = Endpoint("probe", f"/video/v1/assets/{asset_ids[0]}")
        console.print(f"recovery probe: {args.probe_rate:g} req/s for {args.recovery_seconds:g} s")
        tasks += await schedule(session, base, [probe], args.probe_rate, args.recovery_seconds, args.timeout, [],
                                t0=top_end)
        await asyncio.gather(*tasks)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        for client in clients:
            if client is not session:
                await client.close()
        if edge_thread is not None:
            await asyncio.to_thread(edge_thread.join)
    rows = [step_summary(rate, args.seconds, endpoints, lags) for rate, endpoints, lags in steps]
    back = recovery(probe, top_end, baseline_summary["p95_ms"])
    return {
        "benchmark": "api_latency",
        "mode": "sweep",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": base,
        "config": {"rates": rates, "seconds": args.seconds, "warmup_seconds": args.warmup_seconds,
                   "probe_rate": args.probe_rate, "probe_seconds": args.probe_seconds,
                   "recovery_seconds": args.recovery_seconds, "connections": args.connections,
                   "timeout_s": args.timeout, "assets": asset_ids, "started_server": bool(args.start),
                   "clients": args.clients,
                   "api_direct": bool(args.api_direct), "edge_load": bool(args.edge_load)},
        "machine": _machine(load0),
        "client": {"cpu_s": round(cpu, 2), "cpu_share": round(cpu / wall, 3)},
        "baseline_probe": baseline_summary,
        "steps": rows,
        "recovery": back,
        "edge_load": edge or None,
        "answer_samples": ANSWER_SAMPLES,
        "criteria": criteria(rows, back),
        "definitions": {
            "latency": "from the request's scheduled send time to the last byte of its answer (2xx only)",
            "goodput_rps": "2xx answers to the step's requests / the step's seconds",
            "step": "requests are counted in the step their due time falls in, however late they are answered",
            "shed_typed": "answers 503 over_capacity, 429 too_many_requests or 413 request_too_large (JSON)",
            "shed_serve_plain_503": "Serve's proxy's plain-text 503 (its max_queued_requests)",
            "other_errors": "connection errors and statuses that are neither 2xx nor a shed",
            "client_pool_timeouts": "timed out while still waiting for one of the client's --connections: the "
                                    "client's limit, not counted against the server (raise --connections)",
            "client_peak_pending": "most requests open at once in the client (its pool: --connections; at the "
                                   "pool size, requests wait in the client and that wait counts as latency)",
            "recovery": f"from the end of the top step to the start of the first of {RECOVERY_WINDOWS} "
                        f"consecutive {RECOVERY_WINDOW_S:g} s windows of the probe (by due time) that are all 2xx "
                        "with p95 < 2 x the baseline probe's p95",
        },
    }


def criteria(rows: list[dict[str, Any]], back: dict[str, Any]) -> dict[str, Any]:
    at = next((row for row in rows if row["rate"] == SWEEP_P95_RATE), None)
    p95 = at["p95_ms"] if at else None
    top = rows[-1]
    peak = max(row["goodput_rps"] for row in rows)
    share = top["goodput_rps"] / peak if peak > 0 else 0.0
    unanswered = top["timeouts"] + top["other_errors"]
    return {
        "p95_at_200": {"p95_ms": p95, "target_ms": TARGET_P95_MS,
                       "pass": None if at is None else (p95 is not None and p95 < TARGET_P95_MS),
                       "measured": at is not None},
        "goodput_at_top": {"rate": top["rate"], "goodput_rps": top["goodput_rps"], "peak_goodput_rps": peak,
                           "share": round(share, 3), "target_share": GOODPUT_SHARE,
                           "typed_sheds": top["shed_typed"], "plain_503": top["shed_serve_plain_503"],
                           "timeouts_and_errors": unanswered,
                           "client_pool_timeouts": top["client_pool_timeouts"],
                           "pass": share >= GOODPUT_SHARE and unanswered == 0 and top["shed_serve_plain_503"] == 0},
        "recovery": {"seconds": back["seconds"], "target_s": RECOVERY_TARGET_S,
                     "pass": back["seconds"] is not None and back["seconds"] < RECOVERY_TARGET_S},
    }


def show_sweep(result: dict[str, Any], console: Console) -> None:
    config = result["config"]
    table = Table(title=f"API rate sweep — {config['seconds']:g} s per step, open loop ({result['url']})")
    columns = ("offered req/s", "goodput 2xx/s", "p50 ms", "p95 ms", "p99 ms", "503 typed", "503 Serve", "429",
               "413", "timeouts", "client t/o", "other", "shed p50 ms", "lag p99 ms", "client open")
    for column in columns:
        table.add_column(column, justify="right")
    for row in result["steps"]:
        table.add_row(*(str(row[key]) for key in (
            "offered_rps", "goodput_rps", "p50_ms", "p95_ms", "p99_ms", "shed_over_capacity", "shed_serve_plain_503",
            "shed_429", "shed_413", "timeouts", "client_pool_timeouts", "other_errors", "shed_p50_ms",
            "client_lag_p99_ms",
            "client_peak_pending")))
    table.caption = (f"GET /video/v1/assets/{{id}} and GET /video/v1/assets alternating; latency from each request's "
                     f"due time; client t/o: timed out in the client's own pool; other: {', '.join(k for r in result['steps'] for k in r['errors'] if k not in SHEDS and k not in ('timeout', CLIENT_POOL_TIMEOUT)) or 'none'}")
    console.print(table)
    base, back = result["baseline_probe"], result["recovery"]
    console.print(f"baseline probe ({config['probe_rate']:g} req/s): p95 {base['p95_ms']} ms, "
                  f"errors {base['errors'] or 0}; recovery windows (s from top end: ok/requests, p95 ms): "
                  + "  ".join(f"{w['from_s']:g}: {w['ok']}/{w['requests']} {w['p95_ms']}" for w in back["windows"]))
    if result["edge_load"]:
        edge = result["edge_load"]
        console.print(f"edge load (wrk, {edge['connections']} connections, {edge['url']}): "
                      f"{edge['requests_per_second']:.0f} req/s, p99 {edge.get('p99_ms')} ms, non-2xx "
                      f"{edge['non_2xx']}, socket errors {edge['socket_errors'] or 'none'}")
    console.print(f"client: {result['client']['cpu_share'] * 100:.0f} % of a core; load average "
                  f"{result['machine']['loadavg_before'][0]:.2f} → {result['machine']['loadavg_after'][0]:.2f} "
                  f"on {result['machine']['cpus']} CPUs")
    verdict = {True: "[bold green]PASS[/]", False: "[bold red]FAIL[/]", None: "[yellow]not measured[/]"}
    found = result["criteria"]
    p95 = found["p95_at_200"]
    console.print(f"p95 < {TARGET_P95_MS:g} ms at {SWEEP_P95_RATE:g} req/s: {p95['p95_ms']} ms "
                  f"{verdict[p95['pass']]}")
    top = found["goodput_at_top"]
    console.print(f"goodput at {top['rate']:g} req/s ≥ {GOODPUT_SHARE:.0%} of peak: {top['goodput_rps']} / "
                  f"{top['peak_goodput_rps']} = {top['share']:.0%}, typed sheds {top['typed_sheds']}, Serve 503 "
                  f"{top['plain_503']}, timeouts/errors {top['timeouts_and_errors']} {verdict[top['pass']]}")
    rec = found["recovery"]
    console.print(f"recovery < {RECOVERY_TARGET_S:g} s (probe all 2xx, p95 < {back['limit_p95_ms']} ms): "
                  f"{rec['seconds']} s {verdict[rec['pass']]}")
    for row in result["steps"]:
        if row["client_pool_timeouts"]:
            console.print(f"[yellow]at {row['rate']:g} req/s {row['client_pool_timeouts']} requests timed out in the "
                          f"client's own pool ({config['connections']} connections): raise --connections[/]")
        if row["client_peak_pending"] >= config["connections"]:
            console.print(f"[yellow]at {row['rate']:g} req/s the client had {config['connections']} requests open "
                          f"(its pool): later ones waited in the client (counted as latency)[/]")
        if (row["client_lag_p99_ms"] or 0) > 50:
            console.print(f"[yellow]at {row['rate']:g} req/s the client started requests up to "
                          f"{row['client_lag_p99_ms']} ms late (p99): the client machine is saturated[/]")


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
    if any(kind.startswith("429") for row in result["endpoints"].values() for kind in row["errors"]):
        console.print("[yellow]429s: the server's rate limit is below --rate (set KINORAY_API__RATE_LIMIT_PER_SECOND "
                      "and KINORAY_API__RATE_LIMIT_BURST on the server)[/]")


# --- main ----------------------------------------------------------------------------------------------------


def _rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("--rates takes positive numbers, comma-separated")
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second, both endpoints together")
    parser.add_argument("--rates", type=_rates, help="a sweep: these rates in turn, e.g. 50,100,200,400,800")
    parser.add_argument("--seconds", type=float, help="the run, or each sweep step (default 30; sweep 20)")
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--probe-rate", type=float, default=20.0, help="sweep: the recovery probe's rate")
    parser.add_argument("--probe-seconds", type=float, default=5.0, help="sweep: the baseline probe")
    parser.add_argument("--recovery-seconds", type=float, default=15.0, help="sweep: the probe after the top step")
    parser.add_argument("--edge-load", action="store_true",
                        help="sweep: wrk on a media segment through the edge at the same time (uploads an asset)")
    parser.add_argument("--segment-url", help="with --edge-load: the segment URL (else one is made)")
    parser.add_argument("--api-direct", action="store_true", help="with --start: load Serve's port, not the edge")
    parser.add_argument("--clients", type=int, default=32,
                        help="sweep: client addresses the load comes from (127.0.0.10 on; the API's per-client "
                             "share applies to each: one address would measure that share, not the capacity)")
    parser.add_argument("--connections", type=int, help="most open keep-alive connections (256; sweep 1024)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds (then an error)")
    parser.add_argument("--asset-id", action="append", help="an existing asset to GET (else found or created)")
    parser.add_argument("--assets", type=int, default=3, help="assets to find or create")
    parser.add_argument("--input-url", default=DEFAULT_INPUT_URL, help="input URL of created assets")
    parser.add_argument("--json", type=Path, default=RESULTS / "api_latency.json")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 20.0 if args.rates else 30.0
    if args.connections is None:
        args.connections = 1024 if args.rates else 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < args.connections + 256:
        wanted = args.connections + 256 if hard == resource.RLIM_INFINITY else min(hard, args.connections + 256)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    if args.api_direct and not args.start:
        parser.error("--api-direct goes with --start (otherwise give --url of Serve's port)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    target = None
    with tempfile.TemporaryDirectory(prefix="kinoray-bench-") as temp:
        try:
            target = open_target(args, Path(temp), console)
            base = target.api_url if args.api_direct and target.api_url else target.url
            if args.rates:
                if args.edge_load:
                    from delivery import need

                    need("wrk")
                segment = args.segment_url
                if args.edge_load and segment is None:
                    asset = ready_asset(target, Path(temp), console)
                    segment = first_segment_url(target.url, asset["playback_ids"][0]["id"])
                result = asyncio.run(sweep(target, base, args, console, segment if args.edge_load else None))
            else:
                result = asyncio.run(run(base, target.auth, args))
        finally:
            if target is not None:
                stop_server(target.process)
    (show_sweep if args.rates else show)(result, console)
    write_json(result, args.json, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
