"""``/system/v1/webhook-endpoints``: where events are POSTed, each endpoint with its own signing secret.

The secret is shown on create and on every read (like Mux's dashboard, which reveals it on request): the server
keeps it in clear to sign deliveries, and a caller with an access token can already read every event.
``POST /{id}/rotate-secret`` replaces it. An endpoint URL must pass the SSRF policy
(:mod:`kinoray.control.urls`) when saved and again before each delivery.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from kinoray.control import webhooks
from kinoray.control.webhooks import EndpointCreate, EndpointUpdate
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/system/v1/webhook-endpoints", tags=["webhooks"], route_class=IdempotentRoute)

MAX_LIMIT = 100


class WebhookEndpointObject(BaseModel):
    id: str
    url: str
    enabled: bool
    secret: str = Field(description="HMAC-SHA256 key of this endpoint's Mux-Signature header")
    disabled_reason: str | None = Field(default=None, description="why the endpoint was disabled, if it was")
    created_at: str = Field(description="unix seconds")
    updated_at: str = Field(description="unix seconds")


class WebhookEndpointEnvelope(BaseModel):
    data: WebhookEndpointObject


class WebhookEndpointList(BaseModel):
    data: list[WebhookEndpointObject]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")


class WebhookDeliveryObject(BaseModel):
    id: str
    event_id: str = Field(description="also the Webhook-Id header of every attempt")
    event_type: str
    status: str = Field(description="pending | delivered | failed (given up, or stopped by disabling)")
    attempts: int
    last_status: int | None = Field(description="HTTP status of the last attempt; null if none came back")
    last_error: str | None
    delivered_at: str | None
    next_attempt_at: str | None
    created_at: str


class WebhookDeliveryList(BaseModel):
    data: list[WebhookDeliveryObject]
    next_cursor: str | None = None


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]


@router.post("", status_code=201, response_model=WebhookEndpointEnvelope,
             responses=error_responses(*AUTHENTICATED, 409, 422))
def create(body: EndpointCreate, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Add an endpoint; events emitted from now on are queued for it."""
    with platform.db.session() as session:
        return {"data": webhooks.endpoint_view(webhooks.create_endpoint(session, platform.settings, body.url))}


@router.get("", response_model=WebhookEndpointList, responses=error_responses(*AUTHENTICATED))
def list_endpoints(platform: PlatformDep, token: CurrentToken, limit: Limit = 25,
                   cursor: Cursor = None) -> dict[str, Any]:
    """Newest first."""
    with platform.db.reader() as session:
        rows, next_cursor = webhooks.list_endpoints(session, limit=limit, cursor=cursor)
        return {"data": [webhooks.endpoint_view(row) for row in rows], "next_cursor": next_cursor}


@router.get("/{endpoint_id}", response_model=WebhookEndpointEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def get(endpoint_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    with platform.db.reader() as session:
        return {"data": webhooks.endpoint_view(webhooks.get_endpoint(session, endpoint_id))}


@router.patch("/{endpoint_id}", response_model=WebhookEndpointEnvelope,
              responses=error_responses(*AUTHENTICATED, 404))
def update(endpoint_id: str, body: EndpointUpdate, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Change ``url`` and/or ``enabled``. Disabling stops pending deliveries; enabling clears
    ``disabled_reason`` (events from while it was off are not sent)."""
    with platform.db.session() as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id, for_update=True)
        return {"data": webhooks.endpoint_view(webhooks.update_endpoint(session, platform.settings, endpoint, body))}


@router.delete("/{endpoint_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(endpoint_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the endpoint and its queued deliveries."""
    with platform.db.session() as session:
        webhooks.delete_endpoint(session, webhooks.get_endpoint(session, endpoint_id, for_update=True))
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookEndpointEnvelope,
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def rotate_secret(endpoint_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    """Replace the secret; it signs every attempt from now on, retries of older events included."""
    with platform.db.session() as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id, for_update=True)
        return {"data": webhooks.endpoint_view(webhooks.rotate_secret(session, endpoint))}


@router.get("/{endpoint_id}/deliveries", response_model=WebhookDeliveryList,
            responses=error_responses(*AUTHENTICATED, 404))
def list_deliveries(endpoint_id: str, platform: PlatformDep, token: CurrentToken, limit: Limit = 25,
                    cursor: Cursor = None) -> dict[str, Any]:
    """The endpoint's deliveries, newest event first: attempts, last HTTP status and error, and when the next
    attempt is due."""
    with platform.db.reader() as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        rows, next_cursor = webhooks.list_deliveries(session, endpoint, limit=limit, cursor=cursor)
        return {"data": [webhooks.delivery_view(row) for row in rows], "next_cursor": next_cursor}
