"""The anomaly detector on Ray Serve (``kinoray-anomaly``), and the scorer the alert evaluator calls it with.

:class:`AnomalyDetector` is a Serve deployment around :func:`kinoray.analytics.anomaly.detect`: it takes the
views as columns (:class:`~kinoray.analytics.anomaly.ViewTable`, numpy arrays: Ray moves them without copying
them through JSON) and answers the findings. The job runner's deployment is bound to it
(:func:`kinoray.serve.app.build_app`) and evaluates anomaly rules through :class:`HandleScorer`, which turns
any failure to get an answer — the deployment deleted, its replica dead, no answer within
``analytics.anomaly_timeout_seconds`` — into :class:`~kinoray.errors.AnomalyDetectorUnavailableError`, so the
evaluator (:mod:`kinoray.control.alerts`, Ray-free) records it on the rule and goes on with the others.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from kinoray.analytics.anomaly import Finding, ViewTable, detect
from kinoray.errors import AnomalyDetectorUnavailableError

__all__ = ["DEPLOYMENT_NAME", "AnomalyDetector", "HandleScorer"]

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "kinoray-anomaly"


@serve.deployment(name=DEPLOYMENT_NAME, num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=4)
class AnomalyDetector:
    """Scores view tables: :meth:`score` is :func:`~kinoray.analytics.anomaly.detect`."""

    def __init__(self) -> None:
        from kinoray.logs import setup_logging

        setup_logging()

    def score(self, table: ViewTable, options: dict[str, Any]) -> list[Finding]:
        return detect(table, **options)

    def check_health(self) -> None:
        """Serve's health check: the replica answers."""


class HandleScorer:
    """A :data:`kinoray.control.alerts.Scorer` over a Serve handle to :class:`AnomalyDetector`, called from a
    thread (the job runner's loop), never from an event loop."""

    def __init__(self, handle: Any, timeout_seconds: float = 60.0) -> None:
        self.handle, self.timeout_seconds = handle, timeout_seconds

    def __call__(self, table: ViewTable, **options: Any) -> list[Finding]:
        try:
            found = self.handle.score.remote(table, options).result(timeout_s=self.timeout_seconds)
        except Exception as error:  # noqa: BLE001 - whatever Ray raised, the caller gets one typed error
            raise AnomalyDetectorUnavailableError(
                f"the {DEPLOYMENT_NAME} deployment did not answer: {type(error).__name__}: {str(error)[:300]}"
            ) from error
        return list(found)
