"""Views and their metrics: pure functions over event rows (no I/O).

A *view* is one viewer watching one video: the events sharing a view id (``xid``). :func:`build_views` groups
rows by view id, drops duplicates (a re-sent batch: same view id and sequence number), carries each view's
fields forward in sequence-number order (the SDK sends most fields once, as they change), and walks the
timeline once in viewer-clock order (:func:`view_of`; the sequence number breaks ties): an SDK may send an event
after others that happened later (mux-embed's ``rebufferstart`` carries the time the stall began, ≥ 1 s
before it is sent). A view *ends* at ``viewend`` or 60 s without events
(:data:`VIEW_IDLE_MS`: it stops counting as watching now) and is *final* 60 minutes after its last event
(:data:`VIEW_FINAL_MS`: later events are not expected; final views may be cached).

Definitions (Mux Data's; ``docs/API.md`` has the table), all times in ms of the viewer's clock:

- **video startup time**: the first ``play`` (the play instruction, user or autoplay) to the first ``playing``
  after it; **player startup time**: the SDK's ``player_startup_time`` (player init → ``playerready``), else
  ``playerready`` minus ``player_init_time``.
- **exit before video start**: ``play`` was requested but the view ended with no ``playing`` and no error.
  **Playback failure**: a fatal ``error`` (severity not ``warning``) anywhere; **video startup failure**: one
  before the first frame.
- **watch time**: time spent starting, playing, rebuffering and seeking (not paused, not before ``play``, not
  after ``ended``); **playing time**: time in ``playing`` only. A gap over :data:`VIEW_IDLE_MS` between events
  counts as no time (the player was gone).
- **rebuffering**: ``rebufferstart`` → ``rebufferend`` (or the next ``playing``/``pause``/``seeking``/end);
  percentage = rebuffer duration ÷ watch time; frequency = rebuffers per minute of watch time.
- **seek latency**: ``seeking`` → the next ``playing`` (or ``seeked`` when the player stays paused), averaged.
- **weighted average bitrate**: the rendition bitrate weighted by playing time; **rendition switches**: changes
  of rendition after the first; **upscale/downscale**: the rendition drawn into the player
  (``min(player_width/source_width, player_height/source_height)``; above 1 is upscaling by ``factor - 1``,
  below 1 downscaling by ``1 - factor``), averaged over playing time and its maximum.

Scores (0–1, Mux's API scale; ``None`` where Mux does not score the view):

- **playback success**: 1 played, 0.5 exit before start, 0 failure; not scored when the view exited before
  start within 1 s of the play request.
- **startup time**: ``8 / (8 + s)``, ``s`` the video startup time in seconds (Mux's examples: 0.4 s → 0.95,
  2 s → 0.8, 8 s → 0.5, 20 s → 0.29); not scored without a first frame.
- **smoothness**: the mean of ``1/√(1 + (count/2)²)`` and ``e^(−10·rebuffer_fraction)``.
- **video quality**: ``1 − 0.3·(0.85·average_upscale + 0.15·max_upscale)``, floored at 0 (upscale as a
  fraction: 0.5 = drawn 50 % larger than the rendition). Calibrated on Mux's examples: none → 1, 50 %
  throughout → 0.85; 200 % for 30 s then none for 20 min gives 0.90 (Mux: 0.92). 1 when the sizes are unknown
  but something played.
- **viewer experience** (Mux does not publish its combination; kinoray's): the playback success score when the
  view failed or exited before start, else the weighted mean of the scored parts — playback success 0.4,
  startup 0.2, smoothness 0.25, quality 0.15 (missing parts drop out and the weights renormalise).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kinoray.analytics.cmcd import CMCD_EVENT, cmcd_timeline

__all__ = ["VIEW_FINAL_MS", "VIEW_IDLE_MS", "View", "build_views", "dedupe", "view_dimensions", "view_of"]

VIEW_IDLE_MS = 60_000
VIEW_FINAL_MS = 3_600_000
_EXIT_GRACE_MS = 1000

_PLAYING, _STARTING, _PAUSED, _REBUFFERING, _SEEKING, _IDLE, _ENDED = (
    "playing", "starting", "paused", "rebuffering", "seeking", "idle", "ended")
_WATCHING = {_PLAYING, _STARTING, _REBUFFERING, _SEEKING}
_PER_EVENT_PREFIXES = ("request_", "player_error_")  # as the collector: one event's, not carried
_EVENT_COLUMNS = frozenset({"view_id", "data", "event", "viewer_time", "playhead_ms", "view_sequence_number",
                            "received_at"})


@dataclass
class View:
    """One view's facts and metrics (times ms, fractions 0–1)."""

    id: str
    events: list[dict[str, Any]] = field(repr=False)
    fields: dict[str, Any] = field(repr=False)  # the carried-forward state at the view's end
    dimensions: dict[str, Any]
    view_start: int
    view_end: int
    ended: bool  # a viewend, or no event within VIEW_IDLE_MS of ``now``
    final: bool
    video_startup_time: int | None
    player_startup_time: int | None
    exit_before_video_start: bool
    playback_failure: bool
    video_startup_failure: bool
    error_code: str | None
    error_message: str | None
    watch_time: int
    playing_time: int
    rebuffer_count: int
    rebuffer_duration: int
    seek_count: int
    seek_latency: float | None
    weighted_average_bitrate: float | None
    rendition_switches: int
    upscale_percentage: float | None
    max_upscale_percentage: float | None
    downscale_percentage: float | None
    max_downscale_percentage: float | None
    max_playhead_position: float | None
    first_received: int | None = None  # the server's receipt of the view's first and last events, ms
    last_received: int | None = None
    playback_success_score: float | None = None
    startup_time_score: float | None = None
    smoothness_score: float | None = None
    video_quality_score: float | None = None
    viewer_experience_score: float | None = None
    played: bool = False  # a first frame was seen (a CMCD-only view plays without a startup time)

    @property
    def rebuffer_percentage(self) -> float | None:
        return self.rebuffer_duration / self.watch_time if self.watch_time > 0 else None

    @property
    def rebuffer_frequency(self) -> float | None:
        """Rebuffers per minute of watch time."""
        return self.rebuffer_count / (self.watch_time / 60_000) if self.watch_time > 0 else None

    @property
    def started(self) -> bool:
        return self.played or self.video_startup_time is not None


def dedupe(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``rows`` without re-sent copies: one row per (view id, sequence number); rows without a sequence number
    per (view id, event, viewer time, data)."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for row in rows:
        sequence = row.get("view_sequence_number")
        key = (row["view_id"], sequence) if sequence is not None else (
            row["view_id"], row.get("event"), row.get("viewer_time"), row.get("data"))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _scale(fields: Mapping[str, Any]) -> float | None:
    pw, ph = _number(fields.get("player_width")), _number(fields.get("player_height"))
    sw, sh = _number(fields.get("video_source_width")), _number(fields.get("video_source_height"))
    if not (pw and ph and sw and sh) or min(pw, ph, sw, sh) <= 0:
        return None
    return min(pw / sw, ph / sh)


def startup_score(startup_ms: int) -> float:
    return 8 / (8 + startup_ms / 1000)


def smoothness_score(rebuffer_count: int, rebuffer_fraction: float) -> float:
    return (1 / math.sqrt(1 + (rebuffer_count / 2) ** 2) + math.exp(-10 * rebuffer_fraction)) / 2


def quality_score(average_upscale: float, max_upscale: float) -> float:
    return max(0.0, 1 - 0.3 * (0.85 * average_upscale + 0.15 * max_upscale))


_WEIGHTS = {"playback_success_score": 0.4, "startup_time_score": 0.2, "smoothness_score": 0.25,
            "video_quality_score": 0.15}


def _score(view: View) -> None:
    play_requested = any(e["event"] == "play" for e in view.events)
    if view.playback_failure:
        view.playback_success_score = 0.0
    elif view.exit_before_video_start:
        first_play = next(e["viewer_time"] for e in view.events if e["event"] == "play")
        view.playback_success_score = None if view.view_end - first_play < _EXIT_GRACE_MS else 0.5
    elif view.started:
        view.playback_success_score = 1.0
    elif play_requested:
        view.playback_success_score = None  # still starting
    if view.video_startup_time is not None and not view.exit_before_video_start:
        view.startup_time_score = startup_score(view.video_startup_time or 0)
    if view.watch_time > 0 and view.started:
        view.smoothness_score = smoothness_score(view.rebuffer_count, view.rebuffer_percentage or 0.0)
        view.video_quality_score = quality_score(view.upscale_percentage or 0.0, view.max_upscale_percentage or 0.0)
    if view.playback_failure or view.exit_before_video_start:
        view.viewer_experience_score = view.playback_success_score
        return
    parts = {name: getattr(view, name) for name in _WEIGHTS if getattr(view, name) is not None}
    if parts:
        total = sum(_WEIGHTS[name] for name in parts)
        view.viewer_experience_score = sum(value * _WEIGHTS[name] for name, value in parts.items()) / total


def _fatal(event: Mapping[str, Any]) -> bool:
    return event["event"] == "error" and event.get("player_error_severity") != "warning"


def view_dimensions(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A view's dimensions from its rows in sequence order: each one's latest value (a dimension first known
    late, such as the asset, applies to the whole view)."""
    dimensions: dict[str, Any] = {}
    for row in rows:
        for key, value in row.items():
            if key not in _EVENT_COLUMNS and (value is not None or key not in dimensions):
                dimensions[key] = value
    return dimensions


def view_of(view_id: str, rows: list[Mapping[str, Any]], now_ms: int | None = None,
            dimensions: Mapping[str, Any] | None = None) -> View:
    """One view from its rows (deduplicated, any order). ``now_ms`` (the server's clock, ms) decides whether
    the view has ended and is final; ``None``: both by its own events only. ``dimensions``: the view's, when
    the caller has them already (else :func:`view_dimensions` of the rows)."""
    ordered = sorted(rows, key=lambda r: (r.get("view_sequence_number") is None, r.get("view_sequence_number") or 0,
                                          r.get("viewer_time") or 0))
    fields: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    for row in ordered:
        raw = row.get("data")
        sent = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        # an event's own error and request fields are not the view's (a warning's severity must not make a
        # later fatal error look like one): carried forward like the collector does, without them
        fields.update({k: v for k, v in sent.items()
                       if not isinstance(v, dict | list) and not k.startswith(_PER_EVENT_PREFIXES)})
        received = row.get("received_at")
        events.append({**fields, **sent, "event": row["event"], "viewer_time": int(row["viewer_time"]),
                       "player_playhead_time": row.get("playhead_ms"),
                       "view_sequence_number": row.get("view_sequence_number"), "details": sent,
                       "event_time": int(received.timestamp() * 1000) if isinstance(received, datetime) else None})
    dimensions = dict(dimensions) if dimensions is not None else view_dimensions(ordered)
    # fields are carried in the order the SDK sent them (above), the timeline is walked in the order things
    # happened: the viewer's clock, sequence number breaking ties (a stable sort). The two differ: mux-embed
    # stamps a rebufferstart with the last time the playhead moved, ≥ 1 s before it sends it (after events
    # of that second, such as the segment request whose answer ends the stall), and a stall shorter than that
    # as rebufferstart + rebufferend once playback has resumed (after its ``playing``).
    events.sort(key=lambda e: e["viewer_time"])
    cmcd_only = bool(events) and all(e["event"] == CMCD_EVENT for e in events)
    if cmcd_only:  # a viewer seen by its CMCD requests only: the player events they stand for
        events = cmcd_timeline(events)

    state = _IDLE
    last_time: int | None = None
    watch = playing = rebuffer_ms = 0
    rebuffers = seeks = switches = 0
    first_play = first_frame = None
    seek_started: int | None = None
    seek_waits: list[int] = []
    failure = startup_failure = False
    error_code = error_message = None
    bitrate_ms = bitrate_weight = 0.0
    up_ms = up_max = down_ms = down_max = 0.0
    scaled_weight = 0.0
    last_rendition: tuple[Any, ...] | None = None
    max_playhead: float | None = None
    before_seek = _PLAYING
    ended_event = False
    current_scale: float | None = None  # the rendition drawn, and its bitrate, since the previous event
    current_bitrate: float | None = None
    for event in events:
        at = event["viewer_time"]
        if last_time is not None:
            delta = at - last_time
            if 0 < delta <= VIEW_IDLE_MS:
                if state in _WATCHING:
                    watch += delta
                if state == _REBUFFERING:
                    rebuffer_ms += delta
                if state == _PLAYING:
                    playing += delta
                    if current_bitrate:
                        bitrate_ms += current_bitrate * delta
                        bitrate_weight += delta
                    if current_scale is not None:
                        scaled_weight += delta
                        up_ms += max(0.0, current_scale - 1) * delta
                        down_ms += max(0.0, 1 - current_scale) * delta
        last_time = at if last_time is None else max(last_time, at)
        scale = current_scale = _scale(event)
        current_bitrate = _number(event.get("video_source_bitrate"))
        playhead = _number(event.get("player_playhead_time"))
        if playhead is not None:
            max_playhead = playhead if max_playhead is None else max(max_playhead, playhead)
        if scale is not None and state == _PLAYING or (scale is not None and event["event"] == "playing"):
            up_max, down_max = max(up_max, scale - 1), max(down_max, 1 - scale)
        name = event["event"]
        rendition = (event.get("video_source_bitrate"), event.get("video_source_width"),
                     event.get("video_source_height"))
        if name == "renditionchange" and any(v is not None for v in rendition):
            if last_rendition is not None and rendition != last_rendition:
                switches += 1
            last_rendition = rendition
        if name == "play":
            if first_play is None:
                first_play = at
            if state in (_IDLE, _PAUSED, _ENDED):
                state = _STARTING if first_frame is None else _PLAYING
        elif name == "playing":
            if first_play is None:
                first_play = next((e["viewer_time"] for e in events if e["event"] == "viewstart"), at)
            if first_frame is None:
                first_frame = at
            if state == _SEEKING and seek_started is not None:
                seek_waits.append(at - seek_started)
                seek_started = None
            state = _PLAYING
        elif name == "pause":
            state = _PAUSED if state != _ENDED else state
        elif name == "rebufferstart":
            if state in (_PLAYING, _SEEKING) and first_frame is not None:
                rebuffers += 1
                state = _REBUFFERING
        elif name == "rebufferend":
            if state == _REBUFFERING:
                state = _PLAYING
        elif name == "seeking":
            seeks += 1
            if seek_started is None:
                seek_started = at
                before_seek = state if state != _SEEKING else before_seek
            if first_frame is not None:
                state = _SEEKING
        elif name == "seeked":
            if before_seek == _PAUSED and seek_started is not None:
                seek_waits.append(at - seek_started)
                seek_started = None
                state = _PAUSED
        elif name in ("ended", "viewend"):
            state = _ENDED
            ended_event = ended_event or name == "viewend"
        elif _fatal(event):
            failure = True
            startup_failure = startup_failure or first_frame is None
            error_code = str(event.get("player_error_code")) if event.get("player_error_code") is not None else None
            error_message = event.get("player_error_message")
            state = _ENDED
    view_start = events[0]["viewer_time"] if events else 0
    view_end = last_time or view_start
    player_startup = _number(fields.get("player_startup_time"))
    if player_startup is None:
        ready = next((e["viewer_time"] for e in events if e["event"] == "playerready"), None)
        init = _number(fields.get("player_init_time"))
        player_startup = ready - init if ready is not None and init is not None and ready >= init else None
    received = [e["event_time"] for e in events if e["event_time"] is not None]
    server_last = max(received) if received else None
    idle_for = now_ms - server_last if now_ms is not None and server_last is not None else 0
    ended = ended_event or failure or state == _ENDED and first_frame is None or idle_for > VIEW_IDLE_MS
    view = View(
        id=view_id, events=events, fields=fields, dimensions=dimensions, view_start=view_start, view_end=view_end,
        ended=ended, final=idle_for > VIEW_FINAL_MS,
        first_received=min(received) if received else None, last_received=server_last,
        video_startup_time=(first_frame - first_play) if first_frame is not None and first_play is not None
        and not cmcd_only else None,
        player_startup_time=int(player_startup) if player_startup is not None else None,
        exit_before_video_start=ended and first_play is not None and first_frame is None and not failure,
        playback_failure=failure, video_startup_failure=startup_failure,
        error_code=error_code, error_message=error_message,
        watch_time=watch, playing_time=playing, rebuffer_count=rebuffers, rebuffer_duration=rebuffer_ms,
        seek_count=seeks, seek_latency=sum(seek_waits) / len(seek_waits) if seek_waits else None,
        weighted_average_bitrate=bitrate_ms / bitrate_weight if bitrate_weight else None,
        rendition_switches=switches,
        upscale_percentage=up_ms / scaled_weight if scaled_weight else None,
        max_upscale_percentage=max(0.0, up_max) if scaled_weight else None,
        downscale_percentage=down_ms / scaled_weight if scaled_weight else None,
        max_downscale_percentage=max(0.0, down_max) if scaled_weight else None,
        max_playhead_position=max_playhead, played=first_frame is not None,
    )
    _score(view)
    return view


def build_views(rows: Iterable[Mapping[str, Any]], now_ms: int | None = None,
                dimensions: Mapping[str, Mapping[str, Any]] | None = None) -> list[View]:
    """Every view in ``rows`` (event rows of :mod:`kinoray.analytics.eventlog`, any order, duplicates allowed),
    ordered by start; ``dimensions`` by view id when the caller has them (a query reads them apart)."""
    by_view: dict[str, list[Mapping[str, Any]]] = {}
    for row in dedupe(rows):
        by_view.setdefault(str(row["view_id"]), []).append(row)
    views = [view_of(view_id, view_rows, now_ms, None if dimensions is None else dimensions.get(view_id, {}))
             for view_id, view_rows in by_view.items()]
    return sorted(views, key=lambda view: (view.view_start, view.id))
