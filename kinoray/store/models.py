"""Metadata tables: the control plane's Mux-shaped resources as SQLAlchemy 2 typed models.

The same schema runs on SQLite (the embedded default) and PostgreSQL: ids are random strings, JSON columns use
the portable ``sqlalchemy.JSON`` type, and every datetime is timezone-aware UTC (:class:`UTCDateTime`; naive
datetimes are refused). Status columns are short strings with a CHECK constraint over the allowed values.
``kinoray/store/migrations`` holds the Alembic revisions that create these tables; ``docs/DATA_MODEL.md``
describes the tables, their indexes and the choices behind them.

Deleting an asset is a hard delete: its playback ids and jobs go with it (``ON DELETE CASCADE``), the upload
that created it keeps its row with ``asset_id`` set to NULL, and events about it stay (they have no foreign key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
import threading
from collections import OrderedDict
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from kinoray.store.states import JOB_STATES, JobRecord, JobState

__all__ = [
    "JOB_STATES",
    "LATENCY_MODES",
    "SESSION_STATES",
    "SIMULCAST_STATUSES",
    "ALERT_COMPARISONS",
    "ALERT_KINDS",
    "AccessToken",
    "AlertRule",
    "Asset",
    "AssetStatus",
    "Base",
    "ChatMessage",
    "DEFAULT_ENVIRONMENT_ID",
    "DataIncident",
    "DeliveryUsage",
    "Environment",
    "EnvironmentScoped",
    "Event",
    "IdempotencyKey",
    "Job",
    "LiveStream",
    "LiveStreamPlaybackId",
    "LiveStreamStatus",
    "PlaybackId",
    "PlaybackPolicy",
    "PlaybackRestriction",
    "SigningKey",
    "SimulcastTarget",
    "USAGE_TIERS",
    "UTCDateTime",
    "Upload",
    "UploadStatus",
    "ViewEvent",
    "WebhookDelivery",
    "WebhookEndpoint",
    "hash_secret",
    "is_valid_id",
    "new_id",
    "new_secret",
    "request_fingerprint",
    "secret_known",
    "utcnow",
    "verify_secret",
]

# --- ids, secrets, time --------------------------------------------------------------------------------------

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 32  # 32 base-62 characters: 190 random bits
_ID_PATTERN = re.compile(r"[A-Za-z0-9]{1,64}")


def new_id() -> str:
    """A random id for any resource: 32 characters of ``[A-Za-z0-9]`` from :mod:`secrets` (URL- and path-safe)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def is_valid_id(value: str) -> bool:
    """Whether ``value`` can be an id of ours: 1–64 ASCII letters and digits, so never a path, dot or slash.
    Job ids (``uuid4().hex``) pass too."""
    return _ID_PATTERN.fullmatch(value) is not None


def new_secret() -> str:
    """A high-entropy secret (256 random bits, URL-safe) for access tokens and webhook endpoints."""
    return secrets.token_urlsafe(32)


def utcnow() -> datetime:
    return datetime.now(UTC)


# Secrets are hashed with scrypt and a per-secret salt. The parameters travel inside the stored string, so they
# can be raised later without invalidating old hashes. N=2**14 costs about 16 MiB and tens of milliseconds: a
# successful check is therefore remembered (keyed by the stored hash and a SHA-256 of the presented secret, never
# the secret itself), so a client sending the same credentials on every request pays the KDF once per process.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_DKLEN, _SALT_BYTES = 2**14, 8, 1, 32, 16
_VERIFIED_MAX = 16384  # (stored hash, sha256(secret)) -> matched: checked secrets, right and wrong
_verified: OrderedDict[tuple[str, bytes], bool] = OrderedDict()
_verified_lock = threading.Lock()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * 1024**2)


def hash_secret(secret: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64url) for ``secret``, with a fresh random salt; store this, never the secret."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(secret, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_DKLEN)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(stored: str, secret: str) -> bool:
    """Whether ``secret`` matches ``stored`` (from :func:`hash_secret`), compared with :func:`hmac.compare_digest`.
    A malformed ``stored`` value never matches. Both answers are remembered (a stored hash never changes), so
    repeating a secret, right or wrong, costs a dictionary lookup instead of an scrypt."""
    known = secret_known(stored, secret)
    if known is not None:
        return known
    try:
        algorithm, n, r, p, salt, expected = stored.split("$")
        if algorithm != "scrypt":
            return False
        expected_digest = _unb64(expected)
        actual = _scrypt(secret, _unb64(salt), int(n), int(r), int(p), len(expected_digest))
    except ValueError:
        return False
    matched = hmac.compare_digest(actual, expected_digest)
    with _verified_lock:
        _verified[(stored, hashlib.sha256(secret.encode()).digest())] = matched
        if len(_verified) > _VERIFIED_MAX:
            _verified.popitem(last=False)
    return matched


def secret_known(stored: str, secret: str) -> bool | None:
    """What :func:`verify_secret` answered before for this pair, or ``None`` when checking it would cost an scrypt."""
    cache_key = (stored, hashlib.sha256(secret.encode()).digest())
    with _verified_lock:
        known = _verified.get(cache_key)
        if known is not None:
            _verified.move_to_end(cache_key)
        return known


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 (hex) of a request's method, path and raw body: what an idempotency key is bound to."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# --- column types --------------------------------------------------------------------------------------------


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (PostgreSQL ``timestamptz``; SQLite text in UTC).

    Binding a naive datetime raises ``ValueError``: the caller must say which timezone it meant.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one, e.g. datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> sa.JSON:
    """JSON where Python ``None`` is SQL NULL (not the JSON literal ``null``)."""
    return sa.JSON(none_as_null=True)


class AssetStatus(StrEnum):
    PREPARING = "preparing"
    READY = "ready"
    ERRORED = "errored"


class PlaybackPolicy(StrEnum):
    PUBLIC = "public"
    SIGNED = "signed"


class UploadStatus(StrEnum):
    WAITING = "waiting"
    ASSET_CREATED = "asset_created"
    ERRORED = "errored"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


def _status(enum: type[StrEnum], name: str, length: int = 16) -> sa.Enum:
    """A VARCHAR(length) holding the enum's *values*, with a CHECK constraint ``ck_<table>_<name>``."""
    return sa.Enum(enum, name=name, native_enum=False, create_constraint=True, length=length,
                   validate_strings=True, values_callable=lambda members: [member.value for member in members])


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


# --- environments --------------------------------------------------------------------------------------------

#: The environment every row and token made before environments existed belongs to (migration 0012), and the
#: one ``kinoray up`` and ``kinoray token create`` use unless told otherwise.
DEFAULT_ENVIRONMENT_ID = "default"


class Environment(Base):
    """Mux's environment: a partition of the data. Every API read and write is scoped to the calling token's
    environment (:mod:`kinoray.store.scoping`); ``env_key`` is what Mux Data SDKs send in their beacons
    (``env_key``), so views land in the environment whose key they carry."""

    __tablename__ = "environments"
    __table_args__ = (
        sa.Index("ix_environments_name", "name", unique=True),
        sa.Index("ix_environments_env_key", "env_key", unique=True),
        sa.Index("ix_environments_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(255))
    #: Mux Data's environment key: 26 lowercase letters and digits, public (it is in every player's page).
    env_key: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = _created_at()

    def __repr__(self) -> str:
        return f"Environment(id={self.id!r}, name={self.name!r})"


class EnvironmentScoped:
    """A table whose rows belong to one environment. :mod:`kinoray.store.scoping` adds ``environment_id = :env``
    to every ORM read, update and delete of such a table in a scoped session, and stamps new rows with the
    session's environment. No foreign key: like events, rows name their environment by id, and an environment
    is deleted only once it holds nothing (:mod:`kinoray.control.environments`)."""

    #: Set at flush from the session's environment (:mod:`kinoray.store.scoping`) unless given; an unscoped
    #: session (the runner, a CLI) that gives none writes the default environment.
    environment_id: Mapped[str] = mapped_column(sa.String(64), default=DEFAULT_ENVIRONMENT_ID,
                                                server_default=sa.text(f"'{DEFAULT_ENVIRONMENT_ID}'"))


# --- video resources -----------------------------------------------------------------------------------------


class Asset(EnvironmentScoped, Base):
    """A video: its input, what the transcode found and made, and where its files live."""

    __tablename__ = "assets"
    __table_args__ = (
        sa.Index("ix_assets_environment_id_created_at_id", "environment_id", "created_at", "id"),
        sa.Index("ix_assets_created_at_id", "created_at", "id"),
        sa.Index("ix_assets_master_token", "master_token", unique=True),
        sa.Index("ix_assets_master_expires_at", "master_expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    status: Mapped[AssetStatus] = mapped_column(_status(AssetStatus, "status"), default=AssetStatus.PREPARING)
    #: Mux's ``errors``: ``{"type": "invalid_media", "messages": ["..."]}`` once errored, else NULL.
    errors: Mapped[dict[str, Any] | None] = mapped_column(_json())
    passthrough: Mapped[str | None] = mapped_column(sa.String(255))
    #: Mux's ``meta``: ``title``, ``creator_id``, ``external_id``.
    meta: Mapped[dict[str, Any]] = mapped_column(_json(), default=dict)
    input_url: Mapped[str | None] = mapped_column(sa.Text)
    #: The create request's other options as given (``playback_policies``, ``video_quality``,
    #: ``max_resolution_tier``, ``static_renditions`` asked for, ...), so the job can be rebuilt from the row.
    create_settings: Mapped[dict[str, Any]] = mapped_column(_json(), default=dict)
    #: Key prefix of the asset's files in the object store (``assets/<id>``), relative to the store's root.
    storage_prefix: Mapped[str | None] = mapped_column(sa.String(512))
    duration: Mapped[float | None] = mapped_column(sa.Double)  # seconds
    aspect_ratio: Mapped[str | None] = mapped_column(sa.String(16))  # "16:9"
    resolution_tier: Mapped[str | None] = mapped_column(sa.String(16))  # audio-only | 720p | 1080p | 1440p | 2160p
    max_stored_frame_rate: Mapped[float | None] = mapped_column(sa.Double)
    video_codec: Mapped[str | None] = mapped_column(sa.String(16))  # h264 | hevc | av1
    encoder_backend: Mapped[str | None] = mapped_column(sa.String(32))  # libx264, nvenc, ...
    #: Mux's ``tracks[]``: ``{"id", "type": "video"|"audio"|"text", "max_width", ...}``.
    tracks: Mapped[list[dict[str, Any]]] = mapped_column(_json(), default=list)
    #: Mux's legacy ``mp4_support`` as last set (create or ``PUT …/mp4-support``); NULL: as created (none).
    mp4_support: Mapped[str | None] = mapped_column(sa.String(32))
    #: Mux's ``master_access`` (``none`` | ``temporary``) and the master download: its status (preparing |
    #: ready | errored), its URL (a capability URL: ``master_token`` is its unguessable part, looked up by the
    #: edge) and when the download stops working (the runner then sets everything back to ``none``).
    master_access: Mapped[str] = mapped_column(sa.String(16), default="none", server_default="none")
    master_status: Mapped[str | None] = mapped_column(sa.String(16))
    master_url: Mapped[str | None] = mapped_column(sa.Text)
    master_token: Mapped[str | None] = mapped_column(sa.String(64))
    master_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Mux's ``progress.state`` (ingesting | transcoding | completed | errored) and the fraction done, 0..1
    #: (Mux reports a percentage: the API multiplies by 100).
    progress_state: Mapped[str] = mapped_column(sa.String(16), default="ingesting")
    progress_fraction: Mapped[float] = mapped_column(sa.Double, default=0.0)
    #: Mux's ``source_asset_id``: the asset a clip was cut from (kept after that asset is deleted).
    source_asset_id: Mapped[str | None] = mapped_column(sa.String(64))
    #: When the runner deletes this asset (test assets: created + ``api.test_asset_hours``), else NULL.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    #: Mux's ``live_stream_id``: the live stream this asset records (kept after the stream is deleted).
    live_stream_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    playback_ids: Mapped[list[PlaybackId]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True,
        order_by="PlaybackId.created_at")
    jobs: Mapped[list[Job]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True, order_by="Job.created_at")
    upload: Mapped[Upload | None] = relationship(back_populates="asset", passive_deletes=True)
    static_files: Mapped[list[StaticRendition]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True,
        order_by="StaticRendition.created_at")

    def __repr__(self) -> str:
        return f"Asset(id={self.id!r}, status={self.status!r})"


class StaticRenditionStatus(StrEnum):
    PREPARING = "preparing"
    READY = "ready"
    SKIPPED = "skipped"
    ERRORED = "errored"


class StaticRendition(Base):
    """One of an asset's static renditions (Mux's MP4/M4A downloads, ``media/<name>``), and its work lease: the
    runner claims a ``preparing`` one of a ready asset (``owner``, ``lease_expires_at``, ``attempts``) and
    finishes it ``ready``, ``skipped`` or ``errored`` (:mod:`kinoray.control.static_renditions`)."""

    __tablename__ = "static_renditions"
    __table_args__ = (
        sa.UniqueConstraint("asset_id", "name"),
        sa.Index("ix_static_renditions_status_lease_expires_at", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    asset_id: Mapped[str] = mapped_column(sa.ForeignKey("assets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(32))  # highest.mp4, 720p.mp4, audio.m4a, capped-1080p.mp4, ...
    resolution: Mapped[str] = mapped_column(sa.String(16))  # Mux's: highest | audio-only | 2160p … 270p
    #: Created through the legacy ``mp4_support`` (``PUT …/mp4-support`` manages only these).
    legacy: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    status: Mapped[StaticRenditionStatus] = mapped_column(_status(StaticRenditionStatus, "status"),
                                                          default=StaticRenditionStatus.PREPARING)
    passthrough: Mapped[str | None] = mapped_column(sa.String(255))
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    bitrate: Mapped[int | None] = mapped_column(sa.Integer)  # bits/s of the whole file
    filesize: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: Why it was skipped or errored (kinoray's; Mux gives no reason).
    reason: Mapped[str | None] = mapped_column(sa.Text)
    owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[float | None] = mapped_column(sa.Double)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default=sa.text("0"))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    asset: Mapped[Asset] = relationship(back_populates="static_files")

    def __repr__(self) -> str:
        return f"StaticRendition(id={self.id!r}, name={self.name!r}, status={self.status!r})"


class PlaybackId(Base):
    """A public or signed handle on an asset's streams (``/{playback_id}.m3u8``)."""

    __tablename__ = "playback_ids"
    __table_args__ = (sa.Index("ix_playback_ids_asset_id_created_at", "asset_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    asset_id: Mapped[str] = mapped_column(sa.ForeignKey("assets.id", ondelete="CASCADE"))
    policy: Mapped[PlaybackPolicy] = mapped_column(_status(PlaybackPolicy, "policy"), default=PlaybackPolicy.PUBLIC)
    created_at: Mapped[datetime] = _created_at()

    asset: Mapped[Asset] = relationship(back_populates="playback_ids")

    def __repr__(self) -> str:
        return f"PlaybackId(id={self.id!r}, asset_id={self.asset_id!r}, policy={self.policy!r})"


# --- live streams -------------------------------------------------------------------------------------------


class LiveStreamStatus(StrEnum):
    IDLE = "idle"
    ACTIVE = "active"
    DISABLED = "disabled"


#: Mux's ``latency_mode`` values.
LATENCY_MODES = ("standard", "reduced", "low")
#: Where a live stream's ingest session is (:mod:`kinoray.control.live` owns every change): ``none`` (no
#: session), ``connected`` (key accepted, no media yet), ``recording`` (media arriving, playable),
#: ``disconnected`` (publisher gone, reconnect window running).
SESSION_STATES = ("none", "connected", "recording", "disconnected")
SIMULCAST_STATUSES = ("idle", "starting", "broadcasting", "errored")


class LiveStream(EnvironmentScoped, Base):
    """Mux's live stream: its settings, its stream key (a SHA-256 of it: the key itself is shown once), and the
    state of its ingest session and recording (:mod:`kinoray.control.live`)."""

    __tablename__ = "live_streams"
    __table_args__ = (
        sa.Index("ix_live_streams_environment_id_created_at_id", "environment_id", "created_at", "id"),
        sa.CheckConstraint(_in("latency_mode", LATENCY_MODES), name="latency_mode"),
        sa.CheckConstraint(_in("session_state", SESSION_STATES), name="session_state"),
        sa.Index("ix_live_streams_created_at_id", "created_at", "id"),
        sa.Index("ix_live_streams_stream_key_hash", "stream_key_hash", unique=True),
        sa.Index("ix_live_streams_session_state", "session_state"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    status: Mapped[LiveStreamStatus] = mapped_column(_status(LiveStreamStatus, "status"),
                                                     default=LiveStreamStatus.IDLE)
    #: SHA-256 (hex) of the stream key: a 256-bit random key needs no slow hash, and ingest finds the stream by it.
    stream_key_hash: Mapped[str] = mapped_column(sa.String(64))
    latency_mode: Mapped[str] = mapped_column(sa.String(16), default="standard")
    reconnect_window: Mapped[float] = mapped_column(sa.Double, default=60.0)  # seconds
    max_continuous_duration: Mapped[int] = mapped_column(sa.Integer, default=43200)  # seconds
    use_slate_for_standard_latency: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    reconnect_slate_url: Mapped[str | None] = mapped_column(sa.Text)
    #: The recording's asset settings (Mux's ``new_asset_settings``, as given); NULL: no recording settings.
    new_asset_settings: Mapped[dict[str, Any] | None] = mapped_column(_json())
    passthrough: Mapped[str | None] = mapped_column(sa.String(255))
    audio_only: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    test: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: Mux's ``meta`` (``title``).
    meta: Mapped[dict[str, Any]] = mapped_column(_json(), default=dict)
    #: The recording of the current session (NULL between sessions) and the earlier recordings, oldest first.
    active_asset_id: Mapped[str | None] = mapped_column(sa.String(64))
    recent_asset_ids: Mapped[list[str]] = mapped_column(_json(), default=list)
    session_state: Mapped[str] = mapped_column(sa.String(16), default="none")
    #: When the session began (``max_continuous_duration`` counts from it) and the publisher last left.
    session_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Source parts the session's publishers wrote (one per connection: ``input.part-0000``, ...).
    recording_parts: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: ``PUT …/complete`` asked to end the session: no reconnect window.
    complete_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: kinoray's scheduled streams: the stream key is accepted only from ``scheduled_start`` (NULL: at once) until
    #: ``scheduled_end`` (NULL: no end).
    scheduled_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    scheduled_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: How the current session's publisher came in (Mux's ``active_ingest_protocol``: rtmp, rtmps); NULL between.
    active_ingest_protocol: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    playback_ids: Mapped[list[LiveStreamPlaybackId]] = relationship(
        back_populates="live_stream", cascade="all, delete-orphan", passive_deletes=True,
        order_by="LiveStreamPlaybackId.created_at")
    simulcast_targets: Mapped[list[SimulcastTarget]] = relationship(
        back_populates="live_stream", cascade="all, delete-orphan", passive_deletes=True,
        order_by="SimulcastTarget.created_at")

    def __repr__(self) -> str:
        return f"LiveStream(id={self.id!r}, status={self.status!r}, session={self.session_state!r})"


class LiveStreamPlaybackId(Base):
    """A public or signed playback id of a live stream. Its own table (not a nullable column on
    ``playback_ids``): every asset playback id keeps its non-null ``asset_id``; ids are random across both."""

    __tablename__ = "live_stream_playback_ids"
    __table_args__ = (sa.Index("ix_live_stream_playback_ids_live_stream_id_created_at", "live_stream_id",
                               "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    live_stream_id: Mapped[str] = mapped_column(sa.ForeignKey("live_streams.id", ondelete="CASCADE"))
    policy: Mapped[PlaybackPolicy] = mapped_column(_status(PlaybackPolicy, "policy"), default=PlaybackPolicy.PUBLIC)
    created_at: Mapped[datetime] = _created_at()

    live_stream: Mapped[LiveStream] = relationship(back_populates="playback_ids")

    def __repr__(self) -> str:
        return f"LiveStreamPlaybackId(id={self.id!r}, live_stream_id={self.live_stream_id!r})"


class SimulcastTarget(Base):
    """Mux's simulcast target: an RTMP(S) URL and stream key the live stream is pushed on to. The key is stored
    as given (the pusher needs it), like a webhook endpoint's secret."""

    __tablename__ = "simulcast_targets"
    __table_args__ = (
        sa.CheckConstraint(_in("status", SIMULCAST_STATUSES), name="status"),
        sa.Index("ix_simulcast_targets_live_stream_id_created_at", "live_stream_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    live_stream_id: Mapped[str] = mapped_column(sa.ForeignKey("live_streams.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(sa.Text)
    stream_key: Mapped[str | None] = mapped_column(sa.Text)
    passthrough: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(16), default="idle")
    #: Mux's ``error_severity`` while ``errored``: ``normal`` (retried) or ``fatal`` (not retried this session).
    error_severity: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = _created_at()

    live_stream: Mapped[LiveStream] = relationship(back_populates="simulcast_targets")

    def __repr__(self) -> str:
        return f"SimulcastTarget(id={self.id!r}, live_stream_id={self.live_stream_id!r}, status={self.status!r})"


class ChatMessage(Base):
    """A message in a live stream's chat room (:mod:`kinoray.control.chat`). A moderator's delete blanks the
    text and sets ``deleted_at``; ``updated_at`` moves on every change, so rooms follow new and deleted messages
    with one indexed range read."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        sa.Index("ix_chat_messages_live_stream_id_updated_at", "live_stream_id", "updated_at"),
        sa.Index("ix_chat_messages_live_stream_id_created_at", "live_stream_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    live_stream_id: Mapped[str] = mapped_column(sa.ForeignKey("live_streams.id", ondelete="CASCADE"))
    viewer_id: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(64))
    text: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"ChatMessage(id={self.id!r}, live_stream_id={self.live_stream_id!r})"


_DEFAULT_UPLOAD_TIMEOUT = 3600


def _upload_expiry(context: DefaultExecutionContext) -> datetime:
    timeout = context.get_current_parameters().get("timeout_seconds") or _DEFAULT_UPLOAD_TIMEOUT
    return utcnow() + timedelta(seconds=timeout)


class Upload(EnvironmentScoped, Base):
    """A direct upload (Mux's ``/uploads``) and its tus state; the asset is created when the bytes are all in."""

    __tablename__ = "uploads"
    __table_args__ = (
        sa.Index("ix_uploads_environment_id_created_at_id", "environment_id", "created_at", "id"),
        sa.Index("ix_uploads_created_at_id", "created_at", "id"),
        sa.Index("ix_uploads_status_expires_at", "status", "expires_at"),
        sa.Index("ix_uploads_asset_id", "asset_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    status: Mapped[UploadStatus] = mapped_column(_status(UploadStatus, "status"), default=UploadStatus.WAITING)
    cors_origin: Mapped[str | None] = mapped_column(sa.Text)
    timeout_seconds: Mapped[int] = mapped_column(sa.Integer, default=_DEFAULT_UPLOAD_TIMEOUT)
    new_asset_settings: Mapped[dict[str, Any]] = mapped_column(_json(), default=dict)
    asset_id: Mapped[str | None] = mapped_column(sa.ForeignKey("assets.id", ondelete="SET NULL"))
    #: Mux's upload ``error``: ``{"type": ..., "message": ...}``, else NULL.
    error: Mapped[dict[str, Any] | None] = mapped_column(_json())
    #: tus ``Upload-Length`` (NULL while deferred), ``Upload-Offset`` and the decoded ``Upload-Metadata``.
    upload_length: Mapped[int | None] = mapped_column(sa.BigInteger)
    upload_offset: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    upload_metadata: Mapped[dict[str, str]] = mapped_column(_json(), default=dict)
    #: Where the received bytes are kept in the object store. Set only by the transaction that creates the transfer
    #: (tus ``POST`` or a first ``PUT``): NULL means the transfer was never created, and such an upload takes no
    #: ``PATCH`` (with it, a NULL ``upload_length`` means a deferred length).
    storage_key: Mapped[str | None] = mapped_column(sa.String(512))
    #: The received parts, in order: ``[{"offset", "length", "key", "algorithm"?, "digest"?}, ...]`` (the
    #: checksum fields when the client sent ``Upload-Checksum``). Only parts listed here count.
    part_checksums: Mapped[list[dict[str, Any]] | None] = mapped_column(_json())
    #: ``created_at + timeout_seconds`` unless given; a waiting upload past it becomes ``timed_out``.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_upload_expiry)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    asset: Mapped[Asset | None] = relationship(back_populates="upload")

    def __repr__(self) -> str:
        return f"Upload(id={self.id!r}, status={self.status!r}, offset={self.upload_offset})"


class Job(Base):
    """A transcode job: one row per :class:`~kinoray.store.states.JobRecord`, column for field, plus who runs
    it (``owner``, ``lease_expires_at``, ``attempts``) and what its success published (``result``).

    The record's times are epoch seconds (``float``) here as in the record, so a record round-trips exactly;
    every other table stores UTC datetimes. :mod:`kinoray.control.jobs` owns every state change.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(_in("state", JOB_STATES), name="state"),
        sa.Index("ix_jobs_asset_id_created_at", "asset_id", "created_at"),
        sa.Index("ix_jobs_state_updated_at", "state", "updated_at"),
        sa.Index("ix_jobs_state_lease_expires_at", "state", "lease_expires_at"),
    )

    job_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    asset_id: Mapped[str] = mapped_column(sa.ForeignKey("assets.id", ondelete="CASCADE"))
    #: The ``TranscodeOptions`` the job runs with (as a dict), so an interrupted job can be re-queued.
    options: Mapped[dict[str, Any] | None] = mapped_column(_json())
    source: Mapped[str] = mapped_column(sa.Text)
    output: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.String(16), default="queued")
    chunks_total: Mapped[int] = mapped_column(sa.Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    frames_total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    frames_done: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    duration_seconds: Mapped[float] = mapped_column(sa.Double, default=0.0)
    workers: Mapped[int] = mapped_column(sa.Integer, default=0)
    encoder: Mapped[str | None] = mapped_column(sa.String(32))
    fallback_from: Mapped[str | None] = mapped_column(sa.String(32))
    fallback_reason: Mapped[str | None] = mapped_column(sa.Text)
    decoders: Mapped[list[str]] = mapped_column(_json(), default=list)
    scalers: Mapped[list[str]] = mapped_column(_json(), default=list)
    retries: Mapped[int] = mapped_column(sa.Integer, default=0)
    error_type: Mapped[str | None] = mapped_column(sa.String(64))
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[float] = mapped_column(sa.Double)
    encode_started_at: Mapped[float | None] = mapped_column(sa.Double)
    finished_at: Mapped[float | None] = mapped_column(sa.Double)
    updated_at: Mapped[float] = mapped_column(sa.Double)
    #: The runner that claimed the job (``host:pid:random``), NULL while queued and once released.
    owner: Mapped[str | None] = mapped_column(sa.String(128))
    #: Epoch seconds until which ``owner`` holds an active job; the owner's heartbeat pushes it forward. Past it
    #: (or NULL on an active job) the owner counts as dead and the reconciler re-queues the job.
    lease_expires_at: Mapped[float | None] = mapped_column(sa.Double)
    #: How many times a runner claimed the job and did not give it back (a graceful stop gives it back).
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default=sa.text("0"))
    #: The asset columns a successful run published (``control.jobs.asset_fields``), so an asset left
    #: ``preparing`` beside a ``ready`` job can be finished without encoding again.
    result: Mapped[dict[str, Any] | None] = mapped_column(_json())

    asset: Mapped[Asset] = relationship(back_populates="jobs")

    @classmethod
    def from_record(cls, record: JobRecord, *, asset_id: str, options: dict[str, Any] | None = None) -> Job:
        """A new row holding ``record``."""
        job = cls(job_id=record.job_id, asset_id=asset_id, options=options)
        job.apply_record(record)
        return job

    def apply_record(self, record: JobRecord) -> None:
        """Copy every field of ``record`` onto this row (the record must be this job's)."""
        if self.job_id is not None and self.job_id != record.job_id:
            raise ValueError(f"record of job {record.job_id!r} applied to job {self.job_id!r}")
        for field in fields(record):
            value = getattr(record, field.name)
            if field.name == "state":
                value = str(value.value)
            elif isinstance(value, tuple):
                value = list(value)
            setattr(self, field.name, value)

    def to_record(self) -> JobRecord:
        """The :class:`~kinoray.store.states.JobRecord` this row holds."""
        values: dict[str, Any] = {}
        for field in fields(JobRecord):
            value = getattr(self, field.name)
            if field.name == "state":
                value = JobState(value)
            elif isinstance(value, list):
                value = tuple(value)
            values[field.name] = value
        return JobRecord(**values)

    def __repr__(self) -> str:
        return f"Job(job_id={self.job_id!r}, asset_id={self.asset_id!r}, state={self.state!r})"


# --- access and signing --------------------------------------------------------------------------------------


class AccessToken(Base):
    """An API credential: HTTP Basic with the id as user name and the secret as password.

    Only a scrypt hash of the secret is stored; :meth:`issue` returns the secret once.
    """

    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    secret_hash: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str | None] = mapped_column(sa.String(255))
    #: The environment whose data the token reads and writes (:class:`Environment`).
    environment_id: Mapped[str] = mapped_column(sa.ForeignKey("environments.id"), default=DEFAULT_ENVIRONMENT_ID,
                                                server_default=sa.text(f"'{DEFAULT_ENVIRONMENT_ID}'"))
    created_at: Mapped[datetime] = _created_at()
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Mux-style permissions per product: ``{"video": "full"|"read", "data": ..., "system": ...}``; a product
    #: left out is refused. NULL (every token made before permissions existed) is full access to every product
    #: (:mod:`kinoray.control.permissions`).
    permissions: Mapped[dict[str, str] | None] = mapped_column(_json())

    idempotency_keys: Mapped[list[IdempotencyKey]] = relationship(
        back_populates="token", cascade="all, delete-orphan", passive_deletes=True)

    @classmethod
    def issue(cls, *, name: str | None = None,
              environment_id: str = DEFAULT_ENVIRONMENT_ID) -> tuple[AccessToken, str]:
        """A new token (id assigned now, not at flush) and its secret, which is not kept anywhere."""
        secret = new_secret()
        return cls(id=new_id(), secret_hash=hash_secret(secret), name=name, environment_id=environment_id), secret

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def check_secret(self, secret: str) -> bool:
        """Whether ``secret`` is this token's (constant-time compare); a revoked token still checks — the caller
        decides what revocation means."""
        return verify_secret(self.secret_hash, secret)

    def __repr__(self) -> str:
        return f"AccessToken(id={self.id!r}, name={self.name!r}, revoked={self.revoked})"


class SigningKey(EnvironmentScoped, Base):
    """An RSA public key that verifies signed-playback JWTs (``kid`` = id). The private key is returned once on
    creation and never stored."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        sa.Index("ix_signing_keys_environment_id_created_at_id", "environment_id", "created_at", "id"),
        sa.Index("ix_signing_keys_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    public_key: Mapped[str] = mapped_column(sa.Text)  # PEM
    created_at: Mapped[datetime] = _created_at()

    def __repr__(self) -> str:
        return f"SigningKey(id={self.id!r})"


class PlaybackRestriction(EnvironmentScoped, Base):
    """Mux's playback restriction: referrer and user-agent rules a signed playback token opts into with its
    ``playback_restriction_id`` claim (:mod:`kinoray.control.restrictions`)."""

    __tablename__ = "playback_restrictions"
    __table_args__ = (
        sa.Index("ix_playback_restrictions_environment_id_created_at_id", "environment_id", "created_at", "id"),
        sa.Index("ix_playback_restrictions_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    #: ``[]`` refuses every referrer, ``["*"]`` allows any, else up to 10 host names or ``*.`` wildcards.
    allowed_domains: Mapped[list[str]] = mapped_column(_json(), default=list)
    allow_no_referrer: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    allow_no_user_agent: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    allow_high_risk_user_agent: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    def __repr__(self) -> str:
        return f"PlaybackRestriction(id={self.id!r}, allowed_domains={self.allowed_domains!r})"


class IdempotencyKey(Base):
    """The first response to a POST with an ``Idempotency-Key``, per token (the primary key is ``(token_id, key)``).

    ``response_status`` is NULL while the first request is still running.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.Index("ix_idempotency_keys_created_at", "created_at"),)

    token_id: Mapped[str] = mapped_column(sa.ForeignKey("access_tokens.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    #: :func:`request_fingerprint` of the first request; the same key with another fingerprint is refused.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    response_status: Mapped[int | None] = mapped_column(sa.Integer)
    response_body: Mapped[Any] = mapped_column(_json(), nullable=True)
    created_at: Mapped[datetime] = _created_at()

    token: Mapped[AccessToken] = relationship(back_populates="idempotency_keys")

    def __repr__(self) -> str:
        return f"IdempotencyKey(token_id={self.token_id!r}, key={self.key!r}, status={self.response_status})"


# --- events and webhooks -------------------------------------------------------------------------------------


class Event(EnvironmentScoped, Base):
    """Something that happened to a resource (``video.asset.ready``, ...), with a snapshot of the object."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_created_at_id", "created_at", "id"),
        sa.Index("ix_events_object_type_object_id_created_at", "object_type", "object_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(sa.String(64))
    object_type: Mapped[str] = mapped_column(sa.String(32))  # asset | upload | ...
    object_id: Mapped[str] = mapped_column(sa.String(64))
    #: The event's ``data``: the object as the API showed it when the event happened.
    payload: Mapped[dict[str, Any]] = mapped_column(_json(), default=dict)
    created_at: Mapped[datetime] = _created_at()

    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        back_populates="event", cascade="all, delete-orphan", passive_deletes=True)

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, type={self.type!r}, object_id={self.object_id!r})"


class WebhookEndpoint(EnvironmentScoped, Base):
    """A URL that receives signed event POSTs.

    ``secret`` is stored as given, not hashed: the server needs it to compute each delivery's HMAC. Protect it
    the way the database is protected (access control, encrypted backups).
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        sa.Index("ix_webhook_endpoints_environment_id_created_at_id", "environment_id", "created_at", "id"),
        sa.Index("ix_webhook_endpoints_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(sa.Text)
    secret: Mapped[str] = mapped_column(sa.String(255), default=new_secret)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(sa.Text)  # e.g. "endpoint answered 410"
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan", passive_deletes=True)

    def __repr__(self) -> str:
        return f"WebhookEndpoint(id={self.id!r}, url={self.url!r}, enabled={self.enabled})"


class WebhookDelivery(Base):
    """The outbox: one row per (endpoint, event), written in the same transaction as the change it reports.

    A delivery is due while ``next_attempt_at <= now`` (a new row defaults to now: due at once; like every
    column with a default, ``None`` passed at construction means the default); it is set to NULL once delivered
    or given up on.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "event_id"),
        sa.Index("ix_webhook_deliveries_next_attempt_at", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
        sa.Index("ix_webhook_deliveries_event_id", "event_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(sa.ForeignKey("events.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(sa.String(64))
    #: The envelope to POST (``type``, ``id``, ``created_at``, ``object``, ``environment``, ``data``, ...), fixed
    #: at enqueue time; each attempt sends it with ``attempts`` set to ``attempt_log``.
    payload: Mapped[dict[str, Any]] = mapped_column(_json())
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(sa.Integer)  # HTTP status of the last attempt
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    #: What each attempt so far came to, oldest first (Mux's ``attempts`` entries: id, address, created_at,
    #: max_attempts, response_status_code, response_headers, response_body); sent with every later attempt.
    #: NULL before the first attempt.
    attempt_log: Mapped[list[dict[str, Any]] | None] = mapped_column(_json())
    created_at: Mapped[datetime] = _created_at()

    endpoint: Mapped[WebhookEndpoint] = relationship(back_populates="deliveries")
    event: Mapped[Event] = relationship(back_populates="deliveries")

    def __repr__(self) -> str:
        return (f"WebhookDelivery(id={self.id!r}, endpoint_id={self.endpoint_id!r}, event_id={self.event_id!r}, "
                f"attempts={self.attempts})")


# --- player analytics ----------------------------------------------------------------------------------------


class ViewEvent(Base):
    """One player beacon (Mux Data's event model) as ``POST /data/v1/events`` received it; the analytics layer
    derives views and metrics from these rows. See :mod:`kinoray.control.analytics` for the fields.

    No foreign keys: beacons are anonymous and outlive the assets and playback ids they name. The id is an
    integer in arrival order (a cursor for readers; ``INTEGER PRIMARY KEY`` on SQLite so it auto-increments).
    """

    __tablename__ = "view_events"
    __table_args__ = (
        sa.Index("ix_view_events_playback_id_viewer_time", "playback_id", "viewer_time"),
        sa.Index("ix_view_events_view_id", "view_id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    event_type: Mapped[str] = mapped_column(sa.String(32))  # playerready, viewinit, play, ... (validated at ingest)
    view_id: Mapped[str] = mapped_column(sa.String(64))
    session_id: Mapped[str] = mapped_column(sa.String(64))  # the viewer (one per browser)
    playback_id: Mapped[str] = mapped_column(sa.String(64))
    sequence: Mapped[int | None] = mapped_column(sa.Integer)  # the event's number within its view
    viewer_time: Mapped[int] = mapped_column(sa.BigInteger)  # the viewer's clock, ms since the epoch
    playback_time: Mapped[int] = mapped_column(sa.BigInteger)  # the playhead, ms
    event_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)  # when the server received it
    player_name: Mapped[str | None] = mapped_column(sa.String(64))
    player_version: Mapped[str | None] = mapped_column(sa.String(64))
    player_software: Mapped[str | None] = mapped_column(sa.String(64))  # hls.js, dash.js, native
    player_software_version: Mapped[str | None] = mapped_column(sa.String(64))
    player_width: Mapped[int | None] = mapped_column(sa.Integer)
    player_height: Mapped[int | None] = mapped_column(sa.Integer)
    browser: Mapped[str | None] = mapped_column(sa.String(64))
    browser_version: Mapped[str | None] = mapped_column(sa.String(64))
    os: Mapped[str | None] = mapped_column(sa.String(64))
    os_version: Mapped[str | None] = mapped_column(sa.String(64))
    page_url: Mapped[str | None] = mapped_column(sa.String(1024))
    rendition_width: Mapped[int | None] = mapped_column(sa.Integer)  # renditionchange
    rendition_height: Mapped[int | None] = mapped_column(sa.Integer)
    rendition_bitrate: Mapped[int | None] = mapped_column(sa.BigInteger)  # bits/s
    rendition_codec: Mapped[str | None] = mapped_column(sa.String(128))
    error_code: Mapped[int | None] = mapped_column(sa.Integer)  # error: HTTP status or the player's code
    error_type: Mapped[str | None] = mapped_column(sa.String(64))  # error: the server's typed error
    error_message: Mapped[str | None] = mapped_column(sa.String(1024))
    error_context: Mapped[str | None] = mapped_column(sa.String(1024))

    def __repr__(self) -> str:
        return f"ViewEvent(id={self.id!r}, event_type={self.event_type!r}, view_id={self.view_id!r})"


# --- delivery usage ------------------------------------------------------------------------------------------

#: The resolution tiers usage is counted under (Mux's ``delivered_seconds_by_resolution`` keys without ``tier_``).
USAGE_TIERS = ("audio-only", "720p", "1080p", "1440p", "2160p")


class DeliveryUsage(EnvironmentScoped, Base):
    """Media delivered by the edge: seconds and bytes per asset, per UTC hour, per resolution tier. Edge processes
    add to a row with one upsert per flush (:mod:`kinoray.control.usage`), so many writers sum correctly.

    No foreign key: usage outlives the asset (Mux reports deleted assets' delivery too)."""

    __tablename__ = "delivery_usage"
    __table_args__ = (
        sa.CheckConstraint(_in("tier", USAGE_TIERS), name="tier"),
        sa.Index("ix_delivery_usage_hour_start", "hour_start"),
    )

    asset_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    hour_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    tier: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    delivered_seconds: Mapped[float] = mapped_column(sa.Double, default=0.0)
    delivered_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)

    def __repr__(self) -> str:
        return (f"DeliveryUsage(asset_id={self.asset_id!r}, hour_start={self.hour_start!r}, tier={self.tier!r}, "
                f"seconds={self.delivered_seconds})")


# --- Mux Data alerts -----------------------------------------------------------------------------------------

#: ``threshold``: a metric over a window compared with a value; ``anomaly``: the anomaly detector's findings.
ALERT_KINDS = ("threshold", "anomaly")
ALERT_COMPARISONS = ("gt", "gte", "lt", "lte")


class AlertRule(EnvironmentScoped, Base):
    """An alert rule over the analytics (:mod:`kinoray.control.alerts`): what is watched and when it fires."""

    __tablename__ = "alert_rules"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", ALERT_KINDS), name="kind"),
        sa.Index("ix_alert_rules_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(255))
    kind: Mapped[str] = mapped_column(sa.String(16))
    metric: Mapped[str] = mapped_column(sa.String(64))
    measurement: Mapped[str | None] = mapped_column(sa.String(16))
    #: ``["dimension:value", "!dimension:value"]`` as the Data API's ``filters[]``.
    filters: Mapped[list[str]] = mapped_column(_json(), default=list)
    comparison: Mapped[str | None] = mapped_column(sa.String(8))
    threshold: Mapped[float | None] = mapped_column(sa.Double)
    window_seconds: Mapped[int] = mapped_column(sa.Integer)
    min_views: Mapped[int] = mapped_column(sa.Integer)
    #: The dimensions an anomaly rule searches.
    dimensions: Mapped[list[str]] = mapped_column(_json(), default=list)
    severity: Mapped[str] = mapped_column(sa.String(16))
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    last_evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_value: Mapped[float | None] = mapped_column(sa.Double)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    def __repr__(self) -> str:
        return f"AlertRule(id={self.id!r}, kind={self.kind!r}, metric={self.metric!r})"


class DataIncident(Base):
    """An incident: a rule firing for one ``incident_key`` (the dimension values it is about), open until the
    rule recovers. Deleted with its rule."""

    __tablename__ = "data_incidents"
    __table_args__ = (
        sa.CheckConstraint("status IN ('open', 'closed')", name="status"),
        sa.Index("ix_data_incidents_rule_id_status", "rule_id", "status"),
        sa.Index("ix_data_incidents_started_at_id", "started_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    rule_id: Mapped[str] = mapped_column(sa.ForeignKey("alert_rules.id", ondelete="CASCADE"))
    incident_key: Mapped[str] = mapped_column(sa.String(512))
    status: Mapped[str] = mapped_column(sa.String(16))
    severity: Mapped[str] = mapped_column(sa.String(16))
    metric: Mapped[str] = mapped_column(sa.String(64))
    measurement: Mapped[str] = mapped_column(sa.String(16))
    #: ``[[dimension, value], ...]``: what the incident is about.
    breakdowns: Mapped[list[list[str]]] = mapped_column(_json(), default=list)
    description: Mapped[str] = mapped_column(sa.Text)
    threshold: Mapped[float | None] = mapped_column(sa.Double)
    baseline: Mapped[float | None] = mapped_column(sa.Double)
    measured_value: Mapped[float | None] = mapped_column(sa.Double)
    measured_value_on_close: Mapped[float | None] = mapped_column(sa.Double)
    sample_size: Mapped[int] = mapped_column(sa.Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = _updated_at()
    #: Views per hour the incident covers when it opened / at the last evaluation; the rate integrated over its
    #: life (an estimate). Null for incidents older than revision 0014.
    affected_views_per_hour_on_open: Mapped[int | None] = mapped_column(sa.Integer)
    affected_views_per_hour: Mapped[int | None] = mapped_column(sa.Integer)
    affected_views: Mapped[float | None] = mapped_column(sa.Double)

    def __repr__(self) -> str:
        return f"DataIncident(id={self.id!r}, rule_id={self.rule_id!r}, status={self.status!r})"
