"""Insights (Mux's ``/data/v1/metrics/{METRIC_ID}/insights``): the dimension values that most hurt a metric,
each with a 95 % confidence interval on how much.

For a metric, measurement and the views of a query, every value ``g`` of every dimension in
:data:`INSIGHT_DIMENSIONS` held by at least ``min_views`` views (and leaving at least ``min_views`` others) is
compared with the *rest* of the views (those without that value):

- ``metric``: the metric over the group's views; ``rest``: over the others (:mod:`kinoray.analytics.stats`);
- ``negative_impact_score = share × (metric − rest)``, sign flipped for metrics where higher is better: how much
  the overall metric would improve if the group did as well as the rest. ``share`` is the group's share of the
  metric's weight (views, or watch time for ``rebuffer_percentage``/``rebuffer_frequency``), so for means and
  ratios of totals it is exact: overall = share·metric + (1 − share)·rest. For percentiles it is the same
  formula, an approximation (a percentile does not decompose over groups);
- the interval: ``share × (difference ± 1.96·se)``, ``se = √(se_group² + se_rest²)`` from each side's analytic
  standard error (mean: ``sd/√n``; ratio of totals: delta method; percentile: order-statistic interval). Analytic
  rather than bootstrap so that every value of every dimension costs one pass over its views. An interval that
  excludes 0 says the value's harm is unlikely to be noise; one that contains it says the data cannot tell.

Values are ranked by ``negative_impact_score`` (worst first). ``sum`` measurements compare per-view means; ``count``
metrics (``views``, ``unique_viewers``) have no per-view quality to compare and are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kinoray.analytics.collect import DIMENSIONS
from kinoray.analytics.query import MEASUREMENTS, metric_of
from kinoray.analytics.stats import Z95, Sample, sample_of
from kinoray.analytics.views import View
from kinoray.errors import InvalidParametersError

__all__ = ["INSIGHT_DIMENSIONS", "Insight", "insights"]

#: Dimensions insights look through: every dimension but those naming one viewer, session or view.
INSIGHT_DIMENSIONS: tuple[str, ...] = tuple(
    name for name in DIMENSIONS if name not in ("viewer_user_id", "viewer_id", "view_session_id"))


@dataclass(frozen=True)
class Insight:
    filter_column: str
    filter_value: str
    metric: float
    rest_metric: float
    total_views: int
    total_watch_time: int
    total_playing_time: int
    negative_impact_score: float
    interval: tuple[float, float]
    share: float


def _subset(sample: Sample, mask: np.ndarray) -> Sample:
    return Sample(sample.kind, sample.values[mask], None if sample.den is None else sample.den[mask], sample.fraction)


def insights(views: Sequence[View], metric_id: str, measurement: str | None = None, *, min_views: int = 10,
             dimensions: Sequence[str] = INSIGHT_DIMENSIONS) -> list[Insight]:
    """Every dimension value's harm to ``metric_id`` over ``views``, worst first (module docstring)."""
    metric = metric_of(metric_id)
    measurement = measurement or metric.measurement
    if measurement not in MEASUREMENTS:
        raise InvalidParametersError(f"measurement: one of {', '.join(MEASUREMENTS)}")
    if measurement == "count":
        raise InvalidParametersError(f"insights compare a per-view metric; {metric_id} is a count")
    unknown = [name for name in dimensions if name not in DIMENSIONS]
    if unknown:
        raise InvalidParametersError(f"unknown dimension {unknown[0][:64]!r}")
    sign = 1.0 if metric.worse_when_higher else -1.0
    # the views the metric has a value for (a ratio's sample keeps every view: its parts are totals)
    if metric.total is not None and measurement == "avg":
        kept = list(views)
    else:
        kept = [view for view in views if metric.value(view) is not None]
    if len(kept) < 2 * min_views:
        return []
    sample = sample_of(metric, "avg" if measurement == "sum" else measurement, kept)
    total_weight = sample.weight
    watch = np.array([view.watch_time for view in kept], dtype=np.int64)
    playing = np.array([view.playing_time for view in kept], dtype=np.int64)
    found: list[Insight] = []
    for dimension in dimensions:
        column = np.array([str(view.dimensions.get(dimension)) if view.dimensions.get(dimension) is not None
                           else "" for view in kept], dtype=object)
        values, counts = np.unique(column, return_counts=True)
        for value, count in zip(values, counts, strict=True):
            if value == "" or count < min_views or len(kept) - count < min_views:
                continue
            mask = column == value
            group, rest = _subset(sample, mask).estimate(), _subset(sample, ~mask).estimate()
            if group is None or rest is None or total_weight <= 0:
                continue
            share = _subset(sample, mask).weight / total_weight
            difference = group.value - rest.value
            se = math.sqrt(group.se ** 2 + rest.se ** 2)
            low, high = sorted((sign * share * (difference - Z95 * se), sign * share * (difference + Z95 * se)))
            found.append(Insight(
                filter_column=dimension, filter_value=str(value), metric=group.value, rest_metric=rest.value,
                total_views=int(count), total_watch_time=int(watch[mask].sum()),
                total_playing_time=int(playing[mask].sum()), negative_impact_score=sign * share * difference,
                interval=(low, high), share=share))
    found.sort(key=lambda item: (-item.negative_impact_score, item.filter_column, item.filter_value))
    return found
