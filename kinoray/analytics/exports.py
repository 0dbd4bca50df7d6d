"""Daily view exports (Mux's ``/data/v1/exports/views``): one Parquet and one CSV file per environment and UTC
day in the object store, listed with signed, expiring download links.

An environment's day export holds the views the video-views API lists to that environment's tokens for that day
(``timeframe[]`` = the day's first and last second: the views with an event received that day — a view across
midnight is in both days), one row per view, the columns of :data:`EXPORT_SCHEMA` (Mux's export field names where
Mux has them). Which environment a view is in is :class:`EnvironmentKeys`' rule, the Data API's: the environment
whose env key the view sent (its latest), else the default one. Files (the layout is
:mod:`kinoray.store.keys`'): ``analytics/exports/views/env=<environment_id>/date=YYYY-MM-DD/
kinoray-views-v1-YYYY-MM-DD.{parquet,csv}``, each written whole (write then rename). :func:`export_due` (the job
runner's sweep) exports every finished day of the last ``back_days`` whose export of every environment is not
written yet, or was written before the day's views were final (an hour after midnight: late events), and marks
the day done (``…/days/YYYY-MM-DD.json``); :func:`export_day` exports one day, of every environment or of one
(on request; today: what is there so far). Lists and links name one environment's files only.

**Exports from before environments** (``analytics/exports/views/date=YYYY-MM-DD/…``: every environment's views
in one file) are never listed nor downloadable, since they may hold another environment's views: the sweep
re-exports each such day split by environment (the event log is kept as long as exports are), oldest first and
whatever its age, then deletes the old files. Erasure and retention treat them like the others meanwhile.

**Links.** A download URL is ``…/data/v1/exports/views/{environment_id}/{date}/{file}?expires=<unix s>&signature=<hex>``:
HMAC-SHA256, keyed with a key derived from the deployment's ``secret_key``, over ``"{expires}.{storage key}"``
— the construction of kinoray's webhook signatures (``t.`` + body), with the expiry and the environment inside
what is signed so neither can be moved. :func:`verify_link` refuses a wrong, altered (another environment's,
another day's) or expired link with :class:`~kinoray.errors.DownloadLinkError` (``403 invalid_download_link``),
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from kinoray.analytics.eventlog import EVENTS_PREFIX
from kinoray.analytics.query import Query, Timeframe
from kinoray.analytics.views import VIEW_FINAL_MS, View
from kinoray.errors import DownloadLinkError, NotFoundError
from kinoray.store.keys import (
    VIEW_EXPORTS,
    ViewExportKey,
    view_export_day_mark,
    view_export_key,
    view_export_mark_day,
)
from kinoray.store.models import DEFAULT_ENVIRONMENT_ID
from kinoray.store.objects import ObjectStore

__all__ = ["EXPORT_FORMATS", "EXPORT_SCHEMA", "EXPORT_VERSION", "EnvironmentKeys", "ExportFile", "day_timeframe",
           "erase_from_exports", "export_day", "export_due", "export_files", "export_rows", "file_key",
           "list_exports", "sign_link", "sweep_exports", "verify_link"]

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
EXPORT_FORMATS = ("parquet", "csv")
#: One export file: its key, environment (``None``: from before environments), day, version and type.
ExportFile = ViewExportKey

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


def file_key(environment_id: str | None, day: date, kind: str, version: int = EXPORT_VERSION) -> str:
    """The storage key of an environment's export file of ``day`` (``None``: from before environments)."""
    return view_export_key(environment_id, day, kind, version)


@dataclass(frozen=True)
class EnvironmentKeys:
    """Which environment a view's export row goes to, by the view's ``env_key``: ``by_env_key`` (every
    environment's id by its key: :func:`kinoray.control.environments.environment_keys`); a view with no key, or
    a key no environment has, is ``default``'s — as the Data API counts it
    (:func:`kinoray.control.environments.data_filters`)."""

    by_env_key: Mapping[str, str] = field(default_factory=dict)
    default: str = DEFAULT_ENVIRONMENT_ID

    def of(self, env_key: str | None) -> str:
        return self.by_env_key.get(env_key, self.default) if env_key else self.default


def _write(store: ObjectStore, environment_id: str | None, day: date, table: pa.Table,
           version: int = EXPORT_VERSION) -> list[str]:
    keys = []
    for kind in EXPORT_FORMATS:
        out = io.BytesIO()
        if kind == "parquet":
            pq.write_table(table, out, compression="zstd")
        else:
            pa_csv.write_csv(table, out)
        key = file_key(environment_id, day, kind, version)
        store.put_bytes(out.getvalue(), key)
        keys.append(key)
    return keys


def export_day(store: ObjectStore, day: date, environments: EnvironmentKeys | None = None, *,
               now: datetime | None = None, only: str | None = None) -> dict[str, int]:
    """Write ``day``'s export (replacing one there) of the environment ``only``, or of every environment: each
    with a view that day or an export of it already (a rewrite may empty one), then the day's mark, and the
    day's export from before environments is deleted. Returns the views written per environment id. Costs one
    query over the day's views (every environment's at once)."""
    environments = environments or EnvironmentKeys()
    query = Query(store, day_timeframe(day), now=now)
    rows: dict[str, list[dict[str, Any]]] = {}
    for view, row in zip(query.views, export_rows(query.views), strict=True):
        rows.setdefault(environments.of(view.dimensions.get("env_key")), []).append(row)
    if only is not None:
        targets = {only}
    else:
        targets = set(rows) | {f.environment_id for f in export_files(store)
                               if f.day == day and f.environment_id is not None}
    written: dict[str, int] = {}
    for environment_id in sorted(targets):
        mine = rows.get(environment_id, [])
        _write(store, environment_id, day, pa.Table.from_pylist(mine, schema=EXPORT_SCHEMA))
        written[environment_id] = len(mine)
    if only is None:
        store.put_bytes(json.dumps({"date": day.isoformat(), "views": written}).encode(), view_export_day_mark(day))
        for old in export_files(store):
            if old.environment_id is None and old.day == day:
                store.delete(old.key)
    return written


def _final_at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, milliseconds=VIEW_FINAL_MS)


def export_due(store: ObjectStore, environments: EnvironmentKeys | None = None, now: datetime | None = None,
               back_days: int = 7, max_days: int = 2) -> list[date]:
    """Export the finished days that need it — of the last ``back_days``, those not marked done or marked
    before the day's views were final; of any age, those with an export from before environments — at most
    ``max_days`` per call, oldest first; returns the days exported."""
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    files = export_files(store)
    old_layout = {f.day for f in files if f.environment_id is None and f.day < today}
    exported = {f.day for f in files}
    done: list[date] = []
    for day in sorted({today - timedelta(days=offset) for offset in range(1, back_days + 1)} | old_layout):
        mark = view_export_day_mark(day)
        marked = store.exists(mark)
        if day not in old_layout and marked and store.modified(mark) >= _final_at(day):
            continue
        if not marked and day not in exported and not store.list(f"{EVENTS_PREFIX}/date={day.isoformat()}"):
            continue  # nothing happened that day
        export_day(store, day, environments, now=now)
        done.append(day)
        if len(done) >= max_days:
            break
    return done


def export_files(store: ObjectStore) -> list[ExportFile]:
    """Every export file of every environment (and from before environments), by key."""
    return [found for key in store.list(VIEW_EXPORTS) if (found := ViewExportKey.parse(key)) is not None]


def list_exports(store: ObjectStore, environment_id: str) -> list[tuple[date, list[ExportFile]]]:
    """The environment's days with an export, newest first, and their files (Parquet, then CSV)."""
    days: dict[date, list[ExportFile]] = {}
    for found in export_files(store):
        if found.environment_id == environment_id:
            days.setdefault(found.day, []).append(found)
    return [(day, sorted(days[day], key=lambda f: EXPORT_FORMATS.index(f.type))) for day in sorted(days, reverse=True)]


def erase_from_exports(store: ObjectStore, view_ids: set[str]) -> int:
    """Rewrite every export holding one of ``view_ids`` without those rows (privacy erasure), in every
    environment (a view id is unique: the caller's environment chose them); returns the exports rewritten."""
    if not view_ids:
        return 0
    rewritten = 0
    for found in export_files(store):
        if found.type != "parquet":
            continue
        table = pq.read_table(io.BytesIO(store.get_bytes(found.key)))
        keep = [row for row in table.to_pylist() if row["view_id"] not in view_ids]
        if len(keep) != table.num_rows:
            _write(store, found.environment_id, found.day, pa.Table.from_pylist(keep, schema=EXPORT_SCHEMA),
                   found.version)
            rewritten += 1
    return rewritten


def sweep_exports(store: ObjectStore, days: int, now: datetime | None = None) -> int:
    """Delete the exports (of every environment) and day marks of days more than ``days`` old (retention);
    returns the days deleted."""
    cutoff = (now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=days)
    deleted: set[date] = set()
    for key in store.list(VIEW_EXPORTS):
        found = ViewExportKey.parse(key)
        day = found.day if found is not None else view_export_mark_day(key)
        if day is None or day >= cutoff:
            continue
        if found is not None:
            store.delete_prefix(key.rpartition("/")[0])  # the day's folder of that environment
        else:
            store.delete(key)
        deleted.add(day)
    return len(deleted)


# --- signed links ----------------------------------------------------------------------------------------------
def _link_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"kinoray data exports v1", hashlib.sha256).digest()


def sign_link(secret: str, key: str, expires: int) -> str:
    """The signature of a download link to ``key`` valid until ``expires`` (unix seconds)."""
    return hmac.new(_link_key(secret), f"{expires}.{key}".encode(), hashlib.sha256).hexdigest()


def verify_link(secret: str, environment_id: str, day: str, name: str, expires: int, signature: str,
                store: ObjectStore, now: float | None = None) -> str:
    """The storage key a download link opens.

    Raises:
        DownloadLinkError: the link names no export file, its signature does not match the file (its
            environment, day and name) and expiry, or it has expired.
        NotFoundError: a valid link to an export deleted since (retention, erasure rewrote it away).
    """
    found = ViewExportKey.parse(f"{VIEW_EXPORTS}/env={environment_id}/date={day}/{name}")
    if found is None or found.environment_id is None:
        raise DownloadLinkError("this download link does not name an export file")
    expected = sign_link(secret, found.key, expires)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise DownloadLinkError("this download link's signature does not match")
    if expires <= (time.time() if now is None else now):
        raise DownloadLinkError("this download link has expired; list the exports again for a new one")
    if not store.exists(found.key):
        raise NotFoundError("this export is no longer stored")
    return found.key
