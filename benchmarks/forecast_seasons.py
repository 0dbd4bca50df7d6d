"""The traffic forecast with and without its weekly season (:mod:`kinoray.analytics.forecast`): rolling backtests
(each of the last 7 days held out in turn, the model fitted on the hours before it) over 4 weeks of hourly views
and concurrent viewers, per seed, from

- the simulator (:class:`kinoray.analytics.simulate.Simulation`, 10 views a minute on average) with a weekly
  pattern (weekdays 0.95–1.05, Saturday 1.2, Sunday 1.15) and without one;
- ``benchmarks/analytics.py``'s synthetic traffic (Poisson hours, weekend lift 1.15, 20 % trend).

``python benchmarks/forecast_seasons.py [--seeds 5]`` prints the mean MAPEs (daily model, weekly model, seasonal
naive) and writes ``benchmarks/results/forecast_seasons.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.analytics import synthetic_traffic  # noqa: E402
from kinoray.analytics.forecast import rolling_backtest  # noqa: E402
from kinoray.analytics.simulate import Scenario, Simulation  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WEEKLY = (0.95, 0.95, 0.95, 1.0, 1.05, 1.2, 1.15)
FLAT = (1.0,) * 7


def sources(seed: int) -> dict[str, tuple[object, object]]:
    start = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
    found: dict[str, tuple[object, object]] = {}
    for name, weekly in (("simulator_weekly", WEEKLY), ("simulator_flat", FLAT)):
        found[name] = Simulation(Scenario(start=start, days=28, views_per_minute=10, seed=seed, weekly=weekly)).hourly()
    found["synthetic_weekend_lift"] = synthetic_traffic(seed)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    scores: dict[str, list[float]] = {}
    started = time.perf_counter()
    for seed in range(args.seeds):
        for source, pair in sources(seed).items():
            for series_name, series in zip(("views", "ccv"), pair, strict=True):
                daily = rolling_backtest(series, weekly=False)
                weekly = rolling_backtest(series, weekly=True)
                assert daily is not None and weekly is not None
                for label, value in (("daily", daily.mape), ("weekly", weekly.mape),
                                     ("seasonal_naive", daily.seasonal_naive_mape)):
                    scores.setdefault(f"{source}.{series_name}.{label}", []).append(float(value or 0.0))
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "seeds": args.seeds,
              "seconds": round(time.perf_counter() - started, 1),
              "mean_mape": {name: round(statistics.mean(values), 4) for name, values in sorted(scores.items())}}
    print(f"{'source / series':40} {'daily':>8} {'weekly':>8} {'naive':>8}")
    for key in sorted({name.rsplit('.', 1)[0] for name in scores}):
        mean = result["mean_mape"]
        print(f"{key:40} {mean[key + '.daily']:8.2%} {mean[key + '.weekly']:8.2%} {mean[key + '.seasonal_naive']:8.2%}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "forecast_seasons.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
