"""Player analytics ingest, HTTP-free: the beacon format (Mux Data's event model) and storing a batch.

A player sends ``{"events": [...]}``: each event has its type, the viewer's clock (``viewer_time``, ms since
the epoch), the playhead (``playback_time``, ms), the view and viewer-session ids it belongs to, the playback
id, what the player and browser are, and type-specific fields (the rendition for ``renditionchange``, the
code and message for ``error``). The server adds ``event_time`` (receipt). Rows go to ``view_events`` as they
are; the analytics layer builds views and metrics (startup time, rebuffering, ...) from them.

Event types are Mux Data's (docs: mux-data-playback-events): ``playerready``, ``viewinit``, ``play``,
``playing``, ``pause``, ``seeking``, ``seeked``, ``rebufferstart``, ``rebufferend``, ``renditionchange``,
``error``, ``ended``, the periodic ``heartbeat`` and ``viewend`` (the page went away or the player was
removed). Players send batches every ~10 s and when the page is hidden, so a batch holds at most a few dozen.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import ConfigDict, Field

from kinoray.control.requests import RequestModel
from kinoray.store.db import Database
from kinoray.store.models import ViewEvent, utcnow

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_EVENTS", "BeaconBatch", "BeaconEvent", "EventType", "store_batch"]

#: Most events in one ``POST /data/v1/events``.
MAX_BATCH_EVENTS = 200
#: Largest request body, in bytes (also what ``navigator.sendBeacon`` and ``fetch(keepalive)`` may send).
MAX_BATCH_BYTES = 64 * 1024
_MAX_MS = 2**53 - 1  # JavaScript's largest exact integer: what Date.now() and playhead arithmetic stay below


class EventType(StrEnum):
    PLAYERREADY = "playerready"
    VIEWINIT = "viewinit"
    PLAY = "play"
    PLAYING = "playing"
    PAUSE = "pause"
    SEEKING = "seeking"
    SEEKED = "seeked"
    REBUFFERSTART = "rebufferstart"
    REBUFFEREND = "rebufferend"
    RENDITIONCHANGE = "renditionchange"
    ERROR = "error"
    ENDED = "ended"
    HEARTBEAT = "heartbeat"
    VIEWEND = "viewend"


_ViewId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
_Short = Annotated[str, Field(max_length=64)]
_Pixels = Annotated[int, Field(ge=0, le=65_535)]


class BeaconEvent(RequestModel):
    """One beacon. Unknown fields are ignored (a newer player keeps working against an older server); unknown
    event types are refused."""

    model_config = ConfigDict(extra="ignore")

    event: EventType = Field(description="Mux Data event type")
    viewer_time: int = Field(ge=0, le=_MAX_MS, description="the viewer's clock when it happened, ms since the epoch")
    playback_time: int = Field(ge=0, le=_MAX_MS, description="the playhead, ms")
    view_id: _ViewId = Field(description="one view: from the player loading a video to it leaving")
    session_id: _ViewId = Field(description="the viewer: one id per browser, kept across views")
    playback_id: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")
    sequence: int | None = Field(default=None, ge=0, le=2**31 - 1,
                                 description="the event's number within its view (orders events of the same ms)")
    player_name: _Short | None = None
    player_version: _Short | None = None
    player_software: _Short | None = Field(default=None, description="e.g. hls.js, dash.js, native")
    player_software_version: _Short | None = None
    player_width: _Pixels | None = None
    player_height: _Pixels | None = None
    browser: _Short | None = None
    browser_version: _Short | None = None
    os: _Short | None = None
    os_version: _Short | None = None
    page_url: str | None = Field(default=None, max_length=1024)
    rendition_width: _Pixels | None = Field(default=None, description="renditionchange: the new rendition")
    rendition_height: _Pixels | None = None
    rendition_bitrate: int | None = Field(default=None, ge=0, le=10**10, description="bits per second")
    rendition_codec: str | None = Field(default=None, max_length=128, description="RFC 6381 codecs string")
    error_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1,
                                   description="error: an HTTP status or the player's code")
    error_type: _Short | None = Field(default=None, description="error: the server's typed error, e.g. unauthorized")
    error_message: str | None = Field(default=None, max_length=1024)
    error_context: str | None = Field(default=None, max_length=1024)


class BeaconBatch(RequestModel):
    """``POST /data/v1/events``: 1 to 200 events, at most 64 KiB of JSON (sent as ``application/json`` or, by
    ``navigator.sendBeacon``, as ``text/plain``)."""

    events: list[BeaconEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


def _row(event: BeaconEvent, received_at: datetime) -> dict[str, Any]:
    row = event.model_dump(exclude={"event"})
    row["event_type"] = event.event.value
    row["event_time"] = received_at
    return row


def store_batch(db: Database, batch: BeaconBatch, received_at: datetime | None = None) -> int:
    """Insert every event of ``batch`` into ``view_events`` in one transaction (one multi-row INSERT); returns
    how many. ``received_at`` (default now) becomes each row's ``event_time``."""
    at = received_at or utcnow()
    rows = [_row(event, at) for event in batch.events]
    with db.session() as session:
        session.execute(sa.insert(ViewEvent), rows)
    return len(rows)
