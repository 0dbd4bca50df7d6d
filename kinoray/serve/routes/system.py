"""Liveness, readiness and what this replica can do: ``GET /healthz``, ``GET /readyz``
(:mod:`kinoray.serve.readiness`), ``GET /system/v1/capabilities`` (no auth: they reveal nothing about any
customer's data)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

import kinoray
from kinoray.encoders import available_encoders, get_backend
from kinoray.serve import readiness
from kinoray.serve.deps import PlatformDep
from kinoray.serve.readiness import Readiness

__all__ = ["Capabilities", "EncoderCapability", "Health", "router"]

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str
    version: str


class EncoderCapability(BaseModel):
    """One encoder backend as probed on the replica that answered."""

    codec: str  # h264 / hevc / av1
    name: str  # registry name: libx264, libx265, libsvtav1, nvenc
    hardware: bool
    available: bool
    reason: str  # what the probe did, or why the backend cannot run here


class Capabilities(BaseModel):
    version: str
    encoders: list[EncoderCapability]


@router.get("/healthz")
def healthz() -> Health:
    return Health(status="ok", version=kinoray.__version__)


@router.get("/readyz", responses=readiness.UNREADY)
async def readyz(platform: PlatformDep, response: Response) -> Readiness:
    """Whether this process can serve now: the database, the object store and, on Ray Serve, the job runner
    and the Ray cluster, each checked on every call (``503`` with the same body when one fails)."""
    return await readiness.answer(platform, response)


@router.get("/system/v1/capabilities")
def capabilities() -> Capabilities:
    """Encoder backends on this replica. The first call opens one tiny real encode session per backend (well
    under a second on a CPU node); the answer is cached for the replica's life. Replicas run on CPU workers
    (the head has ``num-cpus: 0``), so a GPU worker's NVENC shows here only for a replica placed on it."""
    encoders = []
    for key, capability in available_encoders().items():
        codec, name = key.split("/", 1)
        encoders.append(EncoderCapability(codec=codec, name=name, hardware=get_backend(codec, name).hardware,
                                          available=capability.available, reason=capability.reason))
    return Capabilities(version=kinoray.__version__, encoders=encoders)
