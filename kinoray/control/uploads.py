"""Direct uploads (Mux's ``/video/v1/uploads``) and the tus 1.0.0 state machine behind ``/upload/v1/{id}``.

An upload is created by the management API (``waiting``), has its transfer created by tus creation (``POST`` with
``Upload-Length`` or ``Upload-Defer-Length``: one transaction) or by the first UpChunk-style ``PUT``, receives its
bytes over tus (``PATCH``) or ``PUT`` with ``Content-Range``, and becomes ``asset_created`` once
``upload_offset == upload_length``: the parts are joined into ``assets/<asset_id>/input`` and the asset is
created in the same transaction that records the last byte. ``cancelled`` (management cancel or tus
termination), ``timed_out`` (:func:`expire_uploads`) and ``errored`` (the parts could not be joined) are final.

Storage. Every request that carries bytes writes one part, ``uploads/<id>/parts/<offset:020d>-<nonce>``, through
:meth:`~kinoray.store.objects.ObjectStore.put_stream` (temporary key, then rename), so the body is never held in
memory and a reader never sees half a part. The database is the commit point: a part counts only once the row's
``upload_offset`` has moved past it and ``part_checksums`` lists it (``{"offset", "length", "key"}``, plus
``"algorithm"``/``"digest"`` when the client sent ``Upload-Checksum``). A part that a crash or a lost race left
behind is never read and goes with the upload's prefix when the upload ends. The nonce keeps two writers that
raced for one offset (see below) from overwriting each other's part.

Concurrency. One request at a time may change an upload:

- every replica keeps a table of the uploads it is writing, so a second request in the same process gets
  ``423 upload_locked`` at once, without a database round trip;
- on PostgreSQL the writer also holds ``SELECT ... FOR UPDATE NOWAIT`` on the row for the whole request, so a
  second replica gets ``423`` too, and the sweeper skips the row (``SKIP LOCKED``). Each body being received
  therefore holds one pooled connection: size the pool (``pool_size + max_overflow``) above the concurrent
  uploads a replica should take;
- SQLite has no row locks and must not hold its single write lock while a body streams in, so there the final
  update is a compare-and-set on ``(status, upload_offset)``: two processes that raced for one offset cannot
  both win; the loser's part is deleted and it answers ``409``.

A client that disconnects mid-body keeps what arrived: the body iterator simply ends early and the prefix is
committed like any part, so ``HEAD`` shows exactly the bytes stored, and the lock goes with the request. With
``Upload-Checksum`` an incomplete chunk cannot be verified and is discarded instead.

Creation. ``storage_key`` (the parts prefix) is set by the transaction that creates the transfer, and only then:
an upload without it has neither a length nor the client's word that the length comes later, so a ``PATCH`` on
it is refused (``409 upload_not_created``) rather than taking bytes that could never complete it. A tus client
whose creation failed (a ``POST`` answered 5xx) sends the ``POST`` again.

Nothing here knows about HTTP frameworks: the API layer parses headers, hands over the body as an iterable of
``bytes`` (read from a worker thread) and turns the typed errors of :mod:`kinoray.errors` into responses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import logging
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from kinoray.control.assets import NewAssetSettings, create_asset, input_key, mux_max_resolution_tier
from kinoray.control.events import emit
from kinoray.control.platform import Platform
from kinoray.control.requests import RequestModel
from kinoray.control.views import UploadView
from kinoray.errors import (
    ChecksumMismatchError,
    ConflictError,
    InvalidParametersError,
    NotFoundError,
    OffsetMismatchError,
    StorageError,
    UploadError,
    UploadGoneError,
    UploadLockedError,
    UploadNotCreatedError,
    UploadTooLargeError,
)
from kinoray.settings import Settings
from kinoray.store import keys
from kinoray.store.db import newest_first
from kinoray.store.models import Upload, UploadStatus, is_valid_id, new_id, utcnow

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "Checksum",
    "UploadCreate",
    "cancel_upload",
    "cors_origin",
    "create_upload",
    "encode_metadata",
    "expire_uploads",
    "expires_header",
    "get_upload",
    "is_created",
    "list_uploads",
    "parse_checksum",
    "parse_metadata",
    "parts_prefix",
    "receive",
    "terminate",
    "tus_create",
    "tus_status",
    "upload_url",
    "upload_view",
]

log = logging.getLogger(__name__)

#: ``Upload-Checksum`` algorithms (tus checksum extension; ``sha1`` is the one every server must offer).
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")
_ASSEMBLE_READ = 1024 * 1024  # bytes per read when joining parts
_SWEEP_BATCH = 500
_ORIGIN = r"^(\*|https?://[A-Za-z0-9.\-\[\]:]+)$"  # "*" or scheme://host[:port], nothing after


# --- the resource ------------------------------------------------------------------------------------------


class UploadCreate(RequestModel):
    """``POST /video/v1/uploads``."""

    model_config = ConfigDict(extra="forbid")

    cors_origin: str | None = Field(default=None, max_length=2048, pattern=_ORIGIN,
                                    description="origin browsers upload from (``https://example.com``) or ``*``")
    timeout: int = Field(default=3600, ge=60, le=604800,
                         description="seconds the upload may take before it becomes timed_out")
    new_asset_settings: NewAssetSettings | None = None
    test: bool = False


def upload_url(settings: Settings, upload_id: str) -> str:
    """The URL the client sends the bytes to (tus or ``PUT``); the unguessable id is the credential."""
    return f"{settings.public_url}/upload/v1/{upload_id}"


def parts_prefix(upload_id: str) -> str:
    """Object-store prefix of an upload's received parts (:mod:`kinoray.store.keys`)."""
    return keys.upload_prefix(upload_id)


def upload_view(upload: Upload, settings: Settings) -> UploadView:
    """The upload as the API shows it (Mux's ``Upload``)."""
    asset_settings = dict(upload.new_asset_settings or {})
    kinoray_tier = None
    if "max_resolution_tier" in asset_settings:  # Mux's enum in the echo, kinoray's own tier named apart
        asset_settings["max_resolution_tier"], kinoray_tier = mux_max_resolution_tier(
            asset_settings["max_resolution_tier"])
    return UploadView.model_validate({
        "id": upload.id,
        "status": upload.status.value,
        "url": upload_url(settings, upload.id),
        "timeout": upload.timeout_seconds,
        "cors_origin": upload.cors_origin,
        "new_asset_settings": asset_settings,
        "asset_id": upload.asset_id,
        "error": upload.error,
        "test": asset_settings.get("test") or None,
        "kinoray_max_resolution_tier": kinoray_tier,
    })


def create_upload(session: Session, settings: Settings, create: UploadCreate) -> Upload:
    """A new ``waiting`` upload and its ``video.upload.created`` event. ``new_asset_settings`` is kept as the
    client gave it (unset fields left out), with ``test: true`` folded in when the upload is a test."""
    asset_settings = (create.new_asset_settings.model_dump(mode="json", exclude_unset=True)
                      if create.new_asset_settings is not None else {})
    if create.test:
        asset_settings["test"] = True
    upload_id = new_id()
    upload = Upload(id=upload_id, status=UploadStatus.WAITING, cors_origin=create.cors_origin,
                    timeout_seconds=create.timeout, new_asset_settings=asset_settings, upload_offset=0,
                    upload_metadata={}, storage_key=None, part_checksums=[])  # storage_key: see is_created
    session.add(upload)
    session.flush()
    session.refresh(upload)
    emit(session, "video.upload.created", "upload", upload.id, upload_view(upload, settings))
    return upload


def get_upload(session: Session, upload_id: str) -> Upload:
    """The upload, or ``NotFoundError`` (also for ids that cannot be ours, so no path ever reaches storage)."""
    if not is_valid_id(upload_id):
        raise NotFoundError(f"no upload {upload_id[:80]!r}")
    upload = session.get(Upload, upload_id, populate_existing=True)
    if upload is None:
        raise NotFoundError(f"no upload {upload_id!r}")
    return upload


def list_uploads(session: Session, *, limit: int = 25, cursor: str | None = None,
                 page: int = 1) -> tuple[list[Upload], str | None]:
    """Newest first, and the cursor of the next page (None on the last): keyset pages from ``cursor`` (stable
    while uploads are added), else Mux's numbered ``page``."""
    try:
        return newest_first(session, Upload, limit=limit, cursor=cursor, page=page)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def cors_origin(platform: Platform, upload_id: str) -> str | None:
    """The origin browsers may upload to ``upload_id`` from (None for unknown ids and uploads without one)."""
    if not is_valid_id(upload_id):
        return None
    with platform.db.reader() as session:
        return session.scalar(sa.select(Upload.cors_origin).where(Upload.id == upload_id))


# --- tus header values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checksum:
    """An ``Upload-Checksum``: the algorithm and the digest the chunk must have."""

    algorithm: str
    digest: bytes

    def __post_init__(self) -> None:
        if self.algorithm not in CHECKSUM_ALGORITHMS:
            raise InvalidParametersError(f"unsupported checksum algorithm {self.algorithm!r} "
                                         f"(supported: {', '.join(CHECKSUM_ALGORITHMS)})")
        if len(self.digest) != hashlib.new(self.algorithm, usedforsecurity=False).digest_size:
            raise InvalidParametersError(f"Upload-Checksum: a {self.algorithm} digest has "
                                         f"{hashlib.new(self.algorithm, usedforsecurity=False).digest_size} bytes")

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm, usedforsecurity=False)


def parse_checksum(header: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; ``InvalidParametersError`` (400) if malformed or the
    algorithm is not one of :data:`CHECKSUM_ALGORITHMS`."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParametersError("Upload-Checksum must be '<algorithm> <base64 digest>'") from None
    return Checksum(algorithm.lower(), digest)


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value may be absent), decoded."""
    metadata: dict[str, str] = {}
    if not header or not header.strip():
        return metadata
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or key in metadata:
            raise InvalidParametersError(f"Upload-Metadata: malformed or repeated pair {pair.strip()[:80]!r}")
        try:
            metadata[key] = base64.b64decode(parts[1], validate=True).decode() if len(parts) == 2 else ""
        except (binascii.Error, ValueError):
            raise InvalidParametersError(f"Upload-Metadata: the value of {key!r} is not base64 UTF-8") from None
    return metadata


def encode_metadata(metadata: dict[str, str]) -> str:
    """The ``Upload-Metadata`` header for stored ``metadata`` (keys without a value stand alone)."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
                    for key, value in metadata.items())


def expires_header(upload: Upload) -> str:
    """``Upload-Expires``: the upload's deadline as an RFC 7231 date."""
    return format_datetime(upload.expires_at, usegmt=True)


# --- locking -----------------------------------------------------------------------------------------------

_writing: set[str] = set()
_writing_guard = threading.Lock()
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL SQLSTATE of FOR UPDATE NOWAIT on a locked row


@contextmanager
def _exclusive(platform: Platform, upload_id: str) -> Iterator[Session | None]:
    """Hold ``upload_id``'s write lock for the block, or raise ``UploadLockedError`` (423) at once.

    Yields the PostgreSQL session that holds the row lock (the block's reads and writes go through it and commit
    when it ends), or ``None`` on SQLite, where :func:`_phase` opens short transactions instead."""
    if not is_valid_id(upload_id):
        raise NotFoundError(f"no upload {upload_id[:80]!r}")
    with _writing_guard:
        if upload_id in _writing:
            raise UploadLockedError(f"upload {upload_id} is being written by another request")
        _writing.add(upload_id)
    try:
        if platform.db.dialect != "postgresql":
            yield None
            return
        with platform.db.session() as session:
            try:
                session.execute(sa.select(Upload.id).where(Upload.id == upload_id).with_for_update(nowait=True))
            except OperationalError as error:
                if getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                    raise UploadLockedError(f"upload {upload_id} is being written by another request") from None
                raise
            yield session
    finally:
        with _writing_guard:
            _writing.discard(upload_id)


@contextmanager
def _phase(platform: Platform, locked: Session | None) -> Iterator[Session]:
    """The locked session, or a short transaction of its own."""
    if locked is not None:
        yield locked
    else:
        with platform.db.session() as session:
            yield session


@contextmanager
def _reading(platform: Platform, locked: Session | None) -> Iterator[Session]:
    """The locked session, or a read-only transaction of its own (on SQLite it leaves the write lock alone)."""
    if locked is not None:
        yield locked
    else:
        with platform.db.reader() as session:
            yield session


def is_created(upload: Upload) -> bool:
    """Whether the upload's transfer was created (tus ``POST``, or a first ``PUT``): only then may it take bytes.
    Until then it has no ``storage_key``, no ``Upload-Length`` and no ``Upload-Defer-Length``."""
    return upload.storage_key is not None


def _require_waiting(upload: Upload) -> None:
    """Only a waiting upload within its timeout takes data or changes: ``410`` for ended ones, ``409`` for one
    that already made its asset."""
    if upload.status == UploadStatus.ASSET_CREATED:
        raise ConflictError(f"upload {upload.id} is complete (asset {upload.asset_id})")
    if upload.status != UploadStatus.WAITING:
        raise UploadGoneError(f"upload {upload.id} is {upload.status.value}")
    if upload.expires_at <= utcnow():
        raise UploadGoneError(f"upload {upload.id} timed out")


# --- tus operations ------------------------------------------------------------------------------------------


def tus_status(platform: Platform, upload_id: str) -> Upload:
    """The upload for ``HEAD``: waiting (within its timeout) or complete; ``410`` once it has ended otherwise."""
    with platform.db.reader() as session:
        upload = get_upload(session, upload_id)
    if upload.status == UploadStatus.WAITING and upload.expires_at <= utcnow():
        raise UploadGoneError(f"upload {upload_id} timed out")
    if upload.status not in (UploadStatus.WAITING, UploadStatus.ASSET_CREATED):
        raise UploadGoneError(f"upload {upload_id} is {upload.status.value}")
    return upload


def _check_size(platform: Platform, length: int) -> None:
    limit = platform.settings.api.max_upload_bytes
    if length > limit:
        raise UploadTooLargeError(f"upload of {length} bytes is over the maximum of {limit} (Tus-Max-Size)")


def tus_create(platform: Platform, upload_id: str, *, length: int | None,
               metadata: dict[str, str] | None = None) -> Upload:
    """tus creation on the upload's own URL: fix its ``Upload-Length`` (``None``: deferred) and metadata.

    Repeating it is allowed while no byte has arrived (a client that lost the first answer); afterwards
    ``409``. Over ``api.max_upload_bytes``: ``413``. ``length == 0`` completes the upload at once.

    The length, the metadata and the mark that the transfer exists (:func:`is_created`) are written by one
    compare-and-set in one transaction, together with the asset when ``length == 0``: a creation that fails
    leaves the upload as it was, unable to take a ``PATCH`` until a creation succeeds."""
    if length is not None:
        _check_size(platform, length)
    pending = _Pending()
    try:
        with _exclusive(platform, upload_id) as locked:
            with _reading(platform, locked) as session:
                upload = get_upload(session, upload_id)
            _require_waiting(upload)
            if upload.upload_offset > 0:
                raise ConflictError(f"upload {upload_id} has already received {upload.upload_offset} bytes")
            upload = _record(platform, locked, upload_id, pending, start=0, known_length=upload.upload_length,
                             length=length, parts=[], new_part=None, metadata=dict(metadata or {}))
    except BaseException:
        pending.discard(platform)
        raise
    return _settle(platform, upload, pending)


def terminate(platform: Platform, upload_id: str) -> Upload:
    """tus termination: ``cancelled`` with its parts deleted; ``410`` if it had already ended."""
    return _cancel(platform, upload_id, repeat_ok=False)


def cancel_upload(platform: Platform, upload_id: str) -> Upload:
    """``PUT /video/v1/uploads/{id}/cancel``: like :func:`terminate`, but an already cancelled upload is simply
    returned, and any other ended one is a ``409``."""
    return _cancel(platform, upload_id, repeat_ok=True)


def _cancel(platform: Platform, upload_id: str, *, repeat_ok: bool) -> Upload:
    with _exclusive(platform, upload_id) as locked:
        with _phase(platform, locked) as session:
            upload = get_upload(session, upload_id)
            if upload.status == UploadStatus.CANCELLED and repeat_ok:
                return upload
            if upload.status != UploadStatus.WAITING:
                if repeat_ok or upload.status == UploadStatus.ASSET_CREATED:
                    raise ConflictError(f"upload {upload_id} is {upload.status.value}: only waiting uploads "
                                        f"can be cancelled")
                raise UploadGoneError(f"upload {upload_id} is {upload.status.value}")
            upload.status = UploadStatus.CANCELLED
            upload.updated_at = utcnow()
            session.flush()
            emit(session, "video.upload.cancelled", "upload", upload_id, upload_view(upload, platform.settings))
    _delete_parts(platform, upload_id)
    return upload


def receive(platform: Platform, upload_id: str, body: Iterable[bytes], *, offset: int,
            content_length: int | None = None, checksum: Checksum | None = None,
            upload_length: int | None = None, acknowledge_stored: bool = False, creates: bool = False) -> Upload:
    """Append ``body`` (a tus ``PATCH`` or a ``PUT`` with ``Content-Range``) at ``offset``; the upload after it.

    ``offset`` must be the upload's offset (else ``409``, nothing changed; with ``acknowledge_stored`` a chunk
    that lies wholly before the offset, an UpChunk retry, is read and dropped instead). ``upload_length`` fixes
    a deferred length (a different one than already fixed: ``400``). Bytes past the length or
    ``api.max_upload_bytes``: ``413``, and nothing of this body is stored. With ``checksum`` the chunk is hashed
    as it streams and only committed if it matches (else ``460``, offset unchanged). A body that ends before
    ``content_length`` (the client went away) is stored as far as it got, unless a checksum was given.

    An upload whose transfer was never created (:func:`is_created`) takes nothing: ``409 upload_not_created``,
    unless ``creates`` (a ``PUT``, whose ``Content-Range`` declares the transfer itself) creates it with this
    request's record.

    Reaching the length joins the parts into the asset's input and creates the asset (``asset_created``).
    """
    pending = _Pending()
    try:
        with _exclusive(platform, upload_id) as locked:
            with _reading(platform, locked) as session:
                upload = get_upload(session, upload_id)
            start, length = upload.upload_offset, upload.upload_length
            if (acknowledge_stored and content_length is not None and offset < start
                    and offset + content_length <= start
                    and upload.status in (UploadStatus.WAITING, UploadStatus.ASSET_CREATED)):
                for _ in body:  # a retried chunk already stored: read it so the client gets a clean answer
                    pass
                return upload
            _require_waiting(upload)
            if not creates and not is_created(upload):
                raise UploadNotCreatedError(
                    f"upload {upload_id} has no Upload-Length and no Upload-Defer-Length: its tus creation did not "
                    f"complete. Send POST with Upload-Length (or Upload-Defer-Length: 1) first")
            length = _fixed_length(platform, length, upload_length, start)
            if offset != start:
                raise OffsetMismatchError(f"Upload-Offset {offset} is not the upload's offset {start}")
            room = (length if length is not None else platform.settings.api.max_upload_bytes) - start
            if content_length is not None and content_length > room:
                raise UploadTooLargeError(f"{content_length} bytes at offset {start} would pass the upload's "
                                          f"{'length' if length is not None else 'maximum size'} of {start + room}")
            key = keys.upload_part_key(upload_id, start, secrets.token_hex(4))
            written = _write_part(platform, key, body, room=room, declared=content_length, checksum=checksum)
            new_part = None
            if written:
                pending.keys.append(key)
                new_part = {"offset": start, "length": written, "key": key}
                if checksum is not None:
                    new_part.update(algorithm=checksum.algorithm,
                                    digest=base64.b64encode(checksum.digest).decode())
            upload = _record(platform, locked, upload_id, pending, start=start, known_length=upload.upload_length,
                             length=length, parts=list(upload.part_checksums or []), new_part=new_part)
    except BaseException:
        pending.discard(platform)
        raise
    return _settle(platform, upload, pending)


def _fixed_length(platform: Platform, length: int | None, upload_length: int | None, start: int) -> int | None:
    """The upload's length once this request's ``Upload-Length`` (or Content-Range total) is applied."""
    if upload_length is None:
        return length
    if length is None:
        _check_size(platform, upload_length)
        if upload_length < start:
            raise InvalidParametersError(f"Upload-Length {upload_length} is below the {start} bytes already "
                                         f"received")
        return upload_length
    if upload_length != length:
        raise InvalidParametersError(f"Upload-Length {upload_length} differs from the upload's length {length}")
    return length


def _write_part(platform: Platform, key: str, body: Iterable[bytes], *, room: int, declared: int | None,
                checksum: Checksum | None) -> int:
    """Stream ``body`` to ``key``; the bytes written (0: nothing stored). Raises before committing anything if
    the body passes ``room`` or fails its checksum."""
    chunks = _checked(body, room=room, declared=declared, checksum=checksum)
    first = next(chunks, None)
    if first is None:
        return 0
    return platform.store.put_stream(itertools.chain([first], chunks), key)


def _checked(body: Iterable[bytes], *, room: int, declared: int | None,
             checksum: Checksum | None) -> Iterator[bytes]:
    hasher = checksum.hasher() if checksum is not None else None
    received = 0
    for chunk in body:
        if not chunk:
            continue
        received += len(chunk)
        if received > room:
            raise UploadTooLargeError(f"the body passes the upload's length by {received - room} bytes; "
                                      f"nothing of it was stored")
        if hasher is not None:
            hasher.update(chunk)
        yield chunk
    if checksum is not None and hasher is not None:
        if declared is not None and received < declared:
            raise UploadError(f"the body ended after {received} of {declared} bytes; a chunk with "
                              f"Upload-Checksum is only stored whole, so it was discarded")
        if hasher.digest() != checksum.digest:
            raise ChecksumMismatchError(f"the chunk's {checksum.algorithm} does not match Upload-Checksum; "
                                        f"it was discarded")


@dataclass
class _Pending:
    """What a request wrote to storage that only counts once its transaction commits (deleted if it does not),
    and a failure to report after the commit."""

    keys: list[str] = field(default_factory=list)
    failure: Exception | None = None

    def discard(self, platform: Platform) -> None:
        for key in self.keys:
            _quietly(platform.store.delete, key)


def _record(platform: Platform, locked: Session | None, upload_id: str, pending: _Pending, *, start: int,
            known_length: int | None, length: int | None, parts: list[dict[str, Any]],
            new_part: dict[str, Any] | None, metadata: dict[str, str] | None = None) -> Upload:
    """Record ``new_part``, the (maybe newly fixed) length and (tus creation) ``metadata`` with a compare-and-set
    on the offset and length this request started from (``start``, ``known_length``); the upload counts as
    created (:func:`is_created`) from this transaction on. If that completes the upload, join the parts into a
    new asset's input first and create the asset in the same transaction, or mark the upload errored when they
    cannot be joined (``pending.failure``)."""
    offset = start + (new_part["length"] if new_part else 0)
    all_parts = [*parts, new_part] if new_part else parts
    asset_id = new_id() if length is not None and offset == length else None
    if asset_id is not None:
        pending.keys.append(input_key(asset_id))
        try:
            _assemble(platform, all_parts, input_key(asset_id), own_part=new_part)
        except Exception as error:  # noqa: BLE001 - recorded on the upload and reported after the commit
            log.exception("joining an upload's parts failed", extra={"upload_id": upload_id})
            pending.failure = error
    with _phase(platform, locked) as session:
        changed = session.execute(
            sa.update(Upload)
            .where(Upload.id == upload_id, Upload.status == UploadStatus.WAITING, Upload.upload_offset == start,
                   Upload.upload_length.is_not_distinct_from(known_length))
            .values(upload_offset=offset, upload_length=length, part_checksums=all_parts,
                    storage_key=parts_prefix(upload_id), updated_at=utcnow(),
                    **({"upload_metadata": metadata} if metadata is not None else {}))
            .execution_options(synchronize_session=False))
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise OffsetMismatchError(f"upload {upload_id} changed while this request ran; ask HEAD for its offset")
        upload = get_upload(session, upload_id)
        if asset_id is None:
            return upload
        if pending.failure is None:
            upload.status = UploadStatus.ASSET_CREATED
            upload.asset_id = asset_id
            create_asset(session, platform.settings, NewAssetSettings.model_validate(upload.new_asset_settings or {}),
                         input_url=None, asset_id=asset_id, source_key=input_key(asset_id),
                         environment_id=upload.environment_id)
            event = "video.upload.asset_created"
        else:
            upload.status = UploadStatus.ERRORED
            upload.error = {"type": "storage_error",
                            "message": "the received bytes could not be joined into the asset's input"}
            event = "video.upload.errored"
        session.flush()
        emit(session, event, "upload", upload_id, upload_view(upload, platform.settings))
    return upload


def _settle(platform: Platform, upload: Upload, pending: _Pending) -> Upload:
    """After the commit: an upload that ended has no use for its parts; a failure to join them is reported."""
    if upload.status != UploadStatus.WAITING:
        _delete_parts(platform, upload.id)
    if pending.failure is not None:
        raise StorageError(f"upload {upload.id} errored: the received bytes could not be joined") from pending.failure
    return upload


def _assemble(platform: Platform, parts: list[dict[str, Any]], key: str, *, own_part: dict[str, Any] | None) -> None:
    """Join ``parts`` in offset order into ``key``, streamed. A single part written by this very request is
    renamed instead of copied (if the transaction then fails, that part was not counted anyway)."""
    store = platform.store
    ordered = sorted(parts, key=lambda part: part["offset"])
    expected = 0
    for part in ordered:
        if part["offset"] != expected:
            raise StorageError(f"parts are not contiguous at byte {expected}")
        expected += part["length"]
    if len(ordered) == 1 and own_part is not None and ordered[0] is own_part:
        store.move(own_part["key"], key)
        return

    def chunks() -> Iterator[bytes]:
        for part in ordered:
            read = 0
            with store.open(part["key"]) as source:
                while data := source.read(_ASSEMBLE_READ):
                    read += len(data)
                    yield data
            if read != part["length"]:
                raise StorageError(f"part {part['key']} has {read} bytes, {part['length']} were recorded")

    store.put_stream(chunks(), key)


def _delete_parts(platform: Platform, upload_id: str) -> None:
    _quietly(platform.store.delete_prefix, parts_prefix(upload_id))


def _quietly(action: Any, key: str) -> None:
    try:
        action(key)
    except Exception:  # noqa: BLE001 - cleanup; a leftover is harmless and removed with the upload's prefix
        log.warning("could not delete %s", key, exc_info=True)


# --- the sweeper -------------------------------------------------------------------------------------------


def expire_uploads(platform: Platform, now: datetime | None = None) -> int:
    """Turn waiting uploads past ``expires_at`` into ``timed_out`` and delete their parts; how many.

    Uploads being written right now are skipped (locked rows on PostgreSQL, this process's own writers); a
    later sweep gets them. The runner calls this periodically."""
    now = now or utcnow()
    expired: list[str] = []
    due = (Upload.status == UploadStatus.WAITING, Upload.expires_at <= now)
    with platform.db.session() as session:
        query = sa.select(Upload.id).where(*due).order_by(Upload.expires_at).limit(_SWEEP_BATCH)
        if platform.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for upload_id in list(session.scalars(query)):
            with _writing_guard:
                if upload_id in _writing:
                    continue
            changed = session.execute(sa.update(Upload).where(Upload.id == upload_id, *due)
                                      .values(status=UploadStatus.TIMED_OUT, updated_at=now)
                                      .execution_options(synchronize_session=False))
            if changed.rowcount == 1:  # type: ignore[attr-defined]
                expired.append(upload_id)
    for upload_id in expired:
        _delete_parts(platform, upload_id)
    if expired:
        log.info("uploads timed out", extra={"count": len(expired)})
    return len(expired)
