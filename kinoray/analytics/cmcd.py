"""Server-side collection: CMCD (CTA-5004, Common Media Client Data) at the delivery edge.

A player with CMCD on (hls.js ``cmcd: {}``, dash.js, Shaka, AVPlayer with CMCD) sends, on every manifest and
segment request, keys as the ``CMCD`` query parameter or in the ``CMCD-Object``/``CMCD-Request``/
``CMCD-Session``/``CMCD-Status`` headers: ``key=value`` pairs separated by commas, strings quoted, a true
boolean as the bare key. :func:`parse_cmcd` reads the keys of :data:`CMCD_KEYS` with their types and ignores
anything else (a malformed pair, a wrong type, an unknown or custom key, an oversized field): what a player sends
never fails its request.

The hot path (:meth:`CmcdBuffer.note`) only appends the raw strings and the request's facts to a per-process
list; :meth:`CmcdBuffer.drain` (a timer thread, every second) parses them and turns each request that names a
session (``sid``) into an event row of the kinoray-defined type ``cmcd`` — view id = the session id, the
playback id and asset of the request, the viewer's browser/OS/country — written through the same event log as
beacons. At query time :func:`cmcd_timeline` turns a view's ``cmcd`` events into the player events the metric
definitions are written for (:mod:`kinoray.analytics.views`):

- the first request starts the view (``viewstart``); the first request without ``su`` (startup) is ``playing``;
- a request with ``bs`` (buffer starvation since the previous request) is ``rebufferstart``; the next request
  without ``su`` is ``rebufferend`` (a rebuffer is measured at request granularity);
- ``br`` of video requests is the rendition's bitrate (``renditionchange`` when it changes; the height comes
  from the rendition in the URL, ``720p``).

So a CMCD-only view has views, watch and playing time, rebuffer count/duration/percentage/frequency, weighted
average bitrate, rendition switches, playback success (1 once it played) and smoothness scores. It has no video
or player startup time, no exits before video start (a play request is not visible to the server), no playback
failures (errors are not sent), no up/downscaling (the player size is not sent) and no seek latency.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kinoray.analytics.enrich import client_dimensions
from kinoray.analytics.eventlog import Periodic

__all__ = ["CMCD_HEADERS", "CMCD_KEYS", "CMCD_EVENT", "CmcdBuffer", "cmcd_timeline", "parse_cmcd"]

#: The event type of a CMCD request in the event log.
CMCD_EVENT = "cmcd"
#: CTA-5004's keys and their types: ``int`` (non-negative integer), ``float`` (decimal), ``bool``, ``str``
#: (quoted string, at most the length given), or a set of tokens.
CMCD_KEYS: dict[str, Any] = {
    "br": int, "bl": int, "bs": bool, "cid": ("str", 128), "d": int, "dl": int, "mtp": int,
    "nor": ("str", 1024), "nrr": ("str", 64), "ot": frozenset({"m", "a", "v", "av", "i", "c", "tt", "k", "o"}),
    "pr": float, "rtp": int, "sf": frozenset({"d", "h", "s", "o"}), "sid": ("str", 64),
    "st": frozenset({"v", "l"}), "su": bool, "tb": int, "v": int,
}
#: The request headers CMCD may be sent in (lower case), besides the ``CMCD`` query parameter.
CMCD_HEADERS = ("cmcd-object", "cmcd-request", "cmcd-session", "cmcd-status")
_MAX_INPUT = 4096
_MAX_INT = 2**53 - 1
_PAIR = re.compile(r'\s*([a-z0-9_.-]{1,64})(?:=("(?:[^"\\]|\\.)*"|[^,"]*))?\s*(?:,|$)')
_INTEGER = re.compile(r"[0-9]{1,16}")
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")
_ESCAPE = re.compile(r"\\(.)")


def _value(kind: Any, raw: str | None) -> Any:
    """The typed value of one key, or ``None`` when ``raw`` does not fit ``kind``."""
    if kind is bool:
        return True if raw in (None, "?1") else False if raw == "?0" else None
    if raw is None:
        return None
    if kind is int:
        return int(raw) if _INTEGER.fullmatch(raw) and int(raw) <= _MAX_INT else None
    if kind is float:
        return float(raw) if _DECIMAL.fullmatch(raw) else None
    if isinstance(kind, frozenset):
        return raw if raw in kind else None
    _, limit = kind
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        text = _ESCAPE.sub(r"\1", raw[1:-1])
    elif re.fullmatch(r"[A-Za-z0-9._:/+-]+", raw):  # lenient: an unquoted string some players send
        text = raw
    else:
        return None
    return text if 0 < len(text) <= limit and text.isprintable() else None


def parse_cmcd(*parts: str | None) -> dict[str, Any]:
    """The CMCD keys of ``parts`` (the query parameter's value and/or the four headers' values), typed; a
    malformed or unknown pair is skipped, an input over 4 KiB ignored whole. Never raises."""
    out: dict[str, Any] = {}
    for text in parts:
        if not text or len(text) > _MAX_INPUT:
            continue
        at = 0
        while at < len(text):
            match = _PAIR.match(text, at)
            if match is None or match.end() == at:  # skip the malformed pair: on to the next comma
                comma = text.find(",", at)
                if comma < 0:
                    break
                at = comma + 1
                continue
            at = match.end()
            key, raw = match[1], match[2]
            kind = CMCD_KEYS.get(key)
            if kind is None:
                continue
            value = _value(kind, raw.strip() if raw is not None else None)
            if value is not None:
                out[key] = value
    return out


# --- the edge's buffer --------------------------------------------------------------------------------------
class CmcdBuffer:
    """CMCD requests noted by one edge process, turned into event rows by :meth:`drain`.

    ``sink`` takes the rows (the event writer's ``add``); ``realtime`` (optional) takes the per-view presence
    records of :mod:`kinoray.analytics.realtime` the rows imply, each session's continued from this process's
    last record or else from ``presences(session ids)`` (what other processes wrote); ``address_of(peer,
    x_forwarded_for)`` names the client behind trusted proxies (the geo lookup's input; never stored). At most ``max_pending`` requests wait (more
    are counted in :attr:`dropped`, never an error for the viewer)."""

    def __init__(self, sink: Callable[[list[dict[str, Any]]], None],
                 realtime: Callable[[list[dict[str, Any]]], None] | None = None, *,
                 max_pending: int = 200_000, drain_seconds: float = 1.0,
                 address_of: Callable[[str | None, str | None], str | None] | None = None,
                 presences: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None,
                 enrich: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.sink, self.realtime, self.address_of, self.presences = sink, realtime, address_of, presences
        self.enrich = enrich
        self.max_pending, self.drain_seconds = max_pending, drain_seconds
        self.dropped = 0
        self._pending: list[tuple[Any, ...]] = []
        self._presence: dict[str, dict[str, Any]] = {}
        self._drain_lock = threading.Lock()
        self._timer = Periodic("kinoray-cmcd-drain", drain_seconds, self.drain, "CMCD drain failed")

    def note(self, query: str | None, headers: Mapping[str, str], playback_id: str, asset_id: str | None,
             rendition: str | None, name: str | None, address: str | None) -> None:
        """Keep one request's CMCD for the next drain (the hot path: a tuple appended, nothing parsed)."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append((time.time(), query, headers.get("cmcd-object"), headers.get("cmcd-request"),
                              headers.get("cmcd-session"), headers.get("cmcd-status"), playback_id, asset_id,
                              rendition, name, headers.get("user-agent"), address, headers.get("host"),
                              headers.get("x-forwarded-for")))

    def start(self) -> CmcdBuffer:
        """Start the thread that drains every ``drain_seconds``."""
        self._timer.start()
        return self

    def close(self) -> None:
        """Stop the thread and drain what is left."""
        self._timer.stop()
        self.drain()

    def drain(self) -> int:
        """Parse what was noted and hand the rows to the sink; returns how many rows."""
        with self._drain_lock:
            pending, self._pending = self._pending, []
            rows = [row for row in (self._row(item) for item in pending) if row is not None]
            if rows:
                if self.enrich is not None:  # before the log and real time read them (Collector's enrich)
                    self.enrich(rows)
                self.sink(rows)
                if self.realtime is not None:
                    self.realtime(self._presences(rows))
            return len(rows)

    def _row(self, item: tuple[Any, ...]) -> dict[str, Any] | None:
        (at, query, obj, req, session, status, playback_id, asset_id, rendition, name, user_agent, address,
         host, forwarded) = item
        if self.address_of is not None:
            address = self.address_of(address, forwarded)
        cmcd = parse_cmcd(query, obj, req, session, status)
        sid = cmcd.get("sid")
        if sid is None:
            return None
        client = client_dimensions(user_agent, address)
        received = datetime.fromtimestamp(at, UTC)
        source_type = {"h": "hls", "d": "dash", "s": "smooth"}.get(cmcd.get("sf", ""))
        if source_type is None and name is not None:
            source_type = "dash" if name.endswith(".mpd") else "hls" if name.endswith(".m3u8") else None
        return {
            "view_id": sid, "event": CMCD_EVENT, "view_sequence_number": None, "viewer_time": int(at * 1000),
            "playhead_ms": None, "received_at": received, "asset_id": asset_id, "playback_id": playback_id,
            "video_id": cmcd.get("cid"), "view_session_id": sid, "player_software": None,
            "source_hostname": (host or "").split(":")[0][:255] or None, "source_type": source_type,
            "stream_type": {"v": "on-demand", "l": "live"}.get(cmcd.get("st", "")),
            **{key: client.get(key) for key in ("browser", "browser_version", "operating_system",
                                                "operating_system_version", "viewer_device_category",
                                                "viewer_device_manufacturer", "viewer_device_name", "country",
                                                "region", "asn")},
            "data": json.dumps({"cmcd": cmcd, "rendition": rendition, "object": name}, separators=(",", ":")),
        }

    def _presences(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The real-time presence of each session the rows touch (kept per process, last 100 000 sessions)."""
        from kinoray.analytics.realtime import presence_step

        touched: dict[str, dict[str, Any]] = {}
        rows = list(rows)
        unknown = sorted({row["view_id"] for row in rows} - self._presence.keys())
        if unknown and self.presences is not None:  # sessions another edge process has seen so far
            self._presence.update(self.presences(unknown))
        for row in rows:
            data = json.loads(row["data"])
            previous = self._presence.get(row["view_id"])
            for event in cmcd_timeline([{"event": CMCD_EVENT, "viewer_time": row["viewer_time"], "details": data}],
                                       _state_of(previous)):
                previous = presence_step(previous, event["event"], event, row, row["viewer_time"])
            if previous is not None:
                self._presence[row["view_id"]] = touched[row["view_id"]] = previous
        if len(self._presence) > 100_000:
            oldest = sorted(self._presence, key=lambda key: self._presence[key]["last_ms"])[:50_000]
            for key in oldest:
                del self._presence[key]
        return list(touched.values())


def _state_of(presence: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if presence is None:
        return None
    return {"started": presence.get("started", False), "rebuffering": presence.get("state") == "rebuffering",
            "bitrate": presence.get("bitrate"), "height": presence.get("height")}


# --- CMCD requests → player events --------------------------------------------------------------------------
def _height(rendition: Any) -> int | None:
    if isinstance(rendition, str) and rendition.endswith("p") and rendition[:-1].isdigit():
        return int(rendition[:-1])
    return None


def cmcd_timeline(events: list[dict[str, Any]], state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The player events a view's ``cmcd`` events (in time order, each with its ``details``) stand for — see
    the module's docstring; each ``cmcd`` event is kept (it carries the time forward) after the events it
    implies. ``state`` continues an earlier call (``started``, ``rebuffering``, ``bitrate``, ``height``)."""
    started = bool(state and state.get("started"))
    rebuffering = bool(state and state.get("rebuffering"))
    carried: dict[str, Any] = {}
    if state and state.get("bitrate"):
        carried["video_source_bitrate"] = state["bitrate"]
    if state and state.get("height"):
        carried["video_source_height"] = state["height"]
    out: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        details = event.get("details") or {}
        cmcd = details.get("cmcd") or {}
        implied: list[str] = []
        if index == 0 and state is None:
            implied.append("viewstart")
        startup = cmcd.get("su", False)
        if cmcd.get("bs") and started and not rebuffering:
            implied.append("rebufferstart")
            rebuffering = True
        elif not startup and not cmcd.get("bs"):
            if not started:
                implied.append("playing")
                started = True
            elif rebuffering:
                implied.append("rebufferend")
                rebuffering = False
        bitrate = cmcd.get("br")
        video = cmcd.get("ot") in ("v", "av") or (cmcd.get("ot") is None and details.get("rendition") not in
                                                   (None, "audio") and details.get("object") != "index.m3u8")
        if bitrate and video and bitrate * 1000 != carried.get("video_source_bitrate"):
            carried["video_source_bitrate"] = bitrate * 1000
            height = _height(details.get("rendition"))
            if height is not None:
                carried["video_source_height"] = height
            implied.append("renditionchange")
        out.extend({**event, **carried, "event": name} for name in implied)
        out.append({**event, **carried})
    if state is not None:
        state.update(started=started, rebuffering=rebuffering, bitrate=carried.get("video_source_bitrate"),
                     height=carried.get("video_source_height"))
    return out
