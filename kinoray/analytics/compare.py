"""Comparisons: every metric side by side (Mux's ``/data/v1/metrics/comparison``), and A/B tests — one metric
compared across the values of a dimension (``experiment_name``, ``sub_property_id``, or any other) with a
significance test (kinoray's ``/data/v1/metrics/{METRIC_ID}/comparison``).

**Side by side** (:func:`all_metrics`): a ``totals`` row (views, started and ended views, unique viewers, watch
and playing time), then one row per score — the overall viewer experience score, then playback success,
startup time, smoothness and video quality — each with the metrics that feed it as ``items`` (Mux's layout:
``type`` ``score`` or ``metric``, the metric id, its default measurement). Scores are on Mux's API scale (0–1).

**A/B** (:func:`experiment`): the views of each value of the dimension are one arm; the baseline is the value
named, else the arm with the most views. Each other arm is tested against the baseline with the test that fits
the metric and measurement (:func:`kinoray.analytics.stats.compare_samples`: two-proportion z for failure and
exit percentages, Welch's t for means, the delta-method z for ratios of totals, Mann–Whitney U for medians and
95th percentiles); ``p_value`` is two-sided, ``p_value_adjusted`` Holm–Bonferroni over the arms compared, and
``significant`` means ``p_value_adjusted < alpha``. The difference is ``arm − baseline`` with its 95 % interval;
the effect size says which kind it is (Cohen's h, Cohen's d, standardized difference, rank-biserial).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kinoray.analytics.collect import DIMENSIONS
from kinoray.analytics.query import MEASUREMENTS, METRICS, aggregate, metric_of
from kinoray.analytics.stats import TestResult, compare_samples, holm, sample_of
from kinoray.analytics.views import View
from kinoray.errors import InvalidParametersError, NotFoundError

__all__ = ["SCORE_GROUPS", "Arm", "Experiment", "ScoreRow", "Totals", "all_metrics", "experiment"]

#: The scores and the metrics that feed each (Mux's comparison layout).
SCORE_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("viewer_experience_score", "Overall Score", ()),
    ("playback_success_score", "Playback Success", ("playback_failure_percentage", "exits_before_video_start",
                                                    "video_startup_failure_percentage")),
    ("startup_time_score", "Startup Time", ("video_startup_time", "player_startup_time", "aggregate_startup_time")),
    ("smoothness_score", "Smoothness", ("rebuffer_percentage", "rebuffer_frequency", "rebuffer_duration",
                                        "rebuffer_count")),
    ("video_quality_score", "Video Quality", ("upscale_percentage", "downscale_percentage", "max_upscale_percentage",
                                              "max_downscale_percentage", "weighted_average_bitrate")),
)


@dataclass(frozen=True)
class Totals:
    view_count: int
    started_views: int
    ended_views: int
    unique_viewers: int
    watch_time: int
    total_playing_time: int


@dataclass(frozen=True)
class MetricValue:
    metric: str
    name: str
    type: str
    value: float | None
    measurement: str


@dataclass(frozen=True)
class ScoreRow:
    metric: str
    name: str
    value: float | None
    items: list[MetricValue]


def _name(metric_id: str) -> str:
    return metric_id.replace("_", " ").title()


def all_metrics(views: Sequence[View]) -> tuple[Totals, list[ScoreRow]]:
    """The totals of ``views`` and every score with its metrics (module docstring)."""
    totals = Totals(
        view_count=len(views), started_views=sum(1 for view in views if view.started),
        ended_views=sum(1 for view in views if view.ended),
        unique_viewers=int(aggregate(METRICS["unique_viewers"], views) or 0),
        watch_time=sum(view.watch_time for view in views), total_playing_time=sum(view.playing_time for view in views))
    rows = []
    for score, name, parts in SCORE_GROUPS:
        items = [MetricValue(metric=part, name=_name(part), type="metric", value=aggregate(METRICS[part], views),
                             measurement=METRICS[part].measurement) for part in parts]
        rows.append(ScoreRow(metric=score, name=name, value=aggregate(METRICS[score], views), items=items))
    return totals, rows


@dataclass(frozen=True)
class Arm:
    value: str
    views: int
    metric: float | None
    baseline: bool
    test: TestResult | None
    p_value_adjusted: float | None
    significant: bool


@dataclass(frozen=True)
class Experiment:
    dimension: str
    metric: str
    measurement: str
    alpha: float
    baseline: str
    arms: list[Arm]


def experiment(views: Sequence[View], metric_id: str, dimension: str = "experiment_name",
               measurement: str | None = None, baseline: str | None = None, alpha: float = 0.05) -> Experiment:
    """``metric_id`` across the arms (values of ``dimension``) of ``views``, each against ``baseline``.

    Raises:
        NotFoundError: no views with a value of ``dimension``, or none with ``baseline``.
        InvalidParametersError: an unknown dimension or measurement, or ``alpha`` outside (0, 1).
    """
    metric = metric_of(metric_id)
    measurement = measurement or metric.measurement
    if measurement not in MEASUREMENTS:
        raise InvalidParametersError(f"measurement: one of {', '.join(MEASUREMENTS)}")
    if dimension not in DIMENSIONS:
        raise InvalidParametersError(f"dimension: unknown dimension {dimension[:64]!r}")
    if not 0 < alpha < 1:
        raise InvalidParametersError("alpha: between 0 and 1")
    arms: dict[str, list[View]] = {}
    for view in views:
        value = view.dimensions.get(dimension)
        if value is not None:
            arms.setdefault(str(value), []).append(view)
    if not arms:
        raise NotFoundError(f"no views with a value of {dimension} in this timeframe")
    if baseline is None:
        baseline = min(arms, key=lambda value: (-len(arms[value]), value))
    elif baseline not in arms:
        raise NotFoundError(f"no views with {dimension} {baseline[:128]!r} in this timeframe")
    reference = sample_of(metric, measurement, arms[baseline])
    tests = {value: compare_samples(metric, measurement, reference, sample_of(metric, measurement, group))
             for value, group in arms.items() if value != baseline}
    order = sorted(tests)
    adjusted = dict(zip(order, holm([tests[value].p_value for value in order]), strict=True))
    out = [Arm(value=baseline, views=len(arms[baseline]), metric=aggregate(metric, arms[baseline], measurement),
               baseline=True, test=None, p_value_adjusted=None, significant=False)]
    for value in order:
        p = adjusted[value]
        out.append(Arm(value=value, views=len(arms[value]), metric=aggregate(metric, arms[value], measurement),
                       baseline=False, test=tests[value], p_value_adjusted=p, significant=p is not None and p < alpha))
    return Experiment(dimension=dimension, metric=metric_id, measurement=measurement, alpha=alpha,
                      baseline=baseline, arms=out)
