"""The rollup: final views from the event log into view Parquet (:mod:`kinoray.analytics.viewstore`).

:func:`roll_up` (the job runner's, every ``analytics.rollup_seconds``) materializes the views whose last event
was received between the watermark's end and ``now − 60 min − grace`` (the views final by then, with
``grace`` for events still in a collector's buffer), at most ``max_days`` days per call, one part per UTC day
of those views' last events; then moves the watermark. It also merges a finished day's parts into one and
deletes parts left superseded or uncommitted. :func:`backfill` re-materializes whole days (the Ray Data job
:mod:`kinoray.jobs.views_backfill` does the same work on a cluster).

**Idempotent.** A part is committed by the watermark move that follows it: a run that dies before it leaves a
part past the watermark, which readers ignore and the next run deletes and writes again; re-running a day
(backfill) writes a newer part whose window covers the old ones, which readers then ignore and the run deletes.
A view is therefore in exactly one committed part.

**Late events.** A view is built from the event files written in the day before its window (and up to an hour
after: later events mean it was not final). Events received for a view after it was materialized (it had been silent for over an hour) are dropped:
the view keeps the metrics it had when it became final — both here (a later window excludes the view ids of
the two days of parts before it) and in queries, which leave such a view id out of the views they build from
events. Events of a view id materialized more than two days before form a view of their own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow as pa

from kinoray.analytics.eventlog import DEDUPE_SQL, EVENTS_PREFIX, LATEST_SQL, read_events
from kinoray.analytics.views import VIEW_FINAL_MS, View, build_views
from kinoray.analytics.viewstore import (
    DAY_MS,
    STORED,
    VIEW_SCHEMA,
    Watermark,
    current_parts,
    day_of,
    list_parts,
    read_watermark,
    view_rows,
    write_part,
    write_watermark,
)
from kinoray.errors import ConfigurationError
from kinoray.store.objects import ObjectStore

__all__ = ["Rollup", "backfill", "backfill_window", "build_final", "commit_backfill", "final_rows",
           "materialized_before", "roll_up", "rollup_cutoff", "split_by_day"]

log = logging.getLogger(__name__)

#: Default wait past a view's final hour before it is materialized (events a collector still buffers).
GRACE_SECONDS = 600
#: Views built per batch (bounds the memory of a day's rollup).
BATCH_VIEWS = 20_000


@dataclass
class Rollup:
    """What a :func:`roll_up` or :func:`backfill` did."""

    views: int = 0
    parts_written: list[str] = field(default_factory=list)
    parts_deleted: int = 0
    watermark: Watermark | None = None


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _day_start(day: date) -> int:
    return _ms(datetime(day.year, day.month, day.day, tzinfo=UTC))


def rollup_cutoff(now: datetime, grace_seconds: float = GRACE_SECONDS) -> int:
    """The end (ms) of what may be materialized at ``now``: views final for ``grace_seconds``."""
    return _ms(now) - VIEW_FINAL_MS - int(grace_seconds * 1000)


def build_final(events: pa.Table, lo: int, hi: int, now_ms: int, exclude: pa.Array | None = None,
                batch_views: int = BATCH_VIEWS) -> Iterator[list[View]]:
    """The views of ``events`` whose last event was received in ``[lo, hi)`` (ms), not in ``exclude`` (view
    ids already materialized), built as a query builds them (duplicates dropped, dimensions their latest
    values), ``batch_views`` at a time."""
    with duckdb.connect() as connection:
        connection.register("events", events)
        connection.register("excluded", pa.table({"view_id": exclude if exclude is not None
                                                  else pa.array([], pa.string())}))
        connection.execute("CREATE TEMP TABLE picked AS SELECT view_id FROM events GROUP BY view_id "
                           "HAVING epoch_ms(max(received_at)) >= ? AND epoch_ms(max(received_at)) < ? "
                           "AND view_id NOT IN (SELECT view_id FROM excluded)", [lo, hi])
        count = int(connection.execute("SELECT count(*) FROM picked").fetchall()[0][0])
        if not count:
            return
        buckets = max(1, math.ceil(count / batch_views))
        connection.execute(f"CREATE TEMP TABLE chosen AS SELECT *, hash(view_id) % {buckets} AS bucket FROM events "
                           f"WHERE view_id IN (SELECT view_id FROM picked) {DEDUPE_SQL}")
        for bucket in range(buckets):
            dimensions = {row.pop("view_id"): row for row in connection.sql(
                f"SELECT view_id, {LATEST_SQL} FROM chosen WHERE bucket = {bucket} GROUP BY view_id"
            ).to_arrow_table().to_pylist()}
            rows = connection.sql("SELECT view_id, event, view_sequence_number, viewer_time, playhead_ms, received_at,"
                                  f" data FROM chosen WHERE bucket = {bucket}").to_arrow_table().to_pylist()
            yield build_views(rows, now_ms=now_ms, dimensions=dimensions)


def final_rows(events: pa.Table, lo: int, hi: int, now_ms: int, exclude: pa.Array | None = None) -> pa.Table:
    """:func:`build_final` as :data:`~kinoray.analytics.viewstore.VIEW_SCHEMA` rows."""
    tables = [view_rows(views) for views in build_final(events, lo, hi, now_ms, exclude)]
    return pa.concat_tables(tables) if tables else VIEW_SCHEMA.empty_table()


def materialized_before(store: ObjectStore, lo: int) -> pa.Array:
    """The view ids materialized before ``lo`` in the two days up to its day (whose late events a window
    drops)."""
    day = day_of(lo)
    parts, _ = current_parts(list_parts(store, day - timedelta(days=2), day), read_watermark(store))
    ids = [STORED.get(store, part.key).column("view_id") for part in parts if part.hi <= lo]
    return pa.chunked_array([chunk for column in ids for chunk in column.chunks], pa.string()).combine_chunks() \
        if ids else pa.array([], pa.string())


def _window(store: ObjectStore, lo: int, hi: int, now_ms: int) -> pa.Table:
    """The view rows of one day's window ``[lo, hi)``: from the event files written in the day before ``lo`` up to
    an hour past ``hi`` (a view with an event after ``hi`` has its last one later: not in this window)."""
    start = datetime.fromtimestamp(lo / 1000, UTC) - timedelta(days=1)
    end = datetime.fromtimestamp((hi + VIEW_FINAL_MS) / 1000, UTC)
    events = read_events(store, start, end, late_days=0, cache=None, written_since=start)
    return final_rows(events, lo, hi, now_ms, materialized_before(store, lo))


def _first_event_day(store: ObjectStore) -> date | None:
    days = sorted({key.split("date=", 1)[1][:10] for key in store.list(EVENTS_PREFIX) if "date=" in key})
    return date.fromisoformat(days[0]) if days else None


def _tidy(store: ObjectStore, watermark: Watermark, result: Rollup, *, merge: bool = True) -> None:
    """Delete parts past the watermark (a crashed run's) and superseded ones; merge each finished day's
    parts into one."""
    parts = list_parts(store)
    current, superseded = current_parts(parts, watermark)
    for part in parts:
        if part in superseded or not watermark.covers(part.lo, part.hi):
            store.delete(part.key)
            result.parts_deleted += 1
    if not merge:
        return
    by_day: dict[date, list] = {}
    for part in current:
        by_day.setdefault(part.day, []).append(part)
    for day, day_parts in by_day.items():
        if len(day_parts) < 2 or _day_start(day) + DAY_MS > watermark.end:
            continue
        tables = [STORED.get(store, part.key) for part in day_parts]
        merged = write_part(store, day, min(p.lo for p in day_parts), max(p.hi for p in day_parts),
                            pa.concat_tables(tables))
        result.parts_written.append(merged)
        for part in day_parts:  # the merged part supersedes them (newer, covering window)
            store.delete(part.key)
            result.parts_deleted += 1


def roll_up(store: ObjectStore, now: datetime | None = None, *, grace_seconds: float = GRACE_SECONDS,
            min_window_seconds: float = 0.0, max_days: int = 2) -> Rollup:
    """Materialize the views final since the last run (at most ``max_days`` UTC days of them: a first run over
    a long history catches up over several calls; nothing while less than ``min_window_seconds`` is due), then
    tidy the parts."""
    now = now or datetime.now(UTC)
    now_ms, cutoff = _ms(now), rollup_cutoff(now, grace_seconds)
    result = Rollup()
    watermark = read_watermark(store)
    if watermark is None:
        first = _first_event_day(store)
        if first is None:
            return result
        watermark = Watermark(_day_start(first), _day_start(first))
    if cutoff - watermark.end < min_window_seconds * 1000:
        result.watermark = watermark
        return result
    _tidy(store, watermark, result, merge=False)
    for _ in range(max_days):
        lo = watermark.end
        if lo >= cutoff:
            break
        hi = min(cutoff, _day_start(day_of(lo)) + DAY_MS)
        rows = _window(store, lo, hi, now_ms)
        if rows.num_rows:
            result.parts_written.append(write_part(store, day_of(lo), lo, hi, rows))
            result.views += rows.num_rows
        watermark = Watermark(watermark.start, hi)
        write_watermark(store, watermark)  # the commit
    _tidy(store, watermark, result)
    result.watermark = watermark
    if result.views:
        log.info("views rolled up", extra={"views": result.views, "parts": len(result.parts_written)})
    return result


def backfill_window(store: ObjectStore, first: date, last: date, now: datetime,
                    grace_seconds: float = GRACE_SECONDS) -> tuple[int, int, Watermark | None]:
    """The window ``[lo, hi)`` (ms) a backfill of the days ``first``..``last`` covers at ``now`` (its end no
    later than what is final), and the watermark it starts from.

    Raises:
        ConfigurationError: a window that would leave a gap beside the materialized views, or nothing final.
    """
    watermark = read_watermark(store)
    lo, hi = _day_start(first), min(_day_start(last) + DAY_MS, rollup_cutoff(now, grace_seconds))
    if hi <= lo:
        raise ConfigurationError(f"nothing final to backfill from {first} (views are final an hour after their last event)")
    if watermark is not None and (lo > watermark.end or hi < watermark.start):
        raise ConfigurationError(f"a backfill from {first} to {last} would leave a gap beside the materialized views "
                         f"({day_of(watermark.start)} to {day_of(watermark.end - 1)})")
    return lo, hi, watermark


def commit_backfill(store: ObjectStore, rows_by_day: dict[date, pa.Table], lo: int, hi: int,
                    watermark: Watermark | None) -> Rollup:
    """Write a backfill's rows (one part per day, its window the day ∩ ``[lo, hi)``), move the watermark to
    include the window, then delete what the new parts supersede."""
    result = Rollup()
    day = day_of(lo)
    while _day_start(day) < hi:
        start = max(lo, _day_start(day))
        end = min(hi, _day_start(day) + DAY_MS)
        rows = rows_by_day.get(day, VIEW_SCHEMA.empty_table())
        result.parts_written.append(write_part(store, day, start, end, rows))  # empty too: it supersedes
        result.views += rows.num_rows
        day += timedelta(days=1)
    watermark = Watermark(min(lo, watermark.start), max(hi, watermark.end)) if watermark else Watermark(lo, hi)
    write_watermark(store, watermark)
    _tidy(store, watermark, result)
    result.watermark = watermark
    return result


def split_by_day(rows: pa.Table) -> dict[date, pa.Table]:
    """View rows by the UTC day of their last event."""
    days = [day_of(ms) for ms in rows.column("last_received").to_pylist()]
    out: dict[date, list[int]] = {}
    for index, day in enumerate(days):
        out.setdefault(day, []).append(index)
    return {day: rows.take(pa.array(indices)) for day, indices in out.items()}


def backfill(store: ObjectStore, first: date, last: date, now: datetime | None = None, *,
             grace_seconds: float = GRACE_SECONDS) -> Rollup:
    """Re-materialize the days ``first``..``last`` in this process (what the Ray Data job does on a
    cluster): their views built again from the event log replace their parts."""
    now = now or datetime.now(UTC)
    lo, hi, watermark = backfill_window(store, first, last, now, grace_seconds)
    chunks = []
    day = first
    while _day_start(day) < hi:
        chunks.append(_window(store, max(lo, _day_start(day)), min(hi, _day_start(day) + DAY_MS), _ms(now)))
        day += timedelta(days=1)
    rows = pa.concat_tables(chunks) if chunks else VIEW_SCHEMA.empty_table()
    return commit_backfill(store, split_by_day(rows), lo, hi, watermark)
