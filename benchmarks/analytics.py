"""Analytics engine throughput on this machine, without servers: how many Mux Data beacon events one collector
process ingests per second (parse + expand + carry-forward + enrichment + Parquet write), and how long the Data
API's queries take over a generated set of views (p50/p95 of overall, breakdown and timeseries, and one view),
cold (the process's caches of parsed files and built views emptied first) and warm (a replica's repeat query);
erasing one viewer from every partition; what CMCD costs the edge's request path and its drain thread;
insights, comparisons, errors and a day's view export over the same views; and the traffic forecast's backtest
(MAPE on a held-out day) on four weeks of synthetic hourly traffic, against seasonal naive.

Views come from a small traffic simulator: each view is a Mux Data SDK event sequence (playerready, viewstart,
play, renditionchange, playing, heartbeats, rebuffers, pause/viewend, some errors and exits before start) with
its QoE drawn per browser and country, sent in batches of up to 300 events as ``mux-embed`` would.

Last, the anomaly detectors (kinoray.analytics.anomaly) on the viewer-traffic simulator
(kinoray.analytics.simulate: four days, four planted incidents, a flash crowd) for each of a few seeds: precision,
recall and time to detect of every candidate (``--anomaly only`` runs just that section).

First, unless ``--realtime skip``: the real-time lag under load — 5,000 concurrent views' beacons through the
production edge into Redis, a probe view's changes awaited in ``/data/v1/realtime/...`` (servers, unlike the
rest: :mod:`analytics_realtime`, ~1.5 min; skipped without an empty Redis database of its own).

    python benchmarks/analytics.py --views 2000            # prints a table, writes benchmarks/results/analytics.json
    python benchmarks/analytics.py --scale only            # 1 M views / ~30 M events: rollup + queries at scale
                                                           # (benchmarks/analytics_scale.py; analytics_scale.json)
    python benchmarks/analytics.py --realtime only         # real-time lag under 5,000 concurrent views (~2 min)
                                                           # (benchmarks/analytics_realtime.py; analytics_realtime.json)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics_scale import timed  # noqa: E402  (p50/p95, caches emptied for cold runs)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from kinoray.analytics import (  # noqa: E402
    Collector,
    EventWriter,
    MemoryViewStates,
    StoreViewStates,
    parse_batch,
)
from kinoray.analytics.cmcd import CMCD_HEADERS, CmcdBuffer  # noqa: E402
from kinoray.analytics.compare import all_metrics, experiment  # noqa: E402
from kinoray.analytics.errors import error_groups  # noqa: E402
from kinoray.analytics.exports import export_day  # noqa: E402
from kinoray.analytics.forecast import backtest  # noqa: E402
from kinoray.analytics.insights import insights  # noqa: E402
from kinoray.analytics.privacy import erase_viewer  # noqa: E402
from kinoray.analytics.query import Query, Timeframe  # noqa: E402
from kinoray.store.objects import ObjectStore  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
AGENTS = {
    "Chrome": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36",
    "Safari iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                  "Version/17.2 Mobile/15E148 Safari/604.1",
    "Firefox": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
}
ADDRESSES = {"US": "8.8.8.8", "GB": "81.2.69.142", "DE": "46.4.0.1", "JP": "1.0.16.1"}


def simulate_view(rng: random.Random, index: int, start_ms: int) -> tuple[list[dict[str, Any]], str, str]:
    """One view's events (short keys), its User-Agent and client address."""
    browser, country = rng.choice(list(AGENTS)), rng.choice(list(ADDRESSES))
    slow = 3.0 if (browser, country) == ("Firefox", "JP") else 1.0  # a planted bad segment
    view_id = f"bench-{index:08d}"
    now, sequence, events = start_ms, 0, []

    def emit(gap: float, name: str, **fields: Any) -> None:
        nonlocal now, sequence
        now += int(gap)
        sequence += 1
        events.append({"e": name, "xid": view_id, "uti": now, "xsqno": sequence, "pphti": 0, **fields})

    emit(0, "playerready", pnm="bench", psw="hls.js", vid=f"pb{index % 50}", ake="bench-env", pwd=1280, pht=720,
         uusid=f"user-{index % 500}", vtt=f"Title {index % 50}", sid=f"session-{index % 700}")
    emit(5, "viewstart")
    emit(10, "play")
    emit(50, "renditionchange", vsobi=rng.choice((800_000, 2_000_000, 5_000_000)), vsowd=1280, vsoht=720)
    if rng.random() < 0.03:
        emit(rng.uniform(1000, 5000), "viewend")  # exit before start
        return events, AGENTS[browser], ADDRESSES[country]
    if rng.random() < 0.02 * slow:
        emit(rng.uniform(200, 3000), "error", percd=rng.choice((2, 3, 4)), perme="network error")
        return events, AGENTS[browser], ADDRESSES[country]
    emit(rng.lognormvariate(6.3, 0.5) * slow, "playing")
    playhead = 0
    for _ in range(rng.randint(3, 40)):
        if rng.random() < 0.05 * slow:
            emit(rng.uniform(1000, 9000), "rebufferstart", pphti=playhead)
            emit(rng.uniform(200, 4000) * slow, "rebufferend", pphti=playhead)
        playhead += 10_000
        emit(10_000, "hb", pphti=playhead)
    emit(rng.uniform(0, 9000), "pause", pphti=playhead)
    emit(100, "viewend", pphti=playhead)
    return events, AGENTS[browser], ADDRESSES[country]


def batches(events: list[dict[str, Any]], size: int = 300) -> list[bytes]:
    return [json.dumps({"metadata": {"transmission_timestamp": events[i]["uti"]}, "events": events[i:i + size]})
            .encode() for i in range(0, len(events), size)]


def ingest(store: ObjectStore, views: list[tuple[list[dict[str, Any]], str, str]], shared_state: bool,
           batch_events: int = 300) -> dict[str, Any]:
    writer = EventWriter(store, flush_rows=20_000)
    states = StoreViewStates(store) if shared_state else MemoryViewStates()
    collector = Collector(states, writer.add, lambda playback_id: f"asset-{playback_id}")
    bodies = [(body, agent, address) for events, agent, address in views for body in batches(events, batch_events)]
    count = sum(len(events) for events, _, _ in views)
    started, cpu = time.perf_counter(), time.process_time()
    for body, agent, address in bodies:
        collector.collect(parse_batch(body), user_agent=agent, address=address)
    writer.close()
    wall, cpu_used = time.perf_counter() - started, time.process_time() - cpu
    return {"events": count, "batches": len(bodies), "seconds": round(wall, 3),
            "events_per_second": round(count / wall), "events_per_cpu_second": round(count / cpu_used),
            "view_state": "object store" if shared_state else "in process", "batch_events": batch_events}


def cmcd_costs(requests: int = 20_000) -> dict[str, float]:
    """What CMCD costs the edge: the check and append on the request path (what ``edge/stream.py`` runs), and
    the drain thread's parse, enrichment and row per request (hls.js's keys on a video segment)."""
    query = {"CMCD": 'bl=1900,br=869,cid="content-1",d=2000,dl=1900,mtp=32300,nor="..%2F360p%2Fseg_00004.m4s",'
                     'ot=v,rtp=4300,sf=h,sid="hlsjs-da36db20c1",st=v'}
    headers = {"host": "stream.example", "user-agent": AGENTS["Chrome"], "accept": "*/*", "origin": "https://a.b"}
    buffer = CmcdBuffer(lambda rows: None, max_pending=10 * requests)

    def request(query: dict[str, str]) -> None:
        cmcd = query.get("CMCD")
        if cmcd is not None or any(name in headers for name in CMCD_HEADERS):
            buffer.note(cmcd, headers, "pb1", "asset-1", "360p", "seg_00004.m4s", "8.8.8.8")

    check = min(timeit.repeat(lambda: request({}), number=requests, repeat=5)) / requests
    buffer.max_pending = requests
    note = min(timeit.repeat(lambda: request(query), number=requests, repeat=1)) / requests
    started = time.perf_counter()
    rows = buffer.drain()
    drain = (time.perf_counter() - started) / max(1, rows)
    return {"check_us": round(check * 1e6, 2), "note_us": round(note * 1e6, 2), "drain_us": round(drain * 1e6, 1)}


def synthetic_traffic(seed: int, days: int = 28, peak_views: float = 400.0) -> tuple[Any, Any]:
    """Hourly views and average concurrent viewers of ``days`` of synthetic traffic: Poisson arrivals per hour
    under a daily curve (evening peak, night trough), a weekend lift and a 20 % trend over the period; each view
    starts at a uniform moment of its hour and lasts an exponential time (mean 20 min); CCV per hour is the
    views' seconds of presence in it over 3600, as :func:`kinoray.analytics.forecast.hourly_traffic` counts."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    daily = 1 + 0.7 * np.sin(2 * np.pi * ((hours % 24) - 14) / 24) + 0.2 * np.sin(4 * np.pi * (hours % 24) / 24)
    rate = peak_views / 1.9 * daily * np.where((hours // 24) % 7 >= 5, 1.15, 1.0) * (1 + 0.2 * hours / hours.size)
    views = rng.poisson(rate)
    begin = np.repeat(hours * 3600.0, views) + rng.uniform(0, 3600, views.sum())
    end = begin + rng.exponential(1200, views.sum())
    ccv = np.zeros(hours.size)
    for hour in hours:
        overlap = np.minimum(end, (hour + 1) * 3600.0) - np.maximum(begin, hour * 3600.0)
        ccv[hour] = overlap[overlap > 0].sum() / 3600
    return views.astype(float), ccv


def forecast_backtests(seeds: int = 5) -> dict[str, float]:
    """Mean backtest MAPE (last day held out) of the forecast model and of seasonal naive over ``seeds`` runs."""
    scores: dict[str, list[float]] = {"views_mape": [], "views_seasonal_naive_mape": [], "ccv_mape": [],
                                      "ccv_seasonal_naive_mape": []}
    for seed in range(seeds):
        for name, series in zip(("views", "ccv"), synthetic_traffic(seed), strict=True):
            result = backtest(series)
            assert result is not None and result.mape is not None and result.seasonal_naive_mape is not None
            scores[f"{name}_mape"].append(result.mape)
            scores[f"{name}_seasonal_naive_mape"].append(result.seasonal_naive_mape)
    return {name: round(statistics.mean(values), 4) for name, values in scores.items()}


def anomaly_detection(seeds: list[int], console: Console, out: Path) -> dict[str, Any]:
    """Every anomaly-detector candidate on the simulator's default scenario (4 days, 60 views/min, four planted
    incidents and a flash crowd) for each seed: precision, recall, time to detect, seconds per run; the chosen
    one (kinoray.analytics.anomaly.DEFAULT_DETECTOR) should lead on precision at full recall."""
    from kinoray.analytics.anomaly import DEFAULT_DETECTOR, DETECTORS, detect, evaluate
    from kinoray.analytics.simulate import Simulation, default_scenario

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in DETECTORS}
    for seed in seeds:
        simulation = Simulation(default_scenario(seed=seed))
        for name in DETECTORS:
            started = time.perf_counter()
            findings = detect(simulation.table, detector=name)
            seconds = time.perf_counter() - started
            result = evaluate(findings, simulation.truth())
            runs[name].append({"seed": seed, "views": len(simulation), "findings": result.findings,
                               "precision": round(result.precision, 3), "recall": round(result.recall, 3),
                               "detect_seconds": list(result.detect_seconds), "run_seconds": round(seconds, 1),
                               "named": dict(result.named)})
    table = Table(title=f"anomaly detection on the simulator, seeds {', '.join(map(str, seeds))} "
                        f"(4 planted incidents per seed)")
    for column in ("detector", "precision (mean, min)", "recall (mean, min)", "time to detect (median, max)",
                   "s per run (4 days)"):
        table.add_column(column)
    summary: dict[str, Any] = {}
    for name, items in runs.items():
        precision = [item["precision"] for item in items]
        recall = [item["recall"] for item in items]
        detected = [second for item in items for second in item["detect_seconds"]]
        summary[name] = {"precision_mean": round(statistics.mean(precision), 3), "precision_min": min(precision),
                         "recall_mean": round(statistics.mean(recall), 3), "recall_min": min(recall),
                         "detect_seconds_median": statistics.median(detected) if detected else None,
                         "detect_seconds_max": max(detected) if detected else None,
                         "run_seconds_mean": round(statistics.mean(item["run_seconds"] for item in items), 1)}
        row = summary[name]
        table.add_row(f"{name}{' (chosen)' if name == DEFAULT_DETECTOR else ''}",
                      f"{row['precision_mean']:.2f}, {row['precision_min']:.2f}",
                      f"{row['recall_mean']:.2f}, {row['recall_min']:.2f}",
                      f"{(row['detect_seconds_median'] or 0) / 60:.0f} min, {(row['detect_seconds_max'] or 0) / 60:.0f} min",
                      f"{row['run_seconds_mean']}")
    console.print(table)
    for description, named in runs[DEFAULT_DETECTOR][0]["named"].items():
        console.print(f"  planted {description} → {named}")
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(), "seeds": seeds,
              "chosen": DEFAULT_DETECTOR, "summary": summary, "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--json", type=Path, default=RESULTS / "analytics.json")
    parser.add_argument("--anomaly-seeds", default="16,17,18,19,20",
                        help="simulator seeds the anomaly detectors are measured on (results: analytics_anomaly.json)")
    parser.add_argument("--anomaly", choices=("also", "only", "skip"), default="also",
                        help="run the anomaly-detection section too, alone, or not")
    parser.add_argument("--scale", choices=("also", "only", "skip"), default="skip",
                        help="run the at-scale section (generated event log, rollup, queries; results: "
                             "analytics_scale.json) too, alone, or not (default: it takes tens of minutes)")
    parser.add_argument("--scale-views", type=int, default=1_000_000)
    parser.add_argument("--scale-days", type=float, default=7.0)
    parser.add_argument("--scale-rollup-hours", type=float, default=None,
                        help="roll up only the first hours for real and repeat those view rows up to the end "
                             "(default: roll up everything)")
    parser.add_argument("--scale-skip-from-events", action="store_true",
                        help="leave out the queries that build the live views from events for every query")
    parser.add_argument("--realtime", choices=("also", "only", "skip"), default="also",
                        help="run the real-time lag section (the edge under --realtime-views views, a probe view "
                             "polled in /data/v1/realtime; results: analytics_realtime.json) too, alone, or not")
    parser.add_argument("--realtime-views", type=int, default=5000, help="concurrent views (heartbeats every 10 s)")
    parser.add_argument("--realtime-seconds", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--realtime-redis", default="redis://127.0.0.1:6379/11",
                        help="an empty Redis database of the benchmark's own (its kinoray:* keys deleted after)")
    parser.add_argument("--realtime-edge-workers", type=int, default=2)
    args = parser.parse_args()
    console = Console()
    RESULTS.mkdir(exist_ok=True)  # ignored by git: a fresh checkout has none
    if args.realtime != "skip":
        import analytics_realtime

        try:
            lagged = analytics_realtime.run(args.realtime_views, args.realtime_seconds, args.realtime_redis,
                                            args.realtime_edge_workers, log=console.log)
        except analytics_realtime.Unavailable as error:
            console.print(f"real time: skipped ({error})")
        else:
            analytics_realtime.report(lagged, console)
            (RESULTS / "analytics_realtime.json").write_text(json.dumps(lagged, indent=2) + "\n")
        if args.realtime == "only":
            return
    if args.scale != "skip":
        import analytics_scale

        found = analytics_scale.run(args.scale_views, args.scale_days, args.repeats, log=console.log,
                                    rollup_hours=args.scale_rollup_hours,
                                    live_from_events=not args.scale_skip_from_events)
        analytics_scale.report(found, console)
        (RESULTS / "analytics_scale.json").write_text(json.dumps(found, indent=2, default=str) + "\n")
        if args.scale == "only":
            return
    if args.anomaly == "only":
        anomaly_detection([int(seed) for seed in args.anomaly_seeds.split(",")], console,
                          RESULTS / "analytics_anomaly.json")
        return
    rng = random.Random(args.seed)
    start = int(time.time() * 1000) - 3_600_000
    views = [simulate_view(rng, index, start + index * 1000) for index in range(args.views)]
    with tempfile.TemporaryDirectory(prefix="kinoray-analytics-bench-") as directory:
        scratch = ObjectStore(os.path.join(directory, "scratch"))
        shared = ingest(scratch, views[: max(1, args.views // 4)], shared_state=True)
        small = ingest(ObjectStore(os.path.join(directory, "small")), views[: max(1, args.views // 4)],
                       shared_state=True, batch_events=15)
        store = ObjectStore(os.path.join(directory, "store"))
        local = ingest(store, views, shared_state=False)
        parquet_bytes = sum(store.size(key) for key in store.list("analytics/events"))
        now = datetime.now(UTC)

        def query() -> Query:
            return Query(store, Timeframe(now - timedelta(hours=3), now), now=now)

        built = query()
        assert len(built.views) == args.views, len(built.views)
        calls = {
            "overall video_startup_time": lambda: query().overall("video_startup_time"),
            "breakdown rebuffer_percentage by country": lambda: query().breakdown("rebuffer_percentage", "country"),
            "timeseries views (minute)": lambda: query().timeseries("views"),
            "one view (video-views/{id})": lambda: query().view("bench-00000007"),
            "insights rebuffer_percentage": lambda: insights(query().views, "rebuffer_percentage"),
            "insights video_startup_time (median)": lambda: insights(query().views, "video_startup_time"),
            "comparison (every metric)": lambda: all_metrics(query().views),
            "A/B video_startup_time by browser": lambda: experiment(query().views, "video_startup_time", "browser"),
            "errors": lambda: error_groups(query().views),
        }
        queries = {f"{name}, {state}": timed(call, args.repeats, cold=state == "cold")
                   for name, call in calls.items() for state in ("cold", "warm")}
        worst = sorted(built.breakdown("video_startup_time", "browser"), key=lambda row: row["negative_impact"])[0]
        top = insights(built.views, "video_startup_time")[0]
        started = time.perf_counter()
        exported = sum(export_day(store, now.date(), now=now).values())
        export_seconds = time.perf_counter() - started
        started = time.perf_counter()
        erased = erase_viewer(store, "user-7")  # one viewer's views out of every partition (files rewritten)
        erasure = {"seconds": round(time.perf_counter() - started, 3), "views": len(erased.view_ids),
                   "rows": erased.rows_removed, "files_rewritten": erased.files_rewritten}
    cmcd = cmcd_costs()
    forecast = forecast_backtests()
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(), "views": args.views,
              "ingest": local, "ingest_shared_state": shared, "ingest_shared_state_small_batches": small, "parquet_bytes": parquet_bytes,
              "bytes_per_view": round(parquet_bytes / args.views), "queries": queries,
              "worst_browser_for_startup": worst["field"], "erase_one_viewer": erasure, "cmcd": cmcd,
              "top_insight_startup": {"column": top.filter_column, "value": top.filter_value,
                                      "negative_impact_ms": round(top.negative_impact_score, 1),
                                      "interval_ms": [round(x, 1) for x in top.interval]},
              "export_day": {"views": exported, "seconds": round(export_seconds, 3)}, "forecast_backtest": forecast}
    table = Table(title=f"analytics, {args.views} views / {local['events']} events, one process")
    table.add_column("measure")
    table.add_column("result", justify="right")
    table.add_row("ingest, view state in process", f"{local['events_per_second']:,} events/s "
                  f"({local['events_per_cpu_second']:,} per CPU-s)")
    table.add_row("ingest, view state in the object store", f"{shared['events_per_second']:,} events/s")
    table.add_row("ingest, object-store state, 15-event batches", f"{small['events_per_second']:,} events/s")
    table.add_row("Parquet bytes per view", f"{result['bytes_per_view']:,}")
    for name, timing in queries.items():
        table.add_row(f"query: {name}", f"p50 {timing['p50_ms']} ms, p95 {timing['p95_ms']} ms")
    table.add_row("erase one viewer (DELETE /data/v1/viewers/…)",
                  f"{erasure['seconds']} s: {erasure['views']} views, {erasure['files_rewritten']} files rewritten")
    table.add_row("CMCD on the edge's request path (check + append)", f"{cmcd['note_us']} µs/request "
                  f"(no CMCD: {cmcd['check_us']} µs)")
    table.add_row("CMCD drain (parse + enrich + row, its own thread)", f"{cmcd['drain_us']} µs/request")
    table.add_row("top insight, video_startup_time", f"{top.filter_column}={top.filter_value}: "
                  f"{top.negative_impact_score:.0f} ms [{top.interval[0]:.0f}, {top.interval[1]:.0f}]")
    table.add_row("export one day (Parquet + CSV)", f"{export_seconds:.2f} s for {exported} views")
    table.add_row("forecast backtest, views (MAPE, held-out day)",
                  f"{forecast['views_mape']:.1%} (seasonal naive {forecast['views_seasonal_naive_mape']:.1%})")
    table.add_row("forecast backtest, concurrent viewers (MAPE)",
                  f"{forecast['ccv_mape']:.1%} (seasonal naive {forecast['ccv_seasonal_naive_mape']:.1%})")
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    if args.anomaly == "also":
        anomaly_detection([int(seed) for seed in args.anomaly_seeds.split(",")], console,
                          RESULTS / "analytics_anomaly.json")


if __name__ == "__main__":
    main()
