"""URL signing keys: RSA-2048 key pairs whose private half signs playback JWTs (RS256, ``kid`` = key id).

The server generates the pair, returns the private key once (base64 of its PEM, as Mux does) and stores only the
public key. Rotation: create a new key, move signers to it, delete the old one once every token it signed has
expired (a deleted key's tokens stop verifying at once).
"""

from __future__ import annotations

import base64
import logging

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from kinoray.control.views import NewSigningKeyView, SigningKeyView
from kinoray.errors import InvalidParametersError, NotFoundError
from kinoray.store.db import newest_first
from kinoray.store.models import SigningKey, is_valid_id, new_id, utcnow

__all__ = [
    "KEY_SIZE",
    "create_signing_key",
    "delete_signing_key",
    "get_signing_key",
    "list_signing_keys",
    "new_signing_key",
    "public_key_pem",
    "signing_key_view",
]

log = logging.getLogger(__name__)

KEY_SIZE = 2048
_PUBLIC_EXPONENT = 65537


def create_signing_key(session: Session) -> tuple[SigningKey, str]:
    """A new key row and its private key as base64 of a PKCS#1 PEM (``-----BEGIN RSA PRIVATE KEY-----``, the
    form Mux hands out), which is not kept anywhere. Generating the pair costs tens of milliseconds of CPU."""
    private_key = rsa.generate_private_key(public_exponent=_PUBLIC_EXPONENT, key_size=KEY_SIZE)
    private_pem = private_key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption())
    public_pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    key = SigningKey(id=new_id(), public_key=public_pem.decode("ascii"), created_at=utcnow())
    session.add(key)
    session.flush()
    log.info("signing key created", extra={"signing_key_id": key.id})
    return key, base64.b64encode(private_pem).decode("ascii")


def get_signing_key(session: Session, key_id: str) -> SigningKey:
    """The key, or ``NotFoundError`` (also for ids that cannot be ours)."""
    key = session.get(SigningKey, key_id) if is_valid_id(key_id) else None
    if key is None:
        raise NotFoundError(f"no signing key {key_id!r}")
    return key


def list_signing_keys(session: Session, *, limit: int, cursor: str | None = None, page: int = 1
                      ) -> tuple[list[SigningKey], str | None]:
    """One page of keys, newest first (``cursor``, else Mux's numbered ``page``), and the next page's cursor."""
    try:
        return newest_first(session, SigningKey, limit=limit, cursor=cursor, page=page)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def delete_signing_key(session: Session, key: SigningKey) -> None:
    """Delete the key: tokens it signed stop verifying at the next request."""
    session.delete(key)
    session.flush()
    log.info("signing key deleted", extra={"signing_key_id": key.id})


def public_key_pem(session: Session, kid: str, environment_id: str | None = None) -> str | None:
    """The PEM public key of signing key ``kid`` (a JWT header's ``kid``), or ``None`` if there is no such key
    (in ``environment_id``, if given: as in Mux, signing keys are per environment, and a signed playback id
    opens only with a key of its own environment)."""
    if not is_valid_id(kid):
        return None
    query = sa.select(SigningKey.public_key).where(SigningKey.id == kid)
    if environment_id is not None:
        query = query.where(SigningKey.environment_id == environment_id)
    return session.scalar(query)


def signing_key_view(key: SigningKey) -> SigningKeyView:
    """The key as the API lists it: its id and creation time (never key material)."""
    return SigningKeyView(id=key.id, created_at=str(int(key.created_at.timestamp())))


def new_signing_key(session: Session) -> NewSigningKeyView:
    """``POST /system/v1/signing-keys``: a new key, its private half in the answer only."""
    key, private_key = create_signing_key(session)
    return NewSigningKeyView(**signing_key_view(key).model_dump(), private_key=private_key)
