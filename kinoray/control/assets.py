"""Assets: create (from an input URL or a finished upload), the Mux-shaped view, update, delete.

Creating an asset writes, in one transaction, the asset row, its playback ids, a ``queued`` transcode job and
the ``video.asset.created`` event; the job runner picks the job up. The job's options are fixed at creation
(:func:`job_options`), so a re-queued job after a restart encodes exactly what the first attempt would have.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator
from sqlalchemy.orm import Session, joinedload, selectinload

from kinoray.control.events import emit
from kinoray.control.lookup import find
from kinoray.control.master import master_view
from kinoray.control.requests import RequestModel
from kinoray.control.static_renditions import (
    StaticRenditionCreate,
    add_static_rendition,
    rendition_name,
    set_mp4_support,
    static_renditions_view,
)
from kinoray.control.urls import check_public_url
from kinoray.control.views import AssetView, PlaybackIdTargetView, PlaybackIdView, PlaybackObject, TrackView
from kinoray.errors import InvalidParametersError, NotFoundError, StorageError
from kinoray.media.ladder import DEFAULT_LADDER
from kinoray.settings import Settings
from kinoray.store import keys
from kinoray.store.keys import input_key, media_prefix
from kinoray.store.models import (
    Asset,
    AssetStatus,
    Job,
    LiveStreamPlaybackId,
    PlaybackId,
    PlaybackPolicy,
    is_valid_id,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    from kinoray.control.asset_reads import AssetRow, PlaybackIdRow
    from kinoray.control.platform import Platform

__all__ = [
    "TEST_ASSET_SECONDS",
    "VIEW_LOADS",
    "AssetCreate",
    "AssetUpdate",
    "NewAssetSettings",
    "PlaybackIdCreate",
    "add_playback_id",
    "asset_view",
    "create_asset",
    "create_asset_from_request",
    "create_playback_id",
    "delete_asset",
    "delete_playback_id",
    "expire_assets",
    "get_asset",
    "get_playback_id",
    "input_key",
    "job_options",
    "job_source",
    "list_playback_ids",
    "media_prefix",
    "mux_max_resolution_tier",
    "playback_id_target",
    "playback_id_view",
    "queue_transcode",
    "remove_asset",
    "resolution_tier",
    "track_view",
    "update_asset",
]

log = logging.getLogger(__name__)

#: Eager loads of what :func:`asset_view` reads, so showing N assets costs 3 queries, not 2N + 1 (each its own
#: SELECT: what a locking read, ``FOR UPDATE``, takes; PostgreSQL locks no outer join's nullable side).
VIEW_LOADS = (selectinload(Asset.playback_ids), selectinload(Asset.upload), selectinload(Asset.static_files))
#: One asset read as an ORM row to be shown: all of it in one SELECT, its children joined (a row per playback id ×
#: static rendition, a handful). An ORM statement costs more than its rows here: this halves the read (1 query,
#: not 4). The polled reads skip the ORM altogether (:mod:`kinoray.control.asset_reads`).
ONE_VIEW_LOADS = (joinedload(Asset.playback_ids), joinedload(Asset.upload), joinedload(Asset.static_files))

TIER_HEIGHTS = {"720p": 720, "1080p": 1080, "1440p": 1440, "2160p": 2160}
#: ``max_resolution_tier`` values Mux answers (``720p`` is kinoray's own: shown as ``1080p``, the lowest Mux tier,
#: and named exactly in ``kinoray_max_resolution_tier``).
MUX_MAX_TIERS = ("1080p", "1440p", "2160p")
Policy = Literal["public", "signed"]
#: Mux's deprecated ``encoding_tier`` and the ``video_quality`` each stands for.
QUALITY_OF_TIER = {"baseline": "basic", "smart": "plus", "premium": "premium"}
TIER_OF_QUALITY = {quality: tier for tier, quality in QUALITY_OF_TIER.items()}
#: A test asset keeps at most this many seconds of its input (Mux: 10 s).
TEST_ASSET_SECONDS = 10.0
#: Mux's clip input: ``mux://assets/{asset_id}``.
CLIP_URL = re.compile(r"mux://assets/(?P<asset_id>[^/?#]+)")
_EXPIRY_BATCH = 100


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
    ``copy_overlays`` (no overlays) and ``per_title_encode``; the
    asset then shows what kinoray did. ``normalize_audio`` normalizes loudness (EBU R128, -24 LUFS); ``test``
    makes a test asset (10 s at most, marked ``TEST``, deleted after ``api.test_asset_hours``)."""

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
    static_renditions: list[StaticRenditionCreate] | None = Field(default=None, max_length=10)
    mp4_support: Literal["none", "standard", "capped-1080p", "audio-only", "audio-only,capped-1080p"] | None = None
    normalize_audio: bool = Field(default=False, description="EBU R128 loudness normalization to -24 LUFS")
    copy_overlays: bool = Field(default=True, description="accepted; kinoray has no overlays")
    master_access: Literal["none", "temporary"] = Field(
        default="none", description="temporary: a download of the original input for api.master_access_seconds")
    per_title_encode: bool | None = Field(default=None, description="deprecated Mux field; accepted, no effect")
    video_codec: Literal["h264", "hevc", "av1"] | None = Field(
        default=None, description="kinoray: codec of the ladder (default from settings, h264)")
    test: bool = Field(default=False, description="a test asset: at most 10 s, marked TEST, deleted after 24 h")

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
    Mux's SDKs send them; those kinoray cannot honour yet are refused rather than silently dropped.
    ``start_time``/``end_time`` clip a ``mux://assets/{id}`` input (seconds on that asset's timeline), as in
    Mux; with another URL they are refused."""

    url: str = Field(min_length=1, max_length=4096, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://[^\x00]*$",
                     description="http(s)://, s3://, or file:// where enabled; refused when it points at a "
                                 "private address (SSRF policy)")
    type: Literal["video"] | None = Field(default=None, description="the one input is the video")
    passthrough: str | None = Field(default=None, max_length=255, description="accepted, not stored")
    overlay_settings: dict[str, Any] | None = Field(default=None, description="refused: no overlays yet")
    generated_subtitles: list[dict[str, Any]] | None = Field(default=None,
                                                             description="refused: no generated subtitles yet")
    start_time: float | None = Field(default=None, ge=0, le=12 * 3600,
                                     description="clip start, seconds (mux://assets/{id} inputs); default 0")
    end_time: float | None = Field(default=None, gt=0, le=12 * 3600,
                                   description="clip end, seconds (mux://assets/{id} inputs); default: the end")

    @model_validator(mode="after")
    def _supported(self) -> AssetInput:
        unsupported = [name for name in ("overlay_settings", "generated_subtitles") if getattr(self, name) is not None]
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)}: not supported by kinoray yet (docs/API.md)")
        if self.url.startswith("mux://") and CLIP_URL.fullmatch(self.url) is None:
            raise ValueError("a mux:// input must be mux://assets/{asset_id} (a clip of that asset)")
        if (self.start_time is not None or self.end_time is not None) and self.clip_source_id() is None:
            raise ValueError("start_time, end_time: only for clips, with a mux://assets/{asset_id} input")
        if self.start_time is not None and self.end_time is not None and self.start_time >= self.end_time:
            raise ValueError(f"start_time {self.start_time:g} must be before end_time {self.end_time:g}")
        return self

    def clip_source_id(self) -> str | None:
        """The asset a ``mux://assets/{id}`` input clips, else ``None``."""
        match = CLIP_URL.fullmatch(self.url)
        return match["asset_id"] if match else None


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

    def first_input(self) -> AssetInput:
        assert self.inputs is not None  # _one_input
        return self.inputs[0]


class AssetUpdate(RequestModel):
    """``PATCH /video/v1/assets/{id}``."""

    passthrough: str | None = Field(default=None, max_length=255)
    meta: AssetMeta | None = None


class PlaybackIdCreate(RequestModel):
    policy: Policy = "public"


def _clip_range(create: NewAssetSettings, start: float | None, end: float | None) -> tuple[float | None, float | None]:
    """The source seconds an asset keeps: a clip's range, cut to :data:`TEST_ASSET_SECONDS` for a test asset."""
    if create.test and (end is None or end - (start or 0.0) > TEST_ASSET_SECONDS):
        end = (start or 0.0) + TEST_ASSET_SECONDS
    return start, end


def job_options(create: NewAssetSettings, settings: Settings, *, clip_start: float | None = None,
                clip_end: float | None = None) -> dict[str, Any]:
    """The engine options (``TranscodeOptions`` fields) an asset created with ``create`` is encoded with
    (``clip_start``/``clip_end``: a clip's range in its source's seconds)."""
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
        **_media_options(create, clip_start, clip_end),
    }


def _media_options(create: NewAssetSettings, clip_start: float | None, clip_end: float | None) -> dict[str, Any]:
    """Clip range, loudness normalization and the test mark, only where asked (older jobs lack the keys)."""
    start, end = _clip_range(create, clip_start, clip_end)
    options: dict[str, Any] = {"clip_start": start, "clip_end": end, "normalize_audio": create.normalize_audio,
                               "watermark": create.test}
    return {key: value for key, value in options.items() if value}


def create_asset_from_request(session: Session, settings: Settings, body: AssetCreate) -> Asset:
    """``POST /video/v1/assets``: an asset from an input URL (checked against the SSRF policy), or a clip of a
    ready asset's stored source (``mux://assets/{id}`` with ``start_time``/``end_time``).

    Raises:
        InputUrlRefusedError: the URL is refused by the SSRF policy.
        NotFoundError: the clip's source asset does not exist.
        InvalidParametersError: the source is not ready, or the range starts at or past its end.
    """
    source_id = body.first_input().clip_source_id()
    if source_id is None:
        url = body.input_url()
        check_public_url(url, settings)
        return create_asset(session, settings, body.settings_only(), input_url=url)
    source = find(session, Asset, source_id, what="source asset")
    if source.status != AssetStatus.READY or source.duration is None:
        raise InvalidParametersError(f"source asset {source_id} is {source.status.value}: only ready assets can "
                                     "be clipped")
    start, end = body.first_input().start_time, body.first_input().end_time
    if (start or 0.0) >= source.duration:
        raise InvalidParametersError(f"start_time {start:g} is at or past the source's end ({source.duration:g} s)")
    # Cut from the source's own input (a clip of a clip: the first source's, its range moved by the source
    # clip's start), never past the source's end (a test asset is shorter than its input).
    source_key, source_clip = job_source(source)
    offset = source_clip.get("clip_start", 0.0)
    end = source.duration if end is None else min(end, source.duration)
    return create_asset(session, settings, body.settings_only(), input_url=body.input_url(), source_key=source_key,
                        source_asset_id=source.id, clip_start=_shifted(start, offset), clip_end=_shifted(end, offset))


def _shifted(seconds: float | None, offset: float) -> float | None:
    """``seconds`` of a source clip's timeline as seconds of its own source, to the microsecond (``2.5 + 1.1``
    is 3.6, not the float just above it, which would move a frame boundary)."""
    if seconds is None:
        return round(offset, 6) if offset else None
    return round(seconds + offset, 6)


def create_asset(session: Session, settings: Settings, create: NewAssetSettings, *, input_url: str | None,
                 asset_id: str | None = None, source_key: str | None = None, source_asset_id: str | None = None,
                 clip_start: float | None = None, clip_end: float | None = None,
                 live_stream_id: str | None = None, environment_id: str | None = None) -> Asset:
    """A new ``preparing`` asset with its playback ids, a queued job and the ``video.asset.created`` event.

    ``input_url`` is fetched into the store by the runner; ``source_key`` says the input is already stored
    (a finished upload, or the stored source a clip is cut from: then both are given, ``input_url`` being
    the ``mux://assets/{id}`` URL). A test asset expires ``api.test_asset_hours`` after creation.
    ``live_stream_id`` makes a live stream's recording (neither input given): ``progress.state`` ``live`` and
    no job until the broadcast ends (:func:`queue_transcode`, from :mod:`kinoray.control.live`).
    ``environment_id``: the environment of the upload or live stream it comes from, where the session is not
    scoped to one (the session's environment otherwise: :mod:`kinoray.store.scoping`)."""
    if live_stream_id is not None:
        if input_url is not None or source_key is not None:
            raise ValueError("a live recording has no input_url or source_key: its publisher writes the input")
    elif (input_url is None and source_key is None) or (
            input_url is not None and source_key is not None and source_asset_id is None):
        raise ValueError("give exactly one of input_url and source_key (both only for a clip)")
    asset_id = asset_id or new_id()
    recorded = create.model_dump(exclude_none=True, mode="json")
    if source_asset_id is not None:  # what a re-made job needs (the reconciler): the clip's stored source and range
        recorded["inputs"] = [{key: value for key, value in (("url", input_url), ("start_time", clip_start),
                                                             ("end_time", clip_end), ("source_key", source_key))
                               if value is not None}]
    asset = Asset(id=asset_id, input_url=input_url, passthrough=create.passthrough, meta=create.meta.model_dump(exclude_none=True) if create.meta else {},
                  create_settings=recorded,
                  storage_prefix=keys.asset_prefix(asset_id), source_asset_id=source_asset_id,
                  expires_at=utcnow() + timedelta(hours=settings.api.test_asset_hours) if create.test else None,
                  progress_state="live" if live_stream_id is not None else
                  "ingesting" if source_key is None else "transcoding",
                  live_stream_id=live_stream_id, environment_id=environment_id)
    session.add(asset)
    for policy in create.policies():
        session.add(PlaybackId(id=new_id(), asset_id=asset_id, policy=PlaybackPolicy(policy)))
    if live_stream_id is None:
        now = time.time()
        session.add(Job(job_id=new_id(), asset_id=asset_id,
                        options=job_options(create, settings, clip_start=clip_start, clip_end=clip_end),
                        source=source_key or input_key(asset_id), output=media_prefix(asset_id), state="queued",
                        created_at=now, updated_at=now))
    session.flush()
    session.refresh(asset)
    emit(session, "video.asset.created", "asset", asset_id, asset_view(asset))
    _request_downloads(session, asset, create, settings)
    return asset


def _request_downloads(session: Session, asset: Asset, create: NewAssetSettings, settings: Settings) -> None:
    """The static renditions, legacy ``mp4_support`` and master download asked for at creation (their events
    follow ``video.asset.created``)."""
    from kinoray.control.master import set_master_access

    names = set()
    for requested in create.static_renditions or ():
        if rendition_name(requested.resolution) not in names:  # the same file asked twice is made once
            names.add(rendition_name(requested.resolution))
            add_static_rendition(session, asset, requested)
    if create.mp4_support not in (None, "none"):
        set_mp4_support(session, asset, create.mp4_support)
    if create.master_access == "temporary":
        set_master_access(session, asset, "temporary", settings)


def queue_transcode(session: Session, settings: Settings, asset: Asset) -> Job:
    """A ``queued`` transcode job for ``asset`` from its recorded create settings (a live recording once its
    input is stored: the runner claims it like any other)."""
    create = NewAssetSettings.model_validate(
        {key: value for key, value in (asset.create_settings or {}).items() if key != "inputs"})
    source, clip = job_source(asset)
    now = time.time()
    job = Job(job_id=new_id(), asset_id=asset.id, options=job_options(create, settings, **clip), source=source,
              output=media_prefix(asset.id), state="queued", created_at=now, updated_at=now)
    session.add(job)
    return job


def job_source(asset: Asset) -> tuple[str, dict[str, float]]:
    """``(source key, clip options)`` of the asset's transcode job: a clip reads the stored input it was cut
    from and keeps its range (seconds of that input's timeline); any other asset reads its own
    ``assets/<id>/input``."""
    if asset.source_asset_id is None:
        return input_key(asset.id), {}
    [clip] = (asset.create_settings or {}).get("inputs") or [{}]
    return clip.get("source_key") or input_key(asset.source_asset_id), {
        f"clip_{end}": clip[f"{end}_time"] for end in ("start", "end") if clip.get(f"{end}_time") is not None}


def get_asset(session: Session, asset_id: str, *, for_update: bool = False) -> Asset:
    """The asset with what :func:`asset_view` reads, or ``NotFoundError`` (also for ids that cannot be ours)."""
    return find(session, Asset, asset_id, what="asset", for_update=for_update,
                options=VIEW_LOADS if for_update else ONE_VIEW_LOADS)


def update_asset(session: Session, asset_id: str, update: AssetUpdate) -> AssetView:
    """``PATCH /video/v1/assets/{id}``: change ``passthrough`` and/or ``meta`` (fields left out stay as they
    are), with ``video.asset.updated``.

    Raises:
        NotFoundError: no such asset.
    """
    asset = get_asset(session, asset_id, for_update=True)
    changes = update.model_dump(exclude_unset=True, exclude_none=False)
    if "passthrough" in changes:
        asset.passthrough = changes["passthrough"]
    if "meta" in changes:
        asset.meta = update.meta.model_dump(exclude_none=True) if update.meta else {}
    asset.updated_at = utcnow()
    session.flush()
    view = asset_view(asset)
    emit(session, "video.asset.updated", "asset", asset.id, view)
    return view


def create_playback_id(session: Session, asset: Asset, policy: str) -> PlaybackId:
    """A new playback id on ``asset`` (no event: see :func:`add_playback_id`)."""
    playback = PlaybackId(id=new_id(), asset_id=asset.id, policy=PlaybackPolicy(policy))
    session.add(playback)
    asset.updated_at = utcnow()
    session.flush()
    session.refresh(asset)
    return playback


def add_playback_id(session: Session, asset_id: str, policy: str) -> PlaybackIdView:
    """``POST /video/v1/assets/{id}/playback-ids``: a new playback id, with ``video.asset.updated``.

    Raises:
        NotFoundError: no such asset.
    """
    asset = get_asset(session, asset_id, for_update=True)
    playback = create_playback_id(session, asset, policy)
    emit(session, "video.asset.updated", "asset", asset.id, asset_view(asset))
    return playback_id_view(playback)


def _playback(session: Session, asset_id: str, playback_id: str) -> PlaybackId:
    playback = session.get(PlaybackId, playback_id) if is_valid_id(playback_id) else None
    if playback is None or playback.asset_id != asset_id:
        raise NotFoundError(f"no playback id {playback_id[:80]!r} on asset {asset_id!r}")
    return playback


def get_playback_id(session: Session, asset_id: str, playback_id: str) -> PlaybackIdView:
    """One playback id of the asset.

    Raises:
        NotFoundError: no such asset, or no such playback id on it.
    """
    get_asset(session, asset_id)
    return playback_id_view(_playback(session, asset_id, playback_id))


def list_playback_ids(session: Session, asset_id: str) -> list[PlaybackIdView]:
    """The asset's playback ids. ``NotFoundError`` for no such asset."""
    return [playback_id_view(p) for p in get_asset(session, asset_id).playback_ids]


def delete_playback_id(session: Session, asset_id: str, playback_id: str) -> None:
    """Remove a playback id from the asset (its URLs stop playing), with ``video.asset.updated``.

    Raises:
        NotFoundError: no such asset, or no such playback id on it.
    """
    asset = get_asset(session, asset_id, for_update=True)
    session.delete(_playback(session, asset_id, playback_id))
    asset.updated_at = utcnow()
    session.flush()
    session.refresh(asset)
    emit(session, "video.asset.updated", "asset", asset.id, asset_view(asset))


def playback_id_target(session: Session, playback_id: str) -> PlaybackIdTargetView:
    """``GET /video/v1/playback-ids/{id}``: the playback id and the asset or live stream it plays.

    Raises:
        NotFoundError: no asset or live stream has it.
    """
    if is_valid_id(playback_id):
        playback = session.get(PlaybackId, playback_id)
        if playback is not None:
            return PlaybackIdTargetView(id=playback.id, policy=playback.policy.value,
                                        object=PlaybackObject(type="asset", id=playback.asset_id))
        live = session.get(LiveStreamPlaybackId, playback_id)
        if live is not None:
            return PlaybackIdTargetView(id=live.id, policy=live.policy.value,
                                        object=PlaybackObject(type="live_stream", id=live.live_stream_id))
    raise NotFoundError(f"no playback id {playback_id[:80]!r}")


def delete_asset(session: Session, asset: Asset) -> None:
    """Delete the row (playback ids and jobs go with it) and emit ``video.asset.deleted``. The caller removes
    the stored files after the commit; a running job sees its asset gone and stops."""
    view = asset_view(asset)
    session.delete(asset)
    session.flush()
    emit(session, "video.asset.deleted", "asset", asset.id, view, environment_id=asset.environment_id)


def remove_asset(platform: Platform, asset_id: str) -> None:
    """``DELETE /video/v1/assets/{id}``: :func:`delete_asset` in one transaction, then the stored files (a
    failure there is logged: the row is gone, and orphaned prefixes are swept later).

    Raises:
        NotFoundError: no such asset (already deleted).
    """
    with platform.db.session() as session:
        asset = get_asset(session, asset_id, for_update=True)
        prefix = keys.asset_prefix(asset.id, asset.storage_prefix)
        delete_asset(session, asset)
    try:
        platform.store.delete_prefix(prefix)
    except StorageError as error:
        log.warning("could not delete an asset's files", extra={"asset": asset_id, "error": str(error)})


def expire_assets(platform: Platform, now: datetime | None = None) -> int:
    """Delete the assets past ``expires_at`` (test assets), each as ``DELETE`` does (with its
    ``video.asset.deleted`` webhook); how many. The runner calls this periodically."""
    now = now or utcnow()
    with platform.db.reader() as session:
        due = list(session.scalars(sa.select(Asset.id).where(Asset.expires_at <= now)
                                   .order_by(Asset.expires_at).limit(_EXPIRY_BATCH)))
    removed = 0
    for asset_id in due:
        try:
            remove_asset(platform, asset_id)
        except NotFoundError:
            continue  # deleted meanwhile (by a user, or another runner)
        removed += 1
    if removed:
        log.info("expired test assets deleted", extra={"count": removed})
    return removed


def playback_id_view(playback: PlaybackId | PlaybackIdRow) -> PlaybackIdView:
    return PlaybackIdView(id=playback.id, policy=playback.policy.value)


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


def track_view(track: dict[str, Any], *, primary_audio: str | None) -> TrackView:
    """A stored track as Mux shows it: a media track of a published asset is ``ready``, the first audio track
    is ``primary``."""
    view = dict(track)
    view.setdefault("status", "ready")
    if view.get("type") == "audio":
        view.setdefault("primary", view.get("id") == primary_audio)
    return TrackView.model_validate(view)


def _progress_percent(asset: Asset | AssetRow) -> float:
    """Mux's ``progress.progress``: percent done, and -1 while the asset is live or once it errored."""
    if asset.progress_state in ("live", "errored"):
        return -1.0
    return round(100 * (asset.progress_fraction or 0.0), 1)


def _ingest_type(asset: Asset | AssetRow) -> str:
    if asset.live_stream_id is not None:
        return "live_rtmp"
    if asset.source_asset_id is not None:
        return "on_demand_clip"
    return "on_demand_direct_upload" if asset.upload is not None else "on_demand_url"


def asset_view(asset: Asset | AssetRow) -> AssetView:
    """The asset as the API shows it (:class:`AssetView`): Mux's field names and enums, kinoray's own values in
    fields named for kinoray (``kinoray_*``, ``video_codec``, ``encoder_backend``). ``asset``: an ORM row, or the
    plain row of a polled read (:mod:`kinoray.control.asset_reads`)."""
    create = asset.create_settings or {}
    tracks = list(asset.tracks or [])
    primary_audio = next((track.get("id") for track in tracks if track.get("type") == "audio"), None)
    tier, kinoray_tier = mux_max_resolution_tier(create.get("max_resolution_tier", "1080p"))
    quality = create.get("video_quality", "plus")
    master_access, master = master_view(asset)
    return AssetView.model_validate({
        "id": asset.id,
        "status": asset.status.value,
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
        "tracks": [track_view(track, primary_audio=primary_audio) for track in tracks],
        "mp4_support": asset.mp4_support or create.get("mp4_support") or "none",
        "master_access": master_access,
        "master": master,
        "normalize_audio": bool(create.get("normalize_audio")),
        "source_asset_id": asset.source_asset_id,
        "live_stream_id": asset.live_stream_id,
        "is_live": asset.progress_state == "live",
        "ingest_type": _ingest_type(asset),
        "static_renditions": static_renditions_view(asset),
        "passthrough": asset.passthrough,
        "meta": asset.meta or None,
        "errors": asset.errors,
        "progress": {"state": asset.progress_state, "progress": _progress_percent(asset)},
        "upload_id": asset.upload.id if asset.upload is not None else None,
        "test": create.get("test") or None,
        "video_codec": asset.video_codec or create.get("video_codec"),
        "encoder_backend": asset.encoder_backend,
    })
