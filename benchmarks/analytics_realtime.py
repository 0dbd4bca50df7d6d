"""Real-time lag at scale: how long after its beacon a change shows in ``/data/v1/realtime/...`` under load.

The platform as ``kinoray up`` runs its viewer side: the production edge (Granian, ``--realtime-edge-workers``
processes) collects the beacons over HTTP and writes each view's presence to Redis (a private database,
``--realtime-redis``, that must be empty: nothing shared is touched, and its ``kinoray:*`` keys are deleted
after); the management API (the test server, :class:`tests.api_server.ApiServer`) answers the real-time API
from the same Redis.

- **Load** (a process of its own, asyncio + aiohttp): ``--realtime-views`` concurrent views, started over the
  first heartbeat period, each posting its opening beacon (viewstart, play, playing) and then a heartbeat every
  10 s as mux-embed does, one request per view per beacon — N / 10 events/s — from 200 client addresses
  (``X-Forwarded-For``, as a load balancer in front of the edge sends it: the per-client beacon rate limit
  holds).
- **Probe** (this process): a view of its own ``player_name`` steps through start (concurrent viewers 0 → 1),
  a rebuffer (``current-rebuffering-percentage`` 0 → 100 %) and its end (concurrent viewers 1 → 0); after each
  beacon the real-time breakdown by ``player_name`` is polled every ``POLL_SECONDS`` until the change shows.
  *Lag* = from just before the probe's POST to the poll answer that shows it (so it includes the POST, the
  edge's collector, Redis and one API request).

    python benchmarks/analytics.py --realtime only --realtime-views 5000 --realtime-seconds 60
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 "
              "Safari/537.36")
HEARTBEAT_SECONDS = 10.0  # mux-embed's heartbeat while playing
POLL_SECONDS = 0.1
PROBE_TIMEOUT = 30.0


class Unavailable(RuntimeError):
    """No Redis database of the benchmark's own (unreachable, or not empty)."""


def _beacon(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"metadata": {"transmission_timestamp": events[-1]["uti"]}, "events": events}).encode()


async def _load(url: str, views: int, seconds: float, connections: int) -> dict[str, Any]:
    """``views`` views posting to ``url`` for ``seconds`` (module docstring); counts and client latencies."""
    import aiohttp

    posted = {"requests": 0, "events": 0, "failed": 0, "steady_events": 0}
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + seconds
    headers = {"Content-Type": "text/plain", "User-Agent": USER_AGENT}
    run = uuid.uuid4().hex[:8]

    async def view(index: int, session: aiohttp.ClientSession) -> None:
        view_id, sequence = f"load-{run}-{index:06d}", 0
        address = f"198.51.100.{index % 200 + 1}"  # viewers behind a load balancer (127.0.0.1: a trusted proxy)
        at = started + HEARTBEAT_SECONDS * index / views  # phases spread over one heartbeat period
        playhead = 0
        while at < deadline:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            now_ms = int(time.time() * 1000)
            names = ("viewstart", "play", "playing") if sequence == 0 else ("hb",)
            events = []
            for name in names:
                sequence += 1
                event: dict[str, Any] = {"e": name, "xid": view_id, "uti": now_ms, "xsqno": sequence,
                                         "pphti": playhead}
                if sequence == 1:
                    event.update({"pnm": f"load-{index % 8}", "psw": "hls.js", "pwd": 1280, "pht": 720,
                                  "uusid": f"viewer-{index}"})
                events.append(event)
            sent = time.monotonic()
            try:
                async with session.post(url, data=_beacon(events), headers={**headers, "X-Forwarded-For": address}
                                        ) as answer:
                    await answer.read()
                    ok = answer.status == 202
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            latencies.append(time.monotonic() - sent)
            posted["requests"] += 1
            if ok:
                posted["events"] += len(events)
                if sent - started >= HEARTBEAT_SECONDS:  # every view started: heartbeats only
                    posted["steady_events"] += len(events)
            else:
                posted["failed"] += 1
            playhead += int(HEARTBEAT_SECONDS * 1000)
            at += HEARTBEAT_SECONDS

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(view(index, session) for index in range(views)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {**posted, "seconds": round(elapsed, 1), "events_per_second": round(posted["events"] / elapsed, 1),
            "steady_events_per_second": round(posted["steady_events"] / max(1e-9, elapsed - HEARTBEAT_SECONDS), 1),
            "beacon_p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "beacon_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None}


def _load_process(url: str, views: int, seconds: float, connections: int, out: Any) -> None:
    out.put(asyncio.run(_load(url, views, seconds, connections)))


class Probe:
    """One probe view at a time, its beacons posted to the edge and its changes awaited in the real-time API."""

    def __init__(self, edge_url: str, api_url: str, auth: tuple[str, str]) -> None:
        self.edge_url, self.api_url = edge_url, api_url
        self.session = requests.Session()
        self.session.auth = auth
        self.name = f"probe-{uuid.uuid4().hex[:8]}"

    def _row(self, metric: str) -> dict[str, Any] | None:
        answer = self.session.get(f"{self.api_url}/data/v1/realtime/metrics/{metric}/breakdown", timeout=10, params={
            "dimension": "player_name", "filters[]": f"player_name:{self.name}"})
        answer.raise_for_status()
        rows = answer.json()["data"]
        return rows[0] if rows else None

    def lag(self, events: list[dict[str, Any]], metric: str, shows: Callable[[dict[str, Any] | None], bool]) -> float:
        """Seconds from posting ``events`` until ``shows`` holds for the probe's breakdown row of ``metric``."""
        started = time.monotonic()
        answer = self.session.post(self.edge_url, data=_beacon(events), timeout=10, headers={
            "Content-Type": "text/plain", "User-Agent": USER_AGENT, "X-Forwarded-For": "8.8.8.8"})
        assert answer.status_code == 202, answer.text
        while not shows(self._row(metric)):
            if time.monotonic() - started > PROBE_TIMEOUT:
                raise TimeoutError(f"the probe's {metric} change did not show within {PROBE_TIMEOUT} s")
            time.sleep(POLL_SECONDS)
        return time.monotonic() - started

    def cycle(self) -> list[float]:
        """A view started, rebuffering, ended: the three lags."""
        view_id, now = f"{self.name}-{uuid.uuid4().hex[:8]}", int(time.time() * 1000)
        opening = [{"e": name, "xid": view_id, "uti": now + offset, "xsqno": number, **extra}
                   for number, (name, offset, extra) in enumerate((
                       ("viewstart", 0, {"pnm": self.name, "psw": "hls.js"}), ("play", 10, {}),
                       ("playing", 400, {"pphti": 0})), start=1)]
        lags = [self.lag(opening, "current-concurrent-viewers", lambda row: bool(row and row["concurrent_viewers"]))]
        stalled = [{"e": "rebufferstart", "xid": view_id, "uti": now + 1000, "xsqno": 4, "pphti": 600}]
        lags.append(self.lag(stalled, "current-rebuffering-percentage",
                             lambda row: bool(row and (row["metric_value"] or 0) >= 1.0)))
        ended = [{"e": "rebufferend", "xid": view_id, "uti": now + 1500, "xsqno": 5, "pphti": 600},
                 {"e": "viewend", "xid": view_id, "uti": now + 1600, "xsqno": 6, "pphti": 600}]
        lags.append(self.lag(ended, "current-concurrent-viewers", lambda row: not (row and row["concurrent_viewers"])))
        return lags

    def concurrent(self) -> int:
        """Concurrent viewers now, all views (the load's included)."""
        answer = self.session.get(f"{self.api_url}/data/v1/realtime/metrics/current-concurrent-viewers/breakdown",
                                  timeout=30, params={"dimension": "player_name"})
        answer.raise_for_status()
        return sum(row["concurrent_viewers"] for row in answer.json()["data"])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(views: int = 5000, seconds: float = 60.0, redis_url: str = "redis://127.0.0.1:6379/11",
        edge_workers: int = 2, connections: int = 100, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The load and the probe (module docstring); lags p50/p95, ingest rate and conditions."""
    import os

    import redis

    from tests.api_server import ApiServer

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        if client.dbsize():
            raise Unavailable(f"{redis_url} is not empty: give the benchmark a Redis database of its own")
    except redis.RedisError as error:
        raise Unavailable(f"no Redis at {redis_url}: {error}") from error
    result: dict[str, Any] = {"views": views, "seconds": seconds, "edge_workers": edge_workers,
                              "redis": redis_url, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="kinoray-realtime-bench-") as directory:
        server = ApiServer(f"sqlite:///{Path(directory) / 'kinoray.db'}", Path(directory), redis_url=redis_url,
                           analytics={"realtime_window_seconds": 30})
        edge, edge_url = None, ""
        try:
            edge, edge_url = server.start_granian_edge(workers=edge_workers)
            beacons = f"{edge_url}/data/v1/beacons"
            probe = Probe(beacons, server.url, server.auth)
            quiet = [lag for _ in range(3) for lag in probe.cycle()]
            log(f"real time: idle lags {', '.join(f'{lag * 1000:.0f}' for lag in quiet)} ms")
            context = multiprocessing.get_context("spawn")
            out = context.Queue()
            load = context.Process(target=_load_process, args=(beacons, views, seconds, connections, out), daemon=True)
            load.start()
            time.sleep(HEARTBEAT_SECONDS + 5)  # every view started (the process's start included)
            lags: list[float] = []
            seen: list[int] = []
            while load.is_alive() and len(lags) < 3 * 1000:
                lags += probe.cycle()
                seen.append(probe.concurrent())
                log(f"  probe: {len(lags)} lags, last {lags[-3] * 1000:.0f}/{lags[-2] * 1000:.0f}/"
                    f"{lags[-1] * 1000:.0f} ms; {seen[-1]:,} concurrent viewers")
                time.sleep(0.5)
            posted = out.get(timeout=120)
            load.join(timeout=30)
        finally:
            if edge is not None:
                edge.stop()
            server.close()
            for key in client.scan_iter(match="kinoray:*", count=1000):
                client.delete(key)
    result.update({
        "idle_lag_ms": [round(lag * 1000, 1) for lag in quiet],
        "lag_samples": len(lags),
        "lag_p50_ms": round(1000 * statistics.median(lags), 1) if lags else None,
        "lag_p95_ms": round(1000 * _percentile(lags, 0.95), 1) if lags else None,
        "lag_max_ms": round(1000 * max(lags), 1) if lags else None,
        "concurrent_viewers_seen": [min(seen), max(seen)] if seen else None,
        "load": posted, "load_average_after": os.getloadavg()})
    return result


def report(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    load = result["load"]
    table = Table(title=f"real-time lag under load: {result['views']:,} views, heartbeats every "
                        f"{HEARTBEAT_SECONDS:.0f} s, {result['edge_workers']} edge workers (load average "
                        f"{result['load_average'][0]:.1f} → {result['load_average_after'][0]:.1f})")
    table.add_column("measure")
    table.add_column("result", justify="right")
    table.add_row("ingest (events accepted / s: all; after the first heartbeat period)",
                  f"{load['events_per_second']:,}; {load['steady_events_per_second']:,} ({load['requests']:,} "
                  f"beacons, {load['failed']} failed, {load['seconds']} s)")
    table.add_row("beacon answer p50 / p95", f"{load['beacon_p50_ms']} / {load['beacon_p95_ms']} ms")
    table.add_row("concurrent viewers shown (min–max)", "–".join(f"{n:,}" for n in result["concurrent_viewers_seen"] or []))
    table.add_row("lag idle (ms)", ", ".join(f"{lag:.0f}" for lag in result["idle_lag_ms"]))
    table.add_row(f"lag under load p50 / p95 / max ({result['lag_samples']} changes)",
                  f"{result['lag_p50_ms']} / {result['lag_p95_ms']} / {result['lag_max_ms']} ms")
    console.print(table)
    verdict = "PASS" if result["lag_p95_ms"] is not None and result["lag_p95_ms"] <= 5000 else "FAIL"
    console.print(f"→ real-time lag p95 ≤ 5 s: {verdict}")
