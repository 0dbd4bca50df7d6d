"""Static renditions (Mux's MP4/M4A downloads) and the legacy ``mp4_support`` switch, Ray- and HTTP-free.

Each rendition is a :class:`~kinoray.store.models.StaticRendition` row, its file ``assets/<id>/media/<name>``,
served at ``/{playback_id}/<name>`` while the row is ``ready``. Lifecycle::

    requested (create, POST …/static-renditions, PUT …/mp4-support)  ── preparing  (…static_rendition.created)
    asset ready: the runner claims it under a lease (StaticRenditionWork) ─┬─ ready    (…static_rendition.ready)
                                                                          ├─ skipped  (…static_rendition.skipped)
                                                                          └─ errored  (…static_rendition.errored)
    asset errored ── errored;   DELETE …/static-renditions/{id} ── row and file gone (…static_rendition.deleted)

Files are remuxed, never re-encoded (:mod:`kinoray.media.static`): a rendition is one of the asset's packaged
rungs plus its audio. A resolution above the asset's top rung, a named resolution kinoray's ladder did not make
(``540p``, ``270p`` with the default ladder), a video rendition of an audio-only asset and ``audio-only`` of a
video-only asset are ``skipped`` (Mux: the request conflicts with the asset), with the reason in
``kinoray_reason``. A claim that outlives its runner's lease is taken again by the next claim; after
``jobs.max_attempts`` claims it is ``errored``, so no rendition stays ``preparing`` once its asset is ready.

Legacy ``mp4_support`` (Mux's deprecated switch) maps onto the same rows, flagged ``legacy``, made when the asset
is ready (which files depend on its tracks): ``capped-1080p`` → ``capped-1080p.mp4`` (the largest rung up to
1080p with the audio; ``audio.m4a`` for an audio-only asset); ``audio-only`` → ``audio.m4a`` (``errored`` for a
video-only asset, as Mux); ``audio-only,capped-1080p`` → both (what the asset's tracks allow); ``standard`` →
``high.mp4`` (largest rung up to 1080p), ``medium.mp4`` (largest up to 720p, below high) and ``low.mp4`` (largest
up to 360p, below medium), each ``skipped`` when no smaller rung is left (``audio.m4a`` for an audio-only asset);
``none`` removes the legacy files only.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.orm import Session

from kinoray.control.events import emit
from kinoray.control.requests import RequestModel
from kinoray.control.views import StaticRenditionEventData, StaticRenditionsView, StaticRenditionView
from kinoray.errors import ConflictError, InvalidParametersError, KinorayError, NotFoundError
from kinoray.settings import Settings
from kinoray.store import keys
from kinoray.store.db import Database
from kinoray.store.models import (
    Asset,
    AssetStatus,
    StaticRendition,
    StaticRenditionStatus,
    is_valid_id,
    new_id,
    utcnow,
)
from kinoray.store.objects import ObjectStore

if TYPE_CHECKING:
    from kinoray.control.asset_reads import AssetRow, StaticRenditionRow

__all__ = [
    "MP4_SUPPORT",
    "RESOLUTIONS",
    "STATIC_NAMES",
    "Mp4SupportUpdate",
    "Produced",
    "RenditionTask",
    "StaticRenditionCreate",
    "StaticRenditionView",
    "StaticRenditionWork",
    "add_static_rendition",
    "delete_static_rendition",
    "discard",
    "fail_static_renditions",
    "produce",
    "rendition_name",
    "rendition_view",
    "renditions_ready",
    "set_mp4_support",
    "static_renditions_view",
]

log = logging.getLogger(__name__)

Resolution = Literal["highest", "audio-only", "2160p", "1440p", "1080p", "720p", "540p", "480p", "360p", "270p"]
#: Mux's static rendition resolutions.
RESOLUTIONS: tuple[str, ...] = ("highest", "audio-only", "2160p", "1440p", "1080p", "720p", "540p", "480p", "360p",
                                "270p")
Mp4Support = Literal["none", "standard", "capped-1080p", "audio-only", "audio-only,capped-1080p"]
MP4_SUPPORT: tuple[str, ...] = ("none", "standard", "capped-1080p", "audio-only", "audio-only,capped-1080p")
#: Legacy renditions: stored ``resolution`` → (file name, largest short side it may use).
_LEGACY = {"capped-1080p": ("capped-1080p.mp4", 1080), "high": ("high.mp4", 1080), "medium": ("medium.mp4", 720),
           "low": ("low.mp4", 360)}
_AUDIO = "audio.m4a"
#: Every file name a static rendition can have (Mux's list): the edge serves nothing else under a playback id.
STATIC_NAMES: tuple[str, ...] = ("highest.mp4", _AUDIO, *(name for name, _ in _LEGACY.values()),
                                 *(f"{resolution}.mp4" for resolution in RESOLUTIONS[2:]))
#: Files the pipeline itself writes and uses (images read ``highest.mp4``): a deleted rendition leaves them.
_PIPELINE_FILES = (keys.HIGHEST_MP4,)
_RUNG_INIT = re.compile(r"(?P<rung>[1-9][0-9]{1,3})p/init\.mp4")

_TIERS = (("720p", 720), ("1080p", 1080), ("1440p", 1440))


def rendition_name(resolution: str) -> str:
    """The file a resolution makes: ``highest.mp4``, ``audio.m4a``, ``720p.mp4``, or a legacy name."""
    if resolution in _LEGACY:
        return _LEGACY[resolution][0]
    return {"highest": "highest.mp4", "audio-only": _AUDIO}.get(resolution, f"{resolution}.mp4")


class StaticRenditionCreate(RequestModel):
    """``POST /video/v1/assets/{id}/static-renditions`` (and an entry of ``static_renditions`` at create)."""

    resolution: Resolution
    passthrough: str | None = Field(default=None, max_length=255)


class Mp4SupportUpdate(RequestModel):
    """``PUT /video/v1/assets/{id}/mp4-support`` (Mux's deprecated switch)."""

    mp4_support: Mp4Support


# --- views ---------------------------------------------------------------------------------------------------


def _tier(short_side: int) -> str:
    return next((tier for tier, limit in _TIERS if short_side <= limit), "2160p")


def rendition_view(row: StaticRendition | StaticRenditionRow) -> StaticRenditionView:
    """One file as Mux shows it (``StaticRendition``); kinoray's reason for a skip or error in
    ``kinoray_reason``."""
    audio = row.name == _AUDIO
    # Mux: resolution is "only valid for static_renditions, not for mp4_support"
    resolution = ("audio-only" if audio else None) if row.legacy else row.resolution
    tier = _tier(min(row.width, row.height)) if row.width and row.height else "audio-only" if audio else None
    return StaticRenditionView.model_validate({
        "id": row.id, "type": "standard" if row.legacy or resolution in ("highest", "audio-only") else "advanced",
        "status": row.status.value, "resolution": resolution, "name": row.name, "ext": row.name.rsplit(".", 1)[-1],
        "passthrough": row.passthrough, "width": row.width or None, "height": row.height or None,
        "resolution_tier": tier, "bitrate": row.bitrate,
        "filesize": str(row.filesize) if row.filesize is not None else None,
        "kinoray_reason": row.reason if row.status in (StaticRenditionStatus.SKIPPED, StaticRenditionStatus.ERRORED)
        else None})


def static_renditions_view(asset: Asset | AssetRow) -> StaticRenditionsView | None:
    """Mux's ``static_renditions`` (``{"status", "files"}``); ``None`` when the asset has none and none pending.
    ``preparing`` while any file is (or, for legacy ``mp4_support``, the asset still is), else ``ready`` when any
    file is, ``errored`` when one errored, else ``disabled``."""
    rows: list[StaticRendition | StaticRenditionRow] = list(asset.static_files)
    pending = asset.status == AssetStatus.PREPARING and (asset.mp4_support or "none") != "none"
    if not rows and not pending:
        return None
    statuses = {row.status for row in rows}
    if pending or StaticRenditionStatus.PREPARING in statuses:
        status = "preparing"
    elif StaticRenditionStatus.READY in statuses:
        status = "ready"
    elif StaticRenditionStatus.ERRORED in statuses:
        status = "errored"
    else:
        status = "disabled"
    return StaticRenditionsView.model_validate({"status": status, "files": [rendition_view(row) for row in rows]})


def event_data(row: StaticRendition, asset_id: str) -> StaticRenditionEventData:
    """A ``video.asset.static_rendition.*`` event's ``data``."""
    return StaticRenditionEventData.model_validate({**rendition_view(row).model_dump(), "asset_id": asset_id})


def _event(session: Session, kind: str, row: StaticRendition) -> None:
    emit(session, f"video.asset.static_rendition.{kind}", "asset", row.asset_id, event_data(row, row.asset_id))


# --- requests ------------------------------------------------------------------------------------------------


def _add(session: Session, asset: Asset, resolution: str, passthrough: str | None, *, legacy: bool,
         status: StaticRenditionStatus = StaticRenditionStatus.PREPARING, reason: str | None = None
         ) -> StaticRendition:
    row = StaticRendition(id=new_id(), asset_id=asset.id, name=rendition_name(resolution), resolution=resolution,
                          legacy=legacy, passthrough=passthrough, status=status, reason=reason)
    session.add(row)
    asset.static_files.append(row)
    session.flush()
    _event(session, "created", row)
    if status != StaticRenditionStatus.PREPARING:
        _event(session, status.value, row)
    return row


def add_static_rendition(session: Session, asset: Asset, create: StaticRenditionCreate) -> StaticRendition:
    """A new ``preparing`` rendition of ``asset`` (preparing or ready) and its ``created`` event; the runner makes
    the file once the asset is ready.

    Raises:
        ConflictError: the asset errored, or already has a file of that name.
    """
    if asset.status == AssetStatus.ERRORED:
        raise ConflictError("the asset errored: it has no media to make a static rendition from")
    name = rendition_name(create.resolution)
    if any(row.name == name for row in asset.static_files):
        raise ConflictError(f"the asset already has a static rendition {name}; delete it first")
    row = _add(session, asset, create.resolution, create.passthrough, legacy=False)
    asset.updated_at = utcnow()
    return row


def delete_static_rendition(session: Session, asset: Asset, rendition_id: str) -> str | None:
    """Delete the rendition and emit ``deleted``; the storage key to remove after the commit (``None`` for a
    file the pipeline keeps for itself).

    Raises:
        NotFoundError: no such rendition on this asset.
    """
    row = next((row for row in asset.static_files if row.id == rendition_id), None) \
        if is_valid_id(rendition_id) else None
    if row is None:
        raise NotFoundError(f"no static rendition {rendition_id[:64]!r} on this asset")
    return _remove(session, asset, row)


def _remove(session: Session, asset: Asset, row: StaticRendition) -> str | None:
    view = event_data(row, asset.id)
    asset.static_files.remove(row)
    session.delete(row)
    asset.updated_at = utcnow()
    session.flush()
    emit(session, "video.asset.static_rendition.deleted", "asset", asset.id, view)
    return None if row.name in _PIPELINE_FILES else _file_key(asset, row.name)


def _file_key(asset: Asset, name: str) -> str:
    return keys.media_key(asset.id, name, asset.storage_prefix)


def _tracks(asset: Asset) -> tuple[bool, bool]:
    kinds = {track.get("type") for track in asset.tracks or ()}
    return "video" in kinds, "audio" in kinds


def _legacy_resolutions(setting: str, *, has_video: bool, has_audio: bool) -> list[str]:
    """The legacy renditions ``mp4_support = setting`` makes on an asset with these tracks."""
    if setting == "none":
        return []
    if not has_video:  # an audio-only asset gets audio.m4a whatever was asked
        return ["audio-only"]
    wanted = []
    if setting == "standard":
        wanted = ["high", "medium", "low"]
    if "capped-1080p" in setting:
        wanted.append("capped-1080p")
    if "audio-only" in setting and (has_audio or setting == "audio-only"):
        wanted.append("audio-only")
    return wanted


def set_mp4_support(session: Session, asset: Asset, setting: str) -> list[str]:
    """Record ``setting`` as the asset's ``mp4_support``; on a ready asset, make the legacy renditions it asks for
    and delete the legacy ones it no longer does. Returns the storage keys to remove after the commit.

    Raises:
        ConflictError: the asset errored.
    """
    if setting not in MP4_SUPPORT:
        raise InvalidParametersError(f"mp4_support must be one of {', '.join(MP4_SUPPORT)}")
    if asset.status == AssetStatus.ERRORED and setting != "none":
        raise ConflictError("the asset errored: it has no media to make MP4s from")
    asset.mp4_support = setting
    asset.updated_at = utcnow()
    removed: list[str] = []
    if asset.status == AssetStatus.READY or setting == "none":
        removed = _sync_legacy(session, asset)
    return removed


def _sync_legacy(session: Session, asset: Asset) -> list[str]:
    has_video, has_audio = _tracks(asset)
    wanted = _legacy_resolutions(asset.mp4_support or "none", has_video=has_video, has_audio=has_audio) \
        if asset.status == AssetStatus.READY else []
    names = {rendition_name(resolution) for resolution in wanted}
    removed = []
    for row in list(asset.static_files):
        if row.legacy and row.name not in names:
            key = _remove(session, asset, row)
            if key is not None:
                removed.append(key)
    present = {row.name for row in asset.static_files}
    for resolution in wanted:
        if rendition_name(resolution) not in present:
            _add(session, asset, resolution, None, legacy=True)
    return removed


def renditions_ready(session: Session, asset: Asset) -> None:
    """The asset just became ready (the publish transaction): make its legacy ``mp4_support`` renditions. Its
    ``preparing`` renditions are now the runner's to claim."""
    if (asset.mp4_support or "none") != "none":
        _sync_legacy(session, asset)


def fail_static_renditions(session: Session, asset: Asset, message: str) -> None:
    """The asset errored (its fail transaction): every ``preparing`` rendition is ``errored``, with its event."""
    for row in asset.static_files:
        if row.status == StaticRenditionStatus.PREPARING:
            row.status, row.reason, row.owner, row.lease_expires_at = (StaticRenditionStatus.ERRORED,
                                                                       f"the asset errored: {message}", None, None)
            session.flush()
            _event(session, "errored", row)


# --- the work ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenditionTask:
    """A claimed rendition: what :func:`produce` needs."""

    id: str
    asset_id: str
    name: str
    resolution: str
    legacy: bool
    media_prefix: str  # "assets/<id>/media"
    attempt: int


@dataclass(frozen=True)
class Produced:
    """How :func:`produce` ended: ``ready`` with the file's facts, or ``skipped``/``errored`` with a reason."""

    status: StaticRenditionStatus
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    bitrate: int | None = None
    filesize: int | None = None


class StaticRenditionWork:
    """Claims, lease renewals and finishes of static renditions for runner ``owner`` (each one transaction;
    wrap in :func:`kinoray.control.jobs.retry_transient` for transient database errors). A claim takes a
    ``preparing`` rendition of a ready asset that no live runner holds (no owner, or its lease ran out); every
    write the owner makes is fenced on ``owner = me`` and ``preparing``."""

    def __init__(self, db: Database, settings: Settings, *, owner: str, clock: Callable[[], float] = time.time
                 ) -> None:
        self.db, self.settings, self.owner, self.clock = db, settings, owner, clock

    def _claimable(self, now: float) -> sa.ColumnElement[bool]:
        return sa.and_(StaticRendition.status == StaticRenditionStatus.PREPARING,
                       sa.or_(StaticRendition.owner.is_(None), StaticRendition.lease_expires_at.is_(None),
                              StaticRendition.lease_expires_at < now))

    def claim(self, limit: int) -> list[RenditionTask]:
        """Up to ``limit`` renditions, oldest first; one claimed ``jobs.max_attempts`` times already is
        ``errored`` instead."""
        if limit <= 0:
            return []
        with self.db.reader() as session:
            candidates = list(session.scalars(
                sa.select(StaticRendition.id).join(Asset, Asset.id == StaticRendition.asset_id)
                .where(self._claimable(self.clock()), Asset.status == AssetStatus.READY)
                .order_by(StaticRendition.created_at, StaticRendition.id).limit(limit)))
        claimed = []
        for rendition_id in candidates:
            task = self._claim_one(rendition_id)
            if task is not None:
                claimed.append(task)
        return claimed

    def _claim_one(self, rendition_id: str) -> RenditionTask | None:
        now = self.clock()
        with self.db.session() as session:
            result = session.execute(
                sa.update(StaticRendition).where(StaticRendition.id == rendition_id, self._claimable(now))
                .values(owner=self.owner, lease_expires_at=now + self.settings.jobs.lease_seconds,
                        attempts=StaticRendition.attempts + 1, updated_at=utcnow())
                .execution_options(synchronize_session=False))
            if not getattr(result, "rowcount", 0):
                return None
            row = session.get_one(StaticRendition, rendition_id)
            if row.attempts > self.settings.jobs.max_attempts:
                self._finish_row(session, row, Produced(
                    StaticRenditionStatus.ERRORED,
                    f"interrupted {row.attempts - 1} times (its runner stopped answering); giving up"))
                return None
            asset = session.get_one(Asset, row.asset_id)
            return RenditionTask(id=row.id, asset_id=row.asset_id, name=row.name, resolution=row.resolution,
                                 legacy=row.legacy, attempt=row.attempts,
                                 media_prefix=keys.media_prefix(asset.id, asset.storage_prefix))

    def heartbeat(self, ids: Collection[str]) -> set[str]:
        """Renew the leases of ``ids``; those still ours (the others were deleted or taken over)."""
        kept: set[str] = set()
        if not ids:
            return kept
        lease = self.clock() + self.settings.jobs.lease_seconds
        with self.db.session() as session:
            for rendition_id in sorted(ids):
                result = session.execute(
                    sa.update(StaticRendition).where(self._ours(rendition_id)).values(lease_expires_at=lease)
                    .execution_options(synchronize_session=False))
                if getattr(result, "rowcount", 0):
                    kept.add(rendition_id)
        return kept

    def _ours(self, rendition_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(StaticRendition.id == rendition_id, StaticRendition.owner == self.owner,
                       StaticRendition.status == StaticRenditionStatus.PREPARING)

    def finish(self, rendition_id: str, produced: Produced) -> bool:
        """Write the outcome and emit its event, one transaction; ``False``: the rendition is gone or no longer
        ours (nothing written: the caller removes the file it made, unless another runner now owns it)."""
        with self.db.session() as session:
            row = session.scalars(sa.select(StaticRendition).where(self._ours(rendition_id))
                                  .with_for_update()).first()
            if row is None:
                return False
            self._finish_row(session, row, produced)
        log.info("static rendition finished", extra={"rendition": rendition_id, "status": produced.status.value})
        return True

    @staticmethod
    def _finish_row(session: Session, row: StaticRendition, produced: Produced) -> None:
        row.status, row.reason = produced.status, produced.reason
        row.width, row.height, row.bitrate, row.filesize = (produced.width, produced.height, produced.bitrate,
                                                            produced.filesize)
        row.owner = row.lease_expires_at = None
        row.updated_at = utcnow()
        session.flush()
        _event(session, produced.status.value, row)

    def exists(self, rendition_id: str) -> bool:
        with self.db.reader() as session:
            return session.get(StaticRendition, rendition_id) is not None


def _choose(task: RenditionTask, rungs: list[int], has_audio: bool) -> tuple[int | None, bool] | str:
    """``(rung short side or None, with audio)`` for the task, or why it is skipped."""
    if task.resolution == "audio-only":
        return (None, True) if has_audio else "the asset has no audio track"
    if not rungs:
        return "the asset has no video (an audio-only asset has audio.m4a only)"
    if task.resolution == "highest":
        return rungs[0], has_audio
    if task.resolution in _LEGACY:
        order = ["high", "medium", "low"] if task.resolution in ("high", "medium", "low") else [task.resolution]
        above: int | None = None
        for name in order[:order.index(task.resolution) + 1]:
            cap = _LEGACY[name][1]
            fits = [rung for rung in rungs if rung <= cap and (above is None or rung < above)]
            if not fits:
                return f"no rung of the asset fits {task.name} (rungs {', '.join(f'{r}p' for r in rungs)})"
            above = fits[0]
        return above, has_audio
    wanted = int(task.resolution.removesuffix("p"))
    if wanted > rungs[0]:
        return f"{task.resolution} is above the asset's top rendition ({rungs[0]}p); nothing is upscaled"
    if wanted not in rungs:
        return (f"the asset has no {task.resolution} rendition to remux (its rungs: "
                f"{', '.join(f'{r}p' for r in rungs)}); kinoray makes static renditions without re-encoding")
    return wanted, has_audio


def _local_track(store: ObjectStore, keys: list[str], track_prefix: str, scratch: Path) -> Path:
    """The packaged track directory ``track_prefix`` as a local directory (downloaded when the store is remote)."""
    if store.is_local:
        return Path(store.path(track_prefix))
    local = scratch / track_prefix.rsplit("/", 1)[-1]
    local.mkdir(parents=True, exist_ok=True)
    for key in keys:
        if key.startswith(track_prefix + "/") and "/" not in key[len(track_prefix) + 1:]:
            store.get_file(key, local / key.rsplit("/", 1)[-1])
    return local


def discard(store: ObjectStore, task: RenditionTask) -> None:
    """Remove the file ``task`` made for a rendition deleted while it was being made (the pipeline's own
    ``highest.mp4`` stays)."""
    if task.name not in _PIPELINE_FILES:
        store.delete(f"{task.media_prefix}/{task.name}")


def produce(store: ObjectStore, task: RenditionTask) -> Produced:
    """Make the task's file from the asset's packaged tracks (or find the one the pipeline already wrote) and
    store it at ``<media prefix>/<name>``. Never raises for bad media or storage: that is an ``errored``
    outcome with the reason."""
    from kinoray.media.static import join_track, probe_static, remux_static

    prefix = task.media_prefix
    try:
        keys = store.list(prefix)
        rungs = sorted({int(match["rung"]) for key in keys
                        if (match := _RUNG_INIT.fullmatch(key.removeprefix(prefix + "/")))}, reverse=True)
        has_audio = f"{prefix}/audio/init.mp4" in keys
        choice = _choose(task, rungs, has_audio)
        if isinstance(choice, str):
            status = StaticRenditionStatus.ERRORED if task.legacy and task.resolution == "audio-only" \
                else StaticRenditionStatus.SKIPPED
            return Produced(status, choice)
        rung, with_audio = choice
        target = f"{prefix}/{task.name}"
        with tempfile.TemporaryDirectory(prefix="kinoray-static-") as scratch_dir:
            scratch = Path(scratch_dir)
            reuse = (task.name in _PIPELINE_FILES and rung == rungs[0] and with_audio == has_audio
                     and target in keys)
            if reuse:  # the pipeline's own highest.mp4: the same remux, already made
                local = Path(store.path(target)) if store.is_local else scratch / task.name
                if not store.is_local:
                    store.get_file(target, local)
            else:
                tracks = []
                if rung is not None:
                    tracks.append(join_track(_local_track(store, keys, f"{prefix}/{rung}p", scratch),
                                             scratch / "video.mp4"))
                if with_audio:
                    tracks.append(join_track(_local_track(store, keys, f"{prefix}/audio", scratch),
                                             scratch / "audio.mp4"))
                local = scratch / task.name
                remux_static(tracks, local)
                store.put_file(local, target)
            facts = probe_static(local)
    except KinorayError as error:
        log.warning("static rendition failed", extra={"rendition": task.id, "error": str(error)[:300]})
        return Produced(StaticRenditionStatus.ERRORED, str(error)[:1000])
    return Produced(StaticRenditionStatus.READY, None, facts.width or None, facts.height or None, facts.bitrate,
                    facts.size)
