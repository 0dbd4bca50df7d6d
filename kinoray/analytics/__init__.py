"""kinoray's analytics engine (Mux Data on your own storage), pure: no Ray, no HTTP framework.

- :mod:`~kinoray.analytics.keys`: Mux Data SDK short keys → field names;
- :mod:`~kinoray.analytics.collect`: beacon batches in, event rows out (per-view state carried forward);
- :mod:`~kinoray.analytics.enrich`: browser/OS/device and country/ASN of a request;
- :mod:`~kinoray.analytics.eventlog`: the event log, partitioned Parquet in the object store;
- :mod:`~kinoray.analytics.views`: views and their metrics and scores from events;
- :mod:`~kinoray.analytics.query`: Mux Data's metric and video-view queries (DuckDB over the event log and the
  materialized views);
- :mod:`~kinoray.analytics.rollup`, :mod:`~kinoray.analytics.viewstore`: final views materialized as
  partitioned view Parquet (watermark, parts, the metrics as SQL over view rows);
  :mod:`~kinoray.analytics.liveviews`: the views past the watermark, built once and kept between queries;
- :mod:`~kinoray.analytics.cmcd`: CMCD (CTA-5004) keys on stream requests at the edge → ``cmcd`` events;
- :mod:`~kinoray.analytics.realtime`: who is watching now (presences) and Mux's real-time metrics;
- :mod:`~kinoray.analytics.privacy`: retention and erasure by viewer over the event log;
- :mod:`~kinoray.analytics.insights`, :mod:`~kinoray.analytics.compare` (over :mod:`~kinoray.analytics.stats`):
  the dimension values that hurt a metric, every metric side by side, A/B tests with significance;
- :mod:`~kinoray.analytics.errors`: player errors grouped; :mod:`~kinoray.analytics.exports`: daily view
  exports with signed links; :mod:`~kinoray.analytics.forecast`: hourly traffic forecast and its backtest;
- :mod:`~kinoray.analytics.anomaly`: anomaly detection over per-dimension-value metric series and the dimension
  values that explain a degradation (scored on Ray Serve by :mod:`kinoray.serve.anomaly`);
  :mod:`~kinoray.analytics.simulate`: a viewer-traffic simulator with planted incidents (tests, benchmarks).
"""

from kinoray.analytics.cmcd import CmcdBuffer, parse_cmcd
from kinoray.analytics.collect import (
    DIMENSIONS,
    MAX_BATCH_BYTES,
    MAX_EVENTS,
    Collector,
    MemoryViewStates,
    RedisViewStates,
    StoreViewStates,
    parse_batch,
)
from kinoray.analytics.eventlog import EventWriter, read_events
from kinoray.analytics.keys import expand_event, expand_key
from kinoray.analytics.privacy import erase_viewer, sweep_retention
from kinoray.analytics.query import METRICS, Query, parse_filters, parse_timeframe
from kinoray.analytics.realtime import REALTIME_DIMENSIONS, REALTIME_METRICS, MemoryPresences, RedisPresences
from kinoray.analytics.views import View, build_views

__all__ = ["DIMENSIONS", "MAX_BATCH_BYTES", "MAX_EVENTS", "METRICS", "REALTIME_DIMENSIONS", "REALTIME_METRICS",
           "CmcdBuffer", "Collector", "EventWriter", "MemoryPresences", "MemoryViewStates", "Query", "RedisPresences",
           "RedisViewStates", "StoreViewStates", "View", "build_views", "erase_viewer", "expand_event", "expand_key",
           "parse_batch", "parse_cmcd", "parse_filters", "parse_timeframe", "read_events", "sweep_retention"]
