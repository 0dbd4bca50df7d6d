"""Traffic forecast for capacity planning: views and concurrent viewers per hour, ahead of time (kinoray's
``/data/v1/forecast/views``).

**Series** (:func:`hourly_traffic`): from the event log, per UTC hour, the views that started (their first event
was received in it) and the average concurrent viewers — each view present from its first event's receipt to
its last one's plus ``window`` seconds (real time's rule: :mod:`kinoray.analytics.realtime`), the seconds of
presence in the hour over 3600. The series starts at the first hour with traffic.

**Model** (:func:`holt_winters`): Holt–Winters (level, trend, a 24-hour season), numpy, additive or
multiplicative seasons (the latter when every hour of the first day had traffic: the daily swing grows with the
audience) and smoothing parameters (α, β, γ) picked from a grid by the smallest one-step-ahead squared error over
the history. Forecasts are floored at 0; the 95 % band is ``±1.96·σ_h`` with
``σ_h = σ·√(1 + Σ_{j<h} (α + jαβ + γ·[j ≡ 0 mod 24])²)`` (the additive model's variance growth), σ the one-step
residual deviation (multiplicative: the relative residual deviation times the forecast — an approximation).
With under two days of history the model is seasonal naive (the same hour yesterday), with under one the mean.

**Weekly season** (:func:`double_seasonal`, the default through :func:`fit` once the history covers two weeks):
the same smoothing with a day-of-week season beside the hour-of-day one (Taylor's double seasonal Holt–Winters,
the weekly season kept per day: 7 values), its δ picked with the others. Rolling backtests (each of the last 7
days of 4 weeks held out in turn, :func:`rolling_backtest`; ``benchmarks/forecast_seasons.py``, 5 seeds), MAPE
weekly vs daily: the simulator's views with a weekly pattern 3.7 % vs 8.2 % (concurrent viewers 4.7 % vs 9.1 %),
without one 3.5 % vs 3.7 % (4.8 % vs 5.0 %), the benchmark's synthetic traffic 6.8 % vs 9.3 % (7.8 % vs 10.7 %).

**Backtest** (:func:`backtest`): the last 24 hours held out, the model fitted on the hours before, its forecast
of the held-out day scored by MAPE (mean absolute percentage error over the hours with traffic) beside seasonal
naive's on the same day.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np

from kinoray.analytics.eventlog import read_events
from kinoray.store.objects import ObjectStore

__all__ = ["SEASON", "WEEK", "Backtest", "Fit", "Forecast", "backtest", "double_seasonal", "fit", "forecast",
           "holt_winters", "hourly_traffic", "mape", "rolling_backtest", "seasonal_naive"]

SEASON = 24
WEEK = 7 * SEASON
_Z95 = 1.959963984540054
_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
_BETAS = (0.0, 0.01, 0.05, 0.1)
_GAMMAS = (0.05, 0.1, 0.2, 0.3, 0.5)
_DELTAS = (0.05, 0.1, 0.2, 0.3)


def hourly_traffic(store: ObjectStore, start: datetime, end: datetime, window: float = 30.0
                   ) -> tuple[datetime, np.ndarray, np.ndarray]:
    """``(first hour, views per hour, average concurrent viewers per hour)`` from ``start`` to ``end`` (whole
    UTC hours), starting at the first hour with traffic (empty arrays when there is none)."""
    first_hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = max(1, math.ceil((end - first_hour).total_seconds() / 3600))
    events = read_events(store, first_hour, end, late_days=0)
    with duckdb.connect() as connection:
        connection.register("events", events)
        spans = connection.execute(
            "SELECT epoch_ms(min(received_at)) AS first, epoch_ms(max(received_at)) AS last FROM events "
            "GROUP BY view_id HAVING min(received_at) >= ? AND min(received_at) < ?", [first_hour, end]
        ).fetchnumpy()
    origin = first_hour.timestamp()
    begin = np.asarray(spans["first"], dtype=float) / 1000 - origin
    finish = np.asarray(spans["last"], dtype=float) / 1000 - origin + window
    views = np.bincount(np.clip((begin // 3600).astype(int), 0, hours - 1), minlength=hours).astype(float) \
        if begin.size else np.zeros(hours)
    present = np.zeros(hours)
    edges = np.arange(hours + 1) * 3600.0
    for hour in range(hours):  # seconds of presence of every view in this hour
        overlap = np.minimum(finish, edges[hour + 1]) - np.maximum(begin, edges[hour])
        present[hour] = overlap[overlap > 0].sum() / 3600
    busy = np.flatnonzero(views + present > 0)
    if busy.size == 0:
        return first_hour, np.zeros(0), np.zeros(0)
    return first_hour + timedelta(hours=int(busy[0])), views[busy[0]:], present[busy[0]:]


@dataclass(frozen=True)
class Fit:
    model: str
    alpha: float | None
    beta: float | None
    gamma: float | None
    sigma: float
    forecast: np.ndarray
    low: np.ndarray
    high: np.ndarray
    delta: float | None = None  # the weekly season's smoothing (double seasonal models)
    season_hours: tuple[int, ...] = (SEASON,)


def _run(series: np.ndarray, alpha: float, beta: float, gamma: float, m: int, multiplicative: bool
         ) -> tuple[float, float, np.ndarray, float, float, int]:
    """Fit one parameter set: (level, trend, season, one-step SSE, one-step relative SSE, steps scored)."""
    level = float(series[:m].mean())
    trend = float((series[m:2 * m].mean() - series[:m].mean()) / m) if series.size >= 2 * m else 0.0
    season = (series[:m] / level if multiplicative else series[:m] - level).astype(float)
    sse = relative = 0.0
    scored = 0
    for t in range(m, series.size):
        value = float(series[t])
        slot = t % m
        predicted = (level + trend) * season[slot] if multiplicative else level + trend + season[slot]
        error = value - predicted
        sse += error * error
        relative += (error / predicted) ** 2 if predicted > 0 else 0.0
        scored += 1
        previous = level
        if multiplicative:
            level = alpha * value / max(season[slot], 1e-9) + (1 - alpha) * (level + trend)
            season[slot] = gamma * value / max(level, 1e-9) + (1 - gamma) * season[slot]
        else:
            level = alpha * (value - season[slot]) + (1 - alpha) * (level + trend)
            season[slot] = gamma * (value - level) + (1 - gamma) * season[slot]
        trend = beta * (level - previous) + (1 - beta) * trend
    return level, trend, season, sse, relative, scored


def seasonal_naive(series: np.ndarray, horizon: int, m: int = SEASON) -> np.ndarray:
    """The same hour one season earlier, repeated."""
    last = series[-m:]
    return np.array([last[h % m] for h in range(horizon)], dtype=float)


def holt_winters(series: np.ndarray, horizon: int, m: int = SEASON) -> Fit:
    """The forecast of the next ``horizon`` hours of ``series`` (module docstring)."""
    series = np.asarray(series, dtype=float)
    if series.size < m:
        mean = float(series.mean()) if series.size else 0.0
        sigma = float(series.std()) if series.size > 1 else 0.0
        flat = np.full(horizon, mean)
        return Fit("mean", None, None, None, sigma, flat, np.maximum(0, flat - _Z95 * sigma), flat + _Z95 * sigma)
    if series.size < 2 * m:
        ahead = seasonal_naive(series, horizon, m)
        sigma = float(np.std(series[m:] - series[:-m])) if series.size > m else float(series.std())
        return Fit("seasonal_naive", None, None, None, sigma, ahead, np.maximum(0, ahead - _Z95 * sigma),
                   ahead + _Z95 * sigma)
    # multiplicative seasons (the daily swing grows with the audience) where every hour of a season has traffic
    kinds = (False, True) if series[:m].min() > 0 and series.min() >= 0 else (False,)
    best: tuple[float, bool, float, float, float] | None = None
    for multiplicative in kinds:
        for alpha, beta, gamma in itertools.product(_ALPHAS, _BETAS, _GAMMAS):
            sse = _run(series, alpha, beta, gamma, m, multiplicative)[3]
            if best is None or sse < best[0]:
                best = (sse, multiplicative, alpha, beta, gamma)
    assert best is not None
    _, multiplicative, alpha, beta, gamma = best
    level, trend, season, sse, relative, scored = _run(series, alpha, beta, gamma, m, multiplicative)
    n = series.size
    growth = [math.sqrt(1 + sum((alpha + j * alpha * beta + (gamma if j % m == 0 else 0.0)) ** 2
                                for j in range(1, h + 1))) for h in range(horizon)]
    if multiplicative:
        ahead = np.array([(level + (h + 1) * trend) * season[(n + h) % m] for h in range(horizon)])
        sigma = math.sqrt(relative / max(1, scored))
        spread = np.abs(ahead) * sigma * np.array(growth)
    else:
        ahead = np.array([level + (h + 1) * trend + season[(n + h) % m] for h in range(horizon)])
        sigma = math.sqrt(sse / max(1, scored))
        spread = sigma * np.array(growth)
    ahead = np.maximum(0.0, ahead)
    return Fit("holt_winters_multiplicative" if multiplicative else "holt_winters_additive", alpha, beta, gamma,
               sigma, ahead, np.maximum(0.0, ahead - _Z95 * spread), ahead + _Z95 * spread)


def _double_grid(series: np.ndarray, multiplicative: bool, params: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Double seasonal Holt–Winters for every row ``(α, β, γ, δ)`` of ``params`` at once (numpy across the
    grid): an hour-of-day season (``SEASON`` values, smoothed by γ) and a day-of-week one (7 values, smoothed by
    δ at each of the day's hours) — Taylor's double seasonal method (2003) with the weekly season per day rather
    than per hour of the week, so 7 values learn from 24 hours a week each instead of 168 from one hour.
    ``(level, trend, daily, weekly, one-step SSE, one-step relative SSE, steps scored)``. Initialized from the
    first week: level its mean; trend the second week's mean less the first's, per hour; the hour-of-day profile
    and the day means, relative to the level."""
    m, w, days = SEASON, WEEK, WEEK // SEASON
    alpha, beta, gamma, delta = (params[:, i] for i in range(4))
    first = series[:w].reshape(days, m)
    level0 = float(first.mean())
    profile, day_means = first.mean(axis=0), first.mean(axis=1)
    daily0 = profile / level0 if multiplicative else profile - level0
    weekly0 = day_means / level0 if multiplicative else day_means - level0
    g = params.shape[0]
    level = np.full(g, level0)
    trend = np.full(g, float((series[w:2 * w].mean() - level0) / w) if series.size >= 2 * w else 0.0)
    daily = np.tile(daily0, (g, 1))
    weekly = np.tile(weekly0, (g, 1))
    sse, relative = np.zeros(g), np.zeros(g)
    for t in range(w, series.size):
        value, d, k = float(series[t]), t % m, (t // m) % days
        if multiplicative:
            predicted = (level + trend) * daily[:, d] * weekly[:, k]
        else:
            predicted = level + trend + daily[:, d] + weekly[:, k]
        error = value - predicted
        sse += error * error
        relative += np.where(predicted > 0, (error / np.where(predicted > 0, predicted, 1.0)) ** 2, 0.0)
        previous = level
        if multiplicative:
            level = alpha * value / np.maximum(daily[:, d] * weekly[:, k], 1e-9) + (1 - alpha) * (level + trend)
            new_daily = gamma * value / np.maximum(level * weekly[:, k], 1e-9) + (1 - gamma) * daily[:, d]
            weekly[:, k] = delta * value / np.maximum(level * daily[:, d], 1e-9) + (1 - delta) * weekly[:, k]
        else:
            level = alpha * (value - daily[:, d] - weekly[:, k]) + (1 - alpha) * (level + trend)
            new_daily = gamma * (value - level - weekly[:, k]) + (1 - gamma) * daily[:, d]
            weekly[:, k] = delta * (value - level - daily[:, d]) + (1 - delta) * weekly[:, k]
        daily[:, d] = new_daily
        trend = beta * (level - previous) + (1 - beta) * trend
    return level, trend, daily, weekly, sse, relative, np.full(g, series.size - w)


def double_seasonal(series: np.ndarray, horizon: int) -> Fit:
    """Holt–Winters with a daily and a weekly season (Taylor 2003) for ``series`` of at least two weeks: the
    forecast of the next ``horizon`` hours, parameters (α, β, γ daily, δ weekly) and additive or multiplicative
    form picked as :func:`holt_winters` picks its own; the band's growth is the daily model's (the weekly term
    adds ``δ`` once a week)."""
    series = np.asarray(series, dtype=float)
    if series.size < 2 * WEEK:
        raise ValueError(f"double_seasonal needs two weeks of hours ({2 * WEEK}), got {series.size}")
    grid = np.array(list(itertools.product(_ALPHAS, _BETAS, _GAMMAS, _DELTAS)), dtype=float)
    kinds = (False, True) if series[:WEEK].min() > 0 and series.min() >= 0 else (False,)
    best: tuple[float, bool, int, tuple[np.ndarray, ...]] | None = None
    for multiplicative in kinds:
        fitted = _double_grid(series, multiplicative, grid)
        index = int(np.argmin(fitted[4]))
        if best is None or fitted[4][index] < best[0]:
            best = (float(fitted[4][index]), multiplicative, index, fitted)
    assert best is not None
    _, multiplicative, index, (level_, trend_, daily_, weekly_, sse_, relative_, scored_) = best
    alpha, beta, gamma, delta = (float(v) for v in grid[index])
    level, trend, daily, weekly = float(level_[index]), float(trend_[index]), daily_[index], weekly_[index]
    n, scored = series.size, max(1, int(scored_[index]))
    growth = np.array([math.sqrt(1 + sum((alpha + j * alpha * beta + (gamma if j % SEASON == 0 else 0.0)
                                          + (delta if j % WEEK < SEASON else 0.0)) ** 2 for j in range(1, h + 1)))
                       for h in range(horizon)])
    steps = np.arange(horizon)
    if multiplicative:
        ahead = (level + (steps + 1) * trend) * daily[(n + steps) % SEASON] * weekly[(n + steps) // SEASON % 7]
        sigma = math.sqrt(float(relative_[index]) / scored)
        spread = np.abs(ahead) * sigma * growth
    else:
        ahead = level + (steps + 1) * trend + daily[(n + steps) % SEASON] + weekly[(n + steps) // SEASON % 7]
        sigma = math.sqrt(float(sse_[index]) / scored)
        spread = sigma * growth
    ahead = np.maximum(0.0, ahead)
    return Fit("holt_winters_weekly_multiplicative" if multiplicative else "holt_winters_weekly_additive", alpha,
               beta, gamma, sigma, ahead, np.maximum(0.0, ahead - _Z95 * spread), ahead + _Z95 * spread,
               delta=delta, season_hours=(SEASON, WEEK))


def fit(series: np.ndarray, horizon: int, weekly: bool | None = None) -> Fit:
    """The default model: :func:`double_seasonal` when ``series`` covers two weeks (``weekly=None``; ``False``
    never, ``True`` whenever it can), else :func:`holt_winters` (daily season, or its fallbacks)."""
    series = np.asarray(series, dtype=float)
    if weekly is not False and series.size >= 2 * WEEK:
        return double_seasonal(series, horizon)
    return holt_winters(series, horizon)


def mape(actual: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean absolute percentage error over the hours with traffic (``None`` when none had any)."""
    mask = actual > 0
    if not mask.any():
        return None
    return float(np.mean(np.abs(predicted[mask] - actual[mask]) / actual[mask]))


@dataclass(frozen=True)
class Backtest:
    holdout_hours: int
    mape: float | None
    seasonal_naive_mape: float | None


def backtest(series: np.ndarray, m: int = SEASON, weekly: bool | None = None) -> Backtest | None:
    """The last ``m`` hours held out, scored (``None`` with under three seasons: two to fit, one to score); the
    model is :func:`fit`'s (``weekly`` as there) for daily seasons, :func:`holt_winters` for another ``m``."""
    series = np.asarray(series, dtype=float)
    if series.size < 3 * m:
        return None
    train, held = series[:-m], series[-m:]
    model = fit(train, m, weekly) if m == SEASON else holt_winters(train, m, m)
    return Backtest(m, mape(held, model.forecast), mape(held, seasonal_naive(train, m, m)))


def rolling_backtest(series: np.ndarray, days: int = 7, weekly: bool | None = None) -> Backtest | None:
    """:func:`backtest` on each of the last ``days`` days in turn (the model fitted on the hours before that day),
    MAPEs averaged: every day of the week held out once, where one held-out day is only one kind of day.
    ``None`` when the first of them has too little history."""
    series = np.asarray(series, dtype=float)
    model: list[float] = []
    naive: list[float] = []
    for k in range(days):
        run = backtest(series[:series.size - SEASON * k] if k else series, weekly=weekly)
        if run is None or run.mape is None or run.seasonal_naive_mape is None:
            return None
        model.append(run.mape)
        naive.append(run.seasonal_naive_mape)
    return Backtest(days * SEASON, float(np.mean(model)), float(np.mean(naive)))


@dataclass(frozen=True)
class Forecast:
    start: datetime  # the first hour forecast
    observed_start: datetime
    observed_views: np.ndarray
    observed_ccv: np.ndarray
    views: Fit
    ccv: Fit
    views_backtest: Backtest | None
    ccv_backtest: Backtest | None


def forecast(store: ObjectStore, horizon: int = 24, history_days: int = 28, now: datetime | None = None,
             window: float = 30.0, weekly: bool | None = None) -> Forecast:
    """Views and concurrent viewers for the ``horizon`` hours after the current one, from the complete hours of
    the last ``history_days`` days (:func:`fit`: a weekly season too from two weeks of history on)."""
    now = now or datetime.now(UTC)
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first, views, ccv = hourly_traffic(store, end - timedelta(days=history_days), end, window)
    return Forecast(start=end, observed_start=first, observed_views=views, observed_ccv=ccv,
                    views=fit(views, horizon, weekly), ccv=fit(ccv, horizon, weekly),
                    views_backtest=backtest(views, weekly=weekly), ccv_backtest=backtest(ccv, weekly=weekly))
