"""Prometheus metrics, defined once.

Two registries, because the API ingress and the job runner are different processes under Ray Serve:

- :data:`API_REGISTRY` — what happens in an API replica: requests, latency, upload bytes.
- ``prometheus_client.REGISTRY`` (the default) — what happens in the runner: jobs, chunks encoded by backend,
  encoder fallbacks (``kinoray.encoders.registry``), webhook deliveries.

``GET /metrics`` (:mod:`kinoray.serve.metrics`) serves the replica's API registry, the runner's default registry
(fetched from the runner deployment, or this process's own when both run in one process) and gauges read from
the database (jobs by state, assets by status).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ALERT_EVALUATIONS",
    "API_REGISTRY",
    "AUTH_THROTTLED",
    "CHUNKS_ENCODED",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "INCIDENT_TRANSITIONS",
    "LIVE_INGEST_REFUSED",
    "JOBS_FINISHED",
    "RATE_LIMIT_FALLBACKS",
    "REQUESTS_SHED",
    "RUNNER_METRICS_UP",
    "UPLOAD_BYTES",
    "WEBHOOK_DELIVERIES",
]

API_REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("kinoray_http_requests_total", "HTTP requests answered, by route template and status",
                        ["method", "route", "status"], registry=API_REGISTRY)
HTTP_LATENCY = Histogram("kinoray_http_request_duration_seconds", "Time to answer an HTTP request",
                         ["method", "route"], registry=API_REGISTRY,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
UPLOAD_BYTES = Counter("kinoray_upload_bytes_total", "Bytes received by direct uploads (tus and PUT)",
                       registry=API_REGISTRY)
RATE_LIMIT_FALLBACKS = Counter("kinoray_ratelimit_fallback_total",
                               "Requests rate-limited in-process because Redis was unreachable",
                               registry=API_REGISTRY)
REQUESTS_SHED = Counter("kinoray_requests_shed_total",
                        "API requests refused before routing: over_capacity (load shedding), request_too_large, "
                        "request_timeout", ["reason"], registry=API_REGISTRY)
AUTH_THROTTLED = Counter("kinoray_auth_throttled_total",
                         "Credentials refused unchecked because their client or token id failed too often",
                         ["by"], registry=API_REGISTRY)
RUNNER_METRICS_UP = Gauge("kinoray_runner_metrics_up",
                          "1 if the last /metrics scrape got the job runner's metrics, else 0",
                          registry=API_REGISTRY)

JOBS_FINISHED = Counter("kinoray_jobs_finished_total", "Transcode jobs that ended, by final state",
                        ["state"])
CHUNKS_ENCODED = Counter("kinoray_chunks_encoded_total", "Video chunks encoded, by encoder backend",
                         ["backend"])
LIVE_INGEST_REFUSED = Counter("kinoray_live_ingest_refused_total",
                              "Live publishers (RTMP connections, WHIP offers) refused before any media was "
                              "accepted, by reason (bad_key, no_key, disabled, busy, protocol, timeout, "
                              "too_many_connections, ...)", ["reason"])
WEBHOOK_DELIVERIES = Counter("kinoray_webhook_deliveries_total",
                             "Webhook delivery attempts, by outcome (delivered, failed, gave_up, disabled)",
                             ["outcome"])
ALERT_EVALUATIONS = Counter("kinoray_alert_evaluations_total",
                            "Alert rule evaluations, by rule kind and outcome (ok, unavailable: the anomaly "
                            "detector did not answer, failed)", ["kind", "outcome"])
INCIDENT_TRANSITIONS = Counter("kinoray_data_incident_transitions_total",
                               "Data incidents opened and closed by the alert evaluator", ["transition"])
