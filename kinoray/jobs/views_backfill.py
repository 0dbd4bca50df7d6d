"""Ray job entrypoint: materialize the final views of a range of days with Ray Data (a backfill).

::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m kinoray.jobs.views_backfill --store s3://bucket/kinoray --from 2026-11-01 --to 2026-11-30

What the job runner's rollup (:func:`kinoray.analytics.rollup.roll_up`) does a window at a time, for many days
at once on a cluster: one Ray Dataset reads the event Parquet of the days (and the day before: a view is built
from its last event's day and the one before), ``map_batches`` tags each event with a bucket of its view id
(a hash), ``groupby("bucket").map_groups`` builds each bucket's final views
(:func:`kinoray.analytics.rollup.final_rows`: the same code as the rollup and the queries), and the driver writes
one view part per day and moves the watermark (:func:`kinoray.analytics.rollup.commit_backfill`): parts the
backfill replaces are deleted after, so running it twice leaves each view once. Do not run it beside the
runner's rollup on the same days (``analytics.rollup=false`` meanwhile).

Prints a JSON summary: views, parts written, the days, the watermark.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import ray
from pyarrow.fs import FSSpecHandler, PyFileSystem

from kinoray.analytics.eventlog import EVENTS_PREFIX
from kinoray.analytics.rollup import (
    GRACE_SECONDS,
    backfill_window,
    commit_backfill,
    final_rows,
    materialized_before,
    split_by_day,
)
from kinoray.analytics.views import VIEW_FINAL_MS
from kinoray.analytics.viewstore import VIEW_SCHEMA, day_of
from kinoray.cluster import ensure_ray
from kinoray.jobs.entry import FAILED, run_job
from kinoray.logs import setup_logging
from kinoray.settings import get_settings
from kinoray.store import ObjectStore

__all__ = ["main", "run_backfill"]

log = logging.getLogger(__name__)


def _bucketed(batch: pa.Table, buckets: int) -> pa.Table:
    """``batch`` with a ``bucket`` column: the view id's hash modulo ``buckets`` (a view's events meet)."""
    with duckdb.connect() as connection:
        connection.register("batch", batch)
        return connection.execute(f"SELECT *, hash(view_id) % {buckets} AS bucket FROM batch").to_arrow_table()


def _build(events: pa.Table, lo: int, hi: int, now_ms: int, excluded: pa.Array) -> pa.Table:
    """One bucket's final views as view rows."""
    return final_rows(events.drop_columns(["bucket"]), lo, hi, now_ms, excluded)


def run_backfill(store: ObjectStore, first: date, last: date, now: datetime | None = None, *,
                 grace_seconds: float = GRACE_SECONDS, buckets: int = 64) -> dict[str, Any]:
    """Materialize the days ``first``..``last`` on the connected Ray cluster; returns the summary."""
    now = now or datetime.now(UTC)
    lo, hi, watermark = backfill_window(store, first, last, now, grace_seconds)
    # the day before (a view's earlier events) to an hour past the window (a later event: not final in it)
    days = {first - timedelta(days=1) + timedelta(days=n)
            for n in range((day_of(hi + VIEW_FINAL_MS) - first).days + 2)}
    keys = [key for day in sorted(days) for key in store.list(f"{EVENTS_PREFIX}/date={day.isoformat()}")
            if key.endswith(".parquet")]
    rows = VIEW_SCHEMA.empty_table()
    if keys:
        excluded = materialized_before(store, lo)
        dataset = ray.data.read_parquet([store.path(key) for key in keys],
                                        filesystem=PyFileSystem(FSSpecHandler(store.fs)))
        views = (dataset.map_batches(functools.partial(_bucketed, buckets=buckets), batch_format="pyarrow")
                 .groupby("bucket")
                 .map_groups(functools.partial(_build, lo=lo, hi=hi, now_ms=int(now.timestamp() * 1000),
                                               excluded=excluded), batch_format="pyarrow"))
        tables = [table.cast(VIEW_SCHEMA) for table in ray.get(views.to_arrow_refs()) if table.num_rows]
        rows = pa.concat_tables(tables) if tables else rows
    result = commit_backfill(store, split_by_day(rows), lo, hi, watermark)
    assert result.watermark is not None
    return {"views": result.views, "parts": result.parts_written, "parts_deleted": result.parts_deleted,
            "from": first.isoformat(), "to": last.isoformat(),
            "watermark": {"start": result.watermark.start, "end": result.watermark.end}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinoray.jobs.views_backfill",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="the object store (directory or s3:// URL; default: the "
                                                       "platform's storage)")
    parser.add_argument("--from", dest="first", type=date.fromisoformat, required=True, help="first UTC day")
    parser.add_argument("--to", dest="last", type=date.fromisoformat, required=True, help="last UTC day")
    parser.add_argument("--now", type=datetime.fromisoformat, default=None, help="the clock (ISO; tests)")
    parser.add_argument("--grace-seconds", type=float, default=GRACE_SECONDS,
                        help="wait past a view's final hour before materializing it")
    parser.add_argument("--buckets", type=int, default=64, help="groups of views (Ray Data map_groups)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (no RAY_ADDRESS)")
    parser.add_argument("--temp-dir", default=None, help="temp dir of a local Ray (no RAY_ADDRESS)")
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level, settings.native_log_level)
    store = ObjectStore(args.store or settings.storage_url, settings.storage)

    def work() -> dict[str, Any]:
        if args.temp_dir and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
                     _temp_dir=os.path.abspath(args.temp_dir))
        else:
            ensure_ray(args.num_cpus)
        return run_backfill(store, args.first, args.last, args.now, grace_seconds=args.grace_seconds,
                            buckets=args.buckets)

    summary = run_job(work)
    if summary is None:
        return FAILED
    print(json.dumps(summary))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
