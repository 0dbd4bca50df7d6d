"""Finished views as partitioned Parquet in the object store: the rollup's output, what queries read at scale.

A view is *final* 60 minutes after its last event (:data:`kinoray.analytics.views.VIEW_FINAL_MS`). The rollup
(:mod:`kinoray.analytics.rollup`) writes final views, one row each (:data:`VIEW_SCHEMA`: the view's metrics,
its dimensions, its fatal errors), into the partition of the UTC day of its last event:

    analytics/views/date=YYYY-MM-DD/part-<lo>-<hi>-<stamp>-<random>.parquet
    analytics/views/_watermark.json                 {"start": ms, "end": ms}

A part file holds the views whose last event was received in ``[lo, hi)`` (ms, inside its day); ``stamp`` is
when it was written. The watermark says which views are materialized: every view whose last event was received
in ``[start, end)``. Commit rule: part files are written first, the watermark moved after, so a reader (and the
next rollup) ignores a part reaching past the watermark (a crashed run's), and where two parts' windows overlap
(a rewrite: erasure, backfill, merging a day's small parts) the newest wins and the older ones are deleted after
— a reader sees the old or the new set, never both.

Queries read the materialized views with DuckDB (:func:`aggregate_sql` and friends: the metrics as SQL over
view rows, the same numbers :func:`kinoray.analytics.query.aggregate` computes over :class:`View` objects) and
build the rest (views whose last event is past the watermark) from events as before, merged.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kinoray.analytics.collect import DIMENSIONS
from kinoray.analytics.errors import view_errors
from kinoray.analytics.eventlog import FileCache
from kinoray.analytics.views import View
from kinoray.errors import StorageError
from kinoray.store.objects import ObjectStore

__all__ = ["METRIC_SQL", "STORED", "VIEWS_PREFIX", "VIEW_SCHEMA", "Part", "Stored", "Watermark", "aggregate_sql",
           "aggregate_startup", "erase_views", "sweep_views", "us_range", "EnvFilters", "viewer_rows",
           "current_parts", "load_stored", "part_key", "read_watermark", "view_rows", "views_of", "write_part",
           "write_watermark"]

VIEWS_PREFIX = "analytics/views"
WATERMARK_KEY = f"{VIEWS_PREFIX}/_watermark.json"
DAY_MS = 86_400_000

_INT_FIELDS = ("view_start", "view_end", "first_received", "last_received", "video_startup_time",
               "player_startup_time", "watch_time", "playing_time", "rebuffer_count", "rebuffer_duration",
               "seek_count", "rendition_switches")
_FLOAT_FIELDS = ("seek_latency", "weighted_average_bitrate", "upscale_percentage", "max_upscale_percentage",
                 "downscale_percentage", "max_downscale_percentage", "max_playhead_position",
                 "playback_success_score", "startup_time_score", "smoothness_score", "video_quality_score",
                 "viewer_experience_score")
_BOOL_FIELDS = ("ended", "exit_before_video_start", "playback_failure", "video_startup_failure", "played")

VIEW_SCHEMA = pa.schema([
    ("view_id", pa.string()),
    *((name, pa.int64()) for name in _INT_FIELDS),
    *((name, pa.float64()) for name in _FLOAT_FIELDS),
    *((name, pa.bool_()) for name in _BOOL_FIELDS),
    ("aggregate_startup_time", pa.float64()),  # the SDK's view_aggregate_startup_time, or startup + player startup
    ("error_code", pa.string()),
    ("error_message", pa.string()),
    ("errors", pa.string()),  # JSON [[code, message, last received ms], ...]: the view's distinct fatal errors
    *((name, pa.string()) for name in DIMENSIONS),
])


def aggregate_startup(view: View) -> float | None:
    """The SDK's ``view_aggregate_startup_time``, else video startup + player startup (``None`` unstarted)."""
    sent = view.fields.get("view_aggregate_startup_time")
    if isinstance(sent, int | float) and not isinstance(sent, bool):
        return float(sent)
    if view.video_startup_time is None:
        return None
    return float(view.video_startup_time + (view.player_startup_time or 0))


def _dimension(value: Any) -> str | None:
    return None if value is None else str(value)


def view_rows(views: Sequence[View]) -> pa.Table:
    """One :data:`VIEW_SCHEMA` row per view."""
    columns: dict[str, list[Any]] = {name: [] for name in VIEW_SCHEMA.names}
    for view in views:
        columns["view_id"].append(view.id)
        for name in (*_INT_FIELDS, *_FLOAT_FIELDS, *_BOOL_FIELDS):
            columns[name].append(getattr(view, name))
        columns["aggregate_startup_time"].append(aggregate_startup(view))
        columns["error_code"].append(view.error_code)
        columns["error_message"].append(None if view.error_message is None else str(view.error_message))
        found = view_errors(view)
        columns["errors"].append(json.dumps([[code, message, at] for (code, message), at in found.items()])
                                 if found else None)
        for name in DIMENSIONS:
            columns[name].append(_dimension(view.dimensions.get(name)))
    return pa.table(columns, schema=VIEW_SCHEMA)


def views_of(table: pa.Table) -> list[View]:
    """:class:`View` objects of stored rows: every metric and dimension, ``events`` only their fatal errors,
    ``fields`` only the aggregate startup time (what the metrics and error groups read)."""
    views = []
    for row in table.to_pylist():
        events = [{"event": "error", "player_error_code": code, "player_error_message": message, "event_time": at}
                  for code, message, at in json.loads(row["errors"] or "[]")]
        aggregate = row["aggregate_startup_time"]
        views.append(View(
            id=row["view_id"], events=events,
            fields={} if aggregate is None else {"view_aggregate_startup_time": aggregate},
            dimensions={name: row[name] for name in DIMENSIONS}, final=True,
            error_code=row["error_code"], error_message=row["error_message"],
            **{name: row[name] for name in (*_INT_FIELDS, *_FLOAT_FIELDS, *_BOOL_FIELDS)}))
    return views


# --- the metrics as SQL over view rows ------------------------------------------------------------------------
def _flag(name: str) -> str:
    return f"CASE WHEN {name} THEN 1.0 ELSE 0.0 END"


def _started(name: str) -> str:
    return f"CASE WHEN watch_time > 0 THEN CAST({name} AS DOUBLE) END"


#: Each metric's per-view value as a SQL expression over :data:`VIEW_SCHEMA` columns (what
#: :data:`kinoray.analytics.query.METRICS` computes per :class:`View`; a test holds them equal). A metric not
#: here is computed in Python over :class:`View` objects.
METRIC_SQL: dict[str, str] = {
    "views": "1.0",
    "unique_viewers": "1.0",
    "video_startup_time": "CAST(video_startup_time AS DOUBLE)",
    "player_startup_time": "CAST(player_startup_time AS DOUBLE)",
    "aggregate_startup_time": "aggregate_startup_time",
    "exits_before_video_start": f"CASE WHEN ended THEN {_flag('exit_before_video_start')} END",
    "playback_failure_percentage": _flag("playback_failure"),
    "video_startup_failure_percentage": _flag("video_startup_failure"),
    "rebuffer_count": _started("rebuffer_count"),
    "rebuffer_duration": _started("rebuffer_duration"),
    "rebuffer_percentage": "CASE WHEN watch_time > 0 THEN rebuffer_duration / CAST(watch_time AS DOUBLE) END",
    "rebuffer_frequency": "CASE WHEN watch_time > 0 THEN rebuffer_count / (watch_time / 60000.0) END",
    **{name: name for name in ("seek_latency", "weighted_average_bitrate", "upscale_percentage",
                               "downscale_percentage", "max_upscale_percentage", "max_downscale_percentage",
                               "playback_success_score", "startup_time_score", "smoothness_score",
                               "video_quality_score", "viewer_experience_score")},
    "playing_time": "CAST(playing_time AS DOUBLE)",
}
_TOTAL_SQL = {
    "rebuffer_percentage": "sum(rebuffer_duration) / CAST(nullif(sum(watch_time), 0) AS DOUBLE)",
    "rebuffer_frequency": "sum(rebuffer_count) / (nullif(sum(watch_time), 0) / 60000.0)",
}


def aggregate_sql(metric_id: str, measurement: str) -> str:
    """The SQL aggregate of ``metric_id`` with ``measurement`` (a validated one) over view rows: the numbers of
    :func:`kinoray.analytics.query.aggregate`."""
    if metric_id == "unique_viewers":
        return "CAST(count(DISTINCT coalesce(nullif(viewer_id, ''), view_id)) AS DOUBLE)"
    if metric_id in _TOTAL_SQL and measurement == "avg":
        return _TOTAL_SQL[metric_id]
    value = METRIC_SQL[metric_id]
    return {"count": f"CAST(count({value}) AS DOUBLE)", "sum": f"CAST(sum({value}) AS DOUBLE)",
            "avg": f"avg({value})", "median": f"quantile_cont({value}, 0.5)",
            "95th": f"quantile_cont({value}, 0.95)"}[measurement]


# --- parts and the watermark ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Watermark:
    """Every view whose last event was received in ``[start, end)`` (ms) is materialized."""

    start: int
    end: int

    def covers(self, lo: int, hi: int) -> bool:
        return self.start <= lo and hi <= self.end


@dataclass(frozen=True)
class Part:
    key: str
    day: date
    lo: int
    hi: int
    stamp: int


_PART = re.compile(r"date=(\d{4}-\d{2}-\d{2})/part-(\d+)-(\d+)-(\d+)-[0-9a-f]+\.parquet$")


def _day_start(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def part_key(day: date, lo: int, hi: int, stamp: int | None = None) -> str:
    stamp = stamp if stamp is not None else int(datetime.now(UTC).timestamp() * 1000)
    return f"{VIEWS_PREFIX}/date={day.isoformat()}/part-{lo}-{hi}-{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def parse_part(key: str) -> Part | None:
    match = _PART.search(key)
    if match is None:
        return None
    return Part(key, date.fromisoformat(match[1]), int(match[2]), int(match[3]), int(match[4]))


def read_watermark(store: ObjectStore) -> Watermark | None:
    try:
        found = json.loads(store.get_bytes(WATERMARK_KEY))
    except (StorageError, FileNotFoundError):
        return None
    return Watermark(int(found["start"]), int(found["end"]))


def write_watermark(store: ObjectStore, watermark: Watermark) -> None:
    store.put_bytes(json.dumps({"start": watermark.start, "end": watermark.end,
                                "written_at": datetime.now(UTC).isoformat()}).encode(), WATERMARK_KEY)


def list_parts(store: ObjectStore, first: date | None = None, last: date | None = None) -> list[Part]:
    """Every part file (committed or not) of the days ``first``..``last`` (default: all)."""
    if first is not None and last is not None and (last - first).days < 32:
        keys: list[str] = []
        day = first
        while day <= last:
            keys.extend(store.list(f"{VIEWS_PREFIX}/date={day.isoformat()}"))
            day += timedelta(days=1)
    else:
        keys = store.list(VIEWS_PREFIX)
    parts = [part for part in map(parse_part, keys) if part is not None]
    return [part for part in parts if (first is None or part.day >= first) and (last is None or part.day <= last)]


def current_parts(parts: Iterable[Part], watermark: Watermark | None) -> tuple[list[Part], list[Part]]:
    """``(current, superseded)``: the committed parts a reader uses (inside the watermark; of overlapping
    windows the newest), and the older ones a rewrite left (deleted by the next rollup)."""
    if watermark is None:
        return [], []
    current: list[Part] = []
    superseded: list[Part] = []
    for part in sorted(parts, key=lambda p: (-p.stamp, p.key)):
        if not watermark.covers(part.lo, part.hi):
            continue  # a crashed run's, past the watermark
        if any(part.lo < other.hi and other.lo < part.hi for other in current):
            superseded.append(part)
        else:
            current.append(part)
    return sorted(current, key=lambda p: (p.lo, p.key)), superseded


def write_part(store: ObjectStore, day: date, lo: int, hi: int, rows: pa.Table) -> str:
    """Write ``rows`` (views whose last event is in ``[lo, hi)`` of ``day``) as a new part; returns its key."""
    out = io.BytesIO()
    pq.write_table(rows.cast(VIEW_SCHEMA), out, compression="zstd", row_group_size=256_000)
    key = part_key(day, lo, hi)
    store.put_bytes(out.getvalue(), key)
    return key


#: Parsed view parts by key (a part never changes once written: rewrites get new names).
STORED = FileCache(max_rows=5_000_000, schema=VIEW_SCHEMA)


@dataclass(frozen=True)
class Stored:
    """The materialized views of some days: the watermark (``None``: nothing materialized) and their rows."""

    watermark: Watermark | None
    table: pa.Table

    def materialized(self, last_received: int | None) -> bool:
        return (self.watermark is not None and last_received is not None
                and self.watermark.start <= last_received < self.watermark.end)


def load_stored(store: ObjectStore, first: date, last: date, cache: FileCache | None = STORED,
                attempts: int = 3) -> Stored:
    """The current parts of the days ``first``..``last`` as one table (empty when none). A part deleted
    between the listing and the read (a rewrite committed meanwhile) makes it list and read again."""
    watermark = read_watermark(store)
    if watermark is None:
        return Stored(None, VIEW_SCHEMA.empty_table())
    parts, _ = current_parts(list_parts(store, first, last), watermark)
    try:
        tables = [cache.get(store, part.key) if cache is not None else
                  pq.read_table(io.BytesIO(store.get_bytes(part.key)), schema=VIEW_SCHEMA) for part in parts]
    except (StorageError, FileNotFoundError):
        if attempts <= 1:
            raise
        return load_stored(store, first, last, cache, attempts - 1)
    return Stored(watermark, pa.concat_tables(tables) if tables else VIEW_SCHEMA.empty_table())


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us_range(start: datetime, end: datetime) -> tuple[int, int]:
    """``start``/``end`` as integer µs (how view rows' ms receipts compare to a timeframe exactly)."""
    return (start - _EPOCH) // timedelta(microseconds=1), (end - _EPOCH) // timedelta(microseconds=1)


# --- privacy ------------------------------------------------------------------------------------------------------
#: ``(env_key, negated)`` pairs that select one environment's Data (:func:`kinoray.store.scoping.current_env_key_filters`).
EnvFilters = Sequence[tuple[str, bool]]


def viewer_rows(table: pa.Table, viewer_user_id: str, env_filters: EnvFilters = ()) -> Any:
    """Which rows of ``table`` (events or stored views) are ``viewer_user_id``'s inside the environment that
    ``env_filters`` select (``(env_key, negated)`` pairs, :func:`kinoray.store.scoping.current_env_key_filters`;
    none: every environment): a viewer id is the customer's own, so the same id in another environment is
    another person, whose data an erasure in this one must not touch."""
    import pyarrow.compute as pc

    mask = pc.fill_null(pc.equal(table["viewer_user_id"], viewer_user_id), False)
    for env_key, negated in env_filters:
        same = pc.fill_null(pc.equal(table["env_key"], env_key), False)
        mask = pc.and_(mask, pc.invert(same) if negated else same)
    return mask


def erase_views(store: ObjectStore, viewer_user_id: str, view_ids: Iterable[str] = (),
                env_filters: EnvFilters = ()) -> tuple[set[str], int]:
    """Rewrite every committed part holding a view of ``viewer_user_id`` in the environment ``env_filters``
    select (or of ``view_ids``) without it: the new part (same window, newer) first, then the old one deleted.
    Returns the view ids removed and the parts rewritten."""
    import pyarrow.compute as pc

    watermark = read_watermark(store)
    parts, _ = current_parts(list_parts(store), watermark)
    wanted = pa.array(sorted(set(view_ids)), pa.string())
    removed: set[str] = set()
    rewritten = 0
    for part in parts:
        table = pq.read_table(io.BytesIO(store.get_bytes(part.key)), schema=VIEW_SCHEMA)
        drop = pc.or_kleene(viewer_rows(table, viewer_user_id, env_filters),
                            pc.is_in(table["view_id"], value_set=wanted))
        if not pc.any(drop).as_py():
            continue
        removed.update(table.filter(drop)["view_id"].to_pylist())
        write_part(store, part.day, part.lo, part.hi, table.filter(pc.invert(drop)))
        store.delete(part.key)
        rewritten += 1
    return removed, rewritten


def sweep_views(store: ObjectStore, cutoff: date) -> int:
    """Delete the view partitions of days before ``cutoff`` (retention); returns the days deleted."""
    days = sorted({part.day for part in list_parts(store) if part.day < cutoff})
    for day in days:
        store.delete_prefix(f"{VIEWS_PREFIX}/date={day.isoformat()}")
    return len(days)
