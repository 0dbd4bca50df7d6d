"""``/video/v1/assets`` and ``/video/v1/playback-ids``: Mux's asset resource.

Creating an asset validates its input URL against the SSRF policy (:mod:`kinoray.control.urls`) and queues
its transcode; the runner fetches the input and reports progress into the asset. Deleting an asset removes its
stored files; a transcode still running for it stops.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel

from kinoray.control import asset_reads, assets
from kinoray.control.assets import AssetCreate, AssetUpdate, PlaybackIdCreate
from kinoray.control.input_info import InputInfo, input_info
from kinoray.control.platform import Platform
from kinoray.control.views import AssetView, PlaybackIdTargetView, PlaybackIdView
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PageDep, Pagination, PlatformDep, read_database
from kinoray.serve.schemas import AUTHENTICATED, CursorListing, Envelope, Listing, error_responses

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/video/v1", tags=["assets"], route_class=IdempotentRoute)


@router.post("/assets", status_code=201, response_model=Envelope[AssetView],
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def create(body: AssetCreate, platform: PlatformDep, token: CurrentToken) -> Envelope[AssetView]:
    """Create an asset from ``inputs[0].url`` (http, https, s3; file only where enabled), or a clip of a ready
    asset (``mux://assets/{id}`` with ``start_time``/``end_time``)."""
    with platform.db.session() as session:
        return Envelope(data=assets.asset_view(assets.create_asset_from_request(session, platform.settings, body)))


# The two reads clients poll (an asset's status while it transcodes) are async routes that read on the event loop
# (SQLite) or in one worker thread (PostgreSQL): a sync route costs a thread hop, and FastAPI validates its answer
# in another.

@router.get("/assets", response_model=CursorListing[AssetView], responses=error_responses(*AUTHENTICATED))
async def list_assets(platform: PlatformDep, token: CurrentToken, pages: PageDep,
                      upload_id: Annotated[str | None, Query(max_length=64)] = None) -> CursorListing[AssetView]:
    """Newest first. Either ``page`` (offset pages, like Mux) or ``cursor`` (from ``next_cursor``; stable while
    assets are added)."""
    return await read_database(platform, _list_assets, platform, pages, upload_id)


def _list_assets(platform: Platform, pages: Pagination, upload_id: str | None) -> CursorListing[AssetView]:
    with platform.db.read_connection() as connection:
        rows, next_cursor = asset_reads.read_assets(connection, limit=pages.limit, page=pages.page,
                                                    cursor=pages.cursor, upload_id=upload_id)
    return CursorListing(data=rows, next_cursor=next_cursor)


@router.get("/assets/{asset_id}", response_model=Envelope[AssetView], responses=error_responses(*AUTHENTICATED, 404))
async def get(asset_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[AssetView]:
    return await read_database(platform, _get, platform, asset_id)


def _get(platform: Platform, asset_id: str) -> Envelope[AssetView]:
    with platform.db.read_connection() as connection:
        return Envelope(data=asset_reads.read_asset(connection, asset_id))


class InputInfoList(BaseModel):
    data: list[InputInfo]


@router.get("/assets/{asset_id}/input-info", response_model=InputInfoList,
            responses=error_responses(*AUTHENTICATED, 404, 412))
def get_input_info(asset_id: str, platform: PlatformDep, token: CurrentToken) -> InputInfoList:
    """Mux's input info: the stored source's container and tracks (read from the stored bytes)."""
    with platform.db.reader() as session:
        asset = assets.get_asset(session, asset_id)
        session.expunge(asset)
    return InputInfoList(data=input_info(platform.store, asset, platform.settings.limits))


@router.patch("/assets/{asset_id}", response_model=Envelope[AssetView],
              responses=error_responses(*AUTHENTICATED, 404))
def update(asset_id: str, body: AssetUpdate, platform: PlatformDep, token: CurrentToken) -> Envelope[AssetView]:
    """Change ``passthrough`` and/or ``meta`` (fields left out stay as they are)."""
    with platform.db.session() as session:
        return Envelope(data=assets.update_asset(session, asset_id, body))


@router.delete("/assets/{asset_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(asset_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the asset and its stored input and media (a running transcode stops)."""
    assets.remove_asset(platform, asset_id)
    return Response(status_code=204)


@router.post("/assets/{asset_id}/playback-ids", status_code=201, response_model=Envelope[PlaybackIdView],
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def add_playback_id(asset_id: str, platform: PlatformDep, token: CurrentToken,
                    body: Annotated[PlaybackIdCreate | None, Body()] = None) -> Envelope[PlaybackIdView]:
    with platform.db.session() as session:
        return Envelope(data=assets.add_playback_id(session, asset_id, (body or PlaybackIdCreate()).policy))


@router.get("/assets/{asset_id}/playback-ids", response_model=Listing[PlaybackIdView],
            responses=error_responses(*AUTHENTICATED, 404))
def list_playback_ids(asset_id: str, platform: PlatformDep, token: CurrentToken) -> Listing[PlaybackIdView]:
    with platform.db.reader() as session:
        return Listing(data=assets.list_playback_ids(session, asset_id))


@router.get("/assets/{asset_id}/playback-ids/{playback_id}", response_model=Envelope[PlaybackIdView],
            responses=error_responses(*AUTHENTICATED, 404))
def get_playback_id(asset_id: str, playback_id: str, platform: PlatformDep,
                    token: CurrentToken) -> Envelope[PlaybackIdView]:
    with platform.db.reader() as session:
        return Envelope(data=assets.get_playback_id(session, asset_id, playback_id))


@router.delete("/assets/{asset_id}/playback-ids/{playback_id}", status_code=204,
               responses=error_responses(*AUTHENTICATED, 404))
def delete_playback_id(asset_id: str, playback_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    with platform.db.session() as session:
        assets.delete_playback_id(session, asset_id, playback_id)
    return Response(status_code=204)


@router.get("/playback-ids/{playback_id}", response_model=Envelope[PlaybackIdTargetView],
            responses=error_responses(*AUTHENTICATED, 404))
def lookup_playback_id(playback_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[PlaybackIdTargetView]:
    """The asset or live stream a playback id points to (Mux: ``object: {type: "asset"|"live_stream", id}``)."""
    with platform.db.reader() as session:
        return Envelope(data=assets.playback_id_target(session, playback_id))
