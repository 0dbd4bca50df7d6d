"""Player analytics ingest, HTTP-free: the per-process collector of Mux Data SDK beacons
(:func:`collector_of`, over :mod:`kinoray.analytics`).

One :class:`kinoray.analytics.Collector` and one :class:`kinoray.analytics.EventWriter` per platform (process):
view states in Redis when ``redis_url`` is set, else in the object store; playback ids mapped to assets
through the database (cached for a minute, unknown ids for 5 s). :func:`close_collector` writes what is
buffered (the edge's lifespan shutdown calls it); :func:`flush_collector` writes it now.

Beside it, per platform (process): the CMCD buffer the edge notes stream requests in (:func:`cmcd_of`), the
real-time presences store (:func:`presences_of`: Redis when ``redis_url`` is set, else memory), and the privacy
duties — :func:`erase_viewer` (``DELETE /data/v1/viewers/{id}``) and :func:`sweep_analytics` (the job runner's
retention sweep).

kinoray's earlier beacon format (``POST /data/v1/events``, rows in the ``view_events`` table) is retired: the
player sends Mux's format to the same collector as Mux's SDKs. The table stays in the schema, unused, until a
migration drops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kinoray.store.db import Database
from kinoray.store.models import Asset, Environment, PlaybackId, ViewEvent
from kinoray.store.scoping import current_env_key_filters

if TYPE_CHECKING:
    from datetime import date

    from kinoray.analytics import Collector, EventWriter
    from kinoray.analytics.cmcd import CmcdBuffer
    from kinoray.analytics.exports import EnvironmentKeys
    from kinoray.analytics.privacy import Erasure
    from kinoray.analytics.realtime import Presences
    from kinoray.control.platform import Platform

log = logging.getLogger(__name__)

__all__ = ["close_collector", "cmcd_of", "collector_of", "erase_viewer", "event_store", "export_environment_day",
           "export_views", "flush_collector", "presences_of", "roll_up_views", "sweep_analytics"]

# --- the Mux Data collector ---------------------------------------------------------------------------------
_collectors: dict[int, tuple[Collector, EventWriter]] = {}
_collectors_lock = threading.Lock()
#: When an erasure looks again (twice the event writers' flush interval, and a second).
LATE_ERASE_SECONDS = 11.0
_presences: dict[int, Presences] = {}
_cmcd: dict[int, CmcdBuffer] = {}
_states: dict[int, Any] = {}


def _cached_scalar(db: Database, select: Callable[[str], Any], ttl: float = 60.0,
                   miss_ttl: float | None = None) -> Callable[[str], str | None]:
    """``key → one value read by select(key)``, each answer kept ``ttl`` seconds (``miss_ttl`` for ``None``),
    the cache emptied past 50,000 keys: the collector's lookups, which must not query per beacon."""
    cache: dict[str, tuple[float, str | None]] = {}

    def lookup(key: str) -> str | None:
        now = time.monotonic()
        found = cache.get(key)
        if found is not None and found[0] > now:
            return found[1]
        with db.reader() as session:
            value = session.scalar(select(key))
        if len(cache) > 50_000:
            cache.clear()
        cache[key] = (now + (ttl if value or miss_ttl is None else miss_ttl), value)
        return value

    return lookup


def _asset_lookup(db: Database, ttl: float = 60.0) -> Callable[[str], str | None]:
    return _cached_scalar(db, lambda playback_id: sa.select(PlaybackId.asset_id).where(PlaybackId.id == playback_id),
                          ttl, miss_ttl=5.0)


def _env_key_fill(db: Database, ttl: float = 60.0) -> Callable[[list[dict[str, Any]]], None]:
    """Fills in place the ``env_key`` of rows whose view sent none (kinoray's own player, CMCD) with the env key
    of the environment of the asset they played, so the view counts in that environment, in the event log and
    in real time alike (:mod:`kinoray.store.scoping`); a key the beacon sent is kept, as Mux keeps it."""
    env_key_of = _cached_scalar(db, lambda asset_id: sa.select(Environment.env_key).join(
        Asset, Asset.environment_id == Environment.id).where(Asset.id == asset_id), ttl)

    def fill(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if not row.get("env_key") and row.get("asset_id"):
                row["env_key"] = env_key_of(row["asset_id"])

    return fill


def event_store(platform: Platform) -> Any:
    """Where the event log lives: the platform's object store."""
    return platform.store


def presences_of(platform: Platform) -> Presences:
    """Where this process writes and reads real-time presences: Redis when ``redis_url`` is set (shared by every
    process), else this process's memory."""
    from kinoray.analytics.realtime import MemoryPresences, RedisPresences

    with _collectors_lock:
        found = _presences.get(id(platform))
        if found is None:
            window = platform.settings.analytics.realtime_window_seconds
            found = (RedisPresences(platform.settings.redis_url, window) if platform.settings.redis_url
                     else MemoryPresences(window))
            _presences[id(platform)] = found
        return found


def _collector(platform: Platform) -> tuple[Collector, EventWriter]:
    from kinoray.analytics import Collector, EventWriter, RedisViewStates, StoreViewStates
    from kinoray.analytics.enrich import use_city_db

    presences = presences_of(platform)
    with _collectors_lock:
        found = _collectors.get(id(platform))
        if found is None:
            use_city_db(platform.settings.analytics.geo_city_db)
            writer = EventWriter(event_store(platform)).start()
            states = (RedisViewStates(platform.settings.redis_url) if platform.settings.redis_url
                      else StoreViewStates(platform.store))
            found = (Collector(states, writer.add, _asset_lookup(platform.db), presences.update,
                               enrich=_env_key_fill(platform.db)), writer)
            _collectors[id(platform)] = found
            _states[id(platform)] = states
        return found


def collector_of(platform: Platform) -> Collector:
    """This process's collector for ``platform`` (built on first use; its writer flushes every 5 s)."""
    return _collector(platform)[0]


def cmcd_of(platform: Platform) -> CmcdBuffer | None:
    """This process's CMCD buffer (the edge notes stream requests in it; drained every second into the event
    log and real time); ``None`` when ``analytics.cmcd`` is off."""
    from kinoray.analytics.cmcd import CmcdBuffer

    if not platform.settings.analytics.cmcd:
        return None
    writer = _collector(platform)[1]
    presences = presences_of(platform)
    with _collectors_lock:
        found = _cmcd.get(id(platform))
        if found is None:
            found = _cmcd[id(platform)] = CmcdBuffer(writer.add, presences.update, address_of=platform.clients.client,
                                                      presences=presences.get_many,
                                                      enrich=_env_key_fill(platform.db)).start()
        return found


def flush_collector(platform: Platform) -> int:
    """Write what ``platform``'s collector (and CMCD buffer) has buffered now; returns the rows written."""
    with _collectors_lock:
        found = _collectors.get(id(platform))
        cmcd = _cmcd.get(id(platform))
    if cmcd is not None:
        cmcd.drain()
    return found[1].flush() if found else 0


def close_collector(platform: Platform) -> None:
    """Write everything ``platform``'s collector buffered and stop its timer (lifespan shutdown)."""
    with _collectors_lock:
        cmcd = _cmcd.pop(id(platform), None)
        found = _collectors.pop(id(platform), None)
        _states.pop(id(platform), None)
    if cmcd is not None:
        cmcd.close()
    if found is not None:
        found[1].close()


# --- privacy ------------------------------------------------------------------------------------------------
def erase_viewer(platform: Platform, viewer_user_id: str) -> Erasure:
    """Delete every view of ``viewer_user_id`` everywhere kinoray keeps it: the event log's partitions (after
    writing what this process has buffered), the daily view exports, the process's parsed-file and view caches, the views' carried
    state and their real-time presence. A second pass :data:`LATE_ERASE_SECONDS` later removes what other edge
    processes still had buffered (they write every 5 s)."""
    from kinoray.analytics import RedisViewStates, StoreViewStates
    from kinoray.analytics.eventlog import FILES
    from kinoray.analytics.exports import erase_from_exports
    from kinoray.analytics.privacy import erase_viewer as erase
    from kinoray.analytics.query import VIEWS

    flush_collector(platform)
    with _collectors_lock:
        states = _states.get(id(platform))
    if states is None:
        states = (RedisViewStates(platform.settings.redis_url) if platform.settings.redis_url
                  else StoreViewStates(platform.store))

    def forget(view_ids: set[str]) -> None:
        FILES.clear()
        VIEWS.clear()
        for view_id in view_ids:
            states.delete(view_id)
        presences_of(platform).forget(view_ids)
        with platform.db.session() as session:  # the retired beacon table, where older views may still be
            for chunk in range(0, len(view_ids), 500):
                session.execute(sa.delete(ViewEvent).where(ViewEvent.view_id.in_(sorted(view_ids)[chunk:chunk + 500])))

    store = event_store(platform)
    scope = current_env_key_filters()  # the caller's environment (read here: the timer's thread has no context)
    erased = erase(store, viewer_user_id, forget_views=forget, env_filters=scope)
    erase_from_exports(store, erased.view_ids)

    def again() -> None:  # what other edge processes still had buffered then has been written by now
        try:
            erase(store, viewer_user_id, view_ids=erased.view_ids, forget_views=forget, env_filters=scope)
        except Exception:  # noqa: BLE001 - a later call erases what this one could not
            log.warning("the second pass of a viewer erasure failed", exc_info=True)

    late = threading.Timer(LATE_ERASE_SECONDS, again)
    late.daemon = True
    late.start()
    return erased


def sweep_analytics(platform: Platform) -> int:
    """The retention sweep (the job runner's): event partitions, view states and view exports older than
    ``analytics.retention_days``; returns the partitions deleted."""
    from kinoray.analytics.exports import sweep_exports
    from kinoray.analytics.privacy import sweep_retention

    days = platform.settings.analytics.retention_days
    return sweep_retention(event_store(platform), days) + sweep_exports(event_store(platform), days)


def roll_up_views(platform: Platform) -> int:
    """The view rollup (the job runner's, every sweep): views final since the last run written as view Parquet
    (:func:`kinoray.analytics.rollup.roll_up`, at most every ``analytics.rollup_window_seconds``), then the
    views still open saved for a starting process to seed from (:meth:`kinoray.analytics.liveviews.LiveViews.save`,
    every sweep: kept in this process between sweeps, so each rebuilds only the views new event files touched);
    returns the views written."""
    from kinoray.analytics.liveviews import LIVE_VIEWS, forget_snapshot
    from kinoray.analytics.rollup import roll_up

    store = event_store(platform)
    if not platform.settings.analytics.rollup:
        forget_snapshot(store)  # one saved while it was on would keep viewers' rows past their retention
        return 0
    done = roll_up(store, min_window_seconds=platform.settings.analytics.rollup_window_seconds)
    if done.watermark is not None:
        LIVE_VIEWS.save(store, done.watermark, datetime.now(UTC))
    return done.views


def _environment_keys(platform: Platform) -> EnvironmentKeys:
    from kinoray.analytics.exports import EnvironmentKeys
    from kinoray.control.environments import environment_keys

    with platform.db.reader() as session:
        return EnvironmentKeys(environment_keys(session))


def export_views(platform: Platform) -> list[str]:
    """The daily view exports (the job runner's, every sweep): each finished day of the last
    ``analytics.export_days`` without a final export of every environment is written, split by environment, and
    each day exported before environments is re-exported so (two days per call at most); returns the days."""
    from kinoray.analytics.exports import export_due

    if not platform.settings.analytics.exports:
        return []
    days = export_due(event_store(platform), _environment_keys(platform),
                      back_days=platform.settings.analytics.export_days)
    if days:
        log.info("view exports written", extra={"days": [day.isoformat() for day in days]})
    return [day.isoformat() for day in days]


def export_environment_day(platform: Platform, day: date, environment_id: str) -> int:
    """``POST /data/v1/exports/views``: write (or rewrite) one environment's export of ``day`` now; returns its
    views."""
    from kinoray.analytics.exports import export_day

    return export_day(event_store(platform), day, _environment_keys(platform), only=environment_id)[environment_id]
