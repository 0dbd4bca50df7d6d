"""Byte-determinism of the CPU encoders: a fixed heap fill for the process.

libx264 (as bundled with PyAV) reads some heap memory it never wrote at certain widths (426 and 432 wide rungs
did; 448 and 640 did not; 160-wide 90p rungs too), so the same frames could encode to different bytes
depending on what the allocator handed out — measured: 1 run in 3 differed under Ray. glibc's perturb byte
fills every new allocation (and every freed one) with a fixed pattern, which makes those reads, and so a
chunk's bytes, a function of its input alone: a retried chunk on any worker is byte-identical.
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["DETERMINISTIC_HEAP", "deterministic_heap"]

log = logging.getLogger(__name__)

#: the same setting as an environment variable, for processes started from outside (read by glibc at start)
DETERMINISTIC_HEAP = {"MALLOC_PERTURB_": "165"}

_M_PERTURB = -6  # glibc's mallopt parameter behind MALLOC_PERTURB_


def deterministic_heap() -> bool:
    """Turn on glibc's perturb byte for the rest of this process's allocations; whether it is on.

    Call it before opening encoder sessions. Setting it at run time (rather than through the environment)
    lets Ray start encoder actors in its ready, pre-started worker processes instead of fresh ones.
    """
    if os.environ.get("MALLOC_PERTURB_"):
        return True
    try:
        libc = ctypes.CDLL(None)
        done = bool(libc.mallopt(_M_PERTURB, int(DETERMINISTIC_HEAP["MALLOC_PERTURB_"])))
    except (OSError, AttributeError) as e:  # not glibc
        log.warning("cannot fix the heap fill; CPU encoder output may vary between runs", extra={"error": str(e)})
        return False
    return done
