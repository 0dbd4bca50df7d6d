"""``/system/v1/signing-keys``: RSA keys for signed playback URLs (Mux's URL signing keys).

The private key is in the create response only. This router therefore does not use
:class:`~kinoray.serve.deps.IdempotentRoute`: replaying a create would mean storing the private key in the
idempotency table. A create carrying ``Idempotency-Key`` is refused rather than silently not replayed; a client
that lost a create's answer creates another key and deletes the orphan.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field

from kinoray.control import signing
from kinoray.errors import InvalidParametersError
from kinoray.serve.deps import CurrentToken, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, error_responses

__all__ = ["router"]

router = APIRouter(tags=["signing keys"])
#: Where Mux serves signing keys: ``/system/v1/signing-keys`` (its SDKs) and ``/video/v1/signing-keys`` (its
#: current API reference); the same routes under both.
PREFIXES = ("/system/v1/signing-keys", "/video/v1/signing-keys")

MAX_LIMIT = 100


class SigningKeyObject(BaseModel):
    id: str = Field(description="the kid of JWTs signed with this key")
    created_at: str = Field(description="unix seconds")


class NewSigningKeyObject(SigningKeyObject):
    private_key: str = Field(description="base64 of the PEM private key; shown only in this response")


class NewSigningKeyEnvelope(BaseModel):
    data: NewSigningKeyObject


class SigningKeyEnvelope(BaseModel):
    data: SigningKeyObject


class SigningKeyList(BaseModel):
    data: list[SigningKeyObject]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")


@router.post("", status_code=201, response_model=NewSigningKeyEnvelope, responses=error_responses(*AUTHENTICATED))
def create(platform: PlatformDep, token: CurrentToken,
           idempotency_key: Annotated[str | None, Header(include_in_schema=False)] = None) -> dict[str, Any]:
    """Generate an RSA-2048 key pair; the answer holds the private key, which the server does not keep."""
    if idempotency_key is not None:
        raise InvalidParametersError("Idempotency-Key is not supported here: the private key is never stored, "
                                     "so a replay could not return it")
    with platform.db.session() as session:
        key, private_key = signing.create_signing_key(session)
        return {"data": {**signing.signing_key_view(key), "private_key": private_key}}


@router.get("", response_model=SigningKeyList, responses=error_responses(*AUTHENTICATED))
def list_keys(platform: PlatformDep, token: CurrentToken, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 25,
              page: Annotated[int, Query(ge=1, le=10_000, description="Mux's numbered pages; cursor wins")] = 1,
              cursor: Annotated[str | None, Query(max_length=512)] = None) -> dict[str, Any]:
    """Newest first; public information only."""
    with platform.db.reader() as session:
        rows, next_cursor = signing.list_signing_keys(session, limit=limit, cursor=cursor, page=page)
        return {"data": [signing.signing_key_view(row) for row in rows], "next_cursor": next_cursor}


@router.get("/{key_id}", response_model=SigningKeyEnvelope, responses=error_responses(*AUTHENTICATED, 404))
def get(key_id: str, platform: PlatformDep, token: CurrentToken) -> dict[str, Any]:
    with platform.db.reader() as session:
        return {"data": signing.signing_key_view(signing.get_signing_key(session, key_id))}


@router.delete("/{key_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(key_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete the key: tokens it signed stop verifying."""
    with platform.db.session() as session:
        signing.delete_signing_key(session, signing.get_signing_key(session, key_id))
    return Response(status_code=204)
