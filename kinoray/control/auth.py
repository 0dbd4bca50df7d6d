"""Access tokens over HTTP Basic: the token id is the user name, the secret the password.

Secrets are stored as scrypt hashes and compared in constant time (:func:`kinoray.store.models.verify_secret`).
Every failure — no header, a malformed one, an unknown id, a wrong secret, a revoked token — is the same
``unauthorized`` error, so the API never tells a caller which part was wrong.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.errors import AuthenticationError
from kinoray.store.models import AccessToken, is_valid_id, utcnow

__all__ = ["TokenInfo", "authenticate", "create_token", "parse_basic", "revoke_token"]

#: ``last_used_at`` is written at most this often per token, so reads do not turn into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenInfo:
    """The authenticated caller, detached from any session."""

    id: str
    name: str | None
    environment: str


def parse_basic(authorization: str | None) -> tuple[str, str]:
    """``(token_id, secret)`` from an ``Authorization: Basic ...`` header; ``AuthenticationError`` otherwise."""
    if not authorization:
        raise AuthenticationError("missing credentials: use HTTP Basic with an access token id and secret")
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise AuthenticationError("unsupported authorization scheme: use HTTP Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed Basic credentials") from None
    token_id, separator, secret = decoded.partition(":")
    if not separator or not token_id or not secret:
        raise AuthenticationError("malformed Basic credentials")
    return token_id, secret


def authenticate(session: Session, authorization: str | None) -> TokenInfo:
    """The token an ``Authorization`` header proves, or ``AuthenticationError`` (one message for every cause)."""
    token_id, secret = parse_basic(authorization)
    refused = AuthenticationError("invalid credentials")
    if not is_valid_id(token_id):
        raise refused
    token = session.get(AccessToken, token_id)
    if token is None or not token.check_secret(secret) or token.revoked:
        raise refused
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        session.execute(sa.update(AccessToken).where(AccessToken.id == token.id).values(last_used_at=now))
    return TokenInfo(id=token.id, name=token.name, environment=token.environment)


def create_token(session: Session, name: str | None = None, environment: str = "default") -> tuple[TokenInfo, str]:
    """A new access token and its secret (shown once: only its hash is stored)."""
    token, secret = AccessToken.issue(name=name, environment=environment)
    session.add(token)
    return TokenInfo(id=token.id, name=token.name, environment=token.environment), secret


def revoke_token(session: Session, token_id: str) -> bool:
    """Revoke a token (kept for the audit trail); ``False`` when there is no such token."""
    token = session.get(AccessToken, token_id) if is_valid_id(token_id) else None
    if token is None:
        return False
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return True
