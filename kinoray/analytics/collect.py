"""The collector: Mux Data SDK beacons in, event rows out.

A beacon batch is what ``mux-embed`` (and every Mux Data SDK) posts: ``{"metadata": {"transmission_timestamp",
"rtt_ms"}, "events": [...]}``, each event a flat object of short keys (:mod:`kinoray.analytics.keys`), at most
:data:`MAX_EVENTS` events and :data:`MAX_BATCH_BYTES` bytes. :func:`parse_batch` checks the envelope and the
types of the fields the views are built from and refuses the whole batch with a typed error naming the first
problem; anything else an event carries is kept as sent (unknown event types included).

The SDK sends most of a view's fields once (on ``viewstart``, and afterwards only when they change), so a
collector carries them forward: :class:`Collector` merges each event into its view's state — kept where every
collector process sees it (:class:`RedisViewStates` when Redis is configured, else :class:`StoreViewStates` in
the object store) for :data:`VIEW_STATE_SECONDS` — and writes each row with the view's dimensions as they stand
at that event (browser/OS/device/country from the request, the kinoray playback id and asset from ``video_id``
or the source URL). The raw event is kept beside them (``data``), so views are rebuilt from the events alone
(:mod:`kinoray.analytics.views`: fields in sequence order, the timeline in viewer-clock order), whatever order
batches arrived in.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from kinoray.analytics.enrich import client_dimensions
from kinoray.analytics.keys import expand_event
from kinoray.analytics.realtime import presence_step
from kinoray.errors import InvalidParametersError, RequestTooLargeError, StorageError
from kinoray.store.objects import ObjectStore

__all__ = ["DIMENSIONS", "MAX_BATCH_BYTES", "MAX_EVENTS", "VIEW_STATE_SECONDS", "Collector", "MemoryViewStates",
           "RedisViewStates", "StoreViewStates", "ViewStates", "parse_batch"]

#: Most events in one batch (what the SDK sends at most: ``maxBeaconSize``).
MAX_EVENTS = 300
#: Largest batch body (the SDK's ``maxPayloadKBSize``, 500 KB).
MAX_BATCH_BYTES = 500 * 1024
#: How long a view's carried-forward fields are kept after its last event (a view is final after 60 min).
VIEW_STATE_SECONDS = 3600
_MAX_MS = 2**53 - 1
_MAX_TEXT = 4096

#: The dimensions every event row carries (Mux Data's dimension names), as strings.
DIMENSIONS: tuple[str, ...] = (
    "asset_id", "playback_id", "video_id", "video_title", "video_series", "video_content_type", "env_key",
    "viewer_user_id", "viewer_id", "view_session_id", "player_name", "player_software", "player_software_version",
    "player_mux_plugin_name", "player_version", "source_hostname", "source_type", "stream_type", "cdn",
    "sub_property_id", "experiment_name", "browser", "browser_version", "operating_system",
    "operating_system_version", "viewer_device_category", "viewer_device_manufacturer", "viewer_device_name",
    "country", "region", "asn",
)

# fields that belong to one event, not to the view (never carried forward)
_PER_EVENT = frozenset({"event", "viewer_time", "player_playhead_time", "view_sequence_number",
                        "player_sequence_number", "mux_view_message", "transmission_timestamp"})
_PER_EVENT_PREFIXES = ("request_", "player_error_")
# Mux dimension ← the SDK field it is read from
_FROM_FIELDS = {
    "video_id": "video_id", "video_title": "video_title", "video_series": "video_series",
    "video_content_type": "video_content_type", "env_key": "env_key", "viewer_user_id": "viewer_user_id",
    "viewer_id": "mux_viewer_id", "view_session_id": "session_id", "player_name": "player_name",
    "player_software": "player_software", "player_software_version": "player_software_version",
    "player_mux_plugin_name": "player_mux_plugin_name", "player_version": "player_version",
    "source_hostname": "video_source_hostname", "cdn": "video_cdn", "sub_property_id": "sub_property_id",
    "experiment_name": "experiment_name",
}
_PRESENCE = "kinoray_presence"
_PLAYBACK_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_PLAYBACK_PATH = re.compile(r"/(?P<id>[A-Za-z0-9]{1,64})(?:\.(?:m3u8|mpd)|/)")
_SOURCE_TYPES = {".m3u8": "hls", ".mpd": "dash", ".mp4": "mp4", ".m4a": "mp4", ".webm": "webm"}


# --- the envelope -------------------------------------------------------------------------------------------
def _refuse(where: str, what: str) -> InvalidParametersError:
    return InvalidParametersError(f"{where}: {what}")


def _check_number(event: Mapping[str, Any], name: str, where: str, *, integer: bool = False,
                  required: bool = False) -> None:
    value = event.get(name)
    if value is None:
        if required:
            raise _refuse(f"{where}.{name}", "required")
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _refuse(f"{where}.{name}", "must be a number")
    if integer and value != int(value):
        raise _refuse(f"{where}.{name}", "must be an integer")
    if not 0 <= value <= _MAX_MS:
        raise _refuse(f"{where}.{name}", f"must be between 0 and {_MAX_MS}")


def _check_text(value: Any, where: str) -> None:
    """Refuses what the store cannot hold (NUL, an unpaired surrogate) here rather than at a flush."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _refuse(where, "NUL characters are not accepted")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _refuse(where, "text must be valid Unicode (no unpaired surrogates)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_text(item, where)


def _check_event(raw: Any, index: int) -> dict[str, Any]:
    where = f"events.{index}"
    if not isinstance(raw, dict):
        raise _refuse(where, "each event must be an object")
    event = expand_event(raw)
    name = event.get("event")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise _refuse(f"{where}.event", "the event name (`e`) must be a string of 1 to 64 characters")
    view_id = event.get("view_id")
    if not isinstance(view_id, str) or not 0 < len(view_id) <= 128:
        raise _refuse(f"{where}.view_id", "the view id (`xid`) must be a string of 1 to 128 characters")
    _check_text(event, where)
    _check_number(event, "viewer_time", where, required=True)
    _check_number(event, "player_playhead_time", where)
    _check_number(event, "view_sequence_number", where, integer=True)
    for name in ("video_id", "video_source_url", "video_title", "viewer_user_id", "session_id", "env_key"):
        value = event.get(name)
        if value is not None and not (isinstance(value, str | int | float) and not isinstance(value, bool)):
            raise _refuse(f"{where}.{name}", "must be a string")
        if isinstance(value, str) and len(value) > _MAX_TEXT:
            raise _refuse(f"{where}.{name}", f"at most {_MAX_TEXT} characters")
    return event


def parse_batch(body: bytes) -> list[dict[str, Any]]:
    """The events of one beacon batch, keys expanded. Raises :class:`RequestTooLargeError` past
    :data:`MAX_BATCH_BYTES` and :class:`InvalidParametersError` for anything malformed (the whole batch: a
    player resends what was refused, so half a batch is never kept)."""
    if len(body) > MAX_BATCH_BYTES:
        raise RequestTooLargeError(f"beacon batches are at most {MAX_BATCH_BYTES} bytes")
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidParametersError(f"body: not JSON ({str(error)[:100]})") from None
    if not isinstance(envelope, dict):
        raise InvalidParametersError('body: must be an object {"metadata": {...}, "events": [...]}')
    metadata = envelope.get("metadata", {})
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidParametersError("metadata: must be an object")
    events = envelope.get("events")
    if not isinstance(events, list):
        raise InvalidParametersError("events: required, a list of events")
    if not 0 < len(events) <= MAX_EVENTS:
        raise InvalidParametersError(f"events: 1 to {MAX_EVENTS} events per batch, not {len(events)}")
    return [_check_event(raw, index) for index, raw in enumerate(events)]


# --- per-view state, shared by every collector process ------------------------------------------------------
class ViewStates(Protocol):
    """A view's carried-forward fields, by view id; what one process writes, every other one reads."""

    def get(self, view_id: str) -> dict[str, Any]: ...

    def put(self, view_id: str, state: Mapping[str, Any]) -> None: ...

    def delete(self, view_id: str) -> None: ...


class MemoryViewStates:
    """One process's view states (tests, single-process use): expire after ``seconds``."""

    def __init__(self, seconds: float = VIEW_STATE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self._states: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, view_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._states.get(view_id)
            return dict(found[1]) if found and found[0] > self.clock() else {}

    def put(self, view_id: str, state: Mapping[str, Any]) -> None:
        now = self.clock()
        with self._lock:
            if len(self._states) > 100_000:
                self._states = {k: v for k, v in self._states.items() if v[0] > now}
            self._states[view_id] = (now + self.seconds, dict(state))

    def delete(self, view_id: str) -> None:
        with self._lock:
            self._states.pop(view_id, None)


class RedisViewStates:
    """View states in Redis (``kinoray:view:<id>``, JSON, expiring :data:`VIEW_STATE_SECONDS` after the last
    write): what every edge process of every node sees."""

    def __init__(self, url: str, seconds: int = VIEW_STATE_SECONDS) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.seconds = seconds

    def get(self, view_id: str) -> dict[str, Any]:
        raw = self.client.get(f"kinoray:view:{view_id}")
        return json.loads(raw) if raw else {}

    def put(self, view_id: str, state: Mapping[str, Any]) -> None:
        self.client.set(f"kinoray:view:{view_id}", json.dumps(state, separators=(",", ":")), ex=self.seconds)

    def delete(self, view_id: str) -> None:
        self.client.delete(f"kinoray:view:{view_id}")


class StoreViewStates:
    """View states as small JSON objects in the object store (``analytics/view-state/<id>.json``), for setups
    without Redis: shared by every process that shares the store; a state older than ``seconds`` is ignored.
    One read and one write per view per batch."""

    PREFIX = "analytics/view-state"

    def __init__(self, store: ObjectStore, seconds: float = VIEW_STATE_SECONDS) -> None:
        self.store, self.seconds = store, seconds

    def _key(self, view_id: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", view_id)[:128]
        return f"{self.PREFIX}/{safe}.json"

    def get(self, view_id: str) -> dict[str, Any]:
        try:
            saved = json.loads(self.store.get_bytes(self._key(view_id)))
        except StorageError as error:
            if isinstance(error.__cause__, FileNotFoundError):
                return {}
            raise
        except ValueError:
            return {}
        if not isinstance(saved, dict) or time.time() - float(saved.get("at", 0)) > self.seconds:
            return {}
        state = saved.get("state")
        return state if isinstance(state, dict) else {}

    def put(self, view_id: str, state: Mapping[str, Any]) -> None:
        body = json.dumps({"at": time.time(), "state": state}, separators=(",", ":")).encode()
        self.store.put_bytes(body, self._key(view_id))

    def delete(self, view_id: str) -> None:
        if self.store.exists(self._key(view_id)):
            self.store.delete(self._key(view_id))


# --- rows ---------------------------------------------------------------------------------------------------
def _carried(event: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``event`` the view keeps for its later events: not per-event fields, not nested objects, and never
    the collector's own ``kinoray_*`` facts (geo, device, the mapped asset), which a beacon may not set."""
    return {key: value for key, value in event.items()
            if key not in _PER_EVENT and not key.startswith(_PER_EVENT_PREFIXES) and not key.startswith("kinoray_")
            and not isinstance(value, dict | list)}


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:_MAX_TEXT]


def _source_type(url: str) -> str | None:
    path = urlsplit(url).path.lower()
    return next((kind for ext, kind in _SOURCE_TYPES.items() if path.endswith(ext)), None)


def _playback_id(state: Mapping[str, Any], asset_of: Callable[[str], str | None]) -> tuple[str | None, str | None]:
    """kinoray's playback id and asset for a view: ``video_id`` when it is a playback id (``@mux/mux-player``
    sets it so), else the id in a kinoray stream URL (``/<id>.m3u8``, ``/<id>/...``)."""
    candidates = []
    video_id = state.get("video_id")
    if isinstance(video_id, str) and _PLAYBACK_ID.fullmatch(video_id):
        candidates.append(video_id)
    for name in ("video_source_url", "player_source_url"):
        url = state.get(name)
        if isinstance(url, str):
            match = _PLAYBACK_PATH.match(urlsplit(url).path)
            if match:
                candidates.append(match["id"])
    for candidate in candidates:
        asset_id = asset_of(candidate)
        if asset_id is not None:
            return candidate, asset_id
    return None, None


def dimensions_of(state: Mapping[str, Any]) -> dict[str, str | None]:
    """The Mux dimensions of a view's carried-forward state."""
    out: dict[str, str | None] = {name: _text(state.get(field)) for name, field in _FROM_FIELDS.items()}
    for name in ("asset_id", "playback_id", "browser", "browser_version", "operating_system",
                 "operating_system_version", "viewer_device_category", "viewer_device_manufacturer",
                 "viewer_device_name", "country", "region", "asn"):
        out[name] = _text(state.get(f"kinoray_{name}"))
    url = state.get("video_source_url")
    out["source_type"] = _source_type(url) if isinstance(url, str) else None
    if out["source_hostname"] is None and isinstance(url, str):
        out["source_hostname"] = urlsplit(url).hostname
    live = state.get("video_source_is_live")
    out["stream_type"] = None if live is None else ("live" if live in (True, "true", 1) else "on-demand")
    return out


class Collector:
    """Turns parsed batches into event rows (``sink``), carrying each view's fields forward in ``states``.

    ``asset_of(playback_id)`` names the asset a playback id belongs to (``None``: not one of ours); it is asked
    once per view until it answers. ``enrich(rows)`` completes rows in place before anything reads them (the
    event log and the real-time presence alike: the environment of a view that sent no ``env_key``)."""

    def __init__(self, states: ViewStates, sink: Callable[[list[dict[str, Any]]], None],
                 asset_of: Callable[[str], str | None] = lambda _: None,
                 realtime: Callable[[list[dict[str, Any]]], None] | None = None,
                 enrich: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.states, self.sink, self.asset_of, self.realtime = states, sink, asset_of, realtime
        self.enrich = enrich

    def collect(self, events: Iterable[Mapping[str, Any]], *, user_agent: str | None = None,
                address: str | None = None, received_at: datetime | None = None) -> int:
        """Rows for ``events`` (from :func:`parse_batch`) handed to the sink; returns how many. The client address
        is used for the geo lookup only."""
        received = received_at or datetime.now(UTC)
        client = {f"kinoray_{name}": value for name, value in client_dimensions(user_agent, address).items()}
        by_view: dict[str, list[Mapping[str, Any]]] = {}
        for event in events:
            by_view.setdefault(str(event["view_id"]), []).append(event)
        rows: list[dict[str, Any]] = []
        presences: list[dict[str, Any]] = []
        now_ms = int(received.timestamp() * 1000)
        for view_id, view_events in by_view.items():
            view_events.sort(key=lambda e: (e.get("view_sequence_number") or 0, e.get("viewer_time") or 0))
            state = self.states.get(view_id)
            for event in view_events:
                state.update(_carried(event))
                state.update(client)
                if "kinoray_asset_id" not in state:
                    playback_id, asset_id = _playback_id(state, self.asset_of)
                    if asset_id is not None:
                        state["kinoray_playback_id"], state["kinoray_asset_id"] = playback_id, asset_id
                rows.append(_row(event, state, received))
                if self.enrich is not None:
                    self.enrich(rows[-1:])
                if self.realtime is not None:  # the view's presence now (kinoray.analytics.realtime)
                    state[_PRESENCE] = presence_step(state.get(_PRESENCE), str(event["event"]), event,
                                                     {**rows[-1], "video_source_height": None}, now_ms)
            self.states.put(view_id, state)
            if _PRESENCE in state:
                presences.append(state[_PRESENCE])
        self.sink(rows)
        if self.realtime is not None and presences:
            self.realtime(presences)
        return len(rows)


def _row(event: Mapping[str, Any], state: Mapping[str, Any], received: datetime) -> dict[str, Any]:
    sequence = event.get("view_sequence_number")
    playhead = event.get("player_playhead_time")
    return {
        "view_id": str(event["view_id"]),
        "event": str(event["event"]),
        "view_sequence_number": int(sequence) if sequence is not None else None,
        "viewer_time": int(event["viewer_time"]),
        "playhead_ms": float(playhead) if playhead is not None else None,
        "received_at": received,
        **dimensions_of(state),
        "data": json.dumps(event, separators=(",", ":"), default=str),
    }
