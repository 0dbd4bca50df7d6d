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
    analytics/exports/views/env=<environment_id>/date=<day>/kinoray-views-v<version>-<day>.parquet|.csv
                                             one environment's view export of one UTC day
    analytics/exports/views/days/<day>.json  the day's export of every environment is written (the runner's mark)
    analytics/exports/views/date=<day>/kinoray-views-v<version>-<day>.parquet|.csv
                                             a day's export from before environments (every environment's views):
                                             never listed; the runner re-exports the day split, then deletes it

Pure functions of ids: no I/O. A path segment is always an id the API checked (:func:`kinoray.store.models.is_valid_id`)
or a name from a fixed list, never text a client chose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

__all__ = [
    "ASSETS",
    "HIGHEST_MP4",
    "LIVE",
    "MANIFEST_MPD",
    "MEDIA_DIR",
    "TEXT_DIR",
    "UPLOADS",
    "VIEW_EXPORTS",
    "ViewExportKey",
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
    "view_export_day_mark",
    "view_export_key",
    "view_export_mark_day",
    "view_export_name",
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
#: The daily view exports (:mod:`kinoray.analytics.exports`).
VIEW_EXPORTS = "analytics/exports/views"
_VIEW_EXPORT = re.compile(r"(?:env=(?P<environment>[A-Za-z0-9]{1,64})/)?date=(?P<day>\d{4}-\d{2}-\d{2})/"
                          r"kinoray-views-v(?P<version>\d{1,3})-(?P=day)\.(?P<type>parquet|csv)")


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


def view_export_name(day: date, kind: str, version: int) -> str:
    """A view export file's name (also the download's file name): ``kinoray-views-v1-2026-12-05.parquet``."""
    return f"kinoray-views-v{version}-{day.isoformat()}.{kind}"


def view_export_key(environment_id: str | None, day: date, kind: str, version: int) -> str:
    """One environment's view export file of ``day`` (``kind``: parquet or csv); ``environment_id=None``: the
    layout from before environments, one file for every environment's views (read, rewritten and deleted only)."""
    folder = VIEW_EXPORTS if environment_id is None else f"{VIEW_EXPORTS}/env={environment_id}"
    return f"{folder}/date={day.isoformat()}/{view_export_name(day, kind, version)}"


def view_export_day_mark(day: date) -> str:
    """Written once ``day``'s export of every environment is (its time says whether the day's views were final)."""
    return f"{VIEW_EXPORTS}/days/{day.isoformat()}.json"


def view_export_mark_day(key: str) -> date | None:
    """The day a :func:`view_export_day_mark` key marks, or ``None`` for any other key."""
    prefix = f"{VIEW_EXPORTS}/days/"
    if not (key.startswith(prefix) and key.endswith(".json")):
        return None
    try:
        return date.fromisoformat(key[len(prefix):-len(".json")])
    except ValueError:
        return None


@dataclass(frozen=True)
class ViewExportKey:
    """What a view export file's key names (:meth:`parse`)."""

    key: str
    environment_id: str | None  # None: the layout from before environments
    day: date
    version: int
    type: str

    @classmethod
    def parse(cls, key: str) -> ViewExportKey | None:
        """The export file ``key`` is, or ``None`` for any other key (a day mark, a stray object)."""
        prefix = f"{VIEW_EXPORTS}/"
        match = _VIEW_EXPORT.fullmatch(key[len(prefix):]) if key.startswith(prefix) else None
        if match is None:
            return None
        try:
            day = date.fromisoformat(match["day"])
        except ValueError:
            return None
        return cls(key, match["environment"], day, int(match["version"]), match["type"])
