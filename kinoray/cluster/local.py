"""Run a transcode's chunks as Ray tasks (a local ``ray.init()`` unless already connected)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import ray

from kinoray.media.pipeline import Executor

__all__ = ["ensure_ray", "ray_executor"]

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` if set (``ray job submit`` sets it), else start a private local Ray with
    ``num_cpus`` CPUs (default: all) — never silently attach to some other cluster on this machine."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=True)
    log.info("ray ready", extra={"resources": ray.cluster_resources()})


@ray.remote(num_cpus=1, max_retries=2)
def _invoke(call: Callable[[], Any]) -> Any:
    return call()


def ray_executor(num_cpus: int | None = None) -> Executor:
    """An executor that runs each call as a 1-CPU Ray task, yielding results as they complete.

    On a failure the remaining tasks are cancelled and the task's exception (our typed error, wrapped by
    Ray so ``except InvalidMediaError`` still matches) propagates.
    """

    def run(calls: list[Callable[[], Any]]) -> Iterator[tuple[int, Any]]:
        ensure_ray(num_cpus)
        refs = [_invoke.remote(call) for call in calls]
        position = {ref: number for number, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield position[ref], ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    return run
