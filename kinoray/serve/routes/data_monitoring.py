"""Mux Data's monitoring API (``/data/v1/monitoring/...``, mux-python's ``MonitoringApi``) and the real-time
histogram (``/data/v1/realtime/metrics/{id}/histogram-timeseries``, ``RealTimeApi``), over the presences of
:mod:`kinoray.analytics.realtime`; management API, a token with ``data`` permission.

Mux renamed its real-time API "monitoring": the dimensions, metrics, breakdown and timeseries answer here as under
``/data/v1/realtime`` (the same handlers), and monitoring adds ``breakdown-timeseries`` (a breakdown per minute
over at most 10 minutes of the last 24 hours) and ``histogram-timeseries`` (video startup times per minute).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from kinoray import analytics
from kinoray.analytics import realtime
from kinoray.analytics.realtime import HISTOGRAM_METRICS, STARTUP_BUCKETS_MS
from kinoray.control.analytics import presences_of
from kinoray.errors import InvalidParametersError
from kinoray.serve.deps import CurrentToken, PlatformDep
from kinoray.serve.routes import data
from kinoray.serve.routes.data import (
    RealtimeBreakdownEnvelope,
    RealtimeDimension,
    RealtimeFilters,
    RealtimeMetricId,
    RealtimeNamesEnvelope,
    RealtimeOrder,
    RealtimeTimeseriesEnvelope,
)
from kinoray.serve.schemas import AUTHENTICATED, error_responses

__all__ = ["HistogramEnvelope", "MAX_BREAKDOWN_SPAN_SECONDS", "router"]

router = APIRouter(tags=["data"], responses=error_responses(*AUTHENTICATED))
#: The longest timeframe ``breakdown-timeseries`` answers (Mux's limit).
MAX_BREAKDOWN_SPAN_SECONDS = 600
_COUNTRY = RealtimeDimension("country")
_TIMEFRAME = r"^([0-9]{1,12}|[0-9]{1,6}:(minutes?|hours?|days?))$"

# The real-time calls under Mux's newer names (mux-python's MonitoringApi).
router.add_api_route("/data/v1/monitoring/dimensions", data.list_realtime_dimensions, methods=["GET"],
                     response_model=RealtimeNamesEnvelope, name="list_monitoring_dimensions",
                     summary="The dimensions monitoring metrics break down and filter by")
router.add_api_route("/data/v1/monitoring/metrics", data.list_realtime_metrics, methods=["GET"],
                     response_model=RealtimeNamesEnvelope, name="list_monitoring_metrics",
                     summary="The monitoring metrics (Mux's ids)")
router.add_api_route("/data/v1/monitoring/metrics/{realtime_metric_id}/breakdown", data.realtime_breakdown,
                     methods=["GET"], response_model=RealtimeBreakdownEnvelope, name="monitoring_breakdown",
                     summary="A monitoring metric now (or at a past minute) per dimension value")
router.add_api_route("/data/v1/monitoring/metrics/{realtime_metric_id}/timeseries", data.realtime_timeseries,
                     methods=["GET"], response_model=RealtimeTimeseriesEnvelope, name="monitoring_timeseries",
                     summary="A monitoring metric per minute")


class BreakdownDatapoint(BaseModel):
    value: str | None
    metric_value: float | None
    concurrent_viewers: int
    starting_up_viewers: int


class BreakdownTimeseriesValues(BaseModel):
    date: str
    values: list[BreakdownDatapoint]


class BreakdownTimeseriesEnvelope(BaseModel):
    data: list[BreakdownTimeseriesValues]
    total_row_count: int
    timeframe: list[int]


@router.get("/data/v1/monitoring/metrics/{realtime_metric_id}/breakdown-timeseries",
            response_model=BreakdownTimeseriesEnvelope)
def monitoring_breakdown_timeseries(
        realtime_metric_id: RealtimeMetricId, token: CurrentToken, platform: PlatformDep,
        dimension: RealtimeDimension = _COUNTRY,
        timeframe: Annotated[list[Annotated[str, Field(pattern=_TIMEFRAME)]],
                             Query(alias="timeframe[]", max_length=2)] = [],  # noqa: B006
        filters: RealtimeFilters = [],  # noqa: B006
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
        order_by: RealtimeOrder = "value",
        order_direction: Literal["asc", "desc"] = "desc") -> BreakdownTimeseriesEnvelope:
    """The metric per value of ``dimension`` in each minute of ``timeframe[]`` (default the last 60 seconds; at
    most 10 minutes, within the last 24 hours): each minute's ``limit`` values, ordered by ``order_by``."""
    now = time.time()
    if timeframe:
        frame = analytics.parse_timeframe(timeframe)
        start, end = frame.start.timestamp(), min(frame.end.timestamp(), now)
    else:
        start, end = now - 60, now
    if end - start > MAX_BREAKDOWN_SPAN_SECONDS:
        raise InvalidParametersError("timeframe[]: at most 10 minutes for breakdown-timeseries")
    if start < now - realtime.HISTORY_SECONDS or end < start:
        raise InvalidParametersError("timeframe[]: within the last 24 hours")
    points = realtime.breakdown_timeseries(realtime_metric_id.value, presences_of(platform), start, end,
                                           dimension.value, data.realtime_filter(filters))
    return BreakdownTimeseriesEnvelope(
        data=[BreakdownTimeseriesValues(date=point["date"], values=[
            BreakdownDatapoint(**{k: row[k] for k in ("value", "metric_value", "concurrent_viewers",
                                                      "starting_up_viewers")})
            for row in data.ordered_realtime_rows(point["values"], order_by, order_direction)[:limit]])
            for point in points],
        total_row_count=len(points), timeframe=[int(start), int(end)])


# --- histograms ---------------------------------------------------------------------------------------------
class HistogramBucket(BaseModel):
    start: int
    end: int | None = Field(description="exclusive; null for the last bucket")


class HistogramMeta(BaseModel):
    bucket_unit: str
    buckets: list[HistogramBucket]


class HistogramBucketValues(BaseModel):
    percentage: float = Field(description="0–100 of the minute's views")
    count: int


class HistogramDatapoint(BaseModel):
    timestamp: str
    sum: int = Field(description="views that started in the minute")
    p95: float | None
    median: float | None
    average: float | None
    max_percentage: float
    bucket_values: list[HistogramBucketValues]


class HistogramEnvelope(BaseModel):
    meta: HistogramMeta
    data: list[HistogramDatapoint]
    total_row_count: int
    timeframe: list[int]


HistogramMetricId = Literal[HISTOGRAM_METRICS]  # type: ignore[valid-type]


def histogram_timeseries(histogram_metric_id: HistogramMetricId, token: CurrentToken, platform: PlatformDep,
                         filters: RealtimeFilters = [],  # noqa: B006
                         ) -> HistogramEnvelope:
    """The video startup times (ms, play → first frame) of the views that started in each minute of the last
    30 minutes, in fixed buckets (`meta.buckets`), with their count, average, median and 95th percentile."""
    now = time.time()
    start = now - 1800
    points = realtime.histogram_timeseries(presences_of(platform), start, now, data.realtime_filter(filters))
    return HistogramEnvelope(
        meta=HistogramMeta(bucket_unit="milliseconds",
                           buckets=[HistogramBucket(start=low, end=high) for low, high in STARTUP_BUCKETS_MS]),
        data=[HistogramDatapoint(**point) for point in points], total_row_count=len(points),
        timeframe=[int(start), int(now)])


for _path in ("/data/v1/monitoring/metrics/{histogram_metric_id}/histogram-timeseries",
              "/data/v1/realtime/metrics/{histogram_metric_id}/histogram-timeseries"):
    router.add_api_route(_path, histogram_timeseries, methods=["GET"], response_model=HistogramEnvelope,
                         name=f"{_path.split('/')[3]}_histogram_timeseries",
                         summary="Video startup times per minute, as a histogram")
