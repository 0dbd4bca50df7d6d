"""Text tracks (subtitles and closed captions) on a ready asset: Mux's ``POST /assets/{id}/tracks`` and
``DELETE /assets/{id}/tracks/{track_id}``, Ray- and HTTP-free.

Adding one fetches the caption file through the input fetcher (:func:`kinoray.control.ingest.fetch_input`:
the SSRF policy, redirects checked hop by hop, a size bound of :data:`~kinoray.media.captions.MAX_CAPTION_BYTES`
and a time bound), parses and validates it (:mod:`kinoray.media.captions`), then stores::

    assets/<id>/media/text/<track_id>.vtt     the normalized WebVTT, with HLS's X-TIMESTAMP-MAP
    assets/<id>/media/text/<track_id>.m3u8    its HLS subtitle playlist (one segment: the whole file)

and only then appends Mux's track object to ``asset.tracks`` (status ``ready``) and records the
``video.asset.track.created``/``.ready`` events in one transaction. A refused file stores nothing and leaves the
asset as it was. Manifests pick the track up at delivery (:mod:`kinoray.control.playback`).

Deleting one removes the track object (``video.asset.track.deleted``) and then its two files.

Timing: cue times are relative to the start of the video as players show it. The WebVTT header maps cue time
0 to the presentation's first media timestamp (``X-TIMESTAMP-MAP=MPEGTS:<start × 90000>,LOCAL:00:00:00.000``),
read from the packaged MPD: that is what hls.js subtracts (its ``initPTS``, the first fragment's ``tfdt`` in
the init segment's timescale, taken to 90 kHz) to place cues on an fMP4 stream. kinoray's video timeline
starts at 0, so the map is ``MPEGTS:0``.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Literal

from pydantic import ConfigDict, Field

from kinoray.control.assets import get_asset
from kinoray.control.events import emit
from kinoray.control.ingest import fetch_input
from kinoray.control.platform import Platform
from kinoray.control.requests import RequestModel
from kinoray.control.urls import check_public_url
from kinoray.control.views import TrackEventData, TrackView
from kinoray.errors import (
    AssetNotReadyError,
    ConflictError,
    InvalidMediaError,
    NotFoundError,
    StorageError,
)
from kinoray.media.captions import MAX_CAPTION_BYTES, hls_subtitle_playlist, parse_captions, write_webvtt
from kinoray.media.manifest_rewrite import presentation_timing
from kinoray.settings import Settings
from kinoray.store import keys
from kinoray.store.keys import text_track_keys
from kinoray.store.models import Asset, AssetStatus, new_id, utcnow

__all__ = [
    "CAPTION_FETCH_SECONDS",
    "LANGUAGE_NAMES",
    "MAX_TEXT_TRACKS",
    "TextTrackCreate",
    "add_text_track",
    "delete_track",
    "text_track_keys",
]

log = logging.getLogger(__name__)

#: Text tracks one asset may have (each is an HLS rendition and a DASH adaptation set in every manifest).
MAX_TEXT_TRACKS = 32
#: Bound on fetching one caption file: the request that adds the track waits for it.
CAPTION_FETCH_SECONDS = 30.0
#: Names given to tracks created without one (Mux fills ``name`` from ``language_code``), by primary subtag.
LANGUAGE_NAMES = {
    "ar": "Arabic", "bn": "Bengali", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "ms": "Malay", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian",
    "vi": "Vietnamese", "zh": "Chinese",
}
_MPEG_TS_HZ = 90_000


class TextTrackCreate(RequestModel):
    """``POST /video/v1/assets/{asset_id}/tracks`` (Mux's body; only ``type: text`` tracks)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=4096, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://[^\x00]*$",
                     description="an SRT or WebVTT file: http(s)://, s3://, or file:// where enabled; refused when "
                                 "it points at a private address (SSRF policy)")
    type: Literal["text"] = Field(description="only text tracks can be added")
    text_type: Literal["subtitles"] = "subtitles"
    language_code: str = Field(max_length=35, pattern=r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$",
                               description="BCP 47 language tag, e.g. en, en-US, pt-BR")
    name: str | None = Field(default=None, min_length=1, max_length=255, pattern=r'^[^"\x00-\x1f\x7f]+$',
                             description="shown in players' caption menus; unique among the asset's text tracks; "
                                         "default: the language's name (English, ...)")
    closed_captions: bool = Field(default=False, description="the track also describes sounds (CC, SDH)")
    passthrough: str | None = Field(default=None, max_length=255)


def _media_prefix(asset: Asset) -> str:
    return keys.media_prefix(asset.id, asset.storage_prefix)


def _text_tracks(asset: Asset) -> list[dict[str, Any]]:
    return [track for track in asset.tracks or [] if track.get("type") == "text"]


def _require_ready(asset: Asset) -> None:
    if asset.status == AssetStatus.PREPARING:
        raise AssetNotReadyError(f"asset {asset.id} is still preparing: add text tracks once it is ready")
    if asset.status != AssetStatus.READY:
        raise AssetNotReadyError(f"asset {asset.id} errored: it has no media to add a text track to")


def _track_name(create: TextTrackCreate, existing: list[dict[str, Any]]) -> str:
    """The given name (refused when taken: HLS needs distinct names in a group), else one made from the
    language, ``(CC)`` for closed captions and a number when needed to be distinct."""
    taken = {str(track.get("name")) for track in existing}
    if create.name is not None:
        if create.name in taken:
            raise ConflictError(f"the asset already has a text track named {create.name!r}: names must be unique")
        return create.name
    primary = create.language_code.split("-", 1)[0].lower()
    base = LANGUAGE_NAMES.get(primary, create.language_code)
    if "-" in create.language_code and primary in LANGUAGE_NAMES:
        base += f" ({create.language_code.split('-', 1)[1]})"
    if create.closed_captions:
        base += " (CC)"
    name, number = base, 2
    while name in taken:
        name, number = f"{base} {number}", number + 1
    return name


def _check_room(asset: Asset, existing: list[dict[str, Any]]) -> None:
    _require_ready(asset)
    if len(existing) >= MAX_TEXT_TRACKS:
        raise ConflictError(f"asset {asset.id} already has {MAX_TEXT_TRACKS} text tracks; delete one first")


def _caption_settings(settings: Settings) -> Settings:
    """``settings`` with the fetch bounded for a caption file rather than a video."""
    limits = settings.limits.model_copy(update={"max_file_bytes": MAX_CAPTION_BYTES})
    api = settings.api.model_copy(update={
        "ingest_timeout_seconds": min(settings.api.ingest_timeout_seconds, CAPTION_FETCH_SECONDS)})
    return settings.model_copy(update={"limits": limits, "api": api})


def _fetch_caption_file(platform: Platform, url: str, key: str) -> bytes:
    """The caption file's bytes (through the fetcher's temporary key, deleted again)."""
    try:
        fetch_input(url, platform.store, key, _caption_settings(platform.settings))
        return platform.store.get_bytes(key)
    except InvalidMediaError as error:
        # the fetcher speaks of "the input"; here the input is the caption file
        message = str(error).replace("the input URL", "the caption URL").replace("the input", "the caption file")
        raise InvalidMediaError(message) from None
    finally:
        platform.store.delete(key)


def _timing(platform: Platform, media_prefix: str, duration: float | None, cues_end_ms: int) -> tuple[int, Fraction]:
    """``(MPEGTS of cue time 0, presentation duration)`` from the stored MPD; without a readable one, time 0
    and the asset's ``duration`` (else the last cue's end)."""
    try:
        timing = presentation_timing(platform.store.get_bytes(f"{media_prefix}/{keys.MANIFEST_MPD}").decode("utf-8"))
    except (StorageError, ValueError) as error:
        log.warning("no readable MPD for a text track's timing", extra={"prefix": media_prefix, "error": str(error)})
        return 0, Fraction(duration).limit_denominator(1000) if duration else Fraction(cues_end_ms, 1000)
    # an audio-only presentation starts at its AAC priming (-1024 samples): ~21 ms that no player can show
    return max(0, round(timing.start * _MPEG_TS_HZ)), timing.duration


def add_text_track(platform: Platform, asset_id: str, create: TextTrackCreate) -> TrackView:
    """Fetch, validate, store and attach a text track; returns Mux's track object.

    Raises:
        InputUrlRefusedError: the URL is refused by the SSRF policy.
        NotFoundError: no such asset.
        AssetNotReadyError: the asset is still preparing, or errored.
        ConflictError: the name is taken, or the asset has :data:`MAX_TEXT_TRACKS` text tracks.
        InvalidMediaError: the file could not be fetched, is larger than 2 MiB, or is not valid SRT/WebVTT
            (the message names the line and the problem).
    """
    check_public_url(create.url, platform.settings)
    with platform.db.session() as session:
        asset = get_asset(session, asset_id)
        existing = _text_tracks(asset)
        _check_room(asset, existing)
        _track_name(create, existing)
        media_prefix, duration = _media_prefix(asset), asset.duration
    max_cue_ms = int(platform.settings.limits.max_duration_seconds * 1000)

    track_id = new_id()
    vtt_key, playlist_key = text_track_keys(media_prefix, track_id)
    data = _fetch_caption_file(platform, create.url, f"{media_prefix}/{keys.TEXT_DIR}/{track_id}.source")
    captions = parse_captions(data, max_cue_ms=max_cue_ms)
    mpegts, presentation = _timing(platform, media_prefix, duration, captions.end_ms)
    platform.store.put_bytes(write_webvtt(captions, mpegts=mpegts).encode("utf-8"), vtt_key)
    platform.store.put_bytes(hls_subtitle_playlist(f"{track_id}.vtt", presentation).encode("utf-8"), playlist_key)

    try:
        with platform.db.session() as session:
            asset = get_asset(session, asset_id, for_update=True)
            existing = _text_tracks(asset)
            _check_room(asset, existing)  # again: the asset may have changed while the file was fetched
            track: dict[str, Any] = {
                "type": "text", "id": track_id, "text_type": create.text_type, "text_source": "uploaded",
                "language_code": create.language_code, "name": _track_name(create, existing),
                "closed_captions": create.closed_captions, "status": "ready",
            }
            if create.passthrough is not None:
                track["passthrough"] = create.passthrough
            asset.tracks = [*(asset.tracks or []), track]  # a new list: JSON columns track reassignment only
            asset.updated_at = utcnow()
            session.flush()
            event = TrackEventData.model_validate({**track, "asset_id": asset.id})
            emit(session, "video.asset.track.created", "asset", asset.id, event)
            emit(session, "video.asset.track.ready", "asset", asset.id, event)
    except BaseException:
        _delete_files(vtt_key, playlist_key, platform=platform, asset_id=asset_id)
        raise
    log.info("text track added", extra={"asset": asset_id, "track": track_id, "cues": len(captions.cues),
                                        "source_format": captions.source_format})
    return TrackView.model_validate(track)


def _delete_files(*keys: str, platform: Platform, asset_id: str) -> None:
    for key in keys:
        try:
            platform.store.delete(key)
        except StorageError as error:  # the track is gone from the asset; a stray file is never served
            log.warning("could not delete a text track file", extra={"asset": asset_id, "key": key,
                                                                     "error": str(error)})


def delete_track(platform: Platform, asset_id: str, track_id: str) -> None:
    """Remove a text track from the asset (event ``video.asset.track.deleted``), then its files. Manifests stop
    listing it at once; its file URLs answer 404.

    Raises:
        NotFoundError: no such asset, or no such track on it.
        ConflictError: the track is the asset's video or audio (those cannot be deleted).
    """
    with platform.db.session() as session:
        asset = get_asset(session, asset_id, for_update=True)
        track = next((t for t in asset.tracks or [] if t.get("id") == track_id), None)
        if track is None:
            raise NotFoundError(f"no track {track_id[:64]!r} on asset {asset_id!r}")
        if track.get("type") != "text":
            raise ConflictError(f"track {track_id} is the asset's {track.get('type')}: only text tracks can be deleted")
        asset.tracks = [t for t in asset.tracks if t.get("id") != track_id]
        asset.updated_at = utcnow()
        session.flush()
        emit(session, "video.asset.track.deleted", "asset", asset.id,
             TrackEventData.model_validate({**track, "asset_id": asset.id}))
        media_prefix = _media_prefix(asset)
    _delete_files(*text_track_keys(media_prefix, track_id), platform=platform, asset_id=asset_id)
