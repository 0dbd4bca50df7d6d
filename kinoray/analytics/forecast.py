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

__all__ = ["SEASON", "Backtest", "Fit", "Forecast", "backtest", "forecast", "holt_winters", "hourly_traffic",
           "mape", "seasonal_naive"]

SEASON = 24
_Z95 = 1.959963984540054
_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
_BETAS = (0.0, 0.01, 0.05, 0.1)
_GAMMAS = (0.05, 0.1, 0.2, 0.3, 0.5)


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


def backtest(series: np.ndarray, m: int = SEASON) -> Backtest | None:
    """The last ``m`` hours held out, scored (``None`` with under three seasons: two to fit, one to score)."""
    series = np.asarray(series, dtype=float)
    if series.size < 3 * m:
        return None
    train, held = series[:-m], series[-m:]
    return Backtest(m, mape(held, holt_winters(train, m, m).forecast), mape(held, seasonal_naive(train, m, m)))


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


def forecast(store: ObjectStore, horizon: int = 24, history_days: int = 14, now: datetime | None = None,
             window: float = 30.0) -> Forecast:
    """Views and concurrent viewers for the ``horizon`` hours after the current one, from the complete hours of
    the last ``history_days`` days."""
    now = now or datetime.now(UTC)
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first, views, ccv = hourly_traffic(store, end - timedelta(days=history_days), end, window)
    return Forecast(start=end, observed_start=first, observed_views=views, observed_ccv=ccv,
                    views=holt_winters(views, horizon), ccv=holt_winters(ccv, horizon),
                    views_backtest=backtest(views), ccv_backtest=backtest(ccv))
