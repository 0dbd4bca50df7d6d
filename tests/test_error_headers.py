"""Errors carry their HTTP headers as typed fields (:meth:`kinoray.errors.KinorayError.http_headers`), named per
class in :data:`kinoray.errors.ERROR_HEADERS`, sent by the one exception handler and documented in OpenAPI."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kinoray.errors import (
    AuthenticationError,
    DatabaseUnavailableError,
    KinorayError,
    MethodNotAllowedError,
    NotFoundError,
    OverCapacityError,
    RangeNotSatisfiableError,
    RateLimitedError,
    ServiceUnavailableError,
    error_headers,
)
from kinoray.serve.api import build_api, install_error_handlers

SAMPLES: list[tuple[KinorayError, dict[str, str]]] = [
    (AuthenticationError("no credentials"), {"WWW-Authenticate": 'Basic realm="kinoray"'}),
    (RateLimitedError("slow down", 2.2, 10), {"Retry-After": "3", "X-RateLimit-Limit": "10",
                                              "X-RateLimit-Remaining": "0"}),
    (RateLimitedError("slow down", 0.01, 5), {"Retry-After": "1", "X-RateLimit-Limit": "5",
                                              "X-RateLimit-Remaining": "0"}),
    (ServiceUnavailableError("later", 4), {"Retry-After": "4"}),
    (DatabaseUnavailableError(), {"Retry-After": "2"}),
    (OverCapacityError("shed"), {"Retry-After": "1"}),
    (MethodNotAllowedError("no", "GET, HEAD"), {"Allow": "GET, HEAD"}),
    (RangeNotSatisfiableError("past the end", 1234), {"Accept-Ranges": "bytes", "Content-Range": "bytes */1234"}),
    (NotFoundError("nothing"), {}),
]


@pytest.mark.parametrize(("error", "headers"), SAMPLES, ids=[type(error).__name__ for error, _ in SAMPLES])
def test_typed_fields_make_the_headers_the_table_names(error: KinorayError, headers: dict[str, str]) -> None:
    assert error.http_headers() == headers
    assert set(headers) == set(error_headers(type(error)))


def _app(error: KinorayError) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise error

    return TestClient(app)


@pytest.mark.parametrize(("error", "headers"), SAMPLES, ids=[type(error).__name__ for error, _ in SAMPLES])
def test_the_exception_handler_sends_them(error: KinorayError, headers: dict[str, str]) -> None:
    answer = _app(error).get("/boom")
    assert answer.json()["error"]["type"] == error.type
    for name, value in headers.items():
        assert answer.headers[name] == value


def test_context_headers_are_added_and_the_errors_own_win() -> None:
    error = RateLimitedError("slow down", 1, 3).add_headers({"Tus-Resumable": "1.0.0", "Retry-After": "99"})
    answer = _app(error).get("/boom")
    assert answer.status_code == 429
    assert answer.headers["Tus-Resumable"] == "1.0.0" and answer.headers["Retry-After"] == "1"


def test_openapi_documents_the_headers_of_each_error_status() -> None:
    document = build_api().openapi()
    answers = document["paths"]["/video/v1/assets"]["get"]["responses"]
    assert answers["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert {name for name, header in answers["429"]["headers"].items() if header["required"]} == {
        "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"}
    assert "headers" not in answers["400"]
