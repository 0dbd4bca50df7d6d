"""Mux Data on kinoray over HTTP: the beacon collector on the edge (``POST /`` and ``/data/v1/beacons``; bad
beacons refused with typed errors and CORS, nothing stored lost), the query API read through mux-python's
models, and Mux's own Data SDK (npm ``mux-embed``, unmodified) monitoring hls.js in Chromium on a kinoray stream,
reporting to the edge: the view kinoray builds has the startup time the page measured."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import mux_python as mux
import pytest
import requests

from kinoray.control.analytics import flush_collector
from tests.compat import mux_python_client
from tests.test_analytics import CHROME, Player
from tests.test_player import chromium, publish, ready_media  # noqa: F401 - fixtures

CORS = "Access-Control-Allow-Origin"


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("data-api"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def sdk(api) -> mux.ApiClient:
    """mux-python against the edge: the query API's paths are forwarded to the management API."""
    return mux_python_client(api.edge_url, api.auth)


def post(api, body: bytes | str, path: str = "/", content_type: str = "text/plain") -> requests.Response:
    return requests.post(f"{api.edge_url}{path}", data=body, timeout=30,
                         headers={"Content-Type": content_type, "User-Agent": CHROME})


def new_player(**first: Any) -> Player:
    return Player(view_id=f"view-{uuid.uuid4().hex[:12]}", start=int(time.time() * 1000) - 60_000, **first)


def played(player: Player) -> Player:
    player.at(0, "viewstart").at(10, "play").at(0, "renditionchange", vsobi=900_000, vsowd=640, vsoht=360)
    return player.at(600, "playing").at(10_000, "hb", pphti=10_000).at(2000, "pause").at(500, "viewend")


def view_json(api, view_id: str) -> dict[str, Any]:
    flush_collector(api.platform)
    answer = api.client.get(f"{api.url}/data/v1/video-views/{view_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_the_collector_takes_sdk_batches_on_both_paths_with_cors(api) -> None:
    player = played(new_player(uusid="user-cors"))
    first, rest = player.events[:3], player.events[3:]
    answer = post(api, player.batch(first), "/")
    assert answer.status_code == 202 and answer.json() == {"data": {"accepted": 3}}
    assert answer.headers[CORS] == "*"
    answer = post(api, player.batch(rest), "/data/v1/beacons", content_type="application/json")
    assert answer.status_code == 202 and answer.headers[CORS] == "*"
    for path in ("/", "/data/v1/beacons"):
        preflight = requests.options(f"{api.edge_url}{path}", timeout=10, headers={
            "Origin": "https://site.example", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204 and preflight.headers[CORS] == "*"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    view = view_json(api, player.view_id)
    assert view["time_to_first_frame"] == 600 and view["watch_time"] == 12_600
    assert view["player_name"] == "test-player" and view["viewer_user_id"] == "user-cors"
    assert view["viewer_application_name"] == "Chrome" and view["viewer_device_category"] == "desktop"
    assert [event["name"] for event in view["events"]] == [e["e"] for e in player.events]
    # GET / is not the collector: it goes on to the API like any other path
    assert requests.get(f"{api.edge_url}/", timeout=10).status_code == 404


@pytest.mark.parametrize(("body", "content_type", "status", "error_type"), [
    ("{not json", "text/plain", 400, "invalid_parameters"),
    (json.dumps({"events": [{"e": "play", "xid": "v-over", "uti": 1}] * 301}), "text/plain", 400,
     "invalid_parameters"),
    (json.dumps({"events": [{"e": "play", "xid": "v-types", "uti": "yesterday"}]}), "application/json", 400,
     "invalid_parameters"),
    (json.dumps({"events": [{"e": 5, "xid": "v-types", "uti": 1}]}), "text/plain", 400, "invalid_parameters"),
    (json.dumps({"events": [{"e": "play", "xid": "v-big", "uti": 1, "zz": "x" * 520_000}]}), "text/plain", 413,
     "too_large"),
    ("{}", "image/png", 415, "unsupported_media_type"),
])
def test_bad_beacons_get_typed_errors_with_cors_and_lose_nothing(api, body: str, content_type: str, status: int,
                                                               error_type: str) -> None:
    player = played(new_player())
    assert post(api, player.batch(player.events[:4])).status_code == 202
    refused = post(api, body, content_type=content_type)
    assert refused.status_code == status, refused.text
    assert refused.json()["error"]["type"] == error_type and refused.headers[CORS] == "*"
    assert post(api, player.batch(player.events[4:])).status_code == 202
    view = view_json(api, player.view_id)
    assert len(view["events"]) == len(player.events) and view["time_to_first_frame"] == 600


def test_query_api_through_mux_python(api, sdk) -> None:
    tag = uuid.uuid4().hex[:8]
    ok = [played(new_player(uusid=f"ok-{tag}", c1=tag)) for _ in range(3)]
    failed = new_player(uusid=f"failed-{tag}").at(0, "play").at(800, "error", percd=500, perme="boom")
    for player in [*ok, failed]:
        assert post(api, player.batch()).status_code == 202
    flush_collector(api.platform)
    metrics, views_api = mux.MetricsApi(sdk), mux.VideoViewsApi(sdk)
    overall = metrics.get_overall_values("video_startup_time", timeframe=["1:hours"])
    assert isinstance(overall, mux.GetOverallValuesResponse) and overall.data.total_views >= 4
    assert overall.data.value == 600
    failures = metrics.get_overall_values("playback_failure_percentage", timeframe=["1:hours"],
                                          filters=[f"viewer_user_id:failed-{tag}"])
    assert failures.data.value == 1.0 and failures.data.total_views == 1
    others = metrics.get_overall_values("playback_failure_percentage", timeframe=["1:hours"],
                                        filters=[f"!viewer_user_id:failed-{tag}"])
    assert others.data.total_views == overall.data.total_views - 1
    breakdown = metrics.list_breakdown_values("views", group_by="viewer_user_id", timeframe=["1:hours"],
                                              order_by="field", order_direction="asc", limit=100)
    by_user = {row.field: row.views for row in breakdown.data}
    assert by_user[f"ok-{tag}"] == 3 and by_user[f"failed-{tag}"] == 1
    assert breakdown.total_row_count == len(breakdown.data)
    series = metrics.get_metric_timeseries_data("views", timeframe=["30:minutes"])
    assert series.meta.granularity == "minute" and sum(int(row[2]) for row in series.data) >= 4
    listed = views_api.list_video_views(viewer_id=f"ok-{tag}", timeframe=["1:hours"], limit=2, page=1)
    assert listed.total_row_count == 3 and len(listed.data) == 2
    assert all(isinstance(view, mux.AbridgedVideoView) and view.watch_time == 12_600 for view in listed.data)
    page_two = views_api.list_video_views(viewer_id=f"ok-{tag}", timeframe=["1:hours"], limit=2, page=2)
    assert len(page_two.data) == 1 and page_two.data[0].id not in {view.id for view in listed.data}
    one = views_api.get_video_view(failed.view_id).data
    assert one.playback_failure and one.player_error_code == "500" and one.video_startup_failure
    assert [event.name for event in one.events] == ["play", "error"]
    dimensions = mux.DimensionsApi(sdk)
    listed_dimensions = dimensions.list_dimensions()
    assert "browser" in listed_dimensions.data.basic and "viewer_user_id" in listed_dimensions.data.advanced
    values = dimensions.list_dimension_values("viewer_user_id", timeframe=["1:hours"], limit=1000)
    counts = {value.value: value.total_count for value in values.data}
    assert counts[f"ok-{tag}"] == 3 and counts[f"failed-{tag}"] == 1 and values.total_row_count == len(counts)
    only_ok = dimensions.list_dimension_values("viewer_user_id", timeframe=["1:hours"],
                                               filters=[f"viewer_user_id:ok-{tag}"])
    assert [(value.value, value.total_count) for value in only_ok.data] == [(f"ok-{tag}", 3)]
    with pytest.raises(mux.ApiException) as refused:
        views_api.get_video_view("no-such-view")
    assert refused.value.status == 404
    for call in (lambda: metrics.get_overall_values("no_such_metric"),
                 lambda: metrics.get_overall_values("views", timeframe=["soon"]),
                 lambda: metrics.get_overall_values("views", timeframe=["20", "10"]),
                 lambda: metrics.get_overall_values("views", filters=["colour:red"]),
                 lambda: metrics.list_breakdown_values("views", group_by="colour")):
        with pytest.raises(mux.ApiException) as refused:
            call()
        assert refused.value.status == 400 and json.loads(refused.value.body)["error"]["type"] == "invalid_parameters"
    assert requests.get(f"{api.edge_url}/data/v1/video-views", timeout=10).status_code == 401


# --- Mux's Data SDK in Chromium --------------------------------------------------------------------------------
PAGE = """<!doctype html><html><body>
<video id="v" muted playsinline style="width:640px;height:360px"></video>
<script src="/hls.js"></script><script src="/mux.js"></script>
<script>
  const video = document.getElementById('v');
  const hls = new Hls(HLS_CONFIG);
  window.measured = {};
  const initTime = mux.utils.now();
  window.sent = [];  // the events mux-embed posted (short keys), as it built them
  const post = window.fetch.bind(window), beacon = navigator.sendBeacon.bind(navigator);
  window.fetch = (url, options) => { if (options && options.method === 'POST')
    window.sent.push(...JSON.parse(options.body).events); return post(url, options); };
  navigator.sendBeacon = (url, body) => { window.sent.push(...JSON.parse(body).events); return beacon(url, body); };
  mux.monitor(video, {hlsjs: hls, Hls, beaconCollectionDomain: 'localhost:EDGE_PORT', data: {
    env_key: 'kinoray-test', player_name: 'mux-embed test page', player_init_time: initTime,
    video_title: 'Startup check', viewer_user_id: 'VIEWER'}});
  video.addEventListener('playing', () => { if (!window.measured.playing) window.measured.playing = Date.now(); });
  window.stalls = [];  // the page's own rebuffers: 'waiting' after the first frame, until 'playing' again
  video.addEventListener('waiting', () => { if (window.measured.playing && !video.seeking)
    window.stalls.push({from: Date.now(), to: null}); });
  video.addEventListener('playing', () => { const last = window.stalls[window.stalls.length - 1];
    if (last && last.to === null) last.to = Date.now(); });
  // the play request as Mux defines video startup time: the media element's 'play' event (the call to play()
  // comes earlier; on a loaded machine the event may follow it by tens of milliseconds)
  video.addEventListener('play', () => { if (!window.measured.play) window.measured.play = Date.now(); });
  hls.on(Hls.Events.MANIFEST_PARSED, () => { video.play(); });
  hls.loadSource('SOURCE');
  hls.attachMedia(video);
</script></body></html>"""


class EmbedPage:
    """A page on its own origin running hls.js monitored by ``mux-embed`` (both from tests/js's lockfile), with
    ``beaconCollectionDomain`` set to ``localhost:<edge port>``; ``measured`` holds the page's own clock readings
    (``play``: the first ``play`` event, ``playing``: the first ``playing`` event)."""

    def __init__(self, api, browser: Any, viewer: str, source: str, hls_config: str = "{}") -> None:
        from tests.js_clients import PageServer, js_clients

        modules = js_clients()
        self.api, self.viewer = api, viewer
        self.port = api.edge_url.rsplit(":", 1)[1]
        self.pages = PageServer({"/hls.js": modules / "hls.js" / "dist" / "hls.min.js",
                                 "/mux.js": modules / "mux-embed" / "dist" / "mux.js"})
        self.context = browser.new_context(viewport={"width": 960, "height": 540})
        self.page = self.context.new_page()
        self.beacons: list[tuple[int, str | None]] = []
        self.page.on("response", lambda r: r.url.startswith(f"http://localhost:{self.port}/")
                     and r.request.method == "POST"
                     and self.beacons.append((r.status, r.headers.get("access-control-allow-origin"))))
        self.page.goto(self.pages.put(PAGE.replace("HLS_CONFIG", hls_config)
                                      .replace("EDGE_PORT", self.port).replace("VIEWER", viewer)
                                      .replace("SOURCE", source.replace("EDGE", f"http://localhost:{self.port}"))))

    def wait(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := self.page.evaluate(expression)):
            assert time.monotonic() < deadline, (expression, self.page.evaluate("window.measured"), self.beacons)
            time.sleep(0.1)
        return value

    def view(self, sdk, last_event: str, timeout: float = 30) -> Any:
        """The one view of this page's viewer once ``last_event`` is in it (mux-python's ``VideoView``)."""
        deadline = time.monotonic() + timeout
        while True:
            flush_collector(self.api.platform)
            listed = mux.VideoViewsApi(sdk).list_video_views(viewer_id=self.viewer, timeframe=["1:hours"])
            if listed.total_row_count == 1:
                view = mux.VideoViewsApi(sdk).get_video_view(listed.data[0].id).data
                if last_event in [event.name for event in view.events]:
                    return view
            assert time.monotonic() < deadline, f"no view of {self.viewer} with {last_event}: {self.beacons}"
            time.sleep(0.5)

    def close(self) -> None:
        self.context.close()
        self.pages.shutdown()
        self.pages.server_close()


@pytest.mark.browser
def test_mux_embed_on_hls_js_reports_to_the_edge(api, api_backend, ready_media, chromium, sdk) -> None:  # noqa: F811
    if api_backend.kind != "sqlite":
        pytest.skip("browser tests run on one backend (SQLite); the ingest tests above cover both")
    playback_id = publish(api, ready_media)
    viewer = f"browser-{uuid.uuid4().hex[:8]}"
    page = EmbedPage(api, chromium, viewer, f"EDGE/{playback_id}.m3u8")
    try:
        page.wait("document.getElementById('v').currentTime >= 4")
        measured = page.page.evaluate("window.measured")
        page.page.evaluate("document.getElementById('v').mux.destroy()")  # viewend, and the queue is sent
        view = page.view(sdk, "viewend")
    finally:
        page.close()
    assert page.beacons and all(status == 202 and cors == "*" for status, cors in page.beacons), page.beacons
    page_startup = measured["playing"] - measured["play"]
    assert abs(view.time_to_first_frame - page_startup) <= 50, (view.time_to_first_frame, page_startup)
    assert view.playback_id == playback_id and view.asset_id is not None
    assert view.player_name == "mux-embed test page" and view.video_title == "Startup check"
    assert view.viewer_application_name in ("Chrome", "HeadlessChrome", "Chromium")
    assert view.watch_time >= 4000 and not view.playback_failure and not view.exit_before_video_start
    assert view.weighted_average_bitrate and view.weighted_average_bitrate > 0
    overall = mux.MetricsApi(sdk).get_overall_values("video_startup_time", timeframe=["1:hours"],
                                                     filters=[f"viewer_user_id:{viewer}"])
    assert overall.data.total_views == 1 and overall.data.value == view.time_to_first_frame
    assert float(view.viewer_experience_score) > 0.5


@pytest.mark.browser
def test_mux_embed_reports_a_failed_playback(api, api_backend, chromium, sdk) -> None:  # noqa: F811
    """hls.js cannot load the stream (an unknown playback id: 404): mux-embed reports the fatal error, and the view
    is a playback (and startup) failure in the API."""
    if api_backend.kind != "sqlite":
        pytest.skip("browser tests run on one backend (SQLite); the ingest tests above cover both")
    viewer = f"browser-{uuid.uuid4().hex[:8]}"
    page = EmbedPage(api, chromium, viewer, "EDGE/NoSuchPlaybackId.m3u8")
    try:
        view = page.view(sdk, "error")
    finally:
        page.close()
    assert view.playback_failure and view.video_startup_failure and not view.exit_before_video_start
    assert view.player_error_code and view.time_to_first_frame is None
    assert view.playback_score == "0" and view.viewer_experience_score == "0"
    failures = mux.MetricsApi(sdk).get_overall_values("playback_failure_percentage", timeframe=["1:hours"],
                                                      filters=[f"viewer_user_id:{viewer}"])
    assert failures.data.value == 1.0

@pytest.mark.browser
def test_rebuffering_under_network_throttling_matches_the_page(api, api_backend, ready_media, chromium,  # noqa: F811
                                                               sdk) -> None:
    """Chromium's own network throttling (DevTools protocol: 3 s of added latency per request, for a while)
    starves hls.js — kept to one segment of buffer — mid-playback, twice: the view's rebuffer count and duration
    in kinoray's API are the totals mux-embed computed itself (sent in its beacons), and they hold the stalls the
    page measured itself (``waiting`` → ``playing``).

    mux-embed tells a rebuffer by the playhead standing still, and sends it late, stamped with when it began: a
    stall under 1 s as ``rebufferstart`` + ``rebufferend`` after playback resumed (after its ``playing``), a longer
    one as ``rebufferstart`` 1 s in (after whatever else that second sent). The first stall is lifted at 0.5 s,
    the second at 1 s: a view built in send order rather than by the viewer's clock misses the first (0 ms) and,
    when the segment that ends the second lands just before 1 s, most of it. On a loaded machine the playhead may
    also lag the clock without a ``waiting`` (frames late, not data): a rebuffer to mux-embed, not to the page."""
    if api_backend.kind != "sqlite":
        pytest.skip("browser tests run on one backend (SQLite); the ingest tests above cover both")
    playback_id = publish(api, ready_media)
    viewer = f"browser-{uuid.uuid4().hex[:8]}"
    page = EmbedPage(api, chromium, viewer, f"EDGE/{playback_id}.m3u8",
                     hls_config="{maxBufferLength: 1, maxMaxBufferLength: 1, startLevel: 0}")
    network = page.context.new_cdp_session(page.page)
    try:
        page.wait("document.getElementById('v').currentTime >= 0.5")
        network.send("Network.enable")
        for held in (500, 1000):  # until the player has been stalled that long, then the network is well again
            network.send("Network.emulateNetworkConditions", {
                "offline": False, "latency": 3000, "downloadThroughput": -1, "uploadThroughput": -1})
            page.wait(f"window.stalls.some(s => s.to === null && Date.now() - s.from >= {held})", timeout=30)
            network.send("Network.emulateNetworkConditions", {
                "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
            page.wait("window.stalls.every(s => s.to !== null)", timeout=30)
        page.wait("document.getElementById('v').ended", timeout=60)
        stalls = page.page.evaluate("window.stalls")
        page.page.evaluate("document.getElementById('v').mux.destroy()")
        sent = page.wait("window.sent.some(e => e.e === 'viewend') && window.sent")
        view = page.view(sdk, "viewend")
    finally:
        page.close()
    measured = [stall["to"] - stall["from"] for stall in stalls if stall["to"] is not None]
    assert len(measured) >= 2 and len(measured) == len(stalls), stalls
    # mux-embed's own totals: view_rebuffer_count / _duration, as last sent
    own_count, own_duration = (max((e for e in sent if key in e), key=lambda e: e["xsqno"])[key]
                               for key in ("xreco", "xredu"))
    assert view.buffering_count == own_count >= len(measured), (view.buffering_count, own_count, stalls)
    # kinoray also ends a rebuffer at the `playing` that may come a heartbeat before mux-embed's rebufferend
    assert 0 <= own_duration - view.buffering_duration <= 100, (view.buffering_duration, own_duration)
    tolerance = max(300, 0.2 * sum(measured))
    assert view.buffering_duration >= sum(measured) - tolerance, (view.buffering_duration, measured)
    if own_count == len(measured):  # no rebuffer the page could not see
        assert view.buffering_duration <= sum(measured) + tolerance, (view.buffering_duration, measured)
    assert float(view.rebuffer_percentage) == pytest.approx(view.buffering_duration / view.watch_time, rel=1e-3)
    assert float(view.rebuffering_score) < 1.0


def test_an_oversized_body_is_refused_while_it_streams(api) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(600):
            yield b" " * 1024

    answer = requests.post(f"{api.edge_url}/data/v1/beacons", data=chunks(), timeout=30,
                           headers={"Content-Type": "text/plain"})
    assert answer.status_code == 413 and answer.json()["error"]["type"] == "too_large"
    assert answer.headers[CORS] == "*"


def test_beacons_need_no_credentials_but_are_rate_limited_per_client(api, monkeypatch) -> None:
    from kinoray.control.ratelimit import LocalRateLimiter

    limiter = LocalRateLimiter(rate=0.01, burst=2)
    monkeypatch.setattr(api.platform, "limiter", limiter)
    body = new_player().at(0, "play").batch()
    for _ in range(2):
        assert post(api, body).status_code == 202
    refused = post(api, body)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "too_many_requests"
    assert refused.headers[CORS] == "*" and int(refused.headers["Retry-After"]) >= 1
    assert set(limiter._buckets) == {"beacon:127.0.0.1"}  # keyed by client address, not by any token


def test_the_production_edge_writes_buffered_beacons_when_it_stops(api) -> None:
    """Granian workers buffer events for up to 5 s; a SIGTERM (lifespan shutdown) writes them before exiting."""
    from kinoray.analytics.query import Query, Timeframe

    process, url = api.start_granian_edge(workers=2)
    players = [played(new_player()) for _ in range(6)]
    try:
        for player in players:  # spread over both workers by the kernel's SO_REUSEPORT hashing
            answer = requests.post(f"{url}/", data=player.batch(), headers={"Content-Type": "text/plain"},
                                   timeout=30)
            assert answer.status_code == 202
    finally:
        process.stop()
    assert not process.alive
    now = datetime.now(UTC)
    query = Query(api.platform.store, Timeframe(now - timedelta(hours=1), now))
    for player in players:
        view = query.view(player.view_id)
        assert len(view.events) == len(player.events) and view.video_startup_time == 600
