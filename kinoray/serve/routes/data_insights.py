"""Mux Data's analysis calls, in Mux's paths and shapes (management API, a token with ``data`` permission), over
:mod:`kinoray.analytics` (insights, compare, errors, exports, forecast):

- ``GET /data/v1/metrics/{METRIC_ID}/insights``: the dimension values that most hurt a metric, with intervals;
- ``GET /data/v1/metrics/comparison``: every metric side by side (for ``dimension``/``value`` when given);
- ``GET /data/v1/metrics/{METRIC_ID}/comparison``: kinoray's A/B test of a metric across a dimension's values;
- ``GET /data/v1/errors``: fatal player errors grouped by code and message;
- ``GET /data/v1/exports/views`` (and the older ``/data/v1/exports``): the caller's environment's daily view
  exports with signed links; ``POST /data/v1/exports/views?date=`` (kinoray's) writes its export of a day now; the
  link itself, ``GET /data/v1/exports/views/{environment_id}/{date}/{file}?expires=&signature=``, needs no token
  (:data:`downloads`);
- ``GET /data/v1/forecast/views`` (kinoray's): views and concurrent viewers per hour ahead, with the backtest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from kinoray.analytics import compare, exports, forecast
from kinoray.analytics.errors import error_groups
from kinoray.analytics.insights import insights
from kinoray.analytics.query import METRICS
from kinoray.control.analytics import event_store, export_environment_day
from kinoray.control.platform import Platform
from kinoray.errors import InvalidParametersError
from kinoray.serve.deps import CurrentToken, PlatformDep
from kinoray.serve.routes.data import DataMeta, Dimension, Measurement, MetricId, QueryDep
from kinoray.serve.schemas import AUTHENTICATED, error_responses

__all__ = ["downloads", "router"]

router = APIRouter(tags=["data"], responses=error_responses(*AUTHENTICATED))
#: The export download link: its signature is the credential (no token).
downloads = APIRouter(tags=["data"])

_EXPERIMENT = Dimension("experiment_name")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _hour(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- insights ---------------------------------------------------------------------------------------------------
class Insight(BaseModel):
    """Mux's ``Insight`` and kinoray's interval (``kinoray_*``)."""

    filter_column: str
    filter_value: str
    metric: float
    total_views: int
    total_watch_time: int
    total_playing_time: int
    negative_impact_score: float = Field(description="how much the overall metric would improve if these views "
                                                     "did as well as the rest (metric units; > 0 hurts)")
    kinoray_negative_impact_interval: list[float] = Field(description="95 % interval of negative_impact_score")
    kinoray_rest_metric: float = Field(description="the metric over the views without this value")
    kinoray_share: float = Field(description="this value's share of the metric's weight (views or watch time)")


class InsightsEnvelope(BaseModel):
    data: list[Insight]
    total_row_count: int
    timeframe: list[int]
    meta: DataMeta


@router.get("/data/v1/metrics/{metric_id}/insights", response_model=InsightsEnvelope)
def list_insights(metric_id: MetricId, token: CurrentToken, data: QueryDep, measurement: Measurement | None = None,
                  order_direction: Literal["asc", "desc"] = "desc",
                  min_views: Annotated[int, Query(ge=2, le=1_000_000)] = 10,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 25,
                  page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> InsightsEnvelope:
    """The dimension values that most hurt the metric (``desc``: worst first; ``asc``: best first), each with
    the metric over its views, its ``negative_impact_score`` and that score's 95 % interval (kinoray's extra
    fields). Values held by fewer than ``min_views`` views are left out (kinoray's parameter)."""
    found = insights(data.query.views, metric_id.value, measurement, min_views=min_views)
    if order_direction == "asc":
        found.reverse()
    rows = [Insight(filter_column=item.filter_column, filter_value=item.filter_value, metric=item.metric,
                    total_views=item.total_views, total_watch_time=item.total_watch_time,
                    total_playing_time=item.total_playing_time, negative_impact_score=item.negative_impact_score,
                    kinoray_negative_impact_interval=list(item.interval), kinoray_rest_metric=item.rest_metric,
                    kinoray_share=item.share) for item in found[(page - 1) * limit:page * limit]]
    return InsightsEnvelope(data=rows, total_row_count=len(found), timeframe=data.query.timeframe.epochs,
                            meta=DataMeta(aggregation=measurement or METRICS[metric_id.value].measurement))


# --- comparison -------------------------------------------------------------------------------------------------
class ComparisonMetric(BaseModel):
    metric: str
    name: str
    type: str
    value: float | None = None  # absent when no view has the metric (the answer leaves out nulls)
    measurement: str


class ComparisonRow(BaseModel):
    """Mux's ``Score`` row: the ``totals`` row has the counts, a score row its value and ``items``."""

    name: str
    type: str | None = None
    metric: str | None = None
    value: float | None = None
    items: list[ComparisonMetric] | None = None
    view_count: int | None = None
    started_views: int | None = None
    ended_views: int | None = None
    unique_viewers: int | None = None
    watch_time: int | None = None
    total_playing_time: int | None = None


class ComparisonEnvelope(BaseModel):
    data: list[ComparisonRow]
    total_row_count: int | None = None
    timeframe: list[int]


@router.get("/data/v1/metrics/comparison", response_model=ComparisonEnvelope, response_model_exclude_none=True)
def list_all_metric_values(token: CurrentToken, data: QueryDep, dimension: Dimension | None = None,
                           value: Annotated[str | None, Query(max_length=512)] = None) -> ComparisonEnvelope:
    """Every metric side by side: a ``totals`` row, then each score with the metrics that feed it, over the
    views in the timeframe matching the filters (and ``dimension`` = ``value`` when both are given)."""
    if (dimension is None) != (value is None):
        raise InvalidParametersError("dimension and value: give both or neither")
    views = data.query.views
    if dimension is not None:
        views = [view for view in views if str(view.dimensions.get(dimension.value)) == value]
    totals, scores = compare.all_metrics(views)
    rows = [ComparisonRow(name="totals", view_count=totals.view_count, started_views=totals.started_views,
                          ended_views=totals.ended_views, unique_viewers=totals.unique_viewers,
                          watch_time=totals.watch_time, total_playing_time=totals.total_playing_time)]
    rows += [ComparisonRow(name=score.name, type="score", metric=score.metric, value=score.value,
                           items=[ComparisonMetric(metric=item.metric, name=item.name, type=item.type,
                                                   value=item.value, measurement=item.measurement)
                                  for item in score.items]) for score in scores]
    return ComparisonEnvelope(data=rows, total_row_count=len(rows), timeframe=data.query.timeframe.epochs)


class ExperimentArm(BaseModel):
    value: str = Field(description="the dimension value (the arm)")
    views: int
    metric: float | None
    baseline: bool
    test: str | None = Field(default=None, description="two_proportion_z, welch_t, delta_ratio_z, mann_whitney_u "
                                                       "or none")
    statistic: float | None = None
    p_value: float | None = Field(default=None, description="two-sided, against the baseline")
    p_value_adjusted: float | None = Field(default=None, description="Holm–Bonferroni over the arms compared")
    significant: bool
    difference: float | None = Field(default=None, description="this arm's metric minus the baseline's")
    difference_interval: list[float] | None = Field(default=None, description="95 % interval of the difference")
    effect_size: float | None = None
    effect_size_kind: str | None = Field(default=None, description="cohens_h, cohens_d, standardized_difference "
                                                                   "or rank_biserial")


class ExperimentValues(BaseModel):
    metric: str
    measurement: str
    dimension: str
    baseline: str
    alpha: float
    arms: list[ExperimentArm]


class ExperimentEnvelope(BaseModel):
    data: ExperimentValues
    total_row_count: int
    timeframe: list[int]


@router.get("/data/v1/metrics/{metric_id}/comparison", response_model=ExperimentEnvelope,
            responses=error_responses(404))
def metric_experiment(metric_id: MetricId, token: CurrentToken, data: QueryDep, dimension: Dimension = _EXPERIMENT,
                      baseline: Annotated[str | None, Query(max_length=512)] = None,
                      measurement: Measurement | None = None,
                      alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05) -> ExperimentEnvelope:
    """kinoray's A/B test: the metric for each value of ``dimension`` (``experiment_name``, ``sub_property_id``,
    or any dimension), each tested against ``baseline`` (default: the value with the most views)."""
    result = compare.experiment(data.query.views, metric_id.value, dimension.value, measurement, baseline, alpha)
    arms = []
    for arm in result.arms:
        test = arm.test
        arms.append(ExperimentArm(
            value=arm.value, views=arm.views, metric=arm.metric, baseline=arm.baseline,
            test=None if test is None else test.method, statistic=None if test is None else test.statistic,
            p_value=None if test is None else test.p_value, p_value_adjusted=arm.p_value_adjusted,
            significant=arm.significant, difference=None if test is None else test.difference,
            difference_interval=None if test is None or test.interval is None else list(test.interval),
            effect_size=None if test is None else test.effect_size,
            effect_size_kind=None if test is None else test.effect_size_kind))
    return ExperimentEnvelope(
        data=ExperimentValues(metric=result.metric, measurement=result.measurement, dimension=result.dimension,
                              baseline=result.baseline, alpha=result.alpha, arms=arms),
        total_row_count=len(arms), timeframe=data.query.timeframe.epochs)


# --- errors -----------------------------------------------------------------------------------------------------
class PlayerError(BaseModel):
    """Mux's ``Error``."""

    id: int
    code: int | None = None
    player_error_code: str | None = None
    message: str | None = None
    description: str | None = None
    notes: str | None = None
    count: int = Field(description="views with this error")
    percentage: float = Field(description="their share of the views (0–1)")
    last_seen: str | None = None


class ErrorsEnvelope(BaseModel):
    data: list[PlayerError]
    total_row_count: int
    timeframe: list[int]


@router.get("/data/v1/errors", response_model=ErrorsEnvelope)
def list_errors(token: CurrentToken, data: QueryDep) -> ErrorsEnvelope:
    """The fatal player errors of the views in the timeframe matching the filters, grouped by code and message,
    most views first; ``id`` is stable and filters ``/data/v1/video-views?error_id=``."""
    groups = error_groups(data.query.views)
    return ErrorsEnvelope(data=[PlayerError(id=g.id, code=g.code, player_error_code=g.player_error_code,
                                            message=g.message, count=g.count, percentage=g.percentage,
                                            last_seen=None if g.last_seen is None else _iso(g.last_seen))
                                for g in groups], total_row_count=len(groups), timeframe=data.query.timeframe.epochs)


# --- exports ----------------------------------------------------------------------------------------------------
class ExportFile(BaseModel):
    type: str = Field(description="parquet or csv")
    path: str = Field(description="signed download URL, valid until expires_at")
    version: int
    kinoray_expires_at: int = Field(description="when the URL stops working (unix seconds)")


class ExportDate(BaseModel):
    export_date: date
    files: list[ExportFile]


class ExportsEnvelope(BaseModel):
    data: list[ExportDate]
    total_row_count: int
    timeframe: list[int]


class ExportUrlsEnvelope(BaseModel):
    data: list[str]
    total_row_count: int
    timeframe: list[int]


def _export_dates(platform: Platform, days: list[tuple[date, list[exports.ExportFile]]]) -> list[ExportDate]:
    expires = int(time.time()) + platform.settings.analytics.export_link_seconds
    base, secret = platform.settings.public_url, platform.settings.secret_key
    out = []
    for day, files in days:
        out.append(ExportDate(export_date=day, files=[ExportFile(
            type=f.type, version=f.version, kinoray_expires_at=expires,
            path=f"{base}/data/v1/exports/views/{f.environment_id}/{day.isoformat()}/"
                 f"{quote(f.key.rsplit('/', 1)[-1])}?expires={expires}&signature="
                 f"{exports.sign_link(secret, f.key, expires)}") for f in files]))
    return out


def _span(days: list[tuple[date, list[exports.ExportFile]]]) -> list[int]:
    if not days:
        now = int(time.time())
        return [now, now]
    return [exports.day_timeframe(days[-1][0]).epochs[0], exports.day_timeframe(days[0][0]).epochs[1]]


@router.get("/data/v1/exports/views", response_model=ExportsEnvelope)
def list_exports_views(token: CurrentToken, platform: PlatformDep) -> ExportsEnvelope:
    """The days with a view export of the caller's environment, newest first, each with its files (Parquet and
    CSV) as signed download URLs valid for ``analytics.export_link_seconds``."""
    days = exports.list_exports(event_store(platform), token.environment_id)
    return ExportsEnvelope(data=_export_dates(platform, days), total_row_count=len(days), timeframe=_span(days))


@router.get("/data/v1/exports", response_model=ExportUrlsEnvelope)
def list_exports(token: CurrentToken, platform: PlatformDep) -> ExportUrlsEnvelope:
    """Mux's older call: the same files as ``/data/v1/exports/views``, as a flat list of signed URLs."""
    days = exports.list_exports(event_store(platform), token.environment_id)
    urls = [f.path for item in _export_dates(platform, days) for f in item.files]
    return ExportUrlsEnvelope(data=urls, total_row_count=len(urls), timeframe=_span(days))


class ExportWritten(BaseModel):
    export_date: date
    views: int
    files: list[ExportFile]


class ExportWrittenEnvelope(BaseModel):
    data: ExportWritten


@router.post("/data/v1/exports/views", response_model=ExportWrittenEnvelope, status_code=201)
def create_export(token: CurrentToken, platform: PlatformDep,
                  export_date: Annotated[date, Query(alias="date")]) -> ExportWrittenEnvelope:
    """kinoray's: write (or rewrite) the caller's environment's view export of one UTC day now — today gives what
    is there so far, and the runner rewrites it once the day is final. Needs ``data`` full permission."""
    today = datetime.now(UTC).date()
    if export_date > today or export_date < today - timedelta(days=platform.settings.analytics.retention_days):
        raise InvalidParametersError("date: a day within the retention period, not in the future")
    views = export_environment_day(platform, export_date, token.environment_id)
    files = next((files for day, files in exports.list_exports(event_store(platform), token.environment_id)
                  if day == export_date), [])
    written = _export_dates(platform, [(export_date, files)])[0]
    return ExportWrittenEnvelope(data=ExportWritten(export_date=export_date, views=views, files=written.files))


_MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv; charset=utf-8"}


@downloads.get("/data/v1/exports/views/{environment_id}/{day}/{name}", responses={
    200: {"content": {_MEDIA_TYPES["parquet"]: {}, _MEDIA_TYPES["csv"]: {}}, "description": "the export file"},
    **error_responses(403, 404)}, response_class=StreamingResponse)
def download_export(platform: PlatformDep,
                    environment_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,64}$")],
                    day: Annotated[str, Path(pattern=r"^\d{4}-\d{2}-\d{2}$")],
                    name: Annotated[str, Path(max_length=128)],
                    expires: Annotated[int, Query(ge=0, le=2**40)],
                    signature: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")]) -> StreamingResponse:
    """A view export file by its signed link (from ``/data/v1/exports/views``); no token. A link whose
    signature does not match (another environment's file, another day's), or that has expired, gets
    ``403 invalid_download_link``; a valid link to a file deleted since, ``404 not_found``."""
    store = event_store(platform)
    key = exports.verify_link(platform.settings.secret_key, environment_id, day, name, expires, signature, store)

    def chunks() -> Iterator[bytes]:
        with store.open(key) as handle:
            while chunk := handle.read(1 << 20):
                yield chunk

    kind = name.rsplit(".", 1)[-1]
    return StreamingResponse(chunks(), media_type=_MEDIA_TYPES[kind], headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(store.size(key)),
        "Cache-Control": "private, no-store"})


# --- forecast ---------------------------------------------------------------------------------------------------
class ForecastPoint(BaseModel):
    time: str = Field(description="the hour (UTC)")
    views: float
    views_low: float
    views_high: float
    concurrent_viewers: float = Field(description="average concurrent viewers in the hour")
    concurrent_viewers_low: float
    concurrent_viewers_high: float


class ObservedPoint(BaseModel):
    time: str
    views: float
    concurrent_viewers: float


class ForecastModel(BaseModel):
    series: Literal["views", "concurrent_viewers"]
    model: str = Field(description="holt_winters_weekly_multiplicative, holt_winters_weekly_additive (daily and "
                                   "day-of-week seasons, from 2 weeks of history), holt_winters_multiplicative, "
                                   "holt_winters_additive, seasonal_naive (under 2 days) or mean (under 1)")
    alpha: float | None
    beta: float | None
    gamma: float | None
    delta: float | None = Field(default=None, description="the day-of-week season's smoothing (weekly models)")
    season_hours: int
    weekly: bool = Field(default=False, description="whether the model has a day-of-week season")
    residual_sigma: float
    backtest_holdout_hours: int | None = None
    backtest_mape: float | None = Field(default=None, description="MAPE of the model on the last day held out")
    backtest_seasonal_naive_mape: float | None = Field(default=None, description="seasonal naive's, same day")


class ForecastValues(BaseModel):
    forecast: list[ForecastPoint]
    observed: list[ObservedPoint]
    models: list[ForecastModel]


class ForecastEnvelope(BaseModel):
    data: ForecastValues
    total_row_count: int
    timeframe: list[int]


@router.get("/data/v1/forecast/views", response_model=ForecastEnvelope)
def forecast_views(token: CurrentToken, platform: PlatformDep,
                   horizon: Annotated[int, Query(ge=1, le=24 * 14)] = 24,
                   history_days: Annotated[int, Query(ge=1, le=90)] = 28) -> ForecastEnvelope:
    """kinoray's capacity-planning forecast: views started and average concurrent viewers per hour for the
    ``horizon`` hours from the current one, from the last ``history_days`` days (Holt–Winters with a daily
    season, and a day-of-week one from two weeks of history), with a 95 % band, the hours observed and each
    model's backtest on the last day."""
    result = forecast.forecast(event_store(platform), horizon, history_days,
                               window=platform.settings.analytics.realtime_window_seconds)
    points = [ForecastPoint(time=_hour(result.start + timedelta(hours=h)), views=float(result.views.forecast[h]),
                            views_low=float(result.views.low[h]), views_high=float(result.views.high[h]),
                            concurrent_viewers=float(result.ccv.forecast[h]),
                            concurrent_viewers_low=float(result.ccv.low[h]),
                            concurrent_viewers_high=float(result.ccv.high[h])) for h in range(horizon)]
    observed = [ObservedPoint(time=_hour(result.observed_start + timedelta(hours=h)),
                              views=float(result.observed_views[h]), concurrent_viewers=float(result.observed_ccv[h]))
                for h in range(result.observed_views.size)]
    models = []
    runs: tuple[tuple[Literal["views", "concurrent_viewers"], forecast.Fit, forecast.Backtest | None], ...] = (
        ("views", result.views, result.views_backtest), ("concurrent_viewers", result.ccv, result.ccv_backtest))
    for series, fit, test in runs:
        models.append(ForecastModel(
            series=series, model=fit.model, alpha=fit.alpha, beta=fit.beta, gamma=fit.gamma, delta=fit.delta,
            season_hours=forecast.SEASON, weekly=forecast.WEEK in fit.season_hours, residual_sigma=fit.sigma,
            backtest_holdout_hours=None if test is None else test.holdout_hours,
            backtest_mape=None if test is None else test.mape,
            backtest_seasonal_naive_mape=None if test is None else test.seasonal_naive_mape))
    start = int(result.start.timestamp())
    return ForecastEnvelope(data=ForecastValues(forecast=points, observed=observed, models=models),
                            total_row_count=len(points), timeframe=[start, start + horizon * 3600])
