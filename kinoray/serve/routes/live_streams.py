"""``/video/v1/live-streams``: Mux's live stream resource (:mod:`kinoray.control.live` does the work).

The stream key is in the answer of create and ``reset-stream-key`` only: kinoray keeps a hash of it (Mux shows
it on every read; docs/API.md, "Differences from Mux"). Publishing (RTMP) is the live runtime's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel

from kinoray.control.assets import PlaybackIdCreate
from kinoray.control.live import (
    LiveStreamCreate,
    LiveStreamUpdate,
    SimulcastTargetCreate,
    complete_live_stream,
    create_live_playback_id,
    create_live_stream,
    create_simulcast_target,
    delete_live_playback_id,
    delete_live_stream,
    delete_simulcast_target,
    get_live_playback_id,
    get_live_stream,
    get_simulcast_target,
    list_live_streams,
    live_playback_id_view,
    live_stream_view,
    reset_stream_key,
    set_live_stream_enabled,
    simulcast_target_view,
    update_live_stream,
)
from kinoray.control.views import LiveStreamView, PlaybackIdView, SimulcastTargetView
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PageDep, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, CursorListing, Envelope, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/video/v1/live-streams", tags=["live streams"], route_class=IdempotentRoute)

class EmptyEnvelope(BaseModel):
    """Mux's answer to complete, enable and disable: ``{"data": {}}``."""

    data: dict[str, Any]


@router.post("", status_code=201, response_model=Envelope[LiveStreamView],
             responses=error_responses(*AUTHENTICATED, 409, 422))
def create(body: LiveStreamCreate, platform: PlatformDep, token: CurrentToken) -> Envelope[LiveStreamView]:
    """Create a live stream; the answer holds its ``stream_key``, shown this once."""
    with platform.db.session() as session:
        stream, key = create_live_stream(session, body)
        return Envelope(data=live_stream_view(stream, stream_key=key))


@router.get("", response_model=CursorListing[LiveStreamView], responses=error_responses(*AUTHENTICATED))
def list_streams(
    platform: PlatformDep,
    token: CurrentToken,
    pages: PageDep,
    stream_key: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> CursorListing[LiveStreamView]:
    """Newest first, by ``page`` or ``cursor``; ``stream_key`` finds the stream with that key, ``status`` filters."""
    with platform.db.reader() as session:
        rows, next_cursor = list_live_streams(session, limit=pages.limit, page=pages.page, cursor=pages.cursor,
                                              stream_key=stream_key, status=status)
        return CursorListing(data=[live_stream_view(row) for row in rows], next_cursor=next_cursor)


@router.get("/{live_stream_id}", response_model=Envelope[LiveStreamView],
            responses=error_responses(*AUTHENTICATED, 404))
def get(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[LiveStreamView]:
    with platform.db.reader() as session:
        return Envelope(data=live_stream_view(get_live_stream(session, live_stream_id)))


@router.patch("/{live_stream_id}", response_model=Envelope[LiveStreamView],
              responses=error_responses(*AUTHENTICATED, 404, 409))
def update(live_stream_id: str, body: LiveStreamUpdate, platform: PlatformDep,
           token: CurrentToken) -> Envelope[LiveStreamView]:
    """Change the fields given (``latency_mode`` only while the stream has no session)."""
    with platform.db.session() as session:
        return Envelope(data=live_stream_view(update_live_stream(session, live_stream_id, body)))


@router.delete("/{live_stream_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the live stream (a session's recording is finished into its asset)."""
    delete_live_stream(platform, live_stream_id)
    return Response(status_code=204)


@router.put("/{live_stream_id}/complete", response_model=EmptyEnvelope, responses=error_responses(*AUTHENTICATED, 404))
def complete(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """End the session without a reconnect window (Mux answers ``{"data": {}}``)."""
    complete_live_stream(platform, live_stream_id)
    return {"data": {}}


@router.put("/{live_stream_id}/enable", response_model=EmptyEnvelope, responses=error_responses(*AUTHENTICATED, 404))
def enable(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    set_live_stream_enabled(platform, live_stream_id, True)
    return {"data": {}}


@router.put("/{live_stream_id}/disable", response_model=EmptyEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def disable(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Refuse the stream key (a connected publisher is stopped, its session ends)."""
    set_live_stream_enabled(platform, live_stream_id, False)
    return {"data": {}}


@router.post("/{live_stream_id}/reset-stream-key", status_code=201, response_model=Envelope[LiveStreamView],
             responses=error_responses(*AUTHENTICATED, 404))
def reset_key(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[LiveStreamView]:
    """A new stream key, shown this once; the old one stops working at once."""
    with platform.db.session() as session:
        stream, key = reset_stream_key(session, live_stream_id)
        return Envelope(data=live_stream_view(stream, stream_key=key))


@router.post("/{live_stream_id}/playback-ids", status_code=201, response_model=Envelope[PlaybackIdView],
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def add_playback_id(live_stream_id: str, platform: PlatformDep, token: CurrentToken,
                    body: Annotated[PlaybackIdCreate | None, Body()] = None) -> Envelope[PlaybackIdView]:
    with platform.db.session() as session:
        playback = create_live_playback_id(session, live_stream_id, (body or PlaybackIdCreate()).policy)
        return Envelope(data=live_playback_id_view(playback))


@router.get("/{live_stream_id}/playback-ids/{playback_id}", response_model=Envelope[PlaybackIdView],
            responses=error_responses(*AUTHENTICATED, 404))
def get_playback_id(live_stream_id: str, playback_id: str, platform: PlatformDep,
                    token: CurrentToken) -> Envelope[PlaybackIdView]:
    with platform.db.reader() as session:
        return Envelope(data=live_playback_id_view(get_live_playback_id(session, live_stream_id, playback_id)))


@router.delete("/{live_stream_id}/playback-ids/{playback_id}", status_code=204,
               responses=error_responses(*AUTHENTICATED, 404))
def delete_playback_id(live_stream_id: str, playback_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    with platform.db.session() as session:
        delete_live_playback_id(session, live_stream_id, playback_id)
    return Response(status_code=204)


@router.post("/{live_stream_id}/simulcast-targets", status_code=201, response_model=Envelope[SimulcastTargetView],
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def add_simulcast_target(live_stream_id: str, body: SimulcastTargetCreate, platform: PlatformDep,
                         token: CurrentToken) -> Envelope[SimulcastTargetView]:
    """Add a target (stored with status ``idle``; only while the stream has no session)."""
    with platform.db.session() as session:
        return Envelope(data=simulcast_target_view(create_simulcast_target(session, live_stream_id, body)))


@router.get("/{live_stream_id}/simulcast-targets/{target_id}", response_model=Envelope[SimulcastTargetView],
            responses=error_responses(*AUTHENTICATED, 404))
def get_target(live_stream_id: str, target_id: str, platform: PlatformDep,
               token: CurrentToken) -> Envelope[SimulcastTargetView]:
    with platform.db.reader() as session:
        return Envelope(data=simulcast_target_view(get_simulcast_target(session, live_stream_id, target_id)))


@router.delete("/{live_stream_id}/simulcast-targets/{target_id}", status_code=204,
               responses=error_responses(*AUTHENTICATED, 404))
def delete_target(live_stream_id: str, target_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    with platform.db.session() as session:
        delete_simulcast_target(session, live_stream_id, target_id)
    return Response(status_code=204)
