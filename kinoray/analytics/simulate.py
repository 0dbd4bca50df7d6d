"""A viewer-traffic simulator: many views with chosen QoE per dimension value, daily seasonality and planted
incidents, deterministic by seed. Used by the tests and benchmarks of the anomaly detector and the alerts.

A :class:`Scenario` says how many views arrive (``views_per_minute`` on average, following a daily curve that
peaks at 20:00 UTC, with optional flash crowds that add views and nothing else), and which incidents are
planted (:class:`Planted`: a metric made ``factor`` times worse for the views matching some dimension values,
from a start time for some minutes). :class:`Simulation` draws every view at once (numpy):

- where it comes from: a network (a client address, its country and ASN: :data:`NETWORKS`, the names
  ``geoip2fast``'s bundled database gives those addresses, so beacons sent from them are enriched to the same
  values), a browser (a real ``User-Agent``: :data:`BROWSERS`) and a CDN;
- its QoE: video startup time (log-normal around 800 ms, scaled per country, browser and CDN), exits before
  start (2 %), playback failures (0.8 %, half before the first frame), rebuffers (Poisson, 0.06 per minute
  watched, scaled per country and up to 1.5× at the evening peak: congestion) of log-normal length, and a
  watch time around ``watch_minutes`` (3).

Two ways out of one draw: :attr:`Simulation.table`, the views as the metrics code reads them
(:class:`kinoray.analytics.anomaly.ViewTable`, fast, for days of traffic), and :meth:`Simulation.beacons`,
one view as the Mux Data SDK beacons a player would send (short keys, sequence numbers, heartbeats every
10 s), with its ``User-Agent`` and address, for the collector. ``tests/test_analytics_alerts.py`` checks that
the collector and :func:`kinoray.analytics.views.build_views` turn the beacons into exactly the table's rows.

A view is placed in time by its end (when its last beacon arrives, as the Data API's timeseries place views);
an incident touches the views that end inside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from kinoray.analytics.anomaly import DETECTED_METRICS, ViewTable

__all__ = ["BROWSERS", "CDNS", "NETWORKS", "Planted", "Scenario", "Simulation", "default_scenario"]

#: (address, country, ASN, share of its country's views): the ASN names are what the collector's geo lookup
#: gives these addresses. AMAZON-02 appears in every country (one ASN, several countries).
NETWORKS: tuple[tuple[str, str, str, float], ...] = (
    ("24.0.0.1", "US", "COMCAST-7922", 0.6), ("8.8.8.8", "US", "GOOGLE", 0.2), ("52.95.0.1", "US", "AMAZON-02", 0.2),
    ("86.0.0.1", "GB", "Virgin Media", 0.5), ("92.40.0.1", "GB", "Three", 0.3), ("3.8.0.1", "GB", "AMAZON-02", 0.2),
    ("79.192.0.1", "DE", "Deutsche Telekom AG", 0.6), ("46.4.0.1", "DE", "Hetzner Online GmbH", 0.2),
    ("3.64.0.1", "DE", "AMAZON-02", 0.2),
    ("189.0.0.1", "BR", "TELEFONICA BRASIL S.A", 0.5), ("200.147.67.142", "BR", "Universo Online S.A.", 0.25),
    ("18.228.0.1", "BR", "AMAZON-02", 0.25),
    ("49.44.80.1", "IN", "Reliance Jio Infocomm Limited", 0.55), ("59.144.0.1", "IN", "BHARTI Airtel Ltd.", 0.3),
    ("43.204.0.1", "IN", "AMAZON-02", 0.15),
    ("60.32.0.1", "JP", "NTT Communications Corporation", 0.5), ("126.0.0.1", "JP", "SoftBank Corp.", 0.3),
    ("13.112.0.1", "JP", "AMAZON-02", 0.2),
)
#: country → (share of views, startup multiplier, rebuffer multiplier)
COUNTRIES: Mapping[str, tuple[float, float, float]] = {
    "US": (0.30, 1.0, 1.0), "GB": (0.12, 1.0, 0.9), "DE": (0.12, 0.95, 0.8), "BR": (0.16, 1.3, 1.5),
    "IN": (0.18, 1.5, 2.0), "JP": (0.12, 0.9, 0.7),
}
#: browser (as ua-parser names it) → (User-Agent, share, startup multiplier)
BROWSERS: Mapping[str, tuple[str, float, float]] = {
    "Chrome": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/140.0.0.0 Safari/537.36", 0.55, 1.0),
    "Mobile Safari": ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
                      "Gecko) Version/17.2 Mobile/15E148 Safari/604.1", 0.25, 0.9),
    "Firefox": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", 0.12, 1.1),
    "Edge": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/140.0.0.0 Safari/537.36 Edg/140.0.0.0", 0.08, 1.05),
}
#: CDN → (share, startup multiplier, failure multiplier)
CDNS: Mapping[str, tuple[float, float, float]] = {
    "cdn-a": (0.5, 1.0, 1.0), "cdn-b": (0.3, 1.05, 1.3), "cdn-c": (0.2, 1.15, 1.0),
}
_STARTUP_MS = 800.0
_EBVS = 0.02
_FAILURE = 0.008
_REBUFFERS_PER_MINUTE = 0.06
_HEARTBEAT_MS = 10_000
_METRIC_EFFECTS = frozenset(DETECTED_METRICS)


@dataclass(frozen=True)
class Planted:
    """An incident: ``metric`` ``factor`` times worse for the views matching every ``where`` value (dimension →
    value) that end from ``start`` for ``minutes``. Metrics: ``rebuffer_percentage`` (rebuffers per minute
    watched ×factor), ``video_startup_time`` (startup ×factor), ``playback_failure_percentage`` (failure
    probability ×factor)."""

    metric: str
    where: tuple[tuple[str, str], ...]
    start: datetime
    minutes: float
    factor: float

    def __post_init__(self) -> None:
        if self.metric not in _METRIC_EFFECTS:
            raise ValueError(f"cannot plant {self.metric!r}: one of {', '.join(sorted(_METRIC_EFFECTS))}")
        if self.factor <= 0 or self.minutes <= 0 or not self.where:
            raise ValueError("a planted incident needs a positive factor and duration and some dimension values")
        object.__setattr__(self, "where", tuple(sorted(self.where)))

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)

    def describe(self) -> str:
        where = ", ".join(f"{name}={value}" for name, value in self.where)
        return f"{self.metric} ×{self.factor:g} on {where} from {self.start:%Y-%m-%d %H:%M} for {self.minutes:g} min"


@dataclass(frozen=True)
class Scenario:
    """What to simulate: ``days`` of traffic from ``start`` (UTC), ``views_per_minute`` on average over a day,
    ``incidents`` planted, ``crowds`` ((start, minutes, factor): more views, same QoE), drawn with ``seed``."""

    start: datetime
    days: float
    views_per_minute: float
    seed: int = 16
    incidents: tuple[Planted, ...] = ()
    crowds: tuple[tuple[datetime, float, float], ...] = ()
    #: How much worse rebuffering gets at the evening peak (1.5: 1.5× at 20:00 UTC, 1× at 08:00).
    congestion: float = 1.5
    #: The median minutes a view plays (log-normal; from 0.3 to 25 minutes).
    watch_minutes: float = 3.0
    #: Views on each UTC day of the week, Monday first, relative to the daily average (1.15 on Saturday: 15 %
    #: more views all that day). All 1: no weekly pattern.
    weekly: tuple[float, ...] = (1.0,) * 7

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("the scenario's start must be timezone-aware")
        if self.days <= 0 or self.views_per_minute <= 0:
            raise ValueError("days and views_per_minute must be positive")
        if len(self.weekly) != 7 or min(self.weekly) <= 0:
            raise ValueError("weekly: seven positive factors, Monday first")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


def default_scenario(seed: int = 16, days: float = 4, views_per_minute: float = 60) -> Scenario:
    """Four days from 2026-11-30 with four incidents on days 3 and 4 (rebuffering ×4 on AMAZON-02 in Brazil,
    startup ×2.5 on Firefox, failures ×8 on cdn-c, rebuffering ×3 on cdn-b in India) and a flash crowd (3× the
    views for 30 minutes, no QoE change) that a detector must not take for an incident."""
    start = datetime(2026, 11, 30, tzinfo=UTC)
    day = timedelta(days=1)
    return Scenario(
        start=start, days=days, views_per_minute=views_per_minute, seed=seed,
        incidents=(
            Planted("rebuffer_percentage", (("asn", "AMAZON-02"), ("country", "BR")),
                    start + 2 * day + timedelta(hours=14, minutes=5), 40, 4.0),
            Planted("video_startup_time", (("browser", "Firefox"),),
                    start + 2 * day + timedelta(hours=20, minutes=10), 45, 2.5),
            Planted("playback_failure_percentage", (("cdn", "cdn-c"),),
                    start + 3 * day + timedelta(hours=3, minutes=30), 30, 8.0),
            Planted("rebuffer_percentage", (("cdn", "cdn-b"), ("country", "IN")),
                    start + 3 * day + timedelta(hours=11), 45, 3.0),
        ),
        crowds=((start + 3 * day + timedelta(hours=16), 30, 3.0),),
    )


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass
class Simulation:
    """Every view of ``scenario``, drawn at construction (a few seconds per million views)."""

    scenario: Scenario
    table: ViewTable = field(init=False)
    network: np.ndarray = field(init=False, repr=False)  # index into NETWORKS

    def __post_init__(self) -> None:
        scenario = self.scenario
        rng = np.random.default_rng(scenario.seed)
        minutes = int(round(scenario.days * 1440))
        start_ms = _ms(scenario.start)
        minute_starts = start_ms + 60_000 * np.arange(minutes, dtype=np.int64)
        hours = ((minute_starts // 1000) % 86400) / 3600.0
        peak = (1 + np.cos(2 * math.pi * (hours - 20) / 24)) / 2  # 1 at 20:00 UTC, 0 at 08:00
        rate = scenario.views_per_minute * (0.55 + 0.9 * peak)
        weekday = (minute_starts // 86_400_000 + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
        rate = rate * np.asarray(scenario.weekly, dtype=float)[weekday]
        for crowd_start, crowd_minutes, factor in scenario.crowds:
            inside = (minute_starts >= _ms(crowd_start)) & (minute_starts < _ms(crowd_start) + crowd_minutes * 60_000)
            rate = np.where(inside, rate * factor, rate)
        counts = rng.poisson(rate)
        n = int(counts.sum())
        end_ms = np.repeat(minute_starts, counts) + rng.integers(0, 60_000, n)
        end_ms.sort()

        country_names = list(COUNTRIES)
        country = rng.choice(len(country_names), n, p=[COUNTRIES[c][0] for c in country_names])
        network = np.empty(n, dtype=np.int64)
        for index, name in enumerate(country_names):
            members = [i for i, item in enumerate(NETWORKS) if item[1] == name]
            shares = np.array([NETWORKS[i][3] for i in members])
            chosen = country == index
            network[chosen] = rng.choice(members, int(chosen.sum()), p=shares / shares.sum())
        browser_names, cdn_names = list(BROWSERS), list(CDNS)
        browser = rng.choice(len(browser_names), n, p=[BROWSERS[b][1] for b in browser_names])
        cdn = rng.choice(len(cdn_names), n, p=[CDNS[c][0] for c in cdn_names])
        dimensions = {
            "country": np.array([NETWORKS[i][1] for i in range(len(NETWORKS))], dtype=object)[network],
            "asn": np.array([NETWORKS[i][2] for i in range(len(NETWORKS))], dtype=object)[network],
            "browser": np.array(browser_names, dtype=object)[browser],
            "cdn": np.array(cdn_names, dtype=object)[cdn],
        }

        startup_factor = (np.array([COUNTRIES[c][1] for c in country_names])[country]
                          * np.array([BROWSERS[b][2] for b in browser_names])[browser]
                          * np.array([CDNS[c][1] for c in cdn_names])[cdn])
        rebuffer_factor = np.array([COUNTRIES[c][2] for c in country_names])[country]
        end_hours = ((end_ms // 1000) % 86400) / 3600.0
        rebuffer_factor = rebuffer_factor * (1 + (scenario.congestion - 1) * (1 + np.cos(
            2 * math.pi * (end_hours - 20) / 24)) / 2)
        failure_p = _FAILURE * np.array([CDNS[c][2] for c in cdn_names])[cdn]
        for incident in scenario.incidents:
            hit = (end_ms >= _ms(incident.start)) & (end_ms < _ms(incident.end))
            for name, value in incident.where:
                hit &= dimensions[name] == value
            if incident.metric == "rebuffer_percentage":
                rebuffer_factor = np.where(hit, rebuffer_factor * incident.factor, rebuffer_factor)
            elif incident.metric == "video_startup_time":
                startup_factor = np.where(hit, startup_factor * incident.factor, startup_factor)
            else:
                failure_p = np.where(hit, np.minimum(0.9, failure_p * incident.factor), failure_p)

        # what happens in each view
        startup = np.maximum(50, np.round(_STARTUP_MS * startup_factor * rng.lognormal(0, 0.45, n))).astype(np.int64)
        ebvs = rng.random(n) < _EBVS
        failed = ~ebvs & (rng.random(n) < failure_p)
        before_start = failed & (rng.random(n) < 0.5)
        playing = np.round(60_000 * np.clip(rng.lognormal(math.log(scenario.watch_minutes), 0.8, n), 0.3, 25)).astype(np.int64)
        playing = playing // 1000 * 1000  # whole seconds: heartbeats land on them
        playing = np.where(failed & ~before_start, np.maximum(1000, playing // 3 // 1000 * 1000), playing)
        started = ~ebvs & ~before_start
        rebuffer_count = np.where(started, rng.poisson(_REBUFFERS_PER_MINUTE * rebuffer_factor * playing / 60_000), 0)
        lengths = np.maximum(100, np.round(rng.lognormal(math.log(1500), 0.6, int(rebuffer_count.sum())))).astype(
            np.int64)
        offsets = np.concatenate([[0], np.cumsum(rebuffer_count)])
        rebuffer_ms = np.add.reduceat(np.concatenate([lengths, [0]]), offsets[:-1]) * (rebuffer_count > 0)
        waited = np.round(rng.uniform(1500, 6000, n)).astype(np.int64)  # play → exit, or → error before start
        watch = np.where(started, startup + playing + rebuffer_ms, waited)
        self.network = network
        self._lengths, self._offsets = lengths, offsets
        self._startup, self._playing, self._waited = startup, playing, waited
        self._ebvs, self._failed, self._before_start = ebvs, failed, before_start
        self.table = ViewTable(
            at_ms=end_ms, dimensions=dimensions,
            watch_ms=watch.astype(np.float64), rebuffer_ms=rebuffer_ms.astype(np.float64),
            rebuffer_count=rebuffer_count.astype(np.float64),
            failed=failed.astype(np.float64), exited=ebvs.astype(np.float64),
            startup_ms=np.where(started, startup, np.nan).astype(np.float64),
        )

    def __len__(self) -> int:
        return len(self.table)

    def hourly(self) -> tuple[np.ndarray, np.ndarray]:
        """``(views, average concurrent viewers)`` per hour from the scenario's start, as
        :func:`kinoray.analytics.forecast.hourly_traffic` counts them from the event log: a view starts its
        watch time before it ends (the table's ``at_ms``) and is present in between."""
        origin = _ms(self.scenario.start)
        hours = math.ceil(self.scenario.days * 24)
        end = (self.table.at_ms - origin) / 1000.0
        begin = np.maximum(0.0, end - self.table.watch_ms / 1000.0)
        views = np.bincount(np.clip((begin // 3600).astype(int), 0, hours - 1), minlength=hours).astype(float)
        # presence per hour from the running count of starts and ends (exact, without a pass per hour)
        edges = np.arange(hours + 1) * 3600.0
        order_begin, order_end = np.sort(begin), np.sort(end)
        cumulative_begin = np.concatenate([[0.0], np.cumsum(order_begin)])
        cumulative_end = np.concatenate([[0.0], np.cumsum(order_end)])

        def seconds_before(edge: float) -> float:  # Σ over views of their presence before ``edge``
            started = np.searchsorted(order_begin, edge)
            ended = np.searchsorted(order_end, edge)
            return (started * edge - cumulative_begin[started]) - (ended * edge - cumulative_end[ended])

        present = np.diff([seconds_before(edge) for edge in edges]) / 3600.0
        return views, present

    def truth(self) -> Sequence[Planted]:
        return self.scenario.incidents

    # --- one view as beacons ------------------------------------------------------------------------------
    def beacons(self, index: int, view_id: str | None = None) -> tuple[list[dict[str, Any]], str, str]:
        """View ``index`` as the Mux Data SDK's beacons (short keys, in order) with the ``User-Agent`` and
        client address it is sent from. The last event is sent at the view's end (``table.at_ms``)."""
        table = self.table
        address = NETWORKS[int(self.network[index])][0]
        browser = str(table.dimensions["browser"][index])
        view = view_id or f"sim-{self.scenario.seed}-{index:08d}"
        end = int(table.at_ms[index])
        started = not (self._ebvs[index] or self._before_start[index])
        startup, playing = int(self._startup[index]), int(self._playing[index])
        lengths = [int(x) for x in self._lengths[self._offsets[index]:self._offsets[index + 1]]]
        watch = int(table.watch_ms[index])
        now = end - watch - 20  # play is sent 20 ms after playerready: the last event is sent at ``end``
        events: list[dict[str, Any]] = []

        def emit(at: int, name: str, **fields: Any) -> None:
            events.append({"e": name, "xid": view, "uti": at, "xsqno": len(events) + 1, **fields})

        emit(now, "playerready", pnm="kinoray-sim", psw="hls.js", vdn=str(table.dimensions["cdn"][index]),
             ake="sim", vtt=f"Simulated {index % 20}", uusid=f"viewer-{index % 997}", pwd=1280, pht=720)
        emit(now + 10, "viewstart")
        emit(now + 20, "play")
        at = now + 20
        if not started:
            if self._ebvs[index]:
                emit(at + int(self._waited[index]), "viewend")
            else:
                emit(at + int(self._waited[index]), "error", percd=2, perme="media error")
            return events, BROWSERS[browser][0], address
        emit(at, "renditionchange", vsobi=2_500_000, vsowd=1280, vsoht=720)
        at += startup
        emit(at, "playing", pphti=0)
        playhead = 0
        # rebuffers spread over the playing time, each after a different whole number of seconds of playing
        stalls: dict[int, int] = {}
        second = 0
        for k, length in enumerate(lengths, start=1):
            second = max(second + 1000, (k * playing // (len(lengths) + 1)) // 1000 * 1000)
            stalls[second] = length
        for second in range(1000, playing + 1, 1000):
            at += 1000
            playhead += 1000
            if second in stalls:
                emit(at, "rebufferstart", pphti=playhead)
                at += stalls[second]
                emit(at, "rebufferend", pphti=playhead)
            elif second % _HEARTBEAT_MS == 0 and second != playing:
                emit(at, "hb", pphti=playhead)
        if self._failed[index]:
            emit(at, "error", percd=3, perme="network error", pphti=playhead)
        else:
            emit(at, "pause", pphti=playhead)
            emit(at, "viewend", pphti=playhead)
        return events, BROWSERS[browser][0], address
