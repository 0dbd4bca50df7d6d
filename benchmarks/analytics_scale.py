"""The analytics engine at scale: 1 M views / ~30 M events over a week, queried through the real query code.

1. **Generate** the event log directly as Parquet (vectorised numpy, no collector): the viewer-traffic
   simulator (:mod:`kinoray.analytics.simulate`) draws every view's QoE, and each view becomes the event rows the
   collector would have written — playerready, viewstart, play, renditionchange, playing, a heartbeat every 10 s
   of playing, its rebuffers, pause + viewend (or an error, or an exit before start) — received in 10-s batches,
   one event file per hour of receipt (a real collector writes one per 5 s: more, smaller files).
2. **Roll up** the final views into view Parquet (:func:`kinoray.analytics.rollup.roll_up`, one process, as
   the job runner calls it, a day per call) up to an hour before the end: the last hour's views stay live. With
   ``--scale-rollup-hours H`` only the first H hours are rolled up for real (its throughput measured) and those
   view rows are repeated, shifted in time, up to an hour before the end (:func:`replicate`).
3. **Query** through :class:`kinoray.analytics.query.Query` as the Data API does (a new query per request):
   overall, breakdown and timeseries over the week, p50/p95, cold (caches emptied) and warm — with the last
   hour's views live (built from events once and kept between queries by
   :class:`kinoray.analytics.liveviews.LiveViews`; then, for comparison, built from events for every query),
   then again after rolling up the rest (every view final). Cold again with the job runner's saved live views
   (:meth:`kinoray.analytics.liveviews.LiveViews.save`, what its rollup tick writes): a fresh process seeds
   from them instead of building every live view from events.

    python benchmarks/analytics.py --scale only --scale-views 1000000
"""

from __future__ import annotations

import io
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kinoray.analytics.collect import DIMENSIONS
from kinoray.analytics.eventlog import EVENT_SCHEMA, EVENTS_PREFIX, FILES
from kinoray.analytics.liveviews import LIVE_VIEWS, SNAPSHOT_KEY, LiveViews
from kinoray.analytics.query import VIEWS, Filter, Query, Timeframe, parse_filters
from kinoray.analytics.rollup import roll_up, split_by_day
from kinoray.analytics.simulate import Scenario, Simulation
from kinoray.analytics.viewstore import (
    STORED,
    VIEWS_PREFIX,
    Watermark,
    current_parts,
    list_parts,
    read_watermark,
    write_part,
    write_watermark,
)
from kinoray.store.objects import ObjectStore

START = datetime(2026, 11, 23, tzinfo=UTC)
#: event codes in the order events at the same instant are sent
EVENTS = ("playerready", "viewstart", "play", "renditionchange", "playing", "hb", "rebufferend", "rebufferstart",
          "pause", "error", "viewend")
_CODE = {name: code for code, name in enumerate(EVENTS)}
_DATA = {"playerready": '{"player_width":1280,"player_height":720,"player_name":"kinoray-sim"}',
         "renditionchange": '{"video_source_bitrate":2500000,"video_source_width":1280,"video_source_height":720}',
         "error": '{"player_error_code":3,"player_error_message":"network error","player_error_severity":"fatal"}'}
_OS = {"Chrome": ("Windows", "desktop"), "Mobile Safari": ("iOS", "phone"), "Firefox": ("Windows", "desktop"),
       "Edge": ("Windows", "desktop")}


def _counter(counts: np.ndarray) -> np.ndarray:
    """0..count-1 for each group of ``counts`` (concatenated)."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def _dictionary(codes: np.ndarray, values: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(values, pa.string())).cast(pa.string())


def event_rows(sim: Simulation, first: int, last: int) -> tuple[pa.Table, np.ndarray]:
    """The event rows of views ``first``..``last - 1`` of ``sim`` and each row's receipt (ms), in view order."""
    t = sim.table
    n = last - first
    end = t.at_ms[first:last].astype(np.int64)
    watch = t.watch_ms[first:last].astype(np.int64)
    rebuffer_ms = t.rebuffer_ms[first:last].astype(np.int64)
    rebuffers = t.rebuffer_count[first:last].astype(np.int64)
    startup_f = t.startup_ms[first:last]
    started = ~np.isnan(startup_f)
    startup = np.where(started, startup_f, 0).astype(np.int64)
    failed = t.failed[first:last] == 1
    s0 = end - watch - 20
    playing_at = s0 + 20 + startup
    playing = np.where(started, watch - startup - rebuffer_ms, 0)
    beats = np.where(started, np.maximum(0, (playing - 1) // 10_000), 0)
    rebuffers = np.where(started, rebuffers, 0)

    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # view, code, time, playhead

    def block(views: np.ndarray, code: str | np.ndarray, at: np.ndarray, playhead: np.ndarray | None = None) -> None:
        codes = np.full(len(views), _CODE[code], np.int8) if isinstance(code, str) else code.astype(np.int8)
        parts.append((views, codes, at, playhead if playhead is not None else np.full(len(views), np.nan)))

    every = np.arange(n)
    block(every, "playerready", s0)
    block(every, "viewstart", s0 + 10)
    block(every, "play", s0 + 20)
    live = every[started]
    block(live, "renditionchange", s0[live] + 20)
    block(live, "playing", playing_at[live], np.zeros(len(live)))
    hb_view = np.repeat(every, beats)
    hb_j = _counter(beats) + 1
    block(hb_view, "hb", playing_at[hb_view] + 10_000 * hb_j, (10_000 * hb_j).astype(np.float64))
    rb_view = np.repeat(every, rebuffers)
    rb_k = _counter(rebuffers)
    length = rebuffer_ms[rb_view] // np.maximum(1, rebuffers[rb_view])
    stall_at = playing_at[rb_view] + playing[rb_view] - 1
    block(rb_view, "rebufferstart", stall_at + rb_k * length, playing[rb_view].astype(np.float64))
    block(rb_view, "rebufferend", stall_at + (rb_k + 1) * length, playing[rb_view].astype(np.float64))
    ended_ok = every[started & ~failed]
    block(ended_ok, "pause", end[ended_ok])
    block(ended_ok, "viewend", end[ended_ok])
    block(every[failed], "error", end[failed])
    exited = every[~started & ~failed]
    block(exited, "viewend", end[exited])

    view = np.concatenate([p[0] for p in parts])
    code = np.concatenate([p[1] for p in parts])
    at = np.concatenate([p[2] for p in parts])
    playhead = np.concatenate([p[3] for p in parts])
    order = np.lexsort((code, at, view))
    view, code, at, playhead = view[order], code[order], at[order], playhead[order]
    counts = np.bincount(view, minlength=n)
    sequence = _counter(counts) + 1
    received = (at // 10_000 + 1) * 10_000  # a batch every 10 s

    index = first + view
    columns: dict[str, pa.Array] = {
        "view_id": _dictionary(view, [f"v{first + i:08d}" for i in range(n)]),
        "event": _dictionary(code, list(EVENTS)),
        "view_sequence_number": pa.array(sequence, pa.int64()),
        "viewer_time": pa.array(at, pa.int64()),
        "playhead_ms": pa.array(playhead, pa.float64(), from_pandas=True),
        "received_at": pa.array(received, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }
    dims = sim.table.dimensions
    per_view: dict[str, tuple[np.ndarray, list[str]]] = {}
    for name in ("country", "asn", "browser", "cdn"):
        values, inverse = np.unique(dims[name][first:last].astype(str), return_inverse=True)
        per_view[name] = (inverse, list(values))
    browsers = per_view["browser"][1]
    browser_of = per_view["browser"][0]
    systems = sorted({_OS[b][0] for b in browsers})
    devices = sorted({_OS[b][1] for b in browsers})
    per_view["operating_system"] = (np.array([systems.index(_OS[b][0]) for b in browsers])[browser_of], systems)
    per_view["viewer_device_category"] = (np.array([devices.index(_OS[b][1]) for b in browsers])[browser_of],
                                          devices)
    titles = [f"Simulated {i}" for i in range(20)]
    per_view["video_title"] = ((first + np.arange(n)) % 20, titles)
    per_view["viewer_user_id"] = (np.arange(n), [f"viewer-{(first + i) % 99_991}" for i in range(n)])
    constants = {"env_key": "sim", "player_name": "kinoray-sim", "player_software": "hls.js", "stream_type": "on-demand"}
    for name in DIMENSIONS:
        if name in per_view:
            codes, values = per_view[name]
            columns[name] = _dictionary(codes[view], values)
        elif name in constants:
            columns[name] = _dictionary(np.zeros(len(view), np.int32), [constants[name]])
        else:
            columns[name] = pa.nulls(len(view), pa.string())
    data = [_DATA.get(name, "{}") for name in EVENTS]
    columns["data"] = _dictionary(code, data)
    del index
    return pa.table(columns, schema=EVENT_SCHEMA), received


def generate(store: ObjectStore, views: int, days: float, seed: int = 16,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``views`` simulated views (over ``days`` from :data:`START`) as event Parquet: one file per hour
    of receipt (per chunk of views)."""
    started = time.perf_counter()
    sim = Simulation(Scenario(start=START, days=days, views_per_minute=views / (days * 1440), seed=seed,
                              watch_minutes=3.0))
    total = len(sim)
    events = files = 0
    chunk = 100_000
    for first in range(0, total, chunk):
        table, received = event_rows(sim, first, min(total, first + chunk))
        hours = received // 3_600_000
        order = np.argsort(hours, kind="stable")
        table, hours = table.take(pa.array(order)), hours[order]
        bounds = np.flatnonzero(np.diff(hours)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(hours)], strict=True):
            hour = int(hours[lo])
            stamp = (hour + 1) * 3_600_000
            day = datetime.fromtimestamp(hour * 3600, UTC).date()
            out = io.BytesIO()
            pq.write_table(table.slice(lo, hi - lo), out, compression="zstd")
            store.put_bytes(out.getvalue(), f"{EVENTS_PREFIX}/date={day.isoformat()}/{stamp}-{uuid.uuid4().hex[:12]}"
                                            ".parquet")
            files += 1
        events += table.num_rows
        log(f"  generated {min(total, first + chunk):,}/{total:,} views, {events:,} events")
    event_bytes = sum(store.size(key) for key in store.list(EVENTS_PREFIX))
    return {"views": total, "events": events, "files": files, "seconds": round(time.perf_counter() - started, 1),
            "event_bytes": event_bytes, "event_bytes_per_view": round(event_bytes / total, 1),
            "end": START + timedelta(days=days)}


def timed(call: Callable[[], Any], repeats: int, cold: bool) -> dict[str, float]:
    """p50/p95 of ``call``; ``cold``: the process's caches (parsed event files and view parts, built views, the
    live views) emptied before each."""
    samples = []
    for _ in range(repeats):
        if cold:
            for cache in (FILES, VIEWS, STORED, LIVE_VIEWS):
                cache.clear()
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 1),
            "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 1)}


def queries(store: ObjectStore, timeframe: Timeframe, now: datetime, repeats: int,
            live_views: LiveViews | None = LIVE_VIEWS, warm: bool = True) -> dict[str, Any]:
    """The four queries timed, cold (and ``warm``); ``live_views=None``: the views past the watermark built
    from events for each query (as before :class:`LiveViews`)."""
    def query(filters: Sequence[Filter] = ()) -> Query:
        return Query(store, timeframe, filters, now=now, live_views=live_views)

    calls = {
        "overall video_startup_time": lambda: query().overall("video_startup_time"),
        "overall viewer_experience_score, country:US": lambda: query(parse_filters(["country:US"])).overall(
            "viewer_experience_score"),
        "breakdown rebuffer_percentage by country": lambda: query().breakdown("rebuffer_percentage", "country"),
        "timeseries views (hour)": lambda: query().timeseries("views", "hour"),
    }
    out = {}
    for name, call in calls.items():
        out[f"{name}, cold"] = timed(call, max(2, repeats // 4), cold=True)
        if warm:
            out[f"{name}, warm"] = timed(call, repeats, cold=False)
    return out


def save_live(store: ObjectStore, now: datetime) -> dict[str, Any]:
    """The job runner's live-view snapshot saved twice at ``now`` (its first tick builds every live view, the
    next reuses them), timed."""
    runner, seconds = LiveViews(), []
    watermark = read_watermark(store)
    assert watermark is not None
    for _ in range(2):
        started = time.perf_counter()
        assert runner.save(store, watermark, now)
        seconds.append(round(time.perf_counter() - started, 2))
    return {"first_save_s": seconds[0], "next_save_s": seconds[1], "bytes": store.size(SNAPSHOT_KEY),
            "views": pq.read_metadata(store.path(SNAPSHOT_KEY)).num_rows}


def vary(rows: pa.Table, copy: int) -> pa.Table:
    """``rows`` with copy ``copy``'s own QoE and dimension mix: startup and rebuffer times scaled (0.7–1.3×,
    rebuffering within the watch time) and a share of the views (5–25 %) moved to one country, drawn per copy —
    so the days :func:`replicate` writes are not the same rows again (the scores are left as rolled up)."""
    rng = np.random.default_rng(copy)
    startup, stall = 0.7 + 0.6 * rng.random(2)
    out = rows
    for name, factor in (("video_startup_time", startup), ("rebuffer_duration", stall)):
        scaled = pc.cast(pc.round(pc.multiply(pc.cast(rows[name], pa.float64()), float(factor))), pa.int64())
        if name == "rebuffer_duration":
            scaled = pc.min_element_wise(scaled, rows["watch_time"])
        out = out.set_column(out.schema.get_field_index(name), name, scaled)
    countries = pc.unique(rows["country"].combine_chunks()).drop_null().to_pylist()
    if countries:
        moved = rng.random(rows.num_rows) < 0.05 + 0.2 * rng.random()
        country = pc.if_else(pa.array(moved), pa.scalar(countries[int(rng.integers(len(countries)))]),
                             rows["country"])
        out = out.set_column(out.schema.get_field_index("country"), "country", country)
    return out


def replicate(store: ObjectStore, until: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Extend the materialized views up to ``until`` (ms) with copies of the rolled-up ones: shifted in time by
    the span they cover (all four time columns), view ids suffixed, each copy's QoE and country mix shifted
    (:func:`vary`); committed like the rollup (parts, then the watermark). Stands in for rolling up every day
    when the machine has no time for it: the rows are real rollup output, repeated with a per-copy shift."""
    watermark = read_watermark(store)
    assert watermark is not None
    parts, _ = current_parts(list_parts(store), watermark)
    sample = pa.concat_tables([STORED.get(store, part.key) for part in parts])
    first = int(pc.min(sample["last_received"]).as_py())
    span = watermark.end - first
    written = 0
    copy = 1
    while watermark.end < until:
        shifted = {name: pc.add(sample[name], copy * span) for name in
                   ("view_start", "view_end", "first_received", "last_received")}
        rows = vary(sample, copy)
        for name, column in shifted.items():
            rows = rows.set_column(rows.schema.get_field_index(name), name, column)
        rows = rows.set_column(0, "view_id", pc.binary_join_element_wise(sample["view_id"], f"~{copy}", ""))
        rows = rows.filter(pc.less(rows["last_received"], until))
        lo, hi = watermark.end, min(until, watermark.end + span)
        for day, day_rows in sorted(split_by_day(rows).items()):
            day_lo = max(lo, int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000))
            write_part(store, day, day_lo, min(hi, day_lo - day_lo % 86_400_000 + 86_400_000), day_rows)
            written += day_rows.num_rows
        watermark = Watermark(watermark.start, hi)
        write_watermark(store, watermark)
        copy += 1
        log(f"  replicated {written:,} views")
    return {"sample_views": sample.num_rows, "replicated_views": written, "copies": copy - 1}


def run(views: int, days: float, repeats: int, log: Callable[[str], None] = print, directory: str | None = None,
        rollup_hours: float | None = None, live_from_events: bool = True) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kinoray-analytics-scale-", dir=directory) as root:
        store = ObjectStore(os.path.join(root, "store"))
        made = generate(store, views, days, log=log)
        end = made.pop("end")
        log(f"generated {made['views']:,} views / {made['events']:,} events in {made['seconds']} s")
        timeframe = Timeframe(START, end + timedelta(hours=1))
        result: dict[str, Any] = {"generate": made, "load_average": os.getloadavg()}

        def catch_up(now: datetime) -> tuple[int, float]:
            """The runner's rollup at ``now``, called until it has caught up (a day per call)."""
            started, rolled = time.perf_counter(), 0
            while True:
                step = roll_up(store, now, grace_seconds=0, max_days=1)
                rolled += step.views
                log(f"  rolled up {rolled:,} views ({time.perf_counter() - started:.0f} s)")
                if step.watermark is None or step.watermark.end >= int(now.timestamp() * 1000) - 3_600_000:
                    return rolled, time.perf_counter() - started

        # the last hour's views still live (not final): queries merge them, built from events
        if rollup_hours is None:
            rolled, seconds = catch_up(end)
        else:  # a sample rolled up for real, repeated up to an hour before the end
            rolled, seconds = catch_up(START + timedelta(hours=rollup_hours + 1))
            result["replicated"] = replicate(store, int(end.timestamp() * 1000) - 3_600_000, log)
        result["queries_last_hour_live"] = queries(store, timeframe, end, repeats)
        log("queried with the last hour live")
        result["live_snapshot"] = save_live(store, end)
        log(f"runner saved the live views: {result['live_snapshot']}")
        result["queries_last_hour_live_seeded"] = queries(store, timeframe, end, repeats, warm=False)
        log("queried cold with the last hour live, seeded from the runner's snapshot")
        store.delete(SNAPSHOT_KEY)
        if live_from_events:
            result["queries_last_hour_live_from_events"] = queries(store, timeframe, end, repeats, live_views=None)
            log("queried with the last hour live, built from events for each query")
        more, more_seconds = catch_up(end + timedelta(hours=2))  # every view final
        rolled, seconds = rolled + more, seconds + more_seconds
        parts = [key for key in store.list(VIEWS_PREFIX) if key.endswith(".parquet")]
        view_bytes = sum(store.size(key) for key in parts)
        stored = sum(pq.read_metadata(store.path(key)).num_rows for key in parts)
        result["rollup"] = {"views": rolled, "seconds": round(seconds, 1),
                            "views_per_second": round(rolled / seconds), "view_bytes": view_bytes,
                            "materialized_views": stored, "view_bytes_per_view": round(view_bytes / max(1, stored), 1),
                            "parts": len(parts)}
        log(f"rolled up {rolled:,} views in {seconds:.0f} s")
        result["queries_all_final"] = queries(store, timeframe, end + timedelta(hours=2), repeats)
        result["load_average_after"] = os.getloadavg()
        return result


def report(result: dict[str, Any], console: Any) -> None:
    """The scale results as a table."""
    from rich.table import Table

    made, rolled = result["generate"], result["rollup"]
    table = Table(title=f"analytics at scale: {made['views']:,} views / {made['events']:,} events, one process "
                        f"(load average {result['load_average'][0]:.1f} → {result['load_average_after'][0]:.1f})")
    table.add_column("measure")
    table.add_column("result", justify="right")
    table.add_row("generate the event log (vectorised)", f"{made['seconds']} s, {made['files']} files")
    table.add_row("event Parquet bytes per view", f"{made['event_bytes_per_view']:,}")
    table.add_row("rollup (one process)", f"{rolled['seconds']} s: {rolled['views_per_second']:,} views/s")
    table.add_row("view Parquet bytes per view", f"{rolled['view_bytes_per_view']:,} ({rolled['parts']} parts)")
    if "live_snapshot" in result:
        saved = result["live_snapshot"]
        table.add_row("runner's live-view snapshot: first / next save",
                      f"{saved['first_save_s']} s / {saved['next_save_s']} s ({saved['views']:,} views, "
                      f"{saved['bytes']:,} bytes)")
    for section, label in (("queries_last_hour_live", "last hour live"),
                           ("queries_last_hour_live_seeded", "last hour live, seeded from the snapshot"),
                           ("queries_last_hour_live_from_events", "last hour live, built per query"),
                           ("queries_all_final", "all final")):
        for name, timing in result.get(section, {}).items():
            table.add_row(f"{label}: {name}", f"p50 {timing['p50_ms']} ms, p95 {timing['p95_ms']} ms")
    console.print(table)
