"""The dashboard's one HTML page (``/dashboard/``): a skeleton of landmarks, headings, forms and empty tables
that ``static/kinoray-dashboard.js`` fills from the Data API once the user signs in with an access token.

The page carries no inline script or style and no data: the Content-Security-Policy allows only the app's own
files and requests to the same origin, and every URL in it is relative (``static/…``, ``../data/v1/…``), so it
works behind any host or path prefix. The metric ids it offers come from :data:`kinoray.analytics.METRICS`.
"""

from __future__ import annotations

import functools
import hashlib
from html import escape

from kinoray import analytics
from kinoray.analytics.query import MEASUREMENTS
from kinoray.dashboard.assets import static_url

__all__ = ["CONTENT_SECURITY_POLICY", "dashboard_page", "page_etag"]

#: Same-origin scripts, styles and requests only; uPlot draws on a canvas (no images, fonts or workers); the
#: page may not be framed (it holds an access token) and its forms post nowhere (the script handles them).
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
])

_MEASUREMENT_LABELS = {"avg": "average", "median": "median", "95th": "95th percentile", "sum": "total",
                       "count": "count of views with a value"}
_TIMEFRAMES = (("1:hours", "Last hour"), ("6:hours", "Last 6 hours"), ("24:hours", "Last 24 hours"),
               ("7:days", "Last 7 days"), ("30:days", "Last 30 days"))


@functools.cache
def dashboard_page() -> str:
    """The page's HTML (the same for every user: built once per process)."""
    timeframes = "".join(f'<option value="{value}"{" selected" if value == "24:hours" else ""}>{label}</option>'
                         for value, label in _TIMEFRAMES)
    metrics = escape(" ".join(analytics.METRICS))
    measurements = '<option value="" selected>the metric\'s own</option>' + "".join(
        f'<option value="{name}">{_MEASUREMENT_LABELS.get(name, name)}</option>' for name in MEASUREMENTS)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>kinoray Data</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{static_url('uPlot.min.css')}">
<link rel="stylesheet" href="{static_url('kinoray-dashboard.css')}">
<script src="{static_url('uPlot.iife.min.js')}" defer></script>
<script src="{static_url('kinoray-dashboard.js')}" defer></script>
</head>
<body>
<kr-dashboard api="../data/v1/" metrics="{metrics}">
<section id="login" class="login" aria-labelledby="login-title">
  <h1 id="login-title">kinoray Data</h1>
  <p>Sign in with an access token that has the <strong>data</strong> permission (<code>kinoray token create</code>).
  The secret stays in this tab (session storage) and is sent only to this server's Data API.</p>
  <form id="login-form" method="post">
    <label for="token-id">Access token ID</label>
    <input id="token-id" name="token_id" autocomplete="username" spellcheck="false" required>
    <label for="token-secret">Secret key</label>
    <input id="token-secret" name="token_secret" type="password" autocomplete="current-password" required>
    <button type="submit">Sign in</button>
    <p id="login-error" class="error" role="alert" hidden></p>
  </form>
</section>
<div id="app" hidden>
  <header class="bar">
    <h1>kinoray Data</h1>
    <form id="controls" class="controls" method="post">
      <label for="timeframe">Timeframe</label>
      <select id="timeframe" name="timeframe">{timeframes}</select>
      <button id="refresh" type="submit">Refresh</button>
      <span id="signed-in" class="muted"></span>
      <button id="sign-out" type="button">Sign out</button>
    </form>
    <p id="status" class="status" role="status" aria-live="polite"></p>
  </header>
  <nav aria-label="Sections"><ul>
    <li><a href="#overview">Overview</a></li><li><a href="#trends">Trends</a></li>
    <li><a href="#breakdown">Breakdown</a></li><li><a href="#views">Views</a></li>
    <li><a href="#realtime">Real-time</a></li><li><a href="#alerts">Alerts</a></li>
  </ul></nav>
  <main>
    <section id="filters" aria-labelledby="filters-title">
      <h2 id="filters-title">Filters</h2>
      <ul id="filter-chips" class="chips" aria-label="Active filters"></ul>
      <p id="no-filters" class="muted">No filters: every view of the timeframe.</p>
      <form id="filter-form" class="controls" method="post">
        <label for="filter-dimension">Dimension</label>
        <select id="filter-dimension" name="dimension"></select>
        <label for="filter-value">Value</label>
        <input id="filter-value" name="value" list="filter-values" required>
        <datalist id="filter-values"></datalist>
        <label><input id="filter-negate" name="negate" type="checkbox"> Exclude</label>
        <button type="submit">Add filter</button>
      </form>
    </section>
    <section id="overview" aria-labelledby="overview-title">
      <h2 id="overview-title">Overview</h2>
      <h3>Scores</h3>
      <ul id="scores" class="cards" aria-label="Scores"></ul>
      <h3>Key metrics</h3>
      <ul id="key-metrics" class="cards" aria-label="Key metrics"></ul>
    </section>
    <section id="trends" aria-labelledby="trends-title">
      <h2 id="trends-title">Trends</h2>
      <form class="controls" method="post">
        <label for="trend-metric">Metric</label><select id="trend-metric" name="metric"></select>
        <label for="trend-measurement">Measurement</label>
        <select id="trend-measurement" name="measurement">{measurements}</select>
      </form>
      <kr-chart id="trend-chart"></kr-chart>
    </section>
    <section id="breakdown" aria-labelledby="breakdown-title">
      <h2 id="breakdown-title">Breakdown</h2>
      <form class="controls" method="post">
        <label for="breakdown-metric">Metric</label><select id="breakdown-metric" name="metric"></select>
        <label for="breakdown-dimension">By</label><select id="breakdown-dimension" name="dimension"></select>
      </form>
      <table id="breakdown-table">
        <caption id="breakdown-caption"></caption>
        <thead><tr><th scope="col">Value</th><th scope="col">Metric</th><th scope="col">Views</th>
          <th scope="col">Watch time</th><th scope="col">Negative impact</th><th scope="col">Filter</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
    <section id="views" aria-labelledby="views-title">
      <h2 id="views-title">Views</h2>
      <table id="views-table">
        <caption id="views-caption"></caption>
        <thead><tr><th scope="col">Started</th><th scope="col">Video</th><th scope="col">Browser</th>
          <th scope="col">OS</th><th scope="col">Country</th><th scope="col">Watch time</th>
          <th scope="col">Experience</th><th scope="col">Result</th></tr></thead>
        <tbody></tbody>
      </table>
      <div class="controls">
        <button id="views-previous" type="button">Previous page</button>
        <button id="views-next" type="button">Next page</button>
      </div>
      <section id="view-detail" aria-labelledby="view-detail-title" hidden tabindex="-1">
        <h3 id="view-detail-title">View</h3>
        <dl id="view-summary" class="summary"></dl>
        <h4>Timeline</h4>
        <ol id="view-timeline" class="timeline"></ol>
      </section>
    </section>
    <section id="realtime" aria-labelledby="realtime-title">
      <h2 id="realtime-title">Real-time</h2>
      <p>Concurrent viewers: <data id="ccv" class="big" value="">–</data>
        <span id="realtime-updated" class="muted"></span></p>
      <div class="columns">
        <table id="realtime-country"><caption>By country</caption>
          <thead><tr><th scope="col">Country</th><th scope="col">Viewers</th><th scope="col">Starting</th></tr></thead>
          <tbody></tbody></table>
        <table id="realtime-rendition"><caption>By rendition (height)</caption>
          <thead><tr><th scope="col">Rendition</th><th scope="col">Viewers</th><th scope="col">Starting</th></tr></thead>
          <tbody></tbody></table>
      </div>
    </section>
    <section id="alerts" aria-labelledby="alerts-title">
      <h2 id="alerts-title">Alerts</h2>
      <ul id="incidents" class="incidents" aria-label="Incidents"></ul>
      <p id="alerts-empty" class="muted" hidden></p>
    </section>
  </main>
  <footer class="muted">Regions and countries of viewers:
    <a href="https://db-ip.com" rel="noopener">IP Geolocation by DB-IP</a> (CC BY 4.0)</footer>
</div>
</kr-dashboard>
</body>
</html>
"""


@functools.cache
def page_etag() -> str:
    """A strong ETag of :func:`dashboard_page` (it changes only when kinoray or its static files do)."""
    return f'"{hashlib.sha256(dashboard_page().encode()).hexdigest()[:32]}"'
