"""The Ray Serve application: one FastAPI ingress deployment, ``kinoray-api``.

``kinoray.serve.app:app`` is the import path the RayService in ``ray-cluster.yaml`` deploys (or locally:
``serve run kinoray.serve.app:app``). Today it answers two routes:

- ``GET /healthz``: ``{"status": "ok", "version": ...}``, with no work behind it.
- ``GET /system/v1/capabilities``: the encoder backends this replica can open. The first call opens one tiny
  real encode session per backend (well under a second on a CPU node) and the answer is cached for the
  replica's life by :func:`kinoray.encoders.probe_backend`.

Routes are module-level functions on :data:`api` so that ``fastapi.testclient.TestClient(api)`` exercises
them without Ray. They must be registered before ``@serve.ingress(api)`` runs: Serve keeps a copy of the app
as it is at that moment, so a route added afterwards would never be served.
"""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve

import kinoray
from kinoray.encoders import available_encoders, get_backend

__all__ = ["ApiIngress", "Capabilities", "EncoderCapability", "Health", "api", "app"]

api = FastAPI(title="kinoray", version=kinoray.__version__)


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


@api.get("/healthz")
def healthz() -> Health:
    return Health(status="ok", version=kinoray.__version__)


@api.get("/system/v1/capabilities")
def capabilities() -> Capabilities:
    """Encoder backends on this replica. Replicas run on CPU workers (the head has ``num-cpus: 0``), so a
    GPU worker's NVENC shows here only for a replica placed on it."""
    encoders = []
    for key, capability in available_encoders().items():
        codec, name = key.split("/", 1)
        encoders.append(EncoderCapability(codec=codec, name=name, hardware=get_backend(codec, name).hardware,
                                          available=capability.available, reason=capability.reason))
    return Capabilities(version=kinoray.__version__, encoders=encoders)


@serve.deployment(name="kinoray-api")
@serve.ingress(api)
class ApiIngress:
    """The HTTP ingress. Per-replica state (database engine, storage clients) will live here."""


# mypy does not apply class decorators to the class's type: ApiIngress is a serve.Deployment here.
app: serve.Application = cast(serve.Deployment, ApiIngress).bind()
