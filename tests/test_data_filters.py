"""Mux Data API pieces beside the metrics: ``metric_filters[]`` (on hand-built views, and through mux-python on
every call that takes it), ``/data/v1/filters``, the monitoring API and the real-time histogram (mux-python's
``FiltersApi``, ``MonitoringApi``, ``RealTimeApi``), related incidents and their affected views
(``IncidentsApi``)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import mux_python as mux
import pyarrow as pa
import pytest
import requests

from kinoray.analytics import EventWriter, parse_filters, parse_timeframe
from kinoray.analytics.query import METRICS, UNFILTERABLE_METRICS, MetricFilter, Query, parse_metric_filters
from kinoray.analytics.realtime import (
    STARTUP_BUCKETS_MS,
    MemoryPresences,
    breakdown_timeseries,
    histogram_timeseries,
    presence_step,
)
from kinoray.control.analytics import flush_collector
from kinoray.errors import InvalidParametersError
from kinoray.store.objects import ObjectStore
from tests.test_analytics import CHROME, IPHONE, T0, Player, collect
from tests.test_data_api import sdk  # noqa: F401 - fixture (mux-python on this module's edge)


# --- metric_filters[] on hand-built views -------------------------------------------------------------------
def _views_with_known_metrics(store: ObjectStore, now: datetime) -> None:
    """Six views with video startup 200, 400, … 1200 ms (two of them rebuffer 1 s in 10 s), one that fails before
    its first frame (no startup time), one that never starts (an exit)."""
    writer = EventWriter(store)
    for index in range(6):
        player = Player(view_id=f"mf-{index}", start=T0 + index * 100_000, vid="pb1")
        player.at(0, "play").at(200 * (index + 1), "playing", pphti=0)
        if index in (1, 4):
            player.at(4000, "rebufferstart").at(1000, "rebufferend").at(5000, "viewend")
        else:
            player.at(10_000, "viewend")
        writer.add(collect(player.batch(), user_agent=IPHONE if index % 2 else CHROME,
                           received_at=now - timedelta(minutes=5)))
    failed = Player(view_id="mf-failed").at(0, "play").at(1000, "error", percd=500, perme="boom")
    exited = Player(view_id="mf-exit").at(0, "play").at(3000, "viewend")
    for player in (failed, exited):
        writer.add(collect(player.batch(), received_at=now - timedelta(minutes=5)))
    writer.close()


def _ids(query: Query) -> set[str]:
    return {view.id for view in query.views}


def test_metric_filters_keep_the_views_whose_own_value_compares_true(tmp_path) -> None:
    store, now = ObjectStore(str(tmp_path)), datetime.now(UTC)
    _views_with_known_metrics(store, now)
    frame = parse_timeframe(["1:hours"], now=now)

    def query(*clauses: str, filters: tuple[str, ...] = ()) -> Query:
        return Query(store, frame, parse_filters(list(filters)), now=now, metric_filters=parse_metric_filters(clauses))

    assert len(query().views) == 8
    assert _ids(query("video_startup_time>=800")) == {"mf-3", "mf-4", "mf-5"}  # 800, 1000, 1200
    assert _ids(query("video_startup_time>800")) == {"mf-4", "mf-5"}
    assert _ids(query("video_startup_time<400")) == {"mf-0"}  # the failed and exited views have no value
    assert _ids(query("video_startup_time<=400")) == {"mf-0", "mf-1"}
    assert _ids(query("video_startup_time=600")) == {"mf-2"}
    assert _ids(query("video_startup_time!=600")) == {"mf-0", "mf-1", "mf-3", "mf-4", "mf-5"}
    # several clauses are ANDed; with filters[] too
    assert _ids(query("video_startup_time>=400", "rebuffer_count>=1")) == {"mf-1", "mf-4"}
    assert _ids(query("rebuffer_count>=1", filters=("operating_system:iOS",))) == {"mf-1"}
    assert _ids(query("rebuffer_count>=1", filters=("!operating_system:iOS",))) == {"mf-4"}
    # a per-view ratio in its own unit (fraction of watch time): 1 s of 10.x s
    assert _ids(query("rebuffer_percentage>0.05")) == {"mf-1", "mf-4"}
    assert _ids(query("playback_failure_percentage>0")) == {"mf-failed"}
    # what a metric says over the kept views
    assert query("video_startup_time>=800").overall("video_startup_time")["value"] == pytest.approx(1000)
    assert query("video_startup_time>=800").overall("views")["value"] == 3
    rows = {row["field"]: row["views"] for row in query("video_startup_time>=800").breakdown("views", "browser")}
    assert rows == {"Chrome": 1, "Mobile Safari": 2}
    assert query("video_startup_time>=100000").views == []


@pytest.mark.parametrize("clause", ["views>1", "unique_viewers>1", "exits_before_video_start>0",
                                    "video_startup_failure_percentage>0", "view_dropped_percentage>0",
                                    "no_such_metric>1", "video_startup_time>>1", "video_startup_time=>1",
                                    "video_startup_time>fast", "video_startup_time", "video_startup_time>nan",
                                    "video_startup_time>inf"])
def test_a_bad_metric_filter_is_invalid_parameters(clause: str) -> None:
    with pytest.raises(InvalidParametersError):
        parse_metric_filters([clause])


def test_a_metric_filter_as_sql_keeps_what_it_keeps_on_views(tmp_path) -> None:
    """The same clause over a table with one column per metric (a materialized view table): DuckDB keeps the
    views :meth:`MetricFilter.matches` keeps, NULL included."""
    store, now = ObjectStore(str(tmp_path)), datetime.now(UTC)
    _views_with_known_metrics(store, now)
    views = Query(store, parse_timeframe(["1:hours"], now=now), now=now).views
    filterable = sorted(set(METRICS) - UNFILTERABLE_METRICS)
    table = pa.table({"view_id": [view.id for view in views],
                      **{name: pa.array([METRICS[name].value(view) for view in views], pa.float64())
                         for name in filterable}})
    clauses = [MetricFilter("video_startup_time", op, 600.0) for op in (">=", "<=", ">", "<", "=", "!=")]
    clauses += [MetricFilter("rebuffer_percentage", ">", 0.0), MetricFilter("weighted_average_bitrate", "<", 1.0)]
    with duckdb.connect() as connection:
        connection.register("views", table)
        for clause in clauses:
            where, params = clause.sql()
            found = {row[0] for row in connection.execute(f"SELECT view_id FROM views WHERE {where}", params).fetchall()}
            assert found == {view.id for view in views if clause.matches(view)}, clause


def test_metric_filters_answer_the_same_before_and_after_the_views_are_materialized(tmp_path) -> None:
    """Built from events (views filtered in Python) and read from the Parquet rollup (DuckDB over view rows, the
    clause as SQL): the same views and numbers."""
    from kinoray.analytics.query import VIEWS
    from kinoray.analytics.rollup import roll_up

    store, now = ObjectStore(str(tmp_path)), datetime.now(UTC)
    _views_with_known_metrics(store, now)
    later = now + timedelta(hours=2)
    frame = parse_timeframe(["3:hours"], now=later)
    clauses = [["video_startup_time>=800"], ["rebuffer_percentage>0.05"], ["video_startup_time!=600"],
               ["playback_failure_percentage>0"], ["aggregate_startup_time<500", "rebuffer_count=0"]]

    def answers() -> list[Any]:
        found = []
        for clause in clauses:
            query = Query(store, frame, now=later, metric_filters=parse_metric_filters(clause))
            found.append((sorted(view.id for view in query.views), query.overall("video_startup_time"),
                          query.breakdown("views", "browser"), query.dimension_values("browser")))
        return found

    built = answers()
    assert [ids for ids, *_ in built][:2] == [["mf-3", "mf-4", "mf-5"], ["mf-1", "mf-4"]]
    assert roll_up(store, later).views == 8
    VIEWS.clear()
    assert answers() == built


# --- real time: startup histogram and breakdown per minute --------------------------------------------------
def test_startup_histogram_counts_each_view_once_in_the_minute_it_started() -> None:
    now = time.time()
    minute = int(now) // 60 * 60
    presences = MemoryPresences(window=30, clock=lambda: now)
    startups = [300, 700, 1500, 1500, 12_000]
    for index, startup in enumerate(startups):
        record, at = None, (minute + 5) * 1000
        for name, step in (("viewstart", 0), ("play", 10), ("playing", startup), ("hb", 10_000)):
            at += step
            record = presence_step(record, name, {"viewer_time": at, "view_id": f"h-{index}"},
                                   {"country": "US" if index < 3 else "GB"}, at)
            presences.update([record])
    # a view that failed before its first frame has no startup time
    record = presence_step(None, "play", {"viewer_time": 1, "view_id": "h-failed"}, {}, (minute + 1) * 1000)
    presences.update([presence_step(record, "error", {"viewer_time": 2}, {}, (minute + 2) * 1000)])
    points = {point["timestamp"]: point for point in histogram_timeseries(presences, minute - 120, now)}
    assert len(points) >= 3
    started = points[time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute))]
    assert started["sum"] == 5
    assert [b["count"] for b in started["bucket_values"]] == [1, 1, 2, 0, 0, 1]
    assert len(started["bucket_values"]) == len(STARTUP_BUCKETS_MS)
    assert started["bucket_values"][2]["percentage"] == pytest.approx(40.0) and started["max_percentage"] == 40.0
    assert started["median"] == 1500 and started["average"] == pytest.approx(sum(startups) / 5)
    assert started["p95"] == pytest.approx(1500 + 0.8 * (12_000 - 1500))  # interpolated at rank 3.8
    assert all(point["sum"] == 0 and point["median"] is None for key, point in points.items()
               if key != time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute)))
    series = breakdown_timeseries("current-concurrent-viewers", presences, minute, now, "country")
    values = {row["value"]: row["concurrent_viewers"] for row in series[0]["values"]}
    assert values == {"US": 3, "GB": 2, None: 1}


# --- over HTTP, through mux-python --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("data-filters"))
    try:
        yield server
    finally:
        server.close()


def _post(api, player: Player, user_agent: str = CHROME) -> None:
    answer = requests.post(f"{api.edge_url}/data/v1/beacons", data=player.batch(), timeout=30,
                           headers={"Content-Type": "text/plain", "User-Agent": user_agent})
    assert answer.status_code == 202, answer.text


def test_metric_filters_and_filters_through_mux_python(api, sdk) -> None:  # noqa: F811
    tag = uuid.uuid4().hex[:8]
    start = int(time.time() * 1000) - 60_000
    for index, startup in enumerate((300, 900, 2500)):
        player = Player(view_id=f"{tag}-{index}", start=start, uusid=f"u-{tag}", vtt=f"title-{tag}-{index}")
        _post(api, player.at(0, "viewstart").at(10, "play").at(startup, "playing").at(5000, "viewend"),
              user_agent=IPHONE if index == 2 else CHROME)
    failed = Player(view_id=f"{tag}-failed", start=start, uusid=f"u-{tag}")
    _post(api, failed.at(0, "play").at(700, "error", percd=500, perme="boom"))
    flush_collector(api.platform)
    mine, frame = [f"viewer_user_id:u-{tag}"], ["1:hours"]
    slow = ["video_startup_time>=900"]

    metrics = mux.MetricsApi(sdk)
    overall = metrics.get_overall_values("video_startup_time", timeframe=frame, filters=mine, metric_filters=slow)
    assert overall.data.total_views == 2 and overall.data.value == pytest.approx(1700)
    assert metrics.get_overall_values("views", timeframe=frame, filters=mine).data.total_views == 4
    both = metrics.get_overall_values("views", timeframe=frame, filters=mine,
                                      metric_filters=["video_startup_time>=900", "video_startup_time<2000"])
    assert both.data.value == 1
    breakdown = metrics.list_breakdown_values("views", group_by="browser", timeframe=frame, filters=mine,
                                              metric_filters=slow)
    assert {row.field: row.views for row in breakdown.data} == {"Chrome": 1, "Mobile Safari": 1}
    series = metrics.get_metric_timeseries_data("views", timeframe=["30:minutes"], filters=mine, metric_filters=slow)
    assert sum(int(row[2]) for row in series.data) == 2
    listed = mux.VideoViewsApi(sdk).list_video_views(timeframe=frame, filters=mine, metric_filters=slow)
    assert {view.id for view in listed.data} == {f"{tag}-1", f"{tag}-2"}
    failures = mux.ErrorsApi(sdk).list_errors(timeframe=frame, filters=mine,
                                              metric_filters=["playback_failure_percentage>0"])
    assert [(error.code, error.count, error.percentage) for error in failures.data] == [(500, 1, 1.0)]
    titles = mux.DimensionsApi(sdk).list_dimension_values("video_title", timeframe=frame, filters=mine,
                                                          metric_filters=slow)
    assert {value.value for value in titles.data} == {f"title-{tag}-1", f"title-{tag}-2"}
    for bad in (["views>1"], ["video_startup_time>soon"], ["video_startup_time"]):
        with pytest.raises(mux.ApiException) as refused:
            metrics.get_overall_values("views", metric_filters=bad)
        assert refused.value.status == 400
        assert json.loads(refused.value.body)["error"]["type"] == "invalid_parameters"

    # /data/v1/filters: Mux's filter listing, dimension values with their views
    filters = mux.FiltersApi(sdk)
    listing = filters.list_filters()
    assert isinstance(listing, mux.ListFiltersResponse)
    assert "browser" in listing.data.basic and "viewer_user_id" in listing.data.advanced
    values = filters.list_filter_values("browser", timeframe=frame, filters=mine)
    assert isinstance(values.data[0], mux.FilterValue)
    assert [(v.value, v.total_count) for v in values.data] == [("Chrome", 3), ("Mobile Safari", 1)]
    assert values.total_row_count == 2
    page = filters.list_filter_values("browser", timeframe=frame, filters=mine, limit=1, page=2)
    assert [(v.value, v.total_count) for v in page.data] == [("Mobile Safari", 1)]
    with pytest.raises(mux.ApiException) as refused:
        filters.list_filter_values("colour")
    assert refused.value.status == 400


def test_monitoring_and_the_realtime_histogram_through_mux_python(api, sdk) -> None:  # noqa: F811
    tag = uuid.uuid4().hex[:8]
    now_ms = int(time.time() * 1000)
    for index, startup in enumerate((400, 1200, 3000)):
        player = Player(view_id=f"mon-{tag}-{index}", start=now_ms, vtt=f"mon-{tag}")
        _post(api, player.at(0, "viewstart").at(10, "play").at(startup, "playing"))
    mine = [f"video_title:mon-{tag}"]
    monitoring = mux.MonitoringApi(sdk)
    assert "current-concurrent-viewers" in [m.name for m in monitoring.list_monitoring_metrics().data]
    dimensions = monitoring.list_monitoring_dimensions()
    assert isinstance(dimensions, mux.ListMonitoringDimensionsResponse)
    assert "video_title" in [d.name for d in dimensions.data]
    breakdown = monitoring.get_monitoring_breakdown("current-concurrent-viewers", dimension="video_title",
                                                    filters=mine)
    assert isinstance(breakdown.data[0], mux.MonitoringBreakdownValue)
    assert [(row.value, row.concurrent_viewers) for row in breakdown.data] == [(f"mon-{tag}", 3)]
    series = monitoring.get_monitoring_timeseries("current-concurrent-viewers", filters=mine)
    assert isinstance(series.data[-1], mux.MonitoringTimeseriesDatapoint)
    assert max(point.concurrent_viewers for point in series.data) == 3
    per_minute = monitoring.get_monitoring_breakdown_timeseries(
        "current-concurrent-viewers", dimension="video_title", filters=mine,
        timeframe=[str(int(time.time()) - 120), str(int(time.time()))], limit=5)
    assert isinstance(per_minute.data[0], mux.MonitoringBreakdownTimeseriesValues)
    seen = [value for point in per_minute.data for value in point.values]
    assert seen and {value.value for value in seen} == {f"mon-{tag}"}
    assert max(value.concurrent_viewers for value in seen) == 3
    with pytest.raises(mux.ApiException) as refused:  # Mux's limit: at most 10 minutes
        monitoring.get_monitoring_breakdown_timeseries("current-concurrent-viewers", timeframe=["20:minutes"])
    assert refused.value.status == 400

    for histogram in (monitoring.get_monitoring_histogram_timeseries("video-startup-time", filters=mine),
                      mux.RealTimeApi(sdk).get_realtime_histogram_timeseries("video-startup-time", filters=mine)):
        assert histogram.meta.bucket_unit == "milliseconds"
        assert [(b.start, b.end) for b in histogram.meta.buckets] == list(STARTUP_BUCKETS_MS)
        counted = [point for point in histogram.data if point.sum]
        assert sum(point.sum for point in counted) == 3, histogram.data
        counts = [sum(point.bucket_values[i].count for point in counted) for i in range(len(STARTUP_BUCKETS_MS))]
        assert counts == [1, 0, 1, 1, 0, 0]
    with pytest.raises(mux.ApiException) as refused:
        monitoring.get_monitoring_histogram_timeseries("rebuffer-count")
    assert refused.value.status == 400


def test_related_incidents_and_affected_views_through_mux_python(api, sdk) -> None:  # noqa: F811
    from kinoray.control.alerts import evaluate_alerts
    from kinoray.store.models import AlertRule, DataIncident, new_id

    tag = uuid.uuid4().hex[:8]
    # a threshold rule over 8 failing views in a 600 s window: 8 × 3600 / 600 = 48 affected views an hour
    created = api.client.post(f"{api.url}/data/v1/alerts", timeout=30, json={
        "name": f"failures {tag}", "metric": "playback_failure_percentage", "filters": [f"cdn:cdn-{tag}"],
        "comparison": "gt", "threshold": 0.2, "window_seconds": 600, "min_views": 5})
    assert created.status_code == 201, created.text
    rule_id = created.json()["data"]["id"]
    start = int(time.time() * 1000) - 30_000
    for index in range(8):
        player = Player(view_id=f"inc-{tag}-{index}", start=start, vdn=f"cdn-{tag}")
        _post(api, player.at(0, "play").at(500, "error", percd=500, perme="down"))
    flush_collector(api.platform)
    now = datetime.now(UTC)
    evaluate_alerts(api.platform, now=now)
    incidents = mux.IncidentsApi(sdk)
    opened = [i for i in incidents.list_incidents(status="open").data if i.description.startswith(
        "playback_failure_percentage") and f"cdn-{tag}" in i.description]
    assert len(opened) == 1
    incident = opened[0]
    assert incident.affected_views_per_hour_on_open == 48 and incident.affected_views_per_hour == 48
    assert incident.affected_views == 8
    evaluate_alerts(api.platform, now=now + timedelta(minutes=5))  # still firing 5 min later: +48 × 5/60 = 4
    again = incidents.get_incident(incident.id).data
    assert again.affected_views == 12 and again.affected_views_per_hour == 48
    assert again.affected_views_per_hour_on_open == 48

    # related: incidents of other rules around the same time, sharing a dimension value or about all views
    def planted(breakdowns: list[list[str]], started: datetime, resolved: datetime | None) -> str:
        with api.platform.db.session() as session:
            rule = AlertRule(id=new_id(), name=f"other {tag}", kind="threshold", metric="rebuffer_percentage",
                             filters=[], comparison="gt", threshold=0.1, window_seconds=300, min_views=1,
                             dimensions=[], severity="warning", enabled=False, created_at=started, updated_at=started)
            session.add(rule)
            session.flush()
            row = DataIncident(id=new_id(), rule_id=rule.id, incident_key="all", status="closed" if resolved else "open",
                               severity="warning", metric="rebuffer_percentage", measurement="",
                               breakdowns=breakdowns, description=f"planted {tag}", sample_size=3,
                               started_at=started, resolved_at=resolved, updated_at=started)
            session.add(row)
            return row.id

    same_cdn = planted([["cdn", f"cdn-{tag}"], ["country", "BR"]], now - timedelta(minutes=20), None)
    everyone = planted([], now - timedelta(hours=2), now - timedelta(minutes=20))  # ended 20 min before: close
    other_cdn = planted([["cdn", "elsewhere"]], now - timedelta(minutes=10), None)
    long_before = planted([["cdn", f"cdn-{tag}"]], now - timedelta(days=2), now - timedelta(days=2) + timedelta(hours=1))
    related = incidents.list_related_incidents(incident.id)
    assert isinstance(related, mux.ListRelatedIncidentsResponse)
    found = [item.id for item in related.data]
    assert set(found) >= {same_cdn, everyone} and not {other_cdn, long_before, incident.id} & set(found)
    ordered = [item.id for item in incidents.list_related_incidents(incident.id, order_by="started_at",
                                                                     order_direction="asc", limit=100).data]
    assert ordered.index(everyone) < ordered.index(same_cdn)
    # and the other way round: the planted incident about the same CDN finds the rule's incident
    assert incident.id in {item.id for item in incidents.list_related_incidents(same_cdn, limit=100).data}
    with pytest.raises(mux.ApiException) as missing:
        incidents.list_related_incidents("no-such-incident")
    assert missing.value.status == 404
    api.client.delete(f"{api.url}/data/v1/alerts/{rule_id}", timeout=30)


# --- the forecast's weekly season ---------------------------------------------------------------------------
def test_the_weekly_season_beats_the_daily_model_on_the_simulators_weekly_traffic() -> None:
    from kinoray.analytics.forecast import WEEK, double_seasonal, fit, rolling_backtest
    from kinoray.analytics.simulate import Scenario, Simulation

    sim = Simulation(Scenario(start=datetime(2026, 11, 2, tzinfo=UTC), days=22, views_per_minute=4, seed=3,
                              weekly=(0.95, 0.95, 0.95, 1.0, 1.05, 1.25, 1.15)))
    views, ccv = sim.hourly()
    assert views.size == 22 * 24 and views.sum() == len(sim)
    for series in (views, ccv):
        daily, weekly = rolling_backtest(series, weekly=False), rolling_backtest(series, weekly=True)
        assert daily is not None and weekly is not None and daily.mape is not None and weekly.mape is not None
        assert weekly.mape < 0.8 * daily.mape, (weekly, daily)
    assert fit(views, 24).model.startswith("holt_winters_weekly")  # the default from two weeks on
    assert fit(views[:2 * WEEK - 1], 24).model in ("holt_winters_additive", "holt_winters_multiplicative")
    assert fit(views, 24, weekly=False).delta is None
    model = double_seasonal(views, 48)
    assert model.forecast.shape == (48,) and (model.low <= model.forecast).all() and (model.forecast <= model.high).all()
    assert 0 < model.delta <= 0.3 and model.season_hours == (24, WEEK)
    with pytest.raises(ValueError):
        double_seasonal(views[:WEEK], 24)
