"""Player startup in headless Chromium, and manifest/segment latency under light load, on loopback.

    .venv/bin/python benchmarks/startup.py                       # in-process API on a generated, transcoded clip
    .venv/bin/python benchmarks/startup.py --runs 40 --rate 100
    .venv/bin/python benchmarks/startup.py --url http://127.0.0.1:8000 --playback-id ID   # a running deployment

**Time to first frame.** Each run opens ``/player/{id}?muted=1&autoplay=1`` (the embeddable page: hls.js and
``<kinoray-player>``) and reads, relative to the navigation start (``performance.timeOrigin``): the HTML's
arrival, ``playerready`` (hls.js created and attached), the first ``playing`` event and the first decoded
frame (``requestVideoFrameCallback``). *cold* runs use a fresh browser context each (nothing cached: a first
visit); *warm* runs reuse one context (the player's immutable static files come from the HTTP cache, as for a
returning viewer or a page embedding several players). Median and p90 of ``--runs`` each. Target: median
time to first frame < 500 ms.

**Latency under load.** ``GET /{id}.m3u8``, ``/{id}/{rung}/index.m3u8`` and ``/{id}/{rung}/seg_00001.m4s``
in turn at ``--rate`` requests/s for ``--seconds`` (open loop, latency from each request's scheduled time:
``api_latency.py``'s load generator).

Chromium is Debian's (``/usr/bin/chromium``, ``make system-deps``) with ``--headless --no-sandbox
--disable-gpu``: software decoding, as on a server. JSON goes to ``benchmarks/results/startup.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from api_latency import Endpoint, open_loop, percentile
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 500.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--autoplay-policy=no-user-gesture-required"]
MARKS = ("html", "playerready", "play", "playing", "firstframe")
_READ_TIMINGS = """(() => {
  const p = document.querySelector('kinoray-player');
  if (!p || !p.timings) return null;  // not parsed or not upgraded yet
  if (p.error) return {error: p.error};
  if (p.timings.firstframe === undefined) return null;
  const nav = performance.getEntriesByType('navigation')[0];
  return {html: nav.responseEnd, playerready: p.timings.playerready, play: p.timings.play,
          playing: p.timings.playing, firstframe: p.timings.firstframe, height: p.video.videoHeight};
})()"""


# --- an API of our own -------------------------------------------------------------------------------------------


class LocalApi:
    """The delivery edge's app (``EdgeApp``: player, streams, images) under uvicorn in a thread, on SQLite and a temporary storage directory, with
    one ready asset: a generated 10 s 1280x720 H.264/AAC clip transcoded in-process to 720p/480p/360p/240p."""

    def __init__(self, work: Path, console: Console, playback_ids: int) -> None:
        import uvicorn

        from kinoray.control.platform import Platform
        from kinoray.edge import EdgeApp
        from kinoray.media.pipeline import TranscodeOptions, transcode_file
        from kinoray.media.synthetic import generate_clip
        from kinoray.serve.deps import set_platform
        from kinoray.serve.runner import asset_fields
        from kinoray.settings import Settings
        from kinoray.store.models import Asset, AssetStatus, PlaybackId, new_id

        console.print("generating and transcoding a 10 s 720p clip (in process)…")
        source = generate_clip(work / "source.mp4", width=1280, height=720, fps=30, seconds=10)
        media = work / "media"
        result = transcode_file(str(source), media, TranscodeOptions(ladder=(720, 480, 360, 240), chunk_seconds=10,
                                                                     segment_seconds=2))
        settings = Settings(data_dir=work / "data", database_url=f"sqlite:///{work / 'kinoray.db'}",
                            environment="dev",
                            api={"rate_limit_per_second": 1_000_000, "rate_limit_burst": 1_000_000})
        self.platform = Platform.from_settings(settings)
        asset_id = new_id()
        self.playback_ids = [new_id() for _ in range(playback_ids)]
        shutil.copytree(media, Path(settings.storage_url) / "assets" / asset_id / "media")
        with self.platform.db.session() as session:
            session.add(Asset(id=asset_id, status=AssetStatus.READY, storage_prefix=f"assets/{asset_id}",
                              progress_state="completed", progress_fraction=1.0, **asset_fields(result)))
            session.flush()
            session.add_all(PlaybackId(id=playback_id, asset_id=asset_id) for playback_id in self.playback_ids)
        set_platform(self.platform)
        app = EdgeApp(self.platform)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-startup-bench", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("the API did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        from kinoray.serve.deps import set_platform

        self.server.should_exit = True
        self.thread.join(timeout=10)
        set_platform(None)
        self.platform.close()


# --- time to first frame -----------------------------------------------------------------------------------------


def _one_run(context: Any, page_url: str, timeout: float) -> dict[str, Any]:
    page = context.new_page()
    try:
        page.goto(page_url, wait_until="commit")
        deadline = time.monotonic() + timeout
        while True:
            timings = page.evaluate(_READ_TIMINGS)
            if timings:
                if "error" in timings:
                    raise SystemExit(f"the player failed: {timings['error']}")
                run = {key: round(float(value), 1) for key, value in timings.items()}
                run["play_to_firstframe"] = round(run["firstframe"] - run["play"], 1)
                return run
            if time.monotonic() > deadline:
                raise SystemExit(f"no first frame within {timeout:g} s")
            time.sleep(0.01)
    finally:
        page.close()


def startup_runs(base: str, playback_ids: list[str], runs: int, timeout: float,
                 console: Console) -> dict[str, Any]:
    """Playback ids are used in turn, so with as many ids as runs (the local server) no run finds another's
    manifests or segments in the HTTP cache: warm runs reuse only the player's files."""
    from playwright.sync_api import sync_playwright

    urls = [f"{base}/player/{playback_id}?muted=1&autoplay=1" for playback_id in playback_ids]
    page_url = iter(urls[i % len(urls)] for i in range(2 * runs + 2))
    measured: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            warmup = browser.new_context()
            _one_run(warmup, next(page_url), timeout)  # the server's and the browser's first-use costs, discarded
            warmup.close()
            for _ in range(runs):
                context = browser.new_context()
                measured["cold"].append(_one_run(context, next(page_url), timeout))
                context.close()
            context = browser.new_context()
            _one_run(context, next(page_url), timeout)  # fills the HTTP cache
            for _ in range(runs):
                measured["warm"].append(_one_run(context, next(page_url), timeout))
            context.close()
            version = browser.version
        finally:
            browser.close()
    summary: dict[str, Any] = {"browser": f"Chromium {version}", "page": urls[0], "runs": runs,
                               "distinct_playback_ids": len(urls)}
    for kind, rows in measured.items():
        summary[kind] = {
            mark: {"median_ms": round(statistics.median(r[mark] for r in rows), 1),
                   "p90_ms": percentile(sorted(r[mark] for r in rows), 90),
                   "min_ms": min(r[mark] for r in rows), "max_ms": max(r[mark] for r in rows)}
            for mark in (*MARKS, "play_to_firstframe")}
        summary[kind]["first_rendition_heights"] = sorted({r["height"] for r in rows})
        summary[kind]["samples"] = rows
    console.print(f"{runs} cold + {runs} warm runs in {summary['browser']}")
    return summary


# --- delivery latency under load ---------------------------------------------------------------------------------


async def delivery_load(base: str, playback_id: str, rung: str, rate: float, seconds: float) -> dict[str, Any]:
    endpoints = [Endpoint("master", f"/{playback_id}.m3u8"), Endpoint("media playlist", f"/{playback_id}/{rung}/index.m3u8"),
                 Endpoint("segment", f"/{playback_id}/{rung}/seg_00001.m4s")]
    connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{base}{endpoints[2].path}") as answer:
            segment_bytes = len(await answer.read())
        warm = [Endpoint(e.name, e.path) for e in endpoints]
        await open_loop(session, base, warm, rate, 1.0, 10.0, None)
        lags: list[float] = []
        await open_loop(session, base, endpoints, rate, seconds, 10.0, lags)
    lags.sort()
    return {"rate": rate, "seconds": seconds, "segment_bytes": segment_bytes,
            "client_lag_p99_ms": percentile(lags, 99),
            "endpoints": {e.name: e.summary() for e in endpoints}}


def top_rung(base: str, playback_id: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{base}/{playback_id}.m3u8", timeout=10) as answer:
        lines = answer.read().decode().splitlines()
    uris = [line.split("?")[0] for line in lines if line and not line.startswith("#")]
    return uris[0].split("/")[-2]


# --- report ------------------------------------------------------------------------------------------------------


def show(result: dict[str, Any], console: Console) -> None:
    startup = result["startup"]
    table = Table(title=f"Player startup, ms from navigation ({startup['runs']} runs each, {startup['browser']})")
    table.add_column("cache")
    for mark in MARKS:
        table.add_column(f"{mark} median", justify="right")
    table.add_column("firstframe p90", justify="right")
    table.add_column("play → first frame median", justify="right")
    for kind in ("cold", "warm"):
        row = startup[kind]
        table.add_row(kind, *(f"{row[mark]['median_ms']:.0f}" for mark in MARKS),
                      f"{row['firstframe']['p90_ms']:.0f}", f"{row['play_to_firstframe']['median_ms']:.0f}")
    console.print(table)
    load = result["delivery"]
    table = Table(title=f"Delivery under load: {load['rate']:g} req/s open loop for {load['seconds']:g} s "
                        f"(segment {load['segment_bytes'] / 1000:.0f} kB)")
    for column in ("endpoint", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for name, row in load["endpoints"].items():
        table.add_row(name, str(row["requests"]), str(row["error_count"]),
                      *(f"{row[key]}" for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")))
    console.print(table)
    verdict = ", ".join(f"{kind} {'[green]PASS[/]' if ok else '[red]FAIL[/]'}"
                        for kind, ok in result["target"]["pass"].items())
    console.print(f"target: median time to first frame < {TARGET_MS:g} ms — {verdict}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running API (default: start one in process)")
    parser.add_argument("--playback-id", help="a ready public playback id on --url")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per run before giving up")
    parser.add_argument("--rate", type=float, default=50.0, help="delivery requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="delivery load duration")
    parser.add_argument("--json", type=Path, default=RESULTS / "startup.json")
    args = parser.parse_args(argv)
    if bool(args.url) != bool(args.playback_id):
        parser.error("--url and --playback-id go together")
    if not os.path.exists(CHROMIUM):
        parser.error(f"{CHROMIUM} is missing: run `make system-deps`")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=140)
    with tempfile.TemporaryDirectory(prefix="kinoray-startup-") as temp:
        local = None if args.url else LocalApi(Path(temp), console, playback_ids=2 * args.runs + 2)
        try:
            base = (args.url or (local.url if local else "")).rstrip("/")
            playback_ids = [args.playback_id] if args.playback_id else local.playback_ids if local else []
            load0 = os.getloadavg()
            startup = startup_runs(base, playback_ids, args.runs, args.timeout, console)
            rung = top_rung(base, playback_ids[0])
            delivery = asyncio.run(delivery_load(base, playback_ids[0], rung, args.rate, args.seconds))
        finally:
            if local is not None:
                local.close()
    passed = {kind: startup[kind]["firstframe"]["median_ms"] < TARGET_MS for kind in ("cold", "warm")}
    result = {
        "benchmark": "startup",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "server": args.url or "in-process uvicorn (the edge's EdgeApp), SQLite, local storage",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_before": load0,
                    "loadavg_after": os.getloadavg()},
        "startup": startup,
        "delivery": delivery,
        "target": {"firstframe_median_ms": TARGET_MS, "pass": passed},
        "definitions": {
            "html": "navigation start → the page's last byte (PerformanceNavigationTiming.responseEnd)",
            "playerready": "navigation start → hls.js created, source set and media attached",
            "play": "navigation start → the video element's 'play' event (autoplay: once the manifest is parsed)",
            "playing": "navigation start → the video element's first 'playing' event",
            "play_to_firstframe": "play → first frame: Mux Data's 'video startup time' (the viewer's wait after "
                                  "asking to play)",
            "firstframe": "navigation start → the first requestVideoFrameCallback after 'playing' (a decoded frame "
                          "presented)",
            "cold": "a fresh browser context per run: nothing cached",
            "warm": "one browser context for all runs: the player's static files come from the HTTP cache (with "
                    "one playback id per run, the media does not; with --playback-id it does too)",
        },
    }
    show(result, console)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
