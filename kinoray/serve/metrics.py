"""``GET /metrics`` (Prometheus text) and the middleware that counts and times every HTTP request.

The exposition joins three sources, whose metric names never overlap:

- :data:`kinoray.telemetry.API_REGISTRY` of the replica that answered: requests by method, route template and
  status, their latency histogram, upload bytes, rate-limit fallbacks;
- the job runner's default registry (jobs finished, chunks encoded by backend, encoder fallbacks, webhook
  deliveries, process metrics), fetched from the runner deployment (:func:`set_runner`), or this process's
  own ``prometheus_client.REGISTRY`` when the runner runs in the same process (the test server);
- gauges read from the metadata database (jobs by state, assets and uploads by status, pending webhook
  deliveries), cached for :data:`DB_GAUGES_TTL_SECONDS` so frequent scrapes cost one query batch per window.

``/metrics`` has no authentication: it reveals counts, not customer data, but keep it off the public internet
(firewall it, or expose only the API paths at the load balancer) and scrape it over the cluster network.

Requests are labelled by the matched route's path template (``/video/v1/assets/{asset_id}``), never the raw
path, so ids cannot explode the number of series; a request that matches no route is ``<unmatched>``.

With several API replicas behind the Serve proxy, each scrape reaches one replica, whose request counters
cover only what it answered (``deploy/grafana/README.md`` says what to do about that).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import iter_route_contexts
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Mount, get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kinoray.store.models import JOB_STATES, Asset, AssetStatus, Job, Upload, UploadStatus, WebhookDelivery
from kinoray.telemetry import API_REGISTRY, HTTP_LATENCY, HTTP_REQUESTS, RUNNER_METRICS_UP

__all__ = ["DB_GAUGES_TTL_SECONDS", "RUNNER_TIMEOUT_SECONDS", "UNMATCHED", "CachedDatabaseCollector", "DatabaseGauges", "RequestMetricsMiddleware",
           "database_gauges", "install", "router", "set_runner"]

log = logging.getLogger(__name__)

#: How long database gauges are reused between scrapes.
DB_GAUGES_TTL_SECONDS = 5.0
#: How long a scrape waits for the runner deployment's metrics before answering without them.
RUNNER_TIMEOUT_SECONDS = 5.0
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

router = APIRouter(tags=["system"])
_runner: Any = None


def set_runner(runner: Any) -> None:
    """Where the job runner's metrics come from: a Serve ``DeploymentHandle`` to the runner (its
    ``metrics_text()`` method), or ``None`` for this process's default registry."""
    global _runner
    _runner = runner


async def _runner_metrics() -> bytes:
    if _runner is None:
        return generate_latest(REGISTRY)
    try:
        text = await asyncio.wait_for(_runner.metrics_text.remote(), RUNNER_TIMEOUT_SECONDS)
    except Exception as error:  # a dead or slow runner must not take the API's own metrics down
        log.warning("job runner metrics unavailable", extra={"error": repr(error)})
        RUNNER_METRICS_UP.set(0)
        return b""
    RUNNER_METRICS_UP.set(1)
    return text.encode() if isinstance(text, str) else bytes(text)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}, "description": "Prometheus text format"}})
async def prometheus_metrics() -> Response:
    """Prometheus metrics of this API replica, the job runner and the database. No authentication: scrape
    it over the cluster network and do not expose it publicly."""
    runner_text = await _runner_metrics()
    api_text = await run_in_threadpool(generate_latest, API_REGISTRY)  # reads the DB gauges (cached)
    return Response(api_text + runner_text, media_type=CONTENT_TYPE_PLAIN_0_0_4)


# --- database gauges -----------------------------------------------------------------------------------------


def _gauge_families() -> dict[str, GaugeMetricFamily]:
    return {
        "jobs": GaugeMetricFamily("kinoray_jobs", "Transcode jobs in the database, by state", labels=["state"]),
        "assets": GaugeMetricFamily("kinoray_assets", "Assets in the database, by status", labels=["status"]),
        "uploads": GaugeMetricFamily("kinoray_uploads", "Direct uploads in the database, by status",
                                     labels=["status"]),
        "pending": GaugeMetricFamily("kinoray_webhook_deliveries_pending",
                                     "Webhook deliveries not yet delivered nor given up on"),
    }


def _count_by(session: Any, column: Any, known: Iterable[str]) -> dict[str, int]:
    counts = {value: 0 for value in known}  # every known value, so a series never vanishes at zero
    for value, count in session.execute(sa.select(column, sa.func.count()).group_by(column)):
        counts[str(getattr(value, "value", value))] = int(count)
    return counts


T = TypeVar("T")


class CachedDatabaseCollector(Collector, Generic[T]):
    """A collector of values :meth:`read` from the platform's database at most once per ``ttl`` seconds (scrapes
    in between reuse them). If the database cannot be read, the scrape goes on without these families and the
    error is logged as ``what``."""

    what = "database gauges"

    def __init__(self, ttl: float = DB_GAUGES_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[int, float, T] | None = None  # (id(platform), monotonic, values)

    def invalidate(self) -> None:
        """Forget the cached values: the next scrape reads the database."""
        with self._lock:
            self._cached = None

    @abstractmethod
    def read(self, session: Any) -> T:
        """The values, read from ``session`` (a read-only session of the platform's database)."""

    @abstractmethod
    def families(self, values: T) -> Iterable[Metric]:
        """The metric families ``values`` make."""

    def _values(self) -> T | None:
        from kinoray.errors import ConfigurationError
        from kinoray.serve.deps import get_platform

        try:
            platform = get_platform()
        except ConfigurationError:
            return None
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and self._cached[0] == id(platform) and now - self._cached[1] < self.ttl:
                return self._cached[2]
            try:
                with platform.db.reader() as session:
                    values = self.read(session)
            except Exception as error:  # noqa: BLE001 - a scrape goes on without these families
                log.warning(f"{self.what} unavailable", extra={"error": repr(error)})
                return None
            self._cached = (id(platform), now, values)
            return values

    def collect(self) -> Iterator[Metric]:
        values = self._values()
        if values is not None:
            yield from self.families(values)


class DatabaseGauges(CachedDatabaseCollector[dict[str, Any]]):
    """Jobs, assets and uploads by state, and pending webhook deliveries."""

    def describe(self) -> Iterable[Metric]:
        return list(_gauge_families().values())

    def read(self, session: Any) -> dict[str, Any]:
        return {
            "jobs": _count_by(session, Job.state, JOB_STATES),
            "assets": _count_by(session, Asset.status, [status.value for status in AssetStatus]),
            "uploads": _count_by(session, Upload.status, [status.value for status in UploadStatus]),
            "pending": session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)
                                      .where(WebhookDelivery.next_attempt_at.is_not(None))) or 0,
        }

    def families(self, values: dict[str, Any]) -> Iterable[Metric]:
        families = _gauge_families()
        for name in ("jobs", "assets", "uploads"):
            for value, count in sorted(values[name].items()):
                families[name].add_metric([value], count)
        families["pending"].add_metric([], values["pending"])
        return families.values()


#: The collector registered on :data:`~kinoray.telemetry.API_REGISTRY`.
database_gauges = DatabaseGauges()
API_REGISTRY.register(database_gauges)


# --- request metrics -----------------------------------------------------------------------------------------


class RequestMetricsMiddleware:
    """Pure ASGI (bodies stream through untouched): counts every HTTP request in
    ``kinoray_http_requests_total{method,route,status}`` and times it, until its last byte is sent, in
    ``kinoray_http_request_duration_seconds{method,route}``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[int, list[tuple[Any, str]]] = {}  # id(route) -> [(path regex, path template)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        app, root_path = scope.get("app"), scope.get("root_path", "")
        status = 500  # what the error middleware answers if the app raises before responding

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = self._route_template(scope, app, root_path)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)

    def _route_template(self, scope: Scope, app: Any, root_path: str) -> str:
        route = scope.get("route")
        if not isinstance(route, BaseRoute):
            return UNMATCHED
        candidates = self._templates.get(id(route))
        if candidates is None:
            self._index_routes(app)
            candidates = self._templates.setdefault(id(route), [])
        if candidates:
            if len(candidates) == 1:
                return candidates[0][1]
            path = get_route_path({**scope, "root_path": root_path})
            for regex, template in candidates:  # one route included under several prefixes
                if regex.match(path):
                    return template
        # A route of a mounted sub-application: the mount's prefix (already in root_path) + its own template.
        template = str(getattr(route, "path_format", "") or "")
        prefix = scope.get("root_path", "")[len(root_path):]
        if isinstance(route, Mount):
            template += "/{path}"
        return (prefix + template) or UNMATCHED

    def _index_routes(self, app: Any) -> None:
        """Map each route object to its full path template(s): FastAPI keeps an included router's routes as
        they were declared (without the include prefixes) and resolves the full path per request."""
        routes = getattr(getattr(app, "router", None), "routes", None)
        if routes is None:
            return
        templates: dict[int, list[tuple[Any, str]]] = {}
        for context in iter_route_contexts(routes):
            if context.path_format:
                templates.setdefault(id(context.original_route), []).append((context.path_regex, context.path_format))
        self._templates = templates


def install(app: FastAPI) -> None:
    """Add the request-metrics middleware to ``app`` (before it starts serving)."""
    app.add_middleware(RequestMetricsMiddleware)
