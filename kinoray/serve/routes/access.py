"""``/system/v1/access-tokens`` and ``/system/v1/environments``: kinoray's own API for what Mux manages in its
dashboard (:mod:`kinoray.control.auth`, :mod:`kinoray.control.environments`). Every route needs a token with
``system=full`` (``403 forbidden`` otherwise, reads included).

Access tokens are those of the caller's environment (another environment's token is ``404``); a new token's
secret is in the create response only, so creates do not take ``Idempotency-Key`` (a replay could not return
the secret). A revoked token is ``401`` from its next request in this API process, and in every other within
``api.token_cache_seconds`` (:mod:`kinoray.control.auth`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Response
from pydantic import Field

from kinoray.control import auth, environments
from kinoray.control.requests import RequestModel
from kinoray.control.views import AccessTokenView, EnvironmentView, NewAccessTokenView, NewEnvironmentView
from kinoray.errors import InvalidParametersError
from kinoray.serve.deps import AdminToken, PageDep, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, CursorListing, Envelope, error_responses

__all__ = ["AccessTokenCreate", "EnvironmentCreate", "EnvironmentUpdate", "environments_router", "tokens_router"]

tokens_router = APIRouter(prefix="/system/v1/access-tokens", tags=["access tokens"])
environments_router = APIRouter(prefix="/system/v1/environments", tags=["environments"])

_NoIdempotency = Annotated[str | None, Header(alias="idempotency-key", include_in_schema=False)]


def _refuse_idempotency(key: str | None) -> None:
    if key is not None:
        raise InvalidParametersError("Idempotency-Key is not supported here: the secret is never stored, so a "
                                     "replay could not return it")


#: A name: some visible character, no NUL (what no database stores).
_NAME = r"^[^\x00]*[^\s\x00][^\x00]*$"


class AccessTokenCreate(RequestModel):
    name: str | None = Field(default=None, max_length=255)
    permissions: dict[Literal["video", "data", "system"], Literal["read", "full"]] | None = Field(
        default=None, min_length=1,
        description="per product: read (GET/HEAD) or full; a product left out is refused; default full access "
                    "to all three")


@tokens_router.post("", status_code=201, response_model=Envelope[NewAccessTokenView],
                    responses=error_responses(*AUTHENTICATED))
def create_token(body: AccessTokenCreate, platform: PlatformDep, token: AdminToken,
                 idempotency_key: _NoIdempotency = None) -> Envelope[NewAccessTokenView]:
    """A new token of the caller's environment; its ``secret`` is shown in this answer only."""
    _refuse_idempotency(idempotency_key)
    with platform.db.session() as session:
        return Envelope(data=auth.new_token(session, name=body.name, environment_id=token.environment_id,
                                            permissions=body.permissions))


@tokens_router.get("", response_model=CursorListing[AccessTokenView], responses=error_responses(*AUTHENTICATED))
def list_tokens(platform: PlatformDep, token: AdminToken, pages: PageDep) -> CursorListing[AccessTokenView]:
    """The environment's tokens, newest first, revoked ones included."""
    with platform.db.reader() as session:
        rows, next_cursor = auth.list_tokens(session, limit=pages.limit, cursor=pages.cursor, page=pages.page)
        return CursorListing(data=[auth.token_view(row) for row in rows], next_cursor=next_cursor)


@tokens_router.get("/{token_id}", response_model=Envelope[AccessTokenView],
                   responses=error_responses(*AUTHENTICATED, 404))
def get_token(token_id: str, platform: PlatformDep, token: AdminToken) -> Envelope[AccessTokenView]:
    with platform.db.reader() as session:
        return Envelope(data=auth.token_view(auth.get_token(session, token_id)))


@tokens_router.delete("/{token_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def revoke_token(token_id: str, platform: PlatformDep, token: AdminToken) -> Response:
    """Revoke the token (it stays listed, ``revoked: true``): ``401`` from its next request in this process, in
    every process within ``api.token_cache_seconds``."""
    with platform.db.session() as session:
        auth.revoke_token(session, token_id)
    return Response(status_code=204)


class EnvironmentCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255, pattern=_NAME)
    env_key: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$",
                                description="Mux Data's environment key (default: a new random one)")


class EnvironmentUpdate(RequestModel):
    name: str = Field(min_length=1, max_length=255, pattern=_NAME)


@environments_router.post("", status_code=201, response_model=Envelope[NewEnvironmentView],
                          responses=error_responses(*AUTHENTICATED, 409))
def create_environment(body: EnvironmentCreate, platform: PlatformDep, token: AdminToken,
                       idempotency_key: _NoIdempotency = None) -> Envelope[NewEnvironmentView]:
    """A new, empty environment and its first access token (full access; ``secret`` shown here only)."""
    _refuse_idempotency(idempotency_key)
    with platform.db.session() as session:
        return Envelope(data=environments.new_environment(session, body.name, body.env_key))


@environments_router.get("", response_model=CursorListing[EnvironmentView], responses=error_responses(*AUTHENTICATED))
def list_environments(platform: PlatformDep, token: AdminToken, pages: PageDep) -> CursorListing[EnvironmentView]:
    """Every environment of the deployment, newest first."""
    with platform.db.reader() as session:
        rows, next_cursor = environments.list_environments(session, limit=pages.limit, cursor=pages.cursor,
                                                           page=pages.page)
        return CursorListing(data=[environments.environment_view(row) for row in rows], next_cursor=next_cursor)


@environments_router.get("/{environment_id}", response_model=Envelope[EnvironmentView],
                         responses=error_responses(*AUTHENTICATED, 404))
def get_environment(environment_id: str, platform: PlatformDep, token: AdminToken) -> Envelope[EnvironmentView]:
    with platform.db.reader() as session:
        return Envelope(data=environments.environment_view(environments.get_environment(session, environment_id)))


@environments_router.patch("/{environment_id}", response_model=Envelope[EnvironmentView],
                           responses=error_responses(*AUTHENTICATED, 404, 409))
def update_environment(environment_id: str, body: EnvironmentUpdate, platform: PlatformDep,
                       token: AdminToken) -> Envelope[EnvironmentView]:
    """Rename the environment."""
    with platform.db.session() as session:
        return Envelope(data=environments.environment_view(
            environments.rename_environment(session, environment_id, body.name)))


@environments_router.delete("/{environment_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404, 409))
def delete_environment(environment_id: str, platform: PlatformDep, token: AdminToken) -> Response:
    """Delete an empty environment whose tokens are all revoked (not the default one, nor the caller's)."""
    with platform.db.session() as session:
        environments.delete_environment(session, environment_id, caller_environment_id=token.environment_id)
    return Response(status_code=204)
