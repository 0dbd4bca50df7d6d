"""Privacy: retention and erasure by viewer over the event log (no I/O beyond the object store given).

IPs are never stored (the collector keeps only the country/region/ASN derived from them). Two duties here:

- :func:`sweep_retention`: deletes the event partitions (``analytics/events/date=D/``, a prefix delete per day)
  and the materialized views' (``analytics/views/date=D/``) of days more than ``days`` old, and view-state objects (``analytics/view-state/``) not written for as long.
  The job runner calls it every ``serve.sweep_seconds`` with ``analytics.retention_days``.
- :func:`erase_viewer`: removes every event of every view of one ``viewer_user_id`` from every partition. A
  view's events are all removed, those sent before the viewer id was known included (a view is one viewer).
  The materialized views' parts (:mod:`kinoray.analytics.viewstore`) holding them are rewritten the same way,
  and the open views' saved snapshot (:data:`kinoray.analytics.liveviews.SNAPSHOT_KEY`) is deleted.
  Each affected file is rewritten without them: the new file is written under a new name first, then the old
  one deleted — a reader sees the old rows or the new file (a moment of both is harmless: readers drop
  duplicate events), never a partition missing other viewers' events. Caches keyed by file name stay valid.
  Erasures run one at a time per process (a lock); across API replicas, two erasures rewriting the same file at
  the same moment can put back each other's rows, which each one's second pass (:mod:`kinoray.control.analytics`)
  removes.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kinoray.analytics.eventlog import EVENT_SCHEMA, EVENTS_PREFIX
from kinoray.analytics.liveviews import forget_snapshot
from kinoray.analytics.viewstore import EnvFilters, erase_views, sweep_views, viewer_rows
from kinoray.errors import StorageError
from kinoray.store.objects import ObjectStore

__all__ = ["Erasure", "erase_viewer", "sweep_retention"]

log = logging.getLogger(__name__)

_ERASING = threading.Lock()
_DAY = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
VIEW_STATE_PREFIX = "analytics/view-state"


def _day_of(key: str) -> date | None:
    match = _DAY.search(key)
    if match is None:
        return None
    try:
        return date.fromisoformat(match[1])
    except ValueError:
        return None


def _partitions(store: ObjectStore) -> dict[date, str]:
    """Each day's partition prefix in the store."""
    days: dict[date, str] = {}
    for key in store.list(EVENTS_PREFIX):
        day = _day_of(key)
        if day is not None:
            days[day] = f"{EVENTS_PREFIX}/date={day.isoformat()}"
    return days


def sweep_retention(store: ObjectStore, days: int, now: datetime | None = None) -> int:
    """Delete the event partitions older than ``days`` days (by their UTC date) and view states not written
    for as long; returns the partitions deleted."""
    now = now or datetime.now(UTC)
    cutoff = (now - timedelta(days=days)).date()
    removed = 0
    for day, prefix in sorted(_partitions(store).items()):
        if day < cutoff:
            store.delete_prefix(prefix)
            removed += 1
    sweep_views(store, cutoff)
    limit = now - timedelta(days=days)
    for key in store.list(VIEW_STATE_PREFIX):
        try:
            stale = store.modified(key) < limit
        except StorageError as error:  # gone meanwhile, or unreadable now: the next sweep looks again
            log.warning("view state not swept", extra={"key": key, "error": str(error)[:300]})
            continue
        if stale:
            store.delete(key)
    return removed


@dataclass
class Erasure:
    """What :func:`erase_viewer` did."""

    view_ids: set[str] = field(default_factory=set)
    rows_removed: int = 0
    files_rewritten: int = 0


def _read(store: ObjectStore, key: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get_bytes(key)), schema=EVENT_SCHEMA, columns=columns)


def erase_viewer(store: ObjectStore, viewer_user_id: str, *, view_ids: Iterable[str] = (),
                 forget_views: Callable[[set[str]], None] | None = None, env_filters: EnvFilters = ()) -> Erasure:
    """Remove every event of every view whose ``viewer_user_id`` is this one inside the environment
    ``env_filters`` select (:func:`viewer_rows`; and of ``view_ids``: the views an earlier pass found, whose late
    events may not carry the viewer id), from every partition; then ``forget_views(view_ids)`` drops what caches
    and state hold of those views."""
    with _ERASING:  # two erasures rewriting one file at once would each put back the other's rows
        return _erase(store, viewer_user_id, Erasure(view_ids=set(view_ids)), forget_views, env_filters)


def _erase(store: ObjectStore, viewer_user_id: str, result: Erasure,
           forget_views: Callable[[set[str]], None] | None, env_filters: EnvFilters) -> Erasure:
    keys = [key for key in store.list(EVENTS_PREFIX) if key.endswith(".parquet")]
    for key in keys:  # the viewer's views, wherever their id was sent (three columns read per file)
        table = _read(store, key, columns=["view_id", "viewer_user_id", "env_key"])
        mine = table.filter(viewer_rows(table, viewer_user_id, env_filters))
        result.view_ids.update(mine["view_id"].to_pylist())
    if result.view_ids:
        wanted = pa.array(sorted(result.view_ids), pa.string())
        for key in keys:  # the files holding them are rewritten without them
            table = _read(store, key)
            drop = pc.is_in(table["view_id"], value_set=wanted)
            count = pc.sum(drop).as_py() or 0
            if not count:
                continue
            kept = table.filter(pc.invert(drop))
            if kept.num_rows:
                out = io.BytesIO()
                pq.write_table(kept, out, compression="zstd")
                folder, _, name = key.rpartition("/")
                store.put_bytes(out.getvalue(), f"{folder}/{name.split('-')[0]}-{uuid.uuid4().hex[:12]}.parquet")
            store.delete(key)
            result.rows_removed += count
            result.files_rewritten += 1
    views, rewritten = erase_views(store, viewer_user_id, result.view_ids, env_filters)  # the stored views too
    forget_snapshot(store)  # the open views saved for starting processes (the runner's next tick saves them again)
    result.view_ids.update(views)
    result.files_rewritten += rewritten
    if forget_views is not None and result.view_ids:
        forget_views(result.view_ids)
    return result
