"""Anomaly detection over per-dimension-value metric time series, and the dimension values that explain it.
Pure numpy: no Ray, no I/O (the Ray Serve deployment :mod:`kinoray.serve.anomaly` wraps :func:`detect`).

**Input**: views as columns (:class:`ViewTable`: when each view ended, its dimensions, and what the metrics
are made of), built from :class:`kinoray.analytics.views.View` objects with the Data API's metric definitions
(:meth:`ViewTable.from_views`) or drawn by the simulator (:mod:`kinoray.analytics.simulate`).

**Series**: for every *slice* — all views, each value of each dimension in ``dimensions`` and each pair of
values of two of them (``asn=AMAZON-02, country=BR``) with enough traffic — one series per metric of
:data:`DETECTED_METRICS` in buckets of ``bucket_seconds`` (5 minutes): rebuffer percentage (rebuffer time ÷
watch time, weighted by minutes watched), playback failure and exit-before-start percentages (weighted by
views) and the median video startup time (weighted by views started). A bucket with less than
``min_views`` views is not judged.

**Detectors** (:data:`DETECTORS`), each causal (bucket ``t`` judged on data up to ``t``):

- ``seasonal-z``: the baseline is the same time of day on the previous ``days`` days (that bucket and its two
  neighbours: pooled totals after dropping the most extreme sixth, the median for startup); the residual is
  scaled by the square root of the bucket's weight (so quiet and busy hours compare) and divided by a robust
  spread of the same residuals over the previous two days, recomputed every 6 hours (quantiles, which a past
  incident does not move); a bucket is flagged when its z-score passes ``z`` and the change is material
  (``min_ratio`` times the baseline and more than :data:`MIN_DELTA`; and in events: over the last three
  buckets at least :data:`MIN_EXCESS_EVENTS` more failures, exits or rebuffers than the baseline expects, and
  that many unlikely by chance under Poisson), and alarms when two of the last three buckets are flagged.
  Rate baselines lean on the slice's long-run rate (a few quiet samples of a small slice are not a zero
  baseline).
- ``seasonal-pooled-z``: the seasonal baseline, judged on the last three buckets pooled (one z-score of their
  totals) rather than two of three;
- ``rolling-cusum``: the baseline is the previous two hours (no seasonality); a CUSUM of the z-scores
  (capped, minus a drift) alarms when it passes a threshold and the change is material.
- ``seasonal-cusum``: the seasonal baseline with the CUSUM decision.

``benchmarks/analytics.py`` measures the four on the simulator's planted incidents (precision, recall,
time to detect) and :data:`DEFAULT_DETECTOR` is the one chosen by that measurement (docs/ARCHITECTURE.md has
the numbers).

**Explanation**: at each bucket, among the slices alarming for one metric, the one with the largest excess
(how much worse than its baseline, times its weight) is taken — or, while a more specific alarming slice
(the one with the largest excess first) explains it, that one: taking its views out leaves the broader slice
normal (the rebuffering of Brazil is the rebuffering of AMAZON-02 in Brazil) — and every other alarming slice
that is no longer anomalous once the chosen slice's views are taken out is explained by it; repeated until
none is left. A :class:`Finding` is a run of buckets where a slice was
chosen: its metric, dimension values, since when (the run's start, walked back while the z-score stays above
half the threshold), value against baseline, and whether it is still going on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["BUCKET_SECONDS", "DEFAULT_DETECTOR", "DETECTED_METRICS", "DETECTION_DIMENSIONS", "DETECTORS", "MIN_DELTA", "MIN_EXCESS_EVENTS",
           "Detector", "Evaluation", "Finding", "ViewTable", "detect", "evaluate", "slice_label"]

BUCKET_SECONDS = 300
#: The metrics series are made of, and which way is worse (all: higher).
DETECTED_METRICS = ("rebuffer_percentage", "playback_failure_percentage", "video_startup_time",
                    "exits_before_video_start")
#: Dimensions searched by default.
DETECTION_DIMENSIONS = ("country", "asn", "browser", "cdn")
#: The smallest change worth an alarm, per metric (fractions; ms for startup).
MIN_DELTA: Mapping[str, float] = {"rebuffer_percentage": 0.002, "playback_failure_percentage": 0.01,
                                  "video_startup_time": 150.0, "exits_before_video_start": 0.02}
_DAY = 86_400

Slice = tuple[tuple[str, str], ...]


def slice_label(where: Slice) -> str:
    """``asn=AMAZON-02, country=BR`` (``all views`` for the empty slice)."""
    return ", ".join(f"{name}={value}" for name, value in where) or "all views"


# --- views as columns ---------------------------------------------------------------------------------------
@dataclass
class ViewTable:
    """Views as numpy columns: when each ended (server ms), its dimension values (object arrays, ``None`` where
    unknown) and the parts of the metrics (ms; flags as 0/1; startup ``nan`` when the view never started)."""

    at_ms: np.ndarray
    dimensions: dict[str, np.ndarray]
    watch_ms: np.ndarray
    rebuffer_ms: np.ndarray
    rebuffer_count: np.ndarray
    failed: np.ndarray
    exited: np.ndarray  # 1 exit before video start, 0 not, nan not ended yet
    startup_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.at_ms)

    @classmethod
    def from_views(cls, views: Sequence[Any], dimensions: Sequence[str] = DETECTION_DIMENSIONS) -> ViewTable:
        """From built views (:class:`kinoray.analytics.views.View`), with the Data API's metric definitions;
        placed at the receipt of their last event (their end by their own clock when that is unknown)."""
        from kinoray.analytics.query import METRICS

        startup, ebvs, failure = (METRICS[name].value for name in (
            "video_startup_time", "exits_before_video_start", "playback_failure_percentage"))

        def number(value: float | None) -> float:
            return math.nan if value is None else float(value)

        return cls(
            at_ms=np.array([view.last_received if view.last_received is not None else view.view_end
                            for view in views], dtype=np.int64),
            dimensions={name: np.array([view.dimensions.get(name) for view in views], dtype=object)
                        for name in dimensions},
            watch_ms=np.array([view.watch_time for view in views], dtype=np.float64),
            rebuffer_ms=np.array([view.rebuffer_duration for view in views], dtype=np.float64),
            rebuffer_count=np.array([view.rebuffer_count for view in views], dtype=np.float64),
            failed=np.array([number(failure(view)) for view in views], dtype=np.float64),
            exited=np.array([number(ebvs(view)) for view in views], dtype=np.float64),
            startup_ms=np.array([number(startup(view)) for view in views], dtype=np.float64),
        )

    def row(self, index: int) -> dict[str, Any]:
        """One view's values (tests compare the simulator's rows with the collector's)."""
        return {"at_ms": int(self.at_ms[index]), **{k: v[index] for k, v in self.dimensions.items()},
                **{name: float(getattr(self, name)[index]) for name in (
                    "watch_ms", "rebuffer_ms", "rebuffer_count", "failed", "exited", "startup_ms")}}


# --- series -------------------------------------------------------------------------------------------------
@dataclass
class _Slices:
    """Every judged slice and the (sorted) indices of its views."""

    names: list[Slice]
    members: list[np.ndarray]


def _slices(table: ViewTable, dimensions: Sequence[str], min_views: float) -> _Slices:
    names: list[Slice] = [()]
    members = [np.arange(len(table), dtype=np.int64)]
    codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in dimensions:
        column = table.dimensions.get(name)
        if column is None:
            continue
        known = np.array([value is not None for value in column], dtype=bool)
        values, inverse = np.unique(np.where(known, column, "").astype(str), return_inverse=True)
        inverse = np.where(known, inverse, -1)
        codes[name] = (values, inverse)
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse[known], minlength=len(values))
        starts = np.concatenate([[0], np.cumsum(counts)]) + int((~known).sum())
        for code, value in enumerate(values):
            if counts[code] >= min_views:
                names.append(((name, str(value)),))
                members.append(np.sort(order[starts[code]:starts[code + 1]]))
    present = sorted(codes)
    for i, first in enumerate(present):
        for second in present[i + 1:]:
            (values_a, a), (values_b, b) = codes[first], codes[second]
            both = (a >= 0) & (b >= 0)
            combined = np.where(both, a * len(values_b) + b, -1)
            counts = np.bincount(combined[both], minlength=len(values_a) * len(values_b))
            for pair in np.nonzero(counts >= min_views)[0]:
                names.append(((first, str(values_a[pair // len(values_b)])),
                              (second, str(values_b[pair % len(values_b)]))))
                members.append(np.nonzero(combined == pair)[0])
    return _Slices(names, members)


def _bucket_stats(table: ViewTable, metric: str, index: np.ndarray, bucket: np.ndarray, size: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per bucket: numerator, denominator, value, weight (views or minutes watched) of ``metric`` over views
    ``index``; the median metric's numerator is its median and its denominator its count."""
    where = bucket[index]
    if metric == "video_startup_time":
        values = table.startup_ms[index]
        keep = ~np.isnan(values)
        where, values = where[keep], values[keep]
        count = np.bincount(where, minlength=size).astype(np.float64)
        median = np.full(size, np.nan)
        if len(values):
            order = np.lexsort((values, where))
            where, values = where[order], values[order]
            first = np.searchsorted(where, np.arange(size), side="left")
            filled = count > 0
            low = first[filled] + ((count[filled] - 1) // 2).astype(np.int64)
            high = first[filled] + (count[filled] // 2).astype(np.int64)
            median[filled] = (values[low] + values[high]) / 2
        return median, count, median, count
    if metric == "rebuffer_percentage":
        numerator, denominator = table.rebuffer_ms[index], table.watch_ms[index]
        weight_of = denominator / 60_000
    else:
        column = table.failed if metric == "playback_failure_percentage" else table.exited
        flags = column[index]
        known = ~np.isnan(flags)
        numerator, denominator = np.where(known, flags, 0.0), known.astype(np.float64)
        weight_of = denominator
    num = np.bincount(where, weights=numerator, minlength=size)
    den = np.bincount(where, weights=denominator, minlength=size)
    weight = np.bincount(where, weights=weight_of, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    return num, den, value, weight


def _views_per_bucket(index: np.ndarray, bucket: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(bucket[index], minlength=size).astype(np.float64)


# --- detectors ----------------------------------------------------------------------------------------------
def _shifted(values: np.ndarray, shift: int) -> np.ndarray:
    out = np.full_like(values, np.nan, dtype=np.float64)
    if shift < len(values):
        out[shift:] = values[:len(values) - shift]
    return out


def _pooled(num_samples: np.ndarray, den_samples: np.ndarray, trim: float) -> np.ndarray:
    """Totals over samples (rows) after dropping the ``trim`` share with the highest ratio."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = num_samples / den_samples
    ratio = np.where(den_samples > 0, ratio, np.nan)
    available = (~np.isnan(ratio)).sum(axis=0)
    drop = np.floor(available * trim).astype(np.int64)
    rank = np.argsort(np.argsort(np.where(np.isnan(ratio), np.inf, -ratio), axis=0), axis=0)
    keep = (~np.isnan(ratio)) & (rank >= drop)
    num = np.where(keep, num_samples, 0).sum(axis=0)
    den = np.where(keep, den_samples, 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((den > 0) & (available >= 3), num / np.where(den > 0, den, 1), np.nan)


def _samples(values: np.ndarray, shifts: Iterable[int]) -> np.ndarray:
    return np.stack([_shifted(values, shift) for shift in shifts])


def _baseline(metric: str, num: np.ndarray, den: np.ndarray, value: np.ndarray, kind: str, period: int,
              days: int, rolling: int) -> np.ndarray:
    if kind == "seasonal":
        shifts = [d * period + j for d in range(1, days + 1) for j in (-1, 0, 1)]
    else:
        shifts = list(range(1, rolling + 1))
    if metric == "video_startup_time":
        samples = _samples(value, shifts)
        enough = (~np.isnan(samples)).sum(axis=0) >= 3
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.nanmedian(samples, axis=0)
        return np.where(enough, median, np.nan)
    num_samples, den_samples = _samples(num, shifts), _samples(den, shifts)
    pooled = _pooled(num_samples, den_samples, trim=1 / 6)
    # shrunk toward the slice's own rate so far: a few quiet samples of a small slice are not a zero baseline
    total_num, total_den = np.cumsum(np.nan_to_num(num)), np.cumsum(np.nan_to_num(den))
    with np.errstate(invalid="ignore", divide="ignore"):
        long_run = _shifted(np.where(total_den > 0, total_num / np.where(total_den > 0, total_den, 1), np.nan), 1)
        prior = _PRIOR_WEIGHT[metric]
        used = np.where(np.isnan(num_samples / np.where(den_samples > 0, den_samples, np.nan)), 0.0, den_samples)
        weight = used.sum(axis=0)
        return np.where(np.isnan(pooled), np.nan, (pooled * weight + long_run * prior) / (weight + prior))


def _residual(metric: str, value: np.ndarray, baseline: np.ndarray, weight: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "video_startup_time":
            return (np.log(value) - np.log(baseline)) * np.sqrt(weight)
        return (value - baseline) * np.sqrt(weight)


def _spread(residual: np.ndarray, period: int, history_days: int = 2) -> np.ndarray:
    """A robust spread of ``residual`` per bucket, from the ``history_days`` days before the bucket's hour
    (recomputed every 6 hours; none until a quarter of a day of residuals exists)."""
    out = np.full(len(residual), np.nan)
    block = max(1, period // 4)
    for block_start in range(0, len(residual), block):
        past = residual[max(0, block_start - history_days * period):block_start]
        past = past[~np.isnan(past)]
        if len(past) < period // 4:
            continue
        q05, q25, q75, q95 = np.quantile(past, [0.05, 0.25, 0.75, 0.95])
        out[block_start:block_start + block] = max((q75 - q25) / 1.349, (q95 - q05) / 3.29, 1e-9)
    return out


_RARE = ("playback_failure_percentage", "exits_before_video_start")
#: How much a rate baseline leans on the slice's long-run rate (views; ms watched for rebuffering).
_PRIOR_WEIGHT = {"playback_failure_percentage": 200.0, "exits_before_video_start": 200.0,
                 "rebuffer_percentage": 300 * 60_000.0}
#: Rare events (failures, exits) must be this many more than expected over the last three buckets.
MIN_EXCESS_EVENTS = 3


def _counted(metric: str, num: np.ndarray, den: np.ndarray, baseline: np.ndarray, counts: np.ndarray | None = None,
             count_rate: np.ndarray | None = None) -> np.ndarray:
    """Events, not just percentages: for failures and exits, the last three buckets hold at least
    :data:`MIN_EXCESS_EVENTS` more of them than the baseline expects, and that many is unlikely by chance (the
    Poisson tail's z-score by Wilson–Hilferty ≥ 4) — one failure in five views is not an incident however its
    percentage looks; for rebuffering, the same of the rebuffers (``counts``) against their own baseline rate
    per ms watched (``count_rate``)."""
    if metric in _RARE:
        return _poisson_excess(num, den, baseline)
    if metric == "rebuffer_percentage" and counts is not None and count_rate is not None:
        return _poisson_excess(counts, den, count_rate)
    return np.ones(len(num), dtype=bool)


def _poisson_excess(events_per_bucket: np.ndarray, exposure: np.ndarray, rate: np.ndarray,
                    tail_z: float = 4.0) -> np.ndarray:
    def window(column: np.ndarray) -> np.ndarray:
        return np.nan_to_num(column) + np.nan_to_num(_shifted(column, 1)) + np.nan_to_num(_shifted(column, 2))

    events, views = window(events_per_bucket), window(exposure)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.maximum(views * rate, 0.05)
        # Wilson–Hilferty: the Poisson upper tail as a z-score (a normal approximation overstates small counts)
        tail = 3 * np.sqrt(events) * (1 - 1 / (9 * np.maximum(events, 1)) - np.cbrt(expected / np.maximum(events, 1)))
        return (events - expected >= MIN_EXCESS_EVENTS) & (tail >= tail_z)


def _material(metric: str, value: np.ndarray, baseline: np.ndarray, min_ratio: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (value - baseline >= MIN_DELTA[metric]) & (value >= min_ratio * baseline)


@dataclass(frozen=True)
class Detector:
    """One candidate: a baseline (``seasonal`` or ``rolling``) and a decision (``z`` or ``cusum``)."""

    name: str
    baseline: str
    decision: str
    z: float = 4.0
    min_ratio: float = 1.5
    days: int = 7
    rolling_buckets: int = 24
    cusum_drift: float = 1.0
    cusum_threshold: float = 8.0
    cusum_cap: float = 6.0

    def judge(self, metric: str, num: np.ndarray, den: np.ndarray, value: np.ndarray, weight: np.ndarray,
              views: np.ndarray, period: int, min_views: float, counts: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(alarm, z, baseline)`` per bucket; ``counts``: the rebuffers per bucket (rebuffer percentage)."""
        baseline = _baseline(metric, num, den, value, self.baseline, period, self.days, self.rolling_buckets)
        count_rate = None if counts is None else _baseline(metric, counts, den, value, self.baseline, period,
                                                           self.days, self.rolling_buckets)
        residual = _residual(metric, value, baseline, weight)
        residual = np.where(views >= min_views, residual, np.nan)
        z = residual / _spread(residual, period)
        material = (_material(metric, value, baseline, self.min_ratio)
                    & _counted(metric, num, den, baseline, counts, count_rate))
        flagged = np.nan_to_num(z, nan=0.0) >= self.z
        if self.decision == "z":
            hits = flagged & material
            recent = hits.astype(np.int64) + _shift_int(hits, 1) + _shift_int(hits, 2)
            return hits & (recent >= 2), z, baseline
        if self.decision == "pooled-z":
            pooled_value, pooled_weight, pooled_views = _pool(metric, num, den, value, weight, views)
            pooled = _residual(metric, pooled_value, baseline, pooled_weight)
            pooled_z = np.where(pooled_views >= min_views, pooled, np.nan) / _spread(residual, period)
            hits = ((np.nan_to_num(pooled_z, nan=0.0) >= self.z) & (np.nan_to_num(z, nan=0.0) > 0)
                    & _material(metric, pooled_value, baseline, self.min_ratio)
                    & _counted(metric, num, den, baseline, counts, count_rate))
            return hits, z, baseline
        total = np.zeros(len(z))
        running = 0.0
        steps = np.minimum(np.nan_to_num(z, nan=0.0), self.cusum_cap) - self.cusum_drift
        for t, step in enumerate(steps):
            running = max(0.0, running + float(step))
            total[t] = running
        return (total >= self.cusum_threshold) & material, z, baseline


def _pool(metric: str, num: np.ndarray, den: np.ndarray, value: np.ndarray, weight: np.ndarray, views: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value, weight and views of each bucket pooled with the two before it (the median metric: the
    weight-averaged log median)."""
    def window(column: np.ndarray) -> np.ndarray:
        return np.nan_to_num(column) + np.nan_to_num(_shifted(column, 1)) + np.nan_to_num(_shifted(column, 2))

    pooled_weight, pooled_views = window(weight), window(views)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "video_startup_time":
            logs = np.where(weight > 0, np.log(np.where(weight > 0, value, 1)) * weight, 0.0)
            return np.exp(window(logs) / pooled_weight), pooled_weight, pooled_views
        pooled_den = window(den)
        return np.where(pooled_den > 0, window(num) / pooled_den, np.nan), pooled_weight, pooled_views


def _shift_int(flags: np.ndarray, shift: int) -> np.ndarray:
    out = np.zeros(len(flags), dtype=np.int64)
    out[shift:] = flags[:len(flags) - shift]
    return out


#: The candidates measured on the simulator (benchmarks/analytics.py).
DETECTORS: Mapping[str, Detector] = {detector.name: detector for detector in (
    Detector("seasonal-z", "seasonal", "z"),
    Detector("seasonal-pooled-z", "seasonal", "pooled-z"),
    Detector("rolling-cusum", "rolling", "cusum"),
    Detector("seasonal-cusum", "seasonal", "cusum"),
)}
#: Chosen by measured precision/recall/time to detect (docs/ARCHITECTURE.md, "Alerts and anomaly detection").
DEFAULT_DETECTOR = "seasonal-z"


# --- findings -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """A degradation and the dimension values that explain it."""

    metric: str
    where: Slice
    started_ms: int  # since when (bucket start)
    detected_ms: int  # the end of the first bucket that alarmed (when an online detector knew)
    last_ms: int  # the end of the last bucket that alarmed
    value: float  # over the alarming buckets
    baseline: float
    views: int  # views in the alarming buckets
    active: bool  # alarming in the last judged bucket

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline > 0 else math.inf

    @property
    def key(self) -> str:
        return f"{self.metric}:{slice_label(self.where)}"

    def describe(self) -> str:
        """``rebuffer_percentage up 4.1× on asn=AMAZON-02, country=BR since 14:05``"""
        since = np.datetime64(self.started_ms, "ms").astype("datetime64[m]").item().strftime("%H:%M")
        ratio = f"{self.ratio:.1f}×" if math.isfinite(self.ratio) else f"from {self.baseline:g} to {self.value:.3g}"
        return f"{self.metric} up {ratio} on {slice_label(self.where)} since {since} UTC"


@dataclass
class _Series:
    metric: str
    where: Slice
    members: np.ndarray
    num: np.ndarray
    den: np.ndarray
    value: np.ndarray
    weight: np.ndarray
    views: np.ndarray
    alarm: np.ndarray
    z: np.ndarray
    baseline: np.ndarray
    spread: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _excess(series: _Series, window: slice) -> float:
    value, baseline, weight = series.value[window], series.baseline[window], series.weight[window]
    ok = ~np.isnan(value) & ~np.isnan(baseline)
    return float(np.sum((value[ok] - baseline[ok]) * weight[ok]))


def _still_anomalous(series: _Series, without: np.ndarray, table: ViewTable, bucket: np.ndarray, window: slice,
                     detector: Detector, min_views: float) -> bool:
    """Whether ``series`` stays anomalous over ``window`` with the views ``without`` taken out."""
    members = series.members
    in_window = (bucket[members] >= window.start) & (bucket[members] < window.stop)
    rest = np.setdiff1d(members[in_window], without, assume_unique=True)
    if len(rest) == 0:
        return False
    size = int(bucket.max()) + 1
    num, den, value, weight = _bucket_stats(table, series.metric, rest, bucket, size)
    views = _views_per_bucket(rest, bucket, size)
    ws = slice(window.start, window.stop)
    residual = _residual(series.metric, value[ws], series.baseline[ws], weight[ws])
    residual = np.where(views[ws] >= min_views, residual, np.nan)
    z = residual / series.spread[ws]
    material = _material(series.metric, value[ws], series.baseline[ws], detector.min_ratio)
    if series.metric in _RARE:
        excess = float(np.nansum(num[ws] - den[ws] * series.baseline[ws]))
        if excess < MIN_EXCESS_EVENTS:
            return False
    return int(np.sum((np.nan_to_num(z, nan=0.0) >= detector.z) & material)) >= 1


def detect(table: ViewTable, *, detector: str | Detector = DEFAULT_DETECTOR,
           metrics: Sequence[str] = DETECTED_METRICS, dimensions: Sequence[str] = DETECTION_DIMENSIONS,
           start_ms: int | None = None, end_ms: int | None = None, explain_from_ms: int | None = None,
           bucket_seconds: int = BUCKET_SECONDS, min_views: float = 5) -> list[Finding]:
    """The degradations in ``table`` between ``start_ms`` and ``end_ms`` (default: the table's span; buckets
    aligned to ``bucket_seconds`` since the epoch, the last one ending at or before ``end_ms``), explained by
    dimension values; only buckets from ``explain_from_ms`` are explained (an online caller needs the last
    few). Findings are ordered by start."""
    chosen = DETECTORS[detector] if isinstance(detector, str) else detector
    for metric in metrics:
        if metric not in MIN_DELTA:
            raise ValueError(f"cannot detect on {metric!r}: one of {', '.join(DETECTED_METRICS)}")
    if len(table) == 0:
        return []
    step = bucket_seconds * 1000
    first = (int(table.at_ms.min()) if start_ms is None else start_ms) // step
    last = (int(table.at_ms.max()) + 1 if end_ms is None else end_ms) // step  # buckets before this are whole
    size = int(last - first)
    if size <= 0:
        return []
    inside = (table.at_ms >= first * step) & (table.at_ms < last * step)
    if not inside.all():
        table = _select(table, np.nonzero(inside)[0])
    bucket = (table.at_ms // step - first).astype(np.int64)
    period = _DAY // bucket_seconds
    slices = _slices(table, dimensions, min_views=min_views * size / 4)
    all_series: dict[str, list[_Series]] = {metric: [] for metric in metrics}
    for where, members in zip(slices.names, slices.members, strict=True):
        views = _views_per_bucket(members, bucket, size)
        for metric in metrics:
            num, den, value, weight = _bucket_stats(table, metric, members, bucket, size)
            counts = (np.bincount(bucket[members], weights=table.rebuffer_count[members], minlength=size)
                      if metric == "rebuffer_percentage" else None)
            alarm, z, baseline = chosen.judge(metric, num, den, value, weight, views, period, min_views, counts)
            if not alarm.any():
                continue
            residual = _residual(metric, value, baseline, weight)
            residual = np.where(views >= min_views, residual, np.nan)
            all_series[metric].append(_Series(metric, where, members, num, den, value, weight, views, alarm, z,
                                              baseline, _spread(residual, period)))
    explain_from = 0 if explain_from_ms is None else max(0, int(explain_from_ms // step - first))
    findings: list[Finding] = []
    for candidates in all_series.values():
        chosen_at: dict[Slice, list[int]] = {}
        by_where = {series.where: series for series in candidates}
        for t in range(explain_from, size):
            alarming = [series for series in candidates if series.alarm[t]]
            if not alarming:
                continue
            window = slice(max(0, t - 2), t + 1)
            for series in _explain(alarming, window, table, bucket, chosen, min_views):
                chosen_at.setdefault(series.where, []).append(t)
        for where, times in chosen_at.items():
            series = by_where[where]
            for run in _runs(times, gap=2):
                findings.append(_finding(series, run, first, step, size, chosen.z))
    return sorted(findings, key=lambda finding: (finding.started_ms, finding.key))


def _explain(alarming: list[_Series], window: slice, table: ViewTable, bucket: np.ndarray, detector: Detector,
             min_views: float) -> list[_Series]:
    excess = {series.where: _excess(series, window) for series in alarming}
    left = sorted(alarming, key=lambda series: -excess[series.where])
    picked: list[_Series] = []
    while left:
        pick = left[0]
        while True:  # down to the most specific alarming slice whose views, taken out, leave this one normal
            narrower = (series for series in left if set(pick.where) < set(series.where)
                        and not _still_anomalous(pick, series.members, table, bucket, window, detector, min_views))
            found = next(narrower, None)
            if found is None:
                break
            pick = found
        picked.append(pick)
        left = [series for series in left if series is not pick and _still_anomalous(
            series, pick.members, table, bucket, window, detector, min_views)]
    return picked


def _runs(times: list[int], gap: int) -> list[list[int]]:
    runs: list[list[int]] = [[times[0]]]
    for t in times[1:]:
        if t - runs[-1][-1] <= gap:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _finding(series: _Series, run: list[int], first: int, step: int, size: int, z: float) -> Finding:
    start = run[0]
    while start > 0 and np.nan_to_num(series.z[start - 1], nan=0.0) >= z / 2:
        start -= 1
    buckets = np.array(sorted(set(run)))
    if series.metric == "video_startup_time":
        ok = ~np.isnan(series.value[buckets])
        weights = series.weight[buckets][ok]
        value = float(np.average(series.value[buckets][ok], weights=weights)) if weights.sum() else math.nan
        baseline = float(np.nanmedian(series.baseline[buckets]))
    else:
        num, den = series.num[buckets].sum(), series.den[buckets].sum()
        value = float(num / den) if den else math.nan
        valid = ~np.isnan(series.baseline[buckets])
        baseline = float(np.average(series.baseline[buckets][valid], weights=series.den[buckets][valid])) \
            if valid.any() and series.den[buckets][valid].sum() else math.nan
    return Finding(metric=series.metric, where=series.where, started_ms=int((first + start) * step),
                   detected_ms=int((first + run[0] + 1) * step), last_ms=int((first + run[-1] + 1) * step),
                   value=value, baseline=baseline, views=int(series.views[buckets].sum()),
                   active=run[-1] >= size - 1)


def _select(table: ViewTable, index: np.ndarray) -> ViewTable:
    return ViewTable(at_ms=table.at_ms[index], dimensions={k: v[index] for k, v in table.dimensions.items()},
                     watch_ms=table.watch_ms[index], rebuffer_ms=table.rebuffer_ms[index],
                     rebuffer_count=table.rebuffer_count[index], failed=table.failed[index],
                     exited=table.exited[index], startup_ms=table.startup_ms[index])


# --- measuring a detector -----------------------------------------------------------------------------------
class Truth(Protocol):
    """A planted incident (:class:`kinoray.analytics.simulate.Planted`)."""

    metric: str
    where: tuple[tuple[str, str], ...]

    @property
    def start(self) -> Any: ...

    @property
    def end(self) -> Any: ...


@dataclass(frozen=True)
class Evaluation:
    """How findings compare with planted incidents: a finding is right when its metric and dimension values are
    an incident's exactly and it was detected between the incident's start and 15 minutes after its end."""

    findings: int
    true_findings: int
    incidents: int
    detected: int
    detect_seconds: tuple[float, ...]  # per detected incident: its first right finding's detection − its start
    named: Mapping[str, str]  # incident description → the first right finding's description

    @property
    def precision(self) -> float:
        return self.true_findings / self.findings if self.findings else 1.0

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else 1.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    @property
    def median_detect_seconds(self) -> float | None:
        return float(np.median(self.detect_seconds)) if self.detect_seconds else None


def evaluate(findings: Sequence[Finding], truth: Sequence[Truth], grace_seconds: float = 900) -> Evaluation:
    true_findings = 0
    first: dict[int, Finding] = {}
    for finding in findings:
        hit = False
        for number, incident in enumerate(truth):
            start_ms, end_ms = int(incident.start.timestamp() * 1000), int(incident.end.timestamp() * 1000)
            if (finding.metric == incident.metric and finding.where == tuple(sorted(incident.where))
                    and start_ms <= finding.detected_ms <= end_ms + grace_seconds * 1000):
                hit = True
                if number not in first or finding.detected_ms < first[number].detected_ms:
                    first[number] = finding
        true_findings += hit
    seconds = tuple((first[n].detected_ms - int(truth[n].start.timestamp() * 1000)) / 1000 for n in sorted(first))
    named = {f"{truth[n].metric} on {slice_label(tuple(sorted(truth[n].where)))}": first[n].describe()
             for n in sorted(first)}
    return Evaluation(findings=len(findings), true_findings=true_findings, incidents=len(truth),
                      detected=len(first), detect_seconds=seconds, named=named)
