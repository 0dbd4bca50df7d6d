"""Playback delivery, HTTP- and Ray-free: a playback id resolved to its asset's files, signed-playback tokens,
the manifests a viewer gets, byte ranges, validators and the caching policy.

URL scheme (served by ``kinoray.serve.routes.playback``; every path under ``/{playback_id}/`` mirrors the
asset's ``media/`` prefix, restricted to names the packager writes)::

    /{playback_id}.m3u8                     HLS master (modifiers filter/order the variants)
    /{playback_id}.mpd                      DASH MPD over the same files
    /{playback_id}/{rung}/index.m3u8        HLS media playlist (rung: 1080p, 720p, ..., audio)
    /{playback_id}/{rung}/init.mp4          CMAF init segment
    /{playback_id}/{rung}/seg_00001.m4s     CMAF media segment
    /{playback_id}/highest.mp4              static renditions (ready ones): highest.mp4, 720p.mp4, audio.m4a, …
    /master/{token}                         a master download (the original input; control/master.py)
    /{playback_id}/text/{track_id}.m3u8     HLS subtitle playlist of a text track (one WebVTT segment)
    /{playback_id}/text/{track_id}.vtt      the text track's WebVTT (Mux's URL; also the DASH BaseURL)

Manifests name their children with URIs relative to the manifest's own URL (``{playback_id}/720p/index.m3u8``
from the master, ``seg_00001.m4s`` from a media playlist), so the same bytes work behind any host or path
prefix. For a ``signed`` playback id every URL needs ``?token=`` (a JWT, see :func:`verify_token`), and the
manifests carry the viewer's token on every URI they list, so a stock player (hls.js, dash.js, ffmpeg) plays
without custom code.

Text tracks (``asset.tracks`` entries of type ``text``, stored as ``media/text/<track_id>.vtt`` and
``.m3u8`` by :mod:`kinoray.control.tracks`) are added to the master playlist and the MPD here, per request,
from the asset row :func:`load_record` reads anyway.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import quote

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy.orm import Session, joinedload

from kinoray.control.live import live_prefix
from kinoray.control.lookup import find
from kinoray.control.static_renditions import STATIC_NAMES
from kinoray.errors import (
    AssetNotReadyError,
    InvalidParametersError,
    NotFoundError,
    PlaybackForbiddenError,
    StorageError,
)
from kinoray.media.manifest_rewrite import (
    RenditionFilter,
    TextRendition,
    TimeWindow,
    clip_span,
    retime_subtitle_playlist,
    rewrite_dash_mpd,
    rewrite_hls_master,
    rewrite_hls_media,
)
from kinoray.store import keys
from kinoray.store.models import (
    DEFAULT_ENVIRONMENT_ID,
    AssetStatus,
    LiveStreamPlaybackId,
    LiveStreamStatus,
    PlaybackId,
    PlaybackPolicy,
    StaticRendition,
    StaticRenditionStatus,
    is_valid_id,
)
from kinoray.store.objects import ObjectStore

__all__ = [
    "AUDIENCES",
    "CORS_HEADERS",
    "IMMUTABLE_MAX_AGE",
    "MANIFEST_MAX_AGE",
    "MEDIA_FILE_PATTERN",
    "RUNG_PATTERN",
    "STATIC_RENDITIONS",
    "TEXT_DIR",
    "TEXT_FILE_PATTERN",
    "ByteRange",
    "KeyLookup",
    "Playback",
    "PlaybackModifiers",
    "PlaybackRecord",
    "StoredObject",
    "TOKEN_LEEWAY_SECONDS",
    "TOKEN_MAX_LENGTH",
    "authorize",
    "cache_control",
    "dash_manifest",
    "etag_matches",
    "hls_master",
    "hls_media",
    "hls_subtitles",
    "if_range_allows",
    "load_record",
    "media_content_type",
    "media_file_key",
    "parse_range",
    "playback_modifiers",
    "read_object",
    "rendition_filter",
    "stat_object",
    "static_rendition_key",
    "text_etag",
    "text_file_key",
    "text_renditions",
    "token_expired",
    "verify_token",
]

log = logging.getLogger(__name__)

#: JWT ``aud`` values (Mux's): video (manifests, segments, MP4), thumbnail, gif, storyboard.
AUDIENCES = {"video": "v", "thumbnail": "t", "gif": "g", "storyboard": "s"}
#: Seconds a cache may keep a public manifest; segments and MP4s never change once published.
MANIFEST_MAX_AGE = 5
#: A live stream's playlists change every segment: a second, so a CDN never holds the live edge back.
LIVE_MANIFEST_MAX_AGE = 1
IMMUTABLE_MAX_AGE = 31_536_000
#: Clock skew tolerated on ``exp``/``nbf``/``iat``, in seconds.
TOKEN_LEEWAY_SECONDS = 5
#: Longer tokens are refused unparsed (Mux's are under 1 KiB).
TOKEN_MAX_LENGTH = 8192

#: For browsers on other origins: players fetch manifests and segments with XHR/fetch, read byte ranges and
#: validators, and measure timing.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag, Age, Date",
    "Timing-Allow-Origin": "*",
}

#: ``min_resolution``/``max_resolution`` values: every size Mux's SDKs send (mux-node's types list 270p to 2160p).
_RESOLUTIONS = {f"{height}p": height for height in (270, 360, 480, 540, 720, 1080, 1440, 2160)}
_RENDITION_ORDERS = {"desc": True}
_BOOLEANS = {"true": True, "false": False, True: True, False: False}
#: A BCP 47 tag's shape (language, then subtags): enough to refuse garbage without a registry.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,7}")
_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,12})?")
#: Rendition folders the packager writes (``240p`` ... ``2160p``, ``audio``) and the files inside them.
RUNG_PATTERN = re.compile(r"[1-9][0-9]{1,3}p|audio")
#: ``part_<msn>.<part>.m4s``: a low-latency live stream's LL-HLS parts (:mod:`kinoray.live.llhls`).
#: ``init-<n>.mp4``: the init segment of a live transcoder that replaced one (:func:`kinoray.live.llhls.next_init_name`).
MEDIA_FILE_PATTERN = re.compile(r"init(?:-[0-9]{1,6})?\.mp4|seg_[0-9]{5,9}\.m4s|part_[0-9]{5,9}\.[0-9]{1,3}\.m4s")
STATIC_RENDITIONS = STATIC_NAMES
#: Folder of text tracks under an asset's media prefix (:mod:`kinoray.store.keys`), and the files in it:
#: ``<track_id>.vtt``/``.m3u8``.
TEXT_DIR = keys.TEXT_DIR
TEXT_FILE_PATTERN = re.compile(r"([A-Za-z0-9]{32})\.(vtt|m3u8)")
_READ_CHUNK = 256 * 1024


# --- resolving a playback id ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Playback:
    """A playback id that may be served now: its asset's media prefix and, for signed ids, the verified token
    (propagated into manifests) and its claims."""

    playback_id: str
    asset_id: str
    policy: PlaybackPolicy
    media_prefix: str  # "assets/<asset_id>/media"
    token: str | None = None
    claims: Mapping[str, Any] | None = None
    #: The asset's ready text tracks, in the order they were added (what manifests list).
    text_tracks: tuple[TextRendition, ...] = ()
    #: A live stream's playback id: its playlists change every segment (never cached for long).
    live: bool = False

    @property
    def signed(self) -> bool:
        return self.policy == PlaybackPolicy.SIGNED

    @property
    def query(self) -> str:
        """What every URI a manifest lists carries: ``?token=...`` for signed ids, nothing for public ones."""
        return f"?token={quote(self.token, safe='')}" if self.signed and self.token else ""

    @property
    def seconds_left(self) -> int | None:
        """Seconds until the token expires (signed ids), else ``None``."""
        if not self.signed or self.claims is None:
            return None
        return max(0, int(self.claims["exp"]) - int(time.time()))

    def key(self, *parts: str) -> str:
        return "/".join([self.media_prefix, *parts])


@functools.lru_cache(maxsize=256)
def _load_public_key(pem: str) -> RSAPublicKey:
    key = load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, RSAPublicKey):
        raise ValueError("signing key is not RSA")
    return key


@dataclass(frozen=True)
class PlaybackRecord:
    """What the database says about a playback id, before any token is looked at: one row read, cacheable
    (:class:`kinoray.control.resolver.PlaybackResolver` keeps these for a few seconds per process)."""

    playback_id: str
    asset_id: str
    policy: PlaybackPolicy
    status: AssetStatus
    storage_prefix: str  # "assets/<asset_id>"
    text_tracks: tuple[TextRendition, ...] = ()
    #: For images: whether the asset has a video track, and its duration in seconds (``None`` if unknown).
    has_video: bool = False
    duration: float | None = None
    #: The asset's ``ready`` static renditions (file names): the only ones served.
    static_files: frozenset[str] = frozenset()
    #: Set for a live stream's playback id: the stream's id. Then ``asset_id`` is its current recording ("" between
    #: sessions), ``status`` is ``ready`` while the stream is ``active`` (else ``preparing``) and
    #: ``storage_prefix`` is the stream's live output (:func:`kinoray.control.live.live_prefix`).
    live_stream_id: str | None = None
    #: The asset's (or live stream's) environment: its signing keys and playback restrictions are the only ones
    #: a token for this id may name.
    environment_id: str = DEFAULT_ENVIRONMENT_ID


#: Looks up a signing key's PEM public key by ``kid`` (``None``: no such key).
KeyLookup = Callable[[str], str | None]


def load_record(session: Session, playback_id: str) -> PlaybackRecord:
    """The playback id's row and its asset's state. Raises ``NotFoundError`` for unknown, deleted or malformed
    ids (nothing but a valid id ever reaches the query). A live stream's playback id gives a record with
    ``live_stream_id`` set (see :class:`PlaybackRecord`)."""
    try:
        row = find(session, PlaybackId, playback_id, what="playback id", options=(joinedload(PlaybackId.asset),))
    except NotFoundError:
        live = session.get(LiveStreamPlaybackId, playback_id,
                           options=(joinedload(LiveStreamPlaybackId.live_stream),)) if is_valid_id(playback_id) else None
        if live is None:
            raise
        stream = live.live_stream
        return PlaybackRecord(
            playback_id=live.id, asset_id=stream.active_asset_id or "", policy=live.policy,
            status=AssetStatus.READY if stream.status == LiveStreamStatus.ACTIVE else AssetStatus.PREPARING,
            storage_prefix=live_prefix(stream.id), has_video=not stream.audio_only, live_stream_id=stream.id,
            environment_id=stream.environment_id)
    asset = row.asset
    tracks = asset.tracks or []
    return PlaybackRecord(
        playback_id=row.id, asset_id=asset.id, policy=row.policy, status=asset.status,
        storage_prefix=keys.asset_prefix(asset.id, asset.storage_prefix),
        text_tracks=text_renditions(tracks),
        has_video=asset.resolution_tier != "audio-only" and any(track.get("type") == "video" for track in tracks),
        duration=asset.duration, environment_id=asset.environment_id,
        static_files=frozenset(session.scalars(sa.select(StaticRendition.name).where(
            StaticRendition.asset_id == asset.id, StaticRendition.status == StaticRenditionStatus.READY))))


def verify_token(playback_id: str, token: str | None, audience: str, public_key: KeyLookup) -> dict[str, Any]:
    """The claims of ``token`` if it opens ``playback_id`` for ``audience`` (``"v"``, ``"t"``, ``"g"``, ``"s"``).

    Accepted: RS256 only (the algorithm is pinned, so ``alg: none`` and HS256 keyed with the public key are
    refused), signed by the signing key named by ``kid`` in the header or, as Mux's SDKs send it, in the claims
    (looked up with ``public_key``), ``sub``
    equal to the playback id, ``aud`` exactly ``audience``, ``exp`` present and in the future, ``nbf``/``iat``
    (if present) not in the future, each with :data:`TOKEN_LEEWAY_SECONDS` of clock skew. One signature check
    and one key lookup.

    Raises:
        PlaybackForbiddenError: for every refusal, with the reason in the message.
    """
    if not token:
        raise PlaybackForbiddenError(f"playback id {playback_id} is signed: add ?token=<JWT>")
    if len(token) > TOKEN_MAX_LENGTH:
        raise PlaybackForbiddenError("token too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise PlaybackForbiddenError("malformed token") from None
    if header.get("alg") != "RS256":
        raise PlaybackForbiddenError(f"token algorithm {str(header.get('alg'))[:16]!r} refused: only RS256")
    kid = header.get("kid")
    if kid is None:  # Mux's SDKs (mux.jwt) name the key in the claims
        try:
            kid = jwt.decode(token, options={"verify_signature": False}).get("kid")
        except jwt.PyJWTError:
            raise PlaybackForbiddenError("malformed token") from None
    pem = public_key(kid) if isinstance(kid, str) and is_valid_id(kid) else None
    if pem is None:
        raise PlaybackForbiddenError("token kid names no signing key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, _load_public_key(pem), algorithms=["RS256"], audience=audience,
            options={"require": ["exp", "sub", "aud"], "strict_aud": True}, leeway=TOKEN_LEEWAY_SECONDS)
    except jwt.ExpiredSignatureError:
        raise PlaybackForbiddenError("token expired") from None
    except jwt.ImmatureSignatureError:
        raise PlaybackForbiddenError("token not valid yet (nbf/iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise PlaybackForbiddenError(f"token audience is not {audience!r}") from None
    except jwt.MissingRequiredClaimError as error:
        raise PlaybackForbiddenError(f"token has no {error.claim!r} claim") from None
    except (jwt.PyJWTError, ValueError):
        raise PlaybackForbiddenError("token signature or claims invalid") from None
    if claims.get("sub") != playback_id:
        raise PlaybackForbiddenError("token was issued for another playback id")
    return claims


def token_expired(claims: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether verified ``claims`` have expired since (``exp`` plus the leeway :func:`verify_token` allows), so
    a cached verification is not used past the token's life."""
    return (time.time() if now is None else now) > int(claims["exp"]) + TOKEN_LEEWAY_SECONDS


def authorize(record: PlaybackRecord, claims: Mapping[str, Any] | None, token: str | None) -> Playback:
    """The :class:`Playback` of ``record`` for a caller whose token's ``claims`` were verified (signed ids; a
    token given for a public id is ignored), once the asset's state allows playback. The checks run in this
    order (so an anonymous caller learns nothing about a signed id's asset): the id exists (``record``), the
    token (``claims``), the asset's state.

    Raises:
        AssetNotReadyError: the asset is still preparing.
        NotFoundError: the asset errored.
    """
    live = record.live_stream_id is not None
    if record.status == AssetStatus.PREPARING:
        if live:
            raise AssetNotReadyError(f"the live stream of playback id {record.playback_id} is not active; retry "
                                     "when it is")
        raise AssetNotReadyError(f"asset for playback id {record.playback_id} is still preparing; retry when it "
                                 "is ready")
    if record.status != AssetStatus.READY:
        raise NotFoundError(f"playback id {record.playback_id} has nothing to play: its asset errored")
    return Playback(playback_id=record.playback_id, asset_id=record.asset_id, policy=record.policy,
                    media_prefix=record.storage_prefix if live else f"{record.storage_prefix}/{keys.MEDIA_DIR}",
                    token=token if claims is not None else None, claims=claims, text_tracks=record.text_tracks,
                    live=live)


def text_renditions(tracks: Sequence[Mapping[str, Any]]) -> tuple[TextRendition, ...]:
    """The ready text tracks among an asset's ``tracks`` (Mux's track objects), as manifests list them. An
    entry that cannot be listed (a hand-edited row) is skipped rather than failing every playback request."""
    renditions = []
    for track in tracks:
        if track.get("type") != "text" or track.get("status") != "ready":
            continue
        track_id = str(track.get("id"))
        try:
            if not TEXT_FILE_PATTERN.fullmatch(f"{track_id}.vtt"):
                raise ValueError(f"bad track id {track_id[:40]!r}")
            renditions.append(TextRendition(
                track_id=track_id, name=str(track.get("name") or ""), language=str(track.get("language_code") or ""),
                closed_captions=bool(track.get("closed_captions")), uri=f"{TEXT_DIR}/{track_id}.m3u8",
                vtt_uri=f"{TEXT_DIR}/{track_id}.vtt"))
        except ValueError as error:
            log.warning("text track left out of manifests", extra={"track": track_id[:40], "error": str(error)})
    return tuple(renditions)


@dataclass(frozen=True)
class PlaybackModifiers:
    """Mux's playback modifiers of one manifest request (hashable: part of the manifest cache key).

    ``selection``: ``min_resolution``/``max_resolution``/``rendition_order``. ``window``: instant clipping
    (``asset_start_time``/``asset_end_time``). ``default_subtitles_lang``: the text track made ``DEFAULT``.
    ``redundant_streams`` is accepted and has no effect: Mux lists each variant once per CDN so a player can
    fail over; kinoray has one origin, and a second entry naming the same URL would only make a player retry
    the host that just failed (docs/API.md)."""

    selection: RenditionFilter = RenditionFilter()
    window: TimeWindow | None = None
    default_subtitles_lang: str | None = None
    redundant_streams: bool = False


def playback_modifiers(playback: Playback, query: Mapping[str, str]) -> PlaybackModifiers:
    """The playback modifiers of a request: from the query for public ids, from the token's claims for signed
    ones (Mux's rule; query modifiers are then ignored, so a viewer cannot lift limits the signer set). Claims
    may hold numbers where the query holds strings (``asset_start_time: 10``, as mux.jwt writes them).

    Raises:
        InvalidParametersError: a value Mux does not accept, a minimum above the maximum, a start not before
            the end.
    """
    source: Mapping[str, Any] = playback.claims if playback.signed and playback.claims is not None else query

    def pick(name: str, allowed: Mapping[Any, Any]) -> Any:
        value = source.get(name)
        if value is not None and (not isinstance(value, str | bool) or value not in allowed):
            raise InvalidParametersError(
                f"{name} must be one of {', '.join(map(str, allowed))}, got {str(value)[:32]!r}")
        return None if value is None else allowed[value]

    def seconds(name: str) -> Fraction | None:
        value = source.get(name)
        if value is None:
            return None
        text = format(value, "f") if isinstance(value, int | float) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _SECONDS.fullmatch(text):
            raise InvalidParametersError(f"{name} must be a decimal number of seconds, got {str(value)[:32]!r}")
        return Fraction(text)

    language = source.get("default_subtitles_lang")
    if language is not None and (not isinstance(language, str) or not _LANGUAGE_TAG.fullmatch(language)):
        raise InvalidParametersError(f"default_subtitles_lang must be a BCP 47 language tag, got "
                                     f"{str(language)[:32]!r}")
    redundant = pick("redundant_streams", _BOOLEANS)
    try:
        selection = RenditionFilter(min_resolution=pick("min_resolution", _RESOLUTIONS),
                                    max_resolution=pick("max_resolution", _RESOLUTIONS),
                                    descending=pick("rendition_order", _RENDITION_ORDERS) is not None)
        start, end = seconds("asset_start_time"), seconds("asset_end_time")
        window = None if start is None and end is None else TimeWindow(start, end)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None
    return PlaybackModifiers(selection=selection, window=window, default_subtitles_lang=language,
                             redundant_streams=bool(redundant))


def rendition_filter(playback: Playback, query: Mapping[str, str]) -> RenditionFilter:
    """The rendition selection of :func:`playback_modifiers` alone."""
    return playback_modifiers(playback, query).selection


# --- manifests -----------------------------------------------------------------------------------------------


def _read_text(store: ObjectStore, key: str, what: str) -> str:
    try:
        return store.get_bytes(key).decode("utf-8")
    except StorageError as error:
        if isinstance(error.__cause__, FileNotFoundError | IsADirectoryError | NotADirectoryError):
            raise NotFoundError(f"no {what} for this playback id") from None
        raise


def hls_master(store: ObjectStore, playback: Playback, modifiers: PlaybackModifiers) -> str:
    """The asset's master playlist, variants filtered/ordered, URIs under ``{playback_id}/`` (+ token; a public
    id's clipping window rides on the playlist URIs, a signed id's is in the token)."""
    master = _read_text(store, playback.key("master.m3u8"), "HLS manifest")
    return rewrite_hls_master(master, prefix=f"{playback.playback_id}/", query=playback.query,
                              selection=modifiers.selection, subtitles=playback.text_tracks,
                              window=None if playback.signed else modifiers.window,
                              default_subtitles_lang=modifiers.default_subtitles_lang)


def hls_media(store: ObjectStore, playback: Playback, rung: str, window: TimeWindow | None = None) -> str:
    """Rendition ``rung``'s media playlist, with the token on its segment and init URIs, cut to ``window``."""
    if not RUNG_PATTERN.fullmatch(rung):
        raise NotFoundError(f"no rendition {rung[:32]!r}")
    playlist = _read_text(store, playback.key(rung, "index.m3u8"), f"rendition {rung}")
    try:
        return rewrite_hls_media(playlist, query=playback.query, window=window)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def dash_manifest(store: ObjectStore, playback: Playback, modifiers: PlaybackModifiers) -> str:
    """The asset's MPD, video representations filtered/ordered, templates under ``{playback_id}/`` (+ token),
    segment timelines cut to the clipping window."""
    mpd = _read_text(store, playback.key("manifest.mpd"), "DASH manifest")
    try:
        return rewrite_dash_mpd(mpd, prefix=f"{playback.playback_id}/", query=playback.query,
                                selection=modifiers.selection, subtitles=playback.text_tracks,
                                window=modifiers.window)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def text_file_key(playback: Playback, name: str) -> str:
    """The storage key behind ``/{playback_id}/text/{name}``: ``name`` is ``<track_id>.vtt`` or ``.m3u8`` of
    one of the asset's ready text tracks (a deleted or unknown track is a 404 even while its file lingers)."""
    match = TEXT_FILE_PATTERN.fullmatch(name)
    if match is None or match[1] not in {track.track_id for track in playback.text_tracks}:
        raise NotFoundError(f"no text track file {name[:48]!r}")
    return playback.key(TEXT_DIR, name)


def hls_subtitles(store: ObjectStore, playback: Playback, name: str, window: TimeWindow | None = None) -> str:
    """A text track's HLS subtitle playlist, with the token on its WebVTT URI; under instant clipping
    (``window``) listed for the clip's length, read off the first video rendition's segment grid."""
    if not name.endswith(".m3u8"):
        raise NotFoundError(f"no subtitle playlist {name[:48]!r}")
    playlist = rewrite_hls_media(_read_text(store, text_file_key(playback, name), "subtitle playlist"),
                                 query=playback.query)
    if window is None:
        return playlist
    master = _read_text(store, playback.key("master.m3u8"), "HLS manifest")
    rung = next((line.split("/", 1)[0] for line in master.splitlines()
                 if line and not line.startswith("#") and "/" in line), None)
    if rung is None or not RUNG_PATTERN.fullmatch(rung):
        raise NotFoundError("no video rendition to clip the subtitles to")
    try:
        span = clip_span(_read_text(store, playback.key(rung, "index.m3u8"), f"rendition {rung}"), window)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None
    return retime_subtitle_playlist(playlist, span)


# --- files ---------------------------------------------------------------------------------------------------


def media_file_key(playback: Playback, rung: str, name: str) -> str:
    """The storage key of an init or media segment, after checking both names against what the packager
    writes (``720p``/``audio``; ``init.mp4``/``seg_00001.m4s``), so no request names anything else."""
    if not RUNG_PATTERN.fullmatch(rung) or not MEDIA_FILE_PATTERN.fullmatch(name):
        raise NotFoundError(f"no file {rung[:32]!r}/{name[:32]!r}")
    return playback.key(rung, name)


def media_content_type(rung: str, name: str) -> str:
    if name.endswith(".m3u8"):
        return "application/vnd.apple.mpegurl"
    if name.endswith(".vtt"):
        return "text/vtt"
    if rung == "audio" or name.endswith(".m4a"):
        return "audio/mp4"
    return "video/iso.segment" if name.endswith(".m4s") else "video/mp4"


def static_rendition_key(record: PlaybackRecord, playback: Playback, name: str) -> str:
    """The storage key behind ``/{playback_id}/{name}``: ``media/<name>``, for a static rendition of the asset
    that is ``ready`` (:mod:`kinoray.control.static_renditions` makes them).

    Raises:
        NotFoundError: another name, or no such ready rendition.
    """
    if name not in STATIC_RENDITIONS or name not in record.static_files:
        raise NotFoundError(f"no static rendition {name[:32]!r} for this playback id")
    return playback.key(name)


@dataclass(frozen=True)
class StoredObject:
    """A stored file's size and strong ETag. The ETag hashes the object's size and modification time (or the
    S3 ETag), so it is the same on every replica and changes when the object is replaced."""

    key: str
    size: int
    etag: str


def stat_object(store: ObjectStore, key: str) -> StoredObject:
    """One metadata request. Raises ``NotFoundError`` if there is no such file, ``StorageError`` otherwise."""
    if store.is_local:  # one stat(2), the same fields fsspec's local info reports
        try:
            status = os.stat(store.path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"no file {key.rsplit('/', 2)[-2:]} for this playback id") from None
        except OSError as error:
            raise StorageError(f"stat {key} failed: {type(error).__name__}: {error}") from error
        if not stat.S_ISREG(status.st_mode):
            raise NotFoundError("no such file for this playback id")
        return _stored(key, status.st_size, status.st_mtime)
    try:
        info = store.fs.info(store.path(key))
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"no file {key.rsplit('/', 2)[-2:]} for this playback id") from None
    except Exception as error:  # noqa: BLE001 - any backend failure is a storage error
        raise StorageError(f"stat {key} failed: {type(error).__name__}: {error}") from error
    if info.get("type") != "file":
        raise NotFoundError("no such file for this playback id")
    version = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    return _stored(key, int(info["size"]), version)


def _stored(key: str, size: int, version: object) -> StoredObject:
    digest = hashlib.sha256(f"{key}\0{size}\0{version}".encode()).hexdigest()[:32]
    return StoredObject(key=key, size=size, etag=f'"{digest}"')


def read_object(store: ObjectStore, key: str, start: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``key`` from ``start`` in blocks of 256 KiB; the file is opened before the first
    block is asked for, so an unreadable file fails before a response starts."""
    reader = store.open(key)

    def blocks() -> Iterator[bytes]:
        with reader:
            reader.seek(start)
            remaining = length
            while remaining > 0:
                block = reader.read(min(_READ_CHUNK, remaining))
                if not block:
                    raise StorageError(f"{key} ended {remaining} bytes early")
                remaining -= len(block)
                yield block

    return blocks()


# --- HTTP semantics, framework-free ----------------------------------------------------------------------------


def cache_control(playback: Playback, *, immutable: bool) -> str:
    """``Cache-Control`` for a delivery response. Segments, init segments and MP4s (``immutable``) never change
    under their URL: a year, ``immutable`` — for a signed id only until its token expires, so no cache serves
    a URL longer than its token opens it. Manifests: a few seconds when public (a second for live streams); never
    stored when signed
    (they embed the viewer's token)."""
    if not immutable:
        if playback.signed:
            return "private, no-store"
        return f"public, max-age={LIVE_MANIFEST_MAX_AGE if playback.live else MANIFEST_MAX_AGE}"
    seconds_left = playback.seconds_left
    max_age = IMMUTABLE_MAX_AGE if seconds_left is None else min(IMMUTABLE_MAX_AGE, seconds_left)
    return f"public, max-age={max_age}, immutable"


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The byte range to send for a ``Range`` header (RFC 9110 §14), or ``None`` for the whole object: no
    header, another unit, or a malformed one (which the RFC says to ignore). Several ranges are answered with
    one range spanning them all (a client that asked for several accepts a single-part 206).

    Raises:
        ValueError: no requested range overlaps the object (answer 416).
    """
    if header is None:
        return None
    unit, _, specs = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return None
    ranges: list[ByteRange] = []
    for spec in specs.split(","):
        first, dash, last = spec.strip().partition("-")
        if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
            return None
        if first == "":
            if last == "":
                return None
            suffix = int(last)
            if suffix > 0 and size > 0:
                ranges.append(ByteRange(max(0, size - suffix), size - 1))
            continue
        start = int(first)
        if last and int(last) < start:
            return None
        if start < size:
            ranges.append(ByteRange(start, min(int(last), size - 1) if last else size - 1))
    if not ranges:
        raise ValueError(f"range {header[:64]!r} is outside the object's {size} bytes")
    return ByteRange(min(r.start for r in ranges), max(r.end for r in ranges))


def _entity_tags(header: str) -> list[str]:
    return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]


def text_etag(body: bytes) -> str:
    """A strong ETag for a generated body (a manifest): a hash of its bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (weak comparison, ``*`` matches): answer 304."""
    if not if_none_match:
        return False
    tags = _entity_tags(if_none_match)
    return "*" in tags or etag.removeprefix("W/") in tags


def if_range_allows(if_range: str | None, etag: str) -> bool:
    """Whether ``Range`` may be honoured under ``If-Range``: absent, or exactly our strong ETag (a date or
    another tag means the client's copy may be stale: send the whole object)."""
    if if_range is None:
        return True
    value = if_range.strip()
    return value == etag and not value.startswith("W/")
