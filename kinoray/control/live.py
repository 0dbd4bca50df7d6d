"""Live streams: Mux's resource (create, update, enable/disable, complete, stream keys, playback ids, simulcast
targets) and the ingest session's state machine the live runtime drives. No Ray, no HTTP.

**Stream keys** are 256 random bits (``secrets.token_urlsafe(32)``), shown on create and on reset only; the row
keeps a SHA-256 of the key. A fast hash is right for a random 256-bit secret (nothing to brute-force), and a
unique index on it lets ingest find the stream with one indexed lookup: the presented key is hashed, looked up,
and compared with :func:`hmac.compare_digest`.

**The session** (``live_streams.session_state``), driven by the runtime through four calls::

    none ──authorize_publish──▶ connected ──publish_active──▶ recording
      ▲                              │                           │
      │                              └────────publish_ended──────┴──▶ disconnected
      │                                                                   │  authorize_publish within the
      │                                                                   │  reconnect window: connected again,
      └──── expire_live (window over, complete, disabled, deleted) ◀──────┘  same recording, next source part

``status`` is Mux's: ``active`` from the first media (``publish_active``) until the session ends, ``idle``
between sessions, ``disabled`` while disabled (no key is accepted). The recording is the live ladder's own
segments, copied into the asset as the transcoders write them (:mod:`kinoray.live.recording`); when the session
ends it is published as a VOD package and the asset made ``ready`` by the transcode's own publish
(:func:`kinoray.control.jobs.publish_asset`): ``video.asset.ready``, then ``video.asset.live_stream_completed``
— seconds, no encode (:func:`_finish_recording`). Where the source is kept (:attr:`LivePublish.keep_source`) each
publisher connection writes its FLV to its own part, ``assets/<asset_id>/input.part-0000``, ``…-0001``, joined
into ``assets/<asset_id>/input`` (:func:`kinoray.media.flv_join.join_flv`) at the end: the master download, and
the transcode (:func:`kinoray.control.assets.queue_transcode`) a test recording or one the live output cannot
make gets instead.
While a session runs, its recording asset is ``preparing`` with ``progress.state`` ``live`` (``is_live``), and
the reconciler leaves it alone.

**Simulcast targets** travel with the publish (:class:`LivePublish`); the runtime pushes each connection's
stream to them (:mod:`kinoray.live.simulcast`) and reports every status change through
:func:`set_simulcast_status` (stored once, ``video.live_stream.simulcast_target.<status>``); a session's end
sets any target still marked otherwise back to ``idle``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import sqlalchemy as sa
from pydantic import Field, model_validator
from sqlalchemy.orm import Session, selectinload

from kinoray.control.assets import (
    TIER_HEIGHTS,
    AdvancedPlaybackPolicy,
    NewAssetSettings,
    Policy,
    asset_view,
    create_asset,
    input_key,
    mux_max_resolution_tier,
    queue_transcode,
)
from kinoray.control.events import emit
from kinoray.control.jobs import error_asset, media_fields, publish_asset
from kinoray.control.lookup import find
from kinoray.control.requests import RequestModel
from kinoray.control.restrictions import Viewer
from kinoray.control.views import LiveStreamView, PlaybackIdView, SimulcastTargetView
from kinoray.errors import (
    ConflictError,
    IngestRefusedError,
    InvalidParametersError,
    KinorayError,
    MediaError,
    NotFoundError,
)
from kinoray.live.recording import (
    PublishedRecording,
    discard_logs,
    publish_recording,
    recording_open,
    recording_sections,
)
from kinoray.media.flv_join import join_flv
from kinoray.store import keys
from kinoray.store.db import newest_first
from kinoray.store.models import (
    Asset,
    AssetStatus,
    LiveStream,
    LiveStreamPlaybackId,
    LiveStreamStatus,
    PlaybackPolicy,
    SimulcastTarget,
    is_valid_id,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    from kinoray.control.platform import Platform
    from kinoray.store.objects import ObjectStore

__all__ = [
    "LivePublish",
    "LiveStreamCreate",
    "LiveStreamUpdate",
    "SimulcastPush",
    "SimulcastTargetCreate",
    "admit_live_viewer",
    "authorize_publish",
    "complete_live_stream",
    "create_live_stream",
    "create_live_playback_id",
    "create_simulcast_target",
    "delete_live_playback_id",
    "delete_live_stream",
    "delete_simulcast_target",
    "expire_live",
    "get_live_playback_id",
    "get_live_stream",
    "get_simulcast_target",
    "hash_stream_key",
    "list_live_streams",
    "live_playback_id_view",
    "live_prefix",
    "live_stream_view",
    "publish_active",
    "publish_ended",
    "publish_refusal",
    "publish_should_stop",
    "recording_ended",
    "reset_stream_key",
    "set_live_stream_enabled",
    "set_simulcast_status",
    "simulcast_target_view",
    "source_part_key",
    "update_live_stream",
    "uses_slate",
]

log = logging.getLogger(__name__)

LatencyMode = Literal["standard", "reduced", "low"]
#: Mux's default reconnect window per latency mode (seconds) and its bound.
DEFAULT_RECONNECT_WINDOW = {"standard": 60.0, "reduced": 0.0, "low": 0.0}
MAX_RECONNECT_WINDOW = 1800.0
#: Mux's ``max_continuous_duration`` bounds (seconds); the default is the maximum, 12 hours.
MIN_CONTINUOUS_DURATION, MAX_CONTINUOUS_DURATION = 60, 43200
#: A session still ``connected``/``recording`` this long past its ``max_continuous_duration`` has lost its
#: runtime (which stops a publisher at the limit): :func:`expire_live` ends it.
STALE_SESSION_GRACE = timedelta(minutes=5)
#: A recording left ``live`` by no session (its finishing was interrupted) this long is finished again.
ORPHAN_GRACE = timedelta(minutes=10)
_MAX_KEY_LENGTH = 256
_EXPIRY_BATCH = 100


# --- requests ------------------------------------------------------------------------------------------------


class LiveStreamMeta(RequestModel):
    """Mux's live stream ``meta``."""

    title: str | None = Field(default=None, max_length=512)


class SimulcastTargetCreate(RequestModel):
    """``POST /video/v1/live-streams/{id}/simulcast-targets``: an RTMP(S) URL and stream key to push to."""

    url: str = Field(min_length=1, max_length=2048, pattern=r"^rtmps?://\S+$",
                     description="rtmp:// or rtmps:// URL of the target's ingest (application included)")
    stream_key: str | None = Field(default=None, max_length=1024)
    passthrough: str | None = Field(default=None, max_length=255)


class _LiveSettings(RequestModel):
    """Fields create and update share, validated alike."""

    reconnect_window: float | None = Field(default=None, ge=0, le=MAX_RECONNECT_WINDOW,
                                           description="seconds; default 60 (standard latency), 0 (reduced/low)")
    use_slate_for_standard_latency: bool | None = None
    reconnect_slate_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    max_continuous_duration: int | None = Field(default=None, ge=MIN_CONTINUOUS_DURATION,
                                                le=MAX_CONTINUOUS_DURATION, description="seconds; default 43200")
    passthrough: str | None = Field(default=None, max_length=255)
    latency_mode: LatencyMode | None = None
    meta: LiveStreamMeta | None = None
    kinoray_scheduled_start: datetime | None = Field(
        default=None, description="kinoray: the stream key is refused before this (unix seconds or ISO 8601); "
                                  "null: at once")
    kinoray_scheduled_end: datetime | None = Field(
        default=None, description="kinoray: the stream key is refused, and a publisher stopped, from this on; "
                                  "null: no end")

    @model_validator(mode="after")
    def _aware_schedule(self) -> _LiveSettings:
        for name in ("kinoray_scheduled_start", "kinoray_scheduled_end"):
            when = getattr(self, name)
            if when is not None:
                try:  # an ISO time without an offset: UTC
                    setattr(self, name, (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC))
                except OverflowError:
                    raise ValueError(f"{name}: out of range") from None
        _check_schedule(self.kinoray_scheduled_start, self.kinoray_scheduled_end)
        return self


def _check_schedule(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidParametersError("kinoray_scheduled_end must be after kinoray_scheduled_start")


class LiveStreamCreate(_LiveSettings):
    """``POST /video/v1/live-streams`` (Mux's ``CreateLiveStreamRequest``). The deprecated ``reduced_latency`` /
    ``low_latency`` booleans choose the latency mode when ``latency_mode`` is not given. Subtitles on live
    streams are not offered: a non-empty ``embedded_subtitles`` / ``generated_subtitles`` is refused."""

    playback_policies: list[Policy] | None = Field(default=None, max_length=4)
    playback_policy: list[Policy] | Policy | None = Field(default=None, description="deprecated Mux name")
    advanced_playback_policies: list[AdvancedPlaybackPolicy] | None = Field(default=None, max_length=4)
    new_asset_settings: NewAssetSettings | None = None
    audio_only: bool = False
    embedded_subtitles: list[dict[str, Any]] | None = Field(default=None, description="refused when non-empty")
    generated_subtitles: list[dict[str, Any]] | None = Field(default=None, description="refused when non-empty")
    reduced_latency: bool | None = Field(default=None, description="deprecated: latency_mode reduced")
    low_latency: bool | None = Field(default=None, description="deprecated: latency_mode low")
    test: bool = False
    simulcast_targets: list[SimulcastTargetCreate] | None = Field(default=None, max_length=6)

    @model_validator(mode="after")
    def _supported(self) -> LiveStreamCreate:
        refused = [name for name in ("embedded_subtitles", "generated_subtitles") if getattr(self, name)]
        if refused:
            raise ValueError(f"{', '.join(refused)}: not supported on live streams by kinoray yet (docs/API.md)")
        if any(entry.policy == "drm" for entry in self.advanced_playback_policies or ()):
            raise ValueError("advanced_playback_policies: DRM is not offered by kinoray (use public or signed)")
        return self

    def mode(self) -> str:
        if self.latency_mode is not None:
            return self.latency_mode
        return "low" if self.low_latency else "reduced" if self.reduced_latency else "standard"

    def policies(self) -> list[str]:
        return NewAssetSettings(playback_policies=self.playback_policies, playback_policy=self.playback_policy,
                                advanced_playback_policies=self.advanced_playback_policies).policies()


class NewAssetSettingsUpdate(RequestModel):
    """Mux's ``UpdateLiveStreamNewAssetSettings``: what may change in the recording's settings."""

    mp4_support: Literal["none", "standard", "capped-1080p", "audio-only", "audio-only,capped-1080p"] | None = None
    master_access: Literal["none", "temporary"] | None = None
    video_quality: Literal["plus", "premium"] | None = Field(default=None, description="Mux: plus or premium")
    meta: dict[str, str | None] | None = None


class LiveStreamUpdate(_LiveSettings):
    """``PATCH /video/v1/live-streams/{id}`` (Mux's ``UpdateLiveStreamRequest``): fields left out stay."""

    new_asset_settings: NewAssetSettingsUpdate | None = None


# --- views ---------------------------------------------------------------------------------------------------


def _unix(when: datetime) -> str:
    return str(int(when.timestamp()))


#: Mux's ``active_ingest_protocol`` for each of kinoray's (Mux's enum has no rtmps: RTMPS is RTMP over TLS).
_MUX_INGEST_PROTOCOLS = {"rtmp": "rtmp", "rtmps": "rtmp", "srt": "srt"}


def live_playback_id_view(playback: LiveStreamPlaybackId) -> PlaybackIdView:
    return PlaybackIdView(id=playback.id, policy=playback.policy.value)


def simulcast_target_view(target: SimulcastTarget) -> SimulcastTargetView:
    return SimulcastTargetView.model_validate({
        "id": target.id, "url": target.url, "stream_key": target.stream_key, "passthrough": target.passthrough,
        "status": target.status, "error_severity": target.error_severity if target.status == "errored" else None})


def live_stream_view(stream: LiveStream, *, stream_key: str | None = None) -> LiveStreamView:
    """The live stream as the API shows it (Mux's ``LiveStream``, :class:`LiveStreamView`). ``stream_key`` only
    when just made (create, reset): only its hash is kept. ``kinoray_session`` is the ingest session's state
    (none, connected, recording, disconnected). The recording's ``max_resolution_tier`` is Mux's (kinoray's own
    ``720p`` in ``kinoray_max_resolution_tier``)."""
    asset_settings = dict(stream.new_asset_settings) if stream.new_asset_settings is not None else None
    kinoray_tier = None
    if asset_settings is not None and "max_resolution_tier" in asset_settings:
        asset_settings["max_resolution_tier"], kinoray_tier = mux_max_resolution_tier(
            asset_settings["max_resolution_tier"])
    return LiveStreamView.model_validate({
        "id": stream.id,
        "created_at": _unix(stream.created_at),
        "stream_key": stream_key,
        "status": str(stream.status.value),
        "active_asset_id": stream.active_asset_id,
        "recent_asset_ids": list(stream.recent_asset_ids or []),
        "playback_ids": [live_playback_id_view(p) for p in stream.playback_ids],
        "new_asset_settings": asset_settings,
        "kinoray_max_resolution_tier": kinoray_tier,
        "passthrough": stream.passthrough,
        "audio_only": stream.audio_only,
        "reconnect_window": stream.reconnect_window,
        "use_slate_for_standard_latency": stream.use_slate_for_standard_latency,
        "reconnect_slate_url": stream.reconnect_slate_url,
        "latency_mode": stream.latency_mode,
        "simulcast_targets": [simulcast_target_view(t) for t in stream.simulcast_targets],
        "max_continuous_duration": stream.max_continuous_duration,
        "test": stream.test or None,
        "meta": stream.meta or None,
        "kinoray_session": stream.session_state,
        "active_ingest_protocol": _MUX_INGEST_PROTOCOLS.get(stream.active_ingest_protocol or ""),
        "kinoray_active_ingest_protocol": stream.active_ingest_protocol,
        "kinoray_scheduled_start": _unix(stream.scheduled_start) if stream.scheduled_start else None,
        "kinoray_scheduled_end": _unix(stream.scheduled_end) if stream.scheduled_end else None,
    })


# --- stream keys ---------------------------------------------------------------------------------------------


def hash_stream_key(key: str) -> str:
    """SHA-256 (hex) of a stream key: what ``live_streams.stream_key_hash`` holds."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _new_stream_key() -> tuple[str, str]:
    key = secrets.token_urlsafe(32)
    return key, hash_stream_key(key)


def _stream_by_key(session: Session, key: str, *, for_update: bool = False) -> LiveStream | None:
    if not key or len(key) > _MAX_KEY_LENGTH:
        return None
    digest = hash_stream_key(key)
    query = sa.select(LiveStream).where(LiveStream.stream_key_hash == digest)
    if for_update:
        query = query.with_for_update()
    stream = session.scalars(query).one_or_none()
    if stream is None or not hmac.compare_digest(stream.stream_key_hash, digest):
        return None
    return stream


# --- the resource --------------------------------------------------------------------------------------------

_LOADS = (selectinload(LiveStream.playback_ids), selectinload(LiveStream.simulcast_targets))


def get_live_stream(session: Session, live_stream_id: str, *, for_update: bool = False) -> LiveStream:
    """The live stream, or ``NotFoundError``."""
    return find(session, LiveStream, live_stream_id, what="live stream", for_update=for_update, options=_LOADS)


def create_live_stream(session: Session, body: LiveStreamCreate) -> tuple[LiveStream, str]:
    """A new ``idle`` live stream with its playback ids and simulcast targets, and ``video.live_stream.created``;
    ``(stream, stream key)`` — the key is not kept anywhere."""
    key, digest = _new_stream_key()
    mode = body.mode()
    stream = LiveStream(
        id=new_id(), status=LiveStreamStatus.IDLE, stream_key_hash=digest, latency_mode=mode,
        reconnect_window=body.reconnect_window if body.reconnect_window is not None
        else DEFAULT_RECONNECT_WINDOW[mode],
        max_continuous_duration=body.max_continuous_duration or MAX_CONTINUOUS_DURATION,
        use_slate_for_standard_latency=bool(body.use_slate_for_standard_latency),
        reconnect_slate_url=body.reconnect_slate_url,
        new_asset_settings=body.new_asset_settings.model_dump(mode="json", exclude_unset=True)
        if body.new_asset_settings is not None else None,
        passthrough=body.passthrough, audio_only=body.audio_only, test=body.test,
        scheduled_start=body.kinoray_scheduled_start, scheduled_end=body.kinoray_scheduled_end,
        meta=body.meta.model_dump(exclude_none=True) if body.meta else {},
        recent_asset_ids=[], session_state="none", recording_parts=0, complete_requested=False)
    session.add(stream)
    for policy in body.policies():
        session.add(LiveStreamPlaybackId(id=new_id(), live_stream_id=stream.id, policy=PlaybackPolicy(policy)))
    for target in body.simulcast_targets or ():
        session.add(SimulcastTarget(id=new_id(), live_stream_id=stream.id, url=target.url,
                                    stream_key=target.stream_key, passthrough=target.passthrough, status="idle"))
    session.flush()
    session.refresh(stream)
    emit(session, "video.live_stream.created", "live_stream", stream.id, live_stream_view(stream))
    return stream, key


def list_live_streams(session: Session, *, limit: int, page: int = 1, cursor: str | None = None,
                      stream_key: str | None = None, status: str | None = None) -> tuple[list[LiveStream], str | None]:
    """A page of live streams, newest first; ``stream_key`` finds the one stream with that key (Mux's filter),
    ``status`` keeps one status.

    Raises:
        InvalidParametersError: a bad cursor or page, or an unknown status.
    """
    where: list[sa.ColumnElement[bool]] = []
    if stream_key is not None:
        where.append(LiveStream.stream_key_hash == hash_stream_key(stream_key))
    if status is not None:
        if status not in {member.value for member in LiveStreamStatus}:
            raise InvalidParametersError(f"status must be one of idle, active, disabled, not {status[:32]!r}")
        where.append(LiveStream.status == LiveStreamStatus(status))
    try:
        return newest_first(session, LiveStream, limit=limit, cursor=cursor, page=page, where=where, options=_LOADS)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def update_live_stream(session: Session, live_stream_id: str, body: LiveStreamUpdate) -> LiveStream:
    """``PATCH``: the fields given change (``latency_mode`` only between sessions), ``video.live_stream.updated``.

    Raises:
        NotFoundError: no such live stream.
        ConflictError: ``latency_mode`` changed while a session runs.
    """
    stream = get_live_stream(session, live_stream_id, for_update=True)
    changes = body.model_dump(exclude_unset=True)
    if "latency_mode" in changes and body.latency_mode is None:
        raise InvalidParametersError("latency_mode: standard, reduced or low, not null")
    if body.latency_mode is not None and body.latency_mode != stream.latency_mode:
        if stream.session_state != "none":
            raise ConflictError("latency_mode cannot change while the live stream has a session")
        stream.latency_mode = body.latency_mode
    for name in ("reconnect_window", "max_continuous_duration", "use_slate_for_standard_latency"):
        if changes.get(name) is not None:
            setattr(stream, name, changes[name])
    for name in ("reconnect_slate_url", "passthrough"):
        if name in changes:
            setattr(stream, name, changes[name])
    if "meta" in changes:
        stream.meta = body.meta.model_dump(exclude_none=True) if body.meta else {}
    schedule = [getattr(body, f"kinoray_{name}") if f"kinoray_{name}" in changes else getattr(stream, name)
                for name in ("scheduled_start", "scheduled_end")]
    _check_schedule(*schedule)
    stream.scheduled_start, stream.scheduled_end = schedule
    if body.new_asset_settings is not None:
        settings = dict(stream.new_asset_settings or {})
        settings.update(body.new_asset_settings.model_dump(exclude_unset=True))
        try:
            NewAssetSettings.model_validate({key: value for key, value in settings.items() if value is not None})
        except ValueError as error:
            raise InvalidParametersError(f"new_asset_settings: {error}") from None
        stream.new_asset_settings = settings
    stream.updated_at = utcnow()
    session.flush()
    emit(session, "video.live_stream.updated", "live_stream", stream.id, live_stream_view(stream))
    return stream


def reset_stream_key(session: Session, live_stream_id: str) -> tuple[LiveStream, str]:
    """A new stream key (the old one stops working at once; a running session goes on), and
    ``video.live_stream.updated``; ``(stream, new key)``."""
    stream = get_live_stream(session, live_stream_id, for_update=True)
    key, stream.stream_key_hash = _new_stream_key()
    stream.updated_at = utcnow()
    session.flush()
    emit(session, "video.live_stream.updated", "live_stream", stream.id, live_stream_view(stream))
    return stream, key


def set_live_stream_enabled(platform: Platform, live_stream_id: str, enabled: bool,
                            now: datetime | None = None) -> None:
    """``PUT …/enable`` / ``…/disable`` (``video.live_stream.enabled`` / ``disabled``). A disabled stream
    refuses its key; its running publisher is told to stop (:func:`publish_should_stop`) and its session ends
    without a reconnect window. Enabling a stream that is not disabled changes nothing.

    Raises:
        NotFoundError: no such live stream.
    """
    with platform.db.session() as session:
        stream = get_live_stream(session, live_stream_id, for_update=True)
        if enabled == (stream.status != LiveStreamStatus.DISABLED):
            return
        if enabled:
            stream.status = LiveStreamStatus.ACTIVE if stream.session_state == "recording" else LiveStreamStatus.IDLE
        else:
            stream.status = LiveStreamStatus.DISABLED
        stream.updated_at = utcnow()
        session.flush()
        emit(session, f"video.live_stream.{'enabled' if enabled else 'disabled'}", "live_stream", stream.id,
             live_stream_view(stream))
        ended = _end_if_disconnected(session, stream, now or utcnow())
    _finish_recording(platform, ended)


def complete_live_stream(platform: Platform, live_stream_id: str, now: datetime | None = None) -> None:
    """``PUT …/complete``: end the session as Mux does, without a reconnect window: at once when the publisher
    is gone, else when it stops (told by :func:`publish_should_stop`, then :func:`publish_ended`). No session:
    nothing to do.

    Raises:
        NotFoundError: no such live stream.
    """
    with platform.db.session() as session:
        stream = get_live_stream(session, live_stream_id, for_update=True)
        if stream.session_state == "none":
            return
        stream.complete_requested = True
        ended = _end_if_disconnected(session, stream, now or utcnow())
    _finish_recording(platform, ended)


def delete_live_stream(platform: Platform, live_stream_id: str) -> None:
    """``DELETE``: the stream, its playback ids and simulcast targets go (``video.live_stream.deleted``); a
    session's recording is finished as at its end (a running publisher is told to stop; what it writes after
    this is not in the recording).

    Raises:
        NotFoundError: no such live stream.
    """
    with platform.db.session() as session:
        stream = get_live_stream(session, live_stream_id, for_update=True)
        view = live_stream_view(stream)
        recording = stream.active_asset_id if stream.session_state != "none" else None
        if recording is not None:
            _mark_recording_done(session, recording)
        session.delete(stream)
        session.flush()
        emit(session, "video.live_stream.deleted", "live_stream", live_stream_id, view)
    _finish_recording(platform, recording)


def create_live_playback_id(session: Session, live_stream_id: str, policy: str) -> LiveStreamPlaybackId:
    """A new playback id on the live stream (``video.live_stream.updated``)."""
    stream = get_live_stream(session, live_stream_id, for_update=True)
    playback = LiveStreamPlaybackId(id=new_id(), live_stream_id=stream.id, policy=PlaybackPolicy(policy))
    session.add(playback)
    _touched(session, stream)
    return playback


Child = TypeVar("Child", LiveStreamPlaybackId, SimulcastTarget)


def _child(session: Session, model: type[Child], live_stream_id: str, child_id: str, what: str) -> Child:
    """The live stream's playback id or simulcast target ``child_id``, or ``NotFoundError``."""
    child = session.get(model, child_id) if is_valid_id(child_id) else None
    if child is None or child.live_stream_id != live_stream_id:
        raise NotFoundError(f"no {what} {child_id[:80]!r} on live stream {live_stream_id[:80]!r}")
    return child


def get_live_playback_id(session: Session, live_stream_id: str, playback_id: str) -> LiveStreamPlaybackId:
    get_live_stream(session, live_stream_id)
    return _child(session, LiveStreamPlaybackId, live_stream_id, playback_id, "playback id")


def delete_live_playback_id(session: Session, live_stream_id: str, playback_id: str) -> None:
    stream = get_live_stream(session, live_stream_id, for_update=True)
    session.delete(_child(session, LiveStreamPlaybackId, live_stream_id, playback_id, "playback id"))
    _touched(session, stream)


def create_simulcast_target(session: Session, live_stream_id: str, body: SimulcastTargetCreate) -> SimulcastTarget:
    """A simulcast target (status ``idle``; ``video.live_stream.simulcast_target.created``). As in Mux, only
    while the stream has no session.

    Raises:
        ConflictError: the stream has a session.
    """
    stream = get_live_stream(session, live_stream_id, for_update=True)
    if stream.session_state != "none":
        raise ConflictError("simulcast targets can be added only while the live stream has no session")
    target = SimulcastTarget(id=new_id(), live_stream_id=stream.id, url=body.url, stream_key=body.stream_key,
                             passthrough=body.passthrough, status="idle")
    session.add(target)
    session.flush()
    emit(session, "video.live_stream.simulcast_target.created", "simulcast_target", target.id,
         simulcast_target_view(target))
    _touched(session, stream)
    return target


def get_simulcast_target(session: Session, live_stream_id: str, target_id: str) -> SimulcastTarget:
    get_live_stream(session, live_stream_id)
    return _child(session, SimulcastTarget, live_stream_id, target_id, "simulcast target")


def delete_simulcast_target(session: Session, live_stream_id: str, target_id: str) -> None:
    stream = get_live_stream(session, live_stream_id, for_update=True)
    target = _child(session, SimulcastTarget, live_stream_id, target_id, "simulcast target")
    view = simulcast_target_view(target)
    session.delete(target)
    session.flush()
    emit(session, "video.live_stream.simulcast_target.deleted", "simulcast_target", target_id, view)
    _touched(session, stream)


def _touched(session: Session, stream: LiveStream) -> None:
    stream.updated_at = utcnow()
    session.flush()
    session.refresh(stream)
    emit(session, "video.live_stream.updated", "live_stream", stream.id, live_stream_view(stream))


# --- the ingest session (called by the live runtime) ---------------------------------------------------------


def live_prefix(live_stream_id: str) -> str:
    """Object-store prefix of a live stream's live HLS output (what a live playback id serves)."""
    return keys.live_prefix(live_stream_id)


def source_part_key(asset_id: str, part: int) -> str:
    """Object-store key of one publisher connection's source FLV of a recording."""
    return keys.input_part_key(asset_id, part)


@dataclass(frozen=True)
class SimulcastPush:
    """A simulcast target the runtime pushes a session to (its status goes back through
    :func:`set_simulcast_status`)."""

    target_id: str
    url: str
    stream_key: str | None = field(repr=False)  # the target platform's secret: never in logs


@dataclass(frozen=True)
class LivePublish:
    """An accepted publish: what the runtime needs to run the session.

    ``source_key`` is where the runtime writes this connection's source FLV when ``keep_source`` (a fresh part
    per connection; the parts are joined when the session ends); ``part`` also names the connection's section
    of the recording (:class:`kinoray.live.recording.RecordingTarget`). ``continued``: this connection resumes a session within its
    reconnect window (the same recording asset, a discontinuity in the live output). ``started_at`` is when the
    session began: the runtime stops the publisher ``max_continuous_duration`` seconds after it.

    The runtime commits the part (one ``ObjectStore.put_stream``: it appears whole or not at all) *before* it
    calls :func:`publish_ended`, which may finish the recording at once; a part committed after its session
    ended is not in the recording."""

    live_stream_id: str
    asset_id: str
    latency_mode: str
    reconnect_window: float
    max_continuous_duration: int
    continued: bool
    part: int
    source_key: str
    live_prefix: str
    audio_only: bool
    test: bool
    started_at: datetime
    #: The stream's simulcast targets, each pushed the source while this connection lasts.
    simulcast_targets: tuple[SimulcastPush, ...] = ()
    #: Whether the runtime writes the source FLV part at all: only a recording with ``master_access:
    #: temporary`` (the master download) or of a ``test`` stream (cut and watermarked: transcoded) needs its
    #: source; the recording itself is the live segments.
    keep_source: bool = False
    #: Whether viewers see a slate while the publisher is away within the reconnect window
    #: (:func:`uses_slate`), and the image to make it of (``reconnect_slate_url``; ``None``: the default slate).
    slate: bool = False
    slate_url: str | None = None


def uses_slate(latency_mode: str, reconnect_window: float, use_slate_for_standard_latency: bool,
               audio_only: bool = False) -> bool:
    """Mux's rule for slates: only within a reconnect window (``reconnect_window`` > 0); always for ``reduced``
    and ``low`` latency, for ``standard`` only with ``use_slate_for_standard_latency``; never for an audio-only
    stream (kinoray: there is no picture to show)."""
    if reconnect_window <= 0 or audio_only:
        return False
    return latency_mode != "standard" or use_slate_for_standard_latency


def authorize_publish(platform: Platform, key: str, now: datetime | None = None, *,
                      protocol: str = "rtmp") -> LivePublish | None:
    """The publish a stream key opens, or ``None``: unknown (wrong, reset or deleted) key, disabled stream, or a
    stream whose publisher is still connected (one ingest per stream). ``protocol`` (``rtmp``, ``rtmps``) is
    shown as the stream's ``active_ingest_protocol`` while the publisher stays. Accepting marks the stream
    ``connected`` (``video.live_stream.connected``) and starts a recording — a new ``preparing`` asset with the
    stream's ``new_asset_settings`` (``video.asset.created``) — or, within the reconnect window after a
    disconnect, continues the session's recording. A window already over ends that session first.

    One indexed lookup by the key's hash and a constant-time compare; the row is locked, so two publishers
    racing with one key get one session.

    Raises:
        IngestRefusedError: a scheduled stream outside its schedule (reason ``not_started`` before
            ``scheduled_start``, ``schedule_ended`` from ``scheduled_end``).
    """
    now = now or utcnow()
    ended: str | None = None
    with platform.db.session() as session:
        stream = _stream_by_key(session, key, for_update=True)
        if stream is None or stream.status == LiveStreamStatus.DISABLED or \
                stream.session_state in ("connected", "recording"):
            return None
        if stream.scheduled_start is not None and now < stream.scheduled_start:
            raise IngestRefusedError(f"the live stream is scheduled to start at {stream.scheduled_start}",
                                     reason="not_started")
        if _after_schedule(stream, now):
            raise IngestRefusedError(f"the live stream's schedule ended at {stream.scheduled_end}",
                                     reason="schedule_ended")
        continued = stream.session_state == "disconnected" and not _window_over(stream, now) and \
            _recording_open(session, stream.active_asset_id)
        if stream.session_state == "disconnected" and not continued:
            ended = _end_session(session, stream, now)
        if not continued:
            create = NewAssetSettings.model_validate({**(stream.new_asset_settings or {}), "test": stream.test}
                                                     if stream.test else (stream.new_asset_settings or {}))
            asset = create_asset(session, platform.settings, create, input_url=None, live_stream_id=stream.id,
                                 environment_id=stream.environment_id)
            stream.active_asset_id, stream.recording_parts = asset.id, 0
            stream.session_started_at, stream.complete_requested = now, False
        assert stream.active_asset_id is not None and stream.session_started_at is not None
        part = stream.recording_parts
        stream.recording_parts, stream.session_state, stream.disconnected_at = part + 1, "connected", None
        stream.active_ingest_protocol = protocol
        stream.updated_at = now
        session.flush()
        emit(session, "video.live_stream.connected", "live_stream", stream.id, live_stream_view(stream))
        publish = LivePublish(
            live_stream_id=stream.id, asset_id=stream.active_asset_id, latency_mode=stream.latency_mode,
            reconnect_window=stream.reconnect_window, max_continuous_duration=stream.max_continuous_duration,
            continued=continued, part=part, source_key=source_part_key(stream.active_asset_id, part),
            live_prefix=live_prefix(stream.id), audio_only=stream.audio_only, test=stream.test,
            started_at=stream.session_started_at,
            simulcast_targets=tuple(SimulcastPush(target.id, target.url, target.stream_key)
                                    for target in stream.simulcast_targets),
            keep_source=stream.test or (stream.new_asset_settings or {}).get("master_access") == "temporary",
            slate=uses_slate(stream.latency_mode, stream.reconnect_window, stream.use_slate_for_standard_latency,
                             stream.audio_only),
            slate_url=stream.reconnect_slate_url)
    _finish_recording(platform, ended)
    return publish


def publish_refusal(platform: Platform, key: str) -> str:
    """Why :func:`authorize_publish` refused ``key``, for an ingest that answers with more than a closed
    connection (WHIP's HTTP status): ``bad_key`` (no stream has it: wrong, reset or deleted), ``disabled``, or
    ``busy`` (its publisher is still connected)."""
    with platform.db.reader() as session:
        stream = _stream_by_key(session, key)
        if stream is None:
            return "bad_key"
        return "disabled" if stream.status == LiveStreamStatus.DISABLED else "busy"


def admit_live_viewer(platform: Platform, playback_id: str, token: str | None, headers: Mapping[str, str]) -> str:
    """The live stream a WHEP viewer of ``playback_id`` may watch (its id): the checks of a stream request
    (a signed id's token for audience ``v``, its playback restriction on the viewer's ``headers``, lower-case
    names), without the stream's state.

    Raises:
        NotFoundError: an unknown id, or an asset's. PlaybackForbiddenError, PlaybackRestrictedError.
    """
    record, _ = platform.resolver.admit(playback_id, token, "v", Viewer.from_headers(headers))
    if record.live_stream_id is None:
        raise NotFoundError(f"playback id {playback_id} is not a live stream's")
    return record.live_stream_id


def publish_active(platform: Platform, live_stream_id: str, now: datetime | None = None) -> bool:
    """The session is playable (its first segment; at low latency its first LL-HLS part): ``connected`` → ``recording``, status ``active`` (unless
    disabled meanwhile), ``video.live_stream.recording`` and ``video.live_stream.active``. ``False`` (nothing
    changed) when the stream is gone or not ``connected``."""
    with platform.db.session() as session:
        stream = session.get(LiveStream, live_stream_id, with_for_update=True) if is_valid_id(live_stream_id) else None
        if stream is None or stream.session_state != "connected":
            return False
        stream.session_state = "recording"
        if stream.status != LiveStreamStatus.DISABLED:
            stream.status = LiveStreamStatus.ACTIVE
        stream.updated_at = now or utcnow()
        session.flush()
        view = live_stream_view(stream)
        emit(session, "video.live_stream.recording", "live_stream", stream.id, view)
        emit(session, "video.live_stream.active", "live_stream", stream.id, view)
        return True


def publish_ended(platform: Platform, live_stream_id: str, error: str | None = None,
                  now: datetime | None = None) -> bool:
    """The publisher is gone (``error``: why, if it failed; logged): ``disconnected``
    (``video.live_stream.disconnected``) and the reconnect window starts — or, when the window is 0 or the
    session was completed, disabled or ran its ``max_continuous_duration``, the session ends now
    (``video.live_stream.idle``, the recording finished). ``False`` when there was no connected session."""
    now = now or utcnow()
    with platform.db.session() as session:
        stream = session.get(LiveStream, live_stream_id, with_for_update=True) if is_valid_id(live_stream_id) else None
        if stream is None or stream.session_state not in ("connected", "recording"):
            return False
        if error:
            log.info("live publisher ended with an error", extra={"live_stream": live_stream_id, "error": error})
        stream.session_state, stream.disconnected_at, stream.updated_at = "disconnected", now, now
        stream.active_ingest_protocol = None
        session.flush()
        emit(session, "video.live_stream.disconnected", "live_stream", stream.id, live_stream_view(stream))
        ended = _end_if_disconnected(session, stream, now)
    _finish_recording(platform, ended)
    return True


def publish_should_stop(platform: Platform, live_stream_id: str, asset_id: str,
                        now: datetime | None = None) -> str | None:
    """Why the runtime must drop the publisher of the session recording ``asset_id`` now, or ``None`` to go on:
    ``deleted``, ``disabled``, ``completed`` (``PUT …/complete``), ``max_continuous_duration``,
    ``scheduled_end``, or
    ``superseded`` (the session is not this one any more). Poll it every few seconds; one primary-key read."""
    now = now or utcnow()
    with platform.db.reader() as session:
        stream = session.get(LiveStream, live_stream_id) if is_valid_id(live_stream_id) else None
        if stream is None:
            return "deleted"
        if stream.active_asset_id != asset_id or stream.session_state == "none":
            return "superseded"
        if stream.status == LiveStreamStatus.DISABLED:
            return "disabled"
        if stream.complete_requested:
            return "completed"
        if _over_duration(stream, now):
            return "max_continuous_duration"
        if _after_schedule(stream, now):
            return "scheduled_end"
        return None


def expire_live(platform: Platform, now: datetime | None = None) -> int:
    """End the sessions whose time is up, each as its end does (``video.live_stream.idle``, the recording's parts
    joined and its transcode queued); how many. Ended: disconnected past the reconnect window (or completed,
    or disabled); still ``connected``/``recording`` :data:`STALE_SESSION_GRACE` past
    ``max_continuous_duration`` (the runtime that should have stopped it is gone). Recordings whose finishing
    was interrupted are finished again after :data:`ORPHAN_GRACE`. The runner calls this every
    ``serve.sweep_seconds``."""
    now = now or utcnow()
    with platform.db.reader() as session:
        # two queries, so running streams never crowd the disconnected ones out of a batch (and the reverse)
        candidates = list(session.scalars(
            sa.select(LiveStream.id).where(LiveStream.session_state == "disconnected")
            .order_by(LiveStream.disconnected_at).limit(_EXPIRY_BATCH)))
        candidates += session.scalars(
            sa.select(LiveStream.id).where(
                LiveStream.session_state.in_(("connected", "recording")),
                LiveStream.session_started_at <= now - STALE_SESSION_GRACE - timedelta(seconds=MIN_CONTINUOUS_DURATION))
            .order_by(LiveStream.session_started_at).limit(_EXPIRY_BATCH))
        orphans = list(session.scalars(
            sa.select(Asset.id).where(Asset.status == AssetStatus.PREPARING, Asset.progress_state == "live",
                                      Asset.updated_at <= now - ORPHAN_GRACE,
                                      ~sa.exists().where(LiveStream.active_asset_id == Asset.id))
            .limit(_EXPIRY_BATCH)))
    ended = 0
    for live_stream_id in candidates:
        with platform.db.session() as session:
            stream = session.get(LiveStream, live_stream_id, with_for_update=True)
            if stream is None:
                continue
            recording = _end_if_disconnected(session, stream, now)
            if recording is None and stream.session_state in ("connected", "recording") and \
                    _over_duration(stream, now - STALE_SESSION_GRACE):
                log.warning("live session outlived its limit: ended", extra={"live_stream": live_stream_id})
                recording = _end_session(session, stream, now)
        if recording is not None:
            ended += 1
            _finish_recording(platform, recording)
    for asset_id in orphans:
        if _claim_orphan(platform, asset_id, now):
            log.warning("finishing a live recording left unfinished", extra={"asset": asset_id})
            _finish_recording(platform, asset_id, force=True)
    return ended


def _claim_orphan(platform: Platform, asset_id: str, now: datetime) -> bool:
    """Take an unfinished recording for :data:`ORPHAN_GRACE` (one process finishes it, not every sweeper)."""
    with platform.db.session() as session:
        claimed = session.execute(
            sa.update(Asset).where(Asset.id == asset_id, Asset.progress_state == "live",
                                   Asset.updated_at <= now - ORPHAN_GRACE)
            .values(updated_at=now).execution_options(synchronize_session=False))
        return bool(getattr(claimed, "rowcount", 0))


# --- session helpers -----------------------------------------------------------------------------------------


def _window_over(stream: LiveStream, now: datetime) -> bool:
    return stream.disconnected_at is None or stream.complete_requested or \
        stream.status == LiveStreamStatus.DISABLED or \
        now >= stream.disconnected_at + timedelta(seconds=stream.reconnect_window) or _over_duration(stream, now) \
        or _after_schedule(stream, now)


def _after_schedule(stream: LiveStream, now: datetime) -> bool:
    return stream.scheduled_end is not None and now >= stream.scheduled_end


def _over_duration(stream: LiveStream, now: datetime) -> bool:
    return stream.session_started_at is not None and \
        now >= stream.session_started_at + timedelta(seconds=stream.max_continuous_duration)


def _recording_open(session: Session, asset_id: str | None) -> bool:
    asset = session.get(Asset, asset_id) if asset_id else None
    return asset is not None and asset.progress_state == "live"


def _end_if_disconnected(session: Session, stream: LiveStream, now: datetime) -> str | None:
    """End a disconnected session whose reconnect window is over (:func:`_end_session`); its recording's id."""
    if stream.session_state == "disconnected" and _window_over(stream, now):
        return _end_session(session, stream, now)
    return None


def _end_session(session: Session, stream: LiveStream, now: datetime) -> str | None:
    """The session is over: status ``idle`` (unless disabled), ``video.live_stream.idle``; the recording's id,
    to finish after the commit (:func:`_finish_recording`)."""
    recording = stream.active_asset_id
    if recording is not None:
        stream.recent_asset_ids = [*(stream.recent_asset_ids or []), recording][-10:]
        _mark_recording_done(session, recording)
    stream.active_asset_id, stream.session_state, stream.session_started_at = None, "none", None
    stream.active_ingest_protocol = None
    stream.disconnected_at, stream.complete_requested, stream.recording_parts = None, False, 0
    if stream.status != LiveStreamStatus.DISABLED:
        stream.status = LiveStreamStatus.IDLE
    stream.updated_at = now
    session.flush()
    emit(session, "video.live_stream.idle", "live_stream", stream.id, live_stream_view(stream))
    # the runtime's pushers report idle themselves; this covers a runtime that was lost (rows locked: one of the
    # two writes the idle and its event)
    for target in session.scalars(sa.select(SimulcastTarget).where(SimulcastTarget.live_stream_id == stream.id)
                                  .with_for_update()):
        _set_target_status(session, target, "idle", None)
    return recording


SimulcastStatus = Literal["idle", "starting", "broadcasting", "errored"]


def set_simulcast_status(platform: Platform, target_id: str, status: SimulcastStatus,
                         error_severity: str | None = None) -> bool:
    """A simulcast target's pusher reports its status (Mux's ``idle → starting → broadcasting``, ``errored``
    with ``error_severity`` ``normal`` or ``fatal``): stored, and ``video.live_stream.simulcast_target.<status>``
    when it changed. Reports other than ``idle`` for a stream without a session (a pusher's late word after
    the session ended) and reports for deleted targets change nothing. Whether it changed.

    Raises:
        InvalidParametersError: an unknown status or severity.
    """
    if status not in ("idle", "starting", "broadcasting", "errored"):
        raise InvalidParametersError(f"simulcast target status {status!r}")
    if error_severity not in (None, "normal", "fatal"):
        raise InvalidParametersError(f"simulcast target error_severity {error_severity!r}")
    with platform.db.session() as session:
        target = session.get(SimulcastTarget, target_id, with_for_update=True) if is_valid_id(target_id) else None
        if target is None:
            return False
        if status != "idle":
            stream = session.get(LiveStream, target.live_stream_id)
            if stream is None or stream.session_state == "none":
                return False
        return _set_target_status(session, target, status, error_severity)


def _set_target_status(session: Session, target: SimulcastTarget, status: str, error_severity: str | None) -> bool:
    severity = (error_severity or "normal") if status == "errored" else None
    if (target.status, target.error_severity) == (status, severity):
        return False
    target.status, target.error_severity = status, severity
    session.flush()
    emit(session, f"video.live_stream.simulcast_target.{status}", "simulcast_target", target.id,
         simulcast_target_view(target))
    return True


def _mark_recording_done(session: Session, asset_id: str) -> None:
    """Touch the recording (its ``updated_at`` starts :data:`ORPHAN_GRACE`); it stays ``live`` until it is
    published (or its input joined and its job queued), so the reconciler never makes a job for it."""
    session.execute(sa.update(Asset).where(Asset.id == asset_id).values(updated_at=utcnow())
                    .execution_options(synchronize_session=False))


def recording_ended(platform: Platform, asset_id: str) -> None:
    """The runtime's last transcoder of recording ``asset_id`` ended after its session's end was reported (a
    feed held on the slate): finish the recording now if its session is over (else the session's end does)."""
    with platform.db.reader() as session:
        if session.scalar(sa.select(LiveStream.id).where(LiveStream.active_asset_id == asset_id)) is not None:
            return
    _finish_recording(platform, asset_id)


def _finish_recording(platform: Platform, asset_id: str | None, *, force: bool = False) -> None:
    """Publish the recording: the live ladder's segments it recorded become a VOD asset (playlists, DASH,
    ``highest.mp4``; :func:`kinoray.live.recording.publish_recording`), ``ready`` at once through the same
    publish as a transcode's (``video.asset.ready``, then ``video.asset.live_stream_completed``). A kept source
    (``master_access: temporary``) is joined into the asset's input first (the master download); a test
    recording's is transcoded instead (its 10 s cut and watermark are an encode). When the live
    output cannot make the recording (no segment, a format change between connections) the source, where
    kept, is transcoded instead (``progress.state`` ``transcoding``), else the asset is ``errored`` with the
    reason; with no media at all, the asset is deleted (``video.asset.deleted``: an encoder that connected and
    left). Idempotent: a recording no longer ``live`` is left alone. A recording whose transcoder still runs (a
    session ended while its feed showed the slate) is left to :func:`recording_ended`, or, ``force``, published
    as it stands (an orphan whose runtime was lost)."""
    if asset_id is None:
        return
    with platform.db.reader() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.status != AssetStatus.PREPARING or asset.progress_state != "live":
            return
        max_short_side = TIER_HEIGHTS.get((asset.create_settings or {}).get("max_resolution_tier", "1080p"))
        # a test recording is cut and watermarked (an encode): its kept source is transcoded
        encode = asset.expires_at is not None
    store = platform.store
    try:
        if not force and recording_open(store, asset_id):
            log.info("live recording still being written: published when its transcoder ends",
                     extra={"asset": asset_id})
            return
    except Exception as error:  # noqa: BLE001 - read again below, where a failure errors the asset
        log.warning("a live recording's logs could not be read", extra={"asset": asset_id, "error": str(error)})
    parts, has_input = _join_source(store, asset_id)
    published: PublishedRecording | None = None
    reason: str | None = None
    had_media = has_input
    try:
        recorded = bool(recording_sections(store, asset_id))
        had_media = had_media or recorded
        if recorded and not (encode and has_input):
            published = publish_recording(store, asset_id, max(platform.settings.live.segment_seconds.values()),
                                          max_short_side=max_short_side)
    except Exception as error:  # noqa: BLE001 - whatever went wrong, the asset must not stay preparing
        had_media = True
        reason = str(error) if isinstance(error, MediaError) else f"the live recording could not be published: {error}"
        log.warning("a live recording was not published from its segments", extra={"asset": asset_id,
                                                                                   "error": reason[:300]})
    with platform.db.session() as session:
        asset = session.get(Asset, asset_id, with_for_update=True)
        if asset is None or asset.status != AssetStatus.PREPARING or asset.progress_state != "live":
            return
        if published is not None:
            # without a kept source there is no master to download, now or later (control/master.py)
            asset.create_settings = {**(asset.create_settings or {}), "source_kept": has_input}
            publish_asset(session, asset_id, _recording_fields(published), platform.settings)
        elif has_input:
            if reason is not None:
                log.warning("a live recording falls back to transcoding its source", extra={"asset": asset_id})
            asset.progress_state, asset.updated_at = "transcoding", utcnow()
            queue_transcode(session, platform.settings, asset)
        elif had_media:
            error_asset(session, asset_id, "invalid_media", reason or "the live recording holds no media")
        else:
            stream = session.get(LiveStream, asset.live_stream_id) if asset.live_stream_id else None
            if stream is not None and asset_id in (stream.recent_asset_ids or []):
                stream.recent_asset_ids = [item for item in stream.recent_asset_ids if item != asset_id]
            view = asset_view(asset)
            session.delete(asset)
            session.flush()
            emit(session, "video.asset.deleted", "asset", asset_id, view)
    for key in parts if len(parts) > 1 else ():
        try:
            store.delete(key)
        except KinorayError:
            log.warning("could not delete a joined recording part", extra={"key": key})
    try:
        discard_logs(store, asset_id)
    except KinorayError:
        log.warning("could not delete a recording's segment logs", extra={"asset": asset_id})


def _join_source(store: ObjectStore, asset_id: str) -> tuple[list[str], bool]:
    """Join the source parts the runtime kept (``keep_source``) into the asset's input: ``(parts, whether an
    input is there)``. A join that fails leaves no input (logged)."""
    part_pattern = re.compile(re.escape(input_key(asset_id)) + r"\.part-\d{4,}")
    parts: list[str] = []
    try:
        parts = sorted(key for key in store.list(f"assets/{asset_id}") if part_pattern.fullmatch(key))
        if len(parts) == 1:
            store.move(parts[0], input_key(asset_id))
        elif parts:
            sources = [store.open(key) for key in parts]
            try:
                store.put_stream(join_flv(sources), input_key(asset_id))
            finally:
                for source in sources:
                    source.close()
        return parts, store.exists(input_key(asset_id))
    except KinorayError as error:
        log.warning("a live recording's source could not be joined", extra={"asset": asset_id, "error": str(error)})
        return [], False


def _recording_fields(published: PublishedRecording) -> dict[str, Any]:
    """The asset columns of a published recording (as a transcode's: :func:`kinoray.control.jobs.media_fields`)."""
    top = published.video[0] if published.video else None
    audio = published.audio
    return {**media_fields(duration=float(published.duration), encoder=published.encoder,
                           top=(top.width, top.height) if top is not None else None,
                           frame_rate=float(top.frame_rate) if top is not None and top.frame_rate else None,
                           audio=(audio.channels, float(audio.duration)) if audio is not None else None),
            "video_codec": top.codec if top is not None else None}
