"""Assets: create (from an input URL or a finished upload), the Mux-shaped view, update, delete.

Creating an asset writes, in one transaction, the asset row, its playback ids, a ``queued`` transcode job and
the ``video.asset.created`` event; the job runner picks the job up. The job's options are fixed at creation
(:func:`job_options`), so a re-queued job after a restart encodes exactly what the first attempt would have.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field
from sqlalchemy.orm import Session, selectinload

from kinoray.control.events import emit
from kinoray.control.lookup import find
from kinoray.control.requests import RequestModel
from kinoray.media.ladder import DEFAULT_LADDER
from kinoray.settings import Settings
from kinoray.store.models import Asset, Job, PlaybackId, PlaybackPolicy, new_id, utcnow

__all__ = [
    "VIEW_LOADS",
    "AssetCreate",
    "AssetUpdate",
    "NewAssetSettings",
    "PlaybackIdCreate",
    "asset_view",
    "create_asset",
    "create_playback_id",
    "delete_asset",
    "get_asset",
    "input_key",
    "job_options",
    "media_prefix",
    "playback_id_view",
]

#: Eager loads of what :func:`asset_view` reads, so showing N assets costs 3 queries, not 2N + 1.
VIEW_LOADS = (selectinload(Asset.playback_ids), selectinload(Asset.upload))

TIER_HEIGHTS = {"720p": 720, "1080p": 1080, "1440p": 1440, "2160p": 2160}
Policy = Literal["public", "signed"]


def input_key(asset_id: str) -> str:
    """Object-store key of an asset's source bytes."""
    return f"assets/{asset_id}/input"


def media_prefix(asset_id: str) -> str:
    """Object-store prefix of an asset's HLS/DASH/MP4 output."""
    return f"assets/{asset_id}/media"


class StaticRenditionRequest(RequestModel):
    resolution: Literal["highest", "audio-only"]


class AssetMeta(RequestModel):
    """Mux's ``meta``: free-form labels shown in dashboards and echoed in webhooks."""

    title: str | None = Field(default=None, max_length=512)
    creator_id: str | None = Field(default=None, max_length=128)
    external_id: str | None = Field(default=None, max_length=128)


class NewAssetSettings(RequestModel):
    """Everything an asset is created with except its input (Mux's ``new_asset_settings`` on uploads)."""

    playback_policies: list[Policy] | None = Field(default=None, max_length=4)
    playback_policy: list[Policy] | Policy | None = Field(default=None, description="deprecated Mux name")
    passthrough: str | None = Field(default=None, max_length=255)
    meta: AssetMeta | None = None
    max_resolution_tier: Literal["720p", "1080p", "1440p", "2160p"] = "1080p"
    video_quality: Literal["basic", "plus", "premium"] = "plus"
    static_renditions: list[StaticRenditionRequest] | None = Field(default=None, max_length=2)
    mp4_support: Literal["none", "standard", "capped-1080p", "audio-only", "audio-only,capped-1080p"] | None = None
    video_codec: Literal["h264", "hevc", "av1"] | None = Field(
        default=None, description="kinoray: codec of the ladder (default from settings, h264)")
    test: bool = False

    def policies(self) -> list[str]:
        if self.playback_policies is not None:
            return list(self.playback_policies)
        if self.playback_policy is None:
            return []
        return [self.playback_policy] if isinstance(self.playback_policy, str) else list(self.playback_policy)


class AssetInput(RequestModel):
    url: str = Field(min_length=1, max_length=4096, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://[^\x00]*$",
                     description="http(s)://, s3://, or file:// where enabled; refused when it points at a "
                                 "private address (SSRF policy)")


class AssetCreate(NewAssetSettings):
    """``POST /video/v1/assets``: ``inputs: [{"url": ...}]`` (one input: the video; Mux's older ``input``
    field is not accepted)."""

    inputs: list[AssetInput] = Field(min_length=1, max_length=1)

    def input_url(self) -> str:
        return self.inputs[0].url

    def settings_only(self) -> NewAssetSettings:
        return NewAssetSettings(**self.model_dump(exclude={"inputs"}, exclude_unset=True))


class AssetUpdate(RequestModel):
    """``PATCH /video/v1/assets/{id}``."""

    passthrough: str | None = Field(default=None, max_length=255)
    meta: AssetMeta | None = None


class PlaybackIdCreate(RequestModel):
    policy: Policy = "public"


def job_options(create: NewAssetSettings, settings: Settings) -> dict[str, Any]:
    """The engine options (``TranscodeOptions`` fields) an asset created with ``create`` is encoded with."""
    top = TIER_HEIGHTS[create.max_resolution_tier]
    if create.video_quality == "basic":
        top = min(top, 720)
    heights = sorted({h for h, _ in DEFAULT_LADDER if h <= top} | ({top} if top > DEFAULT_LADDER[0][0] else set()),
                     reverse=True)
    defaults = settings.transcode
    return {
        "codec": create.video_codec or defaults.codec,
        "encoder": defaults.encoder,
        "ladder": heights,
        "segment_seconds": defaults.segment_seconds,
        "chunk_seconds": defaults.chunk_seconds,
        "max_frame_rate": defaults.max_frame_rate,
        "preset": defaults.preset,
        "threads": defaults.threads_per_encoder,
        "audio_bitrate": defaults.audio_bitrate,
    }


def create_asset(session: Session, settings: Settings, create: NewAssetSettings, *, input_url: str | None,
                 asset_id: str | None = None, source_key: str | None = None) -> Asset:
    """A new ``preparing`` asset with its playback ids, a queued job and the ``video.asset.created`` event.

    ``input_url`` is fetched into the store by the runner; ``source_key`` says the input is already stored
    (a finished upload). One of them is required."""
    if (input_url is None) == (source_key is None):
        raise ValueError("give exactly one of input_url and source_key")
    asset_id = asset_id or new_id()
    asset = Asset(id=asset_id, input_url=input_url, passthrough=create.passthrough, meta=create.meta.model_dump(exclude_none=True) if create.meta else {},
                  create_settings=create.model_dump(exclude_none=True, mode="json"),
                  storage_prefix=f"assets/{asset_id}",
                  progress_state="ingesting" if source_key is None else "transcoding")
    if create.static_renditions or create.mp4_support not in (None, "none"):
        asset.static_renditions = {"status": "preparing", "files": []}
    session.add(asset)
    for policy in create.policies():
        session.add(PlaybackId(id=new_id(), asset_id=asset_id, policy=PlaybackPolicy(policy)))
    now = time.time()
    session.add(Job(job_id=new_id(), asset_id=asset_id, options=job_options(create, settings),
                    source=source_key or input_key(asset_id), output=media_prefix(asset_id), state="queued",
                    created_at=now, updated_at=now))
    session.flush()
    session.refresh(asset)
    emit(session, "video.asset.created", "asset", asset_id, asset_view(asset))
    return asset


def get_asset(session: Session, asset_id: str, *, for_update: bool = False) -> Asset:
    """The asset, or ``NotFoundError`` (also for ids that cannot be ours)."""
    return find(session, Asset, asset_id, what="asset", for_update=for_update, options=VIEW_LOADS)


def create_playback_id(session: Session, asset: Asset, policy: str) -> PlaybackId:
    playback = PlaybackId(id=new_id(), asset_id=asset.id, policy=PlaybackPolicy(policy))
    session.add(playback)
    asset.updated_at = utcnow()
    session.flush()
    session.refresh(asset)
    return playback


def delete_asset(session: Session, asset: Asset) -> None:
    """Delete the row (playback ids and jobs go with it) and emit ``video.asset.deleted``. The caller removes
    the stored files after the commit; a running job sees its asset gone and stops."""
    view = asset_view(asset)
    session.delete(asset)
    session.flush()
    emit(session, "video.asset.deleted", "asset", asset.id, view)


def playback_id_view(playback: PlaybackId) -> dict[str, Any]:
    return {"id": playback.id, "policy": str(playback.policy.value)}


def _unix(when: Any) -> str:
    return str(int(when.timestamp()))


def asset_view(asset: Asset) -> dict[str, Any]:
    """The asset as the API shows it (Mux's field names; absent values are left out)."""
    create = asset.create_settings or {}
    view: dict[str, Any] = {
        "id": asset.id,
        "status": str(asset.status.value),
        "created_at": _unix(asset.created_at),
        "updated_at": _unix(asset.updated_at),
        "duration": asset.duration,
        "aspect_ratio": asset.aspect_ratio,
        "resolution_tier": asset.resolution_tier,
        "max_resolution_tier": create.get("max_resolution_tier", "1080p"),
        "video_quality": create.get("video_quality", "plus"),
        "max_stored_frame_rate": asset.max_stored_frame_rate,
        "playback_ids": [playback_id_view(p) for p in asset.playback_ids],
        "tracks": list(asset.tracks or []),
        "static_renditions": asset.static_renditions,
        "passthrough": asset.passthrough,
        "meta": asset.meta or None,
        "errors": asset.errors,
        "progress": {"state": asset.progress_state, "progress": round(100 * (asset.progress_fraction or 0.0), 1)},
        "upload_id": asset.upload.id if asset.upload is not None else None,
        "test": create.get("test") or None,
        "video_codec": asset.video_codec or create.get("video_codec"),
        "encoder_backend": asset.encoder_backend,
    }
    return {key: value for key, value in view.items() if value is not None}


