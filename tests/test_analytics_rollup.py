"""The view rollup: final views materialized as view Parquet, queries over them merged with live views.

A simulated day and a half of traffic (kinoray.analytics.simulate) goes through the real collector into the
event log; every answer of the Data API's queries is taken before the rollup, with the previous implementation
(Python over built views) as the oracle, and again after materializing some or all of the views: they must be
the same. Then: running the rollup again changes nothing, a backfill replaces parts without duplicating views,
an erasure reaches the view Parquet, retention deletes it, and the Ray Data backfill job writes the same views.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from kinoray.analytics import Collector, EventWriter, MemoryViewStates, parse_batch
from kinoray.analytics.eventlog import FILES
from kinoray.analytics.liveviews import SNAPSHOT_KEY, LiveViews
from kinoray.analytics.privacy import erase_viewer, sweep_retention
from kinoray.analytics.query import METRICS, VIEWS, Query, Timeframe, ViewCache, aggregate, parse_filters
from kinoray.analytics.rollup import backfill, roll_up
from kinoray.analytics.simulate import Scenario, Simulation
from kinoray.analytics.views import View
from kinoray.analytics.viewstore import (
    METRIC_SQL,
    STORED,
    VIEWS_PREFIX,
    list_parts,
    read_watermark,
    view_rows,
)
from kinoray.store.objects import ObjectStore

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 30, 12, tzinfo=UTC)
END = START + timedelta(days=1.5)
#: The whole dataset: from a day before its first event (a query reads its events from the start's day on).
EVERYTHING = Timeframe(START - timedelta(days=1), END + timedelta(hours=2))


class PythonQuery(Query):
    """The query as it was before view rows: every metric aggregated in Python over built views."""

    def _sql_ready(self, metric_id: str) -> bool:
        return False


def _batch(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"metadata": {"transmission_timestamp": events[-1]["uti"]}, "events": events}).encode()


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return Simulation(Scenario(start=START, days=1.5, views_per_minute=0.3, seed=5, watch_minutes=1.0))


def _ingest(store: ObjectStore, sim: Simulation) -> None:
    """Every simulated view through the collector, in two batches: the first half of its events received when
    they were sent, the rest at its end (so a view's first and last receipts differ)."""
    writer = EventWriter(store, flush_rows=100_000)
    collector = Collector(MemoryViewStates(), writer.add)
    for index in range(len(sim)):
        events, agent, address = sim.beacons(index)
        half = max(1, len(events) // 2)
        for part in (events[:half], events[half:]):
            if part:
                collector.collect(parse_batch(_batch(part)), user_agent=agent, address=address,
                                  received_at=datetime.fromtimestamp(part[-1]["uti"] / 1000, UTC))
    writer.close()


@pytest.fixture()
def store(tmp_path, simulation) -> ObjectStore:
    store = ObjectStore(str(tmp_path / "objects"))
    _ingest(store, simulation)
    for cache in (FILES, VIEWS, STORED):
        cache.clear()
    return store


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


QUESTIONS = [(metric, None) for metric in METRICS] + [
    ("video_startup_time", "95th"), ("aggregate_startup_time", "count"), ("rebuffer_count", "95th"),
    ("rebuffer_percentage", "avg"), ("video_startup_time", "avg"), ("playing_time", "sum"), ("views", "sum")]


def answers(query_type: type[Query], store: ObjectStore, now: datetime, timeframe: Timeframe = EVERYTHING,
            filters: tuple[str, ...] = (), **options: Any) -> dict[str, Any]:
    """Every question the Data API asks of a query (made with ``options``), answered."""
    built = query_type(store, timeframe, parse_filters(filters), now=now, **options)  # one request's, asked it all

    def query() -> Query:
        return built

    out: dict[str, Any] = {}
    for metric, measurement in QUESTIONS:
        out[f"overall {metric} {measurement}"] = query().overall(metric, measurement)
    for metric in ("video_startup_time", "rebuffer_percentage", "views", "playback_failure_percentage",
                   "viewer_experience_score"):
        for dimension in ("country", "browser", "cdn"):
            out[f"breakdown {metric} {dimension}"] = query().breakdown(metric, dimension)
        out[f"timeseries {metric}"] = query().timeseries(metric, "hour")
    out["dimension country"] = query().dimension_values("country")
    for viewer, failed, descending, offset in ((None, False, True, 0), (None, False, False, 7), (None, True, True, 0),
                                               ("viewer-3", False, True, 0)):
        page, total = query().video_views(viewer, failed, descending, offset, limit=10)
        out[f"video views {viewer} {failed} {descending} {offset}"] = (
            total, [(view.id, view.view_start, view.view_end, view.dimensions, view.error_code, view.error_message,
                     view.watch_time, view.viewer_experience_score, view.playback_failure) for view in page])
    views = query().views
    out["views"] = [(view.id, view.watch_time, view.dimensions, view.error_code, view.viewer_experience_score)
                    for view in views]
    return out


def _assert_same(found: dict[str, Any], expected: dict[str, Any]) -> None:
    assert found.keys() == expected.keys()
    for key in expected:
        assert _close(found[key], expected[key]), (key, found[key], expected[key])


def test_every_metric_has_a_sql_form_equal_to_its_python_one(store) -> None:
    now = END + timedelta(hours=3)
    views = Query(store, EVERYTHING, now=now).views
    assert len(views) > 300 and any(view.playback_failure for view in views) and any(
        view.exit_before_video_start for view in views) and any(view.rebuffer_count for view in views)
    assert set(METRIC_SQL) == set(METRICS), "a metric without a SQL form is answered in Python (slowly at scale)"
    query = Query(store, EVERYTHING, now=now)
    for metric in METRICS:
        for measurement in ("avg", "median", "95th", "sum", "count"):
            sql = query.overall(metric, measurement)["value"]
            assert _close(sql, aggregate(METRICS[metric], views, measurement)), (metric, measurement)


def test_answers_are_the_same_before_and_after_the_rollup(store) -> None:
    now = END + timedelta(hours=3)
    oracle = answers(PythonQuery, store, now)
    _assert_same(answers(Query, store, now), oracle)
    filtered = answers(PythonQuery, store, now, filters=("country:US", "!browser:Firefox"))

    # part of the data materialized (the watermark mid-way through the second day), the rest live
    partial = roll_up(store, START + timedelta(hours=20), grace_seconds=0)
    assert partial.views > 0 and read_watermark(store) is not None
    _assert_same(answers(Query, store, now), oracle)
    _assert_same(answers(PythonQuery, store, now), oracle)  # the views themselves, merged

    # everything materialized
    done = roll_up(store, now, grace_seconds=0)
    assert done.watermark is not None and done.watermark.end > int(END.timestamp() * 1000)
    assert partial.views + done.views == len(oracle["views"])
    stored = Query(store, EVERYTHING, now=now)
    assert stored.stored.table.num_rows == len(oracle["views"]) and not stored.live
    _assert_same(answers(Query, store, now), oracle)
    _assert_same(answers(Query, store, now, filters=("country:US", "!browser:Firefox")), filtered)


def test_the_rollup_is_idempotent_and_a_backfill_replaces_parts(store) -> None:
    now = END + timedelta(hours=3)
    first = roll_up(store, now, grace_seconds=0)
    parts = sorted(part.key for part in list_parts(store))
    again = roll_up(store, now, grace_seconds=0)
    assert again.views == 0 and sorted(part.key for part in list_parts(store)) == parts
    expected = answers(Query, store, now)

    # a run that died after writing a part but before moving the watermark: the part is ignored, then deleted
    crashed = roll_up(store, now + timedelta(hours=30), grace_seconds=0)
    assert crashed.views == 0
    redone = backfill(store, START.date(), END.date(), now, grace_seconds=0)
    assert redone.views == first.views and redone.parts_deleted >= 1
    assert len(list_parts(store)) == len({part.day for part in list_parts(store)})  # one part per day now
    for cache in (FILES, VIEWS, STORED):
        cache.clear()
    _assert_same(answers(Query, store, now), expected)
    rows = sum(pq.read_metadata(store.path(part.key)).num_rows for part in list_parts(store))
    assert rows == first.views  # no view twice


def test_late_events_of_a_final_view_are_dropped(store, simulation) -> None:
    now = END + timedelta(hours=3)
    roll_up(store, now, grace_seconds=0)
    before = Query(store, EVERYTHING, now=now + timedelta(hours=2)).overall("views")
    view_id = Query(store, EVERYTHING, now=now).views[-1].id
    writer = EventWriter(store)
    collector = Collector(MemoryViewStates(), writer.add)
    late = now + timedelta(minutes=30)
    collector.collect(parse_batch(_batch([{"e": "hb", "xid": view_id, "uti": int(late.timestamp() * 1000),
                                           "xsqno": 999}])), received_at=late)
    writer.close()
    VIEWS.clear()
    after = Query(store, EVERYTHING, now=now + timedelta(hours=2))
    assert after.overall("views") == before and view_id not in {view.id for view in after.live}
    assert roll_up(store, now + timedelta(hours=3), grace_seconds=0).views == 0


def test_erasure_and_retention_reach_the_view_parquet(store) -> None:
    now = END + timedelta(hours=3)
    roll_up(store, now, grace_seconds=0)
    views = Query(store, EVERYTHING, now=now).views
    viewer = views[0].dimensions["viewer_user_id"]
    mine = {view.id for view in views if view.dimensions["viewer_user_id"] == viewer}
    assert mine
    erased = erase_viewer(store, viewer)
    assert mine <= erased.view_ids
    stored_ids = set()
    for part in list_parts(store):
        table = pq.read_table(store.path(part.key))
        stored_ids.update(table["view_id"].to_pylist())
        assert viewer not in table["viewer_user_id"].to_pylist()
    assert stored_ids and not stored_ids & mine
    VIEWS.clear()
    assert Query(store, EVERYTHING, now=now).overall("views")["total_views"] == len(views) - len(mine)

    assert sweep_retention(store, days=2, now=END + timedelta(days=1, hours=12)) >= 1  # keeps 12-01 on
    assert {part.day for part in list_parts(store)} == {date(2026, 12, 1)}


@pytest.mark.slow
def test_the_ray_data_backfill_job_writes_the_same_views(store, tmp_path) -> None:
    now = END + timedelta(hours=3)
    expected = answers(PythonQuery, store, now)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "KINORAY_DATA_DIR": str(tmp_path / "data")}
    env.pop("RAY_ADDRESS", None)
    temp_dir = f"/tmp/krviews-{secrets.token_hex(4)}"  # short: Ray's socket paths must fit in 107 bytes
    done = subprocess.run(
        [sys.executable, "-m", "kinoray.jobs.views_backfill", "--store", store.url, "--from",
         (START - timedelta(days=1)).date().isoformat(), "--to", END.date().isoformat(), "--now", now.isoformat(),
         "--grace-seconds", "0", "--num-cpus", "2", "--buckets", "4", "--temp-dir", temp_dir],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["views"] == len(expected["views"])
    assert all(key.startswith(VIEWS_PREFIX) for key in summary["parts"])
    for cache in (FILES, VIEWS, STORED):
        cache.clear()
    query = Query(store, EVERYTHING, now=now)
    assert query.stored.table.num_rows == len(expected["views"]) and not query.live
    _assert_same(answers(Query, store, now), expected)
    assert date.fromisoformat(summary["from"]) == (START - timedelta(days=1)).date()


def _send(store: ObjectStore, batches: list[tuple[list[dict[str, Any]], datetime]]) -> None:
    """Each batch through a collector, received at its time, written as an event file of its own (as a
    collector's flushes every 5 s)."""
    writer = EventWriter(store, flush_rows=100_000)
    collector = Collector(MemoryViewStates(), writer.add)
    for events, received in batches:
        collector.collect(parse_batch(_batch(events)), received_at=received)
        writer.flush()
    writer.close()


def test_live_views_kept_between_queries_are_the_views_built_from_events(store) -> None:
    """The views past the watermark kept by LiveViews (updated from the event files added or removed since, the
    watermark and the clock) answer every question as building them from events for each query does — and so
    do those of a fresh process seeded from the snapshot the runner saved earlier (then updated the same way)."""
    roll_up(store, START + timedelta(hours=20), grace_seconds=0)  # the watermark mid-way: ~17 h of views live
    kept = LiveViews()
    runner = LiveViews()  # the job runner's, saving its snapshot for starting processes
    frames = (Timeframe(START, END + timedelta(hours=2)), Timeframe(END - timedelta(hours=2), END + timedelta(hours=1)))

    def check(now: datetime, every_frame: bool = False, kept: LiveViews = kept) -> list[View]:
        """The kept live views equal to those built from events, metric for metric; with ``every_frame``, also
        every answer (over both timeframes, and with filters) equal to the Python oracle's over views built from
        events for the query (answers are computed from those rows: checked in full where the views changed)."""
        asked = ((frames[0], ()), (frames[1], ()), (frames[0], ("country:US", "!browser:Firefox")))
        for timeframe, filters in asked if every_frame else ():
            oracle = answers(PythonQuery, store, now, timeframe, filters, live_views=None, cache=ViewCache())
            _assert_same(answers(Query, store, now, timeframe, filters, live_views=kept), oracle)
        fast = Query(store, frames[0], now=now, live_views=kept)
        slow = Query(store, frames[0], now=now, live_views=None, cache=ViewCache())
        assert fast._live_selected() is not None and slow._live_selected() is None  # the two paths, really
        assert view_rows(fast.live).equals(view_rows(slow.live))
        assert [view.final for view in fast.live] == [view.final for view in slow.live]
        return fast.live

    start = END + timedelta(minutes=1)
    ms = int(start.timestamp() * 1000)
    opened = [{"e": "playerready", "xid": "live-1", "uti": ms, "xsqno": 1, "uusid": "live-viewer", "vtt": "Live",
               "pnm": "kinoray-sim"},
              {"e": "viewstart", "xid": "live-1", "uti": ms + 10, "xsqno": 2},
              {"e": "play", "xid": "live-1", "uti": ms + 20, "xsqno": 3},
              {"e": "playing", "xid": "live-1", "uti": ms + 900, "xsqno": 5, "pphti": 0}]  # 4 comes later
    _send(store, [(opened, start + timedelta(seconds=1))])
    live = check(start + timedelta(seconds=20), every_frame=True)
    assert {"live-1"} < {view.id for view in live} and len(live) > 100
    assert not next(view for view in live if view.id == "live-1").ended
    built = kept.built

    # nothing changed: nothing built again
    check(start + timedelta(seconds=20))
    assert kept.built == built

    # the runner saves its snapshot; a fresh process seeded from it builds nothing and answers the same
    assert runner.save(store, read_watermark(store), start + timedelta(seconds=20))
    saved = store.get_bytes(SNAPSHOT_KEY)
    assert pq.read_table(store.path(SNAPSHOT_KEY)).num_rows == len(live)

    def fresh() -> LiveViews:
        """A new process's LiveViews, the runner's snapshot from ``start`` + 20 s in the store."""
        store.put_bytes(saved, SNAPSHOT_KEY)
        return LiveViews()

    seeded = fresh()
    check(start + timedelta(seconds=20), every_frame=True, kept=seeded)
    assert seeded.built == 0

    # out of order (sequence 4 after 5), late, and the first batch re-sent (one file each): only live-1 built again
    later = [{"e": "renditionchange", "xid": "live-1", "uti": ms + 20, "xsqno": 4, "vsobi": 2_500_000,
              "vsowd": 1280, "vsoht": 720},
             {"e": "hb", "xid": "live-1", "uti": ms + 10_900, "xsqno": 6, "pphti": 10_000},
             {"e": "hb", "xid": "live-1", "uti": ms + 20_900, "xsqno": 7, "pphti": 20_000}]
    _send(store, [(later, start + timedelta(seconds=22)), (opened, start + timedelta(seconds=23))])
    live = check(start + timedelta(seconds=30))
    view = next(view for view in live if view.id == "live-1")
    assert kept.built == built + 1 and not view.ended and view.playing_time == 20_000 and view.rendition_switches == 0
    seeded = fresh()  # from the snapshot before those files: only live-1 built
    check(start + timedelta(seconds=30), every_frame=True, kept=seeded)
    assert seeded.built == 1

    # the view ends between two queries (idle for over a minute, no new event): built again, ended
    live = check(start + timedelta(minutes=2))
    view = next(view for view in live if view.id == "live-1")
    assert kept.built == built + 2 and view.ended and view.watch_time == 20_880
    seeded = fresh()  # live-1 built again (files added since the snapshot), ended
    check(start + timedelta(minutes=2), kept=seeded)
    assert seeded.built == 1
    assert runner.save(store, read_watermark(store), start + timedelta(minutes=2))
    saved = store.get_bytes(SNAPSHOT_KEY)

    # erasure of the viewer: the files holding its rows rewritten, its open view gone from the kept ones too; the
    # saved snapshot deleted; one saved before the erasure (a runner's save racing it) is not used — files it was
    # built from are gone — and the runner's next save leaves the viewer out
    erased = erase_viewer(store, "live-viewer")
    assert "live-1" in erased.view_ids and not store.exists(SNAPSHOT_KEY)
    live = check(start + timedelta(minutes=2), every_frame=True)
    assert "live-1" not in {view.id for view in live}
    FILES.clear()  # a new process: the files rewritten are gone for it
    seeded = fresh()
    assert "live-1" not in {view.id for view in check(start + timedelta(minutes=2), every_frame=True, kept=seeded)}
    assert seeded.built == len(live)  # built from events: the stale snapshot was not used
    assert runner.save(store, read_watermark(store), start + timedelta(minutes=2))
    rows = pq.read_table(store.path(SNAPSHOT_KEY))
    assert "live-1" not in rows["view_id"].to_pylist() and "live-viewer" not in rows["viewer_user_id"].to_pylist()
    saved = store.get_bytes(SNAPSHOT_KEY)
    seeded = fresh()
    check(start + timedelta(minutes=2), kept=seeded)
    assert seeded.built == 0

    # the rollup moves the watermark: the views it materialized leave the live ones; a late event of one of them
    # is dropped (the view keeps its final metrics) by both paths
    roll_up(store, END + timedelta(hours=2), grace_seconds=0)
    assert not check(END + timedelta(hours=2))
    assert not check(END + timedelta(hours=2), kept=fresh())  # seeded before the watermark moved
    late = END + timedelta(hours=2, minutes=5)
    final = Query(store, frames[1], now=late).views[-1].id
    _send(store, [([{"e": "hb", "xid": final, "uti": int(late.timestamp() * 1000), "xsqno": 999}], late)])
    assert not check(late + timedelta(seconds=10))
    assert not check(late + timedelta(seconds=10), kept=fresh())
