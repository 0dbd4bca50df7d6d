// kinoray's analytics dashboard, served as written (no framework, no build step):
//
// - <kr-dashboard> upgrades the page's skeleton (kinoray/dashboard/page.py): sign-in with an access token id and
//   secret (kept in this tab's sessionStorage, sent to the Data API as HTTP Basic, never put in a URL), then the
//   overview (Mux's scores and key metrics), a trend chart, a breakdown table, filter chips, the views list with
//   one view's timeline, the real-time panel and the alerts panel — each read from /data/v1/... on the same
//   origin, for one explicit timeframe (epoch seconds, on the element as data-timeframe) and set of filters.
// - <kr-chart> draws one time series with uPlot (vendored from npm, static/uPlot.iife.min.js) and lists the same
//   points in a table for screen readers and for copying.
//
// Every value the page shows is also in a <data value="…"> element: the API's number, unformatted.
"use strict";

(() => {
  const STORAGE_KEY = "kinoray.dashboard.token";
  const REALTIME_SECONDS = 5;
  const VIEWS_PER_PAGE = 10;
  const BREAKDOWN_ROWS = 100;
  const TIMELINE_MAX = 500;
  const PARALLEL_REQUESTS = 4;
  // event details the timeline leaves out: the view's id and counters, the same on every line
  const TIMELINE_HIDDEN = new Set(["view_id", "view_sequence_number", "player_sequence_number"]);

  // Mux's metric ids → label and unit (the ids themselves come from the page's `metrics` attribute).
  const METRIC_INFO = {
    views: ["Views", "count"],
    unique_viewers: ["Unique viewers", "count"],
    video_startup_time: ["Video startup time", "ms"],
    player_startup_time: ["Player startup time", "ms"],
    aggregate_startup_time: ["Aggregate startup time", "ms"],
    exits_before_video_start: ["Exits before video start", "ratio"],
    playback_failure_percentage: ["Playback failures", "ratio"],
    video_startup_failure_percentage: ["Video startup failures", "ratio"],
    rebuffer_count: ["Rebuffer count", "number"],
    rebuffer_duration: ["Rebuffer duration", "ms"],
    rebuffer_percentage: ["Rebuffer percentage", "ratio"],
    rebuffer_frequency: ["Rebuffer frequency", "per_minute"],
    seek_latency: ["Seek latency", "ms"],
    weighted_average_bitrate: ["Weighted average bitrate", "bps"],
    upscale_percentage: ["Upscaling", "ratio"],
    downscale_percentage: ["Downscaling", "ratio"],
    max_upscale_percentage: ["Max upscaling", "ratio"],
    max_downscale_percentage: ["Max downscaling", "ratio"],
    playing_time: ["Playing time", "duration"],
    playback_success_score: ["Playback success", "score"],
    startup_time_score: ["Startup", "score"],
    smoothness_score: ["Smoothness", "score"],
    video_quality_score: ["Video quality", "score"],
    viewer_experience_score: ["Viewer experience", "score"],
  };
  const SCORES = ["viewer_experience_score", "playback_success_score", "startup_time_score", "smoothness_score",
    "video_quality_score"];
  const KEY_METRICS = [["views"], ["unique_viewers"], ["video_startup_time", "median"],
    ["video_startup_time", "95th"], ["rebuffer_percentage"], ["playback_failure_percentage"],
    ["video_startup_failure_percentage"], ["exits_before_video_start"]];
  const MEASUREMENT_LABELS = { median: "median", "95th": "95th percentile", avg: "average", sum: "total",
    count: "count" };
  const TIMEFRAME_SECONDS = { minute: 60, hour: 3600, day: 86400 };

  // --- formatting ------------------------------------------------------------------------------------------
  const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

  function duration(ms) {
    if (ms < 1000) return `${integer.format(ms)} ms`;
    const seconds = ms / 1000;
    if (seconds < 60) return `${seconds.toFixed(2)} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function unitOf(metric) {
    return (METRIC_INFO[metric] || [metric, "number"])[1];
  }

  function labelOf(metric) {
    return (METRIC_INFO[metric] || [metric.replaceAll("_", " ")])[0];
  }

  /** A metric value as the page shows it; "–" when the API has none (no views). */
  function format(value, unit) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    switch (unit) {
      case "count": return integer.format(value);
      case "ms": return value < 1000 ? `${integer.format(value)} ms` : `${(value / 1000).toFixed(2)} s`;
      case "duration": return duration(value);
      case "ratio": return `${(value * 100).toFixed(2)}%`;
      case "score": return integer.format(value * 100);
      case "bps": return `${(value / 1e6).toFixed(2)} Mbps`;
      case "per_minute": return `${value.toFixed(2)} per min`;
      default: return Number.isInteger(value) ? integer.format(value) : value.toFixed(2);
    }
  }

  /** Element builder: h("td", {class: "x"}, "text", child). Text always goes in as text, never as HTML. */
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
      else element.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) {
        element.append(child instanceof Node ? child : String(child));
      }
    }
    return element;
  }

  function dataValue(value, unit) {
    return h("data", { value: value === null || value === undefined ? "" : value }, format(value, unit));
  }

  /** A <time> of an ISO string or an epoch (seconds or milliseconds; Mux's incidents send seconds as a string). */
  function when(moment) {
    const epoch = typeof moment === "number" ? moment : /^\d+$/.test(String(moment)) ? Number(moment) : null;
    const date = epoch === null ? new Date(moment) : new Date(epoch < 1e12 ? epoch * 1000 : epoch);
    if (Number.isNaN(date.getTime())) return h("span", {}, String(moment));
    return h("time", { datetime: date.toISOString() }, date.toLocaleString());
  }

  // --- the Data API ----------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.status = status;
      this.type = type;
    }
  }

  class DataApi {
    constructor(base, tokenId, secret) {
      this.base = new URL(base, document.baseURI);
      this.tokenId = tokenId;
      // Basic credentials are Latin-1: a token id or secret outside it cannot be right anyway
      this.authorization = `Basic ${btoa(`${tokenId}:${secret}`)}`;
      this.running = 0;
      this.waiting = [];
    }

    /** GET base+path with `params` (a list of [name, value]: timeframe[] and filters[] repeat). */
    async get(path, params = []) {
      const url = new URL(path, this.base);
      for (const [name, value] of params) url.searchParams.append(name, value);
      await this.slot();
      try {
        // credentials: "omit" — no cookies, and no browser sign-in prompt on a 401 (the page shows its own)
        const response = await fetch(url, { headers: { Authorization: this.authorization, Accept: "application/json" },
          credentials: "omit", cache: "no-store" });
        const body = await response.json().catch(() => null);
        if (!response.ok) {
          const error = body && body.error ? body.error : {};
          const messages = Array.isArray(error.messages) ? error.messages.join("; ") : "";
          throw new ApiError(response.status, error.type || "http_error",
            messages || `${response.status} ${response.statusText}`);
        }
        return body;
      } finally {
        this.release();
      }
    }

    // at most PARALLEL_REQUESTS in flight: a refresh asks for ~20 answers at once
    slot() {
      if (this.running < PARALLEL_REQUESTS) {
        this.running += 1;
        return Promise.resolve();
      }
      return new Promise((resolve) => this.waiting.push(resolve));
    }

    release() {
      const next = this.waiting.shift();
      if (next) next();
      else this.running -= 1;
    }
  }

  // --- <kr-chart> --------------------------------------------------------------------------------------------
  class KrChart extends HTMLElement {
    connectedCallback() {
      if (!this.plotArea) this.build();
      this.resizer.observe(this.plotArea);
    }

    build() {
      this.plotArea = h("div", { class: "plot", role: "img", "aria-label": "Chart" });
      this.empty = h("p", { class: "muted", hidden: true }, "No views in this timeframe.");
      this.table = h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Time"),
        h("th", { scope: "col" }, "Value"), h("th", { scope: "col" }, "Views"))), h("tbody"));
      this.append(this.plotArea, this.empty, h("details", {}, h("summary", {}, "Data table"), this.table));
      this.color = getComputedStyle(this).getPropertyValue("--kr-chart-color").trim() || "#1d4ed8";
      this.resizer = new ResizeObserver(() => {
        if (this.plot && this.plotArea.clientWidth && this.plotArea.clientWidth !== this.plot.width) {
          this.plot.setSize({ width: this.plotArea.clientWidth, height: this.plot.height });
        }
      });
    }

    disconnectedCallback() {
      this.resizer.disconnect();
    }

    /** Draw `rows` ([ISO time, value, views], the timeseries API's) of a metric with unit `unit`. */
    draw(title, unit, rows) {
      const xs = rows.map((row) => Date.parse(row[0]) / 1000);
      const ys = rows.map((row) => (row[1] === null ? null : Number(row[1])));
      const points = ys.filter((y) => y !== null).length;
      if (this.plot) this.plot.destroy();
      this.plot = new window.uPlot({
        title,
        width: this.plotArea.clientWidth || 600,
        height: 260,
        scales: { x: { time: true } },
        series: [
          {},
          { label: title, stroke: this.color, width: 2, spanGaps: false,
            points: { show: true, size: 8, fill: this.color, stroke: this.color },
            value: (plot, value) => format(value, unit) },
        ],
        axes: [{}, { size: 80, values: (plot, splits) => splits.map((value) => format(value, unit)) }],
        cursor: { drag: { x: false, y: false } },
      }, [xs, ys], this.plotArea);
      this.plotArea.setAttribute("aria-label",
        `${title}: ${points} of ${rows.length} time buckets have views; the data table below lists them`);
      this.dataset.points = String(points);
      this.dataset.buckets = String(rows.length);
      this.empty.hidden = points > 0;
      this.table.tBodies[0].replaceChildren(...rows.map((row) => h("tr", {}, h("td", {}, when(row[0])),
        h("td", {}, dataValue(row[1], unit)), h("td", {}, dataValue(row[2], "count")))));
    }
  }

  // --- <kr-dashboard> ----------------------------------------------------------------------------------------
  class KrDashboard extends HTMLElement {
    connectedCallback() {
      if (this.started) return;
      this.started = true;
      this.$ = (selector) => this.querySelector(selector);
      this.metrics = (this.getAttribute("metrics") || "").split(/\s+/).filter(Boolean);
      this.filters = [];
      this.viewsPage = 1;
      this.generation = 0;
      this.tickets = {};
      this.busy = {};
      this.$("#login-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.signIn(this.$("#token-id").value.trim(), this.$("#token-secret").value);
      });
      this.$("#controls").addEventListener("submit", (event) => {
        event.preventDefault();
        this.refresh();
      });
      this.$("#timeframe").addEventListener("change", () => this.refresh());
      this.$("#sign-out").addEventListener("click", () => this.signOut(""));
      this.$("#filter-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const value = this.$("#filter-value").value;
        if (value) {
          this.addFilter(this.$("#filter-dimension").value, value, this.$("#filter-negate").checked);
          this.$("#filter-value").value = "";
        }
      });
      this.$("#filter-dimension").addEventListener("change", () => this.loadFilterValues());
      for (const form of this.querySelectorAll("#trends form, #breakdown form")) {
        form.addEventListener("submit", (event) => event.preventDefault());
      }
      this.$("#trend-metric").addEventListener("change", () => this.track(this.loadTrend()));
      this.$("#trend-measurement").addEventListener("change", () => this.track(this.loadTrend()));
      this.$("#breakdown-metric").addEventListener("change", () => this.track(this.loadBreakdown()));
      this.$("#breakdown-dimension").addEventListener("change", () => this.track(this.loadBreakdown()));
      this.$("#views-previous").addEventListener("click", () => this.turnViews(-1));
      this.$("#views-next").addEventListener("click", () => this.turnViews(1));
      this.fillMetricSelect(this.$("#trend-metric"), "views");
      this.fillMetricSelect(this.$("#breakdown-metric"), "views");
      this.buildCards();
      this.restoreState();
      const saved = this.savedToken();
      if (saved) this.signIn(saved.id, saved.secret, true);
      else this.showLogin("");
    }

    savedToken() {
      try {
        const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
        return saved && typeof saved.id === "string" && typeof saved.secret === "string" ? saved : null;
      } catch {
        return null;
      }
    }

    fillMetricSelect(select, chosen) {
      select.replaceChildren(...this.metrics.map((metric) => h("option",
        { value: metric, selected: metric === chosen }, labelOf(metric))));
    }

    buildCards() {
      const trend = (metric, measurement, label) => h("button", { type: "button", class: "small card-trend",
        "aria-label": `Show the trend of ${label}`, onclick: () => this.showTrend(metric, measurement) }, "Trend");
      this.$("#scores").replaceChildren(...SCORES.map((metric) => h("li",
        { class: "card score", "data-metric": metric },
        h("span", { class: "label" }, labelOf(metric)), dataValue(null, "score"),
        h("meter", { min: 0, max: 100, low: 50, high: 80, optimum: 100, value: 0,
          "aria-label": `${labelOf(metric)} score` }), trend(metric, "", `the ${labelOf(metric)} score`))));
      this.$("#key-metrics").replaceChildren(...KEY_METRICS.map(([metric, measurement]) => {
        const label = labelOf(metric) + (measurement ? ` (${MEASUREMENT_LABELS[measurement]})` : "");
        return h("li", { class: "card", "data-metric": metric, "data-measurement": measurement || "" },
          h("span", { class: "label" }, label), dataValue(null, unitOf(metric)), trend(metric, measurement || "", label));
      }));
    }

    /** A card's "Trend" button: the trend chart of that metric and measurement, brought into view. */
    showTrend(metric, measurement) {
      this.$("#trend-metric").value = metric;
      this.$("#trend-measurement").value = measurement;
      this.track(this.loadTrend());
      this.$("#trends").scrollIntoView({ block: "start" });
      this.$("#trend-metric").focus({ preventScroll: true });
    }

    // --- signing in and out ---
    async signIn(tokenId, secret, remembered = false) {
      const error = this.$("#login-error");
      error.hidden = true;
      if (!tokenId || !secret) {
        this.showLogin("Enter the access token ID and its secret key.");
        return;
      }
      let api;
      try {
        api = new DataApi(this.getAttribute("api") || "../data/v1/", tokenId, secret);
      } catch {
        this.showLogin("That is not an access token: IDs and secrets are plain ASCII.");
        return;
      }
      const button = this.$("#login-form button");
      button.disabled = true;
      try {
        const dimensions = await api.get("dimensions");
        this.api = api;
        sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ id: tokenId, secret }));
        this.dimensions = [...dimensions.data.basic, ...dimensions.data.advanced];
        this.fillDimensions(dimensions.data);
        this.$("#token-secret").value = "";
        this.$("#login").hidden = true;
        this.$("#app").hidden = false;
        this.$("#signed-in").textContent = `Token ${tokenId}`;
        this.startRealtime();
        await this.refresh();
      } catch (failure) {
        // a refused token is forgotten; one that could not be checked (server down) is kept for the next try
        if (remembered && failure instanceof ApiError && [401, 403].includes(failure.status)) {
          sessionStorage.removeItem(STORAGE_KEY);
        }
        this.showLogin(failure instanceof ApiError && failure.status === 401
          ? "Sign-in failed: the access token ID or secret key is wrong, or the token was revoked."
          : failure instanceof ApiError && failure.status === 403
            ? "Sign-in failed: this access token has no permission to read Data."
            : `Sign-in failed: ${failure.message}`);
      } finally {
        button.disabled = false;
      }
    }

    showLogin(message) {
      this.$("#app").hidden = true;
      this.$("#login").hidden = false;
      const error = this.$("#login-error");
      error.textContent = message;
      error.hidden = !message;
      this.dataset.state = message ? "login-error" : "login";
      (this.$("#token-id").value ? this.$("#token-secret") : this.$("#token-id")).focus();
    }

    signOut(message) {
      sessionStorage.removeItem(STORAGE_KEY);
      this.api = null;
      clearInterval(this.realtimeTimer);
      this.filters = [];
      this.renderChips();
      this.$("#view-detail").hidden = true;
      this.showLogin(message);
    }

    fillDimensions(lists) {
      const groups = [["Basic", lists.basic], ["Advanced", lists.advanced]].map(([label, names]) => h("optgroup",
        { label }, names.map((name) => h("option", { value: name, selected: name === "browser" }, name))));
      this.$("#filter-dimension").replaceChildren(...groups.map((group) => group.cloneNode(true)));
      this.$("#breakdown-dimension").replaceChildren(...groups);
      const by = this.restored && this.restored.by;
      if (by && this.dimensions.includes(by)) this.$("#breakdown-dimension").value = by;
      // filters from the address that name no dimension of this server are dropped
      this.filters = this.filters.filter((filter) => this.dimensions.includes(filter.dimension));
      this.renderChips();
    }

    // --- the address: what the page shows (never the token), so a reload or a shared link shows it again ---
    restoreState() {
      const params = new URLSearchParams(location.search);
      const pick = (select, value) => {
        if (value && [...select.options].some((option) => option.value === value)) select.value = value;
      };
      pick(this.$("#timeframe"), params.get("timeframe"));
      pick(this.$("#trend-metric"), params.get("trend"));
      pick(this.$("#trend-measurement"), params.get("measurement"));
      pick(this.$("#breakdown-metric"), params.get("breakdown"));
      this.restored = { by: params.get("by") };
      this.filters = params.getAll("filter").slice(0, 32).flatMap((item) => {
        const match = /^(!?)([a-z_]+):(.+)$/s.exec(item);
        return match ? [{ negated: match[1] === "!", dimension: match[2], value: match[3] }] : [];
      });
      this.renderChips();
    }

    saveState() {
      const params = new URLSearchParams();
      params.set("timeframe", this.$("#timeframe").value);
      for (const filter of this.filters) {
        params.append("filter", `${filter.negated ? "!" : ""}${filter.dimension}:${filter.value}`);
      }
      params.set("trend", this.$("#trend-metric").value);
      if (this.$("#trend-measurement").value) params.set("measurement", this.$("#trend-measurement").value);
      params.set("breakdown", this.$("#breakdown-metric").value);
      if (this.$("#breakdown-dimension").value) params.set("by", this.$("#breakdown-dimension").value);
      history.replaceState(null, "", `?${params}${location.hash}`);
    }

    // --- the query every panel shares ---
    /** [name, value] pairs of timeframe[] and filters[] for the current state. */
    query(extra = []) {
      return [...this.timeframe.map((epoch) => ["timeframe[]", String(epoch)]),
        ...this.filters.map((filter) => ["filters[]", `${filter.negated ? "!" : ""}${filter.dimension}:${filter.value}`]),
        ...extra];
    }

    /**
     * Runs one load of a panel (`kind`: what it loads, the section by default), turning its failure into a message
     * in the panel (a refused token signs out). `load` gets `stale()`: true once a newer load of the same kind has
     * begun (a filter changed meanwhile) — its answer wins, an older one is dropped. The section is aria-busy
     * while any of its loads runs.
     */
    async guard(section, load, kind = section) {
      const panel = this.$(section);
      const ticket = (this.tickets[kind] = (this.tickets[kind] || 0) + 1);
      const stale = () => this.tickets[kind] !== ticket || !this.api;
      const error = () => panel.querySelector(`:scope > .panel-error[data-kind="${kind}"]`);
      this.busy[section] = (this.busy[section] || 0) + 1;
      panel.setAttribute("aria-busy", "true");
      try {
        await load(stale);
        if (!stale()) error()?.remove();
      } catch (failure) {
        if (failure instanceof ApiError && failure.status === 401) {
          if (this.api) this.signOut("The server refused the access token (revoked or expired): sign in again.");
          return;
        }
        if (stale()) return;
        error()?.remove();
        panel.querySelector("h2").after(h("p", { class: "error panel-error", role: "alert", "data-kind": kind },
          `Could not load this panel: ${failure.message}`));
      } finally {
        this.busy[section] -= 1;
        if (!this.busy[section]) panel.setAttribute("aria-busy", "false");
      }
    }

    /** Marks the page busy while `work` runs; data-generation counts the loads that finished. */
    async track(work) {
      this.dataset.state = "loading";
      await work;
      if (!this.api) return;
      this.generation += 1;
      this.dataset.generation = String(this.generation);
      this.dataset.state = "ready";
    }

    async refresh() {
      if (!this.api) return;
      const seconds = this.timeframeSeconds();
      const end = Math.floor(Date.now() / 1000);
      this.timeframe = [end - seconds, end];
      this.dataset.timeframe = this.timeframe.join(",");
      this.viewsPage = 1;
      this.saveState();
      this.$("#status").textContent = "Loading…";
      await this.track(Promise.all([this.loadOverview(), this.loadTrend(), this.loadBreakdown(), this.loadViews(),
        this.loadRealtime(), this.loadAlerts(), this.loadFilterValues()]));
      if (this.api) this.$("#status").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    }

    timeframeSeconds() {
      const [count, unit] = this.$("#timeframe").value.split(":");
      return Number(count) * TIMEFRAME_SECONDS[unit.replace(/s$/, "")];
    }

    // --- filters ---
    addFilter(dimension, value, negated) {
      const existing = this.filters.find((f) => f.dimension === dimension && f.value === value);
      if (existing) existing.negated = negated;
      else this.filters.push({ dimension, value, negated });
      this.renderChips();
      this.refresh();
    }

    renderChips() {
      this.$("#no-filters").hidden = this.filters.length > 0;
      this.$("#filter-chips").replaceChildren(...this.filters.map((filter, index) => {
        const name = `${filter.dimension} ${filter.value}`;
        return h("li", { class: `chip${filter.negated ? " negated" : ""}`,
          "data-filter": `${filter.negated ? "!" : ""}${filter.dimension}:${filter.value}` },
        h("span", {}, `${filter.dimension} ${filter.negated ? "is not" : "is"} `, h("strong", {}, filter.value)),
        h("button", { type: "button", "aria-pressed": String(filter.negated), "aria-label": `Exclude ${name}`,
          title: "Exclude (negate) this filter", onclick: () => {
            filter.negated = !filter.negated;
            this.renderChips();
            this.refresh();
          } }, "≠"),
        h("button", { type: "button", "aria-label": `Remove filter ${name}`, title: "Remove", onclick: () => {
          this.filters.splice(index, 1);
          this.renderChips();
          this.refresh();
        } }, "×"));
      }));
    }

    loadFilterValues() {
      const dimension = this.$("#filter-dimension").value;
      if (!dimension || !this.timeframe) return Promise.resolve();
      return this.guard("#filters", async (stale) => {
        const answer = await this.api.get(`dimensions/${encodeURIComponent(dimension)}`,
          [...this.timeframe.map((epoch) => ["timeframe[]", String(epoch)]), ["limit", "100"]]);
        if (stale()) return;
        this.$("#filter-values").replaceChildren(...answer.data.map((item) => h("option", { value: item.value },
          `${item.total_count} views`)));
      });
    }

    // --- overview ---
    loadOverview() {
      return this.guard("#overview", async (stale) => {
        const cards = [...this.querySelectorAll("#scores .card, #key-metrics .card")];
        await Promise.all(cards.map(async (card) => {
          const { metric, measurement } = card.dataset;
          const answer = await this.api.get(`metrics/${metric}/overall`,
            this.query(measurement ? [["measurement", measurement]] : []));
          if (stale()) return;
          const value = answer.data.value;
          card.querySelector("data").replaceWith(dataValue(value, unitOf(metric)));
          const meter = card.querySelector("meter");
          if (meter) meter.value = value === null ? 0 : value * 100;
          card.title = `${integer.format(answer.data.total_views)} views`;
        }));
      });
    }

    // --- trends ---
    loadTrend() {
      return this.guard("#trends", async (stale) => {
        this.saveState();
        const metric = this.$("#trend-metric").value;
        const measurement = this.$("#trend-measurement").value;
        const answer = await this.api.get(`metrics/${metric}/timeseries`,
          this.query(measurement ? [["measurement", measurement]] : []));
        if (stale()) return;
        const chart = this.$("#trend-chart");
        chart.dataset.metric = metric;
        chart.dataset.measurement = measurement;
        chart.dataset.granularity = answer.meta.granularity || "";
        const unit = measurement === "count" ? "count" : unitOf(metric);
        chart.draw(`${labelOf(metric)}${measurement ? ` (${MEASUREMENT_LABELS[measurement]})` : ""} per ` +
          `${(answer.meta.granularity || "bucket").replace("_", " ")}`, unit, answer.data);
      });
    }

    // --- breakdown ---
    loadBreakdown() {
      return this.guard("#breakdown", async (stale) => {
        this.saveState();
        const metric = this.$("#breakdown-metric").value;
        const dimension = this.$("#breakdown-dimension").value || "browser";
        const answer = await this.api.get(`metrics/${metric}/breakdown`, this.query([["group_by", dimension],
          ["order_by", "views"], ["order_direction", "desc"], ["limit", String(BREAKDOWN_ROWS)]]));
        if (stale()) return;
        const unit = unitOf(metric);
        const table = this.$("#breakdown-table");
        table.dataset.metric = metric;
        table.dataset.dimension = dimension;
        table.tHead.rows[0].cells[1].textContent = labelOf(metric);
        this.$("#breakdown-caption").textContent = `${labelOf(metric)} by ${dimension}: ` +
          `${answer.total_row_count} value${answer.total_row_count === 1 ? "" : "s"}` +
          (answer.total_row_count > answer.data.length ? ` (the ${answer.data.length} with the most views)` : "");
        table.tBodies[0].replaceChildren(...answer.data.map((row) => h("tr", { "data-field": row.field ?? "" },
          h("th", { scope: "row" }, row.field ?? h("em", {}, "(not set)")),
          h("td", {}, dataValue(row.value, unit)),
          h("td", {}, dataValue(row.views, "count")),
          h("td", {}, dataValue(row.total_watch_time, "duration")),
          h("td", {}, dataValue(row.negative_impact, "count")),
          h("td", {}, row.field === null ? "" : [
            h("button", { type: "button", class: "small", "aria-label": `Only ${dimension} ${row.field}`,
              onclick: () => this.addFilter(dimension, row.field, false) }, "Only"),
            h("button", { type: "button", class: "small", "aria-label": `Exclude ${dimension} ${row.field}`,
              onclick: () => this.addFilter(dimension, row.field, true) }, "Exclude")]))));
      });
    }

    // --- views ---
    turnViews(step) {
      this.viewsPage = Math.max(1, this.viewsPage + step);
      this.track(this.loadViews());
    }

    loadViews() {
      return this.guard("#views", async (stale) => {
        const answer = await this.api.get("video-views", this.query([["limit", String(VIEWS_PER_PAGE)],
          ["page", String(this.viewsPage)]]));
        if (stale()) return;
        const pages = Math.max(1, Math.ceil(answer.total_row_count / VIEWS_PER_PAGE));
        this.$("#views-caption").textContent = `${answer.total_row_count} view${answer.total_row_count === 1 ? "" : "s"}` +
          `, newest first (page ${this.viewsPage} of ${pages})`;
        this.$("#views-table").dataset.total = String(answer.total_row_count);
        this.$("#views-previous").disabled = this.viewsPage <= 1;
        this.$("#views-next").disabled = this.viewsPage >= pages;
        this.$("#views-table").tBodies[0].replaceChildren(...answer.data.map((view) => h("tr",
          { "data-view-id": view.id, class: view.playback_failure ? "failed" : "" },
          h("th", { scope: "row" }, h("button", { type: "button", class: "link",
            "aria-label": `View ${view.id}, started ${new Date(view.view_start).toLocaleString()}`,
            onclick: () => this.track(this.loadView(view.id)) }, when(view.view_start))),
          h("td", {}, view.video_title || "–"), h("td", {}, view.viewer_application_name || "–"),
          h("td", {}, view.viewer_os_family || "–"), h("td", {}, view.country_code || "–"),
          h("td", {}, dataValue(view.watch_time, "duration")),
          h("td", {}, dataValue(view.viewer_experience_score, "score")),
          h("td", {}, view.playback_failure
            ? h("span", { class: "bad" }, `Failed${view.player_error_code ? ` (${view.player_error_code})` : ""}` +
              `${view.player_error_message ? `: ${view.player_error_message}` : ""}`)
            : "OK"))));
      });
    }

    loadView(viewId) {
      return this.guard("#views", async (stale) => {
        const view = (await this.api.get(`video-views/${encodeURIComponent(viewId)}`)).data;
        if (stale()) return;
        const detail = this.$("#view-detail");
        detail.dataset.viewId = view.id;
        this.$("#view-detail-title").textContent = `View ${view.id}`;
        const facts = [
          ["Video", view.video_title || view.playback_id || view.asset_id],
          ["Viewer", view.viewer_user_id || view.mux_viewer_id],
          ["Player", [view.player_name, view.player_software, view.player_software_version].filter(Boolean).join(" · ")],
          ["Browser and OS", [view.viewer_application_name, view.viewer_os_family].filter(Boolean).join(" on ")],
          ["Country", view.country_code],
          ["Region", view.region],
          ["Started", when(view.view_start)],
          ["Video startup time", dataValue(view.time_to_first_frame, "ms")],
          ["Watch time", dataValue(view.watch_time, "duration")],
          ["Rebuffering", `${view.buffering_count} time${view.buffering_count === 1 ? "" : "s"}, ` +
            `${duration(view.buffering_duration)}`],
          ["Viewer experience score", dataValue(view.viewer_experience_score === null ? null
            : Number(view.viewer_experience_score), "score")],
          ["Result", view.playback_failure ? `Failed ${view.player_error_code || ""} ${view.player_error_message || ""}`
            : view.exit_before_video_start ? "Exited before the video started" : "OK"],
        ];
        this.$("#view-summary").replaceChildren(...facts.filter(([, value]) => value !== null && value !== undefined
          && value !== "").flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
        const first = view.events.length ? view.events[0].viewer_time : 0;
        const shown = view.events.slice(0, TIMELINE_MAX);
        this.$("#view-timeline").replaceChildren(...shown.map((event) => h("li", { "data-event": event.name },
          h("time", { datetime: new Date(event.viewer_time).toISOString() },
            `+${((event.viewer_time - first) / 1000).toFixed(3)} s`),
          " ", h("strong", {}, event.name),
          event.playback_time === null || event.playback_time === undefined ? ""
            : h("span", { class: "muted" }, ` playhead ${(event.playback_time / 1000).toFixed(2)} s`),
          Object.keys(event.details).length ? h("span", { class: "details" }, ` ${Object.entries(event.details)
            .filter(([key]) => !TIMELINE_HIDDEN.has(key)).slice(0, 6).map(([key, value]) => `${key}=${typeof value === "object" ? JSON.stringify(value) : value}`)
            .join(", ")}`.slice(0, 300)) : "")),
        ...(view.events.length > TIMELINE_MAX
          ? [h("li", { class: "muted" }, `and ${view.events.length - TIMELINE_MAX} more events`)] : []));
        detail.hidden = false;
        detail.focus();
      }, "view");
    }

    // --- real time ---
    startRealtime() {
      clearInterval(this.realtimeTimer);
      this.realtimeTimer = setInterval(() => {
        if (this.api && !document.hidden && this.timeframe) this.loadRealtime();
      }, REALTIME_SECONDS * 1000);
    }

    loadRealtime() {
      return this.guard("#realtime", async (stale) => {
        if (!this.realtimeDimensions) {
          const names = await this.api.get("realtime/dimensions");
          this.realtimeDimensions = new Set(names.data.map((item) => item.name));
        }
        // real time filters by its own dimensions only; the others do not apply to it
        const filters = this.filters.filter((f) => this.realtimeDimensions.has(f.dimension))
          .map((f) => ["filters[]", `${f.negated ? "!" : ""}${f.dimension}:${f.value}`]);
        const breakdown = (dimension) => this.api.get("realtime/metrics/current-concurrent-viewers/breakdown",
          [["dimension", dimension], ["order_by", "views"], ["order_direction", "desc"], ...filters]);
        const [countries, renditions] = await Promise.all([breakdown("country"), breakdown("video_source_height")]);
        if (stale()) return;
        const total = countries.data.reduce((sum, row) => sum + row.concurrent_viewers, 0);
        this.$("#ccv").replaceWith(Object.assign(dataValue(total, "count"), { id: "ccv", className: "big" }));
        this.$("#realtime-updated").textContent = `as of ${new Date(countries.timeframe[1] * 1000).toLocaleTimeString()}`;
        const rows = (answer, label) => answer.data.filter((row) => row.concurrent_viewers > 0).map((row) => h("tr",
          { "data-value": row.value ?? "" }, h("th", { scope: "row" }, row.value === null ? "(unknown)" : label(row.value)),
          h("td", {}, dataValue(row.concurrent_viewers, "count")), h("td", {}, dataValue(row.starting_up_viewers, "count"))));
        this.$("#realtime-country").tBodies[0].replaceChildren(...rows(countries, (value) => value));
        this.$("#realtime-rendition").tBodies[0].replaceChildren(...rows(renditions, (value) => `${value}p`));
      });
    }

    // --- alerts ---
    loadAlerts() {
      return this.guard("#alerts", async (stale) => {
        const empty = this.$("#alerts-empty");
        const list = this.$("#incidents");
        let answer;
        try {
          answer = await this.api.get("incidents");
        } catch (failure) {
          if (!(failure instanceof ApiError) || ![404, 405, 501].includes(failure.status)) throw failure;
          if (stale()) return;
          list.replaceChildren();
          empty.textContent = "Alerts are not available on this server.";
          empty.hidden = false;
          this.$("#alerts").dataset.available = "false";
          return;
        }
        if (stale()) return;
        this.$("#alerts").dataset.available = "true";
        const incidents = Array.isArray(answer.data) ? answer.data : [];
        empty.textContent = "No incidents: no alert has fired.";
        empty.hidden = incidents.length > 0;
        list.replaceChildren(...incidents.map((incident) => {
          const breakdowns = Array.isArray(incident.breakdowns) ? incident.breakdowns : [];
          const open = incident.status === "open";
          const metric = incident.measurement;
          const unit = metric && METRIC_INFO[metric] ? unitOf(metric) : "number";
          const measured = typeof incident.measured_value === "number"
            ? h("span", {}, ` — ${labelOf(metric || "value")} `, dataValue(incident.measured_value, unit),
              typeof incident.threshold === "number" ? ` (threshold ${format(incident.threshold, unit)})` : "",
              incident.sample_size ? ` over ${integer.format(incident.sample_size)} ${incident.sample_size_unit || "views"}`
                : "") : "";
          return h("li", { class: `incident ${open ? "open" : "closed"}`, "data-incident-id": incident.id ?? "" },
            h("strong", {}, open ? "Open" : "Closed"),
            incident.severity ? h("span", { class: "muted" }, ` ${incident.severity}`) : "",
            h("span", { class: "description" }, ` ${incident.description || incident.error_description ||
              `${metric || "a metric"} crossed its threshold`}`),
            measured,
            breakdowns.length ? h("span", { class: "details" }, ` (${breakdowns.map((b) => `${b.name}: ${b.value}`)
              .join(", ")})`) : "",
            incident.started_at ? h("span", { class: "muted" }, ", since ", when(incident.started_at)) : "",
            incident.resolved_at ? h("span", { class: "muted" }, ", resolved ", when(incident.resolved_at)) : "");
        }));
      });
    }
  }

  customElements.define("kr-chart", KrChart);
  customElements.define("kr-dashboard", KrDashboard);
})();
