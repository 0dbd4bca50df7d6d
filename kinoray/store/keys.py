"""The object-store key layout, spelled in one place. Every key is relative to the store's root
(:attr:`kinoray.settings.Settings.storage_url`)::

    assets/<asset_id>/                       an asset's prefix (``Asset.storage_prefix``); deleting it deletes all
    assets/<asset_id>/input                  the source bytes (a fetched URL, an assembled upload, a live recording)
    assets/<asset_id>/input.part-NNNN        a live recording's source parts (kept only for master access)
    assets/<asset_id>/recording/<section>.json  a live recording's segment log per encoder run, until published
    assets/<asset_id>/media/                 the packaged output: master.m3u8, manifest.mpd, <rung>/…, audio/…
    assets/<asset_id>/media/<file>           a static rendition (highest.mp4, 720p.mp4, audio.m4a, …)
    assets/<asset_id>/media/text/<track>.vtt|.m3u8   a text track and its HLS subtitle playlist
    assets/<asset_id>/images/<digest>.<ext>  rendered thumbnails, animations and storyboards (a bounded cache)
    uploads/<upload_id>/parts/<offset>-<nonce>       a direct upload's received parts until it completes
    live/<live_stream_id>/                   a live stream's current output (its playlists and segments)

Pure functions of ids: no I/O. A path segment is always an id the API checked (:func:`kinoray.store.models.is_valid_id`)
or a name from a fixed list, never text a client chose.
"""

from __future__ import annotations

__all__ = [
    "ASSETS",
    "HIGHEST_MP4",
    "LIVE",
    "MANIFEST_MPD",
    "MEDIA_DIR",
    "TEXT_DIR",
    "UPLOADS",
    "asset_prefix",
    "images_prefix",
    "input_key",
    "input_part_key",
    "live_prefix",
    "media_key",
    "media_prefix",
    "recording_prefix",
    "text_track_keys",
    "upload_part_key",
    "upload_prefix",
]

ASSETS = "assets"
UPLOADS = "uploads"
LIVE = "live"
#: An asset's packaged output, under its prefix.
MEDIA_DIR = "media"
#: Text tracks, under an asset's media (and in the playback URLs: ``/{playback_id}/text/{track}.vtt``).
TEXT_DIR = "text"
#: The DASH manifest the packager writes into an asset's media (text tracks and images read its timing).
MANIFEST_MPD = "manifest.mpd"
#: The progressive MP4 of the top rung the pipeline always writes (thumbnails are cut from it).
HIGHEST_MP4 = "highest.mp4"


def asset_prefix(asset_id: str, storage_prefix: str | None = None) -> str:
    """An asset's prefix, without a trailing slash: its recorded ``storage_prefix`` where it has one."""
    return (storage_prefix or f"{ASSETS}/{asset_id}").rstrip("/")


def input_key(asset_id: str) -> str:
    """An asset's source bytes."""
    return f"{asset_prefix(asset_id)}/input"


def input_part_key(asset_id: str, part: int) -> str:
    """Part ``part`` of a live recording's source, before the parts are joined into :func:`input_key`."""
    return f"{input_key(asset_id)}.part-{part:04d}"


def media_prefix(asset_id: str, storage_prefix: str | None = None) -> str:
    """An asset's packaged output (HLS, DASH, MP4 files)."""
    return f"{asset_prefix(asset_id, storage_prefix)}/{MEDIA_DIR}"


def media_key(asset_id: str, name: str, storage_prefix: str | None = None) -> str:
    """One file of an asset's media: a static rendition, ``manifest.mpd``, ``highest.mp4``."""
    return f"{media_prefix(asset_id, storage_prefix)}/{name}"


def text_track_keys(media: str, track_id: str) -> tuple[str, str]:
    """A text track's WebVTT and its HLS subtitle playlist, under the asset's media prefix ``media``."""
    base = f"{media}/{TEXT_DIR}/{track_id}"
    return f"{base}.vtt", f"{base}.m3u8"


def recording_prefix(asset_id: str) -> str:
    """A live recording's segment logs (one JSON per encoder run), read when the recording is published."""
    return f"{asset_prefix(asset_id)}/recording"


def images_prefix(asset_prefix_: str) -> str:
    """Where an asset's rendered images are kept, under its prefix."""
    return f"{asset_prefix_}/images"


def upload_prefix(upload_id: str) -> str:
    """A direct upload's received parts (deleted once the upload completes or ends)."""
    return f"{UPLOADS}/{upload_id}"


def upload_part_key(upload_id: str, offset: int, nonce: str) -> str:
    """One received part of a direct upload, named by the offset it starts at (sorting by name sorts by offset)."""
    return f"{upload_prefix(upload_id)}/parts/{offset:020d}-{nonce}"


def live_prefix(live_stream_id: str) -> str:
    """A live stream's current output."""
    return f"{LIVE}/{live_stream_id}"
