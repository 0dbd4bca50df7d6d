"""Master access (Mux's ``master_access: temporary``): a time-limited download of the asset's original input.

kinoray keeps every asset's input as it arrived (``assets/<id>/input``: the fetched URL or the assembled upload;
input info reads it too), so the master is those bytes, not a new encode. Lifecycle::

    temporary (create or PUT …/master-access) ── preparing (video.asset.master.preparing)
        asset ready ── ready, for api.master_access_seconds (Mux: 24 h) (video.asset.master.ready)
        asset errored ── errored (video.asset.master.errored)
    expiry (the runner's sweep) or PUT none ── gone, master_access none (video.asset.master.deleted)

The URL is a capability URL, ``{public_url}/master/{token}``: 256 random bits, looked up by the delivery edge,
which serves the bytes with ``Range`` and refuses the token once it expired (whether or not the sweep ran),
was replaced or removed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.control.events import emit
from kinoray.control.requests import RequestModel
from kinoray.control.views import MasterView
from kinoray.errors import ConflictError, InvalidParametersError, NotFoundError
from kinoray.settings import Settings
from kinoray.store.db import Database
from kinoray.store.models import Asset, AssetStatus, new_secret, utcnow

if TYPE_CHECKING:
    from kinoray.control.asset_reads import AssetRow

__all__ = ["TOKEN_PATTERN", "MasterAccessUpdate", "expire_masters", "fail_master", "master_key", "master_ready",
           "master_view", "set_master_access"]

#: ``new_secret()``: 32 random bytes, URL-safe base64.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


class MasterAccessUpdate(RequestModel):
    """``PUT /video/v1/assets/{id}/master-access``."""

    master_access: Literal["temporary", "none"]


def master_view(asset: Asset | AssetRow, now: datetime | None = None) -> tuple[str, MasterView | None]:
    """``(master_access, master)`` as Mux shows them; an expired download the sweep has not removed yet already
    reads ``none``."""
    if asset.master_status is None or (asset.master_expires_at is not None
                                       and asset.master_expires_at <= (now or utcnow())):
        return "none", None
    return "temporary", MasterView.model_validate(
        {"status": asset.master_status, "url": asset.master_url if asset.master_status == "ready" else None})


def _emit(session: Session, kind: str, asset: Asset) -> None:
    from kinoray.control.assets import asset_view  # assets shows master_view: imported when first used

    session.flush()
    emit(session, f"video.asset.master.{kind}", "asset", asset.id, asset_view(asset))


def _make_ready(asset: Asset, settings: Settings) -> None:
    asset.master_status = "ready"
    asset.master_expires_at = utcnow() + timedelta(seconds=settings.api.master_access_seconds)


def set_master_access(session: Session, asset: Asset, access: str, settings: Settings) -> None:
    """Turn the master download on (a new URL; ``ready`` at once on a ready asset, else when it is) or off.
    Asking again for a download that is preparing or ready keeps it as it is.

    Raises:
        ConflictError: ``temporary`` on an errored asset (it has no usable master), or on a live recording
            made of its live segments without its source (``source_kept`` false in its create settings).
    """
    if access == "none":
        _remove(session, asset)
        return
    if access != "temporary":
        raise InvalidParametersError("master_access must be temporary or none")
    if master_view(asset)[1] is not None:
        return
    if asset.status == AssetStatus.ERRORED:
        raise ConflictError("the asset errored: it has no master to download")
    if (asset.create_settings or {}).get("source_kept") is False:
        raise ConflictError("this live recording kept no source to download: ask for master_access temporary in "
                            "the live stream's new_asset_settings before the broadcast")
    token = new_secret()
    asset.master_access, asset.master_token = "temporary", token
    asset.master_url = f"{settings.public_url}/master/{token}"
    asset.master_status, asset.master_expires_at = "preparing", None
    asset.updated_at = utcnow()
    _emit(session, "preparing", asset)
    if asset.status == AssetStatus.READY:
        _make_ready(asset, settings)
        _emit(session, "ready", asset)


def master_ready(session: Session, asset: Asset, settings: Settings) -> None:
    """The asset just became ready (its publish transaction): a preparing master download opens."""
    if asset.master_status == "preparing":
        _make_ready(asset, settings)
        _emit(session, "ready", asset)


def fail_master(session: Session, asset: Asset) -> None:
    """The asset errored (its fail transaction): a preparing master download errors."""
    if asset.master_status == "preparing":
        asset.master_status, asset.master_url, asset.master_token = "errored", None, None
        _emit(session, "errored", asset)


def _remove(session: Session, asset: Asset) -> bool:
    had = asset.master_status is not None
    asset.master_access, asset.master_status, asset.master_url = "none", None, None
    asset.master_token = asset.master_expires_at = None
    asset.updated_at = utcnow()
    if had:
        _emit(session, "deleted", asset)
    return had


def expire_masters(db: Database, *, limit: int = 100) -> list[str]:
    """Remove master downloads whose time is up (one transaction each, re-checked under it); the asset ids."""
    from kinoray.control.assets import VIEW_LOADS

    now = utcnow()
    with db.reader() as session:
        due = list(session.scalars(sa.select(Asset.id).where(Asset.master_expires_at <= now)
                                   .order_by(Asset.master_expires_at).limit(limit)))
    expired = []
    for asset_id in due:
        with db.session() as session:
            asset = session.scalars(sa.select(Asset).where(Asset.id == asset_id, Asset.master_expires_at <= now)
                                    .options(*VIEW_LOADS).with_for_update()).first()
            if asset is not None and _remove(session, asset):
                expired.append(asset_id)
    return expired


def master_key(session: Session, token: str) -> str:
    """The storage key of the input a live master token opens.

    Raises:
        NotFoundError: an unknown, replaced, removed or expired token (one answer for all: nothing to probe).
    """
    asset_id = session.scalar(sa.select(Asset.id).where(Asset.master_token == token, Asset.master_status == "ready",
                                                        Asset.master_expires_at > utcnow())) \
        if TOKEN_PATTERN.fullmatch(token) else None
    if asset_id is None:
        raise NotFoundError("no master download here (it may have expired)")
    from kinoray.control.assets import input_key

    return input_key(asset_id)
