"""Real time: who is watching now, and how it goes, by dimension (Mux's real-time metrics).

Every collector process (beacons, and CMCD at the edge) keeps each view's *presence* — a small record of its
state now (``starting``, ``playing``, ``rebuffering``, ``seeking``, ``paused``, ``ended``, ``failed``), whether
it has started, its bitrate and rendition height, its last event (server clock) and its dimensions
(:data:`REALTIME_DIMENSIONS`) — stepped by :func:`presence_step` and written to a :class:`Presences` store:
:class:`RedisPresences` when ``KINORAY_REDIS_URL`` is set (every process of every node writes and reads the
same), else :class:`MemoryPresences` (one process). A write is visible to the next read: real time lags the
player by the SDK's batching (mux-embed sends every few seconds) or, for CMCD, by the edge's 1 s drain.

A view is *current* while its last event is at most ``window`` seconds old (default 30: the SDKs send a
heartbeat every 10 s while playing). Metrics (:data:`REALTIME_METRICS`, Mux's ids) over the current views:

- ``current-concurrent-viewers``: current views starting, playing, rebuffering (under 5 minutes), seeking, or
  that just failed — not paused or ended (Mux's CCV);
- ``current-rebuffering-percentage``: the share of those rebuffering now;
- ``playback-failure-percentage`` / ``video-startup-failure-percentage`` / ``exits-before-video-start``: the
  share of current views (the start attempts of the window) that failed / failed before their first frame /
  ended before it without an error;
- ``current-average-bitrate``: the mean rendition bitrate (bits/s) of the views playing now.

Timeseries: each presence write also lands in its minute's bucket (kept 24 hours), and a bucket's value is the
metric over the views seen in that minute (per dimension value: :func:`breakdown_timeseries`). The histogram
metric ``video-startup-time`` (:func:`histogram_timeseries`) counts each view once, in the minute it started:
its startup time (``play`` → first ``playing`` on the viewer's clock, kept in the presence as ``startup_ms``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy

__all__ = ["HISTOGRAM_METRICS", "REALTIME_DIMENSIONS", "REALTIME_METRICS", "STARTUP_BUCKETS_MS", "MemoryPresences",
           "Presences", "RedisPresences", "breakdown", "breakdown_timeseries", "histogram_timeseries", "metric_value",
           "presence_step", "startup_histogram", "timeseries"]

REALTIME_METRICS = ("current-concurrent-viewers", "current-rebuffering-percentage", "exits-before-video-start",
                    "playback-failure-percentage", "current-average-bitrate", "video-startup-failure-percentage")
REALTIME_DIMENSIONS = ("asn", "asset_id", "browser", "cdn", "country", "operating_system", "playback_id",
                       "player_name", "region", "source_type", "stream_type", "sub_property_id", "video_series",
                       "video_source_height", "video_title", "viewer_device_category")
_WATCHING = frozenset({"starting", "playing", "rebuffering", "seeking", "failed"})
_LONG_REBUFFER_MS = 5 * 60_000
BUCKET_SECONDS = 60
HISTORY_SECONDS = 24 * 3600


def presence_step(previous: Mapping[str, Any] | None, name: str, event: Mapping[str, Any],
                  dimensions: Mapping[str, Any], at_ms: int) -> dict[str, Any]:
    """A view's presence after one event (``event``: its fields; ``dimensions``: the view's as they stand)."""
    record: dict[str, Any] = dict(previous) if previous else {"state": "starting", "started": False, "first_ms": at_ms}
    state = record["state"]
    viewer_time = event.get("viewer_time")
    clock = isinstance(viewer_time, int | float) and not isinstance(viewer_time, bool)
    if name == "play" and not record["started"] and "play_vt" not in record and clock:
        record["play_vt"] = viewer_time  # the play instruction, on the viewer's clock (as views.py measures)
    if name == "playing" or name == "rebufferend" and state == "rebuffering" or name == "seeked" and state == "seeking":
        if not record["started"]:
            record["started_ms"] = at_ms
            if name == "playing" and clock and "play_vt" in record:
                record["startup_ms"] = max(0, int(viewer_time - record["play_vt"]))
        state, record["started"] = "playing", True
    elif name in ("play", "viewstart") and state in ("paused", "ended") and not record["started"]:
        state = "starting"
    elif name == "play" and state == "paused":
        state = "playing"
    elif name == "pause":
        state = "paused"
    elif name == "rebufferstart" and record["started"]:
        state = "rebuffering"
        record["rebuffer_since"] = at_ms
    elif name == "seeking":
        state = "seeking"
    elif name in ("ended", "viewend"):
        state = "ended"
    elif name == "error" and event.get("player_error_severity") != "warning":
        state = "failed"
    if state != "rebuffering":
        record.pop("rebuffer_since", None)
    record["state"] = state
    for source, target in (("video_source_bitrate", "bitrate"), ("video_source_height", "height")):
        value = event.get(source)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            record[target] = value
    record["last_ms"] = max(at_ms, record.get("last_ms", at_ms))
    record["view_id"] = str(event.get("view_id") or dimensions.get("view_id") or record.get("view_id"))
    record["env_key"] = dimensions.get("env_key") or record.get("env_key")  # whose Data it is (not a dimension)
    dims = {name: dimensions.get(name) for name in REALTIME_DIMENSIONS if dimensions.get(name) is not None}
    if record.get("height"):
        dims["video_source_height"] = str(int(record["height"]))
    record["dimensions"] = dims
    return record


# --- stores -------------------------------------------------------------------------------------------------
class Presences(Protocol):
    window: float

    def update(self, records: Sequence[Mapping[str, Any]]) -> None: ...

    def current(self, now: float | None = None) -> list[dict[str, Any]]: ...

    def history(self, start: float, now: float | None = None) -> dict[int, list[dict[str, Any]]]: ...

    def forget(self, view_ids: Iterable[str]) -> None: ...

    def get_many(self, view_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


def _bucket(ms: int) -> int:
    return ms // 1000 // BUCKET_SECONDS * BUCKET_SECONDS


class MemoryPresences:
    """One process's presences (no Redis)."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.window, self.clock = window, clock
        self._views: dict[str, dict[str, Any]] = {}
        self._buckets: dict[int, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def update(self, records: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            for record in records:
                self._views[record["view_id"]] = dict(record)
                self._buckets.setdefault(_bucket(record["last_ms"]), {})[record["view_id"]] = dict(record)
            oldest = self.clock() - HISTORY_SECONDS
            for bucket in [b for b in self._buckets if b < oldest]:
                del self._buckets[bucket]
            if len(self._views) > 200_000:
                limit = (self.clock() - self.window) * 1000
                self._views = {k: v for k, v in self._views.items() if v["last_ms"] >= limit}

    def current(self, now: float | None = None) -> list[dict[str, Any]]:
        limit = ((now or self.clock()) - self.window) * 1000
        with self._lock:
            return [dict(record) for record in self._views.values() if record["last_ms"] >= limit]

    def history(self, start: float, now: float | None = None) -> dict[int, list[dict[str, Any]]]:
        end = now or self.clock()
        with self._lock:
            return {bucket: list(views.values()) for bucket, views in self._buckets.items()
                    if start - BUCKET_SECONDS < bucket <= end}

    def get_many(self, view_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The presences of ``view_ids`` that are known (current or not)."""
        with self._lock:
            return {view_id: dict(self._views[view_id]) for view_id in view_ids if view_id in self._views}

    def forget(self, view_ids: Iterable[str]) -> None:
        with self._lock:
            for view_id in view_ids:
                self._views.pop(view_id, None)
                for views in self._buckets.values():
                    views.pop(view_id, None)


class RedisPresences:
    """Presences in Redis, shared by every collector process: ``kinoray:rt:views`` (sorted set, view id by last
    event ms), ``kinoray:rt:view:<id>`` (the record, JSON, expiring after the window) and
    ``kinoray:rt:m:<minute>`` (hash of the records seen that minute, expiring after 24 hours)."""

    PREFIX = "kinoray:rt"

    def __init__(self, url: str, window: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.window, self.clock = window, clock

    def update(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            body = json.dumps(record, separators=(",", ":"))
            pipe.zadd(f"{self.PREFIX}:views", {record["view_id"]: record["last_ms"]})
            pipe.set(f"{self.PREFIX}:view:{record['view_id']}", body, ex=int(self.window) + 60)
            bucket = f"{self.PREFIX}:m:{_bucket(record['last_ms'])}"
            pipe.hset(bucket, record["view_id"], body)
            pipe.expire(bucket, HISTORY_SECONDS + BUCKET_SECONDS)
        pipe.execute()

    def current(self, now: float | None = None) -> list[dict[str, Any]]:
        limit = int(((now or self.clock()) - self.window) * 1000)
        self.client.zremrangebyscore(f"{self.PREFIX}:views", "-inf", limit - 120_000)
        ids = self.client.zrangebyscore(f"{self.PREFIX}:views", limit, "+inf")
        if not ids:
            return []
        bodies = self.client.mget([f"{self.PREFIX}:view:{bytes(view_id).decode()}" for view_id in ids])  # type: ignore[arg-type]
        records = [json.loads(body) for body in bodies if body]
        return [record for record in records if record["last_ms"] >= limit]

    def history(self, start: float, now: float | None = None) -> dict[int, list[dict[str, Any]]]:
        end = now or self.clock()
        buckets = list(range(int(start) // BUCKET_SECONDS * BUCKET_SECONDS, int(end) + 1, BUCKET_SECONDS))
        pipe = self.client.pipeline(transaction=False)
        for bucket in buckets:
            pipe.hvals(f"{self.PREFIX}:m:{bucket}")
        return {bucket: [json.loads(body) for body in bodies]
                for bucket, bodies in zip(buckets, pipe.execute(), strict=True) if bodies}

    def get_many(self, view_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The presences of ``view_ids`` still kept (a window and a minute after their last event)."""
        if not view_ids:
            return {}
        bodies = self.client.mget([f"{self.PREFIX}:view:{view_id}" for view_id in view_ids])
        return {view_id: json.loads(body) for view_id, body in zip(view_ids, bodies, strict=True) if body}

    def forget(self, view_ids: Iterable[str]) -> None:
        ids = list(view_ids)
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(f"{self.PREFIX}:views", *ids)
        pipe.delete(*(f"{self.PREFIX}:view:{view_id}" for view_id in ids))
        for key in self.client.scan_iter(f"{self.PREFIX}:m:*", count=1000):
            pipe.hdel(key, *ids)
        pipe.execute()


# --- metrics ------------------------------------------------------------------------------------------------
def _concurrent(records: Iterable[Mapping[str, Any]], now_ms: int) -> list[Mapping[str, Any]]:
    return [r for r in records if r["state"] in _WATCHING
            and not (r["state"] == "rebuffering" and now_ms - r.get("rebuffer_since", now_ms) > _LONG_REBUFFER_MS)]


def metric_value(metric: str, records: Sequence[Mapping[str, Any]], now_ms: int) -> float | None:
    """``metric`` (one of :data:`REALTIME_METRICS`) over the presences ``records``."""
    concurrent = _concurrent(records, now_ms)
    if metric == "current-concurrent-viewers":
        return float(len(concurrent))
    if metric == "current-rebuffering-percentage":
        return sum(r["state"] == "rebuffering" for r in concurrent) / len(concurrent) if concurrent else None
    if metric == "current-average-bitrate":
        rates = [r["bitrate"] for r in concurrent if r["state"] == "playing" and r.get("bitrate")]
        return sum(rates) / len(rates) if rates else None
    if not records:
        return None
    if metric == "playback-failure-percentage":
        return sum(r["state"] == "failed" for r in records) / len(records)
    if metric == "video-startup-failure-percentage":
        return sum(r["state"] == "failed" and not r["started"] for r in records) / len(records)
    if metric == "exits-before-video-start":
        return sum(r["state"] == "ended" and not r["started"] for r in records) / len(records)
    raise KeyError(metric)


def breakdown(metric: str, records: Sequence[Mapping[str, Any]], dimension: str, now_ms: int) -> list[dict[str, Any]]:
    """One row per value of ``dimension`` (views without one under ``null``): the metric, the concurrent and
    starting viewers, and ``negative_impact`` (1 = the value whose viewers suffer most, by the metric's excess
    over all views times its viewers; for CCV and bitrate, the most viewers first)."""
    groups: dict[str | None, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(record.get("dimensions", {}).get(dimension), []).append(record)
    overall = metric_value(metric, records, now_ms) or 0.0
    rows = []
    for value, members in groups.items():
        found = metric_value(metric, members, now_ms)
        concurrent = _concurrent(members, now_ms)
        if metric in ("current-concurrent-viewers", "current-average-bitrate"):
            harm = float(len(concurrent))
        else:
            harm = ((found or 0.0) - overall) * len(members)
        rows.append((harm, {"value": value, "metric_value": found, "concurrent_viewers": len(concurrent),
                            "starting_up_viewers": sum(r["state"] == "starting" for r in concurrent)}))
    rows.sort(key=lambda pair: (-pair[0], str(pair[1]["value"])))
    return [{**row, "negative_impact": rank} for rank, (_, row) in enumerate(rows, start=1)]


#: Histogram metrics (Mux's ``histogram-timeseries``): the video startup time (play → first frame, viewer clock)
#: of the views that started in each minute, in these buckets (ms, ``end`` exclusive; the last has no end).
HISTOGRAM_METRICS = ("video-startup-time",)
STARTUP_BUCKETS_MS: tuple[tuple[int, int | None], ...] = (
    (0, 500), (500, 1000), (1000, 2000), (2000, 5000), (5000, 10_000), (10_000, None))


def startup_histogram(records: Iterable[Mapping[str, Any]], bucket: int) -> dict[str, Any]:
    """The startup times of the views in ``records`` that started in the minute ``bucket`` (unix s): ``sum``
    (views), ``average``/``median``/``p95`` (ms, interpolated; ``None`` without views), ``bucket_values``
    (``{count, percentage}`` per :data:`STARTUP_BUCKETS_MS` bucket, percentages 0–100) and ``max_percentage``."""
    times = [float(r["startup_ms"]) for r in records
             if r.get("startup_ms") is not None and _bucket(int(r.get("started_ms", -1))) == bucket]
    counts = [sum(low <= t and (high is None or t < high) for t in times) for low, high in STARTUP_BUCKETS_MS]
    percentages = [100.0 * count / len(times) if times else 0.0 for count in counts]
    return {"sum": len(times), "average": sum(times) / len(times) if times else None,
            "median": float(numpy.percentile(times, 50)) if times else None,
            "p95": float(numpy.percentile(times, 95)) if times else None, "max_percentage": max(percentages),
            "bucket_values": [{"count": c, "percentage": p} for c, p in zip(counts, percentages, strict=True)]}


def histogram_timeseries(store: Presences, start: float, now: float,
                         keep: Callable[[Mapping[str, Any]], bool] = lambda _: True) -> list[dict[str, Any]]:
    """:func:`startup_histogram` per minute from ``start`` to ``now`` (``timestamp``: the minute, ISO)."""
    history = store.history(start, now)
    return [{"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bucket)),
             **startup_histogram([r for r in history.get(bucket, []) if keep(r)], bucket)}
            for bucket in range(int(start) // BUCKET_SECONDS * BUCKET_SECONDS, int(now) + 1, BUCKET_SECONDS)]


def breakdown_timeseries(metric: str, store: Presences, start: float, now: float, dimension: str,
                         keep: Callable[[Mapping[str, Any]], bool] = lambda _: True) -> list[dict[str, Any]]:
    """One point per minute from ``start`` to ``now``: ``{date, values}``, ``values`` the :func:`breakdown` of
    the views seen in that minute."""
    history = store.history(start, now)
    return [{"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bucket)),
             "values": breakdown(metric, [r for r in history.get(bucket, []) if keep(r)], dimension,
                                 (bucket + BUCKET_SECONDS) * 1000)}
            for bucket in range(int(start) // BUCKET_SECONDS * BUCKET_SECONDS, int(now) + 1, BUCKET_SECONDS)]


def timeseries(metric: str, store: Presences, start: float, now: float,
               keep: Callable[[Mapping[str, Any]], bool] = lambda _: True) -> list[dict[str, Any]]:
    """One point per minute from ``start`` to ``now``: the metric over the views seen in that minute, and how
    many of them were concurrent viewers."""
    history = store.history(start, now)
    points = []
    for bucket in range(int(start) // BUCKET_SECONDS * BUCKET_SECONDS, int(now) + 1, BUCKET_SECONDS):
        records = [r for r in history.get(bucket, []) if keep(r)]
        at_ms = (bucket + BUCKET_SECONDS) * 1000
        points.append({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bucket)),
                       "value": metric_value(metric, records, at_ms) if records else None,
                       "concurrent_viewers": len(_concurrent(records, at_ms))})
    return points
