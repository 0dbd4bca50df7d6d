"""An asset's downloads, Mux-shaped: static renditions (``/video/v1/assets/{id}/static-renditions``), the legacy
``PUT …/mp4-support`` and ``PUT …/master-access``. The files are made by the runner
(:mod:`kinoray.control.static_renditions`) and opened by the master's capability URL (:mod:`kinoray.control.master`).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from kinoray.control.assets import asset_view, get_asset
from kinoray.control.master import MasterAccessUpdate, set_master_access
from kinoray.control.platform import Platform
from kinoray.control.static_renditions import (
    Mp4SupportUpdate,
    StaticRenditionCreate,
    add_static_rendition,
    delete_static_rendition,
    rendition_view,
    set_mp4_support,
)
from kinoray.control.views import AssetView, StaticRenditionView
from kinoray.errors import KinorayError
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, Envelope, error_responses

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/video/v1/assets/{asset_id}", tags=["assets"], route_class=IdempotentRoute)


def _remove_files(platform: Platform, keys: list[str], asset_id: str) -> None:
    for key in keys:
        try:
            platform.store.delete(key)
        except KinorayError as error:  # the row is gone already: the file is unreachable, only its bytes stay
            log.warning("could not remove a static rendition's file",
                        extra={"asset": asset_id, "key": key, "error": str(error)[:300]})


@router.post("/static-renditions", status_code=201, response_model=Envelope[StaticRenditionView],
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def create_static_rendition(asset_id: str, body: StaticRenditionCreate, platform: PlatformDep,
                            token: CurrentToken) -> Envelope[StaticRenditionView]:
    """Ask for an MP4 (``highest`` or a resolution) or ``audio-only`` M4A of a preparing or ready asset; it is
    ``preparing`` until the runner has made it (or skipped it: a resolution the asset does not have)."""
    with platform.db.session() as session:
        asset = get_asset(session, asset_id, for_update=True)
        return Envelope(data=rendition_view(add_static_rendition(session, asset, body)))


@router.delete("/static-renditions/{rendition_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def remove_static_rendition(asset_id: str, rendition_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the rendition and its file (its URL answers 404)."""
    with platform.db.session() as session:
        key = delete_static_rendition(session, get_asset(session, asset_id, for_update=True), rendition_id)
    _remove_files(platform, [key] if key else [], asset_id)
    return Response(status_code=204)


@router.put("/mp4-support", response_model=Envelope[AssetView], responses=error_responses(*AUTHENTICATED, 404, 409))
def update_mp4_support(asset_id: str, body: Mp4SupportUpdate, platform: PlatformDep,
                       token: CurrentToken) -> Envelope[AssetView]:
    """Mux's deprecated switch: make the legacy MP4s it names, or remove them (``none``)."""
    with platform.db.session() as session:
        asset = get_asset(session, asset_id, for_update=True)
        removed = set_mp4_support(session, asset, body.mp4_support)
        view = asset_view(asset)
    _remove_files(platform, removed, asset_id)
    return Envelope(data=view)


@router.put("/master-access", response_model=Envelope[AssetView], responses=error_responses(*AUTHENTICATED, 404, 409))
def update_master_access(asset_id: str, body: MasterAccessUpdate, platform: PlatformDep,
                         token: CurrentToken) -> Envelope[AssetView]:
    """``temporary``: a download URL of the original input (``master.url``) for ``api.master_access_seconds``
    once the asset is ready; ``none`` removes it."""
    with platform.db.session() as session:
        asset = get_asset(session, asset_id, for_update=True)
        set_master_access(session, asset, body.master_access, platform.settings)
        return Envelope(data=asset_view(asset))
