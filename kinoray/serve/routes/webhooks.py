"""``/system/v1/webhook-endpoints``: where events are POSTed, each endpoint with its own signing secret; and
the same resource in Mux's shape at ``/system/v1/webhooks`` (``address``, ISO times, ``signing_secret`` shown only
on create, numbered pages), which Mux's SDKs use.

The secret is shown on create and on every read (like Mux's dashboard, which reveals it on request): the server
keeps it in clear to sign deliveries, and a caller with an access token can already read every event.
``POST /{id}/rotate-secret`` replaces it. An endpoint URL must pass the SSRF policy
(:mod:`kinoray.control.urls`) when saved and again before each delivery.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from kinoray.control import webhooks
from kinoray.control.views import WebhookDeliveryView, WebhookEndpointView, WebhookView
from kinoray.control.webhooks import EndpointCreate, EndpointUpdate, WebhookCreate, WebhookUpdate
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PageDep, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, CursorListing, Envelope, Listing, error_responses

__all__ = ["mux_router", "router"]

router = APIRouter(prefix="/system/v1/webhook-endpoints", tags=["webhooks"], route_class=IdempotentRoute)
mux_router = APIRouter(prefix="/system/v1/webhooks", tags=["webhooks"], route_class=IdempotentRoute)


@router.post("", status_code=201, response_model=Envelope[WebhookEndpointView],
             responses=error_responses(*AUTHENTICATED, 400, 409, 422))
def create(body: EndpointCreate, platform: PlatformDep, token: CurrentToken) -> Envelope[WebhookEndpointView]:
    """Add an endpoint; events emitted from now on are queued for it."""
    with platform.db.session() as session:
        return Envelope(data=webhooks.endpoint_view(webhooks.create_endpoint(session, platform.settings, body.url)))


@router.get("", response_model=CursorListing[WebhookEndpointView], responses=error_responses(*AUTHENTICATED))
def list_endpoints(platform: PlatformDep, token: CurrentToken, pages: PageDep) -> CursorListing[WebhookEndpointView]:
    """Newest first."""
    with platform.db.reader() as session:
        rows, next_cursor = webhooks.list_endpoints(session, limit=pages.limit, cursor=pages.cursor, page=pages.page)
        return CursorListing(data=[webhooks.endpoint_view(row) for row in rows], next_cursor=next_cursor)


@router.get("/{endpoint_id}", response_model=Envelope[WebhookEndpointView],
            responses=error_responses(*AUTHENTICATED, 404))
def get(endpoint_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[WebhookEndpointView]:
    with platform.db.reader() as session:
        return Envelope(data=webhooks.endpoint_view(webhooks.get_endpoint(session, endpoint_id)))


@router.patch("/{endpoint_id}", response_model=Envelope[WebhookEndpointView],
              responses=error_responses(*AUTHENTICATED, 400, 404, 409, 422))
def update(endpoint_id: str, body: EndpointUpdate, platform: PlatformDep,
           token: CurrentToken) -> Envelope[WebhookEndpointView]:
    """Change ``url`` and/or ``enabled``. Disabling stops pending deliveries; enabling clears
    ``disabled_reason`` (events from while it was off are not sent)."""
    with platform.db.session() as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id, for_update=True)
        return Envelope(data=webhooks.endpoint_view(webhooks.update_endpoint(session, platform.settings, endpoint,
                                                                             body)))


@router.delete("/{endpoint_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(endpoint_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the endpoint and its queued deliveries."""
    with platform.db.session() as session:
        webhooks.delete_endpoint(session, webhooks.get_endpoint(session, endpoint_id, for_update=True))
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=Envelope[WebhookEndpointView],
             responses=error_responses(*AUTHENTICATED, 404, 409, 422))
def rotate_secret(endpoint_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[WebhookEndpointView]:
    """Replace the secret; it signs every attempt from now on, retries of older events included."""
    with platform.db.session() as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id, for_update=True)
        return Envelope(data=webhooks.endpoint_view(webhooks.rotate_secret(session, endpoint)))


@router.get("/{endpoint_id}/deliveries", response_model=CursorListing[WebhookDeliveryView],
            responses=error_responses(*AUTHENTICATED, 404))
def list_deliveries(endpoint_id: str, platform: PlatformDep, token: CurrentToken,
                    pages: PageDep) -> CursorListing[WebhookDeliveryView]:
    """The endpoint's deliveries, newest event first: attempts, last HTTP status and error, and when the next
    attempt is due."""
    with platform.db.reader() as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        rows, next_cursor = webhooks.list_deliveries(session, endpoint, limit=pages.limit, cursor=pages.cursor,
                                                     page=pages.page)
        return CursorListing(data=[webhooks.delivery_view(row) for row in rows], next_cursor=next_cursor)


# --- Mux's shape: /system/v1/webhooks ------------------------------------------------------------------------


@mux_router.post("", status_code=201, response_model=Envelope[WebhookView],
                 responses=error_responses(*AUTHENTICATED, 400, 409, 422))
def mux_create(body: WebhookCreate, platform: PlatformDep, token: CurrentToken) -> Envelope[WebhookView]:
    """Add a webhook; the answer is the only one that carries its ``signing_secret``."""
    with platform.db.session() as session:
        endpoint = webhooks.create_endpoint(session, platform.settings, body.address)
        return Envelope(data=webhooks.webhook_view(endpoint, with_secret=True))


@mux_router.get("", response_model=Listing[WebhookView], responses=error_responses(*AUTHENTICATED))
def mux_list(platform: PlatformDep, token: CurrentToken, pages: PageDep) -> Listing[WebhookView]:
    """Newest first, Mux's numbered pages; an empty page ends the list."""
    with platform.db.reader() as session:
        rows, _ = webhooks.list_endpoints(session, limit=pages.limit, page=pages.page, cursor=pages.cursor)
        return Listing(data=[webhooks.webhook_view(row) for row in rows])


@mux_router.get("/{webhook_id}", response_model=Envelope[WebhookView], responses=error_responses(*AUTHENTICATED, 404))
def mux_get(webhook_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[WebhookView]:
    with platform.db.reader() as session:
        return Envelope(data=webhooks.webhook_view(webhooks.get_endpoint(session, webhook_id)))


@mux_router.patch("/{webhook_id}", response_model=Envelope[WebhookView],
                  responses=error_responses(*AUTHENTICATED, 400, 404, 409, 422))
def mux_update(webhook_id: str, body: WebhookUpdate, platform: PlatformDep,
               token: CurrentToken) -> Envelope[WebhookView]:
    """Change ``address`` and/or ``enabled`` (as ``PATCH /system/v1/webhook-endpoints/{id}``)."""
    with platform.db.session() as session:
        endpoint = webhooks.get_endpoint(session, webhook_id, for_update=True)
        endpoint = webhooks.update_endpoint(session, platform.settings, endpoint, body.as_endpoint())
        return Envelope(data=webhooks.webhook_view(endpoint))


@mux_router.delete("/{webhook_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def mux_delete(webhook_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    return delete(webhook_id, platform, token)
