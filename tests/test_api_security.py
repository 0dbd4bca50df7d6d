"""Every management endpoint × {no credentials, wrong secret, revoked token, unknown token} is refused with a
typed 401, whatever the method and body — enumerated from the app's own OpenAPI document, so a route added
later is covered without editing this file. Public routes are an explicit, short allow-list."""

from __future__ import annotations

import re

import pytest
import requests

#: Routes that need no access token, and why.
PUBLIC = {
    "/healthz": "liveness probe",
    "/readyz": "readiness probe: says which dependency fails, nothing about any customer's data",
    "/system/v1/capabilities": "encoder capabilities of the replica (no customer data)",
    "/metrics": "Prometheus scrape (cluster network only)",
    "/upload/v1/{upload_id}": "direct-upload URL: the unguessable upload id is the capability",
    "/": "the Mux Data beacon collector (no credentials: browsers send them)",
    "/data/v1/beacons": "the Mux Data beacon collector, by path",
    "/data/v1/exports/views/{environment_id}/{day}/{name}": "a view export's download: its expiring HMAC-signed link is the capability",
}


def _operations(api) -> list[tuple[str, str]]:
    document = requests.get(f"{api.url}/openapi.json", timeout=10).json()
    operations = []
    for path, methods in document["paths"].items():
        if path in PUBLIC:
            continue
        for method in methods:
            if method in ("get", "post", "put", "patch", "delete"):
                operations.append((method, path))
    return operations


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "A1b2C3d4", path)


@pytest.fixture(scope="module")
def revoked(api) -> tuple[str, str]:
    from kinoray.control.auth import revoke_token

    token = api.new_token("to-revoke")
    assert requests.get(f"{api.url}/video/v1/assets", auth=token, timeout=5).status_code == 200
    with api.platform.db.session() as session:
        assert revoke_token(session, token[0])
    return token


def test_openapi_lists_the_management_routes(api) -> None:
    paths = {path for _, path in _operations(api)}
    for expected in ("/video/v1/assets", "/video/v1/assets/{asset_id}", "/video/v1/playback-ids/{playback_id}"):
        assert expected in paths


def test_every_management_endpoint_refuses_bad_credentials(api, revoked) -> None:
    operations = _operations(api)
    assert len(operations) >= 8
    credentials = {
        "none": None,
        "wrong secret": (api.token_id, "not-the-secret"),
        "revoked": revoked,
        "unknown token": ("Zz9" * 10, api.secret),
    }
    failures = []
    for method, path in operations:
        for label, auth in credentials.items():
            answer = requests.request(method.upper(), api.url + _fill(path), auth=auth, json={}, timeout=10)
            body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
            if answer.status_code != 401 or body.get("error", {}).get("type") != "unauthorized":
                failures.append(f"{method.upper()} {path} [{label}] -> {answer.status_code} {answer.text[:120]}")
    assert not failures, "\n".join(failures)


def test_a_revoked_token_stays_revoked_after_a_cached_success(api, revoked) -> None:
    # verify_secret caches successful checks; revocation must still win on the very next request
    answer = requests.get(f"{api.url}/video/v1/assets", auth=revoked, timeout=5)
    assert answer.status_code == 401
