"""Daily view exports (Mux's ``/data/v1/exports/views``): one Parquet and one CSV file per UTC day in the
object store, listed with signed, expiring download links.

A day's export holds the views the video-views API lists for that day (``timeframe[]`` = the day's first and
last second: the views with an event received that day — a view across midnight is in both days), one row
per view, the columns of :data:`EXPORT_SCHEMA` (Mux's export field names where Mux has them). Files:
``analytics/exports/views/date=YYYY-MM-DD/kinoray-views-v1-YYYY-MM-DD.{parquet,csv}``, each written whole
(write then rename). :func:`export_due` (the job runner's sweep) exports every finished day of the last
``back_days`` that has no export, or whose export was written before the day's views were final (an hour
after midnight: late events); :func:`export_day` exports one day on request (today: what is there so far).

**Links.** A download URL is ``…/data/v1/exports/views/{date}/{file}?expires=<unix s>&signature=<hex>``:
HMAC-SHA256, keyed with a key derived from the deployment's ``secret_key``, over ``"{expires}.{storage key}"``
— the construction of kinoray's webhook signatures (``t.`` + body), with the expiry inside what is signed so
it cannot be moved. :func:`verify_link` refuses a wrong, altered or expired link with
:class:`~kinoray.errors.DownloadLinkError` (``403 invalid_download_link``), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from kinoray.analytics.eventlog import EVENTS_PREFIX
from kinoray.analytics.query import Query, Timeframe
from kinoray.analytics.views import VIEW_FINAL_MS, View
from kinoray.errors import DownloadLinkError, NotFoundError
from kinoray.store.objects import ObjectStore

__all__ = ["EXPORTS_PREFIX", "EXPORT_FORMATS", "EXPORT_SCHEMA", "EXPORT_VERSION", "ExportFile", "day_timeframe",
           "erase_from_exports", "export_day", "export_due", "export_rows", "file_key", "list_exports", "sign_link",
           "sweep_exports", "verify_link"]

log = logging.getLogger(__name__)

EXPORTS_PREFIX = "analytics/exports/views"
EXPORT_VERSION = 1
EXPORT_FORMATS = ("parquet", "csv")
_FILE = re.compile(r"kinoray-views-v(?P<version>\d+)-(?P<day>\d{4}-\d{2}-\d{2})\.(?P<type>parquet|csv)")

EXPORT_SCHEMA = pa.schema([
    ("view_id", pa.string()), ("view_start", pa.string()), ("view_end", pa.string()),
    ("asset_id", pa.string()), ("playback_id", pa.string()), ("video_id", pa.string()),
    ("video_title", pa.string()), ("viewer_user_id", pa.string()), ("mux_viewer_id", pa.string()),
    ("player_name", pa.string()), ("player_software", pa.string()), ("viewer_application_name", pa.string()),
    ("viewer_os_family", pa.string()), ("viewer_device_category", pa.string()), ("country_code", pa.string()),
    ("region", pa.string()), ("asn", pa.string()), ("cdn", pa.string()), ("stream_type", pa.string()),
    ("sub_property_id", pa.string()), ("experiment_name", pa.string()),
    ("watch_time", pa.int64()), ("view_playing_time", pa.int64()), ("time_to_first_frame", pa.int64()),
    ("player_startup_time", pa.int64()), ("exit_before_video_start", pa.bool_()), ("playback_failure", pa.bool_()),
    ("video_startup_failure", pa.bool_()), ("player_error_code", pa.string()), ("player_error_message", pa.string()),
    ("buffering_count", pa.int64()), ("buffering_duration", pa.int64()), ("rebuffer_percentage", pa.float64()),
    ("view_seek_count", pa.int64()), ("weighted_average_bitrate", pa.float64()),
    ("view_total_upscaling", pa.float64()), ("view_max_upscale_percentage", pa.float64()),
    ("view_total_downscaling", pa.float64()), ("view_max_downscale_percentage", pa.float64()),
    ("playback_score", pa.float64()), ("startup_score", pa.float64()), ("rebuffering_score", pa.float64()),
    ("video_quality_score", pa.float64()), ("viewer_experience_score", pa.float64()),
])


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def export_rows(views: Sequence[View]) -> list[dict[str, Any]]:
    """One export row per view (:data:`EXPORT_SCHEMA`)."""
    rows = []
    for view in views:
        d = view.dimensions
        rows.append({
            "view_id": view.id, "view_start": _iso(view.view_start), "view_end": _iso(view.view_end),
            "asset_id": d.get("asset_id"), "playback_id": d.get("playback_id"), "video_id": d.get("video_id"),
            "video_title": d.get("video_title"), "viewer_user_id": d.get("viewer_user_id"),
            "mux_viewer_id": d.get("viewer_id"), "player_name": d.get("player_name"),
            "player_software": d.get("player_software"), "viewer_application_name": d.get("browser"),
            "viewer_os_family": d.get("operating_system"), "viewer_device_category": d.get("viewer_device_category"),
            "country_code": d.get("country"), "region": d.get("region"), "asn": d.get("asn"), "cdn": d.get("cdn"),
            "stream_type": d.get("stream_type"), "sub_property_id": d.get("sub_property_id"),
            "experiment_name": d.get("experiment_name"), "watch_time": view.watch_time,
            "view_playing_time": view.playing_time, "time_to_first_frame": view.video_startup_time,
            "player_startup_time": view.player_startup_time, "exit_before_video_start": view.exit_before_video_start,
            "playback_failure": view.playback_failure, "video_startup_failure": view.video_startup_failure,
            "player_error_code": view.error_code,
            "player_error_message": None if view.error_message is None else str(view.error_message),
            "buffering_count": view.rebuffer_count, "buffering_duration": view.rebuffer_duration,
            "rebuffer_percentage": view.rebuffer_percentage, "view_seek_count": view.seek_count,
            "weighted_average_bitrate": view.weighted_average_bitrate,
            "view_total_upscaling": view.upscale_percentage, "view_max_upscale_percentage": view.max_upscale_percentage,
            "view_total_downscaling": view.downscale_percentage,
            "view_max_downscale_percentage": view.max_downscale_percentage,
            "playback_score": view.playback_success_score, "startup_score": view.startup_time_score,
            "rebuffering_score": view.smoothness_score, "video_quality_score": view.video_quality_score,
            "viewer_experience_score": view.viewer_experience_score,
        })
    return rows


def day_timeframe(day: date) -> Timeframe:
    """The day's first and last second (what ``timeframe[]`` the video-views API is given for it)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Timeframe(start, start + timedelta(days=1) - timedelta(seconds=1))


def file_key(day: date, kind: str, version: int = EXPORT_VERSION) -> str:
    return f"{EXPORTS_PREFIX}/date={day.isoformat()}/kinoray-views-v{version}-{day.isoformat()}.{kind}"


def _write(store: ObjectStore, day: date, table: pa.Table) -> list[str]:
    keys = []
    for kind in EXPORT_FORMATS:
        out = io.BytesIO()
        if kind == "parquet":
            pq.write_table(table, out, compression="zstd")
        else:
            pa_csv.write_csv(table, out)
        key = file_key(day, kind)
        store.put_bytes(out.getvalue(), key)
        keys.append(key)
    return keys


def export_day(store: ObjectStore, day: date, now: datetime | None = None) -> tuple[int, list[str]]:
    """Write ``day``'s export (replacing one there); returns (views, storage keys)."""
    query = Query(store, day_timeframe(day), now=now)
    rows = export_rows(query.views)
    return len(rows), _write(store, day, pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA))


def _final_at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, milliseconds=VIEW_FINAL_MS)


def export_due(store: ObjectStore, now: datetime | None = None, back_days: int = 7, max_days: int = 2) -> list[date]:
    """Export the finished days of the last ``back_days`` that need it (none yet, or written before the day's
    views were final), at most ``max_days`` per call, oldest first; returns the days exported."""
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    done: list[date] = []
    for offset in range(back_days, 0, -1):
        day = today - timedelta(days=offset)
        key = file_key(day, "parquet")
        if store.exists(key) and store.modified(key) >= _final_at(day):
            continue
        if not store.list(f"{EVENTS_PREFIX}/date={day.isoformat()}") and not store.exists(key):
            continue  # nothing happened that day
        export_day(store, day, now)
        done.append(day)
        if len(done) >= max_days:
            break
    return done


@dataclass(frozen=True)
class ExportFile:
    day: date
    type: str
    version: int
    key: str


def list_exports(store: ObjectStore) -> list[tuple[date, list[ExportFile]]]:
    """Every day with an export, newest first, and its files (Parquet, then CSV)."""
    days: dict[date, list[ExportFile]] = {}
    for key in store.list(EXPORTS_PREFIX):
        match = _FILE.fullmatch(key.rsplit("/", 1)[-1])
        if match is None:
            continue
        day = date.fromisoformat(match["day"])
        days.setdefault(day, []).append(ExportFile(day, match["type"], int(match["version"]), key))
    return [(day, sorted(days[day], key=lambda f: EXPORT_FORMATS.index(f.type))) for day in sorted(days, reverse=True)]


def erase_from_exports(store: ObjectStore, view_ids: set[str]) -> int:
    """Rewrite every export holding one of ``view_ids`` without those rows (privacy erasure); returns the days
    rewritten."""
    if not view_ids:
        return 0
    rewritten = 0
    for day, files in list_exports(store):
        parquet = next((f for f in files if f.type == "parquet"), None)
        if parquet is None:
            continue
        table = pq.read_table(io.BytesIO(store.get_bytes(parquet.key)))
        keep = [row for row in table.to_pylist() if row["view_id"] not in view_ids]
        if len(keep) != table.num_rows:
            _write(store, day, pa.Table.from_pylist(keep, schema=EXPORT_SCHEMA))
            rewritten += 1
    return rewritten


def sweep_exports(store: ObjectStore, days: int, now: datetime | None = None) -> int:
    """Delete the exports of days more than ``days`` old (retention); returns the days deleted."""
    cutoff = (now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=days)
    deleted = 0
    for day, _ in list_exports(store):
        if day < cutoff:
            store.delete_prefix(f"{EXPORTS_PREFIX}/date={day.isoformat()}")
            deleted += 1
    return deleted


# --- signed links ----------------------------------------------------------------------------------------------
def _link_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"kinoray data exports v1", hashlib.sha256).digest()


def sign_link(secret: str, key: str, expires: int) -> str:
    """The signature of a download link to ``key`` valid until ``expires`` (unix seconds)."""
    return hmac.new(_link_key(secret), f"{expires}.{key}".encode(), hashlib.sha256).hexdigest()


def verify_link(secret: str, day: str, name: str, expires: int, signature: str, store: ObjectStore,
                now: float | None = None) -> str:
    """The storage key a download link opens.

    Raises:
        DownloadLinkError: the signature does not match the file and expiry, or the link has expired.
        NotFoundError: a valid link to an export deleted since (retention, erasure rewrote it away).
    """
    match = _FILE.fullmatch(name)
    if match is None or match["day"] != day:
        raise DownloadLinkError("this download link does not name an export file")
    key = f"{EXPORTS_PREFIX}/date={day}/{name}"
    expected = sign_link(secret, key, expires)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise DownloadLinkError("this download link's signature does not match")
    if expires <= (time.time() if now is None else now):
        raise DownloadLinkError("this download link has expired; list the exports again for a new one")
    if not store.exists(key):
        raise NotFoundError("this export is no longer stored")
    return key
