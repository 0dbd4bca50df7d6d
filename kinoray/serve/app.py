"""The Ray Serve application: the management API's ingress (``kinoray-api``), the job runner
(``kinoray-runner``) and the anomaly detector the runner's alert evaluation calls (``kinoray-anomaly``,
:mod:`kinoray.serve.anomaly`).

``kinoray.serve.app:app`` is the import path ``serve run``/``serve deploy`` and the RayService in
``ray-cluster.yaml`` use. :func:`kinoray.serve.api.build_api` makes the FastAPI app (Ray-free; tests serve it
with uvicorn directly after :func:`kinoray.serve.deps.set_platform`), the Serve deployment wraps the
module-level :data:`api`. Viewer traffic does not come here: the delivery edge (:mod:`kinoray.edge`) serves it.
"""

from __future__ import annotations

from typing import Any, cast

from ray import serve
from ray.serve.config import BackpressureConfig

from kinoray.serve import metrics, readiness
from kinoray.serve.api import build_api

__all__ = ["ApiIngress", "api", "app", "build_api", "build_app"]

api = build_api()


# Serve's own logger in the replica at WARNING and no access log: at INFO a replica formats and writes a line for
# every request (what serve.start's logging_config turns off is the proxy's and the controller's, not this);
# kinoray's metrics and logs cover requests.
@serve.deployment(name="kinoray-api", ray_actor_options={"num_cpus": 0},
                  logging_config={"enable_access_log": False, "log_level": "WARNING"})
@serve.ingress(api)
class ApiIngress:
    """The HTTP ingress. Each replica holds one :class:`~kinoray.control.Platform` (database pool, storage,
    rate limiter) and a handle to the job runner (for its metrics)."""

    def __init__(self, runner: Any = None) -> None:
        from kinoray.control.platform import Platform
        from kinoray.logs import setup_logging
        from kinoray.serve.asgi import keep_worker_threads
        from kinoray.serve.deps import set_platform

        setup_logging()
        keep_worker_threads()  # Serve runs the constructor on the loop that serves the app
        set_platform(Platform.from_settings())
        metrics.set_runner(runner)
        if runner is not None:
            async def runner_alive(_platform: Platform) -> str:
                return await _runner_alive(runner)

            readiness.register("runner", runner_alive)
        readiness.register("cluster", lambda _platform: _cluster())


async def _runner_alive(runner: Any) -> str:
    """The job runner deployment answers and its loop runs (awaited on the replica's loop: a handle may only
    be used there)."""
    status = await runner.status.remote()
    if not status.get("alive"):
        raise RuntimeError("the job runner's loop has stopped")
    return f"{status.get('running_jobs', 0)} jobs running"


def _cluster() -> str:
    """The Ray cluster answers (its control store lists the nodes); no CPU worker is not a failure (an
    autoscaler may be starting one)."""
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if not nodes:
        raise RuntimeError("no Ray node is alive")
    totals = ray.cluster_resources()
    return f"{len(nodes)} nodes, {totals.get('CPU', 0):g} CPUs, {totals.get('GPU', 0):g} GPUs"


def build_app(api_replicas: int | None = None) -> serve.Application:
    """The Serve application: the API ingress bound to the job runner. ``api_replicas`` fixes the ingress's
    replica count (``kinoray up``: each replica is a process, and more of them use more cores); None leaves it to
    the deployment's configuration (serveConfigV2's autoscaling on KubeRay)."""
    from kinoray.serve.anomaly import AnomalyDetector
    from kinoray.serve.runner import JobRunner
    from kinoray.settings import get_settings

    # Load shedding is the replica's (kinoray.serve.guard: a typed 503 past api.max_in_flight), so Serve must hand
    # the app every request it gets: a replica behind HAProxy (direct ingress) answers a plain-text 503 ("Request
    # dropped due to backpressure") past max_ongoing_requests, or past max_queued_requests counting the requests
    # between their arrival and their slot (a burst fills that count even with slots free), before the guard sees
    # them. The guard refuses in microseconds, so the requests it refuses never pile up; Serve's own bounds stay
    # as the last resort (with Retry-After), far above anything a replica serves.
    in_flight = get_settings().api.max_in_flight
    options: dict[str, Any] = {"max_ongoing_requests": 32 * in_flight, "max_queued_requests": 32 * in_flight,
                               "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=1)}
    if api_replicas is not None:
        options["num_replicas"] = api_replicas
    ingress = cast(serve.Deployment, ApiIngress).options(**options)
    anomaly = cast(serve.Deployment, AnomalyDetector).bind()
    return ingress.bind(cast(serve.Deployment, JobRunner).bind(anomaly))


app: serve.Application = build_app()
