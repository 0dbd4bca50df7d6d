"""``/video/v1/assets`` and ``/video/v1/playback-ids``: Mux's asset resource.

Creating an asset validates its input URL against the SSRF policy (:mod:`kinoray.control.urls`) and queues
its transcode; the runner fetches the input and reports progress into the asset. Deleting an asset removes its
stored files; a transcode still running for it stops.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

from kinoray.control.assets import (
    VIEW_LOADS,
    AssetCreate,
    AssetUpdate,
    PlaybackIdCreate,
    asset_view,
    create_asset_from_request,
    create_playback_id,
    get_asset,
    playback_id_view,
    remove_asset,
)
from kinoray.control.events import emit
from kinoray.control.input_info import InputInfo, input_info
from kinoray.control.live import live_playback_id_view
from kinoray.errors import InvalidParametersError, NotFoundError
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, error_responses
from kinoray.store.db import newest_first
from kinoray.store.models import Asset, LiveStreamPlaybackId, PlaybackId, Upload, is_valid_id, utcnow

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/video/v1", tags=["assets"], route_class=IdempotentRoute)

MAX_LIMIT = 100


class AssetEnvelope(BaseModel):
    data: dict[str, Any] = Field(description="the asset (Mux's asset object)")


class AssetList(BaseModel):
    data: list[dict[str, Any]]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")


class PlaybackIdEnvelope(BaseModel):
    data: dict[str, Any] = Field(description="{id, policy}")


class PlaybackIdList(BaseModel):
    data: list[dict[str, Any]]


class PlaybackIdTarget(BaseModel):
    data: dict[str, Any] = Field(description="{id, policy, object: {type: asset|live_stream, id}}")


@router.post("/assets", status_code=201, response_model=AssetEnvelope,
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def create(body: AssetCreate, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Create an asset from ``inputs[0].url`` (http, https, s3; file only where enabled), or a clip of a ready
    asset (``mux://assets/{id}`` with ``start_time``/``end_time``)."""
    with platform.db.session() as session:
        asset = create_asset_from_request(session, platform.settings, body)
        return {"data": asset_view(asset)}


@router.get("/assets", response_model=AssetList, responses=error_responses(*AUTHENTICATED))
def list_assets(
    platform: PlatformDep,
    token: CurrentToken,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 25,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    upload_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Newest first. Either ``page`` (offset pages, like Mux) or ``cursor`` (from ``next_cursor``; stable while
    assets are added)."""
    where = []
    if upload_id is not None:
        if not is_valid_id(upload_id):
            return {"data": [], "next_cursor": None}
        where.append(Asset.id == sa.select(Upload.asset_id).where(Upload.id == upload_id).scalar_subquery())
    with platform.db.reader() as session:
        try:
            rows, next_cursor = newest_first(session, Asset, limit=limit, cursor=cursor, page=page, where=where,
                                             options=VIEW_LOADS)
        except ValueError as error:
            raise InvalidParametersError(str(error)) from None
        return {"data": [asset_view(row) for row in rows], "next_cursor": next_cursor}


@router.get("/assets/{asset_id}", response_model=AssetEnvelope, responses=error_responses(*AUTHENTICATED, 404))
def get(asset_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    with platform.db.reader() as session:
        return {"data": asset_view(get_asset(session, asset_id))}


class InputInfoList(BaseModel):
    data: list[InputInfo]


@router.get("/assets/{asset_id}/input-info", response_model=InputInfoList,
            responses=error_responses(*AUTHENTICATED, 404, 412))
def get_input_info(asset_id: str, platform: PlatformDep, token: CurrentToken) -> InputInfoList:
    """Mux's input info: the stored source's container and tracks (read from the stored bytes)."""
    with platform.db.reader() as session:
        asset = get_asset(session, asset_id)
        session.expunge(asset)
    return InputInfoList(data=input_info(platform.store, asset, platform.settings.limits))


@router.patch("/assets/{asset_id}", response_model=AssetEnvelope, responses=error_responses(*AUTHENTICATED, 404))
def update(asset_id: str, body: AssetUpdate, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Change ``passthrough`` and/or ``meta`` (fields left out stay as they are)."""
    with platform.db.session() as session:
        asset = get_asset(session, asset_id, for_update=True)
        changes = body.model_dump(exclude_unset=True, exclude_none=False)
        if "passthrough" in changes:
            asset.passthrough = changes["passthrough"]
        if "meta" in changes:
            asset.meta = body.meta.model_dump(exclude_none=True) if body.meta else {}
        asset.updated_at = utcnow()
        session.flush()
        view = asset_view(asset)
        emit(session, "video.asset.updated", "asset", asset.id, view)
        return {"data": view}


@router.delete("/assets/{asset_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(asset_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the asset and its stored input and media (a running transcode stops)."""
    remove_asset(platform, asset_id)
    return Response(status_code=204)


@router.post("/assets/{asset_id}/playback-ids", status_code=201, response_model=PlaybackIdEnvelope,
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def add_playback_id(asset_id: str, platform: PlatformDep, token: CurrentToken,
                    body: Annotated[PlaybackIdCreate | None, Body()] = None) -> dict[str, Any]:
    with platform.db.session() as session:
        asset = get_asset(session, asset_id, for_update=True)
        playback = create_playback_id(session, asset, (body or PlaybackIdCreate()).policy)
        emit(session, "video.asset.updated", "asset", asset.id, asset_view(asset))
        return {"data": playback_id_view(playback)}


@router.get("/assets/{asset_id}/playback-ids", response_model=PlaybackIdList,
            responses=error_responses(*AUTHENTICATED, 404))
def list_playback_ids(asset_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    with platform.db.reader() as session:
        return {"data": [playback_id_view(p) for p in get_asset(session, asset_id).playback_ids]}


def _playback(session: Any, asset_id: str, playback_id: str) -> PlaybackId:
    playback = session.get(PlaybackId, playback_id) if is_valid_id(playback_id) else None
    if playback is None or playback.asset_id != asset_id:
        raise NotFoundError(f"no playback id {playback_id!r} on asset {asset_id!r}")
    return playback


@router.get("/assets/{asset_id}/playback-ids/{playback_id}", response_model=PlaybackIdEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def get_playback_id(asset_id: str, playback_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    with platform.db.reader() as session:
        get_asset(session, asset_id)
        return {"data": playback_id_view(_playback(session, asset_id, playback_id))}


@router.delete("/assets/{asset_id}/playback-ids/{playback_id}", status_code=204,
               responses=error_responses(*AUTHENTICATED, 404))
def delete_playback_id(asset_id: str, playback_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    with platform.db.session() as session:
        asset = get_asset(session, asset_id, for_update=True)
        session.delete(_playback(session, asset_id, playback_id))
        asset.updated_at = utcnow()
        session.flush()
        session.refresh(asset)
        emit(session, "video.asset.updated", "asset", asset.id, asset_view(asset))
    return Response(status_code=204)


@router.get("/playback-ids/{playback_id}", response_model=PlaybackIdTarget,
            responses=error_responses(*AUTHENTICATED, 404))
def lookup_playback_id(playback_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """The asset or live stream a playback id points to (Mux: ``object: {type: "asset"|"live_stream", id}``)."""
    with platform.db.reader() as session:
        playback = session.get(PlaybackId, playback_id) if is_valid_id(playback_id) else None
        if playback is not None:
            return {"data": {**playback_id_view(playback), "object": {"type": "asset", "id": playback.asset_id}}}
        live = session.get(LiveStreamPlaybackId, playback_id) if is_valid_id(playback_id) else None
        if live is None:
            raise NotFoundError(f"no playback id {playback_id[:80]!r}")
        return {"data": {**live_playback_id_view(live),
                         "object": {"type": "live_stream", "id": live.live_stream_id}}}
