"""The analytics engine without servers: Mux Data SDK keys, the collector (carry-forward, shared view state,
enrichment), the Parquet event log, views and every metric on hand-built event sequences (out of order,
duplicated, truncated), scores, and the Mux-shaped queries over DuckDB."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest

import kinoray.analytics as analytics
from kinoray.analytics import (
    Collector,
    EventWriter,
    MemoryViewStates,
    StoreViewStates,
    build_views,
    parse_batch,
)
from kinoray.analytics.keys import expand_key
from kinoray.analytics.query import Query, Timeframe, parse_filters, parse_timeframe
from kinoray.analytics.views import VIEW_IDLE_MS, quality_score, smoothness_score, startup_score
from kinoray.errors import InvalidParametersError, NotFoundError, RequestTooLargeError
from kinoray.store.objects import ObjectStore

T0 = 1_796_000_000_000  # viewer clock of a view's first event, ms
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 "
          "Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.2 Mobile/15E148 Safari/604.1")


def test_public_surface() -> None:
    assert sorted(analytics.__all__) == sorted(
        ["DIMENSIONS", "MAX_BATCH_BYTES", "MAX_EVENTS", "METRICS", "Collector", "EventWriter", "MemoryViewStates",
         "Query", "RedisViewStates", "StoreViewStates", "View", "build_views", "expand_event", "expand_key",
         "parse_batch", "parse_filters", "parse_timeframe", "read_events",
         # server-side collection, real time, privacy
         "REALTIME_DIMENSIONS", "REALTIME_METRICS", "CmcdBuffer", "MemoryPresences", "RedisPresences",
         "erase_viewer", "parse_cmcd", "sweep_retention"])


@pytest.mark.parametrize(("short", "name"), [
    ("e", "event"), ("uti", "viewer_time"), ("pphti", "player_playhead_time"), ("xid", "view_id"),
    ("sid", "session_id"), ("xsqno", "view_sequence_number"), ("psqno", "player_sequence_number"),
    ("pnm", "player_name"), ("psw", "player_software"), ("pwd", "player_width"), ("pht", "player_height"),
    ("wur", "page_url"), ("vsowd", "video_source_width"), ("vsoht", "video_source_height"),
    ("vsobi", "video_source_bitrate"), ("vsocc", "video_source_codec"), ("vsour", "video_source_url"),
    ("vid", "video_id"), ("percd", "player_error_code"), ("perme", "player_error_message"),
    ("percz", "player_error_context"), ("ake", "env_key"), ("c1", "custom_1"), ("c10", "custom_10"),
    ("xtitofifr", "view_time_to_first_frame"), ("mvrid", "mux_viewer_id"), ("uusid", "viewer_user_id"),
    # already long, or words a newer SDK may add: kept as sent
    ("view_id", "view_id"), ("event", "event"), ("zz", "zz"), ("p_new_", "player_new"),
])
def test_short_keys_expand_with_the_sdk_tables(short: str, name: str) -> None:
    assert expand_key(short) == name


# --- building events ----------------------------------------------------------------------------------------
class Player:
    """Hand-built Mux beacons for one view: short keys, sequence numbers, a viewer clock."""

    def __init__(self, view_id: str = "view-a", start: int = T0, **first: Any) -> None:
        self.view_id, self.now, self.sequence = view_id, start, 0
        self.first = {"pnm": "test-player", "psw": "hls.js", "pwd": 1280, "pht": 720, "ake": "env-1", **first}
        self.events: list[dict[str, Any]] = []

    def at(self, ms: int, event: str, **fields: Any) -> Player:
        self.now += ms
        self.sequence += 1
        beacon = {"e": event, "xid": self.view_id, "uti": self.now, "xsqno": self.sequence, **fields}
        if self.sequence == 1:
            beacon.update(self.first)
        self.events.append(beacon)
        return self

    def batch(self, events: list[dict[str, Any]] | None = None) -> bytes:
        return json.dumps({"metadata": {"transmission_timestamp": self.now}, "events": events or self.events}).encode()


def collect(*bodies: bytes, states: Any = None, user_agent: str = CHROME, address: str = "8.8.8.8",
            received_at: datetime | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    collector = Collector(states or MemoryViewStates(), rows.extend, {"pb1": "asset-1"}.get)
    for body in bodies:
        collector.collect(parse_batch(body), user_agent=user_agent, address=address, received_at=received_at)
    return rows


def one_view(player: Player, **options: Any) -> analytics.View:
    views = build_views(collect(player.batch()), **options)
    assert len(views) == 1
    return views[0]


def played(rendition: dict[str, Any] | None = None) -> Player:
    """playerready → play → 500 ms startup → 30 s playing → viewend."""
    player = Player(player_init_time=T0 - 300).at(0, "playerready").at(10, "viewstart").at(20, "play")
    player.at(100, "renditionchange", **(rendition or {"vsobi": 2_000_000, "vsowd": 1280, "vsoht": 720}))
    player.at(400, "playing", pphti=0)
    for second in range(10, 31, 10):
        player.at(10_000, "hb", pphti=second * 1000)
    return player.at(0, "pause", pphti=30_000).at(5000, "viewend")


def test_a_beacon_cannot_set_the_collectors_own_facts() -> None:
    """Geo, device and the playback id → asset mapping are the collector's: a beacon naming them (a private address,
    where the geo lookup finds nothing) changes nothing, and its view is still mapped from its ``vid``."""
    spoofed = Player(vid="pb1", kinoray_country="XX", kinoray_asn="666", kinoray_asset_id="someone-else",
                     kinoray_browser="Spoofer").at(0, "playerready").at(10, "viewstart")
    rows = collect(spoofed.batch(), address="10.1.2.3")
    assert {row["country"] for row in rows} == {None} and {row["asn"] for row in rows} == {None}
    assert {row["asset_id"] for row in rows} == {"asset-1"} and {row["browser"] for row in rows} == {"Chrome"}


# --- metrics on hand-built views -----------------------------------------------------------------------------
def test_a_clean_view() -> None:
    view = one_view(played())
    assert view.video_startup_time == 500  # play → first playing
    assert view.player_startup_time == 300  # player init → playerready
    assert view.watch_time == 30_500 and view.playing_time == 30_000  # startup counts to watch time, pause not
    assert view.rebuffer_count == 0 and view.rebuffer_duration == 0 and view.rebuffer_percentage == 0
    assert view.weighted_average_bitrate == 2_000_000
    assert view.upscale_percentage == 0 and view.downscale_percentage == 0
    assert not view.exit_before_video_start and not view.playback_failure and view.ended
    assert view.playback_success_score == 1.0
    assert view.startup_time_score == pytest.approx(8 / 8.5)
    assert view.smoothness_score == 1.0 and view.video_quality_score == 1.0
    assert view.viewer_experience_score == pytest.approx(0.4 + 0.2 * 8 / 8.5 + 0.25 + 0.15)
    assert view.dimensions["player_name"] == "test-player" and view.dimensions["browser"] == "Chrome"
    assert view.dimensions["country"] == "US" and view.dimensions["viewer_device_category"] == "desktop"
    assert view.max_playhead_position == 30_000


def test_rebuffering_count_duration_percentage_frequency() -> None:
    player = Player().at(0, "play").at(1000, "playing")
    player.at(20_000, "rebufferstart").at(3000, "rebufferend").at(17_000, "rebufferstart").at(1000, "rebufferend")
    player.at(19_000, "viewend")
    view = one_view(player)
    assert view.rebuffer_count == 2 and view.rebuffer_duration == 4000
    assert view.watch_time == 61_000  # 1 s startup + 56 s playing + 4 s rebuffering
    assert view.playing_time == 56_000
    assert view.rebuffer_percentage == pytest.approx(4000 / 61_000)
    assert view.rebuffer_frequency == pytest.approx(2 / (61_000 / 60_000))
    assert view.smoothness_score == pytest.approx(smoothness_score(2, 4000 / 61_000))


def test_rebuffers_mux_embed_sends_late_count_from_when_they_happened() -> None:
    """mux-embed stamps ``rebufferstart`` with the last time the playhead moved and sends it once the playhead has
    stood still for 1 s (``sustainedRebufferThreshold``), after any event of that second; a shorter stall it sends
    as ``rebufferstart`` + ``rebufferend`` once playback has resumed, after the ``playing`` (both as captured from
    mux-embed 5.19 in Chromium). The stall is when its events say, not when they were sent."""
    player = Player().at(0, "play").at(500, "playing", pphti=0)
    stall = player.at(2000, "waiting", pphti=2000).now
    player.at(1011, "requestcompleted", pphti=2000)  # the segment that ends the stall, before the 1 s threshold
    player.at(4, "rebufferstart", uti=stall, pphti=2000).at(11, "rebufferend", pphti=2001).at(1, "playing")
    short = player.at(3000, "waiting", pphti=5000).now
    player.at(600, "requestcompleted", pphti=5000).at(100, "playing", pphti=5000)
    player.at(30, "rebufferstart", uti=short, pphti=5030).at(0, "rebufferend", uti=short + 690, pphti=5030)
    player.at(2000, "viewend", pphti=7000)
    view = one_view(player)
    assert view.rebuffer_count == 2 and view.rebuffer_duration == 1026 + 690
    assert view.watch_time == 500 + 2000 + 1027 + 3000 + 730 + 2000
    assert view.playing_time == view.watch_time - 500 - view.rebuffer_duration
    assert [event["event"] for event in view.events][2:7] == ["waiting", "rebufferstart", "requestcompleted",
                                                            "rebufferend", "playing"]
    batches = [player.batch([event]) for event in player.events]  # one batch per event, the last first
    late = build_views(collect(*batches[::-1]))[0]
    assert (late.rebuffer_count, late.rebuffer_duration, late.watch_time) == (2, 1026 + 690, view.watch_time)


def test_seek_latency_and_rendition_switches_and_bitrate_weighting() -> None:
    player = Player().at(0, "play").at(0, "renditionchange", vsobi=1_000_000, vsowd=640, vsoht=360)
    player.at(1000, "playing").at(10_000, "renditionchange", vsobi=3_000_000, vsowd=1920, vsoht=1080)
    player.at(30_000, "seeking").at(200, "seeked").at(600, "playing").at(9200, "viewend")
    view = one_view(player)
    assert view.rendition_switches == 1
    assert view.seek_count == 1 and view.seek_latency == 800  # seeking → playing again
    # 10 s at 1 Mb/s, 30 s + 9.2 s at 3 Mb/s (seeking is not playing time)
    assert view.weighted_average_bitrate == pytest.approx((10_000 * 1e6 + 39_200 * 3e6) / 49_200)
    # 1280x720 player: 640x360 upscaled 100 % for 10 s, 1920x1080 downscaled by 1/3 for 39.2 s
    assert view.upscale_percentage == pytest.approx(10_000 / 49_200)
    assert view.max_upscale_percentage == pytest.approx(1.0)
    assert view.downscale_percentage == pytest.approx((1 / 3) * 39_200 / 49_200)
    assert view.max_downscale_percentage == pytest.approx(1 / 3)
    assert view.video_quality_score == pytest.approx(quality_score(10_000 / 49_200, 1.0))


def test_exit_before_video_start_and_its_grace_second() -> None:
    left = one_view(Player().at(0, "play").at(4000, "viewend"))
    assert left.exit_before_video_start and not left.playback_failure and left.video_startup_time is None
    assert left.playback_success_score == 0.5 and left.viewer_experience_score == 0.5
    assert left.startup_time_score is None and left.smoothness_score is None
    quick = one_view(Player().at(0, "play").at(600, "viewend"))
    assert quick.exit_before_video_start and quick.playback_success_score is None  # under 1 s: not scored


def test_a_view_still_starting_is_not_an_exit() -> None:
    player = Player().at(0, "play")
    received = datetime.fromtimestamp(T0 / 1000, UTC)
    rows = collect(player.batch(), received_at=received)
    starting = build_views(rows, now_ms=T0 + 5000)[0]
    assert not starting.ended and not starting.exit_before_video_start
    gone = build_views(rows, now_ms=T0 + VIEW_IDLE_MS + 1000)[0]  # 60 s without events: ended, an exit
    assert gone.ended and gone.exit_before_video_start and not gone.final


def test_playback_failure_before_and_after_start() -> None:
    early = one_view(Player().at(0, "play").at(2000, "error", percd=404, perme="manifest not found"))
    assert early.playback_failure and early.video_startup_failure and not early.exit_before_video_start
    assert early.error_code == "404" and early.error_message == "manifest not found"
    assert early.playback_success_score == 0 and early.viewer_experience_score == 0
    late = one_view(Player().at(0, "play").at(500, "playing").at(9000, "error", percd=3, perme="decode"))
    assert late.playback_failure and not late.video_startup_failure and late.video_startup_time == 500
    warning = one_view(Player().at(0, "play").at(500, "playing").at(1000, "error", percd=1, persy="warning")
                       .at(1000, "viewend"))
    assert not warning.playback_failure  # a warning is not a failure


def test_unknown_events_are_kept_and_ignored_by_metrics() -> None:
    player = Player().at(0, "play").at(100, "somethingnew", zz=1).at(400, "playing").at(1000, "viewend")
    view = one_view(player)
    assert [event["event"] for event in view.events] == ["play", "somethingnew", "playing", "viewend"]
    assert view.video_startup_time == 500


def test_out_of_order_and_duplicated_batches_give_the_same_view() -> None:
    player = played()
    expected = one_view(player)
    batches = [player.batch(player.events[i:i + 3]) for i in range(0, len(player.events), 3)]
    shuffled = batches[::-1] + batches[:2]  # reversed, and two batches re-sent
    view = build_views(collect(*shuffled))[0]
    for name in ("video_startup_time", "player_startup_time", "watch_time", "playing_time",
                 "weighted_average_bitrate", "viewer_experience_score", "rendition_switches"):
        assert getattr(view, name) == getattr(expected, name), name
    assert len(view.events) == len(player.events)
    # fields sent once (the player name, in the first batch) apply to the view however late that batch came
    assert view.dimensions["player_name"] == "test-player"


def test_a_truncated_view_counts_what_arrived() -> None:
    player = played()
    view = build_views(collect(player.batch(player.events[:6])))[0]  # up to the first heartbeat, no end
    assert view.video_startup_time == 500 and view.playing_time == 10_000 and not view.ended
    gone = build_views(collect(player.batch(player.events[:6])), now_ms=int(datetime.now(UTC).timestamp() * 1000)
                       + VIEW_IDLE_MS + 1000)[0]
    assert gone.ended and not gone.exit_before_video_start


def test_a_gap_longer_than_the_idle_bound_counts_no_time() -> None:
    view = one_view(Player().at(0, "play").at(500, "playing").at(10_000, "hb").at(VIEW_IDLE_MS + 1, "hb"))
    assert view.playing_time == 10_000


def test_score_formulas_match_mux_examples() -> None:
    assert [round(startup_score(ms) * 100) for ms in (400, 2000, 8000, 20_000)] == [95, 80, 50, 29]
    assert quality_score(0, 0) == 1 and round(quality_score(0.5, 0.5) * 100) == 85
    assert smoothness_score(0, 0) == 1
    assert round(smoothness_score(4, 60 / 1260) * 100) == pytest.approx(54, abs=6)


# --- the collector ------------------------------------------------------------------------------------------
def test_fields_sent_once_are_carried_across_batches_and_collector_processes(tmp_path) -> None:
    store = ObjectStore(str(tmp_path))
    player = played()
    first, second = player.events[:3], player.events[3:]
    rows = collect(player.batch(first), states=StoreViewStates(store))
    rows += collect(player.batch(second), states=StoreViewStates(store))  # another collector, same store
    assert all(row["player_name"] == "test-player" for row in rows)
    assert {row["env_key"] for row in rows} == {"env-1"}


def test_redis_view_states_are_shared(tmp_path) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    player = played()
    player.view_id = f"view-{random.getrandbits(48):x}"
    for event in player.events:
        event["xid"] = player.view_id
    rows = collect(player.batch(player.events[:2]), states=analytics.RedisViewStates("redis://127.0.0.1:6379/0"))
    rows += collect(player.batch(player.events[2:]), states=analytics.RedisViewStates("redis://127.0.0.1:6379/0"))
    assert rows[-1]["player_software"] == "hls.js"


def test_playback_ids_from_video_id_or_source_url_and_enrichment() -> None:
    by_vid = collect(Player(vid="pb1").at(0, "play").batch())[0]
    by_url = collect(Player(vsour="https://stream.example.com/pb1.m3u8?token=x").at(0, "play").batch())[0]
    stranger = collect(Player(vid="other").at(0, "play").batch())[0]
    assert (by_vid["playback_id"], by_vid["asset_id"]) == ("pb1", "asset-1")
    assert (by_url["playback_id"], by_url["asset_id"], by_url["source_type"]) == ("pb1", "asset-1", "hls")
    assert stranger["playback_id"] is None and stranger["asset_id"] is None and stranger["video_id"] == "other"
    phone = collect(Player().at(0, "play").batch(), user_agent=IPHONE, address="81.2.69.142")[0]
    assert (phone["operating_system"], phone["viewer_device_category"], phone["country"]) == ("iOS", "phone", "GB")
    private = collect(Player().at(0, "play").batch(), address="10.1.2.3")[0]
    assert private["country"] is None
    assert "8.8.8.8" not in json.dumps(collect(Player().at(0, "play").batch()), default=str)  # never stored


@pytest.mark.parametrize(("body", "says"), [
    (b"{not json", "not JSON"),
    (b"[]", "must be an object"),
    (b'{"events": {}}', "events"),
    (b'{"events": []}', "1 to 300"),
    (json.dumps({"events": [{"e": "play", "xid": "v", "uti": 1}] * 301}).encode(), "1 to 300"),
    (b'{"metadata": 3, "events": [{"e": "play", "xid": "v", "uti": 1}]}', "metadata"),
    (b'{"events": [3]}', "events.0"),
    (b'{"events": [{"xid": "v", "uti": 1}]}', "events.0.event"),
    (b'{"events": [{"e": "play", "uti": 1}]}', "events.0.view_id"),
    (b'{"events": [{"e": "play", "xid": 7, "uti": 1}]}', "events.0.view_id"),
    (b'{"events": [{"e": "play", "xid": "v", "uti": "soon"}]}', "events.0.viewer_time"),
    (b'{"events": [{"e": "play", "xid": "v"}]}', "events.0.viewer_time"),
    (b'{"events": [{"e": "play", "xid": "v", "uti": 1, "xsqno": 1.5}]}', "view_sequence_number"),
    (b'{"events": [{"e": "play", "xid": "v", "uti": 1, "pphti": true}]}', "player_playhead_time"),
    (b'{"events": [{"e": "play", "xid": "v", "uti": 1, "vid": {"a": 1}}]}', "video_id"),
])
def test_bad_batches_are_refused_whole(body: bytes, says: str) -> None:
    with pytest.raises(InvalidParametersError, match=says):
        parse_batch(body)


def test_oversized_batches_are_refused() -> None:
    with pytest.raises(RequestTooLargeError):
        parse_batch(b" " * (analytics.MAX_BATCH_BYTES + 1))


# --- the event log and the queries ---------------------------------------------------------------------------
class FlakyStore(ObjectStore):
    failures = 0

    def put_bytes(self, data: bytes, key: str) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("store down")
        super().put_bytes(data, key)


def test_the_writer_keeps_rows_through_a_failed_flush_and_writes_on_close(tmp_path) -> None:
    store = FlakyStore(str(tmp_path))
    writer = EventWriter(store, flush_rows=10_000)
    writer.add(collect(played().batch()))
    store.failures = 1
    with pytest.raises(OSError):
        writer.flush()
    assert writer.pending == len(played().events)
    writer.close()
    files = store.list("analytics/events")
    assert len(files) == 1 and files[0].startswith("analytics/events/date=")
    table = pq.read_table(store.path(files[0]))
    assert table.num_rows == len(played().events) and "data" in table.column_names


def test_queries_over_parquet(tmp_path) -> None:
    store = ObjectStore(str(tmp_path))
    writer = EventWriter(store)
    now = datetime.now(UTC)
    players = []
    for index in range(6):
        player = Player(view_id=f"view-{index}", start=T0 + index * 100_000, uusid=f"user-{index % 3}", vid="pb1",
                        mvrid=f"viewer-{index % 3}")
        player.at(0, "play").at(200 * (index + 1), "playing").at(10_000, "viewend")
        players.append(player)
    failed = Player(view_id="view-failed").at(0, "play").at(1000, "error", percd=500, perme="boom")
    for number, player in enumerate([*players, failed]):
        user_agent = IPHONE if number % 2 else CHROME
        writer.add(collect(player.batch(), user_agent=user_agent, received_at=now - timedelta(minutes=5)))
    writer.add(collect(players[0].batch(), received_at=now - timedelta(minutes=4)))  # a re-sent batch
    writer.close()
    query = Query(store, parse_timeframe(["1:hours"], now=now), now=now)
    assert len(query.views) == 7
    overall = query.overall("video_startup_time")
    assert overall["value"] == pytest.approx(700) and overall["total_views"] == 7  # median of 200..1200
    assert query.overall("video_startup_time", "95th")["value"] == pytest.approx(200 + 0.95 * 5 * 200)
    assert query.overall("video_startup_time", "avg")["value"] == pytest.approx(700)
    assert query.overall("views")["value"] == 7 and query.overall("unique_viewers")["value"] == 4
    assert query.overall("playback_failure_percentage")["value"] == pytest.approx(1 / 7)
    assert query.overall("playing_time")["value"] == 6 * 10_000
    rows = {row["field"]: row for row in query.breakdown("playback_failure_percentage", "operating_system")}
    assert rows["iOS"]["views"] == 3 and rows["Linux"]["views"] == 4
    assert rows["Linux"]["value"] == pytest.approx(1 / 4) and rows["Linux"]["negative_impact"] == 1
    filtered = Query(store, Timeframe(now - timedelta(hours=1), now), parse_filters(["operating_system:iOS"]), now=now)
    assert len(filtered.views) == 3
    negated = Query(store, Timeframe(now - timedelta(hours=1), now), parse_filters(["!operating_system:iOS"]), now=now)
    assert len(negated.views) == 4
    granularity, series = query.timeseries("views")
    assert granularity == "minute" and sum(row[2] for row in series) == 7
    assert Query(store, Timeframe(now - timedelta(hours=3), now - timedelta(hours=2)), now=now).views == []
    assert query.view("view-failed").playback_failure
    with pytest.raises(NotFoundError):
        query.view("nope")
    with pytest.raises(NotFoundError):
        query.overall("not_a_metric")
    with pytest.raises(InvalidParametersError):
        query.breakdown("views", "not_a_dimension")


def test_a_timeframe_of_millennia_costs_what_is_stored(tmp_path) -> None:
    """Reading the event log over 1970–9999 lists what is stored once instead of asking for each of 2.9 million
    days, and finds the same rows as a one-day read; days outside the timeframe are left out."""
    import time

    from kinoray.analytics import read_events

    store = ObjectStore(str(tmp_path))
    writer = EventWriter(store)
    now = datetime.now(UTC)
    writer.add(collect(played().batch(), received_at=now))
    writer.add(collect(Player(view_id="old").at(0, "play").batch(), received_at=now - timedelta(days=400)))
    writer.close()
    started = time.monotonic()
    everything = read_events(store, datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC),
                             cache=None)
    assert time.monotonic() - started < 5
    today = read_events(store, now - timedelta(hours=1), now, cache=None)
    recent = read_events(store, now - timedelta(days=100), now, cache=None)  # one listing, filtered by day
    assert today.num_rows == recent.num_rows == everything.num_rows - 1 > 0
    assert set(everything.column("view_id").to_pylist()) == {"view-a", "old"}


@pytest.mark.parametrize("raw", [["banana"], ["5:weeks"], ["1", "2", "3"], ["20", "10"], ["x", "y"],
                                 ["37", "398961151542"], ["999999:days"], ["1", "9" * 30]])
def test_bad_timeframes(raw: list[str]) -> None:
    with pytest.raises(InvalidParametersError):
        parse_timeframe(raw)


@pytest.mark.parametrize("raw", [["country"], [":US"], ["colour:red"]])
def test_bad_filters(raw: list[str]) -> None:
    with pytest.raises(InvalidParametersError):
        parse_filters(raw)


def test_every_metric_aggregates() -> None:
    views = build_views(collect(played().batch(), Player(view_id="b").at(0, "play").at(3000, "viewend").batch()))
    for metric in analytics.METRICS.values():
        for measurement in ("avg", "median", "95th", "sum", "count"):
            value = analytics.query.aggregate(metric, views, measurement)
            assert value is None or math.isfinite(value), (metric.id, measurement)


@pytest.mark.parametrize("text", ["nul\u0000here", "half \ud800 a pair"])
def test_text_the_store_cannot_hold_is_refused_up_front(text: str) -> None:
    with pytest.raises(InvalidParametersError, match="events.0"):
        parse_batch(json.dumps({"events": [{"e": "error", "xid": "v", "uti": 1, "perme": text}]}).encode())


def test_ended_views_are_reused_until_their_events_change(tmp_path) -> None:
    from kinoray.analytics.query import ViewCache

    store = ObjectStore(str(tmp_path))
    now = datetime.now(UTC)
    writer = EventWriter(store)
    finished, starting = played(), Player(view_id="view-starting").at(0, "play")
    writer.add(collect(finished.batch(), starting.batch(), received_at=now - timedelta(seconds=10)))
    writer.flush()
    cache = ViewCache()
    timeframe = Timeframe(now - timedelta(hours=1), now)
    first = {view.id: view for view in Query(store, timeframe, now=now, cache=cache).views}
    assert (cache.hits, cache.misses) == (0, 2)
    second = {view.id: view for view in Query(store, timeframe, now=now, cache=cache).views}
    assert cache.hits == 1 and second["view-a"] is first["view-a"]  # the ended view, reused
    assert second["view-starting"] is not first["view-starting"]  # still starting: rebuilt every time
    late = Player(view_id="view-a", start=finished.now + 1000)
    late.sequence = finished.sequence
    writer.add(collect(late.at(0, "somethinglate").batch(), received_at=now - timedelta(seconds=5)))
    writer.close()
    third = {view.id: view for view in Query(store, timeframe, now=now, cache=cache).views}
    assert third["view-a"] is not first["view-a"] and len(third["view-a"].events) == len(finished.events) + 1
    assert third["view-a"].video_startup_time == first["view-a"].video_startup_time
