"""Readiness that tells the truth: what ``GET /readyz`` (the API) and ``GET /edge/readyz`` (an edge process) check.

Liveness (``/healthz``) says the process answers; readiness says it can do its work now. Every check runs on each
call, each within :data:`CHECK_TIMEOUT_SECONDS` (a database or store that hangs is a failed check, not a hung
probe):

- ``database``: a ``SELECT 1`` in a read-only transaction;
- ``storage``: a small object written, read back and deleted under ``_health/`` (a read-only or full store fails);
- more where the process has them: the Ray Serve ingress adds ``runner`` (the job runner's loop is alive) and
  ``cluster`` (the Ray cluster answers; its nodes and resources in the detail), :func:`register`.

Kubernetes' readiness probes and ``kinoray up``'s watchdog read it; an unready answer is ``503`` with the same
body, which names the failing check.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Literal

import sqlalchemy as sa
from fastapi import Response
from pydantic import BaseModel

import kinoray
from kinoray.control.platform import Platform

__all__ = ["CHECK_TIMEOUT_SECONDS", "UNREADY", "Check", "CheckResult", "Readiness", "answer", "check", "register"]

CHECK_TIMEOUT_SECONDS = 5.0

#: A check returns a short detail when the dependency works and raises when it does not. A plain function runs
#: in a thread; a coroutine function (one that awaits a Serve handle, say) on the event loop.
Check = Callable[[Platform], str] | Callable[[Platform], Awaitable[str]]


class CheckResult(BaseModel):
    ok: bool
    detail: str
    seconds: float


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    version: str
    checks: dict[str, CheckResult]


def _database(platform: Platform) -> str:
    with platform.db.reader() as session:
        session.execute(sa.text("SELECT 1"))
    return platform.db.dialect


def _storage(platform: Platform) -> str:
    key = f"_health/{os.getpid()}-{uuid.uuid4().hex}"
    payload = uuid.uuid4().bytes
    platform.store.put_bytes(payload, key)
    try:
        if platform.store.get_bytes(key) != payload:
            raise RuntimeError("the object read back differs from the one written")
    finally:
        platform.store.delete(key)
    return "write, read and delete of a probe object"


_checks: dict[str, Check] = {"database": _database, "storage": _storage}


def register(name: str, probe: Check) -> None:
    """Add (or replace) a readiness check of this process."""
    _checks[name] = probe


async def check(platform: Platform) -> Readiness:
    """Every check, run concurrently, each bounded by :data:`CHECK_TIMEOUT_SECONDS`."""
    names = list(_checks)
    results = await asyncio.gather(*(_timed(_checks[name], platform) for name in names))
    ready = all(result.ok for result in results)
    return Readiness(status="ready" if ready else "unready", version=kinoray.__version__,
                     checks=dict(zip(names, results, strict=True)))


#: The OpenAPI entry of an unready answer.
UNREADY: dict[int | str, dict[str, object]] = {503: {"model": Readiness, "description": "a dependency is failing"}}


async def answer(platform: Platform, response: Response) -> Readiness:
    """:func:`check` as a route's answer: ``503`` with ``Retry-After`` when a check fails."""
    result = await check(platform)
    if result.status != "ready":
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return result


async def _timed(probe: Check, platform: Platform) -> CheckResult:
    started = time.monotonic()
    try:
        if inspect.iscoroutinefunction(probe):
            running = probe(platform)
        else:
            running = asyncio.to_thread(probe, platform)  # a hung call leaves its thread, not the answer, waiting
        detail, ok = await asyncio.wait_for(running, CHECK_TIMEOUT_SECONDS), True
    except TimeoutError:
        detail, ok = f"no answer within {CHECK_TIMEOUT_SECONDS:g} s", False
    except Exception as error:  # a failed dependency is the answer, not an error of the probe
        detail, ok = f"{type(error).__name__}: {str(error)[:300]}", False
    return CheckResult(ok=ok, detail=str(detail), seconds=round(time.monotonic() - started, 3))
