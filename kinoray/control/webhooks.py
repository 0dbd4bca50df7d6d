"""Webhooks: endpoints with their secrets, the ``Mux-Signature`` scheme, and the sender that drains the outbox.

Signature (Mux's and Stripe's scheme): ``Mux-Signature: t=<unix seconds>,v1=<hex>`` where the hex is
HMAC-SHA256 keyed with the endpoint's secret over ``f"{t}."`` followed by the raw body. :func:`sign` makes it,
:func:`verify` checks it the way a receiver should (constant-time compare, ±5 minutes, several ``v1=``).

Delivery is at least once. :func:`kinoray.control.events.emit` writes one :class:`WebhookDelivery` per enabled
endpoint in the same transaction as the change it reports; :func:`deliver_due` later

1. claims due rows in a short transaction by pushing their ``next_attempt_at`` forward by a lease (PostgreSQL
   takes them ``FOR UPDATE SKIP LOCKED``, so concurrent senders never claim the same row; SQLite has one
   sender), and commits;
2. POSTs each stored envelope, signed at send time, with no transaction open and no redirect followed;
3. records the outcome in another short transaction: 2xx delivered; 410 disables the endpoint and stops its
   pending deliveries; anything else (3xx included, timeouts, refused connections) is retried with exponential
   backoff and ±20 % jitter until the delivery is older than ``api.webhook_retry_hours``, then given up.

A sender that dies mid-send leaves its rows leased; they become due again when the lease runs out, so an event
may arrive twice. Receivers deduplicate on the ``Webhook-Id`` header (the event id).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import random
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import Field, model_validator
from sqlalchemy.orm import Session

import kinoray
from kinoray.control.events import iso_time
from kinoray.control.lookup import find
from kinoray.control.outbound import policed_handlers
from kinoray.control.requests import RequestModel
from kinoray.control.urls import check_public_url
from kinoray.control.views import WebhookDeliveryView, WebhookEndpointView, WebhookView
from kinoray.errors import AuthenticationError, ConflictError, InputUrlRefusedError, InvalidParametersError
from kinoray.settings import Settings
from kinoray.store.db import newest_first
from kinoray.store.models import WebhookDelivery, WebhookEndpoint, new_id, new_secret, utcnow
from kinoray.telemetry import WEBHOOK_DELIVERIES

if TYPE_CHECKING:
    from kinoray.control.platform import Platform

__all__ = [
    "DEFAULT_TOLERANCE",
    "RETRY_SCHEDULE",
    "SIGNATURE_HEADER",
    "DeliveryResult",
    "EndpointCreate",
    "EndpointUpdate",
    "WebhookCreate",
    "WebhookUpdate",
    "backoff",
    "create_endpoint",
    "deliver_due",
    "deliver_loop",
    "delete_endpoint",
    "delivery_view",
    "endpoint_body",
    "endpoint_view",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "max_attempts",
    "rotate_secret",
    "sign",
    "update_endpoint",
    "verify",
    "webhook_view",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Mux-Signature"
#: Seconds a signature's timestamp may differ from the receiver's clock, either way (the Mux SDKs' default).
DEFAULT_TOLERANCE = 300
#: Delay before retry n (1-based) after a failed attempt; the last one repeats. Each is scaled by a random
#: factor in [0.8, 1.2] so endpoints that failed together do not all come back at once (Standard Webhooks'
#: example schedule).
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=5),
    timedelta(hours=10), timedelta(hours=14), timedelta(hours=20),
)
JITTER = 0.2
#: The most of an endpoint's answer kept in the attempt log (Mux's ``response_body``/``response_headers``).
_KEPT_BODY_BYTES = 1024
_KEPT_HEADERS = 32
_MAX_URL_LENGTH = 4096
_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00]*$"
_USER_AGENT = f"kinoray-webhooks/{kinoray.__version__}"
_jitter = random.Random()
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


# --- signatures ----------------------------------------------------------------------------------------------


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Mux-Signature`` header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def verify(secret: str, body: bytes, header: str | None, tolerance: float = DEFAULT_TOLERANCE,
           now: float | None = None) -> None:
    """Check a ``Mux-Signature`` header against the raw ``body``; ``AuthenticationError`` (401) if it fails.

    The header may carry several ``v1=`` signatures (one per secret during a rotation): one match is enough.
    Its timestamp must lie within ``tolerance`` seconds of ``now`` (default: the wall clock) in either direction,
    which bounds how long a captured request can be replayed."""
    if not header:
        raise AuthenticationError(f"missing {SIGNATURE_HEADER} header")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, separator, value = item.strip().partition("=")
        if not separator:
            raise AuthenticationError(f"malformed {SIGNATURE_HEADER} header")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or _TIMESTAMP.fullmatch(timestamps[0]) is None:
        raise AuthenticationError(f"{SIGNATURE_HEADER} needs exactly one t=<unix seconds>")
    if not signatures:
        raise AuthenticationError(f"{SIGNATURE_HEADER} has no v1 signature")
    timestamp = int(timestamps[0])
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise AuthenticationError(f"{SIGNATURE_HEADER} timestamp is more than {tolerance:g} s old")
    if timestamp > current + tolerance:
        raise AuthenticationError(f"{SIGNATURE_HEADER} timestamp is more than {tolerance:g} s in the future")
    expected = _digest(secret, body, timestamp).encode()
    # Compare against every candidate (no early exit), so timing says nothing about which one matched.
    matched = False
    for signature in signatures:
        matched |= hmac.compare_digest(expected, signature.encode())
    if not matched:
        raise AuthenticationError(f"{SIGNATURE_HEADER} does not match the body")


def endpoint_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed for a stored envelope: compact JSON with sorted keys, so every retry signs and sends
    the same bytes whatever the database did to key order."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


# --- endpoints -----------------------------------------------------------------------------------------------


class EndpointCreate(RequestModel):
    """``POST /system/v1/webhook-endpoints``."""

    url: str = Field(min_length=1, max_length=_MAX_URL_LENGTH, pattern=_URL_PATTERN,
                     description="http(s) URL that receives events; refused when it points at a private "
                                 "address (SSRF policy)")


class EndpointUpdate(RequestModel):
    """``PATCH /system/v1/webhook-endpoints/{id}``: fields left out stay as they are."""

    url: str | None = Field(default=None, min_length=1, max_length=_MAX_URL_LENGTH, pattern=_URL_PATTERN)
    enabled: bool | None = None


class WebhookCreate(RequestModel):
    """``POST /system/v1/webhooks`` (Mux's shape of the same endpoint resource)."""

    address: str = Field(min_length=1, max_length=_MAX_URL_LENGTH, pattern=_URL_PATTERN,
                         description="http(s) URL that receives events, unique among the webhooks")


class WebhookUpdate(RequestModel):
    """``PATCH /system/v1/webhooks/{id}``: at least one of ``address`` and ``enabled``."""

    address: str | None = Field(default=None, min_length=1, max_length=_MAX_URL_LENGTH,
                                pattern=_URL_PATTERN)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> WebhookUpdate:
        if self.address is None and self.enabled is None:
            raise ValueError("give address, enabled or both")
        return self

    def as_endpoint(self) -> EndpointUpdate:
        return EndpointUpdate(url=self.address, enabled=self.enabled)


def _check_url(url: str, settings: Settings) -> None:
    # The webhook policy accepts only http(s), even where private addresses are allowed.
    check_public_url(url, settings, purpose="webhook")


def _check_unique(session: Session, url: str, endpoint_id: str | None = None) -> None:
    # One endpoint per address (Mux's rule): a second would receive every event twice. Checked, not constrained:
    # a race of two creates costs a duplicate delivery, not an error.
    query = sa.select(WebhookEndpoint.id).where(WebhookEndpoint.url == url)
    if endpoint_id is not None:
        query = query.where(WebhookEndpoint.id != endpoint_id)
    if session.scalars(query.limit(1)).first() is not None:
        raise ConflictError(f"a webhook endpoint with the address {url!r} exists already")


def create_endpoint(session: Session, settings: Settings, url: str) -> WebhookEndpoint:
    """A new enabled endpoint with a fresh secret. ``InputUrlRefusedError`` for a URL the SSRF policy forbids
    (resolving the host name: one DNS lookup), ``ConflictError`` when another endpoint has that address."""
    _check_url(url, settings)
    _check_unique(session, url)
    now = utcnow()
    endpoint = WebhookEndpoint(id=new_id(), url=url, secret=new_secret(), enabled=True, created_at=now,
                               updated_at=now)
    session.add(endpoint)
    session.flush()
    log.info("webhook endpoint created", extra={"endpoint_id": endpoint.id})
    return endpoint


def get_endpoint(session: Session, endpoint_id: str, *, for_update: bool = False) -> WebhookEndpoint:
    """The endpoint, or ``NotFoundError`` (also for ids that cannot be ours)."""
    return find(session, WebhookEndpoint, endpoint_id, what="webhook endpoint", for_update=for_update)


def list_endpoints(session: Session, *, limit: int, cursor: str | None = None, page: int = 1
                   ) -> tuple[list[WebhookEndpoint], str | None]:
    """One page of endpoints, newest first (by ``cursor``, or Mux's numbered ``page``), and the next page's
    cursor. ``InvalidParametersError`` for a bad cursor."""
    try:
        return newest_first(session, WebhookEndpoint, limit=limit, cursor=cursor, page=page)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def _stop_pending(session: Session, endpoint_id: str, reason: str) -> int:
    result = session.execute(
        sa.update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.next_attempt_at.is_not(None))
        .values(next_attempt_at=None, last_error=f"not sent: {reason}"))
    return int(getattr(result, "rowcount", 0) or 0)


def _disable(session: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = utcnow()
    stopped = _stop_pending(session, endpoint.id, f"endpoint disabled ({reason})")
    log.warning("webhook endpoint disabled",
                extra={"endpoint_id": endpoint.id, "reason": reason, "deliveries_stopped": stopped})


def update_endpoint(session: Session, settings: Settings, endpoint: WebhookEndpoint,
                    update: EndpointUpdate) -> WebhookEndpoint:
    """Apply ``update``. Disabling stops the endpoint's pending deliveries (re-enabling does not bring them back:
    events from while it was off are not sent); enabling clears ``disabled_reason``."""
    if update.url is not None and update.url != endpoint.url:
        _check_url(update.url, settings)
        _check_unique(session, update.url, endpoint.id)
        endpoint.url = update.url
        endpoint.updated_at = utcnow()
    if update.enabled is False and endpoint.enabled:
        _disable(session, endpoint, "disabled through the API")
    elif update.enabled is True and not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


def rotate_secret(session: Session, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Give the endpoint a new secret, effective at once: every later attempt, pending retries included, is
    signed with it."""
    endpoint.secret = new_secret()
    endpoint.updated_at = utcnow()
    session.flush()
    log.info("webhook endpoint secret rotated", extra={"endpoint_id": endpoint.id})
    return endpoint


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint; its outbox rows go with it (``ON DELETE CASCADE``). A send in flight finishes and its
    outcome is dropped."""
    session.delete(endpoint)
    session.flush()


def list_deliveries(session: Session, endpoint: WebhookEndpoint, *, limit: int, cursor: str | None = None,
                    page: int = 1) -> tuple[list[WebhookDelivery], str | None]:
    """One page of the endpoint's deliveries, newest event first (``cursor``, else the numbered ``page``)."""
    try:
        return newest_first(session, WebhookDelivery, limit=limit, cursor=cursor, page=page,
                            where=[WebhookDelivery.endpoint_id == endpoint.id])
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def _unix(when: datetime | None) -> str | None:
    return None if when is None else str(int(when.timestamp()))


def endpoint_view(endpoint: WebhookEndpoint) -> WebhookEndpointView:
    """The endpoint as the API shows it, secret included (like Mux's dashboard, which shows it on demand: the
    server keeps it in clear anyway to sign, and anyone holding an access token can already read every event)."""
    return WebhookEndpointView(id=endpoint.id, url=endpoint.url, enabled=endpoint.enabled, secret=endpoint.secret,
                               disabled_reason=endpoint.disabled_reason, created_at=str(_unix(endpoint.created_at)),
                               updated_at=str(_unix(endpoint.updated_at)))


def webhook_view(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> WebhookView:
    """The endpoint as Mux's ``/system/v1/webhooks`` shows it: ``signing_secret`` only when ``with_secret``
    (Mux returns it once, on create)."""
    return WebhookView(id=endpoint.id, address=endpoint.url, enabled=endpoint.enabled,
                       created_at=iso_time(endpoint.created_at),
                       signing_secret=endpoint.secret if with_secret else None)


def delivery_view(delivery: WebhookDelivery) -> WebhookDeliveryView:
    """One outbox row: ``status`` is ``pending`` (``next_attempt_at`` says when), ``delivered`` or ``failed``
    (given up or stopped; ``last_error`` says why)."""
    if delivery.delivered_at is not None:
        status = "delivered"
    elif delivery.next_attempt_at is not None:
        status = "pending"
    else:
        status = "failed"
    return WebhookDeliveryView.model_validate({
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": status,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "delivered_at": _unix(delivery.delivered_at),
        "next_attempt_at": _unix(delivery.next_attempt_at),
        "created_at": _unix(delivery.created_at),
    })


# --- sending -------------------------------------------------------------------------------------------------


def _base_delay(attempts: int) -> timedelta:
    return RETRY_SCHEDULE[min(max(attempts, 1), len(RETRY_SCHEDULE)) - 1]


def backoff(attempts: int) -> timedelta:
    """The jittered delay after the ``attempts``-th failed attempt (1-based)."""
    return _base_delay(attempts) * _jitter.uniform(1 - JITTER, 1 + JITTER)


def max_attempts(retry_hours: float) -> int:
    """How many attempts a delivery gets within ``retry_hours`` on the schedule without jitter (Mux's
    ``max_attempts``; jitter may make it one more or one less): 7 for the default 24 h."""
    window, elapsed, attempts = timedelta(hours=retry_hours), timedelta(0), 1
    while elapsed + _base_delay(attempts) <= window:
        elapsed += _base_delay(attempts)
        attempts += 1
    return attempts


@dataclass(frozen=True)
class _Claimed:
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    url: str
    secret: str
    attempt_log: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class DeliveryResult:
    """What one POST came to: the HTTP status if an answer came, else ``None`` and ``error`` says why;
    the start of the answer's body and its headers as far as kept for the attempt log."""

    status: int | None
    error: str | None
    elapsed: float
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _opener(settings: Settings) -> urllib.request.OpenerDirector:
    # Only the HTTP(S) handlers, whose connections apply the SSRF policy to the addresses they connect to
    # (kinoray.control.outbound): no redirect handler (a 3xx comes back as a response and counts as a failure),
    # no error processor (a 4xx/5xx is a response, not an exception), no proxies from the environment, and no
    # file:// or ftp:// handler whatever URL reaches it.
    opener = urllib.request.OpenerDirector()
    for handler in policed_handlers(settings, purpose="webhook"):
        opener.add_handler(handler)
    return opener


def _post(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> DeliveryResult:
    started = time.monotonic()
    timeout = settings.api.webhook_timeout_seconds
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        response = _opener(settings).open(request, timeout=timeout)
        if response is None:  # no handler for the scheme
            return DeliveryResult(None, f"unsupported URL scheme in {url!r}", time.monotonic() - started)
        with response:  # only the start of the body is read, for the attempt log
            status = int(response.status)
            kept_headers = tuple((name.lower(), value)
                                 for name, value in list(response.getheaders())[:_KEPT_HEADERS])
            kept_body = response.read(_KEPT_BODY_BYTES).decode("utf-8", errors="replace")
    except InputUrlRefusedError as error:  # the name now resolves somewhere the policy forbids
        return DeliveryResult(None, f"URL refused: {error}", time.monotonic() - started)
    except TimeoutError:
        return DeliveryResult(None, f"timed out after {timeout:g} s", time.monotonic() - started)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            return DeliveryResult(None, f"timed out after {timeout:g} s", time.monotonic() - started)
        return DeliveryResult(None, f"connection failed: {reason}", time.monotonic() - started)
    message = None if 200 <= status < 300 else f"endpoint answered HTTP {status}"
    return DeliveryResult(status, message, time.monotonic() - started, kept_headers, kept_body)


def _send(claimed: _Claimed, settings: Settings) -> DeliveryResult:
    try:
        # Again at send time: the name may resolve elsewhere than when the endpoint was saved.
        _check_url(claimed.url, settings)
    except InvalidParametersError as error:
        return DeliveryResult(None, f"URL refused: {error}", 0.0)
    body = endpoint_body({**claimed.payload, "attempts": list(claimed.attempt_log)})
    headers = {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        # The receiver compares the timestamp with its own clock, so it is the wall clock, never a test's `now`.
        SIGNATURE_HEADER: sign(claimed.secret, body, int(time.time())),
        "Webhook-Id": claimed.event_id,
    }
    return _post(claimed.url, body, headers, settings)


def _lease(settings: Settings, count: int, workers: int) -> timedelta:
    rounds = -(-count // workers)
    return timedelta(seconds=rounds * settings.api.webhook_timeout_seconds + 60)


def _claim(platform: Platform, limit: int, now: datetime, workers: int) -> list[_Claimed]:
    with platform.db.session() as session:
        due = sa.select(WebhookDelivery).where(WebhookDelivery.next_attempt_at <= now) \
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)
        if platform.db.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        rows = list(session.scalars(due))
        if not rows:
            return []
        endpoint_ids = {row.endpoint_id for row in rows}
        endpoints = {endpoint.id: endpoint for endpoint in
                     session.scalars(sa.select(WebhookEndpoint).where(WebhookEndpoint.id.in_(endpoint_ids)))}
        lease_until = now + _lease(platform.settings, len(rows), workers)
        claimed = []
        for row in rows:
            endpoint = endpoints.get(row.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                # Queued in a race with the endpoint being disabled.
                row.next_attempt_at = None
                row.last_error = "not sent: endpoint disabled"
                continue
            row.next_attempt_at = lease_until
            claimed.append(_Claimed(row.id, row.endpoint_id, row.event_id, row.event_type, dict(row.payload),
                                    row.attempts, row.created_at, endpoint.url, endpoint.secret,
                                    tuple(row.attempt_log or ())))
        return claimed


def _attempt_entry(claimed: _Claimed, result: DeliveryResult, now: datetime, settings: Settings) -> dict[str, Any]:
    """One entry of Mux's ``attempts``: where it went, when, and what came back (status null when no answer
    came; ``response_body`` then says why)."""
    return {
        "id": new_id(),
        "address": claimed.url,
        "created_at": iso_time(now),
        "max_attempts": max_attempts(settings.api.webhook_retry_hours),
        "response_status_code": result.status,
        "response_headers": dict(result.headers),
        "response_body": result.body if result.status is not None else result.error,
    }


def _record(platform: Platform, claimed: _Claimed, result: DeliveryResult, now: datetime) -> str | None:
    """Store the outcome; the outcome label, or ``None`` if the row or endpoint went away meanwhile."""
    with platform.db.session() as session:
        row = session.get(WebhookDelivery, claimed.id)
        if row is None:
            return None
        row.attempts = claimed.attempts + 1
        row.last_status = result.status
        row.last_error = result.error
        row.attempt_log = [*(row.attempt_log or ()), _attempt_entry(claimed, result, now, platform.settings)]
        if result.ok:
            row.delivered_at = now
            row.next_attempt_at = None
            outcome = "delivered"
        elif result.status == 410:
            row.next_attempt_at = None
            endpoint = session.get(WebhookEndpoint, claimed.endpoint_id)
            if endpoint is not None and endpoint.enabled:
                _disable(session, endpoint, f"endpoint answered 410 Gone at {now.isoformat()}")
            outcome = "disabled"
        else:
            retry_at = now + backoff(row.attempts)
            give_up_at = claimed.created_at + timedelta(hours=platform.settings.api.webhook_retry_hours)
            if retry_at > give_up_at:
                row.next_attempt_at = None
                row.last_error = (f"gave up after {row.attempts} attempts over "
                                  f"{platform.settings.api.webhook_retry_hours:g} h: {result.error}")
                outcome = "gave_up"
            else:
                row.next_attempt_at = retry_at
                outcome = "failed"
    fields = {"delivery_id": claimed.id, "endpoint_id": claimed.endpoint_id, "event_id": claimed.event_id,
              "event_type": claimed.event_type, "attempt": claimed.attempts + 1, "outcome": outcome,
              "status": result.status, "elapsed_ms": round(result.elapsed * 1000)}
    if outcome == "delivered":
        log.info("webhook delivered", extra=fields)
    else:
        log.warning("webhook not delivered", extra={**fields, "error": result.error})
    return outcome


def deliver_due(platform: Platform, *, limit: int = 50, now: datetime | None = None, workers: int = 8) -> int:
    """Send up to ``limit`` due deliveries, ``workers`` at a time; the number of attempts made.

    Each attempt costs at most ``api.webhook_timeout_seconds`` (per connect and per read). ``now`` is the
    scheduler's clock (default: the wall clock at claim and at record time): which rows are due, when retries
    fall due and when to give up. Tests pass it to move through a day of retries at once; signatures always use
    the wall clock."""
    claimed = _claim(platform, limit, now or utcnow(), workers)
    if not claimed:
        return 0

    def attempt(item: _Claimed) -> None:
        try:
            result = _send(item, platform.settings)
        except Exception as error:  # a bug here must cost one attempt, not leave the row leased forever
            log.exception("webhook attempt failed unexpectedly", extra={"delivery_id": item.id})
            result = DeliveryResult(None, f"internal error: {type(error).__name__}", 0.0)
        outcome = _record(platform, item, result, now or utcnow())
        if outcome is not None:
            WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()

    if len(claimed) == 1 or workers <= 1:
        for item in claimed:
            attempt(item)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(claimed)), thread_name_prefix="webhook") as pool:
            for future in [pool.submit(attempt, item) for item in claimed]:
                future.result()
    return len(claimed)


def deliver_loop(platform: Platform, stop: threading.Event, *, interval: float = 1.0) -> None:
    """Run :func:`deliver_due` until ``stop`` is set: again at once after a full batch, else every ``interval``
    seconds. An error (the database unreachable, say) is logged and retried after ``interval``."""
    limit = 50
    while not stop.is_set():
        try:
            sent = deliver_due(platform, limit=limit)
        except Exception:
            log.exception("webhook sender failed; retrying")
            sent = 0
        if sent < limit:
            stop.wait(interval)
