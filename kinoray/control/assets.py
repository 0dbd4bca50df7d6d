"""Assets: create (from an input URL or a finished upload), the Mux-shaped view, update, delete.

Creating an asset writes, in one transaction, the asset row, its playback ids, a ``queued`` transcode job and
the ``video.asset.created`` event; the job runner picks the job up. The job's options are fixed at creation
(:func:`job_options`), so a re-queued job after a restart encodes exactly what the first attempt would have.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
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
    "mux_max_resolution_tier",
    "playback_id_view",
    "resolution_tier",
]

#: Eager loads of what :func:`asset_view` reads, so showing N assets costs 3 queries, not 2N + 1.
VIEW_LOADS = (selectinload(Asset.playback_ids), selectinload(Asset.upload))

TIER_HEIGHTS = {"720p": 720, "1080p": 1080, "1440p": 1440, "2160p": 2160}
#: ``max_resolution_tier`` values Mux answers (``720p`` is kinoray's own: shown as ``1080p``, the lowest Mux tier,
#: and named exactly in ``kinoray_max_resolution_tier``).
MUX_MAX_TIERS = ("1080p", "1440p", "2160p")
Policy = Literal["public", "signed"]
#: Mux's deprecated ``encoding_tier`` and the ``video_quality`` each stands for.
QUALITY_OF_TIER = {"baseline": "basic", "smart": "plus", "premium": "premium"}
TIER_OF_QUALITY = {quality: tier for tier, quality in QUALITY_OF_TIER.items()}


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


class AdvancedPlaybackPolicy(RequestModel):
    """Mux's ``advanced_playback_policies[]`` entry (DRM is not offered: ``drm`` is refused)."""

    policy: Literal["public", "signed", "drm"]
    drm_configuration_id: str | None = Field(default=None, max_length=128)


class NewAssetSettings(RequestModel):
    """Everything an asset is created with except its input (Mux's ``new_asset_settings`` on uploads).

    Every field Mux's API and SDKs send is accepted. Accepted without effect, as documented in docs/API.md:
    ``normalize_audio`` (no loudness normalization yet), ``copy_overlays`` (no overlays), ``master_access``
    (no master downloads yet) and ``per_title_encode``; the asset then shows what kinoray did."""

    playback_policies: list[Policy] | None = Field(default=None, max_length=4)
    playback_policy: list[Policy] | Policy | None = Field(default=None, description="deprecated Mux name")
    advanced_playback_policies: list[AdvancedPlaybackPolicy] | None = Field(default=None, max_length=4)
    passthrough: str | None = Field(default=None, max_length=255)
    meta: AssetMeta | None = None
    max_resolution_tier: Literal["720p", "1080p", "1440p", "2160p"] = Field(
        default="1080p", description="720p is kinoray's own (shown as 1080p, the lowest Mux tier)")
    video_quality: Literal["basic", "plus", "premium"] = "plus"
    encoding_tier: Literal["baseline", "smart", "premium"] | None = Field(
        default=None, description="deprecated Mux name of video_quality (baseline = basic, smart = plus)")
    static_renditions: list[StaticRenditionRequest] | None = Field(default=None, max_length=2)
    mp4_support: Literal["none", "standard", "capped-1080p", "audio-only", "audio-only,capped-1080p"] | None = None
    normalize_audio: bool = Field(default=False, description="accepted; kinoray does not normalize loudness yet")
    copy_overlays: bool = Field(default=True, description="accepted; kinoray has no overlays")
    master_access: Literal["none", "temporary"] = Field(
        default="none", description="accepted; kinoray offers no master download yet (the asset shows none)")
    per_title_encode: bool | None = Field(default=None, description="deprecated Mux field; accepted, no effect")
    video_codec: Literal["h264", "hevc", "av1"] | None = Field(
        default=None, description="kinoray: codec of the ladder (default from settings, h264)")
    test: bool = False

    @model_validator(mode="after")
    def _mux_aliases(self) -> NewAssetSettings:
        if self.encoding_tier is not None and "video_quality" not in self.model_fields_set:
            self.video_quality = QUALITY_OF_TIER[self.encoding_tier]  # type: ignore[assignment]
        if any(entry.policy == "drm" for entry in self.advanced_playback_policies or ()):
            raise ValueError("advanced_playback_policies: DRM is not offered by kinoray (use public or signed)")
        return self

    def policies(self) -> list[str]:
        if self.playback_policies is not None:
            return list(self.playback_policies)
        if self.advanced_playback_policies is not None:
            return [entry.policy for entry in self.advanced_playback_policies]
        if self.playback_policy is None:
            return []
        return [self.playback_policy] if isinstance(self.playback_policy, str) else list(self.playback_policy)


class AssetInput(RequestModel):
    """Mux's ``InputSettings`` for the one input kinoray takes: the video. Its other fields are accepted as
    Mux's SDKs send them; those kinoray cannot honour yet are refused rather than silently dropped."""

    url: str = Field(min_length=1, max_length=4096, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://[^\x00]*$",
                     description="http(s)://, s3://, or file:// where enabled; refused when it points at a "
                                 "private address (SSRF policy)")
    type: Literal["video"] | None = Field(default=None, description="the one input is the video")
    passthrough: str | None = Field(default=None, max_length=255, description="accepted, not stored")
    overlay_settings: dict[str, Any] | None = Field(default=None, description="refused: no overlays yet")
    generated_subtitles: list[dict[str, Any]] | None = Field(default=None,
                                                             description="refused: no generated subtitles yet")
    start_time: float | None = Field(default=None, description="refused: no clipping yet")
    end_time: float | None = Field(default=None, description="refused: no clipping yet")

    @model_validator(mode="after")
    def _supported(self) -> AssetInput:
        unsupported = [name for name in ("overlay_settings", "generated_subtitles", "start_time", "end_time")
                       if getattr(self, name) is not None]
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)}: not supported by kinoray yet (docs/API.md)")
        return self


class AssetCreate(NewAssetSettings):
    """``POST /video/v1/assets``: ``inputs: [{"url": ...}]`` (one input: the video), or Mux's deprecated
    ``input`` (the same list, or a URL)."""

    inputs: list[AssetInput] | None = Field(default=None, min_length=1, max_length=1)
    input: list[AssetInput] | None = Field(default=None, min_length=1, max_length=1,
                                           description="deprecated Mux name of inputs (also a bare URL)")

    @field_validator("input", mode="before")
    @classmethod
    def _bare_url(cls, value: object) -> object:
        return [{"url": value}] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_input(self) -> AssetCreate:
        if (self.inputs is None) == (self.input is None):
            raise ValueError("give inputs (or Mux's deprecated input), exactly one of them")
        self.inputs = self.inputs or self.input
        return self

    def input_url(self) -> str:
        assert self.inputs is not None  # _one_input
        return self.inputs[0].url

    def settings_only(self) -> NewAssetSettings:
        return NewAssetSettings(**self.model_dump(exclude={"inputs", "input"}, exclude_unset=True))


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


def resolution_tier(short_side: int) -> str:
    """Mux's ``resolution_tier`` of a picture whose shorter side is ``short_side`` pixels."""
    return next((tier for tier, limit in TIER_HEIGHTS.items() if short_side <= limit), "2160p")


def mux_max_resolution_tier(tier: str) -> tuple[str, str | None]:
    """``(max_resolution_tier as Mux may answer it, kinoray's own tier when it differs)``: kinoray's ``720p`` cap
    lies inside Mux's lowest tier, ``1080p``."""
    if tier in MUX_MAX_TIERS:
        return tier, None
    return MUX_MAX_TIERS[0], tier


def _max_stored_resolution(tracks: list[dict[str, Any]]) -> str | None:
    """Mux's deprecated ``max_stored_resolution`` from the video track's height (None before the asset is ready)."""
    video = next((track for track in tracks if track.get("type") == "video"), None)
    if video is None:
        return "Audio only" if any(track.get("type") == "audio" for track in tracks) else None
    height = min(int(video.get("max_height") or 0), int(video.get("max_width") or 0))
    return "SD" if height < 720 else "HD" if height < 1080 else "FHD" if height < 1440 else "UHD"


def _track_view(track: dict[str, Any], *, primary_audio: str | None) -> dict[str, Any]:
    """A stored track as Mux shows it: a media track of a published asset is ``ready``, the first audio track
    is ``primary``."""
    view = dict(track)
    view.setdefault("status", "ready")
    if view.get("type") == "audio":
        view.setdefault("primary", view.get("id") == primary_audio)
    return view


def _file_id(asset_id: str, name: str) -> str:
    """A static rendition file's id: stable per asset and file name (the file is rebuilt, never renamed)."""
    return hashlib.sha256(f"{asset_id}/{name}".encode()).hexdigest()[:32]


def _static_renditions_view(asset: Asset) -> dict[str, Any] | None:
    """``static_renditions`` as Mux lists them: each file with its id, ``type`` (``standard``), ``resolution``
    (``highest``/``audio-only``) and ``resolution_tier``; the top-rung MP4 under the name it was asked for
    (``highest.mp4``, or ``capped-1080p.mp4`` through the legacy ``mp4_support``, the same file)."""
    stored = asset.static_renditions
    if stored is None:
        return None
    create = asset.create_settings or {}
    asked_highest = any(entry.get("resolution") == "highest" for entry in create.get("static_renditions") or ())
    capped = "capped-1080p" in str(create.get("mp4_support") or "")
    files = []
    for entry in stored.get("files", []):
        names = [entry.get("name")]
        if entry.get("name") == "highest.mp4" and capped and int(entry.get("height") or 0) <= 1080:
            names = ["highest.mp4", "capped-1080p.mp4"] if asked_highest else ["capped-1080p.mp4"]
        for name in names:
            audio = name == "audio.m4a"
            tier = "audio-only" if audio else resolution_tier(
                min(int(entry.get("height") or 0), int(entry.get("width") or 0)))
            files.append({**entry, "name": name, "id": _file_id(asset.id, name), "type": "standard",
                          "resolution": "audio-only" if audio else "highest", "resolution_tier": tier})
    return {**stored, "files": files}


def asset_view(asset: Asset) -> dict[str, Any]:
    """The asset as the API shows it: Mux's field names and enums (absent values are left out), kinoray's own
    values in fields named for kinoray (``kinoray_*``, ``video_codec``, ``encoder_backend``)."""
    create = asset.create_settings or {}
    tracks = list(asset.tracks or [])
    primary_audio = next((track.get("id") for track in tracks if track.get("type") == "audio"), None)
    tier, kinoray_tier = mux_max_resolution_tier(create.get("max_resolution_tier", "1080p"))
    quality = create.get("video_quality", "plus")
    view: dict[str, Any] = {
        "id": asset.id,
        "status": str(asset.status.value),
        "created_at": _unix(asset.created_at),
        "updated_at": _unix(asset.updated_at),
        "duration": asset.duration,
        "aspect_ratio": asset.aspect_ratio,
        "resolution_tier": asset.resolution_tier,
        "max_resolution_tier": tier,
        "kinoray_max_resolution_tier": kinoray_tier,
        "max_stored_resolution": _max_stored_resolution(tracks),
        "video_quality": quality,
        "encoding_tier": TIER_OF_QUALITY[quality],
        "max_stored_frame_rate": asset.max_stored_frame_rate,
        "playback_ids": [playback_id_view(p) for p in asset.playback_ids],
        "tracks": [_track_view(track, primary_audio=primary_audio) for track in tracks],
        "mp4_support": create.get("mp4_support", "none"),
        "master_access": "none",
        "normalize_audio": False,
        "is_live": False,
        "ingest_type": "on_demand_direct_upload" if asset.upload is not None else "on_demand_url",
        "static_renditions": _static_renditions_view(asset),
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


