"""Server-side analytics over HTTP, through the real edge and read with mux-python: CMCD on stream requests makes
views (a synthetic request sequence with buffer starvation, and hls.js with ``cmcd`` on in Chromium), real-time
concurrent viewers by country from beacons with heartbeats (``RealTimeApi``), and erasure by viewer
(``DELETE /data/v1/viewers/{id}``: ``data`` full permission; the events are gone from the Parquet files and
from every query, other viewers' untouched)."""

from __future__ import annotations

import io
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import mux_python as mux
import pyarrow.parquet as pq
import pytest
import requests

from kinoray.control.analytics import flush_collector
from tests.test_analytics import CHROME, Player
from tests.test_data_api import sdk  # noqa: F401 - fixture (mux-python on this module's edge)
from tests.test_player import chromium, publish, ready_media  # noqa: F401 - fixtures

WINDOW = 4.0  # seconds a view stays current after its last event (short, so the test sees views drop)


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("data-server-side"),
                       analytics={"realtime_window_seconds": WINDOW})
    try:
        yield server
    finally:
        server.close()


def until(check: Any, timeout: float = 30.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {check}"
        time.sleep(every)


def cmcd_view(api, sdk, sid: str, timeout: float = 30.0) -> Any:  # noqa: F811
    """The video view of CMCD session ``sid`` (mux-python's ``VideoView``), once listed."""
    def found() -> Any:
        flush_collector(api.platform)
        listed = mux.VideoViewsApi(sdk).list_video_views(filters=[f"view_session_id:{sid}"], timeframe=["1:hours"])
        return listed.data[0].id if listed.total_row_count == 1 else None

    return mux.VideoViewsApi(sdk).get_video_view(until(found, timeout)).data


# --- CMCD ---------------------------------------------------------------------------------------------------
def test_cmcd_requests_make_a_view_with_its_rebuffering(api, ready_media, sdk) -> None:  # noqa: F811
    playback_id = publish(api, ready_media)
    sid = f"cmcd-{uuid.uuid4().hex[:10]}"
    session = f'sid="{sid}",sf=h,st=v,v=1'

    def get(path: str, cmcd: str, *, headers: bool = False) -> requests.Response:
        url = f"{api.edge_url}/{playback_id}{path}"
        if headers:  # the header form (hls.js useHeaders, Shaka): the four shards
            answer = requests.get(url, timeout=30, headers={
                "User-Agent": CHROME, "X-Forwarded-For": "81.2.69.160", "CMCD-Session": session,
                "CMCD-Object": "ot=v,br=800,d=2000", "CMCD-Request": cmcd})
        else:
            answer = requests.get(url, timeout=30, params={"CMCD": f"{cmcd},{session}"},
                                  headers={"User-Agent": CHROME, "X-Forwarded-For": "81.2.69.160"})
        assert answer.status_code == 200, answer.text
        return answer

    get(".m3u8", "ot=m,su")
    get("/360p/index.m3u8", "ot=m,su")
    get("/360p/init.mp4", "ot=i,su")
    get("/360p/seg_00001.m4s", "ot=v,br=800,su,bl=0,mtp=20000")
    time.sleep(0.3)
    get("/360p/seg_00002.m4s", "bl=2000,mtp=25000", headers=True)  # playing
    time.sleep(0.6)
    get("/360p/seg_00003.m4s", "ot=v,br=800,bs,su,bl=0")  # starved since the previous request
    time.sleep(0.8)
    get("/360p/seg_00004.m4s", "ot=v,br=800,bl=2000")  # playing again
    # malformed CMCD is the viewer's problem, never an error: the segment is served all the same
    segment = requests.get(f"{api.edge_url}/{playback_id}/360p/seg_00001.m4s", timeout=30,
                           params={"CMCD": 'sid="' + "x" * 500 + '",br=oops,,"'})
    assert segment.status_code == 200 and segment.content == get("/360p/seg_00001.m4s", "ot=v").content
    flush_collector(api.platform)  # the edge's drain (every second) — then the viewer is watching in real time
    by_height = mux.RealTimeApi(sdk).get_realtime_breakdown(
        "current-concurrent-viewers", dimension="video_source_height", filters=[f"playback_id:{playback_id}"]).data
    assert [(row.value, row.concurrent_viewers) for row in by_height] == [("360", 1)]
    view = cmcd_view(api, sdk, sid)
    assert view.playback_id == playback_id and view.asset_id is not None and view.session_id == sid
    assert view.buffering_count == 1 and 700 <= view.buffering_duration <= 5000
    assert view.time_to_first_frame is None and not view.playback_failure and not view.exit_before_video_start
    assert view.weighted_average_bitrate == 800_000 and view.country_code == "GB"
    assert view.viewer_application_name in ("Chrome", "Chromium") and view.watch_time >= 1400  # the sleeps
    assert [event.name for event in view.events].count("cmcd") == 8  # the requests naming the session
    overall = mux.MetricsApi(sdk).get_overall_values("rebuffer_count", timeframe=["1:hours"],
                                                     filters=[f"view_session_id:{sid}"])
    assert overall.data.total_views == 1 and overall.data.value == 1


CMCD_PAGE = """<!doctype html><html><body>
<video id="v" muted playsinline style="width:640px;height:360px"></video>
<script src="/hls.js"></script>
<script>
  const video = document.getElementById('v');
  // a short buffer goal: segments are fetched as the video plays (not all before the first frame)
  const hls = new Hls({cmcd: {sessionId: 'SID', contentId: 'content-1'}, maxBufferLength: 2, maxMaxBufferLength: 2});
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play());
  hls.loadSource('SOURCE');
  hls.attachMedia(video);
</script></body></html>"""


@pytest.mark.browser
def test_hls_js_with_cmcd_shows_up_as_a_view(api, api_backend, ready_media, chromium, sdk) -> None:  # noqa: F811
    """hls.js (tests/js's lockfile) with ``cmcd`` on and no Mux SDK, playing a kinoray stream through the edge."""
    if api_backend.kind != "sqlite":
        pytest.skip("browser tests run on one backend (SQLite); the request-level test above covers both")
    from tests.js_clients import PageServer, js_clients

    playback_id = publish(api, ready_media)
    sid = f"hlsjs-{uuid.uuid4().hex[:10]}"
    port = api.edge_url.rsplit(":", 1)[1]
    pages = PageServer({"/hls.js": js_clients() / "hls.js" / "dist" / "hls.min.js"})
    context = chromium.new_context(viewport={"width": 960, "height": 540})
    sent: list[str] = []
    try:
        page = context.new_page()
        page.on("request", lambda r: f":{port}/" in r.url and sent.append(r.url))
        page.goto(pages.put(CMCD_PAGE.replace("SID", sid)
                            .replace("SOURCE", f"http://localhost:{port}/{playback_id}.m3u8")))
        until(lambda: page.evaluate("document.getElementById('v').currentTime >= 6"), timeout=60)
    finally:
        context.close()  # no request after this: `sent` is all hls.js sent
        pages.shutdown()
        pages.server_close()
    view = cmcd_view(api, sdk, sid)
    carried = [urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("CMCD", [""])[0] for url in sent]
    assert carried and all(f'sid="{sid}"' in cmcd for cmcd in carried), sent  # what hls.js sent, read back
    assert view.playback_id == playback_id and view.video_id == "content-1"
    assert view.viewer_application_name in ("Chrome", "HeadlessChrome", "Chromium")
    # a loaded machine may stall the video: each stall is one request hls.js flags with `bs`
    starved = sum("bs" in cmcd.split(",") for cmcd in carried)
    assert view.watch_time > 0 and view.buffering_count == starved, (view.watch_time, view.buffering_count, carried)
    assert view.weighted_average_bitrate > 0


# --- real time ----------------------------------------------------------------------------------------------
def post_beacons(api, player: Player, address: str) -> None:
    answer = requests.post(f"{api.edge_url}/data/v1/beacons", data=player.batch(), timeout=30, headers={
        "Content-Type": "text/plain", "User-Agent": CHROME, "X-Forwarded-For": address})
    assert answer.status_code == 202, answer.text
    player.events = []


def ccv_by_country(sdk, *filters: str) -> dict[str | None, int]:  # noqa: F811
    rows = mux.RealTimeApi(sdk).get_realtime_breakdown("current-concurrent-viewers", dimension="country",
                                                       filters=list(filters)).data
    return {row.value: row.concurrent_viewers for row in rows if row.concurrent_viewers}


def test_concurrent_viewers_by_country_in_real_time(api, sdk) -> None:  # noqa: F811
    metrics = mux.RealTimeApi(sdk).list_realtime_metrics().data
    assert "current-concurrent-viewers" in [m.name for m in metrics]
    assert "country" in [d.name for d in mux.RealTimeApi(sdk).list_realtime_dimensions().data]
    us, gb = "8.8.8.8", "81.2.69.160"
    players = [(Player(view_id=f"rt-{uuid.uuid4().hex[:10]}", start=int(time.time() * 1000)), address)
               for address in (us, us, us, gb, gb)]
    started = time.monotonic()
    for player, address in players:
        player.at(0, "viewstart").at(10, "play").at(400, "playing")
        post_beacons(api, player, address)
    until(lambda: ccv_by_country(sdk) == {"US": 3, "GB": 2}, timeout=5)
    assert time.monotonic() - started < 5 + 2
    # heartbeats keep them current past the window; one rebuffers
    for _ in range(3):
        time.sleep(WINDOW / 2)
        for index, (player, address) in enumerate(players):
            player.at(int(WINDOW * 500), "rebufferstart" if index == 3 and not player.events else "hb")
            post_beacons(api, player, address)
    assert ccv_by_country(sdk) == {"US": 3, "GB": 2}
    rebuffering = mux.RealTimeApi(sdk).get_realtime_breakdown("current-rebuffering-percentage",
                                                              dimension="country", order_by="field").data
    assert {row.value: row.metric_value for row in rebuffering} == {"GB": 0.5, "US": 0.0}
    # two views end: they drop at once; the rest drop once they stop sending
    for player, address in players[:2]:
        post_beacons(api, player.at(100, "viewend"), address)
    until(lambda: ccv_by_country(sdk) == {"US": 1, "GB": 2}, timeout=5)
    until(lambda: ccv_by_country(sdk) == {}, timeout=WINDOW + 5)
    series = mux.RealTimeApi(sdk).get_realtime_timeseries("current-concurrent-viewers",
                                                          filters=["country:GB", "player_name:test-player"]).data
    assert series and max(point.concurrent_viewers for point in series) == 2


# --- erasure ------------------------------------------------------------------------------------------------
def test_erasing_a_viewer_removes_their_events_everywhere(api, sdk) -> None:  # noqa: F811
    from kinoray.control.auth import create_token

    erased, kept = f"erase-{uuid.uuid4().hex[:8]}", f"keep-{uuid.uuid4().hex[:8]}"
    players = [Player(view_id=f"v-{uuid.uuid4().hex[:10]}", start=int(time.time() * 1000) - 30_000, uusid=viewer)
               for viewer in (erased, erased, kept)]
    for player in players:
        player.at(0, "viewstart").at(10, "play").at(400, "playing").at(5000, "viewend")
        post_beacons(api, player, "8.8.8.8")
    flush_collector(api.platform)
    views = mux.VideoViewsApi(sdk)
    assert views.list_video_views(viewer_id=erased, timeframe=["1:hours"]).total_row_count == 2
    with api.platform.db.session() as session:
        token, secret = create_token(session, name="data-read", permissions={"data": "read"})
    refused = requests.delete(f"{api.url}/data/v1/viewers/{erased}", auth=(token.id, secret), timeout=30)
    assert refused.status_code == 403, refused.text
    answer = api.client.delete(f"{api.url}/data/v1/viewers/{erased}", timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"viewer_user_id": erased, "views_deleted": 2, "events_deleted": 8,
                                     "files_rewritten": answer.json()["data"]["files_rewritten"]}
    assert views.list_video_views(viewer_id=erased, timeframe=["1:hours"]).total_row_count == 0
    for player in players[:2]:
        with pytest.raises(mux.rest.NotFoundException):
            views.get_video_view(player.view_id)
    assert views.list_video_views(viewer_id=kept, timeframe=["1:hours"]).total_row_count == 1
    assert views.get_video_view(players[2].view_id).data.watch_time == 5400
    store = api.platform.store
    keys = [key for key in store.list("analytics/events") if key.endswith(".parquet")]
    rows = [row for key in keys for row in pq.read_table(store.path(key)).to_pylist()]
    assert not [row for row in rows if erased in json.dumps(row, default=str)]
    assert len([row for row in rows if row["view_id"] == players[2].view_id]) == 4
    again = api.client.delete(f"{api.url}/data/v1/viewers/{erased}", timeout=60)
    assert again.json()["data"]["views_deleted"] == 0


def test_a_second_pass_erases_what_other_edge_processes_still_had_buffered(api, monkeypatch) -> None:
    """Another edge process writes the viewer's buffered events after the call: the second pass removes them;
    the retired ``view_events`` table loses the views' rows too."""
    import kinoray.control.analytics as control
    from kinoray.analytics import EventWriter
    from kinoray.store.models import ViewEvent
    from tests.test_analytics import collect

    monkeypatch.setattr(control, "LATE_ERASE_SECONDS", 1.0)
    viewer = f"late-{uuid.uuid4().hex[:8]}"
    player = Player(view_id=f"v-{uuid.uuid4().hex[:10]}", uusid=viewer).at(0, "viewstart").at(10, "play")
    early = player.batch()
    player.events = []
    rows = collect(early, player.at(500, "playing").batch())  # the last one still buffered when erasing
    other_process = EventWriter(api.platform.store)
    other_process.add(rows[:2])
    other_process.flush()
    with api.platform.db.session() as session:
        session.add(ViewEvent(event_type="play", view_id=player.view_id, session_id="s", playback_id="p",
                              viewer_time=1, playback_time=0))
    answer = api.client.delete(f"{api.url}/data/v1/viewers/{viewer}", timeout=60)
    assert answer.json()["data"]["views_deleted"] == 1
    with api.platform.db.session() as session:
        assert session.query(ViewEvent).filter_by(view_id=player.view_id).count() == 0
    other_process.add(rows[2:])
    other_process.flush()

    def stored() -> list[dict[str, Any]]:
        keys = [key for key in api.platform.store.list("analytics/events") if key.endswith(".parquet")]
        return [row for key in keys for row in pq.read_table(api.platform.store.path(key)).to_pylist()
                if row["view_id"] == player.view_id]

    assert len(stored()) == 1
    until(lambda: not stored(), timeout=20)


def test_the_job_runner_sweep_deletes_events_past_retention(api) -> None:
    from datetime import UTC, datetime, timedelta

    from kinoray.analytics import EventWriter
    from kinoray.analytics.liveviews import SNAPSHOT_KEY
    from kinoray.serve.runner import Runner
    from tests.test_analytics import collect

    old = datetime.now(UTC) - timedelta(days=api.settings.analytics.retention_days + 3)
    writer = EventWriter(api.platform.store)
    writer.add(collect(Player(view_id="ancient").at(0, "viewstart").batch(), received_at=old))
    writer.add(collect(Player(view_id="recent").at(0, "viewstart").batch(), received_at=datetime.now(UTC)))
    writer.flush()
    old_prefix = f"analytics/events/date={old.date().isoformat()}"
    assert api.platform.store.list(old_prefix)
    Runner(api.platform).tick()  # one pass of the job runner's loop, its sweep included (never swept before)
    assert api.platform.store.list(old_prefix) == []
    assert any("date=" + datetime.now(UTC).date().isoformat() in key
               for key in api.platform.store.list("analytics/events"))
    # its rollup saved the open views for a starting process to seed from (kinoray.analytics.liveviews)
    saved = pq.read_table(io.BytesIO(api.platform.store.get_bytes(SNAPSHOT_KEY)))
    assert "recent" in saved["view_id"].to_pylist() and "ancient" not in saved["view_id"].to_pylist()


def test_real_time_through_redis_is_shared_and_forgets_erased_viewers(api_backend, tmp_path_factory) -> None:
    """With ``KINORAY_REDIS_URL`` the presences live in Redis (what every edge process writes and every API
    replica reads): CCV by country, a view ending, and an erased viewer's view gone from real time at once."""
    from kinoray.analytics.realtime import RedisPresences
    from tests.api_server import ApiServer
    from tests.compat import mux_python_client

    if api_backend.kind != "sqlite":
        pytest.skip("one backend: the real-time store is Redis either way")
    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("realtime-redis"),
                       redis_url="redis://127.0.0.1:6379/0", analytics={"realtime_window_seconds": 30})
    try:
        client = mux_python_client(server.edge_url, server.auth)
        name = f"redis-rt-{uuid.uuid4().hex[:8]}"  # this test's views only (Redis is shared)
        players = [(Player(view_id=f"rr-{uuid.uuid4().hex[:10]}", start=int(time.time() * 1000), pnm=name,
                           uusid=f"{name}-{index}"), address)
                   for index, address in enumerate(("8.8.8.8", "8.8.8.8", "81.2.69.160"))]
        for player, address in players:
            post_beacons(server, player.at(0, "viewstart").at(10, "play").at(400, "playing"), address)
        until(lambda: ccv_by_country(client, f"player_name:{name}") == {"US": 2, "GB": 1}, timeout=5)
        post_beacons(server, players[0][0].at(1000, "viewend"), "8.8.8.8")
        until(lambda: ccv_by_country(client, f"player_name:{name}") == {"US": 1, "GB": 1}, timeout=5)
        erased = server.client.delete(f"{server.url}/data/v1/viewers/{name}-2", timeout=60)
        assert erased.status_code == 200 and erased.json()["data"]["views_deleted"] == 1
        assert ccv_by_country(client, f"player_name:{name}") == {"US": 1}
        # the records are Redis's: a fresh reader (another process) sees the same
        fresh = RedisPresences("redis://127.0.0.1:6379/0", window=30)
        states = {r["view_id"]: r["state"] for r in fresh.current() if r["dimensions"].get("player_name") == name}
        assert states == {players[0][0].view_id: "ended", players[1][0].view_id: "playing"}
    finally:
        server.close()
