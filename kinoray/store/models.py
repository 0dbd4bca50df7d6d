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
    "AccessToken",
    "Asset",
    "AssetStatus",
    "Base",
    "Event",
    "IdempotencyKey",
    "Job",
    "PlaybackId",
    "PlaybackPolicy",
    "SigningKey",
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


# --- video resources -----------------------------------------------------------------------------------------


class Asset(Base):
    """A video: its input, what the transcode found and made, and where its files live."""

    __tablename__ = "assets"
    __table_args__ = (sa.Index("ix_assets_created_at_id", "created_at", "id"),)

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
    #: Mux's ``static_renditions`` (``{"status", "files": [...]}``), NULL when none were asked for.
    static_renditions: Mapped[dict[str, Any] | None] = mapped_column(_json())
    #: Mux's ``progress.state`` (ingesting | transcoding | completed | errored) and the fraction done, 0..1
    #: (Mux reports a percentage: the API multiplies by 100).
    progress_state: Mapped[str] = mapped_column(sa.String(16), default="ingesting")
    progress_fraction: Mapped[float] = mapped_column(sa.Double, default=0.0)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    playback_ids: Mapped[list[PlaybackId]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True,
        order_by="PlaybackId.created_at")
    jobs: Mapped[list[Job]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True, order_by="Job.created_at")
    upload: Mapped[Upload | None] = relationship(back_populates="asset", passive_deletes=True)

    def __repr__(self) -> str:
        return f"Asset(id={self.id!r}, status={self.status!r})"


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


_DEFAULT_UPLOAD_TIMEOUT = 3600


def _upload_expiry(context: DefaultExecutionContext) -> datetime:
    timeout = context.get_current_parameters().get("timeout_seconds") or _DEFAULT_UPLOAD_TIMEOUT
    return utcnow() + timedelta(seconds=timeout)


class Upload(Base):
    """A direct upload (Mux's ``/uploads``) and its tus state; the asset is created when the bytes are all in."""

    __tablename__ = "uploads"
    __table_args__ = (
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
    environment: Mapped[str] = mapped_column(sa.String(64), default="default")
    created_at: Mapped[datetime] = _created_at()
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    idempotency_keys: Mapped[list[IdempotencyKey]] = relationship(
        back_populates="token", cascade="all, delete-orphan", passive_deletes=True)

    @classmethod
    def issue(cls, *, name: str | None = None, environment: str = "default") -> tuple[AccessToken, str]:
        """A new token (id assigned now, not at flush) and its secret, which is not kept anywhere."""
        secret = new_secret()
        return cls(id=new_id(), secret_hash=hash_secret(secret), name=name, environment=environment), secret

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def check_secret(self, secret: str) -> bool:
        """Whether ``secret`` is this token's (constant-time compare); a revoked token still checks — the caller
        decides what revocation means."""
        return verify_secret(self.secret_hash, secret)

    def __repr__(self) -> str:
        return f"AccessToken(id={self.id!r}, name={self.name!r}, revoked={self.revoked})"


class SigningKey(Base):
    """An RSA public key that verifies signed-playback JWTs (``kid`` = id). The private key is returned once on
    creation and never stored."""

    __tablename__ = "signing_keys"
    __table_args__ = (sa.Index("ix_signing_keys_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_id)
    public_key: Mapped[str] = mapped_column(sa.Text)  # PEM
    created_at: Mapped[datetime] = _created_at()

    def __repr__(self) -> str:
        return f"SigningKey(id={self.id!r})"


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


class Event(Base):
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


class WebhookEndpoint(Base):
    """A URL that receives signed event POSTs.

    ``secret`` is stored as given, not hashed: the server needs it to compute each delivery's HMAC. Protect it
    the way the database is protected (access control, encrypted backups).
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (sa.Index("ix_webhook_endpoints_created_at_id", "created_at", "id"),)

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
    #: The JSON body to POST (the envelope: ``type``, ``id``, ``created_at``, ``object``, ``data``), fixed at
    #: enqueue time so every retry signs and sends the same body.
    payload: Mapped[dict[str, Any]] = mapped_column(_json())
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(sa.Integer)  # HTTP status of the last attempt
    last_error: Mapped[str | None] = mapped_column(sa.Text)
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
