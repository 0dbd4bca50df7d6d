"""Mux Data's query shapes over the event log: metrics (overall, breakdown, timeseries) and video views.

A query reads the Parquet files of the days it covers (:func:`kinoray.analytics.eventlog.read_events`), lets
DuckDB pick the views it is about — those with an event received in the timeframe and matching ``filters[]``
(``dimension:value``; ``!dimension:value`` excludes), duplicates dropped — and builds those views with
:func:`kinoray.analytics.views.build_views`. Metric values aggregate per-view values with a *measurement*
(``avg``, ``median``, ``95th``, ``sum``, ``count``; each metric has Mux's default). Two metrics are ratios of
totals, as Mux defines them: ``rebuffer_percentage`` (rebuffer time ÷ watch time) and ``rebuffer_frequency``
(rebuffers per minute of watch time).

Once the rollup has materialized views (:mod:`kinoray.analytics.viewstore`), a query reads those and only the
views past its watermark from events — kept between queries by :mod:`kinoray.analytics.liveviews`.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from kinoray.analytics.collect import DIMENSIONS
from kinoray.analytics.eventlog import DEDUPE_SQL, LATEST_SQL, read_events
from kinoray.analytics.liveviews import LIVE_LOOKBACK, LIVE_VIEWS, RAW_LAST, LiveViews
from kinoray.analytics.views import VIEW_FINAL_MS, View, build_views
from kinoray.analytics.viewstore import (
    METRIC_SQL,
    VIEW_SCHEMA,
    Stored,
    aggregate_sql,
    load_stored,
    us_range,
    view_rows,
    views_of,
)
from kinoray.analytics.viewstore import aggregate_startup as _aggregate_startup
from kinoray.errors import InvalidParametersError, NotFoundError
from kinoray.store.objects import ObjectStore
from kinoray.store.scoping import current_env_key_filters

__all__ = ["MEASUREMENTS", "METRICS", "UNFILTERABLE_METRICS", "VIEWS", "Filter", "Metric", "MetricFilter", "Query",
           "Timeframe", "ViewCache", "aggregate", "matching", "parse_filters", "parse_metric_filters",
           "parse_timeframe"]

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


#: Metrics ``metric_filters[]`` cannot name (Mux's exceptions: they have no per-view value to compare).
UNFILTERABLE_METRICS = frozenset({"exits_before_video_start", "unique_viewers", "video_startup_failure_percentage",
                                  "view_dropped_percentage", "views"})
_METRIC_FILTER = re.compile(r"(?P<metric>[a-z_0-9]{1,64})(?P<op><=|>=|!=|<|>|=)(?P<value>.{1,64})")
#: A finite decimal number as ``metric_filters[]`` values are written (what :data:`METRIC_FILTER_PATTERN` allows).
_NUMBER = r"-?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,2})?"
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b}


@dataclass(frozen=True)
class MetricFilter:
    """One ``metric_filters[]`` clause (``aggregate_startup_time>=1000``): keeps the views whose own value of the
    metric (its per-view value, in the metric's unit: ms, fractions 0–1, bits/s) compares true; a view without a
    value (never started, no rendition…) is left out. Used on built views (:meth:`matches`) and, over a table
    with one column per metric, as SQL (:meth:`sql`) — the one definition both query paths share."""

    metric: str
    operator: str
    value: float

    def matches(self, view: View) -> bool:
        found = METRICS[self.metric].value(view)
        return found is not None and _COMPARISONS[self.operator](found, self.value)

    def sql(self, column: str | None = None) -> tuple[str, list[float]]:
        """``('"metric" >= ?', [value])`` over ``column`` (default: a column named as the metric); NULL never
        matches, as in :meth:`matches`."""
        operator = "<>" if self.operator == "!=" else self.operator
        return f'"{column or self.metric}" IS NOT NULL AND "{column or self.metric}" {operator} ?', [self.value]


def metric_filter_pattern() -> str:
    """The JSON-schema ``pattern`` of one ``metric_filters[]`` value: a filterable metric, an operator and a
    finite number — exactly what :func:`parse_metric_filters` accepts, so the OpenAPI document promises no more."""
    names = "|".join(sorted(set(METRICS) - UNFILTERABLE_METRICS))
    return f"^({names})(<=|>=|!=|<|>|=){_NUMBER}$"


def parse_metric_filters(raw: Sequence[str]) -> list[MetricFilter]:
    """``metric_filters[]`` values: ``metric<op>number`` with ``op`` one of ``>= <= > < = !=``; a metric of
    :data:`METRICS` other than :data:`UNFILTERABLE_METRICS`. Several are ANDed."""
    out = []
    for item in raw:
        match = _METRIC_FILTER.fullmatch(item.strip())
        if match is None:
            raise InvalidParametersError(f"metric_filters[]: {item[:100]!r} is not metric<op>value "
                                         "(op: >=, <=, >, <, =, !=)")
        if match["metric"] in UNFILTERABLE_METRICS or match["metric"] not in METRICS:
            raise InvalidParametersError(f"metric_filters[]: {match['metric']!r} cannot be filtered on; one of "
                                         f"{', '.join(sorted(set(METRICS) - UNFILTERABLE_METRICS))}")
        try:
            value = float(match["value"])
        except ValueError:
            raise InvalidParametersError(f"metric_filters[]: {match['value'][:64]!r} is not a number") from None
        if not math.isfinite(value):
            raise InvalidParametersError("metric_filters[]: the value must be a finite number")
        out.append(MetricFilter(match["metric"], match["op"], value))
    return out


def matching(views: Sequence[View], metric_filters: Sequence[MetricFilter]) -> list[View]:
    """The views every clause of ``metric_filters`` keeps (all of them when there is none)."""
    return [view for view in views if all(item.matches(view) for item in metric_filters)]


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


def _measurement(metric: Metric, measurement: str | None) -> str:
    measurement = measurement or metric.measurement
    if measurement not in MEASUREMENTS:
        raise InvalidParametersError(f"measurement: one of {', '.join(MEASUREMENTS)}")
    return measurement


def _ranked(metric: Metric, overall: float, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Breakdown rows (in order of first view) ranked by ``negative_impact``: 1 for the value that costs the
    most (views × how much worse than overall)."""
    harmed = [(0.0 if row["value"] is None else (row["value"] - overall) * row["views"] * (
        1 if metric.worse_when_higher else -1), row) for row in rows]
    harmed.sort(key=lambda pair: -pair[0])
    return [{**row, "negative_impact": rank} for rank, (_, row) in enumerate(harmed, start=1)]


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
                 now: datetime | None = None, cache: ViewCache | None = None,
                 metric_filters: Sequence[MetricFilter] = (), live_views: LiveViews | None = LIVE_VIEWS) -> None:
        # the calling token's environment first (kinoray.store.scoping): a Data query sees only its views
        self.store, self.timeframe = store, timeframe
        self.filters = [*(Filter("env_key", key, negated) for key, negated in current_env_key_filters()), *filters]
        self.metric_filters = list(metric_filters)
        self.now = now or datetime.now(UTC)
        self.cache = cache if cache is not None else VIEWS
        self._views: list[View] | None = None
        self._stored: Stored | None = None  # the materialized views of the timeframe's days (viewstore)
        self._live: list[View] | None = None  # the views built from events (those not materialized)
        self.live_views = live_views  # None: the views past the watermark built from events for this query alone
        self._live_rows: tuple[pa.Table, dict[str, View]] | None = None

    def _build(self, view_id: str | None = None) -> list[View]:
        """The views (or the one view) of the query: DuckDB picks them, drops duplicate events and takes each
        view's dimensions (their latest non-empty values) and signature (events, last receipt); views whose
        signature the cache holds are reused, the others built from their events."""
        read_from, written_since = self.timeframe.start, None
        watermark = self.stored.watermark if view_id is None else None
        if watermark is not None and watermark.start <= int(self.timeframe.start.timestamp() * 1000):
            # only views past the watermark are built: from the event files written in the LIVE_LOOKBACK before it
            written_since = datetime.fromtimestamp(watermark.end / 1000, UTC) - LIVE_LOOKBACK
            read_from = max(read_from, written_since)
        if written_since is not None and watermark is not None:  # the views with an event past the watermark,
            since = datetime.fromtimestamp(watermark.end / 1000, UTC)  # not materialized (late events dropped)
            recent = read_events(self.store, max(read_from, since), self.timeframe.end, written_since=since)
            live = pc.unique(recent["view_id"].filter(pc.greater_equal(recent["received_at"], pa.scalar(
                since, recent.schema.field("received_at").type))).combine_chunks())
            stored = self.stored.table["view_id"]
            live = pc.filter(live, pc.invert(pc.is_in(live, value_set=stored.filter(
                pc.is_in(stored, value_set=live)).combine_chunks()))) if len(stored) else live
            if not len(live):
                return []
            events = read_events(self.store, read_from, self.timeframe.end, written_since=written_since)
            events = events.filter(pc.is_in(events["view_id"], value_set=live))
        else:
            events = read_events(self.store, read_from, self.timeframe.end, written_since=written_since)
        where: list[str] = []
        params: list[Any] = []
        if view_id is None:
            where.append("view_id IN (SELECT view_id FROM events GROUP BY view_id "
                         "HAVING max(received_at) >= ? AND min(received_at) <= ?)")
            params += [self.timeframe.start, self.timeframe.end]
        else:
            where.append("view_id = ?")
            params.append(view_id)
        if watermark is not None and written_since is None:  # the timeframe starts before the materialized views: those before too
            where.append("view_id IN (SELECT view_id FROM events GROUP BY view_id HAVING epoch_ms(max(received_at))"
                         " >= ? OR epoch_ms(max(received_at)) < ?) AND view_id NOT IN (SELECT view_id FROM stored)")
            params += [watermark.end, watermark.start]
        for item in self.filters:
            where.append(f"view_id {'NOT IN' if item.negated else 'IN'} "
                         f'(SELECT view_id FROM events WHERE "{item.dimension}" = ?)')
            params.append(item.value)
        chosen = "CREATE TEMP TABLE chosen AS SELECT * FROM events WHERE " + " AND ".join(where) + " " + DEDUPE_SQL
        latest = LATEST_SQL
        now_ms = int(self.now.timestamp() * 1000)
        store_name = str(getattr(self.store, "url", id(self.store)))
        with duckdb.connect() as connection:
            connection.register("events", events)
            connection.register("stored", self.stored.table.select(["view_id"]))
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
    def stored(self) -> Stored:
        """The materialized views of the days the query reads (the timeframe's, and the day after)."""
        if self._stored is None:
            first = self.timeframe.start.astimezone(UTC).date()
            self._stored = load_stored(self.store, first, self.timeframe.end.astimezone(UTC).date()
                                       + timedelta(days=1))
        return self._stored

    def _live_selected(self) -> tuple[pa.Table, dict[str, View]] | None:
        """The query's views past the watermark from the process's :class:`LiveViews` (their rows, and the
        built views by id), selected as :meth:`_build` selects them: an event received in the timeframe, not
        materialized, ``filters[]`` matched by an event. ``None`` where :meth:`_build` reads more than the
        views past the watermark (the timeframe starts before the materialized views; nothing materialized)."""
        watermark = self.stored.watermark
        if self.live_views is None or watermark is None or watermark.start > int(
                self.timeframe.start.timestamp() * 1000):
            return None
        if self._live_rows is None:
            snapshot = self.live_views.snapshot(self.store, watermark, self.now, max(self.timeframe.end, self.now))
            if snapshot is None:
                return None
            rows, events = snapshot.rows, snapshot.events
            start, end = us_range(self.timeframe.start, self.timeframe.end)
            keep = pc.and_(pc.greater_equal(pc.multiply(rows[RAW_LAST], 1000), start),
                           pc.less_equal(pc.multiply(rows["first_received"], 1000), end))
            stored = self.stored.table["view_id"]
            if len(stored) and rows.num_rows:
                materialized = stored.filter(pc.is_in(stored, value_set=rows["view_id"].combine_chunks()))
                keep = pc.and_(keep, pc.invert(pc.is_in(rows["view_id"], value_set=materialized.combine_chunks())))
            for item in self.filters:
                matched = pc.unique(events["view_id"].filter(
                    pc.fill_null(pc.equal(events[item.dimension], item.value), False)).combine_chunks())
                found = pc.is_in(rows["view_id"], value_set=matched)
                keep = pc.and_(keep, pc.invert(found) if item.negated else found)
            self._live_rows = rows.filter(keep).select(VIEW_SCHEMA.names), snapshot.views
        return self._live_rows

    def _live_table(self) -> pa.Table:
        """The query's views not materialized, as :data:`VIEW_SCHEMA` rows."""
        selected = self._live_selected()
        return selected[0] if selected is not None else view_rows(self.live)

    @property
    def live(self) -> list[View]:
        """The query's views not materialized, built from events (or kept from earlier queries: :class:`LiveViews`;
        ``final`` as of the query's ``now``)."""
        if self._live is None:
            selected = self._live_selected()
            if selected is None:
                self._live = self._build()
            else:
                now_ms = int(self.now.timestamp() * 1000)
                self._live = sorted((replace(view, final=now_ms - (view.last_received or 0) > VIEW_FINAL_MS)
                                     for view in map(selected[1].__getitem__, selected[0]["view_id"].to_pylist())),
                                    key=lambda view: (view.view_start, view.id))
        return self._live

    @property
    def views(self) -> list[View]:
        if self._views is None:
            with duckdb.connect() as connection:
                stored = views_of(self._stored_rows(connection).to_arrow_table())
            self._views = matching(sorted(stored + self.live, key=lambda view: (view.view_start, view.id)),
                                   self.metric_filters)
        return self._views

    # --- the same over view rows in DuckDB (materialized views at scale) --------------------------------------
    def _stored_rows(self, connection: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
        """The materialized views of the timeframe matching ``filters[]``, as rows."""
        start, end = us_range(self.timeframe.start, self.timeframe.end)
        where = ["last_received * 1000 >= ? AND first_received * 1000 <= ?"]
        params: list[Any] = [start, end]
        for item in self.filters:
            where.append(f'"{item.dimension}" IS DISTINCT FROM ?' if item.negated else f'"{item.dimension}" = ?')
            params.append(item.value)
        connection.register("stored_views", self.stored.table)
        return connection.query("SELECT * FROM stored_views WHERE " + " AND ".join(where), params=params)

    def _sql_ready(self, metric_id: str) -> bool:
        """Whether the metric (and every ``metric_filters[]`` one) has a SQL form: then the query runs over view
        rows in DuckDB, materialized and live together."""
        return metric_id in METRIC_SQL and all(item.metric in METRIC_SQL for item in self.metric_filters)

    def _frame(self, connection: duckdb.DuckDBPyConnection) -> str:
        """Registers the query's views as rows (the table ``q``) on ``connection``; returns ``q``."""
        self._stored_rows(connection).create_view("stored_q")
        connection.register("live_q", self._live_table())
        where, params = ["TRUE"], []
        for item in self.metric_filters:
            clause, values = item.sql(f"metric_{item.metric}")
            where.append(clause.replace(f'"metric_{item.metric}"', f"({METRIC_SQL[item.metric]})"))
            params += values
        connection.query("SELECT * FROM (SELECT * FROM stored_q UNION ALL BY NAME SELECT * FROM live_q) WHERE "
                         + " AND ".join(where), params=params).create_view("q")
        return "q"

    def video_views(self, viewer_id: str | None = None, failed: bool = False, descending: bool = True,
                    offset: int = 0, limit: int = 25) -> tuple[list[View], int]:
        """One page of the query's views by start (newest first unless not ``descending``) and how many there
        are: those of ``viewer_id`` (the viewer user id or the SDK's viewer id) only, failed ones only. In
        DuckDB over view rows (the page's views carry their metrics, dimensions and fatal errors)."""
        if not self._sql_ready("views"):
            views = [view for view in self.views if (viewer_id is None or viewer_id in (
                view.dimensions.get("viewer_user_id"), view.dimensions.get("viewer_id"))) and (
                not failed or view.playback_failure)]
            views.sort(key=lambda view: (view.view_start, view.id), reverse=descending)
            return views[offset:offset + limit], len(views)
        where, params = ["TRUE"], []
        if viewer_id is not None:
            where.append("(viewer_user_id = ? OR viewer_id = ?)")
            params += [viewer_id, viewer_id]
        if failed:
            where.append("playback_failure")
        order = "DESC" if descending else "ASC"
        with duckdb.connect() as connection:
            self._frame(connection)
            found = connection.execute("SELECT count(*) FROM q WHERE " + " AND ".join(where), params).fetchall()
            page = connection.query(f"SELECT * FROM q WHERE {' AND '.join(where)} ORDER BY view_start {order}, "
                                    f"view_id {order} LIMIT {int(limit)} OFFSET {int(offset)}", params=params
                                    ).to_arrow_table()
        return views_of(page), int(found[0][0])

    def _sql(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with duckdb.connect() as connection:
            self._frame(connection)
            return connection.execute(sql, list(params)).fetchall()

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
        if all(item.metric in METRIC_SQL for item in self.metric_filters):
            found = self._sql(f'SELECT "{dimension}", count(*) FROM q WHERE "{dimension}" IS NOT NULL '
                              f'GROUP BY "{dimension}"')
            return sorted(((str(value), int(count)) for value, count in found), key=lambda item: (-item[1], item[0]))
        counts: dict[str, int] = {}
        for view in self.views:
            value = view.dimensions.get(dimension)
            if value is not None:
                counts[str(value)] = counts.get(str(value), 0) + 1
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    # --- metrics ---------------------------------------------------------------------------------------------
    def overall(self, metric_id: str, measurement: str | None = None) -> dict[str, Any]:
        metric = metric_of(metric_id)
        if self._sql_ready(metric_id):
            value, count, watch, playing = self._sql(
                f"SELECT {aggregate_sql(metric_id, _measurement(metric, measurement))}, count(*), "
                "coalesce(sum(watch_time), 0), coalesce(sum(playing_time), 0) FROM q")[0]
            return {"value": value, "total_views": int(count), "total_watch_time": int(watch),
                    "total_playing_time": int(playing), "global_value": None}
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
        if self._sql_ready(metric_id):
            value_sql = aggregate_sql(metric_id, _measurement(metric, measurement))
            with duckdb.connect() as connection:
                self._frame(connection)
                found = connection.execute(
                    f'SELECT grouping("{group_by}") AS total, "{group_by}", {value_sql}, count(*), sum(watch_time), '
                    f'sum(playing_time), min(view_start) FROM q GROUP BY GROUPING SETS (("{group_by}"), ())'
                ).fetchall()
                firsts = [row[6] for row in found if not row[0]]
                tie_break: dict[Any, str] = {}  # groups whose first views start at the same ms: by view id
                for row in found:
                    if not row[0] and firsts.count(row[6]) > 1:
                        first = connection.execute(f'SELECT min(view_id) FROM q WHERE view_start = ? AND '
                                                   f'"{group_by}" IS NOT DISTINCT FROM ?', [row[6], row[1]]).fetchall()
                        tie_break[row[1]] = first[0][0] if first else ""
            overall = next((row[2] for row in found if row[0]), None) or 0.0
            ordered = sorted((row for row in found if not row[0]), key=lambda row: (row[6], tie_break.get(row[1], "")))
            return _ranked(metric, overall, [
                {"field": value, "value": metric_value, "views": int(views), "total_watch_time": int(watch),
                 "total_playing_time": int(playing)} for _, value, metric_value, views, watch, playing, _ in ordered])
        groups: dict[str | None, list[View]] = {}
        for view in self.views:
            groups.setdefault(view.dimensions.get(group_by), []).append(view)
        overall = aggregate(metric, self.views, measurement) or 0.0
        return _ranked(metric, overall, [
            {"field": value, "value": aggregate(metric, views, measurement), "views": len(views),
             "total_watch_time": sum(v.watch_time for v in views),
             "total_playing_time": sum(v.playing_time for v in views)} for value, views in groups.items()])

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
        if (end - start) // step > 10_000:
            raise InvalidParametersError("timeframe[]: too many buckets at this granularity (over 10000)")
        if self._sql_ready(metric_id):
            found = {int(bucket): (value, int(count)) for bucket, value, count in self._sql(
                f"SELECT coalesce(last_received, 0) // 1000 // {step} * {step} AS bucket, "
                f"{aggregate_sql(metric_id, _measurement(metric, measurement))}, count(*) FROM q GROUP BY bucket")}
            return granularity, [[datetime.fromtimestamp(bucket, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                  *found.get(bucket, (None, 0))] for bucket in range(start, end + 1, step)]
        buckets: dict[int, list[View]] = {}
        for view in self.views:
            at = (view.last_received or 0) // 1000
            buckets.setdefault(at // step * step, []).append(view)
        rows = []
        for bucket in range(start, end + 1, step):
            views = buckets.get(bucket, [])
            when = datetime.fromtimestamp(bucket, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append([when, aggregate(metric, views, measurement) if views else None, len(views)])
        return granularity, rows
