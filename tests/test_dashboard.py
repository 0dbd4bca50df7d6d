"""The analytics dashboard (``/dashboard/`` on the delivery edge, the port ``kinoray up`` opens).

Without a browser (SQLite and PostgreSQL): the vendored uPlot is exactly what the lockfile's package holds; the
page's headers (CSP without inline script, no framing, revalidated), its markup read by Python's HTML parser (no
inline script or style, every control labelled, the secret in a password field of a form that posts nowhere) and
its static files (allow-list, immutable when versioned, gzip, 304).

In Chromium (marker ``browser``, SQLite only): views seeded through the real collector (Mux Data SDK beacons on
``POST /`` of the edge: known startup times, one failed view, two browsers, one view still playing), a real
access token typed into the sign-in form, and every number the page renders compared with the Data API's answer
to the same query, fetched with ``requests`` (the timeframe is the page's own, read from ``data-timeframe``),
and with the values the seeded beacons imply; the trend chart's canvas has a dot of the series' colour at each
bucket the API has a value for; a filter chip (added from the breakdown table, then negated) changes the
breakdown table as the API's filtered breakdown says, and survives a reload (the address keeps it); a view's
timeline lists the events its beacons sent; a threshold alert rule's incident is listed as the API lists it; a
wrong secret, and a token without the data permission, show the sign-in error. Every page records uncaught errors, console errors and 4xx/5xx answers:
none is allowed beyond the ones a test expects (the wrong token's 401; ``/data/v1/incidents``'s 404 while
alerts are not installed). Waits poll ``page.evaluate`` (the page's CSP rightly refuses ``eval``).
"""

from __future__ import annotations

import decimal
import re
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
import requests

from kinoray.control.analytics import flush_collector
from kinoray.dashboard import STATIC_DIR, static_file, static_names, static_url
from kinoray.dashboard.assets import DASHBOARD
from tests.browser import BrowserTab
from tests.browser import chromium as launch_chromium
from tests.test_analytics import CHROME, Player
from tests.vendored import assert_vendored_from_the_lock

IMMUTABLE = "public, max-age=31536000, immutable"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CHART_RGB = (0x1D, 0x4E, 0xD8)  # --kr-chart-color in kinoray-dashboard.css


# --- vendored uPlot --------------------------------------------------------------------------------------------


def test_vendored_files_are_the_lockfiles_packages() -> None:
    files = assert_vendored_from_the_lock(DASHBOARD, "dashboard")
    assert {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE.txt"} <= set(files)
    # the script's own banner names the version the lockfile pins
    assert f"(v{files['uPlot.iife.min.js']['version']})" in (STATIC_DIR / "uPlot.iife.min.js").read_text()[:200]


# --- the page and its files, without a browser ------------------------------------------------------------------


class _Markup(HTMLParser):
    """What the checks below need of the page: its tags with attributes, and whether a script or style has text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_code: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline_code.append(f"<{self._open}>{data.strip()[:40]}")

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def test_page_headers_and_markup(api) -> None:
    answer = requests.get(f"{api.edge_url}/dashboard/", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = answer.headers["Content-Security-Policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'",
                      "form-action 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "no-cache"  # revalidated: an upgrade shows at once
    again = requests.get(f"{api.edge_url}/dashboard/", headers={"If-None-Match": answer.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and not again.content
    assert requests.head(f"{api.edge_url}/dashboard/", timeout=10).status_code == 200
    moved = requests.get(f"{api.edge_url}/dashboard", allow_redirects=False, timeout=10)
    assert moved.status_code == 308 and moved.headers["Location"] == "dashboard/"
    assert requests.get(f"{api.edge_url}/dashboard", timeout=10).url == f"{api.edge_url}/dashboard/"

    markup = _Markup()
    markup.feed(answer.text)
    assert markup.inline_code == [], "no inline script or style: the CSP would refuse them"
    assert not any(name.startswith("on") for _, attrs in markup.tags for name in attrs), "no inline handlers"
    scripts = [attrs["src"] for attrs in markup.all("script")]
    styles = [attrs["href"] for attrs in markup.all("link") if attrs.get("rel") == "stylesheet"]
    assert scripts == [static_url("uPlot.iife.min.js"), static_url("kinoray-dashboard.js")]
    assert styles == [static_url("uPlot.min.css"), static_url("kinoray-dashboard.css")]
    assert all(not re.match(r"^(https?:)?//", url or "") for url in scripts + styles), "no CDN"
    # every control has a label (for=id, or the label around it), or an aria-label
    label_for = {attrs.get("for") for attrs in markup.all("label")}
    wrapped = {"filter-negate"}  # <label><input id="filter-negate"> Exclude</label>
    for tag in ("input", "select"):
        for attrs in markup.all(tag):
            assert attrs.get("id") in label_for | wrapped or attrs.get("aria-label"), (tag, attrs)
    secret = next(attrs for attrs in markup.all("input") if attrs.get("id") == "token-secret")
    assert secret["type"] == "password"
    assert {attrs.get("method") for attrs in markup.all("form")} == {"post"}  # never a query string
    assert markup.all("html")[0]["lang"] == "en"
    assert [attrs.get("id") for attrs in markup.all("section")][:1] == ["login"]


def test_static_files_are_an_allow_list_with_long_caching(api) -> None:
    for name in sorted(static_names()):
        shipped = static_file(name)
        versioned = requests.get(f"{api.edge_url}/dashboard/{static_url(name)}", timeout=10)
        assert versioned.status_code == 200, name
        assert versioned.content == (STATIC_DIR / name).read_bytes()  # requests undoes the gzip
        assert versioned.headers["Cache-Control"] == IMMUTABLE
        assert versioned.headers["Content-Type"] == shipped.content_type
        assert versioned.headers["X-Content-Type-Options"] == "nosniff"
        plain = requests.get(f"{api.edge_url}/dashboard/static/{name}", timeout=10)
        assert plain.headers["Cache-Control"] == "no-cache"
        stale = requests.get(f"{api.edge_url}/dashboard/static/{name}?v=0123456789abcdef", timeout=10)
        assert stale.headers["Cache-Control"] == "no-cache", "an old version's URL is not cached for a year"
        again = requests.get(f"{api.edge_url}/dashboard/static/{name}", headers={"If-None-Match": plain.headers["ETag"]},
                             timeout=10)
        assert again.status_code == 304 and not again.content
    script = requests.get(f"{api.edge_url}/dashboard/static/uPlot.iife.min.js", headers={"Accept-Encoding": "gzip"},
                          stream=True, timeout=10)
    assert script.headers["Content-Encoding"] == "gzip"
    assert int(script.headers["Content-Length"]) < len(static_file("uPlot.iife.min.js").body) / 2
    for name in ("vendor.json", "package.json", "build.mjs", "page.py", "..%2Fpage.py", "%2e%2e", ".gitignore"):
        answer = requests.get(f"{api.edge_url}/dashboard/static/{name}", timeout=10)
        assert answer.status_code == 404, name
        if answer.headers.get("Content-Type", "").startswith("application/json"):
            assert answer.json()["error"]["type"] == "not_found"


def test_the_production_edge_serves_it_next_to_the_data_api(api, api_backend) -> None:
    """``kinoray edge`` (Granian, what ``kinoray up --port`` runs) serves the page and its files, and forwards the
    Data API the page calls: one origin, one port."""
    if api_backend.kind != "sqlite":
        pytest.skip("one backend is enough: the route tests above cover both")
    process, url = api.start_granian_edge(workers=1)
    try:
        page = requests.get(f"{url}/dashboard/", timeout=10)
        assert page.status_code == 200 and "<kr-dashboard" in page.text
        assert page.headers["Content-Security-Policy"] == requests.get(f"{api.edge_url}/dashboard/",
                                                                       timeout=10).headers["Content-Security-Policy"]
        script = requests.get(f"{url}/dashboard/{static_url('kinoray-dashboard.js')}", timeout=10)
        assert script.status_code == 200 and script.headers["Cache-Control"] == IMMUTABLE
        assert script.content == static_file("kinoray-dashboard.js").body
        assert api.client.get(f"{url}/data/v1/dimensions", timeout=10).status_code == 200
        assert requests.get(f"{url}/data/v1/dimensions", timeout=10).status_code == 401
    finally:
        process.stop()


# --- in Chromium ---------------------------------------------------------------------------------------------------


def post_beacons(api, player: Player, user_agent: str) -> None:
    answer = requests.post(f"{api.edge_url}/", data=player.batch(), timeout=30,
                           headers={"Content-Type": "text/plain", "User-Agent": user_agent})
    assert answer.status_code == 202, answer.text


def watched(startup_ms: int, tag: str) -> Player:
    """A view that starts in ``startup_ms`` (play → playing), plays 10 s at 360p, pauses and ends."""
    player = Player(view_id=f"view-{uuid.uuid4().hex[:12]}", start=int(time.time() * 1000) - 60_000, c1=tag)
    player.at(0, "viewstart").at(10, "play").at(0, "renditionchange", vsobi=900_000, vsowd=640, vsoht=360)
    return player.at(startup_ms, "playing").at(10_000, "hb", pphti=10_000).at(2000, "pause").at(500, "viewend")


@pytest.fixture(scope="module")
def seeded(api, api_backend) -> dict[str, Player]:
    """Five views: Chrome starts in 400 and 600 ms and one still playing (600 ms), Firefox in 900 ms and one that
    fails before its first frame."""
    if api_backend.kind != "sqlite":
        pytest.skip("browser tests run on one backend (SQLite); the route tests above cover both")
    tag = uuid.uuid4().hex[:8]
    views = {"chrome-400": watched(400, tag), "chrome-600": watched(600, tag), "firefox-900": watched(900, tag)}
    live = Player(view_id=f"view-{uuid.uuid4().hex[:12]}", start=int(time.time() * 1000) - 5_000, c1=tag)
    views["live"] = live.at(0, "viewstart").at(10, "play").at(0, "renditionchange", vsobi=900_000, vsowd=640,
                                                                     vsoht=360).at(600, "playing")
    failed = Player(view_id=f"view-{uuid.uuid4().hex[:12]}", start=int(time.time() * 1000) - 30_000, c1=tag)
    views["failed"] = failed.at(0, "viewstart").at(10, "play").at(800, "error", percd=500, perme="boom")
    for name, player in views.items():
        post_beacons(api, player, FIREFOX if name.startswith(("firefox", "failed")) else CHROME)
    flush_collector(api.platform)
    return views


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


class Tab(BrowserTab):
    """A dashboard page (1200x900)."""

    def __init__(self, browser: Any) -> None:
        super().__init__(browser, 1200, 900)

    def generation(self) -> int:
        return int(self.eval("document.querySelector('kr-dashboard').dataset.generation || '0'"))

    def settled_after(self, generation: int) -> None:
        """Wait for a load that began after ``generation`` loads had finished, and for every panel to be idle."""
        self.wait("""(g) => { const d = document.querySelector('kr-dashboard');
          return d.dataset.state === 'ready' && Number(d.dataset.generation || 0) > g
            && !document.querySelector('section[aria-busy="true"]'); }""", generation, what="the dashboard to load")

    def sign_in(self, url: str, token_id: str, secret: str) -> None:
        self.page.goto(url)
        self.page.fill("#token-id", token_id)
        self.page.fill("#token-secret", secret)
        self.page.click("#login-form button[type=submit]")


@pytest.fixture()
def tab(chromium) -> Iterator[Tab]:
    opened = Tab(chromium)
    try:
        yield opened
    finally:
        opened.close()


def data_query(api, path: str, timeframe: list[int], filters: tuple[str, ...] = (), **params: Any) -> dict[str, Any]:
    """The Data API's answer, fetched with requests and the same token (an independent client of the page's query)."""
    query: list[tuple[str, Any]] = [("timeframe[]", timeframe[0]), ("timeframe[]", timeframe[1])]
    query += [("filters[]", item) for item in filters] + list(params.items())
    answer = api.client.get(f"{api.edge_url}/data/v1/{path}", params=query, timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def half_up(value: float) -> int:
    return int(decimal.Decimal(repr(value)).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def expected_text(value: float | None, unit: str) -> str:
    """How the page writes a value (independently of its script): scores 0-100, ratios in %, milliseconds."""
    if value is None:
        return "–"
    if unit == "score":
        return str(half_up(value * 100))
    if unit == "ratio":
        return f"{value * 100:.2f}%"
    if unit == "ms":
        return f"{half_up(value):,} ms" if value < 1000 else f"{value / 1000:.2f} s"
    return f"{half_up(value):,}"


CARDS = """() => [...document.querySelectorAll('#scores .card, #key-metrics .card')].map(card => ({
  metric: card.dataset.metric, measurement: card.dataset.measurement || null,
  value: card.querySelector('data').value, text: card.querySelector('data').textContent}))"""
BREAKDOWN = """() => [...document.querySelectorAll('#breakdown-table tbody tr')].map(row => ({
  field: row.dataset.field, value: row.cells[1].querySelector('data').value,
  views: Number(row.cells[2].querySelector('data').value)}))"""
CHIPS = "() => [...document.querySelectorAll('#filter-chips .chip')].map(chip => chip.dataset.filter)"
UNITS = {"views": "count", "unique_viewers": "count", "video_startup_time": "ms", "rebuffer_percentage": "ratio",
         "playback_failure_percentage": "ratio", "video_startup_failure_percentage": "ratio",
         "exits_before_video_start": "ratio"}


def number(text: str) -> float | None:
    return None if text == "" else float(text)


@pytest.mark.browser
def test_dashboard_shows_what_the_data_api_answers(api, seeded: dict[str, Player], tab: Tab) -> None:
    tab.sign_in(f"{api.edge_url}/dashboard/", api.token_id, api.secret)
    tab.settled_after(0)
    timeframe = [int(part) for part in tab.eval("document.querySelector('kr-dashboard').dataset.timeframe").split(",")]
    assert 86_399 <= timeframe[1] - timeframe[0] <= 86_401  # the default: the last 24 hours
    assert tab.eval("JSON.parse(sessionStorage.getItem('kinoray.dashboard.token')).id") == api.token_id

    # overview: every card is the API's overall value for the same query, and the seeded values
    cards = tab.eval(CARDS)
    assert [card["metric"] for card in cards[:5]] == ["viewer_experience_score", "playback_success_score",
                                                     "startup_time_score", "smoothness_score", "video_quality_score"]
    shown: dict[tuple[str, str | None], float | None] = {}
    for card in cards:
        params = {"measurement": card["measurement"]} if card["measurement"] else {}
        truth = data_query(api, f"metrics/{card['metric']}/overall", timeframe, **params)["data"]["value"]
        assert number(card["value"]) == pytest.approx(truth), card
        assert card["text"] == expected_text(truth, UNITS.get(card["metric"], "score")), card
        shown[(card["metric"], card["measurement"])] = number(card["value"])
    assert shown[("views", None)] == 5
    assert shown[("unique_viewers", None)] == 5  # no viewer id sent: each view its own viewer
    assert shown[("video_startup_time", "median")] == 600  # of 400, 600, 600 and 900 ms
    assert shown[("video_startup_time", "95th")] == pytest.approx(855)  # 600 + 0.85 × 300, interpolated
    assert shown[("playback_failure_percentage", None)] == pytest.approx(0.2)  # one failed view of five
    assert shown[("video_startup_failure_percentage", None)] == pytest.approx(0.2)
    assert shown[("rebuffer_percentage", None)] == 0
    assert 0 < shown[("viewer_experience_score", None)] < 1 and shown[("playback_success_score", None)] < 1

    # the trend chart: one bucket per API row, a dot of the series' colour at each bucket with a value
    series = data_query(api, "metrics/views/timeseries", timeframe)
    chart = tab.eval("""() => { const c = document.querySelector('#trend-chart'), u = c.plot;
      const dots = [];
      u.data[0].forEach((x, i) => { const y = u.data[1][i]; if (y === null) return;
        const px = Math.round(u.valToPos(x, 'x', true)), py = Math.round(u.valToPos(y, 'y', true));
        dots.push([...u.ctx.getImageData(px, py, 1, 1).data].slice(0, 3)); });
      const corner = [...u.ctx.getImageData(Math.round(u.bbox.left + 3), Math.round(u.bbox.top + 3), 1, 1).data];
      return {buckets: Number(c.dataset.buckets), points: Number(c.dataset.points), xs: u.data[0].length,
              ys: u.data[1], dots, corner, rows: c.querySelectorAll('details tbody tr').length,
              canvas: u.ctx.canvas.width * u.ctx.canvas.height}; }""")
    with_value = [row for row in series["data"] if row[1] is not None]
    assert chart["buckets"] == chart["xs"] == chart["rows"] == series["total_row_count"] == len(series["data"])
    assert chart["points"] == len(chart["dots"]) == len(with_value) >= 1
    assert chart["ys"] == [row[1] for row in series["data"]]
    assert sum(row[1] for row in with_value) == 5
    assert chart["canvas"] > 0
    for dot in chart["dots"]:
        assert all(abs(got - want) <= 40 for got, want in zip(dot, CHART_RGB, strict=True)), chart["dots"]
    assert chart["corner"][3] == 0 or tuple(chart["corner"][:3]) != CHART_RGB  # not a canvas painted all over
    # a card's Trend button charts that card's metric and measurement
    before = tab.generation()
    tab.page.click("#key-metrics button[aria-label='Show the trend of Video startup time (95th percentile)']")
    tab.settled_after(before)
    startup = data_query(api, "metrics/video_startup_time/timeseries", timeframe, measurement="95th")["data"]
    drawn = tab.eval("""() => { const c = document.querySelector('#trend-chart');
      return {metric: c.dataset.metric, measurement: c.dataset.measurement, ys: c.plot.data[1],
              points: Number(c.dataset.points)}; }""")
    assert drawn == {"metric": "video_startup_time", "measurement": "95th", "ys": [row[1] for row in startup],
                     "points": sum(row[1] is not None for row in startup)}
    assert drawn["points"] >= 1 and max(y for y in drawn["ys"] if y is not None) <= 900

    # the breakdown (views by browser), then a chip from its "Only" button, then the chip negated
    def breakdown_matches(filters: tuple[str, ...]) -> list[dict[str, Any]]:
        truth = data_query(api, "metrics/views/breakdown", timeframe, filters, group_by="browser", order_by="views",
                           order_direction="desc", limit=100)["data"]
        rows = tab.eval(BREAKDOWN)
        assert [(row["field"], row["views"]) for row in rows] == [(row["field"], row["views"]) for row in truth]
        assert [number(row["value"]) for row in rows] == [row["value"] for row in truth]
        return rows

    rows = breakdown_matches(())
    assert {row["field"]: row["views"] for row in rows} == {"Chrome": 3, "Firefox": 2}
    before = tab.generation()
    tab.page.click("#breakdown-table button[aria-label='Only browser Firefox']")
    tab.settled_after(before)
    assert tab.eval(CHIPS) == ["browser:Firefox"]
    timeframe = [int(part) for part in tab.eval("document.querySelector('kr-dashboard').dataset.timeframe").split(",")]
    assert [row["field"] for row in breakdown_matches(("browser:Firefox",))] == ["Firefox"]
    assert number(tab.eval("document.querySelector('#key-metrics [data-metric=views] data').value")) == \
        data_query(api, "metrics/views/overall", timeframe, ("browser:Firefox",))["data"]["value"] == 2
    before = tab.generation()
    tab.page.click("#filter-chips button[aria-label='Exclude browser Firefox']")
    tab.settled_after(before)
    assert tab.eval(CHIPS) == ["!browser:Firefox"]
    assert tab.eval("document.querySelector('#filter-chips button[aria-pressed]').getAttribute('aria-pressed')") \
        == "true"
    timeframe = [int(part) for part in tab.eval("document.querySelector('kr-dashboard').dataset.timeframe").split(",")]
    assert [row["field"] for row in breakdown_matches(("!browser:Firefox",))] == ["Chrome"]
    # the address holds what the page shows (never the token): a reload shows it again
    assert tab.eval("new URL(location.href).searchParams.getAll('filter')") == ["!browser:Firefox"]
    tab.page.reload()
    tab.settled_after(0)
    assert tab.eval(CHIPS) == ["!browser:Firefox"]
    timeframe = [int(part) for part in tab.eval("document.querySelector('kr-dashboard').dataset.timeframe").split(",")]
    assert [row["field"] for row in breakdown_matches(("!browser:Firefox",))] == ["Chrome"]
    before = tab.generation()
    tab.page.click("#filter-chips button[aria-label='Remove filter browser Firefox']")
    tab.settled_after(before)
    assert tab.eval(CHIPS) == []

    # another timeframe: the last hour, per minute
    before = tab.generation()
    tab.page.select_option("#timeframe", "1:hours")
    tab.settled_after(before)
    timeframe = [int(part) for part in tab.eval("document.querySelector('kr-dashboard').dataset.timeframe").split(",")]
    assert timeframe[1] - timeframe[0] == 3600
    drawn = tab.eval("""() => { const c = document.querySelector('#trend-chart');
      return {metric: c.dataset.metric, measurement: c.dataset.measurement, granularity: c.dataset.granularity,
              ys: c.plot.data[1]}; }""")
    minutes = data_query(api, f"metrics/{drawn['metric']}/timeseries", timeframe,
                         **({"measurement": drawn["measurement"]} if drawn["measurement"] else {}))
    assert drawn["granularity"] == minutes["meta"]["granularity"] == "minute"
    assert drawn["ys"] == [row[1] for row in minutes["data"]] and len(drawn["ys"]) >= 60
    assert number(tab.eval("document.querySelector('#key-metrics [data-metric=views] data').value")) == 5

    # the views list, then the failed view's timeline
    listed = data_query(api, "video-views", timeframe, limit=10, page=1)
    assert tab.eval("[...document.querySelectorAll('#views-table tbody tr')].map(r => r.dataset.viewId)") == \
        [view["id"] for view in listed["data"]]
    assert listed["total_row_count"] == 5 and tab.eval("document.querySelector('#views-table').dataset.total") == "5"
    failed = seeded["failed"]
    before = tab.generation()
    tab.page.click(f"#views-table tr[data-view-id='{failed.view_id}'] button")
    tab.settled_after(before)
    assert tab.eval("document.querySelector('#view-detail').dataset.viewId") == failed.view_id
    assert tab.eval("!document.querySelector('#view-detail').hidden")
    timeline = tab.eval("[...document.querySelectorAll('#view-timeline li')].map(li => li.dataset.event)")
    one = api.client.get(f"{api.edge_url}/data/v1/video-views/{failed.view_id}", timeout=30).json()["data"]
    assert timeline == [event["name"] for event in one["events"]] == [event["e"] for event in failed.events]
    summary = tab.eval("document.querySelector('#view-summary').textContent")
    assert "Failed 500 boom" in summary

    # real time: concurrent viewers as the real-time API counts them (the live view heartbeats to stay current)
    live = seeded["live"]
    live.events.clear()
    post_beacons(api, live.at(2000, "hb", pphti=2000), CHROME)
    flush_collector(api.platform)

    def realtime(dimension: str) -> dict[str | None, int]:
        answer = api.client.get(f"{api.edge_url}/data/v1/realtime/metrics/current-concurrent-viewers/breakdown",
                                params={"dimension": dimension}, timeout=30).json()["data"]
        return {row["value"]: row["concurrent_viewers"] for row in answer if row["concurrent_viewers"]}

    deadline = time.monotonic() + 30
    while True:  # both sides move with the clock (a view is current for 30 s): equal once, with the same answer
        truth = realtime("country"), realtime("video_source_height")
        page = tab.eval("""() => ({ccv: Number(document.querySelector('#ccv').value),
          country: Object.fromEntries([...document.querySelectorAll('#realtime-country tbody tr')].map(r =>
            [r.dataset.value, Number(r.cells[1].querySelector('data').value)])),
          rendition: Object.fromEntries([...document.querySelectorAll('#realtime-rendition tbody tr')].map(r =>
            [r.dataset.value, Number(r.cells[1].querySelector('data').value)]))})""")
        expected = ({("" if k is None else k): v for k, v in truth[0].items()},
                    {("" if k is None else k): v for k, v in truth[1].items()})
        if (page["country"], page["rendition"]) == expected and page["ccv"] == sum(truth[0].values()) >= 1:
            break
        assert time.monotonic() < deadline, (page, truth)
        time.sleep(0.5)  # the panel reloads itself every 5 s
    assert expected[1].get("360", 0) >= 1  # the live view plays the 360p rendition
    assert tab.eval("document.querySelector('#realtime-rendition tbody tr[data-value=\"360\"] th').textContent") \
        == "360p"

    # alerts: the incidents the API lists, or an empty state where the server has no alerts
    incidents = api.client.get(f"{api.edge_url}/data/v1/incidents", timeout=30)
    alerts = tab.eval("""() => ({available: document.querySelector('#alerts').dataset.available,
      items: document.querySelectorAll('#incidents li').length,
      empty: document.querySelector('#alerts-empty').hidden ? null
        : document.querySelector('#alerts-empty').textContent})""")
    if incidents.status_code == 404:
        assert alerts == {"available": "false", "items": 0, "empty": "Alerts are not available on this server."}
    else:
        assert incidents.status_code == 200, incidents.text
        assert alerts["available"] == "true" and alerts["items"] == len(incidents.json()["data"])
        assert (alerts["empty"] is None) == (alerts["items"] > 0)

    # nothing went wrong on the way, and the secret never travelled in a URL
    expected_bad = {(404, f"{api.edge_url}/data/v1/incidents")} if incidents.status_code == 404 else set()
    assert set(tab.bad_answers) <= expected_bad, tab.bad_answers
    assert tab.page_errors == []
    assert all("Failed to load resource" in text for text in tab.console_errors), tab.console_errors
    assert len(tab.console_errors) == len(tab.bad_answers)  # Chromium logs each 4xx answer, and nothing else
    assert not any(api.secret in url for url in tab.urls) and api.secret not in tab.eval("location.href")

    # the token lives in this tab's session: a reload stays signed in, signing out forgets it
    tab.page.reload()
    tab.settled_after(0)
    assert tab.eval("document.querySelector('#app').hidden") is False
    tab.page.click("#sign-out")
    assert tab.eval("sessionStorage.getItem('kinoray.dashboard.token')") is None
    assert tab.eval("document.querySelector('#app').hidden") is True
    assert tab.eval("document.querySelector('#login').hidden") is False


@pytest.mark.browser
def test_a_wrong_token_shows_the_sign_in_error(api, seeded: dict[str, Player], tab: Tab) -> None:
    tab.sign_in(f"{api.edge_url}/dashboard/", api.token_id, "not-the-secret")
    tab.wait("document.querySelector('kr-dashboard').dataset.state === 'login-error'", what="the sign-in error")
    error = tab.eval("document.querySelector('#login-error').textContent")
    assert "wrong" in error and tab.eval("document.querySelector('#login-error').getAttribute('role')") == "alert"
    assert tab.eval("document.querySelector('#app').hidden") is True
    assert tab.eval("sessionStorage.getItem('kinoray.dashboard.token')") is None
    assert tab.bad_answers == [(401, f"{api.edge_url}/data/v1/dimensions")]
    assert tab.page_errors == []
    assert all("Failed to load resource" in text for text in tab.console_errors), tab.console_errors
    assert not any("not-the-secret" in url for url in tab.urls)
    # a real token without the data permission is told so
    from kinoray.control.auth import create_token

    with api.platform.db.session() as session:
        video_only, video_secret = create_token(session, name="video only", permissions={"video": "full"})
    tab.page.fill("#token-id", video_only.id)
    tab.page.fill("#token-secret", video_secret)
    tab.page.click("#login-form button[type=submit]")
    tab.wait("document.querySelector('#login-error').textContent.includes('no permission')",
             what="the permission error")
    assert tab.bad_answers[-1] == (403, f"{api.edge_url}/data/v1/dimensions")
    # then the right one signs in from the same form
    tab.page.fill("#token-id", api.token_id)
    tab.page.fill("#token-secret", api.secret)
    tab.page.click("#login-form button[type=submit]")
    tab.settled_after(0)
    assert tab.eval("document.querySelector('#login').hidden") is True
    assert tab.eval("document.querySelector('#login-error').hidden") is True


@pytest.mark.browser
def test_the_alerts_panel_lists_the_incidents_the_api_lists(api, seeded: dict[str, Player], tab: Tab) -> None:
    """A threshold rule that the seeded views break (one failed view of five, over 10%) opens an incident; the
    panel lists what ``GET /data/v1/incidents`` lists."""
    if api.client.get(f"{api.edge_url}/data/v1/incidents", timeout=30).status_code == 404:
        pytest.skip("alerts are not installed on this server (the empty state is checked above)")
    from kinoray.control.alerts import evaluate_alerts

    rule = api.client.post(f"{api.edge_url}/data/v1/alerts", timeout=30, json={
        "name": "dashboard failures", "metric": "playback_failure_percentage", "comparison": "gt",
        "threshold": 0.1, "window_seconds": 3600, "min_views": 1, "severity": "warning"})
    assert rule.status_code == 201, rule.text
    evaluate_alerts(api.platform)  # what the job runner does every analytics.alert_seconds
    listed = api.client.get(f"{api.edge_url}/data/v1/incidents", timeout=30).json()["data"]
    assert [incident["status"] for incident in listed] == ["open"]
    tab.sign_in(f"{api.edge_url}/dashboard/", api.token_id, api.secret)
    tab.settled_after(0)
    shown = tab.eval("""() => [...document.querySelectorAll('#incidents li')].map(li => ({
      id: li.dataset.incidentId, open: li.classList.contains('open'),
      description: li.querySelector('.description').textContent.trim(),
      measured: li.querySelector('data') ? Number(li.querySelector('data').value) : null}))""")
    assert shown == [{"id": incident["id"], "open": True, "description": incident["description"],
                      "measured": incident["measured_value"]} for incident in listed]
    assert shown[0]["measured"] == pytest.approx(0.2)
    assert tab.eval("document.querySelector('#alerts-empty').hidden") is True
    assert tab.bad_answers == [] and tab.page_errors == [] and tab.console_errors == []
