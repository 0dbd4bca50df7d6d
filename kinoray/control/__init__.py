"""The control plane's logic, Ray-free: what the REST API and the job runner do to the metadata database and
object storage (assets, uploads, auth, idempotency, events and webhooks, rate limits, input-URL policy).

``kinoray.serve`` exposes it over HTTP; nothing here knows about FastAPI or Ray.
"""

from kinoray.control.platform import Platform

__all__ = ["Platform"]
