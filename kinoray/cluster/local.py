"""Connecting to Ray: the cluster named by ``RAY_ADDRESS``, or a private local one."""

from __future__ import annotations

import logging
import os

import ray

__all__ = ["ensure_ray"]

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
