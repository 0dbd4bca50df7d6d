"""Events and the webhook outbox: one call records an event and queues it for every enabled endpoint, in the
caller's transaction, so no event is lost or sent for a change that rolled back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.store.models import Event, WebhookDelivery, WebhookEndpoint, new_id, utcnow

__all__ = ["EVENT_TYPES", "emit", "envelope"]

#: Every event type kinoray emits (Mux's names).
EVENT_TYPES = (
    "video.asset.created",
    "video.asset.ready",
    "video.asset.errored",
    "video.asset.updated",
    "video.asset.deleted",
    "video.asset.track.created",
    "video.asset.track.ready",
    "video.asset.track.deleted",
    "video.upload.created",
    "video.upload.asset_created",
    "video.upload.cancelled",
    "video.upload.errored",
)


def envelope(event: Event, environment: str = "default") -> dict[str, Any]:
    """The JSON body a webhook POSTs for ``event`` (Mux's envelope)."""
    return {
        "type": event.type,
        "id": event.id,
        "created_at": _iso(event.created_at),
        "object": {"type": event.object_type, "id": event.object_id},
        "environment": {"name": environment, "id": environment},
        "data": event.payload,
    }


def emit(session: Session, event_type: str, object_type: str, object_id: str, data: dict[str, Any]) -> Event:
    """Record ``event_type`` about an object (``data`` is the object as the API shows it now) and add one
    outbox row per enabled webhook endpoint. Nothing is sent here: the runner's webhook sender does that."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event = Event(id=new_id(), type=event_type, object_type=object_type, object_id=object_id, payload=data,
                  created_at=utcnow())
    session.add(event)
    body = envelope(event)
    endpoints = session.scalars(sa.select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True)))
    for endpoint_id in endpoints:
        session.add(WebhookDelivery(endpoint_id=endpoint_id, event_id=event.id, event_type=event_type,
                                    payload=body))
    return event


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")
