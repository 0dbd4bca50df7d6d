"""The views past the rollup's watermark (not final yet), built from events once and kept between queries.

A query answers from the materialized views (:mod:`kinoray.analytics.viewstore`) plus the views whose last
event was received at or after the watermark's end: those are built from the event files written in the
:data:`LIVE_LOOKBACK` before it. Building them is the expensive part of a query (DuckDB drops duplicates, then
~12 µs an event in Python), and between two queries little changes: a few new event files. :class:`LiveViews`
keeps, per store, the event files it read, every such view built (:class:`~kinoray.analytics.views.View`) and
its :data:`~kinoray.analytics.viewstore.VIEW_SCHEMA` row. A :meth:`LiveViews.snapshot` lists the event files
again and rebuilds only the views the difference touches:

- a file added (collectors write every 5 s) or removed (an erasure rewrites a file under a new name and
  deletes the old one; retention deletes a day): every view with a row in it is built again from all of its
  events, or dropped when none is left;
- the watermark moved (the rollup materialized views): views no longer past it are dropped, the files now
  before the lookback are removed as above;
- the clock: a view's metrics depend on the query's ``now`` only through whether it has been idle over
  :data:`~kinoray.analytics.views.VIEW_IDLE_MS` (it ended), so a view built on the other side of that line is
  built again; ``final`` is set per query.

So a snapshot's rows are exactly what building the same files' views from their events gives (a test holds them
equal through late, out-of-order and duplicated events, a view ending between queries, and an erasure). The
query selects its views from the snapshot (timeframe, ``filters[]``, view ids already materialized) in Arrow.
Files not under the watermark's lookback are never read here; past ``max_events`` rows (the rollup stopped, say)
:meth:`LiveViews.snapshot` answers ``None`` and the query builds its views from events as before.

**Across processes.** The job runner's rollup tick saves its snapshot (:meth:`LiveViews.save`) next to the
materialized views (:data:`SNAPSHOT_KEY`): the rows, and in the Parquet metadata the watermark end, the clock it
was taken at and the event files it was built from with their row counts. A process without a snapshot of a
store yet (a start, a restart) seeds its state from that file instead of building every view from events: it
reads the same event files (an event file never changes once written), and the state is then exactly the
runner's, so the update above — files added or removed since, the watermark, the clock — brings it to the
query's as it would a state kept in this process. A file it lists that is gone or holds another row count makes
the seed unusable (the views are built from events as without one). An erasure deletes the saved snapshot
(:mod:`kinoray.analytics.privacy`); the next tick writes it again without the viewer.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kinoray.analytics.eventlog import DEDUPE_SQL, EVENT_SCHEMA, FILES, LATEST_SQL, FileCache, event_keys
from kinoray.analytics.views import VIEW_IDLE_MS, View, build_views
from kinoray.analytics.viewstore import VIEW_SCHEMA, VIEWS_PREFIX, Watermark, view_rows, views_of
from kinoray.errors import StorageError
from kinoray.store.objects import ObjectStore

__all__ = ["LIVE_LOOKBACK", "LIVE_SCHEMA", "LIVE_VIEWS", "RAW_LAST", "SNAPSHOT_KEY", "LiveSnapshot", "LiveViews",
           "build_events", "forget_snapshot"]

log = logging.getLogger(__name__)

#: How far before the rollup's watermark the views not yet materialized are read from: a view still live (its
#: last event within the final hour) is built from its events in the files written this long before the
#: watermark (the rollup, later, from all of its last event's day and the day before).
LIVE_LOOKBACK = timedelta(hours=3)
#: The extra column of a snapshot's rows: a view's last receipt counting re-sent duplicates (ms), what a
#: query's timeframe selects views by (as it does over events).
RAW_LAST = "raw_last_received"
LIVE_SCHEMA = VIEW_SCHEMA.append(pa.field(RAW_LAST, pa.int64()))
#: Where the job runner saves its live views for a fresh process to start from (:meth:`LiveViews.save`).
SNAPSHOT_KEY = f"{VIEWS_PREFIX}/_live.parquet"
_META = b"kinoray.live"


def forget_snapshot(store: ObjectStore) -> None:
    """Delete the saved snapshot (an erasure: it holds the viewer's open views); the next save writes it again."""
    store.delete(SNAPSHOT_KEY)


def build_events(events: pa.Table, now_ms: int) -> tuple[list[View], dict[str, int]]:
    """Every view of ``events`` built as a query builds them (duplicates dropped, dimensions their latest
    values), and each one's last receipt counting duplicates (ms)."""
    with duckdb.connect() as connection:
        connection.register("events", events)
        raw_last = dict(connection.execute("SELECT view_id, epoch_ms(max(received_at)) FROM events "
                                           "GROUP BY view_id").fetchall())
        connection.execute(f"CREATE TEMP TABLE chosen AS SELECT * FROM events {DEDUPE_SQL}")
        dimensions = {row.pop("view_id"): row for row in connection.sql(
            f"SELECT view_id, {LATEST_SQL} FROM chosen GROUP BY view_id").to_arrow_table().to_pylist()}
        rows = connection.sql("SELECT view_id, event, view_sequence_number, viewer_time, playhead_ms, received_at, "
                              "data FROM chosen").to_arrow_table().to_pylist()
    return build_views(rows, now_ms=now_ms, dimensions=dimensions), raw_last


@dataclass(frozen=True)
class LiveSnapshot:
    """The views past ``watermark_end`` in the event files read: ``rows`` (:data:`LIVE_SCHEMA`), the built
    views by id (``final`` as of their build: a query sets its own), and the files' event rows (what
    ``filters[]`` look at)."""

    watermark_end: int
    rows: pa.Table
    views: dict[str, View]
    events: pa.Table


@dataclass
class _State:
    watermark_end: int
    last_day: date
    files: dict[str, pa.Table]
    snapshot: LiveSnapshot
    idle: dict[str, bool]  # each view's "idle over VIEW_IDLE_MS" at the now it was built at


def _idle(view: View, now_ms: int) -> bool:
    return view.last_received is not None and now_ms - view.last_received > VIEW_IDLE_MS


def _ids(tables: Iterable[pa.Table]) -> set[str]:
    found: set[str] = set()
    for table in tables:
        found.update(pc.unique(table["view_id"].combine_chunks()).to_pylist())
    return found


class LiveViews:
    """The views past the watermark of each store (the ``max_stores`` used last), kept between queries and
    updated from what changed (module docstring). Thread-safe; one per process (:data:`LIVE_VIEWS`)."""

    def __init__(self, max_events: int = 4_000_000, max_stores: int = 4, files: FileCache = FILES) -> None:
        self.max_events, self.max_stores, self.files = max_events, max_stores, files
        self.built = 0  # views built so far (what a test or a benchmark reads to see the reuse)
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._states.clear()

    def snapshot(self, store: ObjectStore, watermark: Watermark, now: datetime, until: datetime) -> LiveSnapshot | None:
        """The views past ``watermark`` at ``now`` from the event files written since its end −
        :data:`LIVE_LOOKBACK`, in the day partitions up to ``until`` + 1 day (and any later ones read before);
        ``None`` when they hold over ``max_events`` rows. The first call for a store seeds from its saved
        snapshot when there is a usable one (module docstring)."""
        state = self._current(store, watermark, now, until)
        return state.snapshot if state is not None else None

    def save(self, store: ObjectStore, watermark: Watermark, now: datetime) -> bool:
        """Bring the views of ``store`` up to ``now`` (:meth:`snapshot`) and save them at :data:`SNAPSHOT_KEY`
        for other processes to seed from (the job runner's, after each rollup tick: a tick reuses the last
        one's views as a query does). Over ``max_events`` rows: the saved one deleted, ``False``."""
        state = self._current(store, watermark, now, now)
        if state is None:
            forget_snapshot(store)
            return False
        now_ms = int(now.timestamp() * 1000)
        meta = {"watermark_end": state.watermark_end, "last_day": state.last_day.isoformat(), "now_ms": now_ms,
                "files": {key: table.num_rows for key, table in state.files.items()}}
        rows = state.snapshot.rows.cast(LIVE_SCHEMA)
        out = io.BytesIO()
        pq.write_table(rows.replace_schema_metadata({_META: json.dumps(meta).encode()}), out, compression="zstd")
        store.put_bytes(out.getvalue(), SNAPSHOT_KEY)
        return True

    def _current(self, store: ObjectStore, watermark: Watermark, now: datetime, until: datetime) -> _State | None:
        name = str(getattr(store, "url", id(store)))
        now_ms = int(now.timestamp() * 1000)
        since = datetime.fromtimestamp(watermark.end / 1000, UTC) - LIVE_LOOKBACK
        with self._lock:
            state = self._states.get(name)
            if state is None:
                state = self._seed(store, watermark)
            last_day = (until + timedelta(days=1)).astimezone(UTC).date()
            if state is not None:
                last_day = max(last_day, state.last_day)
            keys = event_keys(store, since, datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC),
                              late_days=0, written_since=since)
            updated: _State | None
            if state is not None and state.watermark_end == watermark.end and state.files.keys() == set(keys):
                updated = self._refresh(state, now_ms)
            else:
                updated = self._update(store, state, watermark.end, keys, last_day, now_ms)
            if updated is None:
                self._states.pop(name, None)
                return None
            self._states[name] = updated
            self._states.move_to_end(name)
            while len(self._states) > self.max_stores:
                self._states.popitem(last=False)
            return updated

    def _seed(self, store: ObjectStore, watermark: Watermark) -> _State | None:
        """The state saved at :data:`SNAPSHOT_KEY` (the views, the event files they were built from, read
        again), or ``None``: none saved, one older than the lookback, a file gone or not as it was."""
        try:
            if not store.exists(SNAPSHOT_KEY):
                return None
            saved = pq.read_table(io.BytesIO(store.get_bytes(SNAPSHOT_KEY)))
            meta = json.loads((saved.schema.metadata or {})[_META])
            if meta["watermark_end"] < watermark.end - LIVE_LOOKBACK.total_seconds() * 1000:
                return None  # none of its files are read now: nothing to reuse
            if sum(meta["files"].values()) > self.max_events:
                return None
            files = {key: self.files.get(store, key) for key in sorted(meta["files"])}
        except (StorageError, FileNotFoundError, OSError, KeyError, ValueError, pa.ArrowException) as error:
            log.info("live views not seeded from the saved snapshot", extra={"error": str(error)[:300]})
            return None
        if any(table.num_rows != meta["files"][key] for key, table in files.items()):
            log.info("live views not seeded: an event file changed since the snapshot")
            return None
        rows = saved.replace_schema_metadata(None).cast(LIVE_SCHEMA)
        views = {view.id: view for view in views_of(rows)}
        events = pa.concat_tables(files.values()) if files else EVENT_SCHEMA.empty_table()
        snapshot = LiveSnapshot(meta["watermark_end"], rows, views, events)
        return _State(meta["watermark_end"], date.fromisoformat(meta["last_day"]), files, snapshot,
                      {view_id: _idle(view, meta["now_ms"]) for view_id, view in views.items()})

    def _update(self, store: ObjectStore, state: _State | None, watermark_end: int, keys: list[str],
                last_day: date, now_ms: int) -> _State | None:
        old = state.files if state is not None else {}
        files = {key: old[key] if key in old else self.files.get(store, key) for key in sorted(keys)}
        if sum(table.num_rows for table in files.values()) > self.max_events:
            return None
        touched = _ids(old[key] for key in old.keys() - files.keys()) | _ids(
            files[key] for key in files.keys() - old.keys())
        events = pa.concat_tables(files.values()) if files else EVENT_SCHEMA.empty_table()
        past = pc.greater_equal(events["received_at"], pa.scalar(watermark_end, pa.int64()).cast(
            events.schema.field("received_at").type))
        candidates = set(pc.unique(events["view_id"].filter(past).combine_chunks()).to_pylist())
        kept = state.snapshot.views if state is not None else {}
        idle = state.idle if state is not None else {}
        keep = {view_id for view_id, view in kept.items() if view_id in candidates and view_id not in touched
                and idle[view_id] == _idle(view, now_ms)}
        snapshot = self._rebuilt(state, watermark_end, events, keep, candidates - keep, now_ms)
        return _State(watermark_end, last_day, files, snapshot, {
            view_id: idle[view_id] if view_id in keep else _idle(view, now_ms)
            for view_id, view in snapshot.views.items()})

    def _refresh(self, state: _State, now_ms: int) -> _State:
        """``state`` at ``now_ms``: the views whose idleness changed since they were built, built again."""
        views = state.snapshot.views
        stale = {view_id for view_id, view in views.items() if state.idle[view_id] != _idle(view, now_ms)}
        if not stale:
            return state
        snapshot = self._rebuilt(state, state.watermark_end, state.snapshot.events, views.keys() - stale, stale,
                                 now_ms)
        idle = {**state.idle, **{view_id: _idle(snapshot.views[view_id], now_ms) for view_id in stale}}
        return _State(state.watermark_end, state.last_day, state.files, snapshot, idle)

    def _rebuilt(self, state: _State | None, watermark_end: int, events: pa.Table, keep: set[str],
                 build: set[str], now_ms: int) -> LiveSnapshot:
        """A snapshot of the views ``keep`` (from ``state``) and ``build`` (built from ``events``)."""
        views = {view_id: state.snapshot.views[view_id] for view_id in keep} if state is not None else {}
        rows = [state.snapshot.rows.filter(pc.is_in(state.snapshot.rows["view_id"], value_set=pa.array(
            sorted(keep), pa.string())))] if state is not None and keep else []
        if build:
            wanted = events.filter(pc.is_in(events["view_id"], value_set=pa.array(sorted(build), pa.string())))
            built, raw_last = build_events(wanted, now_ms)
            self.built += len(built)
            views.update((view.id, view) for view in built)
            rows.append(view_rows(built).append_column(RAW_LAST, pa.array(
                [raw_last[view.id] for view in built], pa.int64())))
        table = pa.concat_tables(rows) if rows else LIVE_SCHEMA.empty_table()
        return LiveSnapshot(watermark_end, table, views, events)


#: The process's live views (the Data API's replicas reuse them between queries).
LIVE_VIEWS = LiveViews()
