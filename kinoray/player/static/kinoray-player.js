/*
 * <kinoray-player>: a web component that plays a kinoray playback id with hls.js and reports Mux-Data-shaped
 * analytics beacons. kinoray, Apache-2.0.
 *
 *   <script src="https://HOST/player/static/hls.min.js"></script>        (optional: loaded on demand)
 *   <script src="https://HOST/player/static/kinoray-player.js"></script>
 *   <kinoray-player playback-id="ID" token="JWT" thumbnail-token="JWT" storyboard-token="JWT"
 *                   autoplay muted base-url="https://HOST" beacon-url="https://HOST/data/v1/beacons">
 *
 * URLs follow Mux's shapes under one base (default: where this script was loaded from): HLS
 * /{id}.m3u8?token=, poster /{id}/thumbnail.jpg?token=, seek previews /{id}/storyboard.vtt?token=.
 * Keyboard: space/k play-pause, left/right seek 5 s, j/l 10 s, up/down volume, m mute, f fullscreen,
 * c captions, Home/End start/live edge. Properties: .video, .hls, .error ({type, message, status} once playback
 * failed), .viewId, .timings (performance.now() of playerready, play, playing, firstframe), .live (see below).
 * Events: "kinoray-error".
 * Live playback ids play live: a LIVE button (lit at the live edge; a click returns there), the seek bar spans
 * the DVR window (the stream's sliding playlist), the time shows how far behind live, and the latency (glass
 * to glass: now minus the EXT-X-PROGRAM-DATE-TIME of the frame on screen) is shown beside it.
 * .live = {live, atEdge, behind (s behind the live edge), latency (s, or null), window: [start, end] or null}.
 * Captions are the stream's HLS subtitle tracks, rendered by the browser (hls.js's <track src="data:,WEBVTT">
 * text tracks): a page with a Content-Security-Policy needs media-src blob: data: (MediaSource, caption tracks).
 */
(function () {
  "use strict";

  const VERSION = "0.1.0";
  const SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;
  const STATIC_PATH = "/player/static/";
  const HEARTBEAT_MS = 10000;
  const MAX_QUEUED_EVENTS = 400;
  const MAX_BATCH_BYTES = 60000; // sendBeacon/keepalive bodies are capped at 64 KB (the collector takes 500 KB)
  const MAX_BATCH_EVENTS = 300;
  const SEEK_STEP = 5;
  const SEEK_STEP_LONG = 10;

  function defaultBase() {
    const url = new URL(SCRIPT_URL, location.href);
    const at = url.pathname.lastIndexOf(STATIC_PATH);
    return url.origin + (at >= 0 ? url.pathname.slice(0, at) : "");
  }

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function viewerId() {
    try {
      let id = localStorage.getItem("kinoray-viewer-id");
      if (!id || !/^[0-9a-f]{32}$/.test(id)) {
        id = randomId();
        localStorage.setItem("kinoray-viewer-id", id);
      }
      return id;
    } catch (e) {
      return randomId(); // storage blocked (sandboxed iframe, privacy mode): one id per page
    }
  }

  // Beacons go out in Mux Data's format (what mux-embed sends), so one collector serves kinoray's player and
  // Mux's SDKs: field names shortened by the SDK's scheme (first word one letter, later words two).
  const SHORT_KEYS = {
    event: "e", sequence: "xsqno", viewer_time: "uti", playback_time: "pphti", view_id: "xid", session_id: "sid",
    playback_id: "vid", player_name: "pnm", player_version: "pve", player_software: "psw",
    player_software_version: "pswve", player_width: "pwd", player_height: "pht", page_url: "wur",
    rendition_width: "vsowd", rendition_height: "vsoht", rendition_bitrate: "vsobi", rendition_codec: "vsocc",
    error_code: "percd", error_type: "perty", error_message: "perme", error_context: "percz",
  };
  const EVENT_NAMES = { heartbeat: "hb" };

  function formatTime(seconds) {
    if (!isFinite(seconds) || seconds < 0) seconds = 0;
    const s = Math.floor(seconds % 60);
    const m = Math.floor(seconds / 60) % 60;
    const h = Math.floor(seconds / 3600);
    const ss = String(s).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }

  function spokenTime(seconds) {
    const total = Math.floor(isFinite(seconds) ? seconds : 0);
    const m = Math.floor(total / 60);
    const s = total % 60;
    return m ? `${m} minute${m === 1 ? "" : "s"} ${s} second${s === 1 ? "" : "s"}` : `${s} second${s === 1 ? "" : "s"}`;
  }

  function withToken(url, token) {
    return token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
  }

  let hlsLoading = null;
  function loadHls(base) {
    if (window.Hls) return Promise.resolve(window.Hls);
    if (!hlsLoading) {
      hlsLoading = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = `${base}${STATIC_PATH}hls.min.js`;
        script.onload = () => (window.Hls ? resolve(window.Hls) : reject(new Error("hls.js did not load")));
        script.onerror = () => reject(new Error("hls.js could not be fetched"));
        document.head.appendChild(script);
      });
    }
    return hlsLoading;
  }

  // A storyboard WebVTT: cues "start --> end" whose text is "sprite.jpg?...#xywh=x,y,w,h" (relative to the VTT).
  function parseStoryboard(text, vttUrl) {
    const cues = [];
    const stamp = (value) => {
      const parts = value.trim().split(":").map(Number);
      return parts.reduce((total, part) => total * 60 + part, 0);
    };
    for (const block of text.replace(/\r/g, "").split(/\n\n+/)) {
      const lines = block.split("\n").filter((line) => line.trim());
      const timing = lines.findIndex((line) => line.includes("-->"));
      if (timing < 0 || !lines[timing + 1]) continue;
      const [start, end] = lines[timing].split("-->").map((part) => stamp(part.trim().split(/\s+/)[0]));
      const target = lines[timing + 1].trim();
      const hash = target.indexOf("#xywh=");
      if (hash < 0) continue;
      const [x, y, w, h] = target.slice(hash + 6).split(",").map(Number);
      cues.push({ start, end, url: new URL(target.slice(0, hash), vttUrl).href, x, y, w, h });
    }
    return cues;
  }

  const ICONS = {
    play: '<path d="M8 5v14l11-7z"/>',
    pause: '<path d="M6 5h4v14H6zm8 0h4v14h-4z"/>',
    volume: '<path d="M3 9v6h4l5 5V4L7 9H3zm13.5 3A4.5 4.5 0 0 0 14 7.97v8.05A4.5 4.5 0 0 0 16.5 12z"/>',
    muted: '<path d="M3 9v6h4l5 5V4L7 9H3zm13.59 3L19 9.59 17.59 8.17 15.17 10.6 12.76 8.17 11.34 9.59 13.76 12l-2.42 2.41 1.42 1.42 2.41-2.42 2.42 2.42L19 14.41z"/>',
    captions: '<path d="M19 4H5a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2V6a2 2 0 0 0-2-2zm-8 7H9.5v-.5h-2v3h2V13H11v1a1 1 0 0 1-1 1H7a1 1 0 0 1-1-1v-4a1 1 0 0 1 1-1h3a1 1 0 0 1 1 1v1zm7 0h-1.5v-.5h-2v3h2V13H18v1a1 1 0 0 1-1 1h-3a1 1 0 0 1-1-1v-4a1 1 0 0 1 1-1h3a1 1 0 0 1 1 1v1z"/>',
    quality: '<path d="M19.14 12.94a7.07 7.07 0 0 0 0-1.88l2.03-1.58-1.92-3.32-2.39.96a7 7 0 0 0-1.62-.94L14.88 3.6h-3.84l-.36 2.58a7 7 0 0 0-1.62.94l-2.39-.96-1.92 3.32 2.03 1.58a7.07 7.07 0 0 0 0 1.88l-2.03 1.58 1.92 3.32 2.39-.96c.5.38 1.04.7 1.62.94l.36 2.58h3.84l.36-2.58a7 7 0 0 0 1.62-.94l2.39.96 1.92-3.32zM12.96 15.6a3.6 3.6 0 1 1 0-7.2 3.6 3.6 0 0 1 0 7.2z"/>',
    fullscreen: '<path d="M7 14H5v5h5v-2H7zm-2-4h2V7h3V5H5zm12 7h-3v2h5v-5h-2zM14 5v2h3v3h2V5z"/>',
    exitFullscreen: '<path d="M5 16h3v3h2v-5H5zm3-8H5v2h5V5H8zm6 11h2v-3h3v-2h-5zm2-11V5h-2v5h5V8z"/>',
  };
  const svg = (name) => `<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">${ICONS[name]}</svg>`;

  const TEMPLATE = `
    <div class="kr-root" part="root">
      <video part="video" playsinline preload="auto"></video>
      <div class="kr-error" role="alert" hidden></div>
      <div class="kr-preview" aria-hidden="true" hidden><div class="kr-preview-image"></div><span class="kr-preview-time"></span></div>
      <div class="kr-controls" part="controls">
        <button type="button" class="kr-play" aria-label="Play" title="Play (k)">${svg("play")}</button>
        <div class="kr-seek" role="slider" tabindex="0" aria-label="Seek" aria-valuemin="0" aria-valuemax="0"
             aria-valuenow="0" aria-valuetext="0 seconds of 0 seconds">
          <div class="kr-seek-track"><div class="kr-buffered"></div><div class="kr-progress"></div></div>
        </div>
        <span class="kr-time" aria-hidden="true">0:00 / 0:00</span>
        <button type="button" class="kr-live" aria-label="Go to live" title="Go to live (End)" hidden><span
                class="kr-live-dot" aria-hidden="true"></span>LIVE</button>
        <span class="kr-latency" title="Latency: now minus when the frame on screen was captured" hidden></span>
        <button type="button" class="kr-mute" aria-label="Mute" aria-pressed="false" title="Mute (m)">${svg("volume")}</button>
        <input type="range" class="kr-volume" aria-label="Volume" min="0" max="1" step="0.05" value="1">
        <div class="kr-menu-wrap">
          <button type="button" class="kr-captions-button" aria-haspopup="menu" aria-expanded="false"
                  aria-controls="kr-captions-menu" aria-label="Captions" title="Captions (c)">${svg("captions")}</button>
          <div class="kr-menu" id="kr-captions-menu" role="menu" aria-label="Captions" hidden></div>
        </div>
        <div class="kr-menu-wrap">
          <button type="button" class="kr-quality-button" aria-haspopup="menu" aria-expanded="false"
                  aria-controls="kr-quality-menu" aria-label="Quality: Auto" title="Quality">${svg("quality")}</button>
          <div class="kr-menu" id="kr-quality-menu" role="menu" aria-label="Quality" hidden></div>
        </div>
        <button type="button" class="kr-fullscreen" aria-label="Fullscreen" title="Fullscreen (f)">${svg("fullscreen")}</button>
      </div>
    </div>`;

  // Collects beacons and sends them in batches: every HEARTBEAT_MS, at the first frame, at the end, on error
  // and (with sendBeacon) when the page goes away.
  class Beacons {
    constructor(player, url) {
      this.player = player;
      this.url = url;
      this.queue = [];
      this.sequence = 0;
      this.sending = false;
    }

    event(type, fields) {
      const video = this.player.video;
      const event = Object.assign({
        event: type,
        sequence: this.sequence++,
        viewer_time: Date.now(),
        playback_time: Math.max(0, Math.round((video.currentTime || 0) * 1000)),
        view_id: this.player.viewId,
        session_id: this.player.sessionId,
        playback_id: this.player.playbackId,
        player_name: "kinoray-player",
        player_version: VERSION,
        player_software: "hls.js",
        player_software_version: window.Hls ? String(window.Hls.version || "") : undefined,
        player_width: Math.round(this.player.clientWidth) || undefined,
        player_height: Math.round(this.player.clientHeight) || undefined,
        page_url: location.href.split(/[?#]/)[0].slice(0, 1024),
        video_source_is_live: this.player.isLive || undefined,
      }, fields || {});
      const beacon = {};
      for (const key of Object.keys(event)) {
        if (event[key] !== undefined && event[key] !== null) beacon[SHORT_KEYS[key] || key] = event[key];
      }
      beacon.e = EVENT_NAMES[type] || type;
      this.queue.push(beacon);
      if (this.queue.length > MAX_QUEUED_EVENTS) this.queue.splice(0, this.queue.length - MAX_QUEUED_EVENTS);
    }

    payload(events) {
      return JSON.stringify({ metadata: { transmission_timestamp: Date.now() }, events });
    }

    // Batches of at most MAX_BATCH_EVENTS events and MAX_BATCH_BYTES bytes.
    take() {
      const batches = [];
      let current = [];
      let size = 64;
      for (const event of this.queue) {
        const bytes = JSON.stringify(event).length + 1;
        if (current.length && (size + bytes > MAX_BATCH_BYTES || current.length >= MAX_BATCH_EVENTS)) {
          batches.push(current);
          current = [];
          size = 64;
        }
        current.push(event);
        size += bytes;
      }
      if (current.length) batches.push(current);
      this.queue = [];
      return batches;
    }

    // text/plain keeps the POST a CORS "simple request": no preflight from pages on other origins.
    flush() {
      if (!this.queue.length || this.sending) return;
      this.sending = true;
      const batches = this.take();
      const sends = batches.map((events) => fetch(this.url, {
        method: "POST", body: this.payload(events), keepalive: true, credentials: "omit",
        headers: { "Content-Type": "text/plain" },
      }).then((answer) => {
        if (answer.status === 429 || answer.status >= 500) this.requeue(events);
      }, () => this.requeue(events)));
      Promise.all(sends).finally(() => { this.sending = false; });
    }

    requeue(events) {
      this.queue = events.concat(this.queue).slice(-MAX_QUEUED_EVENTS);
    }

    flushOnExit() {
      for (const events of this.take()) {
        const body = this.payload(events);
        if (!(navigator.sendBeacon && navigator.sendBeacon(this.url, body))) {
          fetch(this.url, { method: "POST", body, keepalive: true, credentials: "omit",
                            headers: { "Content-Type": "text/plain" } }).catch(() => {});
        }
      }
    }
  }

  class KinorayPlayer extends HTMLElement {
    static get observedAttributes() {
      return ["playback-id", "token", "thumbnail-token", "storyboard-token", "muted"];
    }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      const style = document.createElement("link");
      style.rel = "stylesheet";
      // the page's own (versioned) link when it has one: one fetch, shared with the page, cached for a year
      const pageStyle = document.querySelector('link[rel="stylesheet"][href*="kinoray-player.css"]');
      style.href = pageStyle ? pageStyle.href : `${defaultBase()}${STATIC_PATH}kinoray-player.css`;
      root.appendChild(style);
      const holder = document.createElement("div");
      holder.innerHTML = TEMPLATE;
      root.appendChild(holder.firstElementChild);
      const $ = (selector) => root.querySelector(selector);
      this.ui = {
        root: $(".kr-root"), error: $(".kr-error"), preview: $(".kr-preview"),
        previewImage: $(".kr-preview-image"), previewTime: $(".kr-preview-time"), play: $(".kr-play"),
        seek: $(".kr-seek"), buffered: $(".kr-buffered"), progress: $(".kr-progress"), time: $(".kr-time"),
        mute: $(".kr-mute"), volume: $(".kr-volume"), captionsButton: $(".kr-captions-button"),
        captionsMenu: $("#kr-captions-menu"), qualityButton: $(".kr-quality-button"),
        qualityMenu: $("#kr-quality-menu"), fullscreen: $(".kr-fullscreen"), live: $(".kr-live"),
        latency: $(".kr-latency"),
      };
      this.video = $("video");
      this.hls = null;
      this.error = null;
      this.timings = {};
      this.storyboard = null;
      this.beacons = null;
      this.started = false;
      this.onPageHide = () => this.endView();
      this.onVisibility = () => { if (document.visibilityState === "hidden" && this.beacons) this.beacons.flushOnExit(); };
      this.onFullscreen = () => this.renderFullscreen();
      this.wireControls();
    }

    get playbackId() { return this.getAttribute("playback-id") || ""; }
    get baseUrl() { return (this.getAttribute("base-url") || defaultBase()).replace(/\/+$/, ""); }

    connectedCallback() {
      if (!this.hasAttribute("tabindex")) this.tabIndex = 0;
      window.addEventListener("pagehide", this.onPageHide);
      document.addEventListener("visibilitychange", this.onVisibility);
      document.addEventListener("fullscreenchange", this.onFullscreen);
      if (this.hasAttribute("autofocus")) this.focus({ preventScroll: true });
      this.load();
    }

    disconnectedCallback() {
      window.removeEventListener("pagehide", this.onPageHide);
      document.removeEventListener("visibilitychange", this.onVisibility);
      document.removeEventListener("fullscreenchange", this.onFullscreen);
      this.endView();
      this.destroyHls();
    }

    attributeChangedCallback(name, before, after) {
      if (name === "muted") { this.video.muted = after !== null; this.renderVolume(); return; }
      if (this.isConnected && before !== after && this.started) this.load();
    }

    // --- loading -------------------------------------------------------------------------------------------

    load() {
      const playbackId = this.playbackId;
      if (!playbackId) return;
      this.endView();
      this.destroyHls();
      this.started = true;
      this.viewActive = true;
      this.error = null;
      this.ui.error.hidden = true;
      this.removeAttribute("error-type");
      this.timings = { start: performance.now() };
      this.storyboard = null;
      this.viewId = randomId();
      this.sessionId = this.sessionId || viewerId();
      this.firstFrameSeen = false;
      this.playingOnce = false;
      this.rebuffering = false;
      this.isLive = false;
      this.renderLive();
      this.beacons = new Beacons(this, this.getAttribute("beacon-url") || `${this.baseUrl}/data/v1/beacons`);
      this.video.muted = this.hasAttribute("muted");
      this.video.autoplay = false;
      const base = this.baseUrl;
      const thumbnailToken = this.getAttribute("thumbnail-token");
      // a signed id needs its own token per image kind (aud t / s): without one, no poster or previews
      const signed = this.hasAttribute("token");
      if (!signed || thumbnailToken) {
        this.video.poster = withToken(`${base}/${playbackId}/thumbnail.jpg`, thumbnailToken);
      } else {
        this.video.removeAttribute("poster");
      }
      this.manifestUrl = withToken(`${base}/${playbackId}.m3u8`, this.getAttribute("token"));
      this.renderQualityMenu();
      this.renderCaptionsMenu();
      this.renderVolume();
      loadHls(base).then((Hls) => this.attach(Hls), (error) => {
        if (this.video.canPlayType("application/vnd.apple.mpegurl")) this.attachNative();
        else this.fail({ type: "player_error", message: error.message, status: 0 });
      });
    }

    attach(Hls) {
      if (!Hls.isSupported()) {
        if (this.video.canPlayType("application/vnd.apple.mpegurl")) return this.attachNative();
        return this.fail({ type: "unsupported_browser", message: "this browser has no Media Source Extensions", status: 0 });
      }
      // CMAF segments need no transmuxing, so hls.js's worker (a second parse of its 600 KB) would only delay
      // the first frame; startFragPrefetch fetches the first segment while the MediaSource opens.
      const hls = new Hls({ enableWorker: false, startFragPrefetch: true, backBufferLength: 30 });
      this.hls = hls;
      const E = Hls.Events;
      hls.on(E.MANIFEST_PARSED, () => {
        this.renderQualityMenu();
        if (this.hasAttribute("autoplay")) this.play();
      });
      hls.on(E.LEVEL_SWITCHED, (_, data) => {
        const level = hls.levels[data.level];
        if (level) {
          this.beacons.event("renditionchange", {
            rendition_width: level.width || undefined, rendition_height: level.height || undefined,
            rendition_bitrate: level.bitrate || undefined,
            rendition_codec: [level.videoCodec, level.audioCodec].filter(Boolean).join(",") || undefined,
          });
        }
        this.renderQualityMenu();
      });
      hls.on(E.LEVEL_LOADED, (_, data) => {
        if (data.details && data.details.live !== this.isLive) this.setLive(data.details.live);
      });
      hls.on(E.SUBTITLE_TRACKS_UPDATED, () => this.renderCaptionsMenu());
      hls.on(E.SUBTITLE_TRACK_SWITCH, () => this.renderCaptionsMenu());
      hls.on(E.ERROR, (_, data) => { if (data.fatal) this.hlsFailed(data); });
      hls.loadSource(this.manifestUrl); // the manifest request starts before the MediaSource is open
      hls.attachMedia(this.video);
      this.mark("playerready");
      this.beacons.event("playerready");
      this.beacons.event("viewinit");
    }

    attachNative() {
      this.mark("playerready");
      this.beacons.event("playerready", { player_software: "native" });
      this.beacons.event("viewinit", { player_software: "native" });
      this.video.src = this.manifestUrl;
      if (this.hasAttribute("autoplay")) this.play();
    }

    destroyHls() {
      if (this.hls) { this.hls.destroy(); this.hls = null; }
    }

    endView() {
      if (this.beacons && this.viewActive) {
        this.viewActive = false;
        this.beacons.event("viewend");
        this.beacons.flushOnExit();
      }
      clearInterval(this.heartbeat);
      this.heartbeat = null;
    }

    mark(name) {
      if (this.timings[name] === undefined) this.timings[name] = performance.now();
    }

    // --- errors --------------------------------------------------------------------------------------------

    // The server's typed error ({"error": {"type", "messages"}}) from the failed request, else hls.js's words.
    async hlsFailed(data) {
      const response = data.response || {};
      let status = typeof response.code === "number" ? response.code : 0;
      let type = data.details || "media_error";
      let message = (data.error && data.error.message) || data.details || "playback failed";
      let body = null;
      const details = data.networkDetails;
      if (details && typeof details.responseText === "string" && details.readyState === 4) {
        status = details.status || status;
        body = details.responseText;
      } else if (data.type === "networkError" && data.url) {
        try {
          const answer = await fetch(data.url, { credentials: "omit" });
          status = answer.status;
          body = await answer.text();
        } catch (e) { /* keep hls.js's description */ }
      }
      try {
        const parsed = body ? JSON.parse(body) : null;
        if (parsed && parsed.error && parsed.error.type) {
          type = parsed.error.type;
          message = (parsed.error.messages || []).join("; ") || message;
        }
      } catch (e) { /* not JSON: a proxy's page, keep hls.js's description */ }
      this.fail({ type, message, status, context: `${data.type}/${data.details}` });
    }

    fail(error) {
      if (this.error) return;
      this.error = error;
      this.setAttribute("error-type", error.type);
      const where = error.status ? ` (HTTP ${error.status})` : "";
      this.ui.error.textContent = `This video cannot be played: ${error.message} [${error.type}${where}]`;
      this.ui.error.hidden = false;
      if (this.beacons) {
        this.beacons.event("error", {
          error_code: error.status || undefined, error_type: String(error.type).slice(0, 64),
          error_message: String(error.message).slice(0, 1024), error_context: error.context,
        });
        this.beacons.flush();
      }
      this.destroyHls();
      this.dispatchEvent(new CustomEvent("kinoray-error", { detail: error, bubbles: true, composed: true }));
    }

    // --- playback and its beacons --------------------------------------------------------------------------

    play() {
      const attempt = this.video.play();
      if (attempt && attempt.catch) {
        attempt.catch((error) => {
          if (error && error.name === "NotAllowedError" && !this.video.muted) {
            this.video.muted = true; // the browser blocks autoplay with sound: try muted, as Mux Player does
            this.renderVolume();
            this.video.play().catch(() => {});
          }
        });
      }
    }

    togglePlay() {
      if (this.video.paused || this.video.ended) this.play();
      else this.video.pause();
    }

    wireMediaEvents() {
      const video = this.video;
      const beacon = (type, fields) => { if (this.beacons && this.viewActive) this.beacons.event(type, fields); };
      video.addEventListener("play", () => {
        this.mark("play");
        beacon("play");
        if (!this.heartbeat) {
          this.heartbeat = setInterval(() => {
            if (!this.beacons) return;
            if (!video.paused && !video.ended) this.beacons.event("heartbeat");
            this.beacons.flush();
          }, HEARTBEAT_MS);
        }
        this.renderPlay();
      });
      video.addEventListener("playing", () => {
        if (this.rebuffering) { this.rebuffering = false; beacon("rebufferend"); }
        this.mark("playing");
        beacon("playing");
        if (!this.playingOnce) {
          this.playingOnce = true;
          const firstFrame = () => {
            this.mark("firstframe");
            this.firstFrameSeen = true;
            this.dispatchEvent(new CustomEvent("kinoray-firstframe", { bubbles: true, composed: true }));
          };
          if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(firstFrame);
          else firstFrame();
          if (this.beacons) this.beacons.flush(); // startup events reach the server at once
        }
        this.renderPlay();
      });
      video.addEventListener("pause", () => {
        if (!video.ended) beacon("pause");
        this.renderPlay();
      });
      video.addEventListener("waiting", () => {
        if (this.playingOnce && !video.paused && !video.seeking && !this.rebuffering) {
          this.rebuffering = true;
          beacon("rebufferstart");
        }
      });
      video.addEventListener("timeupdate", () => {
        if (this.rebuffering && video.readyState >= 3) { this.rebuffering = false; beacon("rebufferend"); }
        this.renderTime();
      });
      video.addEventListener("seeking", () => {
        if (this.rebuffering) { this.rebuffering = false; beacon("rebufferend"); }
        beacon("seeking");
        this.renderTime();
      });
      video.addEventListener("seeked", () => beacon("seeked"));
      video.addEventListener("ended", () => {
        beacon("ended");
        if (this.beacons) this.beacons.flush();
        this.renderPlay();
      });
      video.addEventListener("error", () => {
        if (this.hls) return; // hls.js reports its own errors, with more detail
        const error = video.error;
        this.fail({ type: "media_error", message: (error && error.message) || "the browser could not play the stream",
                    status: 0, context: error ? `MediaError ${error.code}` : undefined });
      });
      for (const type of ["durationchange", "progress", "loadedmetadata"]) video.addEventListener(type, () => this.renderTime());
      video.addEventListener("volumechange", () => this.renderVolume());
    }

    // --- controls ------------------------------------------------------------------------------------------

    wireControls() {
      const ui = this.ui;
      this.wireMediaEvents();
      ui.play.addEventListener("click", () => this.togglePlay());
      this.video.addEventListener("click", () => this.togglePlay());
      ui.mute.addEventListener("click", () => { this.video.muted = !this.video.muted; });
      ui.volume.addEventListener("input", () => {
        this.video.volume = Number(ui.volume.value);
        this.video.muted = this.video.volume === 0;
      });
      ui.fullscreen.addEventListener("click", () => this.toggleFullscreen());
      ui.live.addEventListener("click", () => this.goLive());
      ui.captionsButton.addEventListener("click", () => this.toggleMenu(ui.captionsButton, ui.captionsMenu));
      ui.qualityButton.addEventListener("click", () => this.toggleMenu(ui.qualityButton, ui.qualityMenu));
      for (const menu of [ui.captionsMenu, ui.qualityMenu]) menu.addEventListener("keydown", (e) => this.menuKey(e, menu));
      this.shadowRoot.addEventListener("focusout", (e) => {
        for (const [button, menu] of [[ui.captionsButton, ui.captionsMenu], [ui.qualityButton, ui.qualityMenu]]) {
          if (!menu.hidden && !menu.parentNode.contains(e.relatedTarget)) this.closeMenu(button, menu, false);
        }
      });
      // seeking: click/drag on the bar, storyboard preview on hover
      const seekTo = (e) => {
        const fraction = this.seekFraction(e);
        const [start, end] = this.timeline();
        if (end > start) this.video.currentTime = start + fraction * (end - start);
      };
      ui.seek.addEventListener("pointerdown", (e) => {
        ui.seek.setPointerCapture(e.pointerId);
        this.dragging = true;
        seekTo(e);
      });
      ui.seek.addEventListener("pointermove", (e) => {
        if (this.dragging) seekTo(e);
        this.showPreview(e);
      });
      ui.seek.addEventListener("pointerup", () => { this.dragging = false; });
      ui.seek.addEventListener("pointerleave", () => { ui.preview.hidden = true; });
      this.addEventListener("keydown", (e) => this.hotkey(e));
    }

    seekFraction(e) {
      const box = this.ui.seek.getBoundingClientRect();
      return Math.min(1, Math.max(0, (e.clientX - box.left) / (box.width || 1)));
    }

    seekBy(seconds) {
      const [start, end] = this.timeline();
      if (end <= start) return;
      this.video.currentTime = Math.min(end, Math.max(start, this.video.currentTime + seconds));
    }

    // --- live ----------------------------------------------------------------------------------------------

    // What the seek bar spans: the asset ([0, duration]), or a live stream's DVR window (what is seekable).
    timeline() {
      const video = this.video;
      if (this.isLive) {
        const ranges = video.seekable.length ? video.seekable : video.buffered;
        return ranges.length ? [ranges.start(0), ranges.end(ranges.length - 1)] : [0, 0];
      }
      return isFinite(video.duration) ? [0, video.duration] : [0, 0];
    }

    // Where playing live means: hls.js's live sync position (a few target durations behind the newest
    // segment, so playback does not stall), else the end of the window.
    liveEdge() {
      const sync = this.hls && this.hls.liveSyncPosition;
      return typeof sync === "number" && isFinite(sync) ? sync : this.timeline()[1];
    }

    get live() {
      if (!this.isLive) return { live: false, atEdge: false, behind: null, latency: null, window: null };
      const [start, end] = this.timeline();
      const behind = Math.max(0, this.liveEdge() - (this.video.currentTime || 0));
      const details = this.hls && this.hls.latestLevelDetails;
      const slack = Math.max(1, details && details.targetduration ? details.targetduration : 2);
      const date = this.hls && this.hls.playingDate;
      const latency = date ? Math.max(0, (Date.now() - date.getTime()) / 1000) : null;
      return { live: true, atEdge: behind <= slack, behind, latency, window: end > start ? [start, end] : null };
    }

    setLive(live) {
      this.isLive = Boolean(live);
      this.toggleAttribute("live", this.isLive);
      this.renderLive();
      this.renderTime();
    }

    goLive() {
      if (!this.isLive) return;
      this.video.currentTime = this.liveEdge();
      if (this.video.paused) this.play();
    }

    hotkey(e) {
      if (e.altKey || e.ctrlKey || e.metaKey) return;
      const origin = e.composedPath()[0];
      const inMenu = origin && origin.closest && origin.closest(".kr-menu");
      const onControl = origin && origin.matches && origin.matches("button, input");
      const key = e.key;
      if (inMenu) return; // the menu handles its own keys
      if ((key === " " || key === "Enter") && onControl) return; // the focused button's own activation
      if (origin === this.ui.volume && key.startsWith("Arrow")) return;
      const actions = {
        " ": () => this.togglePlay(), k: () => this.togglePlay(),
        ArrowLeft: () => this.seekBy(-SEEK_STEP), ArrowRight: () => this.seekBy(SEEK_STEP),
        j: () => this.seekBy(-SEEK_STEP_LONG), l: () => this.seekBy(SEEK_STEP_LONG),
        ArrowUp: () => { this.video.volume = Math.min(1, this.video.volume + 0.1); this.video.muted = false; },
        ArrowDown: () => { this.video.volume = Math.max(0, this.video.volume - 0.1); },
        m: () => { this.video.muted = !this.video.muted; },
        f: () => this.toggleFullscreen(),
        c: () => this.toggleCaptions(),
        Home: () => { this.video.currentTime = this.timeline()[0]; },
        End: () => { if (this.isLive) this.goLive(); else if (isFinite(this.video.duration)) this.video.currentTime = this.video.duration; },
      };
      const action = actions[key.length === 1 ? key.toLowerCase() : key];
      if (!action) return;
      e.preventDefault();
      e.stopPropagation();
      action();
    }

    toggleFullscreen() {
      if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
      else if (this.requestFullscreen) this.requestFullscreen().catch(() => {});
    }

    renderFullscreen() {
      const on = document.fullscreenElement === this;
      this.ui.fullscreen.innerHTML = svg(on ? "exitFullscreen" : "fullscreen");
      this.ui.fullscreen.setAttribute("aria-label", on ? "Exit fullscreen" : "Fullscreen");
    }

    // --- menus ---------------------------------------------------------------------------------------------

    toggleMenu(button, menu) {
      if (menu.hidden) {
        for (const [b, m] of [[this.ui.captionsButton, this.ui.captionsMenu], [this.ui.qualityButton, this.ui.qualityMenu]]) {
          if (m !== menu) this.closeMenu(b, m, false);
        }
        menu.hidden = false;
        button.setAttribute("aria-expanded", "true");
        const checked = menu.querySelector('[aria-checked="true"]') || menu.querySelector('[role^="menuitem"]');
        if (checked) checked.focus();
      } else {
        this.closeMenu(button, menu, true);
      }
    }

    closeMenu(button, menu, refocus) {
      menu.hidden = true;
      button.setAttribute("aria-expanded", "false");
      if (refocus) button.focus();
    }

    menuKey(e, menu) {
      const items = Array.from(menu.querySelectorAll('[role^="menuitem"]:not([aria-disabled="true"])'));
      const at = items.indexOf(e.composedPath()[0]);
      const button = menu === this.ui.qualityMenu ? this.ui.qualityButton : this.ui.captionsButton;
      const moves = { ArrowDown: 1, ArrowUp: -1 };
      if (e.key in moves && items.length) {
        items[(at + moves[e.key] + items.length) % items.length].focus();
      } else if (e.key === "Home" && items.length) {
        items[0].focus();
      } else if (e.key === "End" && items.length) {
        items[items.length - 1].focus();
      } else if (e.key === "Escape" || e.key === "Tab") {
        this.closeMenu(button, menu, e.key === "Escape");
        if (e.key === "Tab") return;
      } else {
        return;
      }
      e.preventDefault();
      e.stopPropagation();
    }

    fillMenu(menu, button, items, emptyText) {
      const focused = this.shadowRoot.activeElement;
      const refocus = focused && menu.contains(focused) ? focused.dataset.value : null;
      menu.textContent = "";
      if (!items.length) {
        const none = document.createElement("div");
        none.className = "kr-menu-empty";
        none.setAttribute("role", "menuitem");
        none.setAttribute("aria-disabled", "true");
        none.textContent = emptyText;
        menu.appendChild(none);
        return;
      }
      for (const item of items) {
        const entry = document.createElement("button");
        entry.type = "button";
        entry.setAttribute("role", "menuitemradio");
        entry.setAttribute("aria-checked", String(item.checked));
        entry.tabIndex = -1;
        entry.dataset.value = item.value;
        entry.textContent = item.label;
        entry.addEventListener("click", () => {
          item.select();
          this.closeMenu(button, menu, true);
        });
        menu.appendChild(entry);
        if (item.value === refocus) entry.focus();
      }
    }

    renderQualityMenu() {
      const hls = this.hls;
      const levels = hls ? hls.levels || [] : [];
      const auto = !hls || hls.autoLevelEnabled;
      const current = hls && levels[hls.currentLevel];
      const label = (level) => (level.height ? `${level.height}p` : `${Math.round(level.bitrate / 1000)} kb/s`);
      const items = levels.map((level, index) => ({ level, index }))
        .sort((a, b) => (b.level.height - a.level.height) || (b.level.bitrate - a.level.bitrate))
        .map(({ level, index }) => ({
          label: label(level), value: String(index), checked: !auto && hls.currentLevel === index,
          select: () => { hls.currentLevel = index; this.renderQualityMenu(); },
        }));
      if (levels.length) {
        items.unshift({
          label: current && auto ? `Auto (${label(current)})` : "Auto", value: "auto", checked: auto,
          select: () => { hls.currentLevel = -1; this.renderQualityMenu(); },
        });
      }
      this.fillMenu(this.ui.qualityMenu, this.ui.qualityButton, items, "Quality: loading");
      const now = auto ? "Auto" + (current ? ` (${label(current)})` : "") : (current ? label(current) : "Auto");
      this.ui.qualityButton.setAttribute("aria-label", `Quality: ${now}`);
    }

    captionTracks() {
      return this.hls ? this.hls.subtitleTracks || [] : [];
    }

    renderCaptionsMenu() {
      const tracks = this.captionTracks();
      const hls = this.hls;
      const active = hls && hls.subtitleDisplay ? hls.subtitleTrack : -1;
      const items = tracks.map((track, index) => ({
        label: track.name || track.lang || `Track ${index + 1}`, value: String(index), checked: active === index,
        select: () => this.selectCaptions(index),
      }));
      if (tracks.length) {
        items.unshift({ label: "Off", value: "off", checked: active === -1, select: () => this.selectCaptions(-1) });
      }
      this.fillMenu(this.ui.captionsMenu, this.ui.captionsButton, items, "No captions available");
      this.ui.captionsButton.setAttribute("aria-label", tracks.length
        ? `Captions: ${active >= 0 ? items[active + 1].label : "Off"}` : "Captions (none available)");
      this.ui.captionsButton.setAttribute("aria-pressed", String(active >= 0));
    }

    selectCaptions(index) {
      if (!this.hls) return;
      if (index >= 0) this.lastCaptions = index;
      this.hls.subtitleTrack = index;
      this.hls.subtitleDisplay = index >= 0;
      this.renderCaptionsMenu();
    }

    toggleCaptions() {
      const tracks = this.captionTracks();
      if (!tracks.length || !this.hls) return;
      const on = this.hls.subtitleDisplay && this.hls.subtitleTrack >= 0;
      this.selectCaptions(on ? -1 : Math.min(this.lastCaptions || 0, tracks.length - 1));
    }

    // --- rendering -----------------------------------------------------------------------------------------

    renderPlay() {
      const paused = this.video.paused || this.video.ended;
      this.ui.play.innerHTML = svg(paused ? "play" : "pause");
      this.ui.play.setAttribute("aria-label", paused ? "Play" : "Pause");
      this.ui.play.title = paused ? "Play (k)" : "Pause (k)";
      this.toggleAttribute("playing", !paused); // lets the controls fade out while playing
    }

    renderVolume() {
      const muted = this.video.muted || this.video.volume === 0;
      this.ui.mute.innerHTML = svg(muted ? "muted" : "volume");
      this.ui.mute.setAttribute("aria-label", muted ? "Unmute" : "Mute");
      this.ui.mute.setAttribute("aria-pressed", String(muted));
      this.ui.volume.value = String(this.video.muted ? 0 : this.video.volume);
    }

    renderTime() {
      const video = this.video;
      const [start, end] = this.timeline();
      const span = Math.max(0, end - start);
      const now = Math.max(0, (video.currentTime || 0) - start);
      const buffered = video.buffered.length ? video.buffered.end(video.buffered.length - 1) - start : 0;
      this.ui.progress.style.width = span ? `${Math.min(100, (now / span) * 100)}%` : "0";
      this.ui.buffered.style.width = span ? `${Math.min(100, Math.max(0, buffered / span) * 100)}%` : "0";
      this.ui.seek.setAttribute("aria-valuemax", String(Math.round(span)));
      this.ui.seek.setAttribute("aria-valuenow", String(Math.round(now)));
      if (this.isLive) {
        const live = this.live;
        this.ui.time.textContent = live.atEdge ? "" : `-${formatTime(live.behind)}`;
        this.ui.seek.setAttribute("aria-valuetext", live.atEdge ? "live" : `${spokenTime(live.behind)} behind live`);
        this.renderLive(live);
      } else {
        this.ui.time.textContent = `${formatTime(now)} / ${formatTime(span)}`;
        this.ui.seek.setAttribute("aria-valuetext", `${spokenTime(now)} of ${spokenTime(span)}`);
      }
    }

    renderLive(live = this.live) {
      const ui = this.ui;
      ui.live.hidden = !live.live;
      ui.latency.hidden = !live.live || live.latency === null;
      ui.time.hidden = live.live && live.atEdge;
      if (!live.live) return;
      ui.live.classList.toggle("kr-at-edge", live.atEdge);
      ui.live.setAttribute("aria-label", live.atEdge ? "Live" : "Go to live");
      ui.live.setAttribute("aria-pressed", String(live.atEdge));
      if (live.latency !== null) ui.latency.textContent = `${live.latency.toFixed(1)} s`;
    }

    // --- storyboard previews -------------------------------------------------------------------------------

    loadStoryboard() {
      if (this.storyboard) return this.storyboard;
      const token = this.getAttribute("storyboard-token");
      if (this.hasAttribute("token") && !token) {
        this.storyboard = Promise.resolve([]);
        return this.storyboard;
      }
      const url = withToken(`${this.baseUrl}/${this.playbackId}/storyboard.vtt`, token);
      this.storyboard = fetch(url, { credentials: "omit" })
        .then((answer) => (answer.ok ? answer.text() : ""))
        .then((text) => {
          const cues = parseStoryboard(text, url);
          if (cues.length) new Image().src = cues[0].url; // warm the sprite before the first hover lands
          return cues;
        })
        .catch(() => []);
      return this.storyboard;
    }

    async showPreview(e) {
      const duration = this.video.duration;
      if (!isFinite(duration) || !duration) return;
      const time = this.seekFraction(e) * duration;
      const cues = await this.loadStoryboard();
      const ui = this.ui;
      ui.previewTime.textContent = formatTime(time);
      const cue = cues.find((c) => time >= c.start && time < c.end) || (cues.length ? cues[cues.length - 1] : null);
      if (cue) {
        Object.assign(ui.previewImage.style, {
          width: `${cue.w}px`, height: `${cue.h}px`, backgroundImage: `url("${cue.url}")`,
          backgroundPosition: `-${cue.x}px -${cue.y}px`, display: "block",
        });
        ui.previewImage.dataset.time = String(cue.start);
      } else {
        ui.previewImage.style.display = "none";
      }
      const box = ui.seek.getBoundingClientRect();
      const host = this.getBoundingClientRect();
      const width = cue ? cue.w : 60;
      const left = Math.min(host.width - width - 4, Math.max(4, e.clientX - host.left - width / 2));
      ui.preview.style.left = `${left}px`;
      ui.preview.style.bottom = `${host.bottom - box.top + 8}px`;
      ui.preview.hidden = false;
    }
  }

  if (!customElements.get("kinoray-player")) customElements.define("kinoray-player", KinorayPlayer);
  window.KinorayPlayer = KinorayPlayer;
})();
