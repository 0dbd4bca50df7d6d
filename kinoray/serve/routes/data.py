"""Mux Data: the beacon collector (edge) and the query API (management API).

**Collector** (:data:`collector`, mounted by the edge): what Mux's Data SDKs post, unmodified — ``POST /`` on
the beacon host (``beacon.<edge.domain>``, or any host when no domain is set) and ``POST /data/v1/beacons``
(the same, by path; kinoray's own player posts there) — parsed, expanded and stored by :mod:`kinoray.analytics`
through :func:`kinoray.control.analytics.collector_of`. ``202 {"data": {"accepted": n}}``.

Browsers send these, so there are no credentials: a per-client-IP rate limit (the API's token bucket, keyed
``beacon:<ip>``) bounds what one client can write, and the body is bounded (500 KB) before it is read. CORS
allows any origin, on errors too (a player on another site reads the answer), and ``OPTIONS`` answers
preflights; the SDKs and ``navigator.sendBeacon`` post ``text/plain``, read as JSON like ``application/json``.

**Queries** (:data:`queries`, management API, a token with ``data`` permission): ``GET /data/v1/video-views``,
``/data/v1/video-views/{id}``, ``/data/v1/metrics/{metric}/overall|breakdown|timeseries``,
``/data/v1/dimensions[/{id}]`` and its older name ``/data/v1/filters[/{id}]`` in Mux's shapes, with
``timeframe[]``, ``filters[]`` and ``metric_filters[]`` (:class:`DataQuery`);
real time (``/data/v1/realtime/metrics[/{id}/breakdown|timeseries]``, ``/data/v1/realtime/dimensions``,
:mod:`kinoray.analytics.realtime`); erasure by viewer (``DELETE /data/v1/viewers/{viewer_user_id}``, kinoray's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinoray import analytics
from kinoray.analytics import errors, realtime
from kinoray.analytics.query import Query as ViewQuery
from kinoray.analytics.query import Timeframe, metric_filter_pattern, parse_metric_filters
from kinoray.analytics.realtime import BUCKET_SECONDS, REALTIME_DIMENSIONS, REALTIME_METRICS
from kinoray.analytics.views import View
from kinoray.control.analytics import collector_of, erase_viewer, event_store, presences_of
from kinoray.errors import KinorayError, RateLimitedError
from kinoray.serve.deps import CurrentToken, PlatformDep, client_address, get_platform
from kinoray.serve.schemas import AUTHENTICATED, error_responses
from kinoray.store.scoping import current_env_key_filters

__all__ = ["COLLECTOR_PATHS", "BeaconAccepted", "BeaconAcceptedEnvelope", "CollectorRoute", "collector", "queries"]

_CORS = {"Access-Control-Allow-Origin": "*"}
_PREFLIGHT = {**_CORS, "Access-Control-Allow-Methods": "POST, OPTIONS",
              "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "86400"}
_JSON_TYPES = ("application/json", "text/plain", "")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise StarletteHTTPException(413, f"beacon batches are at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise StarletteHTTPException(413, f"beacon batches are at most {limit} bytes")
    return bytes(body)


class CollectorRoute(APIRoute):
    """Rate limit, content type and size bound before the handler reads the body; every answer, errors
    included, carries ``Access-Control-Allow-Origin: *``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if "POST" not in (self.methods or ()):
            return handler

        async def route(request: Request) -> Response:
            try:
                platform = get_platform()
                decision = platform.limiter.hit(f"beacon:{client_address(request, platform)}")
                if not decision.allowed:
                    raise RateLimitedError(f"beacon rate limit of {platform.settings.api.rate_limit_per_second:g} "
                                           f"requests/s per client exceeded", decision.retry_after, decision.limit)
                if _media_type(request) not in _JSON_TYPES:
                    raise StarletteHTTPException(415, "send the batch as application/json or text/plain")
                body = await _bounded_body(request, analytics.MAX_BATCH_BYTES)

                async def receive() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                response = await handler(Request(request.scope, receive))
            except KinorayError as error:
                error.add_headers(_CORS)
                raise
            except StarletteHTTPException as error:
                error.headers = {**(error.headers or {}), **_CORS}
                raise
            response.headers.update(_CORS)
            return response

        return route


class BeaconAccepted(BaseModel):
    accepted: int


class BeaconAcceptedEnvelope(BaseModel):
    data: BeaconAccepted


def preflight() -> Response:
    return Response(status_code=204, headers=_PREFLIGHT)


# --- the Mux Data collector ---------------------------------------------------------------------------------
collector = APIRouter(tags=["data"], route_class=CollectorRoute)
COLLECTOR_PATHS = ("/", "/data/v1/beacons")


async def collect(request: Request, platform: PlatformDep) -> BeaconAcceptedEnvelope:
    """Store a batch of Mux Data SDK beacons as sent (`{"metadata": {...}, "events": [...]}`, short keys),
    `text/plain` or JSON, at most 300 events and 500 KB. No credentials: browsers send these, rate-limited per
    client IP; every answer carries `Access-Control-Allow-Origin: *`. Point an SDK at it with
    `beaconCollectionDomain` (`beacon.<domain>`, or this host when no domain is set)."""
    events = analytics.parse_batch(await request.body())
    accepted = await run_in_threadpool(collector_of(platform).collect, events,
                                       user_agent=request.headers.get("user-agent"),
                                       address=client_address(request, platform))
    return BeaconAcceptedEnvelope(data=BeaconAccepted(accepted=accepted))


_NUMBER = {"type": "number", "minimum": 0, "maximum": 2**53 - 1}
#: The batch as documented (the handler reads the body itself: short keys, unknown keys kept).
BATCH_SCHEMA = {
    "type": "object", "required": ["events"],
    "properties": {
        "metadata": {"type": "object", "description": "transmission_timestamp, rtt_ms (ms)"},
        "events": {"type": "array", "minItems": 1, "maxItems": analytics.MAX_EVENTS, "items": {
            "type": "object", "required": ["e", "xid", "uti"],
            "description": "one event, Mux Data SDK short keys (e.g. pphti = player_playhead_time); others kept",
            "properties": {"e": {"type": "string", "minLength": 1, "maxLength": 64, "description": "event name"},
                           "xid": {"type": "string", "minLength": 1, "maxLength": 128, "description": "view id"},
                           "uti": {**_NUMBER, "description": "viewer time, ms since the epoch"},
                           "pphti": {**_NUMBER, "description": "playhead, ms"},
                           "xsqno": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1,
                                     "description": "the event's sequence number in its view"}}}},
    },
}
_BODY = {"requestBody": {"required": True, "content": {
    "text/plain": {"schema": BATCH_SCHEMA}, "application/json": {"schema": BATCH_SCHEMA}}}}

for _path in COLLECTOR_PATHS:
    collector.add_api_route(_path, collect, methods=["POST"], status_code=202, response_model=BeaconAcceptedEnvelope,
                            responses=error_responses(400, 413, 415, 429), name=f"collect{_path.replace('/', '_')}",
                            openapi_extra=_BODY)
    collector.add_api_route(_path, preflight, methods=["OPTIONS"], include_in_schema=False,
                            name=f"collect_preflight{_path.replace('/', '_')}")


# --- the query API ------------------------------------------------------------------------------------------
queries = APIRouter(tags=["data"], responses=error_responses(*AUTHENTICATED))

MetricId = Enum("MetricId", {name: name for name in analytics.METRICS}, type=str)  # type: ignore[misc]
Dimension = Enum("Dimension", {name: name for name in analytics.DIMENSIONS}, type=str)  # type: ignore[misc]
_BROWSER = Dimension("browser")
_TIMEFRAME = r"^([0-9]{1,12}|[0-9]{1,6}:(minutes?|hours?|days?))$"
_FILTER = rf"^!?({'|'.join(analytics.DIMENSIONS)}):.*$"
_METRIC_FILTER = metric_filter_pattern()
Measurement = Literal["avg", "median", "95th", "sum", "count"]


class DataMeta(BaseModel):
    granularity: str | None = None
    aggregation: str | None = None


class OverallValues(BaseModel):
    value: float | None
    total_watch_time: int
    total_views: int
    total_playing_time: int
    global_value: float | None = None


class OverallEnvelope(BaseModel):
    data: OverallValues
    total_row_count: int | None = None
    timeframe: list[int]
    meta: DataMeta


class BreakdownValue(BaseModel):
    field: str | None
    value: float | None
    views: int
    total_watch_time: int
    total_playing_time: int
    negative_impact: int


class BreakdownEnvelope(BaseModel):
    data: list[BreakdownValue]
    total_row_count: int
    timeframe: list[int]
    meta: DataMeta


class TimeseriesEnvelope(BaseModel):
    data: list[list[Any]] = Field(description="[ISO time, value, views] per bucket")
    total_row_count: int
    timeframe: list[int]
    meta: DataMeta


class AbridgedVideoView(BaseModel):
    id: str
    viewer_os_family: str | None = None
    viewer_application_name: str | None = None
    video_title: str | None = None
    total_row_count: int | None = None
    player_error_message: str | None = None
    player_error_code: str | None = None
    error_type_id: int | None = None
    country_code: str | None = None
    view_start: str
    view_end: str
    viewer_experience_score: float | None = None
    watch_time: int
    playback_failure: bool


class VideoViewsEnvelope(BaseModel):
    data: list[AbridgedVideoView]
    total_row_count: int
    timeframe: list[int]


class VideoViewEvent(BaseModel):
    name: str
    viewer_time: int
    playback_time: int | None = None
    event_time: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class VideoView(BaseModel):
    """One view: Mux's ``VideoView`` fields kinoray computes (Mux sends its percentages and scores as strings)."""

    id: str
    view_id: str
    view_start: str
    view_end: str
    asset_id: str | None = None
    playback_id: str | None = None
    video_id: str | None = None
    video_title: str | None = None
    viewer_user_id: str | None = None
    mux_viewer_id: str | None = None
    session_id: str | None = None
    player_name: str | None = None
    player_software: str | None = None
    player_software_version: str | None = None
    player_mux_plugin_name: str | None = None
    player_width: int | None = None
    player_height: int | None = None
    player_source_url: str | None = None
    viewer_application_name: str | None = None
    viewer_application_version: str | None = None
    viewer_os_family: str | None = None
    viewer_os_version: str | None = None
    viewer_device_category: str | None = None
    viewer_device_manufacturer: str | None = None
    viewer_device_name: str | None = None
    country_code: str | None = None
    region: str | None = Field(default=None, description="the viewer's country subdivision (English name), from "
                                                         "the client address; null without the city database")
    asn_name: str | None = None
    time_to_first_frame: int | None = None
    player_startup_time: int | None = None
    exit_before_video_start: bool
    playback_failure: bool
    video_startup_failure: bool
    player_error_code: str | None = None
    player_error_message: str | None = None
    watch_time: int
    view_playing_time: str
    buffering_count: int
    buffering_duration: int
    rebuffer_percentage: str | None = None
    buffering_rate: str | None = Field(default=None, description="rebuffers per minute of watch time")
    view_seek_count: int
    view_seek_duration: int | None = None
    weighted_average_bitrate: float | None = None
    kinoray_rendition_switches: int
    view_max_upscale_percentage: str | None = None
    view_max_downscale_percentage: str | None = None
    view_total_upscaling: str | None = None
    view_total_downscaling: str | None = None
    view_max_playhead_position: str | None = None
    playback_score: str | None = None
    startup_score: str | None = None
    rebuffering_score: str | None = None
    video_quality_score: str | None = None
    viewer_experience_score: str | None = None
    events: list[VideoViewEvent]


class VideoViewEnvelope(BaseModel):
    data: VideoView
    total_row_count: int | None = None
    timeframe: list[int]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _text(value: Any) -> str | None:
    return None if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))


def _int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


class DataQuery:
    """The common query parameters (``timeframe[]``, ``filters[]``) as a :class:`ViewQuery` over the store."""

    def __init__(self, platform: PlatformDep,
                 timeframe: Annotated[list[Annotated[str, Field(pattern=_TIMEFRAME)]],
                                      Query(alias="timeframe[]", max_length=2)] = [],  # noqa: B006
                 filters: Annotated[list[Annotated[str, Field(pattern=_FILTER, max_length=512)]],
                                    Query(alias="filters[]", max_length=32)] = [],  # noqa: B006
                 metric_filters: Annotated[list[Annotated[str, Field(pattern=_METRIC_FILTER, max_length=160)]],
                                           Query(alias="metric_filters[]", max_length=16, description=(
                                               "metric<op>value, op one of >= <= > < = !=: the views whose own "
                                               "value of the metric compares true (ANDed)"))] = []  # noqa: B006
                 ) -> None:
        self.query = ViewQuery(event_store(platform), analytics.parse_timeframe(timeframe),
                               analytics.parse_filters(filters),
                               metric_filters=parse_metric_filters(metric_filters))


QueryDep = Annotated[DataQuery, Depends()]


@queries.get("/data/v1/metrics/{metric_id}/overall", response_model=OverallEnvelope)
def metric_overall(metric_id: MetricId, token: CurrentToken, data: QueryDep,
                   measurement: Measurement | None = None) -> OverallEnvelope:
    """A metric over every view in the timeframe matching the filters."""
    overall = data.query.overall(metric_id.value, measurement)
    aggregation = measurement or analytics.METRICS[metric_id.value].measurement
    return OverallEnvelope(data=OverallValues(**overall), timeframe=data.query.timeframe.epochs,
                           total_row_count=None, meta=DataMeta(aggregation=aggregation))


@queries.get("/data/v1/metrics/{metric_id}/breakdown", response_model=BreakdownEnvelope)
def metric_breakdown(metric_id: MetricId, token: CurrentToken, data: QueryDep,
                     group_by: Dimension = _BROWSER,
                     measurement: Measurement | None = None,
                     order_by: Literal["negative_impact", "value", "views", "field"] = "negative_impact",
                     order_direction: Literal["asc", "desc"] = "asc",
                     limit: Annotated[int, Query(ge=1, le=1000)] = 25,
                     page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> BreakdownEnvelope:
    """The metric per value of the ``group_by`` dimension, ordered and paged."""
    rows = data.query.breakdown(metric_id.value, group_by.value, measurement)
    rows.sort(key=lambda row: (row[order_by] is None, row[order_by] if row[order_by] is not None else 0),
              reverse=order_direction == "desc")
    aggregation = measurement or analytics.METRICS[metric_id.value].measurement
    return BreakdownEnvelope(data=[BreakdownValue(**row) for row in rows[(page - 1) * limit:page * limit]],
                             total_row_count=len(rows), timeframe=data.query.timeframe.epochs,
                             meta=DataMeta(aggregation=aggregation))


@queries.get("/data/v1/metrics/{metric_id}/timeseries", response_model=TimeseriesEnvelope)
def metric_timeseries(metric_id: MetricId, token: CurrentToken, data: QueryDep,
                      measurement: Measurement | None = None,
                      group_by: Literal["minute", "ten_minutes", "hour", "day"] | None = None,
                      order_direction: Literal["asc", "desc"] = "asc") -> TimeseriesEnvelope:
    """The metric per time bucket (``group_by``: minute below 90 min, ten_minutes to 6 h, hour to 15 days,
    then day), each row ``[time, value, views]``."""
    granularity, rows = data.query.timeseries(metric_id.value, group_by, measurement)
    if order_direction == "desc":
        rows.reverse()
    aggregation = measurement or analytics.METRICS[metric_id.value].measurement
    return TimeseriesEnvelope(data=rows, total_row_count=len(rows), timeframe=data.query.timeframe.epochs,
                              meta=DataMeta(granularity=granularity, aggregation=aggregation))


def _abridged(view: View) -> AbridgedVideoView:
    d = view.dimensions
    return AbridgedVideoView(
        id=view.id, viewer_os_family=d.get("operating_system"), viewer_application_name=d.get("browser"),
        video_title=d.get("video_title"), player_error_message=view.error_message, player_error_code=view.error_code,
        country_code=d.get("country"), view_start=_iso(view.view_start), view_end=_iso(view.view_end),
        viewer_experience_score=view.viewer_experience_score, watch_time=view.watch_time,
        playback_failure=view.playback_failure)


@queries.get("/data/v1/video-views", response_model=VideoViewsEnvelope)
def list_video_views(token: CurrentToken, data: QueryDep,
                     viewer_id: Annotated[str | None, Query(max_length=256)] = None,
                     error_id: Annotated[str | None, Query(max_length=64)] = None,
                     order_direction: Literal["asc", "desc"] = "desc",
                     limit: Annotated[int, Query(ge=1, le=1000)] = 25,
                     page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> VideoViewsEnvelope:
    """Views in the timeframe matching the filters, newest first (``order_direction=asc``: oldest first);
    ``viewer_id`` matches the viewer user id or the SDK's viewer id; ``error_id=any`` keeps failed views, an
    ``error_id`` the views with that error (an ``id`` of ``/data/v1/errors``, or a player error code)."""
    if error_id is None or error_id == "any":  # one page read in DuckDB (materialized views at scale)
        found, total = data.query.video_views(viewer_id, failed=error_id == "any",
                                              descending=order_direction == "desc", offset=(page - 1) * limit,
                                              limit=limit)
        return VideoViewsEnvelope(data=[_abridged(view) for view in found], total_row_count=total,
                                  timeframe=data.query.timeframe.epochs)
    views = data.query.views
    if viewer_id is not None:
        views = [v for v in views if viewer_id in (v.dimensions.get("viewer_user_id"), v.dimensions.get("viewer_id"))]
    if error_id is not None:
        views = [v for v in views if v.playback_failure and (error_id == "any" or v.error_code == error_id or any(
            str(errors.error_id(*key)) == error_id for key in errors.view_errors(v)))]
    views = sorted(views, key=lambda view: (view.view_start, view.id), reverse=order_direction == "desc")
    return VideoViewsEnvelope(data=[_abridged(view) for view in views[(page - 1) * limit:page * limit]],
                              total_row_count=len(views), timeframe=data.query.timeframe.epochs)


_INTERNAL = frozenset({"event", "viewer_time", "player_playhead_time", "event_time"})


@queries.get("/data/v1/video-views/{view_id}", response_model=VideoViewEnvelope,
             responses=error_responses(404))
def get_video_view(view_id: Annotated[str, Path(min_length=1, max_length=128)], token: CurrentToken,
                   platform: PlatformDep) -> VideoViewEnvelope:
    """One view with its metrics and its event timeline (events received within the last 7 days)."""
    now = datetime.now(UTC)
    query = ViewQuery(event_store(platform), Timeframe(now - timedelta(days=7), now))
    view = query.view(view_id)
    d, f = view.dimensions, view.fields
    events = [VideoViewEvent(name=e["event"], viewer_time=e["viewer_time"],
                             playback_time=_int(e.get("player_playhead_time")), event_time=e.get("event_time"),
                             details={k: v for k, v in e["details"].items() if k not in _INTERNAL})
              for e in view.events]
    return VideoViewEnvelope(timeframe=query.timeframe.epochs, data=VideoView(
        id=view.id, view_id=view.id, view_start=_iso(view.view_start), view_end=_iso(view.view_end),
        asset_id=d.get("asset_id"), playback_id=d.get("playback_id"), video_id=d.get("video_id"),
        video_title=d.get("video_title"), viewer_user_id=d.get("viewer_user_id"), mux_viewer_id=d.get("viewer_id"),
        session_id=d.get("view_session_id"), player_name=d.get("player_name"),
        player_software=d.get("player_software"), player_software_version=d.get("player_software_version"),
        player_mux_plugin_name=d.get("player_mux_plugin_name"), player_width=_int(f.get("player_width")),
        player_height=_int(f.get("player_height")),
        player_source_url=_text(f.get("video_source_url") or f.get("player_source_url")),
        viewer_application_name=d.get("browser"), viewer_application_version=d.get("browser_version"),
        viewer_os_family=d.get("operating_system"), viewer_os_version=d.get("operating_system_version"),
        viewer_device_category=d.get("viewer_device_category"),
        viewer_device_manufacturer=d.get("viewer_device_manufacturer"),
        viewer_device_name=d.get("viewer_device_name"), country_code=d.get("country"), region=d.get("region"),
        asn_name=d.get("asn"),
        time_to_first_frame=view.video_startup_time, player_startup_time=view.player_startup_time,
        exit_before_video_start=view.exit_before_video_start, playback_failure=view.playback_failure,
        video_startup_failure=view.video_startup_failure, player_error_code=view.error_code,
        player_error_message=_text(view.error_message), watch_time=view.watch_time,
        view_playing_time=str(view.playing_time), buffering_count=view.rebuffer_count,
        buffering_duration=view.rebuffer_duration, rebuffer_percentage=_text(view.rebuffer_percentage),
        buffering_rate=_text(view.rebuffer_frequency), view_seek_count=view.seek_count,
        view_seek_duration=_int(view.seek_latency * view.seek_count) if view.seek_latency is not None else None,
        weighted_average_bitrate=view.weighted_average_bitrate, kinoray_rendition_switches=view.rendition_switches,
        view_max_upscale_percentage=_text(view.max_upscale_percentage),
        view_max_downscale_percentage=_text(view.max_downscale_percentage),
        view_total_upscaling=_text(view.upscale_percentage), view_total_downscaling=_text(view.downscale_percentage),
        view_max_playhead_position=_text(view.max_playhead_position),
        playback_score=_text(view.playback_success_score), startup_score=_text(view.startup_time_score),
        rebuffering_score=_text(view.smoothness_score), video_quality_score=_text(view.video_quality_score),
        viewer_experience_score=_text(view.viewer_experience_score), events=events))


# --- dimensions -------------------------------------------------------------------------------------------------
#: The dimensions most breakdowns use (Mux lists its dimensions as basic and advanced).
BASIC_DIMENSIONS = ("asset_id", "playback_id", "video_title", "browser", "operating_system",
                    "viewer_device_category", "country", "player_name", "stream_type", "source_type")


class DimensionLists(BaseModel):
    basic: list[str]
    advanced: list[str]


class DimensionsEnvelope(BaseModel):
    data: DimensionLists
    total_row_count: int | None = None
    timeframe: list[int]


class DimensionValue(BaseModel):
    value: str
    total_count: int = Field(description="views with this value")


class DimensionValuesEnvelope(BaseModel):
    data: list[DimensionValue]
    total_row_count: int
    timeframe: list[int]


@queries.get("/data/v1/dimensions", response_model=DimensionsEnvelope)
def list_dimensions(token: CurrentToken) -> DimensionsEnvelope:
    """The dimensions views can be filtered (`filters[]`) and broken down (`group_by`) by."""
    now = datetime.now(UTC)
    return DimensionsEnvelope(
        data=DimensionLists(basic=list(BASIC_DIMENSIONS),
                            advanced=[name for name in analytics.DIMENSIONS if name not in BASIC_DIMENSIONS]),
        timeframe=[int((now - timedelta(hours=24)).timestamp()), int(now.timestamp())])


@queries.get("/data/v1/dimensions/{dimension_id}", response_model=DimensionValuesEnvelope)
def list_dimension_values(dimension_id: Dimension, token: CurrentToken, data: QueryDep,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 25,
                          page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> DimensionValuesEnvelope:
    """The values of a dimension among the views of the timeframe (matching the filters), most views first."""
    values = data.query.dimension_values(dimension_id.value)
    return DimensionValuesEnvelope(
        data=[DimensionValue(value=value, total_count=count) for value, count in values[(page - 1) * limit:page * limit]],
        total_row_count=len(values), timeframe=data.query.timeframe.epochs)


@queries.get("/data/v1/filters", response_model=DimensionsEnvelope)
def list_filters(token: CurrentToken) -> DimensionsEnvelope:
    """Mux's older name for `/data/v1/dimensions` (mux-python's `FiltersApi.list_filters`): the dimensions
    `filters[]` takes, basic and advanced."""
    return list_dimensions(token)


@queries.get("/data/v1/filters/{filter_id}", response_model=DimensionValuesEnvelope)
def list_filter_values(filter_id: Dimension, token: CurrentToken, data: QueryDep,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 25,
                       page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> DimensionValuesEnvelope:
    """The values of a filter (a dimension) among the views of the timeframe matching the filters, each with its
    views (`total_count`), most first (`FiltersApi.list_filter_values`)."""
    return list_dimension_values(filter_id, token, data, limit, page)


# --- real time (Mux's real-time API: /data/v1/realtime/...) -------------------------------------------------
RealtimeMetricId = Enum("RealtimeMetricId", {name: name for name in REALTIME_METRICS}, type=str)  # type: ignore[misc]
RealtimeDimension = Enum("RealtimeDimension", {n: n for n in REALTIME_DIMENSIONS}, type=str)  # type: ignore[misc]
_COUNTRY = RealtimeDimension("country")
_REALTIME_FILTER = rf"^!?({'|'.join(REALTIME_DIMENSIONS)}):.*$"
RealtimeFilters = Annotated[list[Annotated[str, Field(pattern=_REALTIME_FILTER, max_length=512)]],
                            Query(alias="filters[]", max_length=32)]


class RealtimeName(BaseModel):
    name: str
    display_name: str


class RealtimeNamesEnvelope(BaseModel):
    data: list[RealtimeName]
    total_row_count: int | None = None
    timeframe: list[int]


class RealtimeBreakdownValue(BaseModel):
    value: str | None
    negative_impact: int
    metric_value: float | None
    display_value: str | None
    concurrent_viewers: int
    starting_up_viewers: int


class RealtimeBreakdownEnvelope(BaseModel):
    data: list[RealtimeBreakdownValue]
    total_row_count: int
    timeframe: list[int]


class RealtimeDatapoint(BaseModel):
    value: float | None
    date: str
    concurrent_viewers: int


class RealtimeTimeseriesEnvelope(BaseModel):
    data: list[RealtimeDatapoint]
    total_row_count: int
    timeframe: list[int]


def _display(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").title()


def realtime_filter(filters: list[str]) -> Callable[[Mapping[str, Any]], bool]:
    """Which real-time presences ``filters[]`` keep, inside the caller's environment (its ``env_key`` filters,
    as the other Data queries apply them: :func:`kinoray.store.scoping.current_env_key_filters`)."""
    parsed = [(item.startswith("!"), *item.removeprefix("!").partition(":")[::2]) for item in filters]
    scope = current_env_key_filters()

    def keep(record: Mapping[str, Any]) -> bool:
        dimensions = record.get("dimensions", {})
        return (all((record.get("env_key") == key) != negated for key, negated in scope)
                and all((dimensions.get(name) == value) != negated for negated, name, value in parsed))

    return keep


def _display_value(metric: str, value: float | None) -> str | None:
    if value is None:
        return None
    if metric == "current-concurrent-viewers":
        return f"{value:.0f}"
    if metric == "current-average-bitrate":
        return f"{value / 1e6:.2f} Mbps"
    return f"{value * 100:.1f}%"


RealtimeOrder = Literal["negative_impact", "value", "views", "field"]


def ordered_realtime_rows(rows: list[dict[str, Any]], order_by: RealtimeOrder,
                          order_direction: Literal["asc", "desc"]) -> list[dict[str, Any]]:
    """Real-time breakdown rows ordered as asked: ``value`` is the metric, ``views`` the concurrent viewers,
    ``field`` the dimension value (rows without one last)."""
    field = {"negative_impact": "negative_impact", "value": "metric_value", "views": "concurrent_viewers",
             "field": "value"}[order_by]
    return sorted(rows, key=lambda row: (row[field] is None, row[field] if row[field] is not None else 0),
                  reverse=order_direction == "desc")


@queries.get("/data/v1/realtime/dimensions", response_model=RealtimeNamesEnvelope)
def list_realtime_dimensions(token: CurrentToken) -> RealtimeNamesEnvelope:
    """The dimensions real-time metrics break down and filter by."""
    now = int(datetime.now(UTC).timestamp())
    return RealtimeNamesEnvelope(data=[RealtimeName(name=n, display_name=_display(n)) for n in REALTIME_DIMENSIONS],
                                 total_row_count=len(REALTIME_DIMENSIONS), timeframe=[now, now])


@queries.get("/data/v1/realtime/metrics", response_model=RealtimeNamesEnvelope)
def list_realtime_metrics(token: CurrentToken) -> RealtimeNamesEnvelope:
    """The real-time metrics (Mux's ids)."""
    now = int(datetime.now(UTC).timestamp())
    return RealtimeNamesEnvelope(data=[RealtimeName(name=n, display_name=_display(n)) for n in REALTIME_METRICS],
                                 total_row_count=len(REALTIME_METRICS), timeframe=[now, now])


@queries.get("/data/v1/realtime/metrics/{realtime_metric_id}/breakdown", response_model=RealtimeBreakdownEnvelope)
def realtime_breakdown(realtime_metric_id: RealtimeMetricId, token: CurrentToken, platform: PlatformDep,
                       dimension: RealtimeDimension = _COUNTRY,
                       timestamp: Annotated[int | None, Query(ge=0, le=2**40)] = None,
                       filters: RealtimeFilters = [],  # noqa: B006
                       order_by: RealtimeOrder = "negative_impact",
                       order_direction: Literal["asc", "desc"] = "asc") -> RealtimeBreakdownEnvelope:
    """The metric now (or at ``timestamp``: the views seen in that minute) per value of ``dimension``, with the
    concurrent and starting viewers of each; ``order_by`` ``value`` is the metric, ``views`` the concurrent
    viewers, ``field`` the dimension value."""
    store = presences_of(platform)
    now = time.time()
    keep = realtime_filter(filters)
    if timestamp is None or timestamp >= now - store.window:
        at, records = int(now), [r for r in store.current(now) if keep(r)]
    else:
        bucket = timestamp // BUCKET_SECONDS * BUCKET_SECONDS
        at, records = timestamp, [r for r in store.history(bucket, bucket).get(bucket, []) if keep(r)]
    metric = realtime_metric_id.value
    rows = ordered_realtime_rows(realtime.breakdown(metric, records, dimension.value, at * 1000), order_by,
                                 order_direction)
    return RealtimeBreakdownEnvelope(
        data=[RealtimeBreakdownValue(**row, display_value=_display_value(metric, row["metric_value"])) for row in rows],
        total_row_count=len(rows), timeframe=[at, at])


@queries.get("/data/v1/realtime/metrics/{realtime_metric_id}/timeseries", response_model=RealtimeTimeseriesEnvelope)
def realtime_timeseries(realtime_metric_id: RealtimeMetricId, token: CurrentToken, platform: PlatformDep,
                        filters: RealtimeFilters = [],  # noqa: B006
                        timestamp: Annotated[int | None, Query(ge=0, le=2**40)] = None) -> RealtimeTimeseriesEnvelope:
    """The metric per minute from ``timestamp`` (default 30 minutes ago, at most 24 hours ago) to now."""
    now = time.time()
    start = max(float(timestamp) if timestamp is not None else now - 1800, now - realtime.HISTORY_SECONDS)
    points = realtime.timeseries(realtime_metric_id.value, presences_of(platform), start, now,
                                 realtime_filter(filters))
    return RealtimeTimeseriesEnvelope(data=[RealtimeDatapoint(**point) for point in points],
                                      total_row_count=len(points), timeframe=[int(start), int(now)])


# --- privacy ------------------------------------------------------------------------------------------------
class ViewerErasure(BaseModel):
    viewer_user_id: str
    views_deleted: int
    events_deleted: int
    files_rewritten: int


class ViewerErasureEnvelope(BaseModel):
    data: ViewerErasure


@queries.delete("/data/v1/viewers/{viewer_user_id}", response_model=ViewerErasureEnvelope)
def erase_viewer_data(viewer_user_id: Annotated[str, Path(min_length=1, max_length=4096)], token: CurrentToken,
                      platform: PlatformDep) -> ViewerErasureEnvelope:
    """kinoray's own (Mux has no such call): delete everything stored of one viewer (`viewer_user_id`) —
    every event of each of their views in every partition of the event log, and the views' state, caches and
    real-time presence. Needs `data` full permission. Idempotent: a second call deletes nothing."""
    erased = erase_viewer(platform, viewer_user_id)
    return ViewerErasureEnvelope(data=ViewerErasure(
        viewer_user_id=viewer_user_id, views_deleted=len(erased.view_ids), events_deleted=erased.rows_removed,
        files_rewritten=erased.files_rewritten))
