"""Events and the webhook outbox: one call records an event and queues it for every enabled endpoint, in the
caller's transaction, so no event is lost or sent for a change that rolled back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.control.views import EventEnvelope, EventEnvironment, EventObject, View
from kinoray.store.models import Event, WebhookDelivery, WebhookEndpoint, new_id, utcnow

__all__ = ["EVENT_TYPES", "emit", "envelope", "iso_time"]

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
    "video.asset.static_rendition.created",
    "video.asset.static_rendition.ready",
    "video.asset.static_rendition.skipped",
    "video.asset.static_rendition.errored",
    "video.asset.static_rendition.deleted",
    "video.asset.master.preparing",
    "video.asset.master.ready",
    "video.asset.master.errored",
    "video.asset.master.deleted",
    "video.upload.created",
    "video.upload.asset_created",
    "video.upload.cancelled",
    "video.upload.errored",
    "video.asset.live_stream_completed",
    "video.live_stream.created",
    "video.live_stream.connected",
    "video.live_stream.recording",
    "video.live_stream.active",
    "video.live_stream.disconnected",
    "video.live_stream.idle",
    "video.live_stream.updated",
    "video.live_stream.enabled",
    "video.live_stream.disabled",
    "video.live_stream.deleted",
    "video.live_stream.simulcast_target.created",
    "video.live_stream.simulcast_target.starting",
    "video.live_stream.simulcast_target.broadcasting",
    "video.live_stream.simulcast_target.idle",
    "video.live_stream.simulcast_target.errored",
    "video.live_stream.simulcast_target.deleted",
    # kinoray's own (Mux sends no webhook for its Data alerts): an alert rule's incident opened / closed
    "video.data.incident.opened",
    "video.data.incident.closed",
)


def envelope(event: Event, environment: str = "default") -> dict[str, Any]:
    """The JSON body a webhook POSTs for ``event`` (Mux's envelope, :class:`EventEnvelope`) at its first attempt:
    its ``data`` is the event's payload, the object's view serialized by :func:`emit`. Later attempts list the
    earlier ones in ``attempts`` (:mod:`kinoray.control.webhooks`)."""
    return EventEnvelope(type=event.type, id=event.id, created_at=iso_time(event.created_at),
                         object=EventObject(type=event.object_type, id=event.object_id),
                         environment=EventEnvironment(name=environment, id=environment),
                         data=event.payload).model_dump(mode="json")


def emit(session: Session, event_type: str, object_type: str, object_id: str, data: View) -> Event:
    """Record ``event_type`` about an object (``data``: the object's view, as the API shows it now) and add one
    outbox row per enabled webhook endpoint. Nothing is sent here: the runner's webhook sender does that."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    payload = data.dump()
    event = Event(id=new_id(), type=event_type, object_type=object_type, object_id=object_id, payload=payload,
                  created_at=utcnow())
    session.add(event)
    body = envelope(event)
    endpoints = session.scalars(sa.select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True)))
    for endpoint_id in endpoints:
        session.add(WebhookDelivery(endpoint_id=endpoint_id, event_id=event.id, event_type=event_type,
                                    payload=body))
    return event


def iso_time(when: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as Mux writes times in events and system resources."""
    return when.isoformat().replace("+00:00", "Z")
