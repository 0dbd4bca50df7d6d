"""The raw event log: partitioned Parquet in the object store, written in batches, read with DuckDB.

Layout: ``analytics/events/date=YYYY-MM-DD/<ms>-<random>.parquet``, the date being the UTC day the collector
received the events (so a late batch lands in the day it arrived, and a day's files never change once it is
over). One row per beacon event: the view id, event name, sequence number, viewer clock, playhead, receipt
time, the view's dimensions (:data:`kinoray.analytics.collect.DIMENSIONS`) and the event as sent (``data``,
JSON). Re-ingesting the same batch writes its rows again; readers dedupe on (view id, sequence number).

:class:`EventWriter` buffers rows per process and writes a file when ``flush_rows`` rows are waiting or every
``flush_seconds``, and on :meth:`EventWriter.close` (the edge's lifespan shutdown), so a collector that stops
cleanly loses nothing it answered ``202`` for. A failed write keeps the rows for the next flush.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kinoray.analytics.collect import DIMENSIONS
from kinoray.store.objects import ObjectStore

__all__ = ["DEDUPE_SQL", "EVENTS_PREFIX", "EVENT_SCHEMA", "FILES", "LATEST_SQL", "EventWriter", "FileCache", "Periodic",
           "event_keys", "read_events"]

log = logging.getLogger(__name__)

EVENTS_PREFIX = "analytics/events"

EVENT_SCHEMA = pa.schema([
    ("view_id", pa.string()),
    ("event", pa.string()),
    ("view_sequence_number", pa.int64()),
    ("viewer_time", pa.int64()),
    ("playhead_ms", pa.float64()),
    ("received_at", pa.timestamp("ms", tz="UTC")),
    *((name, pa.string()) for name in DIMENSIONS),
    ("data", pa.string()),
])

#: Drops re-sent events (one row per view id and sequence number; without one, per event, viewer time, data).
DEDUPE_SQL = ("QUALIFY row_number() OVER (PARTITION BY view_id, coalesce(CAST(view_sequence_number AS VARCHAR),"
              " event || ':' || CAST(viewer_time AS VARCHAR) || ':' || md5(data)) ORDER BY received_at) = 1")
#: A view's dimensions (grouped by view id): each one's latest non-empty value by sequence number.
LATEST_SQL = ", ".join(f'arg_max("{name}", coalesce(view_sequence_number, 0)) FILTER (WHERE "{name}" IS NOT NULL)'
                       f' AS "{name}"' for name in DIMENSIONS)


class Periodic:
    """A daemon thread calling ``call`` every ``seconds`` until :meth:`stop` (a failing call is logged with
    ``failure`` and retried at the next tick)."""

    def __init__(self, name: str, seconds: float, call: Callable[[], Any], failure: str) -> None:
        self.name, self.seconds, self.call, self.failure = name, seconds, call, failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.call()
            except Exception:  # noqa: BLE001 - what was not done is done at the next tick
                log.warning(self.failure, exc_info=True)

    def stop(self) -> None:
        """Stop the thread (waiting for a call in progress); the caller does the last call itself."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.seconds + 5)
            self._thread = None


def _day_key(day: date) -> str:
    return f"{EVENTS_PREFIX}/date={day.isoformat()}"


class EventWriter:
    """Buffers event rows and writes them as Parquet files to ``store`` (thread-safe; one per process)."""

    def __init__(self, store: ObjectStore, *, flush_rows: int = 5000, flush_seconds: float = 5.0,
                 max_buffered_rows: int = 1_000_000) -> None:
        self.store, self.flush_rows, self.flush_seconds = store, flush_rows, flush_seconds
        self.max_buffered_rows = max_buffered_rows
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._timer = Periodic("kinoray-event-flush", flush_seconds, self.flush,
                               "event flush failed; keeping the rows for the next one")

    def start(self) -> EventWriter:
        """Start the timer that flushes every ``flush_seconds``."""
        self._timer.start()
        return self

    def add(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)
            due = len(self._rows) >= self.flush_rows
            if len(self._rows) > self.max_buffered_rows:  # the store has been failing for long: oldest go first
                dropped = len(self._rows) - self.max_buffered_rows
                del self._rows[:dropped]
                log.error("event buffer full: dropped the oldest rows", extra={"dropped": dropped})
        if due:
            self.flush()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write what is buffered (one file per day); returns the rows written. On a store error the rows go
        back to the buffer and the error is raised."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            by_day: dict[date, list[dict[str, Any]]] = {}
            for row in rows:
                by_day.setdefault(row["received_at"].astimezone(UTC).date(), []).append(row)
            written = 0
            try:
                for day in sorted(by_day):
                    table = pa.Table.from_pylist(by_day[day], schema=EVENT_SCHEMA)
                    out = io.BytesIO()
                    pq.write_table(table, out, compression="zstd")
                    stamp = int(datetime.now(UTC).timestamp() * 1000)
                    self.store.put_bytes(out.getvalue(), f"{_day_key(day)}/{stamp}-{uuid.uuid4().hex[:12]}.parquet")
                    written += len(by_day.pop(day))
            except BaseException:
                with self._lock:
                    self._rows[:0] = [row for day_rows in by_day.values() for row in day_rows]
                raise
            return written

    def close(self) -> None:
        """Stop the timer and write everything buffered."""
        self._timer.stop()
        self.flush()


#: Timeframes spanning this many days or more are read from one listing of the event log, not one per day:
#: a query over years must cost what is stored (retention bounds it), not a lookup per day asked for.
_PROBE_DAYS = 32


def _days(start: datetime, end: datetime) -> Iterable[date]:
    day = start.astimezone(UTC).date()
    while day <= end.astimezone(UTC).date():
        yield day
        day += timedelta(days=1)


class FileCache:
    """Parsed Parquet files (of ``schema``: event files by default) by key, least recently used first out past
    ``max_rows``: a file never changes once written, so a key's table is valid for good."""

    def __init__(self, max_rows: int = 1_000_000, schema: pa.Schema = EVENT_SCHEMA) -> None:
        self.max_rows, self.schema = max_rows, schema
        self._tables: OrderedDict[tuple[str, str], pa.Table] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self._rows = 0

    def get(self, store: ObjectStore, key: str) -> pa.Table:
        name = (str(getattr(store, "url", id(store))), key)
        with self._lock:
            table = self._tables.get(name)
            if table is not None:
                self._tables.move_to_end(name)
                return table
        table = pq.read_table(io.BytesIO(store.get_bytes(key)), schema=self.schema)
        with self._lock:
            if name not in self._tables:
                self._tables[name] = table
                self._rows += table.num_rows
            while self._rows > self.max_rows and len(self._tables) > 1:
                _, dropped = self._tables.popitem(last=False)
                self._rows -= dropped.num_rows
        return table


#: The process's cache of parsed event files (what repeated queries over the same days reuse): 2 M rows hold the
#: hours a query reads for the views not yet materialized at ~100 views a minute (~500 MB).
FILES = FileCache(max_rows=2_000_000)


def _written_before(key: str, since_ms: int) -> bool:
    """Whether the file ``key`` was written before ``since_ms`` (its name starts with its write time, ms; every
    row in it was received before then)."""
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    return stamp.isdigit() and int(stamp) < since_ms


def event_keys(store: ObjectStore, start: datetime, end: datetime, *, late_days: int = 1,
               written_since: datetime | None = None) -> list[str]:
    """The event files of the UTC days from ``start`` to ``end`` + ``late_days`` (a view's late events land in
    later days); ``written_since``: only the files written since then (by the write time their names start
    with)."""
    last = end + timedelta(days=late_days)
    keys: list[str] = []
    if (last.date() - start.date()).days < _PROBE_DAYS:  # a few days: one listing per day partition
        for day in _days(start, last):
            keys.extend(key for key in store.list(_day_key(day)) if key.endswith(".parquet"))
    else:  # a long timeframe (years, say): one listing of what is stored, kept by its day partition
        first_key, last_key = _day_key(start.astimezone(UTC).date()), _day_key(last.astimezone(UTC).date())
        keys = [key for key in store.list(EVENTS_PREFIX) if key.endswith(".parquet")
                and first_key <= key.rsplit("/", 1)[0] <= last_key]
    if written_since is not None:
        since_ms = int(written_since.timestamp() * 1000)
        keys = [key for key in keys if not _written_before(key, since_ms)]
    return keys


def read_events(store: ObjectStore, start: datetime, end: datetime, *, late_days: int = 1,
                cache: FileCache | None = FILES, written_since: datetime | None = None) -> pa.Table:
    """Every stored event row of :func:`event_keys` (the same arguments) as one Arrow table (duplicates
    included)."""
    keys = event_keys(store, start, end, late_days=late_days, written_since=written_since)
    if not keys:
        return EVENT_SCHEMA.empty_table()
    tables = [cache.get(store, key) if cache is not None
              else pq.read_table(io.BytesIO(store.get_bytes(key)), schema=EVENT_SCHEMA) for key in keys]
    return pa.concat_tables(tables)
