"""Response shapes shared by every route module: the error body and the OpenAPI ``responses`` for it."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from kinoray.errors import ERROR_TABLE, error_headers

__all__ = ["AUTHENTICATED", "CursorListing", "Envelope", "ErrorBody", "ErrorDetail", "Listing", "error_responses"]

T = TypeVar("T", bound=BaseModel)


class Envelope(BaseModel, Generic[T]):
    """Every single-resource answer: ``{"data": <the resource's view>}``."""

    data: T


class Listing(BaseModel, Generic[T]):
    """A page of a list that Mux pages by number only: ``{"data": [...]}`` (an empty page ends it)."""

    data: list[T]


class CursorListing(Listing[T], Generic[T]):
    """A page of a list that also pages by cursor: ``{"data": [...], "next_cursor": ...}``."""

    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")


class ErrorDetail(BaseModel):
    type: str = Field(description="stable machine-readable error type, e.g. invalid_parameters, not_found")
    messages: list[str] = Field(description="what went wrong, for a person")


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"type": ..., "messages": [...]}}``."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Invalid request or parameters",
    401: "Missing or invalid credentials",
    403: "The access token's permissions do not cover this request",
    404: "No such resource",
    409: "Conflict with the resource's state",
    410: "Gone",
    412: "Precondition failed",
    413: "Too large",
    415: "Unsupported media type",
    422: "Idempotency-Key reused with another request",
    423: "Locked",
    429: "Rate limit exceeded",
    460: "Checksum mismatch",
}


def _error_headers(status: int) -> dict[str, dict[str, Any]]:
    """The headers answers of ``status`` carry (:data:`kinoray.errors.ERROR_HEADERS`), required where every error
    class of that status carries them."""
    classes = [cls for cls, code in ERROR_TABLE.items() if code == status]
    named = [set(error_headers(cls)) for cls in classes]
    always = set.intersection(*named) if named else set()
    return {name: {"required": name in always, "schema": {"type": "string"}}
            for name in sorted(set().union(*named))}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting ``statuses`` with the :class:`ErrorBody` schema and the headers
    the errors of that status carry."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS.get(status, "Error")}
        if headers := _error_headers(status):
            entry["headers"] = headers
        responses[status] = entry
    return responses


#: What every authenticated management endpoint can answer besides its success.
AUTHENTICATED = (400, 401, 403, 429)
