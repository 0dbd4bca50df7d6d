"""Events and the webhook outbox: one call records an event and queues it for every enabled endpoint of the
event's environment, in the caller's transaction, so no event is lost or sent for a change that rolled back,
and an environment's events go only to its own endpoints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.control.views import EventEnvelope, EventEnvironment, EventObject, View
from kinoray.store import scoping
from kinoray.store.models import (
    DEFAULT_ENVIRONMENT_ID,
    Asset,
    DataIncident,
    Environment,
    Event,
    LiveStream,
    SimulcastTarget,
    Upload,
    WebhookDelivery,
    WebhookEndpoint,
    new_id,
    utcnow,
)

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


def envelope(event: Event, environment: Environment | None = None) -> dict[str, Any]:
    """The JSON body a webhook POSTs for ``event`` (Mux's envelope, :class:`EventEnvelope`) at its first attempt:
    its ``data`` is the event's payload, the object's view serialized by :func:`emit`. Later attempts list the
    earlier ones in ``attempts`` (:mod:`kinoray.control.webhooks`)."""
    name, environment_id = ((environment.name, environment.id) if environment is not None
                            else (DEFAULT_ENVIRONMENT_ID, event.environment_id or DEFAULT_ENVIRONMENT_ID))
    return EventEnvelope(type=event.type, id=event.id, created_at=iso_time(event.created_at),
                         object=EventObject(type=event.object_type, id=event.object_id),
                         environment=EventEnvironment(name=name, id=environment_id),
                         data=event.payload).model_dump(mode="json")


#: Where an unscoped session (the runner) finds the environment of an event's object.
_OWNERS: dict[str, tuple[type[Any], Callable[[Any], str]]] = {
    "asset": (Asset, lambda row: row.environment_id),
    "upload": (Upload, lambda row: row.environment_id),
    "live_stream": (LiveStream, lambda row: row.environment_id),
    "simulcast_target": (SimulcastTarget, lambda row: row.live_stream.environment_id),
    "incident": (DataIncident, lambda row: row.rule.environment_id),
}


def _environment_id(session: Session, object_type: str, object_id: str) -> str:
    """The environment an event about this object belongs to: the session's, else the object's, else (an object
    already deleted in an unscoped session) the default environment."""
    scoped = scoping.environment_of(session)
    if scoped is not None:
        return scoped
    owner = _OWNERS.get(object_type)
    row = session.get(owner[0], object_id) if owner is not None else None
    return owner[1](row) if owner is not None and row is not None else DEFAULT_ENVIRONMENT_ID


def emit(session: Session, event_type: str, object_type: str, object_id: str, data: View, *,
         environment_id: str | None = None) -> Event:
    """Record ``event_type`` about an object (``data``: the object's view, as the API shows it now) and add one
    outbox row per enabled webhook endpoint of the object's environment (``environment_id``, else found from the
    session or the object: :func:`_environment_id`). Nothing is sent here: the runner's webhook sender does
    that."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    environment_id = environment_id or _environment_id(session, object_type, object_id)
    payload = data.dump()
    event = Event(id=new_id(), type=event_type, object_type=object_type, object_id=object_id, payload=payload,
                  created_at=utcnow(), environment_id=environment_id)
    session.add(event)
    body = envelope(event, session.get(Environment, environment_id))
    endpoints = session.scalars(sa.select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True),
                                                                    WebhookEndpoint.environment_id == environment_id))
    for endpoint_id in endpoints:
        session.add(WebhookDelivery(endpoint_id=endpoint_id, event_id=event.id, event_type=event_type,
                                    payload=body))
    return event


def iso_time(when: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as Mux writes times in events and system resources."""
    return when.isoformat().replace("+00:00", "Z")
