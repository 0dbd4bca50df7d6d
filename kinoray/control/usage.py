"""Delivery usage (Mux's ``/video/v1/delivery-usage``), measured at the delivery edge.

What counts: each media segment (``/{playback_id}/{rung}/seg_N.m4s``) an edge process sends with ``GET``
counts its duration (its ``#EXTINF`` in the rendition's playlist; a byte range counts the share of the segment
it carries) under the rendition's resolution tier, by pixels as Mux defines the tiers (``720p`` up to 921,600
pixels, ``1080p`` up to 2,073,600, ``1440p`` up to 4,194,304, ``2160p`` above; audio-only assets'
segments as ``audio-only``; a video asset's audio segments play alongside its video and are not counted
twice). Every sent byte of a segment or init segment also counts as ``kinoray_delivered_bytes``. Manifests,
images, text tracks and the static MP4/M4A downloads are not counted.

How, without slowing the hot path: each edge process adds to an in-memory dict (:class:`UsageMeter`, one
lock-protected increment per segment) keyed by (asset, UTC hour, tier); a thread (:class:`UsageFlusher`)
swaps the dict out every ``edge.usage_flush_seconds`` (5 s) and adds it to the ``delivery_usage`` table with one
upsert per row (``INSERT ... ON CONFLICT DO UPDATE SET seconds = seconds + excluded.seconds``: atomic on SQLite
and PostgreSQL, so any number of edge processes sum correctly). A failed flush keeps its counts for the next
one; a process that stops flushes what it has. A process killed without a shutdown loses at most its last
interval.

The report (:func:`delivery_report`) sums the hourly rows. Granularity: one UTC hour (a timeframe selects the
hours that overlap it); lag: the flush interval. Mux reports only completed hours from 12 hours back (its
default timeframe is the hour 13 to 12 hours ago); kinoray includes the current hour and defaults to the last
hour.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kinoray.control.assets import asset_view
from kinoray.errors import InvalidParametersError, StorageError
from kinoray.store.db import Database
from kinoray.store.models import DEFAULT_ENVIRONMENT_ID, Asset, DeliveryUsage, Event
from kinoray.store.objects import ObjectStore

__all__ = [
    "DeliveryReport",
    "DeliveryUsageList",
    "RenditionUsage",
    "UsageFlusher",
    "UsageMeter",
    "delivery_report",
    "flush_counts",
    "pixel_tier",
    "rendition_usage",
]

log = logging.getLogger(__name__)

HOUR = 3600
#: Mux's tiers by pixel count (``delivered_seconds_by_resolution``); above the last: 2160p.
_PIXEL_TIERS = (("720p", 921_600), ("1080p", 2_073_600), ("1440p", 4_194_304))
_RESOLUTION = re.compile(r"RESOLUTION=(\d+)x(\d+)")
_EXTINF = re.compile(r"#EXTINF:([0-9.]+)")
#: A low-latency live playlist's parts (LL-HLS): their seconds count like a segment's.
_PART = re.compile(r'#EXT-X-PART:(?=.*DURATION=([0-9.]+))(?=.*URI="([^"?]+))')

#: (asset id, hour start in epoch seconds, tier) → [seconds, bytes]
Counts = dict[tuple[str, int, str], list[float]]


def pixel_tier(width: int, height: int) -> str:
    """Mux's delivery tier of a ``width`` × ``height`` rendition."""
    pixels = width * height
    return next((tier for tier, limit in _PIXEL_TIERS if pixels <= limit), "2160p")


# --- what a rendition's segments count -----------------------------------------------------------------------


@dataclass(frozen=True)
class RenditionUsage:
    """What a rendition's segments count: its tier (``None``: not counted, a video asset's audio) and each
    segment's duration by file name."""

    tier: str | None
    seconds: Mapping[str, float]


def rendition_usage(master: str, rung: str, playlist: str) -> RenditionUsage:
    """From the asset's stored master playlist and rendition ``rung``'s media playlist (the packager's, as
    :mod:`kinoray.media.manifest` writes them)."""
    lines = master.splitlines()
    sizes: dict[str, tuple[int, int]] = {}
    for info, uri in zip(lines, lines[1:], strict=False):
        match = _RESOLUTION.search(info) if info.startswith("#EXT-X-STREAM-INF:") else None
        if match is not None:
            sizes[uri.split("/", 1)[0]] = (int(match[1]), int(match[2]))
    if rung in sizes:
        tier: str | None = pixel_tier(*sizes[rung])
    else:
        tier = "audio-only" if rung == "audio" and not sizes else None
    seconds: dict[str, float] = {}
    pending: float | None = None
    for line in playlist.splitlines():
        part = _PART.match(line)
        if part is not None:
            seconds[part[2]] = float(part[1])
            continue
        match = _EXTINF.match(line)
        if match is not None:
            pending = float(match[1])
        elif pending is not None and line and not line.startswith("#"):
            seconds[line.split("?", 1)[0]] = pending
            pending = None
    return RenditionUsage(tier=tier, seconds=seconds)


# --- counting in process -------------------------------------------------------------------------------------


class UsageMeter:
    """Delivered seconds and bytes counted in one process until the next flush. :meth:`add` is the hot path:
    a lock and a dict increment."""

    def __init__(self, clock: Callable[[], float] = time.time, max_renditions: int = 20_000) -> None:
        self.clock = clock
        self._counts: Counts = {}
        self._lock = threading.Lock()
        self._renditions: dict[tuple[str, str], RenditionUsage] = {}
        self._max_renditions = max_renditions

    def rendition_now(self, media_prefix: str, rung: str) -> RenditionUsage | None:
        """The rendition's facts when already read (no I/O)."""
        return self._renditions.get((media_prefix, rung))

    def rendition(self, store: ObjectStore, media_prefix: str, rung: str, *, refresh: bool = False
                  ) -> RenditionUsage:
        """:meth:`rendition_now`, else read from the stored playlists (storage I/O: off the event loop). Kept for
        the process's life: published files never change under an asset id. A live stream's playlist grows:
        ``refresh`` reads it again (the edge asks when a live segment is not in what it read)."""
        known = None if refresh else self.rendition_now(media_prefix, rung)
        if known is not None:
            return known
        try:
            master = store.get_bytes(f"{media_prefix}/master.m3u8").decode("utf-8")
            playlist = store.get_bytes(f"{media_prefix}/{rung}/index.m3u8").decode("utf-8")
            found = rendition_usage(master, rung, playlist)
        except (StorageError, UnicodeDecodeError) as error:
            log.warning("segment durations unreadable: bytes counted, seconds not",
                        extra={"prefix": media_prefix, "rung": rung, "error": str(error)[:200]})
            return RenditionUsage(tier=None, seconds={})
        if len(self._renditions) >= self._max_renditions:
            self._renditions.clear()
        self._renditions[(media_prefix, rung)] = found
        return found

    def add(self, asset_id: str, tier: str, seconds: float, sent_bytes: int) -> None:
        key = (asset_id, int(self.clock()) // HOUR * HOUR, tier)
        with self._lock:
            entry = self._counts.get(key)
            if entry is None:
                self._counts[key] = [seconds, sent_bytes]
            else:
                entry[0] += seconds
                entry[1] += sent_bytes

    def count(self, asset_id: str, rendition: RenditionUsage, name: str, sent_bytes: int, size: int) -> None:
        """A ``GET`` of file ``name`` of ``rendition`` that sent ``sent_bytes`` of its ``size``."""
        tier = rendition.tier
        if tier is None:
            return
        duration = rendition.seconds.get(name, 0.0)
        self.add(asset_id, tier, duration * sent_bytes / size if size and sent_bytes != size else duration,
                 sent_bytes)

    def drain(self) -> Counts:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def restore(self, counts: Counts) -> None:
        """Put back counts a flush could not write (added to whatever was counted since)."""
        for (asset_id, hour, tier), (seconds, sent_bytes) in counts.items():
            with self._lock:
                entry = self._counts.setdefault((asset_id, hour, tier), [0.0, 0])
                entry[0] += seconds
                entry[1] += sent_bytes


def flush_counts(db: Database, counts: Counts) -> None:
    """Add ``counts`` to ``delivery_usage`` in one transaction (rows in key order, so concurrent flushes from
    other processes lock rows in the same order on PostgreSQL), each under its asset's environment."""
    if not counts:
        return
    with db.reader() as session:
        environments = dict(session.execute(sa.select(Asset.id, Asset.environment_id).where(
            Asset.id.in_(sorted({asset_id for asset_id, _, _ in counts})))).all())
    rows = [{"asset_id": asset_id, "hour_start": datetime.fromtimestamp(hour, UTC), "tier": tier,
             "delivered_seconds": float(values[0]), "delivered_bytes": int(values[1]),
             "environment_id": environments.get(asset_id, DEFAULT_ENVIRONMENT_ID)}
            for (asset_id, hour, tier), values in sorted(counts.items())]
    table = DeliveryUsage.__table__
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(table)
    upsert = insert.on_conflict_do_update(
        index_elements=["asset_id", "hour_start", "tier"],
        set_={"delivered_seconds": table.c.delivered_seconds + insert.excluded.delivered_seconds,
              "delivered_bytes": table.c.delivered_bytes + insert.excluded.delivered_bytes})
    with db.session() as session:
        session.execute(upsert, rows)


class UsageFlusher:
    """A daemon thread that moves a :class:`UsageMeter`'s counts into the database every ``interval`` seconds;
    :meth:`close` stops it and flushes what is left."""

    def __init__(self, meter: UsageMeter, db: Database, interval: float) -> None:
        self.meter, self.db, self.interval = meter, db, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kinoray-usage-flush", daemon=True)
        self._thread.start()

    def flush(self) -> bool:
        counts = self.meter.drain()
        try:
            flush_counts(self.db, counts)
        except Exception as error:  # noqa: BLE001 - the database may be down: keep the counts, try again
            self.meter.restore(counts)
            log.warning("delivery usage not flushed; kept for the next flush", extra={"error": str(error)[:300]})
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 10)
        self.flush()


# --- the report ----------------------------------------------------------------------------------------------


class DeliveredByResolution(BaseModel):
    tier_2160p: float | None = None
    tier_1440p: float | None = None
    tier_1080p: float | None = None
    tier_720p: float | None = None
    tier_audio_only: float | None = None


class DeliveryReport(BaseModel):
    """One asset's row (Mux's ``DeliveryReport``), plus kinoray's ``kinoray_delivered_bytes``."""

    asset_id: str
    passthrough: str | None = None
    created_at: str | None = Field(default=None, description="the asset's creation, unix seconds")
    deleted_at: str | None = Field(default=None, description="the asset's deletion, unix seconds")
    asset_state: str | None = Field(default=None, description="ready | errored | deleted")
    asset_duration: float | None = None
    asset_resolution_tier: str | None = None
    asset_encoding_tier: str | None = None
    asset_video_quality: str | None = None
    delivered_seconds: float
    delivered_seconds_by_resolution: DeliveredByResolution
    kinoray_delivered_bytes: int = Field(description="bytes of segments and init segments sent")


class DeliveryUsageList(BaseModel):
    data: list[DeliveryReport]
    total_row_count: int
    timeframe: list[int] = Field(description="[start, end], unix seconds")
    limit: int


def _timeframe(timeframe: Iterable[int] | None, now: float) -> tuple[int, int]:
    values = list(timeframe or ())
    if not values:
        end = int(now)
        return end - HOUR, end
    if len(values) != 2 or values[0] >= values[1]:
        raise InvalidParametersError("timeframe[] takes two unix times, start before end")
    return values[0], values[1]


def _asset_facts(session: Session, asset_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The report's asset fields for each id: from the asset, or for a deleted one from its
    ``video.asset.deleted`` event (the asset as it was, and when it went)."""
    facts: dict[str, dict[str, Any]] = {}
    for asset in session.scalars(sa.select(Asset).where(Asset.id.in_(asset_ids))):
        view = asset_view(asset).dump()
        state = view["status"] if view["status"] in ("ready", "errored") else None
        facts[asset.id] = {**_from_view(view), "asset_state": state}
    missing = [asset_id for asset_id in asset_ids if asset_id not in facts]
    if missing:
        events = session.scalars(sa.select(Event).where(Event.object_type == "asset", Event.object_id.in_(missing),
                                                        Event.type == "video.asset.deleted"))
        for event in events:
            facts[event.object_id] = {**_from_view(event.payload or {}), "asset_state": "deleted",
                                      "deleted_at": str(int(event.created_at.timestamp()))}
    for asset_id in missing:
        facts.setdefault(asset_id, {"asset_state": "deleted"})
    return facts


def _from_view(view: Mapping[str, Any]) -> dict[str, Any]:
    return {"passthrough": view.get("passthrough"), "created_at": view.get("created_at"),
            "asset_duration": view.get("duration"), "asset_resolution_tier": view.get("resolution_tier"),
            "asset_encoding_tier": view.get("encoding_tier"), "asset_video_quality": view.get("video_quality")}


def delivery_report(session: Session, *, timeframe: Iterable[int] | None = None, asset_id: str | None = None,
                    live_stream_id: str | None = None, page: int = 1, limit: int = 100,
                    now: float | None = None) -> DeliveryUsageList:
    """Delivered seconds per asset over the UTC hours that overlap ``timeframe`` (default: the last hour), the
    assets that delivered the most first, only assets with more than 0 s (Mux's order and rule).

    Raises:
        InvalidParametersError: a malformed timeframe, or both ``asset_id`` and ``live_stream_id``.
    """
    if asset_id is not None and live_stream_id is not None:
        raise InvalidParametersError("asset_id and live_stream_id cannot be given together")
    start, end = _timeframe(timeframe, time.time() if now is None else now)
    if live_stream_id is not None:  # kinoray has no live streams: no asset was made by one
        return DeliveryUsageList(data=[], total_row_count=0, timeframe=[start, end], limit=limit)
    # ORM columns, not the table's: the session's environment scope applies (kinoray.store.scoping)
    query = (sa.select(DeliveryUsage.asset_id, DeliveryUsage.tier, sa.func.sum(DeliveryUsage.delivered_seconds),
                       sa.func.sum(DeliveryUsage.delivered_bytes))
             .where(DeliveryUsage.hour_start >= datetime.fromtimestamp(start // HOUR * HOUR, UTC),
                    DeliveryUsage.hour_start < datetime.fromtimestamp(end, UTC))
             .group_by(DeliveryUsage.asset_id, DeliveryUsage.tier))
    if asset_id is not None:
        query = query.where(DeliveryUsage.asset_id == asset_id)
    totals: dict[str, dict[str, Any]] = {}
    for row_asset, tier, seconds, sent_bytes in session.execute(query):
        entry = totals.setdefault(row_asset, {"seconds": 0.0, "bytes": 0, "tiers": {}})
        entry["seconds"] += float(seconds or 0.0)
        entry["bytes"] += int(sent_bytes or 0)
        if seconds:
            entry["tiers"]["tier_" + tier.replace("-", "_")] = float(seconds)
    ranked = sorted((item for item in totals.items() if item[1]["seconds"] > 0),
                    key=lambda item: (-item[1]["seconds"], item[0]))
    chosen = ranked[(page - 1) * limit: page * limit]
    facts = _asset_facts(session, [asset for asset, _ in chosen])
    data = [DeliveryReport(asset_id=asset, **{k: v for k, v in facts[asset].items() if v is not None},
                           delivered_seconds=round(entry["seconds"], 6),
                           delivered_seconds_by_resolution=DeliveredByResolution(
                               **{k: round(v, 6) for k, v in entry["tiers"].items()}),
                           kinoray_delivered_bytes=entry["bytes"])
            for asset, entry in chosen]
    return DeliveryUsageList(data=data, total_row_count=len(ranked), timeframe=[start, end], limit=limit)
