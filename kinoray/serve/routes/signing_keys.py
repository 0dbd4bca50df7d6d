"""``/system/v1/signing-keys``: RSA keys for signed playback URLs (Mux's URL signing keys).

The private key is in the create response only. This router therefore does not use
:class:`~kinoray.serve.deps.IdempotentRoute`: replaying a create would mean storing the private key in the
idempotency table. A create carrying ``Idempotency-Key`` is refused rather than silently not replayed; a client
that lost a create's answer creates another key and deletes the orphan.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from kinoray.control import signing
from kinoray.control.views import NewSigningKeyView, SigningKeyView
from kinoray.errors import InvalidParametersError
from kinoray.serve.deps import CurrentToken, PageDep, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, CursorListing, Envelope, error_responses

__all__ = ["router"]

router = APIRouter(tags=["signing keys"])
#: Where Mux serves signing keys: ``/system/v1/signing-keys`` (its SDKs) and ``/video/v1/signing-keys`` (its
#: current API reference); the same routes under both.
PREFIXES = ("/system/v1/signing-keys", "/video/v1/signing-keys")


@router.post("", status_code=201, response_model=Envelope[NewSigningKeyView],
             responses=error_responses(*AUTHENTICATED))
def create(platform: PlatformDep, token: CurrentToken,
           idempotency_key: Annotated[str | None, Header(include_in_schema=False)] = None
           ) -> Envelope[NewSigningKeyView]:
    """Generate an RSA-2048 key pair; the answer holds the private key, which the server does not keep."""
    if idempotency_key is not None:
        raise InvalidParametersError("Idempotency-Key is not supported here: the private key is never stored, "
                                     "so a replay could not return it")
    with platform.db.session() as session:
        return Envelope(data=signing.new_signing_key(session))


@router.get("", response_model=CursorListing[SigningKeyView], responses=error_responses(*AUTHENTICATED))
def list_keys(platform: PlatformDep, token: CurrentToken, pages: PageDep) -> CursorListing[SigningKeyView]:
    """Newest first; public information only."""
    with platform.db.reader() as session:
        rows, next_cursor = signing.list_signing_keys(session, limit=pages.limit, cursor=pages.cursor,
                                                      page=pages.page)
        return CursorListing(data=[signing.signing_key_view(row) for row in rows], next_cursor=next_cursor)


@router.get("/{key_id}", response_model=Envelope[SigningKeyView], responses=error_responses(*AUTHENTICATED, 404))
def get(key_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[SigningKeyView]:
    with platform.db.reader() as session:
        return Envelope(data=signing.signing_key_view(signing.get_signing_key(session, key_id)))


@router.delete("/{key_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(key_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the key: tokens it signed stop verifying."""
    with platform.db.session() as session:
        signing.delete_signing_key(session, signing.get_signing_key(session, key_id))
    return Response(status_code=204)
