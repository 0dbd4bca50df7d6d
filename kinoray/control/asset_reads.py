"""Assets read to be shown: the reads clients poll (``GET /video/v1/assets/{id}``, ``GET /video/v1/assets``) with
SQLAlchemy Core, into plain rows.

An ORM load of an asset with its joined playback ids, upload and static renditions cost more than its SQL (an
identity map, instance state, collection bookkeeping per row): these reads select the columns the view shows
into plain rows (:class:`AssetRow`, the attributes of an ORM :class:`~kinoray.store.models.Asset` the view reads),
and :func:`~kinoray.control.assets.asset_view` builds the one :class:`~kinoray.control.views.AssetView` from
either. Everything that writes keeps the ORM (:func:`~kinoray.control.assets.get_asset`).

Each read takes a :meth:`~kinoray.store.db.Database.read_connection` (no ORM session). A Core statement gets none
of the ORM's environment criteria (:mod:`kinoray.store.scoping`): on a scoped connection each read here runs its
statement with :func:`~kinoray.store.scoping.own_criterion` on the assets table, which is
what the ORM adds to an asset read; the children are joined by the asset's id.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kinoray.control.assets import asset_view
from kinoray.control.lookup import not_found, require_id
from kinoray.control.views import AssetView
from kinoray.errors import InvalidParametersError
from kinoray.store.db import newest_first_params, newest_first_select, page_and_cursor
from kinoray.store.models import (
    Asset,
    AssetStatus,
    PlaybackId,
    PlaybackPolicy,
    StaticRendition,
    StaticRenditionStatus,
    Upload,
    is_valid_id,
)
from kinoray.store.scoping import ENVIRONMENT_PARAM, environment_of, own_criterion

__all__ = ["AssetRow", "PlaybackIdRow", "StaticRenditionRow", "UploadRow", "read_asset", "read_assets"]


@dataclass(frozen=True, slots=True)
class PlaybackIdRow:
    id: str
    policy: PlaybackPolicy


@dataclass(frozen=True, slots=True)
class StaticRenditionRow:
    id: str
    name: str
    resolution: str
    legacy: bool
    status: StaticRenditionStatus
    passthrough: str | None
    width: int | None
    height: int | None
    bitrate: int | None
    filesize: int | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class UploadRow:
    id: str


@dataclass(slots=True)
class AssetRow:
    """An asset's columns as a view shows them, its children added as the rows that join them are read."""

    id: str
    status: AssetStatus
    created_at: datetime
    updated_at: datetime
    duration: float | None
    aspect_ratio: str | None
    resolution_tier: str | None
    max_stored_frame_rate: float | None
    tracks: list[dict[str, Any]]
    create_settings: dict[str, Any]
    mp4_support: str | None
    master_status: str | None
    master_url: str | None
    master_expires_at: datetime | None
    source_asset_id: str | None
    live_stream_id: str | None
    progress_state: str
    progress_fraction: float
    passthrough: str | None
    meta: dict[str, Any]
    errors: dict[str, Any] | None
    video_codec: str | None
    encoder_backend: str | None
    upload: UploadRow | None = None
    playback_ids: list[PlaybackIdRow] = field(default_factory=list)
    static_files: list[StaticRenditionRow] = field(default_factory=list)


_assets = Asset.__table__
_playback_ids = PlaybackId.__table__
_renditions = StaticRendition.__table__
_uploads = Upload.__table__


def _columns(table: sa.FromClause, row: type) -> list[sa.ColumnElement[Any]]:
    """``table``'s columns named by the dataclass ``row``'s fields without a default, in field order: what
    ``row(*selected)`` is built from."""
    return [table.c[item.name] for item in fields(row) if item.default is MISSING and item.default_factory is MISSING]


_ASSET = _columns(_assets, AssetRow)
_PLAYBACK_ID = _columns(_playback_ids, PlaybackIdRow)
_RENDITION = _columns(_renditions, StaticRenditionRow)
#: Where each part of a joined row starts: the asset's columns, the upload's id, a playback id's, a rendition's.
_UPLOAD_AT = len(_ASSET)
_PLAYBACK_AT = _UPLOAD_AT + 1
_RENDITION_AT = _PLAYBACK_AT + len(_PLAYBACK_ID)


def _asset_row(row: Sequence[Any]) -> AssetRow:
    asset = AssetRow(*row[:_UPLOAD_AT])
    if row[_UPLOAD_AT] is not None:
        asset.upload = UploadRow(row[_UPLOAD_AT])
    return asset


def _add_children(asset: AssetRow, row: Sequence[Any], playback_seen: set[str], renditions_seen: set[str]) -> None:
    """The playback id and static rendition of one joined row, each kept once (the join repeats them)."""
    if row[_PLAYBACK_AT] is not None and row[_PLAYBACK_AT] not in playback_seen:
        playback_seen.add(row[_PLAYBACK_AT])
        asset.playback_ids.append(PlaybackIdRow(*row[_PLAYBACK_AT:_RENDITION_AT]))
    if len(row) > _RENDITION_AT and row[_RENDITION_AT] is not None and row[_RENDITION_AT] not in renditions_seen:
        renditions_seen.add(row[_RENDITION_AT])
        asset.static_files.append(StaticRenditionRow(*row[_RENDITION_AT:]))


# The statements, built once with bound parameters for what varies (their cache keys too): building a select of
# some forty columns cost more than running it. Each comes scoped (an environment's own rows) and unscoped.
_WITH_PLAYBACK_IDS = (_assets.outerjoin(_uploads, _uploads.c.asset_id == _assets.c.id)
                      .outerjoin(_playback_ids, _playback_ids.c.asset_id == _assets.c.id))
_ONE = (sa.select(*_ASSET, _uploads.c.id, *_PLAYBACK_ID, *_RENDITION)
        .select_from(_WITH_PLAYBACK_IDS.outerjoin(_renditions, _renditions.c.asset_id == _assets.c.id))
        .where(_assets.c.id == sa.bindparam("asset_id"))
        .order_by(_playback_ids.c.created_at, _renditions.c.created_at))
_ONE_SCOPED = _ONE.where(own_criterion(_assets))
_PAGE_RENDITIONS = (sa.select(_renditions.c.asset_id, *_RENDITION)
                    .where(_renditions.c.asset_id.in_(sa.bindparam("asset_ids", expanding=True)))
                    .order_by(_renditions.c.created_at))


@functools.cache
def _page_statement(*, scoped: bool, keyset: bool, by_upload: bool) -> sa.Select[Any]:
    """A page's assets (their ids a subquery: newest first, after a cursor or at an offset, of one environment,
    of one upload) joined with their upload and playback ids."""
    where = [own_criterion(_assets)] if scoped else []
    if by_upload:
        where.append(_assets.c.id == sa.select(_uploads.c.asset_id).where(_uploads.c.id == sa.bindparam("upload_id"))
                     .scalar_subquery())
    ids = newest_first_select(sa.select(_assets.c.id).where(*where), _assets, keyset=keyset)
    return (sa.select(*_ASSET, _uploads.c.id, *_PLAYBACK_ID).select_from(_WITH_PLAYBACK_IDS)
            .where(_assets.c.id.in_(ids))
            .order_by(_assets.c.created_at.desc(), _assets.c.id.desc(), _playback_ids.c.created_at))


def read_asset(connection: Connection, asset_id: str) -> AssetView:
    """``GET /video/v1/assets/{id}``: the asset as :func:`~kinoray.control.assets.asset_view` shows it, in one
    SELECT joining its upload, playback ids and static renditions (a row per playback id × rendition).

    Raises:
        NotFoundError: no such asset in the connection's environment (also for ids that cannot be ours).
    """
    require_id(asset_id, what="asset")
    environment_id = environment_of(connection)
    rows = connection.execute(_ONE if environment_id is None else _ONE_SCOPED,
                              {"asset_id": asset_id, ENVIRONMENT_PARAM: environment_id}).all()
    if not rows:
        raise not_found(asset_id, what="asset")
    asset = _asset_row(rows[0])
    playback_seen: set[str] = set()
    renditions_seen: set[str] = set()
    for row in rows:
        _add_children(asset, row, playback_seen, renditions_seen)
    return asset_view(asset)


def read_assets(connection: Connection, *, limit: int, page: int = 1, cursor: str | None = None,
                upload_id: str | None = None) -> tuple[list[AssetView], str | None]:
    """``GET /video/v1/assets``: one page of assets, newest first (``cursor``, else Mux's numbered ``page``), and
    the next page's cursor; ``upload_id`` keeps the asset made from that upload. Two SELECTs: the page's assets
    joined with their upload and playback ids, then their static renditions (joining those too would multiply
    a page's rows by playback ids × renditions).

    Raises:
        InvalidParametersError: a cursor that is not one of ours.
    """
    if upload_id is not None and not is_valid_id(upload_id):
        return [], None
    try:
        params = newest_first_params(limit=limit, cursor=cursor, page=page)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None
    environment_id = environment_of(connection)
    query = _page_statement(scoped=environment_id is not None, keyset=cursor is not None,
                            by_upload=upload_id is not None)
    assets: dict[str, AssetRow] = {}
    playback_seen: set[str] = set()
    for row in connection.execute(query, {**params, ENVIRONMENT_PARAM: environment_id, "upload_id": upload_id}):
        asset = assets.get(row[0])
        if asset is None:
            asset = assets[row[0]] = _asset_row(row)
        _add_children(asset, row, playback_seen, set())
    rows, next_cursor = page_and_cursor(list(assets.values()), limit)
    if rows:
        for asset_id, *rendition in connection.execute(_PAGE_RENDITIONS,
                                                       {"asset_ids": [asset.id for asset in rows]}):
            assets[asset_id].static_files.append(StaticRenditionRow(*rendition))
    return [asset_view(asset) for asset in rows], next_cursor
