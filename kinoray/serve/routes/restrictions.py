"""``/video/v1/playback-restrictions``: Mux's referrer and user-agent rules for signed playback
(:mod:`kinoray.control.restrictions`). A signed token opts into one with its ``playback_restriction_id`` claim;
the delivery edge enforces it on every manifest, segment, file and image that token opens.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from kinoray.control import restrictions
from kinoray.control.restrictions import (
    CreateRestriction,
    PlaybackRestrictionView,
    ReferrerRule,
    UserAgentRule,
)
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PageDep, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, CursorListing, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/video/v1/playback-restrictions", tags=["playback restrictions"],
                   route_class=IdempotentRoute)

class RestrictionEnvelope(BaseModel):
    data: PlaybackRestrictionView


@router.post("", status_code=201, response_model=RestrictionEnvelope, responses=error_responses(*AUTHENTICATED))
def create(body: CreateRestriction, platform: PlatformDep, token: CurrentToken) -> RestrictionEnvelope:
    """A new restriction; name it in a signed token's ``playback_restriction_id`` claim to apply it."""
    with platform.db.session() as session:
        return RestrictionEnvelope(data=restrictions.restriction_view(restrictions.create_restriction(session, body)))


@router.get("", response_model=CursorListing[PlaybackRestrictionView], responses=error_responses(*AUTHENTICATED))
def list_all(platform: PlatformDep, token: CurrentToken, pages: PageDep) -> CursorListing[PlaybackRestrictionView]:
    """Newest first, Mux's numbered pages (or ``cursor``, from ``next_cursor``)."""
    with platform.db.reader() as session:
        rows, next_cursor = restrictions.list_restrictions(session, limit=pages.limit, page=pages.page,
                                                           cursor=pages.cursor)
        return CursorListing(data=[restrictions.restriction_view(row) for row in rows], next_cursor=next_cursor)


@router.get("/{restriction_id}", response_model=RestrictionEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def get(restriction_id: str, platform: PlatformDep, token: CurrentToken) -> RestrictionEnvelope:
    with platform.db.reader() as session:
        return RestrictionEnvelope(data=restrictions.restriction_view(
            restrictions.get_restriction(session, restriction_id)))


@router.put("/{restriction_id}/referrer", response_model=RestrictionEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def update_referrer(restriction_id: str, body: ReferrerRule, platform: PlatformDep,
                    token: CurrentToken) -> RestrictionEnvelope:
    """Replace the allowed domains and ``allow_no_referrer``; every edge process applies it within
    ``edge.cache_seconds``."""
    with platform.db.session() as session:
        return RestrictionEnvelope(data=restrictions.restriction_view(
            restrictions.update_referrer(session, restriction_id, body)))


@router.put("/{restriction_id}/user_agent", response_model=RestrictionEnvelope,
            responses=error_responses(*AUTHENTICATED, 404))
def update_user_agent(restriction_id: str, body: UserAgentRule, platform: PlatformDep,
                      token: CurrentToken) -> RestrictionEnvelope:
    with platform.db.session() as session:
        return RestrictionEnvelope(data=restrictions.restriction_view(
            restrictions.update_user_agent(session, restriction_id, body)))


@router.delete("/{restriction_id}", status_code=204, responses=error_responses(*AUTHENTICATED, 404))
def delete(restriction_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete it: tokens naming it are refused (403) from then on."""
    with platform.db.session() as session:
        restrictions.delete_restriction(session, restriction_id)
    return Response(status_code=204)
