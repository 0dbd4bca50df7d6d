"""The Ray Serve application: the management API's ingress (``kinoray-api``) and the job runner
(``kinoray-runner``).

``kinoray.serve.app:app`` is the import path ``serve run``/``serve deploy`` and the RayService in
``ray-cluster.yaml`` use. :func:`kinoray.serve.api.build_api` makes the FastAPI app (Ray-free; tests serve it
with uvicorn directly after :func:`kinoray.serve.deps.set_platform`), the Serve deployment wraps the
module-level :data:`api`. Viewer traffic does not come here: the delivery edge (:mod:`kinoray.edge`) serves it.
"""

from __future__ import annotations

from typing import Any, cast

from ray import serve

from kinoray.serve import metrics
from kinoray.serve.api import build_api

__all__ = ["ApiIngress", "api", "app", "build_api"]

api = build_api()


@serve.deployment(name="kinoray-api", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
@serve.ingress(api)
class ApiIngress:
    """The HTTP ingress. Each replica holds one :class:`~kinoray.control.Platform` (database pool, storage,
    rate limiter) and a handle to the job runner (for its metrics)."""

    def __init__(self, runner: Any = None) -> None:
        from kinoray.control.platform import Platform
        from kinoray.logs import setup_logging
        from kinoray.serve.deps import set_platform

        setup_logging()
        set_platform(Platform.from_settings())
        metrics.set_runner(runner)


def _build_app() -> serve.Application:
    from kinoray.serve.runner import JobRunner

    return cast(serve.Deployment, ApiIngress).bind(cast(serve.Deployment, JobRunner).bind())


app: serve.Application = _build_app()
