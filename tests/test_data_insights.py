"""Mux Data's analysis calls on kinoray: insights (a planted bad country ranked first, its interval excluding
zero; intervals that cover at their stated rate), comparisons and A/B significance tests (a real difference
found; an A/A split flagged at about alpha over many seeds; p-values against Student's t table), errors grouped
against hand-counted truth, daily view exports (the files in storage read by pyarrow and by Python's csv module
hold the rows the video-views API lists; the signed link downloads them, an altered or expired one gets a typed
403), and the traffic forecast (its backtest on synthetic seasonal traffic beats seasonal naive). The HTTP calls
go through mux-python where it has them, so its models deserialize the answers."""

from __future__ import annotations

import csv
import io
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import mux_python as mux
import numpy as np
import pyarrow.parquet as pq
import pytest
import requests

from kinoray.analytics import Collector, EventWriter, MemoryViewStates, parse_batch
from kinoray.analytics.compare import all_metrics, experiment
from kinoray.analytics.errors import error_groups, error_id
from kinoray.analytics.exports import EXPORT_SCHEMA, export_due, file_key, list_exports, sign_link
from kinoray.analytics.forecast import backtest, holt_winters, hourly_traffic, mape, seasonal_naive
from kinoray.analytics.insights import insights
from kinoray.analytics.query import METRICS, Query, Timeframe, aggregate
from kinoray.analytics.stats import Sample, mann_whitney, student_t_sf, two_proportion_z, welch_t
from kinoray.errors import InvalidParametersError, NotFoundError
from kinoray.store.models import DEFAULT_ENVIRONMENT_ID
from kinoray.store.objects import ObjectStore
from tests.compat import mux_python_client

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
#: Two client addresses (two ASNs) per country, so no ASN stands for a whole country.
ADDRESSES = {"US": ("8.8.8.8", "4.2.2.2"), "GB": ("81.2.69.142", "212.58.244.1"),
             "DE": ("46.4.0.1", "80.156.0.1"), "JP": ("1.0.16.1", "133.242.0.1"),
             "BR": ("177.0.0.1", "201.0.0.1")}


# --- a deterministic traffic generator ---------------------------------------------------------------------------
def simulate(rng: random.Random, view_id: str, start_ms: int, *, rebuffer_factor: float = 1.0,
             startup_factor: float = 1.0, failure: float = 0.0, error: tuple[int, str] = (2, "network error"),
             **first: Any) -> list[dict[str, Any]]:
    """One view's Mux beacons (short keys): startup drawn log-normal (× ``startup_factor``), 6–20 heartbeats of
    10 s with a rebuffer in each with probability 0.15 × ``rebuffer_factor`` (lasting 0.5–2.5 s ×
    ``rebuffer_factor``), a fatal error before the first frame with probability ``failure``."""
    now, sequence, events = start_ms, 0, []

    def emit(gap: float, name: str, **fields: Any) -> None:
        nonlocal now, sequence
        now += int(gap)
        sequence += 1
        events.append({"e": name, "xid": view_id, "uti": now, "xsqno": sequence, **fields})

    emit(0, "viewstart", pnm="gen", psw="hls.js", ake="env-gen", pwd=1280, pht=720, **first)
    emit(10, "play")
    emit(20, "renditionchange", vsobi=2_000_000, vsowd=1280, vsoht=720)
    if rng.random() < failure:
        emit(rng.uniform(300, 2000), "error", percd=error[0], perme=error[1])
        return events
    emit(rng.lognormvariate(6.3, 0.4) * startup_factor, "playing", pphti=0)
    playhead = 0
    for _ in range(rng.randint(6, 20)):
        if rng.random() < 0.15 * rebuffer_factor:
            emit(rng.uniform(1000, 8000), "rebufferstart", pphti=playhead)
            emit(rng.uniform(500, 2500) * rebuffer_factor, "rebufferend", pphti=playhead)
        playhead += 10_000
        emit(10_000, "hb", pphti=playhead)
    emit(500, "pause", pphti=playhead)
    emit(100, "viewend", pphti=playhead)
    return events


def ingest(store: ObjectStore, views: list[tuple[list[dict[str, Any]], str, str]],
           received_at: datetime | None = None) -> None:
    writer = EventWriter(store)
    collector = Collector(MemoryViewStates(), writer.add, lambda playback_id: None)
    for events, agent, address in views:
        collector.collect(parse_batch(json.dumps({"events": events}).encode()), user_agent=agent, address=address,
                          received_at=received_at)
    writer.close()


def planted_traffic(seed: int, count: int, bad_country: str = "JP") -> list[tuple[list[dict[str, Any]], str, str]]:
    """Views spread evenly over countries, ASNs and browsers; ``bad_country`` rebuffers 3× as often and as long."""
    rng = random.Random(seed)
    start = int(time.time() * 1000) - 20 * 60_000
    views = []
    for index in range(count):
        country = list(ADDRESSES)[index % len(ADDRESSES)]
        address = ADDRESSES[country][(index // len(ADDRESSES)) % 2]
        agent = (CHROME, FIREFOX)[rng.random() < 0.5]
        events = simulate(rng, f"gen-{seed}-{index}", start + index * 50,
                          rebuffer_factor=3.0 if country == bad_country else 1.0, failure=0.02,
                          fnm=("arm-a", "arm-b")[rng.random() < 0.5])
        views.append((events, agent, address))
    return views


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Query:
    store = ObjectStore(str(tmp_path_factory.mktemp("planted")))
    ingest(store, planted_traffic(7, 500))
    now = datetime.now(UTC)
    query = Query(store, Timeframe(now - timedelta(hours=1), now + timedelta(minutes=1)), now=now)
    assert len(query.views) == 500
    return query


# --- insights -----------------------------------------------------------------------------------------------------
def test_insights_rank_a_planted_bad_country_first(planted: Query) -> None:
    found = insights(planted.views, "rebuffer_percentage")
    worst = found[0]
    assert (worst.filter_column, worst.filter_value) == ("country", "JP"), found[:3]
    assert worst.interval[0] > 0 and worst.interval[0] <= worst.negative_impact_score <= worst.interval[1]
    assert worst.metric > 2 * worst.rest_metric
    overall = aggregate(METRICS["rebuffer_percentage"], planted.views)
    assert overall == pytest.approx(worst.share * worst.metric + (1 - worst.share) * worst.rest_metric)
    # the impact is exactly how much better the overall metric would be if JP did as well as the rest
    assert worst.negative_impact_score == pytest.approx(overall - worst.rest_metric)
    # the other countries are helped, not hurt, by comparison: none has an interval above zero
    others = [item for item in found if item.filter_column == "country" and item.filter_value != "JP"]
    assert len(others) == 4 and all(item.interval[0] <= 0 for item in others)
    # neither browser nor arm is planted: their intervals hold zero or sit below it
    for column in ("browser", "experiment_name"):
        assert all(item.interval[0] <= 0 for item in found if item.filter_column == column), column
    # startup time (median, a percentile interval) and a higher-is-better score work too
    assert insights(planted.views, "video_startup_time")
    smooth = insights(planted.views, "smoothness_score")
    assert (smooth[0].filter_column, smooth[0].filter_value) == ("country", "JP") and smooth[0].interval[0] > 0
    with pytest.raises(InvalidParametersError):
        insights(planted.views, "views")


@pytest.mark.parametrize("kind", ["mean", "ratio", "quantile", "flag"])
def test_intervals_cover_at_their_stated_rate(kind: str) -> None:
    """Group and rest drawn from one distribution (no effect): the 95 % interval of their difference holds zero
    in about 95 % of 400 draws (3 binomial standard deviations: 91.7–98.3 %)."""
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(400):
        sides = []
        for n in (150, 600):
            if kind == "ratio":
                watch = rng.uniform(30_000, 200_000, n)
                sides.append(Sample("ratio", watch * rng.beta(1, 30, n), watch))
            elif kind == "quantile":
                sides.append(Sample("quantile", rng.lognormal(6.3, 0.5, n), fraction=0.5))
            elif kind == "flag":
                sides.append(Sample("mean", (rng.random(n) < 0.1).astype(float)))
            else:
                sides.append(Sample("mean", rng.gamma(2.0, 0.3, n)))
        group, rest = (side.estimate() for side in sides)
        assert group is not None and rest is not None
        half = 1.959964 * (group.se ** 2 + rest.se ** 2) ** 0.5
        covered += abs(group.value - rest.value) <= half
    assert 0.917 <= covered / 400 <= 0.983, covered


# --- comparisons and significance ------------------------------------------------------------------------------
def test_student_t_tail_matches_the_table() -> None:
    for t, df, two_sided in ((2.228, 10, 0.05), (2.086, 20, 0.05), (2.763, 28, 0.01), (1.96, 10_000, 0.05)):
        assert 2 * student_t_sf(t, df) == pytest.approx(two_sided, abs=2e-4)


def _a_a(test: str, rng: np.random.Generator) -> float | None:
    n1, n2 = rng.integers(80, 300, 2)
    if test == "welch":
        return welch_t(rng.gamma(2.0, 0.3, n1), rng.gamma(2.0, 0.3, n2)).p_value
    if test == "mann_whitney":
        return mann_whitney(rng.lognormal(6.3, 0.5, n1).round(), rng.lognormal(6.3, 0.5, n2).round()).p_value
    if test == "proportion":
        return two_proportion_z((rng.random(n1) < 0.1).astype(float), (rng.random(n2) < 0.1).astype(float)).p_value
    from kinoray.analytics.stats import _ratio_z

    sides = []
    for n in (n1, n2):
        watch = rng.uniform(30_000, 200_000, n)
        sides.append(Sample("ratio", watch * rng.beta(1, 30, n), watch))
    return _ratio_z(*sides).p_value


@pytest.mark.parametrize("test", ["welch", "mann_whitney", "proportion", "ratio"])
def test_an_a_a_split_is_flagged_at_about_alpha(test: str) -> None:
    """500 A/A splits (no difference): the share with p < 0.05 is within 3 binomial standard deviations of 5 %."""
    rng = np.random.default_rng(2024)
    flagged = sum((_a_a(test, rng) or 1.0) < 0.05 for _ in range(500))
    assert 0.021 <= flagged / 500 <= 0.079, flagged


def test_a_b_comparison_finds_a_real_difference(tmp_path) -> None:
    rng = random.Random(5)
    start = int(time.time() * 1000) - 20 * 60_000
    views = []
    for index in range(400):
        arm = ("control", "faster-cdn")[index % 2]
        better = arm == "faster-cdn"
        events = simulate(rng, f"ab-{index}", start + index * 50, fnm=arm, failure=0.02 if better else 0.12,
                          startup_factor=0.6 if better else 1.0, rebuffer_factor=0.5 if better else 1.5)
        views.append((events, CHROME, "8.8.8.8"))
    store = ObjectStore(str(tmp_path))
    ingest(store, views)
    now = datetime.now(UTC)
    built = Query(store, Timeframe(now - timedelta(hours=1), now + timedelta(minutes=1)), now=now).views
    for metric, method in (("video_startup_time", "mann_whitney_u"), ("rebuffer_percentage", "delta_ratio_z"),
                           ("playback_failure_percentage", "two_proportion_z"),
                           ("viewer_experience_score", "welch_t")):
        result = experiment(built, metric, "experiment_name", baseline="control")
        control, treated = result.arms
        assert control.baseline and control.value == "control" and treated.value == "faster-cdn"
        assert treated.test is not None and treated.test.method == method
        assert treated.significant and treated.test.p_value is not None and treated.test.p_value < 0.01, metric
        assert treated.test.difference is not None and treated.test.interval is not None
        low, high = treated.test.interval
        assert low <= treated.test.difference <= high and (high < 0 if METRICS[metric].worse_when_higher else low > 0)
    one_arm = experiment(built, "video_startup_time", "browser")  # one browser: nothing to test against
    assert len(one_arm.arms) == 1 and one_arm.arms[0].baseline
    with pytest.raises(NotFoundError):
        experiment(built, "video_startup_time", "experiment_name", baseline="no-such-arm")
    totals, scores = all_metrics(built)
    assert totals.view_count == 400 and scores[0].metric == "viewer_experience_score"
    assert scores[1].items[0].metric == "playback_failure_percentage"
    assert scores[1].items[0].value == pytest.approx(sum(v.playback_failure for v in built) / 400)


def test_an_a_a_split_of_real_views_is_not_significant(planted: Query) -> None:
    """The planted traffic's arms were assigned at random with no effect: no metric differs significantly."""
    for metric in ("video_startup_time", "rebuffer_percentage", "playback_failure_percentage",
                   "viewer_experience_score", "weighted_average_bitrate"):
        result = experiment(planted.views, metric)
        assert [arm.value for arm in result.arms if not arm.baseline] and len(result.arms) == 2
        assert not any(arm.significant for arm in result.arms), (metric, result.arms)


# --- errors -------------------------------------------------------------------------------------------------------
def hand_built_errors(prefix: str) -> tuple[list[tuple[list[dict[str, Any]], str, str]], dict[tuple[str, str], int]]:
    """10 views: 3 fail with (2, network error) — one of them sends it twice —, 2 with (3, decode error),
    1 with (2, network error) after a warning (4, stalled) that is not fatal, 4 play cleanly."""
    rng = random.Random(1)
    start = int(time.time() * 1000) - 10 * 60_000
    views: list[list[dict[str, Any]]] = []
    for index in range(3):
        events = simulate(rng, f"{prefix}-net-{index}", start, failure=1.0, error=(2, "network error"))
        if index == 0:
            events.append({**events[-1], "xsqno": events[-1]["xsqno"] + 1, "uti": events[-1]["uti"] + 5})
        views.append(events)
    views += [simulate(rng, f"{prefix}-dec-{index}", start, failure=1.0, error=(3, "decode error"))
              for index in range(2)]
    warned = simulate(rng, f"{prefix}-warn", start, failure=0.0)[:3]
    warned.append({"e": "error", "xid": f"{prefix}-warn", "uti": warned[-1]["uti"] + 100, "xsqno": 4, "percd": 4,
                   "perme": "stalled", "persy": "warning"})
    warned.append({"e": "error", "xid": f"{prefix}-warn", "uti": warned[-1]["uti"] + 100, "xsqno": 5, "percd": 2,
                   "perme": "network error"})
    views.append(warned)
    views += [simulate(rng, f"{prefix}-ok-{index}", start) for index in range(4)]
    return ([(events, CHROME, "8.8.8.8") for events in views],
            {("2", "network error"): 4, ("3", "decode error"): 2})


def test_errors_are_grouped_as_counted_by_hand(tmp_path) -> None:
    views, truth = hand_built_errors("err")
    store = ObjectStore(str(tmp_path))
    ingest(store, views)
    now = datetime.now(UTC)
    built = Query(store, Timeframe(now - timedelta(hours=1), now + timedelta(minutes=1)), now=now).views
    groups = error_groups(built)
    assert {(g.player_error_code, g.message): g.count for g in groups} == truth
    assert [g.count for g in groups] == [4, 2] and groups[0].percentage == pytest.approx(0.4)
    assert groups[0].code == 2 and groups[0].id == error_id("2", "network error") != groups[1].id
    assert all(g.last_seen is not None and abs(g.last_seen / 1000 - now.timestamp()) < 120 for g in groups)


# --- forecast -----------------------------------------------------------------------------------------------------
def synthetic_hours(seed: int, days: int = 21) -> np.ndarray:
    """Hourly views: a daily curve (evening peak, night trough), a weekend lift, a slow trend, Poisson noise."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    daily = 1 + 0.7 * np.sin(2 * np.pi * ((hours % 24) - 14) / 24) + 0.2 * np.sin(4 * np.pi * (hours % 24) / 24)
    weekend = np.where((hours // 24) % 7 >= 5, 1.15, 1.0)
    return rng.poisson(300 * (1 + hours / (days * 24) * 0.3) * daily * weekend).astype(float)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_forecast_backtest_beats_seasonal_naive(seed: int) -> None:
    series = synthetic_hours(seed)
    result = backtest(series)
    assert result is not None and result.mape is not None and result.seasonal_naive_mape is not None
    assert result.mape < 0.10 and result.mape <= result.seasonal_naive_mape, result
    fit = holt_winters(series, 48)
    assert fit.model.startswith("holt_winters") and fit.forecast.shape == (48,) and (fit.low <= fit.forecast).all()
    assert (fit.forecast <= fit.high).all() and (fit.low >= 0).all()
    assert mape(series[-24:], seasonal_naive(series[:-24], 24)) == pytest.approx(result.seasonal_naive_mape)


def test_hourly_traffic_counts_views_and_concurrent_viewers(tmp_path) -> None:
    """Views whose events are received at known hours: 3 starting in hour 0 lasting 30 min (each present 30 min
    + the 30 s window), 1 in hour 2 lasting 90 min."""
    store = ObjectStore(str(tmp_path))
    origin = (datetime.now(UTC) - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)
    writer = EventWriter(store)
    collector = Collector(MemoryViewStates(), writer.add, lambda playback_id: None)
    for view_id, begin, minutes in (("h-a", 0, 30), ("h-b", 5, 30), ("h-c", 10, 30), ("h-d", 120, 90)):
        for offset, name in ((0, "viewstart"), (minutes, "viewend")):
            at = origin + timedelta(minutes=begin + offset)
            body = json.dumps({"events": [{"e": name, "xid": view_id, "uti": int(at.timestamp() * 1000),
                                           "xsqno": 1 + (offset > 0)}]}).encode()
            collector.collect(parse_batch(body), received_at=at)
    writer.close()
    first, views, ccv = hourly_traffic(store, origin - timedelta(hours=2), origin + timedelta(hours=5), window=30)
    assert first == origin
    assert views.tolist() == [3, 0, 1, 0, 0]
    assert ccv[0] == pytest.approx(3 * 30.5 / 60) and ccv[1] == 0
    assert ccv[2] == pytest.approx(1.0) and ccv[3] == pytest.approx(30.5 / 60) and ccv[4] == 0


# --- over HTTP, through mux-python ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One SQLite-backed server: these calls read the object store only (the database plays no part)."""
    from tests.api_server import ApiServer, Backend

    backend = Backend("sqlite", tmp_path_factory.mktemp("db-insights"))
    server = ApiServer(backend.new_url(), tmp_path_factory.mktemp("data-insights"))
    try:
        yield server
    finally:
        server.close()
        backend.close()


@pytest.fixture(scope="module")
def sdk(api) -> mux.ApiClient:
    return mux_python_client(api.edge_url, api.auth)


def test_insights_comparison_and_errors_through_mux_python(api, sdk) -> None:
    tag = uuid.uuid4().hex[:6]
    traffic = planted_traffic(3, 300, bad_country="BR")
    for events, _, _ in traffic:
        for event in events:
            event["xid"] = f"{tag}-{event['xid']}"
    errors, _ = hand_built_errors(tag)
    ingest(api.platform.store, traffic + errors)
    metrics = mux.MetricsApi(sdk)
    found = metrics.list_insights("rebuffer_percentage", timeframe=["1:hours"])
    assert isinstance(found, mux.ListInsightsResponse) and isinstance(found.data[0], mux.Insight)
    assert (found.data[0].filter_column, found.data[0].filter_value) == ("country", "BR")
    assert found.data[0].negative_impact_score > 0 and found.meta.aggregation == "avg"
    assert found.total_row_count >= len(found.data)
    tail = metrics.list_insights("video_startup_time", measurement="95th", timeframe=["1:hours"],
                                 filters=["!country:BR"])
    assert tail.meta.aggregation == "95th" and tail.data
    assert not any(row.filter_column == "country" and row.filter_value == "BR" for row in tail.data)
    raw = api.client.get(f"{api.url}/data/v1/metrics/rebuffer_percentage/insights",
                         params={"timeframe[]": "1:hours", "limit": 1}, timeout=60).json()["data"][0]
    low, high = raw["kinoray_negative_impact_interval"]
    assert 0 < low <= raw["negative_impact_score"] <= high
    compared = metrics.list_all_metric_values(timeframe=["1:hours"], dimension="country", value="BR")
    assert isinstance(compared, mux.ListAllMetricValuesResponse)
    totals, overall = compared.data[0], compared.data[1]
    assert totals.name == "totals" and totals.view_count == sum(1 for _, _, a in traffic if a in ADDRESSES["BR"])
    assert overall.metric == "viewer_experience_score" and 0 < overall.value <= 1
    assert any(item.metric == "rebuffer_percentage" and isinstance(item, mux.Metric) for row in compared.data[1:]
               for item in row.items or [])
    listed = mux.ErrorsApi(sdk).list_errors(timeframe=["1:hours"])
    assert isinstance(listed, mux.ListErrorsResponse)
    by_key = {(e.player_error_code, e.message): e for e in listed.data}
    assert by_key[("3", "decode error")].count >= 2 and isinstance(by_key[("3", "decode error")], mux.Error)
    assert by_key[("3", "decode error")].code == 3 and by_key[("3", "decode error")].last_seen
    elsewhere = mux.ErrorsApi(sdk).list_errors(timeframe=["1:hours"], filters=["!country:US"])
    assert ("3", "decode error") not in {(e.player_error_code, e.message) for e in elsewhere.data}
    failed = mux.VideoViewsApi(sdk).list_video_views(
        timeframe=["1:hours"], error_id=by_key[("3", "decode error")].id, limit=100)
    assert {view.id for view in failed.data} >= {f"{tag}-dec-0", f"{tag}-dec-1"}
    assert all(view.player_error_code == "3" for view in failed.data)
    ab = api.client.get(f"{api.url}/data/v1/metrics/video_startup_time/comparison",
                        params={"timeframe[]": "1:hours", "dimension": "experiment_name"}, timeout=60)
    assert ab.status_code == 200, ab.text
    arms = ab.json()["data"]["arms"]
    assert {arm["value"] for arm in arms} >= {"arm-a", "arm-b"} and sum(arm["baseline"] for arm in arms) == 1
    assert all(arm["test"] == "mann_whitney_u" and 0 <= arm["p_value"] <= 1 for arm in arms if not arm["baseline"])
    refused = api.client.get(f"{api.url}/data/v1/metrics/views/insights", params={"timeframe[]": "1:hours"},
                             timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_parameters"
    missing = api.client.get(f"{api.url}/data/v1/metrics/views/comparison",
                             params={"timeframe[]": "1:hours", "baseline": "nope"}, timeout=30)
    assert missing.status_code == 404


def test_daily_exports_match_the_video_views_api_and_links_are_signed(api, sdk) -> None:
    day = datetime.now(UTC).date() - timedelta(days=2)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    rng = random.Random(9)
    views = [(simulate(rng, f"exp-{day}-{index}", int(noon.timestamp() * 1000), failure=0.2, uusid=f"u{index}"),
              CHROME, "8.8.8.8") for index in range(12)]
    ingest(api.platform.store, views, received_at=noon)
    assert day in export_due(api.platform.store, back_days=3)
    store = api.platform.store
    key = file_key(DEFAULT_ENVIRONMENT_ID, day, "parquet")  # no environment has the views' env key: the default's
    assert store.exists(key) and store.exists(file_key(DEFAULT_ENVIRONMENT_ID, day, "csv"))
    assert day not in export_due(api.platform.store, back_days=3)  # written after the day was final: done
    start = int(noon.replace(hour=0).timestamp())
    listed = mux.VideoViewsApi(sdk).list_video_views(timeframe=[str(start), str(start + 86399)], limit=1000,
                                                     order_direction="asc")
    api_rows = {view.id: view for view in listed.data}
    assert len(api_rows) == 12
    table = pq.read_table(io.BytesIO(store.get_bytes(key)))
    assert table.schema.equals(EXPORT_SCHEMA)
    from_csv = list(csv.DictReader(io.StringIO(store.get_bytes(file_key(DEFAULT_ENVIRONMENT_ID, day, "csv")).decode())))
    assert sorted(row["view_id"] for row in table.to_pylist()) == sorted(row["view_id"] for row in from_csv) \
        == sorted(api_rows)
    for row in from_csv:
        view = api_rows[row["view_id"]]
        assert int(row["watch_time"]) == view.watch_time and row["view_start"] == view.view_start
        assert (row["playback_failure"] == "true") == view.playback_failure
        assert (row["player_error_code"] or None) == view.player_error_code
    exported = mux.ExportsApi(sdk).list_exports_views()
    assert isinstance(exported, mux.ListVideoViewExportsResponse)
    entry = next(item for item in exported.data if item.export_date == day)
    assert isinstance(entry, mux.ExportDate) and [f.type for f in entry.files] == ["parquet", "csv"]
    assert all(isinstance(f, mux.ExportFile) and f.version == 1 for f in entry.files)
    urls = {url.split("?")[0] for url in mux.ExportsApi(sdk).list_exports().data}
    assert urls >= {f.path.split("?")[0] for f in entry.files}  # (the expiry may differ by a second)
    parquet_url = entry.files[0].path
    got = requests.get(parquet_url, timeout=30)  # no credentials: the signature is the credential
    assert got.status_code == 200 and got.content == store.get_bytes(key)
    assert pq.read_table(io.BytesIO(got.content)).num_rows == 12
    base, query = parquet_url.split("?")
    params = dict(item.split("=") for item in query.split("&"))
    tampered = f"{base}?expires={int(params['expires']) + 60}&signature={params['signature']}"
    expires = int(time.time()) - 1
    expired = f"{base}?expires={expires}&signature={sign_link(api.platform.settings.secret_key, key, expires)}"
    other_day = base.replace(day.isoformat(), (day - timedelta(days=1)).isoformat())
    for url in (tampered, expired, f"{other_day}?{query}", f"{base}?expires={params['expires']}&signature={'0' * 64}"):
        refused = requests.get(url, timeout=30)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "invalid_download_link", url
    on_demand = api.client.post(f"{api.url}/data/v1/exports/views", params={"date": day.isoformat()}, timeout=60)
    assert on_demand.status_code == 201 and on_demand.json()["data"]["views"] == 12
    assert api.client.post(f"{api.url}/data/v1/exports/views", timeout=30,
                           params={"date": (date.today() + timedelta(days=2)).isoformat()}).status_code == 400
    assert any(d == day for d, _ in list_exports(store, DEFAULT_ENVIRONMENT_ID))
    # erasing a viewer takes their view out of the exports too
    erased = api.client.delete(f"{api.url}/data/v1/viewers/u3", timeout=60)
    assert erased.status_code == 200 and erased.json()["data"]["views_deleted"] == 1
    rows = pq.read_table(io.BytesIO(store.get_bytes(key))).to_pylist()
    assert len(rows) == 11 and "u3" not in {row["viewer_user_id"] for row in rows}
    assert "u3" not in store.get_bytes(file_key(DEFAULT_ENVIRONMENT_ID, day, "csv")).decode()


def _export_ids(store: ObjectStore, key: str) -> set[str]:
    """The view ids of an export file: Parquet read by pyarrow, CSV by the csv module."""
    if key.endswith(".parquet"):
        return set(pq.read_table(io.BytesIO(store.get_bytes(key)))["view_id"].to_pylist())
    return {row["view_id"] for row in csv.DictReader(io.StringIO(store.get_bytes(key).decode()))}


def test_exports_split_by_environment_convert_the_old_layout_and_are_swept(tmp_path) -> None:
    """Two environments (by env key) and views without a key: each environment's export holds its own views
    only; a day exported before environments (one file for all) is re-exported split by the sweep and its old
    files deleted; erasure rewrites whichever environment's file holds the view; retention deletes every
    environment's old days, the old layout's and the day marks alike."""
    from kinoray.analytics.exports import (
        EnvironmentKeys,
        erase_from_exports,
        export_day,
        export_files,
        sweep_exports,
    )
    from kinoray.store.keys import view_export_day_mark

    store = ObjectStore(str(tmp_path))
    now = datetime.now(UTC)
    environments = EnvironmentKeys({"key-a": DEFAULT_ENVIRONMENT_ID, "key-b": "envb"})
    rng = random.Random(4)
    truth: dict[date, dict[str, set[str]]] = {}
    for age in (2, 3, 6):  # days whose views are final (the files' times are the clock's)
        day = (now - timedelta(days=age)).date()
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        views = []
        for index, key in enumerate(("key-a", "key-b", "key-b", None, "key-unknown")):
            events = simulate(rng, f"split-{age}-{index}", int(noon.timestamp() * 1000))
            events[0].pop("ake")
            if key:
                events[0]["ake"] = key
            views.append((events, CHROME, "8.8.8.8"))
        ingest(store, views, received_at=noon)
        truth[day] = {DEFAULT_ENVIRONMENT_ID: {f"split-{age}-{i}" for i in (0, 3, 4)},
                      "envb": {f"split-{age}-{i}" for i in (1, 2)}}
    old_day, split_day, swept_day = ((now - timedelta(days=age)).date() for age in (2, 3, 6))
    # the day 2 ago exported before environments: one file with every environment's views
    assert export_day(store, old_day, now=now) == {DEFAULT_ENVIRONMENT_ID: 5}
    for kind in ("parquet", "csv"):
        store.put_bytes(store.get_bytes(file_key(DEFAULT_ENVIRONMENT_ID, old_day, kind)), file_key(None, old_day, kind))
    store.delete_prefix(file_key(DEFAULT_ENVIRONMENT_ID, old_day, "csv").rpartition("/")[0])
    store.delete(view_export_day_mark(old_day))
    assert list_exports(store, DEFAULT_ENVIRONMENT_ID) == []  # never listed: it may hold another's views
    assert export_day(store, swept_day, environments, now=now) == {DEFAULT_ENVIRONMENT_ID: 3, "envb": 2}
    assert export_due(store, environments, now, back_days=1) == [old_day]  # the old layout's, whatever its age
    assert not [f for f in export_files(store) if f.environment_id is None]  # re-exported, then deleted
    assert export_due(store, environments, now, back_days=3) == [split_day]
    assert export_due(store, environments, now, back_days=7) == []
    for day in (old_day, split_day, swept_day):
        for environment_id, expected in truth[day].items():
            for kind in ("parquet", "csv"):
                assert _export_ids(store, file_key(environment_id, day, kind)) == expected, (day, environment_id)
    assert [d for d, _ in list_exports(store, "envb")] == [old_day, split_day, swept_day]
    # erasure rewrites the file of the environment holding the view, in any environment
    assert erase_from_exports(store, {"split-2-1", "split-3-0"}) == 2
    assert _export_ids(store, file_key("envb", old_day, "csv")) == {"split-2-2"}
    assert _export_ids(store, file_key(DEFAULT_ENVIRONMENT_ID, split_day, "parquet")) == {"split-3-3", "split-3-4"}
    assert _export_ids(store, file_key("envb", split_day, "csv")) == truth[split_day]["envb"]
    # retention: the day 6 ago, of both environments, and its mark; a stray old-layout file of that day too
    store.put_bytes(store.get_bytes(file_key("envb", swept_day, "csv")), file_key(None, swept_day, "csv"))
    assert sweep_exports(store, 4, now) == 1
    assert all(f.day != swept_day for f in export_files(store)) and not store.exists(view_export_day_mark(swept_day))
    assert [d for d, _ in list_exports(store, DEFAULT_ENVIRONMENT_ID)] == [old_day, split_day]


def test_forecast_endpoint(api) -> None:
    """5 views received 3 hours ago and 2 two hours ago show in the observed hours; the forecast has the hours
    asked for, each inside its band."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(4)
    for back, count in ((3, 5), (2, 2)):
        at = hour - timedelta(hours=back) + timedelta(minutes=10)
        ingest(api.platform.store, [(simulate(rng, f"fc-{uuid.uuid4().hex[:8]}", int(at.timestamp() * 1000)), CHROME,
                                     "8.8.8.8") for _ in range(count)], received_at=at)
    answer = api.client.get(f"{api.url}/data/v1/forecast/views", params={"horizon": 6, "history_days": 3},
                            timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()["data"]
    observed = {point["time"]: point for point in body["observed"]}
    for back, count in ((3, 5), (2, 2)):
        point = observed[(hour - timedelta(hours=back)).strftime("%Y-%m-%dT%H:%M:%SZ")]
        assert point["views"] == count and point["concurrent_viewers"] > 0
    assert body["forecast"][0]["time"] == hour.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(body["forecast"]) == 6 and {m["series"] for m in body["models"]} == {"views", "concurrent_viewers"}
    assert all(p["views_low"] <= p["views"] <= p["views_high"] for p in body["forecast"])
    assert requests.get(f"{api.edge_url}/data/v1/forecast/views", timeout=10).status_code == 401
