"""Server-side analytics without HTTP: CMCD (CTA-5004) parsing and the views CMCD-only viewers make, real-time
presences and metrics (in process and in Redis), retention and erasure by viewer over the Parquet event log
(checked by reading the files with pyarrow and querying them with DuckDB)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from kinoray.analytics import Collector, EventWriter, MemoryViewStates, build_views, parse_batch
from kinoray.analytics.cmcd import CmcdBuffer, parse_cmcd
from kinoray.analytics.privacy import erase_viewer, sweep_retention
from kinoray.analytics.query import Query, Timeframe
from kinoray.analytics.realtime import MemoryPresences, RedisPresences, breakdown, metric_value, timeseries
from kinoray.store.objects import ObjectStore
from tests.test_analytics import CHROME, Player, collect

REDIS_URL = "redis://127.0.0.1:6379/0"


# --- CMCD parsing ---------------------------------------------------------------------------------------------
def test_every_cmcd_key_type_is_parsed() -> None:
    text = ('bl=21300,br=3200,bs,cid="faec5fc2-ac30-11ea-bb37-0242ac130002",d=4004,dl=18500,mtp=48100,'
            'nor="..%2F300kbps%2Ftrack.m4v",nrr="12323-48763",ot=v,pr=1.08,rtp=12000,sf=d,'
            'sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st=v,su,tb=6000,v=1')
    assert parse_cmcd(text) == {
        "bl": 21300, "br": 3200, "bs": True, "cid": "faec5fc2-ac30-11ea-bb37-0242ac130002", "d": 4004,
        "dl": 18500, "mtp": 48100, "nor": "..%2F300kbps%2Ftrack.m4v", "nrr": "12323-48763", "ot": "v", "pr": 1.08,
        "rtp": 12000, "sf": "d", "sid": "6e2fb550-c457-11e9-bb97-0800200c9a66", "st": "v", "su": True,
        "tb": 6000, "v": 1}


def test_cmcd_in_headers_merges_the_four_shards() -> None:
    parsed = parse_cmcd(None, "br=3200,d=4004,ot=av,tb=6000", "bl=21300,mtp=25400,su", 'sid="s-1",sf=h,st=l',
                        "bs,rtp=15000")
    assert parsed == {"br": 3200, "d": 4004, "ot": "av", "tb": 6000, "bl": 21300, "mtp": 25400, "su": True,
                      "sid": "s-1", "sf": "h", "st": "l", "bs": True, "rtp": 15000}


def test_string_escapes_and_explicit_booleans() -> None:
    assert parse_cmcd(r'cid="a\"b\\c",bs=?0,su=?1') == {"cid": 'a"b\\c', "bs": False, "su": True}


@pytest.mark.parametrize("text", [
    "br=abc", "br=-5", "br=1.5", "bl=99999999999999999999", "bs=yes", "ot=x", "sf=hls", "st=live", "pr=fast",
    'sid="' + "x" * 65 + '"', 'cid="' + "y" * 129 + '"', 'sid="bad\x01"', "sid=with space", "=,==,,", '"', "",
    "br=" + "1" * 5000, "com.example-custom=1", "unknown=3", 'sid="unterminated',
])
def test_malformed_cmcd_is_ignored_never_raised(text: str) -> None:
    assert parse_cmcd(text) == {}


def test_a_bad_pair_does_not_hide_the_good_ones() -> None:
    assert parse_cmcd('br=x,bl=300,"junk",sid="s",ot=zz,su') == {"bl": 300, "sid": "s", "su": True}


# --- CMCD requests → views ------------------------------------------------------------------------------------
class Requests:
    """A player's CMCD request sequence, noted and drained like the edge does (server clock given)."""

    def __init__(self, sid: str = "sess-1") -> None:
        self.rows: list[dict[str, Any]] = []
        self.presences = MemoryPresences(window=30)
        self.buffer = CmcdBuffer(self.rows.extend, self.presences.update)
        self.sid = sid

    def request(self, at: float, cmcd: str, rendition: str | None = "720p", name: str = "seg_00001.m4s",
                playback_id: str = "pb1") -> Requests:
        self.buffer.note(f'sid="{self.sid}",{cmcd}', {"user-agent": CHROME, "host": "stream.example:8080"},
                         playback_id, "asset-1", rendition, name, "8.8.8.8")
        self.buffer._pending[-1] = (at, *self.buffer._pending[-1][1:])  # the request's server time
        return self


def test_a_cmcd_only_view_has_its_metrics() -> None:
    t = 1_796_000_000.0
    player = Requests()
    player.request(t, "ot=m,su,sf=h", None, "pb1.m3u8").request(t + 0.1, "ot=m,su,sf=h", "720p", "index.m3u8")
    player.request(t + 0.2, "ot=v,br=2000,su,bl=0").request(t + 1.0, "ot=v,br=2000,bl=2000")  # started
    player.request(t + 3.0, "ot=v,br=2000,bl=4000").request(t + 5.0, "ot=v,br=900,bl=3000", "360p")
    player.request(t + 9.0, "ot=v,br=900,bs,su,bl=0", "360p")  # starved: rebuffering since
    player.request(t + 10.0, "ot=v,br=900,su,bl=1000", "360p").request(t + 11.5, "ot=v,br=900,bl=2000", "360p")
    player.request(t + 15.0, "ot=v,br=900,bl=2000", "360p")
    assert player.buffer.drain() == 10
    rows = player.rows
    assert {row["event"] for row in rows} == {"cmcd"} and {row["view_id"] for row in rows} == {"sess-1"}
    assert rows[0]["playback_id"] == "pb1" and rows[0]["asset_id"] == "asset-1"
    assert rows[0]["browser"] in ("Chrome", "Chromium") and rows[0]["source_type"] == "hls"
    assert rows[0]["source_hostname"] == "stream.example" and "8.8.8.8" not in json.dumps(rows, default=str)
    (view,) = build_views(rows, now_ms=int((t + 200) * 1000))
    assert view.ended and view.played and view.video_startup_time is None and view.startup_time_score is None
    assert not view.exit_before_video_start and not view.playback_failure
    assert view.rebuffer_count == 1 and view.rebuffer_duration == 2500  # bs at +9 s → first request without su
    # watch time runs from the first frame (the play request is not visible): +1 s → +15 s, 2.5 s rebuffering
    assert view.watch_time == 14_000 and view.playing_time == 14_000 - 2500
    assert view.rendition_switches == 1
    # 2 Mbps from +1.0 to +5.0 s, 900 kbps playing for the rest
    expected = (2_000_000 * 4000 + 900_000 * (4000 + 3500)) / (4000 + 4000 + 3500)
    assert view.weighted_average_bitrate == pytest.approx(expected)
    assert view.playback_success_score == 1.0 and view.smoothness_score is not None
    assert view.smoothness_score < 1.0 and view.viewer_experience_score is not None


def test_requests_without_a_session_or_with_malformed_cmcd_make_no_rows() -> None:
    rows: list[dict[str, Any]] = []
    buffer = CmcdBuffer(rows.extend)
    buffer.note("br=3000,ot=v", {}, "pb1", "a1", "720p", "seg_00001.m4s", None)
    buffer.note("sid=,,,===", {"cmcd-session": 'sid="' + "z" * 100 + '"'}, "pb1", "a1", None, "pb1.m3u8", None)
    assert buffer.drain() == 0 and rows == []


def test_the_hot_path_is_an_append_and_is_bounded() -> None:
    buffer = CmcdBuffer(lambda rows: None, max_pending=3)
    for _ in range(5):
        buffer.note('sid="s"', {}, "pb", None, None, "x.m3u8", None)
    assert len(buffer._pending) == 3 and buffer.dropped == 2


# --- real time ------------------------------------------------------------------------------------------------
def beacon_presences(store: Any, views: int, country_of: Any, *, start: int) -> tuple[Any, list[Player]]:
    """``views`` players through a collector with ``store`` as real time, each started and heartbeating; the
    collector and the players."""
    players = []
    collector = Collector(MemoryViewStates(), lambda rows: None, {"pb1": "asset-1"}.get, store.update)
    for index in range(views):
        player = Player(view_id=f"rt-{uuid.uuid4().hex[:8]}", start=start, vid="pb1")
        player.at(0, "viewstart").at(10, "play").at(500, "playing").at(10_000, "hb")
        collector.collect(parse_batch(player.batch()), user_agent=CHROME, address=country_of(index),
                          received_at=datetime.now(UTC))
        players.append(player)
    return collector, players


@pytest.fixture(params=["memory", "redis"])
def presences(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        yield MemoryPresences(window=30)
        return
    store = RedisPresences(REDIS_URL, window=30)
    store.PREFIX = f"kinoray-test-rt-{uuid.uuid4().hex[:8]}"  # this test's keys only
    yield store
    for key in store.client.scan_iter(f"{store.PREFIX}:*"):
        store.client.delete(key)


def test_concurrent_viewers_by_country_and_their_end(presences) -> None:
    now_ms = int(time.time() * 1000)
    addresses = ["8.8.8.8", "8.8.8.8", "8.8.8.8", "81.2.69.160"]  # US ×3, GB ×1
    collector, players = beacon_presences(presences, 4, addresses.__getitem__, start=now_ms - 20_000)
    current = presences.current()
    assert metric_value("current-concurrent-viewers", current, now_ms) == 4
    by_country = {row["value"]: row for row in breakdown("current-concurrent-viewers", current, "country", now_ms)}
    assert {k: v["concurrent_viewers"] for k, v in by_country.items()} == {"US": 3, "GB": 1}
    assert by_country["US"]["negative_impact"] == 1
    assert {r["dimensions"]["asset_id"] for r in current} == {"asset-1"}
    # one ends (viewend), one rebuffers, one pauses
    for player, event in zip(players, ("viewend", "rebufferstart", "pause"), strict=False):
        player.events = []
        player.at(1000, event)
        collector.collect(parse_batch(player.batch()), user_agent=CHROME, address="8.8.8.8")
    current = presences.current()
    assert metric_value("current-concurrent-viewers", current, now_ms) == 2
    assert metric_value("current-rebuffering-percentage", current, now_ms) == 0.5
    # views not heard from for longer than the window drop out
    assert presences.current(now=time.time() + 31) == []
    points = timeseries("current-concurrent-viewers", presences, time.time() - 120, time.time())
    assert points[-1]["concurrent_viewers"] in (2, 0) and any(p["concurrent_viewers"] for p in points)


def test_failures_and_exits_are_shares_of_the_window_views() -> None:
    now_ms = 1_000_000
    base = {"first_ms": now_ms, "last_ms": now_ms, "dimensions": {}}
    records = [{**base, "view_id": "a", "state": "playing", "started": True, "bitrate": 2e6},
               {**base, "view_id": "b", "state": "failed", "started": False},
               {**base, "view_id": "c", "state": "ended", "started": False},
               {**base, "view_id": "d", "state": "failed", "started": True}]
    assert metric_value("playback-failure-percentage", records, now_ms) == 0.5
    assert metric_value("video-startup-failure-percentage", records, now_ms) == 0.25
    assert metric_value("exits-before-video-start", records, now_ms) == 0.25
    assert metric_value("current-concurrent-viewers", records, now_ms) == 3  # who just failed counts
    assert metric_value("current-average-bitrate", records, now_ms) == 2e6


def test_cmcd_viewers_are_concurrent_viewers_and_their_rebuffering_shows() -> None:
    now = time.time()
    player = Requests("rt-cmcd")
    player.request(now - 3, "ot=v,br=2000,su").request(now - 2, "ot=v,br=2000,bl=3000")
    player.buffer.drain()
    (record,) = player.presences.current()
    assert record["state"] == "playing" and record["dimensions"]["video_source_height"] == "720"
    assert record["bitrate"] == 2_000_000 and record["dimensions"]["playback_id"] == "pb1"
    player.request(now - 1, "ot=v,br=2000,bs,su")
    player.buffer.drain()
    assert metric_value("current-rebuffering-percentage", player.presences.current(), int(now * 1000)) == 1.0


# --- privacy --------------------------------------------------------------------------------------------------
def _events_of(store: ObjectStore) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in store.list("analytics/events"):
        rows.extend(pq.read_table(store.path(key)).to_pylist())
    return rows


def test_erasure_removes_every_event_of_the_viewers_views_and_nothing_else(tmp_path) -> None:
    store = ObjectStore(str(tmp_path))
    writer = EventWriter(store)
    day1, day2 = datetime(2026, 12, 1, 12, tzinfo=UTC), datetime(2026, 12, 2, 12, tzinfo=UTC)
    gone = Player(view_id="gone-1")  # the viewer id arrives with the second event: the first goes too
    gone.at(0, "viewstart").at(10, "play", uusid="erase-me").at(500, "playing")
    gone2 = Player(view_id="gone-2", uusid="erase-me").at(0, "viewstart").at(10, "play")
    kept = Player(view_id="kept-1", uusid="someone-else").at(0, "viewstart").at(10, "play").at(400, "playing")
    for at, bodies in ((day1, [gone.batch(gone.events[:1]), kept.batch()]), (day2, [gone.batch(gone.events[1:]),
                                                                                    gone2.batch()])):
        writer.add(collect(*bodies, received_at=at))
        writer.flush()
    before = _events_of(store)
    assert {r["view_id"] for r in before} == {"gone-1", "gone-2", "kept-1"}
    kept_before = sorted((r["view_id"], r["view_sequence_number"], r["data"]) for r in before
                         if r["view_id"] == "kept-1")
    forgotten: set[str] = set()
    result = erase_viewer(store, "erase-me", forget_views=forgotten.update)
    assert result.view_ids == forgotten == {"gone-1", "gone-2"} and result.rows_removed == 5
    after = _events_of(store)
    assert {r["view_id"] for r in after} == {"kept-1"}
    assert sorted((r["view_id"], r["view_sequence_number"], r["data"]) for r in after) == kept_before
    for key in store.list("analytics/events"):  # the raw files hold no trace of the viewer
        assert "erase-me" not in json.dumps(pq.read_table(store.path(key)).to_pylist(), default=str)
    with duckdb.connect() as connection:  # and DuckDB over the partitions finds none
        found = connection.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/analytics/events/*/*.parquet') "
                               "WHERE viewer_user_id = 'erase-me' OR data LIKE '%erase-me%'").fetchone()
    assert found == (0,)
    views = Query(store, Timeframe(day1 - timedelta(days=1), day2 + timedelta(days=1)), cache=None).views
    assert [view.id for view in views] == ["kept-1"]
    assert erase_viewer(store, "erase-me").rows_removed == 0  # idempotent


def test_retention_deletes_whole_old_partitions(tmp_path) -> None:
    store = ObjectStore(str(tmp_path))
    writer = EventWriter(store)
    now = datetime.now(UTC)  # the view-state file below is judged by its modification time, the wall clock's
    for days_ago in (200, 31, 30, 1):
        player = Player(view_id=f"v-{days_ago}").at(0, "viewstart")
        writer.add(collect(player.batch(), received_at=now - timedelta(days=days_ago)))
    writer.flush()
    store.put_bytes(b"{}", "analytics/view-state/old.json")
    assert sweep_retention(store, 30, now=now) == 2
    assert {r["view_id"] for r in _events_of(store)} == {"v-30", "v-1"}
    assert store.exists("analytics/view-state/old.json")  # written just now: kept
    assert sweep_retention(store, 30, now=now + timedelta(days=40)) == 2
    assert _events_of(store) == [] and not store.exists("analytics/view-state/old.json")


def test_a_session_seen_by_two_edge_processes_continues_where_the_other_left_it(presences) -> None:
    """Requests of one CMCD session reach two edge processes sharing the presences store: the second continues
    the first's record (started, bitrate) instead of starting the view over."""
    now = time.time()
    first, second = (CmcdBuffer(lambda rows: None, presences.update, presences=presences.get_many) for _ in "ab")
    for buffer, at, cmcd in ((first, now - 3, "ot=v,br=2000,su"), (first, now - 2, "ot=v,br=2000,bl=3000"),
                             (second, now - 1, "ot=v,bs,su")):
        buffer.note(f'sid="shared",{cmcd}', {}, "pb1", "asset-1", "720p", "seg_00001.m4s", None)
        buffer._pending[-1] = (at, *buffer._pending[-1][1:])
        buffer.drain()
    (record,) = presences.current()
    assert record["state"] == "rebuffering" and record["started"] and record["bitrate"] == 2_000_000
