"""``/video/v1/live-streams``: Mux's live stream resource (:mod:`kinoray.control.live` does the work).

The stream key is in the answer of create and ``reset-stream-key`` only: kinoray keeps a hash of it (Mux shows
it on every read; docs/API.md, "Differences from Mux"). Publishing (RTMP) is the live runtime's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

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
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/video/v1/live-streams", tags=["live streams"], route_class=IdempotentRoute)

MAX_LIMIT = 100


class LiveStreamEnvelope(BaseModel):
    data: dict[str, Any] = Field(description="the live stream (Mux's live stream object)")


class LiveStreamList(BaseModel):
    data: list[dict[str, Any]]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")


class ItemEnvelope(BaseModel):
    data: dict[str, Any]


@router.post("", status_code=201, response_model=LiveStreamEnvelope,
             responses=error_responses(*AUTHENTICATED, 409, 422))
def create(body: LiveStreamCreate, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Create a live stream; the answer holds its ``stream_key``, shown this once."""
    with platform.db.session() as session:
        stream, key = create_live_stream(session, body)
        return {"data": live_stream_view(stream, stream_key=key)}


@router.get("", response_model=LiveStreamList, responses=error_responses(*AUTHENTICATED))
def list_streams(
    platform: PlatformDep,
    token: CurrentToken,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 25,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    stream_key: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> dict[str, Any]:
    """Newest first, by ``page`` or ``cursor``; ``stream_key`` finds the stream with that key, ``status`` filters."""
    with platform.db.reader() as session:
        rows, next_cursor = list_live_streams(session, limit=limit, page=page, cursor=cursor,
                                              stream_key=stream_key, status=status)
        return {"data": [live_stream_view(row) for row in rows], "next_cursor": next_cursor}


@router.get("/{live_stream_id}", response_model=LiveStreamEnvelope, responses=error_responses(*AUTHENTICATED, 404))
def get(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    with platform.db.reader() as session:
        return {"data": live_stream_view(get_live_stream(session, live_stream_id))}


@router.patch("/{live_stream_id}", response_model=LiveStreamEnvelope,
              responses=error_responses(*AUTHENTICATED, 404, 409))
def update(live_stream_id: str, body: LiveStreamUpdate, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Change the fields given (``latency_mode`` only while the stream has no session)."""
    with platform.db.session() as session:
        return {"data": live_stream_view(update_live_stream(session, live_stream_id, body))}


@router.delete("/{live_stream_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the live stream (a session's recording is finished into its asset)."""
    delete_live_stream(platform, live_stream_id)
    return Response(status_code=204)


@router.put("/{live_stream_id}/complete", response_model=ItemEnvelope, responses=error_responses(*AUTHENTICATED, 404))
def complete(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """End the session without a reconnect window (Mux answers ``{"data": {}}``)."""
    complete_live_stream(platform, live_stream_id)
    return {"data": {}}


@router.put("/{live_stream_id}/enable", response_model=ItemEnvelope, responses=error_responses(*AUTHENTICATED, 404))
def enable(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    set_live_stream_enabled(platform, live_stream_id, True)
    return {"data": {}}


@router.put("/{live_stream_id}/disable", response_model=ItemEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def disable(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Refuse the stream key (a connected publisher is stopped, its session ends)."""
    set_live_stream_enabled(platform, live_stream_id, False)
    return {"data": {}}


@router.post("/{live_stream_id}/reset-stream-key", status_code=201, response_model=LiveStreamEnvelope,
             responses=error_responses(*AUTHENTICATED, 404))
def reset_key(live_stream_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """A new stream key, shown this once; the old one stops working at once."""
    with platform.db.session() as session:
        stream, key = reset_stream_key(session, live_stream_id)
        return {"data": live_stream_view(stream, stream_key=key)}


@router.post("/{live_stream_id}/playback-ids", status_code=201, response_model=ItemEnvelope,
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def add_playback_id(live_stream_id: str, platform: PlatformDep, token: CurrentToken,
                    body: Annotated[PlaybackIdCreate | None, Body()] = None) -> dict[str, Any]:
    with platform.db.session() as session:
        playback = create_live_playback_id(session, live_stream_id, (body or PlaybackIdCreate()).policy)
        return {"data": live_playback_id_view(playback)}


@router.get("/{live_stream_id}/playback-ids/{playback_id}", response_model=ItemEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def get_playback_id(live_stream_id: str, playback_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    with platform.db.reader() as session:
        return {"data": live_playback_id_view(get_live_playback_id(session, live_stream_id, playback_id))}


@router.delete("/{live_stream_id}/playback-ids/{playback_id}", status_code=204,
               responses=error_responses(*AUTHENTICATED, 404))
def delete_playback_id(live_stream_id: str, playback_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    with platform.db.session() as session:
        delete_live_playback_id(session, live_stream_id, playback_id)
    return Response(status_code=204)


@router.post("/{live_stream_id}/simulcast-targets", status_code=201, response_model=ItemEnvelope,
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def add_simulcast_target(live_stream_id: str, body: SimulcastTargetCreate, platform: PlatformDep,
                         token: CurrentToken) -> dict[str, Any]:
    """Add a target (stored with status ``idle``; only while the stream has no session)."""
    with platform.db.session() as session:
        return {"data": simulcast_target_view(create_simulcast_target(session, live_stream_id, body))}


@router.get("/{live_stream_id}/simulcast-targets/{target_id}", response_model=ItemEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def get_target(live_stream_id: str, target_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    with platform.db.reader() as session:
        return {"data": simulcast_target_view(get_simulcast_target(session, live_stream_id, target_id))}


@router.delete("/{live_stream_id}/simulcast-targets/{target_id}", status_code=204,
               responses=error_responses(*AUTHENTICATED, 404))
def delete_target(live_stream_id: str, target_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    with platform.db.session() as session:
        delete_simulcast_target(session, live_stream_id, target_id)
    return Response(status_code=204)
