"""Response shapes shared by every route module: the error body and the OpenAPI ``responses`` for it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["AUTHENTICATED", "ErrorBody", "ErrorDetail", "error_responses"]


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


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting ``statuses`` with the :class:`ErrorBody` schema."""
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS.get(status, "Error")} for status in statuses}


#: What every authenticated management endpoint can answer besides its success.
AUTHENTICATED = (400, 401, 403, 429)
