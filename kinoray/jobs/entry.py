"""What every Ray job entrypoint does around its work: a kinoray error becomes the typed error body on stderr
and exit status 2 (``ray job submit`` shows it and fails the job), and the driver's Ray is shut down either way."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TypeVar

from kinoray.errors import KinorayError

__all__ = ["FAILED", "run_job"]

T = TypeVar("T")
#: The exit status of a job whose work raised a kinoray error.
FAILED = 2


def run_job(work: Callable[[], T]) -> T | None:
    """``work()``'s result, or ``None`` after printing ``{"error": {"type", "messages"}}`` for a kinoray error."""
    import ray

    try:
        return work()
    except KinorayError as error:
        print(json.dumps({"error": {"type": error.type, "messages": [str(error)]}}), file=sys.stderr)  # noqa: T201
        return None
    finally:
        if ray.is_initialized():
            ray.shutdown()
