"""Mux Data's query shapes over the event log: metrics (overall, breakdown, timeseries) and video views.

A query reads the Parquet files of the days it covers (:func:`kinoray.analytics.eventlog.read_events`), lets
DuckDB pick the views it is about — those with an event received in the timeframe and matching ``filters[]``
(``dimension:value``; ``!dimension:value`` excludes), duplicates dropped — and builds those views with
:func:`kinoray.analytics.views.build_views`. Metric values aggregate per-view values with a *measurement*
(``avg``, ``median``, ``95th``, ``sum``, ``count``; each metric has Mux's default). Two metrics are ratios of
totals, as Mux defines them: ``rebuffer_percentage`` (rebuffer time ÷ watch time) and ``rebuffer_frequency``
(rebuffers per minute of watch time).
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from kinoray.analytics.collect import DIMENSIONS
from kinoray.analytics.eventlog import read_events
from kinoray.analytics.views import VIEW_FINAL_MS, View, build_views
from kinoray.errors import InvalidParametersError, NotFoundError
from kinoray.store.objects import ObjectStore

__all__ = ["MEASUREMENTS", "METRICS", "VIEWS", "Filter", "Metric", "Query", "Timeframe", "ViewCache", "aggregate",
           "parse_filters", "parse_timeframe"]

MEASUREMENTS = ("avg", "median", "95th", "sum", "count")
_DURATION = re.compile(r"(?P<n>\d{1,6}):(?P<unit>minutes?|hours?|days?)")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_GRANULARITY = {"minute": 60, "ten_minutes": 600, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Metric:
    """A metric: its per-view value, Mux's default measurement, and whether more is worse (for
    ``negative_impact``). ``total`` makes it a ratio of totals rather than an aggregate of view values."""

    id: str
    value: Callable[[View], float | None]
    measurement: str
    worse_when_higher: bool = True
    total: Callable[[Sequence[View]], float | None] | None = None


def _flag(name: str) -> Callable[[View], float | None]:
    return lambda view: 1.0 if getattr(view, name) else 0.0


def _field(name: str) -> Callable[[View], float | None]:
    def value(view: View) -> float | None:
        found = getattr(view, name)
        return None if found is None else float(found)

    return value


def _ebvs(view: View) -> float | None:
    return (1.0 if view.exit_before_video_start else 0.0) if view.ended else None


def _rebuffer_ratio(views: Sequence[View]) -> float | None:
    watch = sum(view.watch_time for view in views)
    return sum(view.rebuffer_duration for view in views) / watch if watch else None


def _rebuffer_frequency(views: Sequence[View]) -> float | None:
    watch = sum(view.watch_time for view in views)
    return sum(view.rebuffer_count for view in views) / (watch / 60_000) if watch else None


def _aggregate_startup(view: View) -> float | None:
    sent = view.fields.get("view_aggregate_startup_time")
    if isinstance(sent, int | float) and not isinstance(sent, bool):
        return float(sent)
    if view.video_startup_time is None:
        return None
    return float(view.video_startup_time + (view.player_startup_time or 0))


def _started(getter: Callable[[View], float | None]) -> Callable[[View], float | None]:
    return lambda view: getter(view) if view.watch_time > 0 else None


METRICS: dict[str, Metric] = {metric.id: metric for metric in (
    Metric("views", lambda view: 1.0, "count"),
    Metric("unique_viewers", lambda view: 1.0, "count"),
    Metric("video_startup_time", _field("video_startup_time"), "median"),
    Metric("player_startup_time", _field("player_startup_time"), "median"),
    Metric("aggregate_startup_time", _aggregate_startup, "median"),
    Metric("exits_before_video_start", _ebvs, "avg"),
    Metric("playback_failure_percentage", _flag("playback_failure"), "avg"),
    Metric("video_startup_failure_percentage", _flag("video_startup_failure"), "avg"),
    Metric("rebuffer_count", _started(_field("rebuffer_count")), "median"),
    Metric("rebuffer_duration", _started(_field("rebuffer_duration")), "median"),
    Metric("rebuffer_percentage", lambda view: view.rebuffer_percentage, "avg", total=_rebuffer_ratio),
    Metric("rebuffer_frequency", lambda view: view.rebuffer_frequency, "avg", total=_rebuffer_frequency),
    Metric("seek_latency", _field("seek_latency"), "avg"),
    Metric("weighted_average_bitrate", _field("weighted_average_bitrate"), "median", worse_when_higher=False),
    Metric("upscale_percentage", _field("upscale_percentage"), "avg"),
    Metric("downscale_percentage", _field("downscale_percentage"), "avg"),
    Metric("max_upscale_percentage", _field("max_upscale_percentage"), "median"),
    Metric("max_downscale_percentage", _field("max_downscale_percentage"), "median"),
    Metric("playing_time", _field("playing_time"), "sum", worse_when_higher=False),
    Metric("playback_success_score", _field("playback_success_score"), "avg", worse_when_higher=False),
    Metric("startup_time_score", _field("startup_time_score"), "avg", worse_when_higher=False),
    Metric("smoothness_score", _field("smoothness_score"), "avg", worse_when_higher=False),
    Metric("video_quality_score", _field("video_quality_score"), "avg", worse_when_higher=False),
    Metric("viewer_experience_score", _field("viewer_experience_score"), "avg", worse_when_higher=False),
)}


@dataclass(frozen=True)
class Filter:
    dimension: str
    value: str
    negated: bool = False


@dataclass(frozen=True)
class Timeframe:
    start: datetime
    end: datetime

    @property
    def epochs(self) -> list[int]:
        return [int(self.start.timestamp()), int(self.end.timestamp())]


def parse_filters(raw: Sequence[str]) -> list[Filter]:
    """``filters[]`` values: ``dimension:value`` or ``!dimension:value``, dimensions from
    :data:`~kinoray.analytics.collect.DIMENSIONS`."""
    out = []
    for item in raw:
        negated = item.startswith("!")
        dimension, colon, value = item.removeprefix("!").partition(":")
        if not colon or not dimension:
            raise InvalidParametersError(f"filters[]: {item[:100]!r} is not dimension:value")
        if dimension not in DIMENSIONS:
            raise InvalidParametersError(f"filters[]: unknown dimension {dimension[:64]!r}")
        out.append(Filter(dimension, value, negated))
    return out


def parse_timeframe(raw: Sequence[str], now: datetime | None = None) -> Timeframe:
    """``timeframe[]``: two epoch seconds, or one duration (``24:hours``, ``7:days``, ``30:minutes``) ending
    now; none → the last 24 hours."""
    now = now or datetime.now(UTC)
    if not raw:
        return Timeframe(now - timedelta(hours=24), now)
    if len(raw) == 1:
        match = _DURATION.fullmatch(raw[0])
        if match is None:
            raise InvalidParametersError("timeframe[]: a duration such as 24:hours, or two epoch timestamps")
        seconds = int(match["n"]) * _UNITS[match["unit"].rstrip("s")]
        try:
            return Timeframe(now - timedelta(seconds=seconds), now)
        except OverflowError:
            raise InvalidParametersError(f"timeframe[]: {raw[0]} reaches before the year 1") from None
    if len(raw) != 2 or not all(item.isdigit() for item in raw):
        raise InvalidParametersError("timeframe[]: two epoch timestamps (start, end) or one duration")
    try:
        start, end = (datetime.fromtimestamp(int(item), UTC) for item in raw)
    except (OverflowError, ValueError, OSError):
        raise InvalidParametersError("timeframe[]: an epoch timestamp past the year 9999") from None
    if end <= start:
        raise InvalidParametersError("timeframe[]: the end must be after the start")
    return Timeframe(start, end)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def aggregate(metric: Metric, views: Sequence[View], measurement: str | None = None) -> float | None:
    """``metric`` over ``views`` with ``measurement`` (default: the metric's)."""
    measurement = measurement or metric.measurement
    if measurement not in MEASUREMENTS:
        raise InvalidParametersError(f"measurement: one of {', '.join(MEASUREMENTS)}")
    if metric.id == "unique_viewers":
        return float(len({view.dimensions.get("viewer_id") or view.id for view in views}))
    if metric.total is not None and measurement == "avg":
        return metric.total(views)
    values = [value for value in (metric.value(view) for view in views) if value is not None]
    if measurement == "count":
        return float(len(values))
    if not values:
        return None
    if measurement == "sum":
        return float(sum(values))
    if measurement == "avg":
        return sum(values) / len(values)
    return _percentile(values, 0.5 if measurement == "median" else 0.95)


def metric_of(metric_id: str) -> Metric:
    metric = METRICS.get(metric_id)
    if metric is None:
        raise NotFoundError(f"no metric {metric_id[:64]!r}; known: {', '.join(sorted(METRICS))}")
    return metric


class ViewCache:
    """Built views by (store, view id), each with the signature of the events it was built from (how many,
    the last receipt): a view is reused while its events are the same. Only ended views are kept (an unended
    one changes with the clock); least recently used out past ``max_views``."""

    def __init__(self, max_views: int = 100_000) -> None:
        self.max_views = max_views
        self.hits = self.misses = 0
        self._views: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], View]] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._views.clear()

    def get(self, key: tuple[str, str], signature: tuple[Any, ...]) -> View | None:
        with self._lock:
            found = self._views.get(key)
            if found is None or found[0] != signature:
                self.misses += 1
                return None
            self._views.move_to_end(key)
            self.hits += 1
            return found[1]

    def put(self, key: tuple[str, str], signature: tuple[Any, ...], view: View) -> None:
        with self._lock:
            self._views[key] = (signature, view)
            self._views.move_to_end(key)
            while len(self._views) > self.max_views:
                self._views.popitem(last=False)


#: The process's view cache (the Data API's replicas reuse ended views between queries).
VIEWS = ViewCache()


class Query:
    """Views of the event log in ``store`` for one timeframe and set of filters (built once per request)."""

    def __init__(self, store: ObjectStore, timeframe: Timeframe, filters: Sequence[Filter] = (),
                 now: datetime | None = None, cache: ViewCache | None = None) -> None:
        self.store, self.timeframe, self.filters = store, timeframe, list(filters)
        self.now = now or datetime.now(UTC)
        self.cache = cache if cache is not None else VIEWS
        self._views: list[View] | None = None

    def _build(self, view_id: str | None = None) -> list[View]:
        """The views (or the one view) of the query: DuckDB picks them, drops duplicate events and takes each
        view's dimensions (their latest non-empty values) and signature (events, last receipt); views whose
        signature the cache holds are reused, the others built from their events."""
        events = read_events(self.store, self.timeframe.start, self.timeframe.end)
        where: list[str] = []
        params: list[Any] = []
        if view_id is None:
            where.append("view_id IN (SELECT view_id FROM events GROUP BY view_id "
                         "HAVING max(received_at) >= ? AND min(received_at) <= ?)")
            params += [self.timeframe.start, self.timeframe.end]
        else:
            where.append("view_id = ?")
            params.append(view_id)
        for item in self.filters:
            where.append(f"view_id {'NOT IN' if item.negated else 'IN'} "
                         f'(SELECT view_id FROM events WHERE "{item.dimension}" = ?)')
            params.append(item.value)
        chosen = ("CREATE TEMP TABLE chosen AS SELECT * FROM events WHERE " + " AND ".join(where) +
                  " QUALIFY row_number() OVER (PARTITION BY view_id, coalesce(CAST(view_sequence_number AS VARCHAR),"
                  " event || ':' || CAST(viewer_time AS VARCHAR) || ':' || md5(data)) ORDER BY received_at) = 1")
        latest = ", ".join(f'arg_max("{name}", coalesce(view_sequence_number, 0)) FILTER (WHERE "{name}" IS NOT NULL)'
                           f' AS "{name}"' for name in DIMENSIONS)
        now_ms = int(self.now.timestamp() * 1000)
        store_name = str(getattr(self.store, "url", id(self.store)))
        with duckdb.connect() as connection:
            connection.register("events", events)
            connection.execute(chosen, params)
            summaries = connection.sql(f"SELECT view_id, count(*) AS events, max(received_at) AS last, {latest} "
                                       "FROM chosen GROUP BY view_id").to_arrow_table().to_pylist()
            found: list[View] = []
            missing: dict[str, dict[str, Any]] = {}
            for summary in summaries:
                key = (store_name, summary.pop("view_id"))
                signature = (summary.pop("events"), summary.pop("last"))
                view = self.cache.get(key, signature) if self.cache is not None else None
                if view is not None:
                    view.final = now_ms - (view.last_received or 0) > VIEW_FINAL_MS
                    found.append(view)
                else:
                    missing[key[1]] = {"signature": signature, "dimensions": summary}
            if missing:
                connection.execute("CREATE TEMP TABLE wanted (view_id VARCHAR)")
                connection.executemany("INSERT INTO wanted VALUES (?)", [[name] for name in missing])
                rows = connection.sql("SELECT view_id, event, view_sequence_number, viewer_time, playhead_ms, "
                                      "received_at, data FROM chosen WHERE view_id IN (SELECT view_id FROM wanted)"
                                      ).to_arrow_table().to_pylist()
                built = build_views(rows, now_ms=now_ms,
                                    dimensions={name: item["dimensions"] for name, item in missing.items()})
                for view in built:
                    if self.cache is not None and view.ended:  # only time can change an unended view
                        self.cache.put((store_name, view.id), missing[view.id]["signature"], view)
                found.extend(built)
        return sorted(found, key=lambda view: (view.view_start, view.id))

    @property
    def views(self) -> list[View]:
        if self._views is None:
            self._views = self._build()
        return self._views

    def view(self, view_id: str) -> View:
        views = self._build(view_id)
        if not views:
            raise NotFoundError(f"no video view {view_id[:128]!r}")
        return views[0]

    def dimension_values(self, dimension: str) -> list[tuple[str, int]]:
        """``(value, views)`` of ``dimension`` over the query's views, most views first (views without a value
        are left out)."""
        if dimension not in DIMENSIONS:
            raise InvalidParametersError(f"unknown dimension {dimension[:64]!r}")
        counts: dict[str, int] = {}
        for view in self.views:
            value = view.dimensions.get(dimension)
            if value is not None:
                counts[str(value)] = counts.get(str(value), 0) + 1
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    # --- metrics ---------------------------------------------------------------------------------------------
    def overall(self, metric_id: str, measurement: str | None = None) -> dict[str, Any]:
        metric = metric_of(metric_id)
        views = self.views
        return {"value": aggregate(metric, views, measurement), "total_views": len(views),
                "total_watch_time": sum(view.watch_time for view in views),
                "total_playing_time": sum(view.playing_time for view in views), "global_value": None}

    def breakdown(self, metric_id: str, group_by: str, measurement: str | None = None) -> list[dict[str, Any]]:
        """One row per value of ``group_by`` (views without one grouped under ``null``), with
        ``negative_impact``: 1 for the value that costs the most (views × how much worse than overall)."""
        metric = metric_of(metric_id)
        if group_by not in DIMENSIONS:
            raise InvalidParametersError(f"group_by: unknown dimension {group_by[:64]!r}")
        groups: dict[str | None, list[View]] = {}
        for view in self.views:
            groups.setdefault(view.dimensions.get(group_by), []).append(view)
        overall = aggregate(metric, self.views, measurement) or 0.0
        harmed: list[tuple[float, dict[str, Any]]] = []
        for value, views in groups.items():
            metric_value = aggregate(metric, views, measurement)
            harm = 0.0 if metric_value is None else (metric_value - overall) * len(views) * (
                1 if metric.worse_when_higher else -1)
            harmed.append((harm, {"field": value, "value": metric_value, "views": len(views),
                                  "total_watch_time": sum(v.watch_time for v in views),
                                  "total_playing_time": sum(v.playing_time for v in views)}))
        harmed.sort(key=lambda pair: -pair[0])
        return [{**row, "negative_impact": rank} for rank, (_, row) in enumerate(harmed, start=1)]

    def timeseries(self, metric_id: str, granularity: str | None = None,
                   measurement: str | None = None) -> tuple[str, list[list[Any]]]:
        """``(granularity, [[ISO time, value, views], ...])``, one row per bucket of the timeframe, views placed
        by the time their last event was received."""
        metric = metric_of(metric_id)
        span = (self.timeframe.end - self.timeframe.start).total_seconds()
        if granularity is None:
            granularity = ("minute" if span < 5400 else "ten_minutes" if span <= 21600
                           else "hour" if span <= 15 * 86400 else "day")
        if granularity not in _GRANULARITY:
            raise InvalidParametersError(f"group_by: one of {', '.join(_GRANULARITY)}")
        step = _GRANULARITY[granularity]
        start = int(self.timeframe.start.timestamp()) // step * step
        end = int(self.timeframe.end.timestamp())
        buckets: dict[int, list[View]] = {}
        for view in self.views:
            at = (view.last_received or 0) // 1000
            buckets.setdefault(at // step * step, []).append(view)
        if (end - start) // step > 10_000:
            raise InvalidParametersError("timeframe[]: too many buckets at this granularity (over 10000)")
        rows = []
        for bucket in range(start, end + 1, step):
            views = buckets.get(bucket, [])
            when = datetime.fromtimestamp(bucket, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append([when, aggregate(metric, views, measurement) if views else None, len(views)])
        return granularity, rows
