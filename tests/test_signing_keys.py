"""URL signing keys (``/system/v1/signing-keys``): RSA-2048 pairs whose private key is shown once.

This module runs on the default-settings API (the shared ``api`` fixture), so the default SSRF policy for
webhook endpoint URLs is tested here too; ``test_webhooks.py`` needs private addresses allowed for its receiver.
"""

from __future__ import annotations

import base64
import time

import jwt
import pytest
import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kinoray.control.signing import public_key_pem
from kinoray.store.models import SigningKey
from tests.api_server import ApiServer


def _keys(api: ApiServer) -> str:
    return f"{api.url}/system/v1/signing-keys"


def _public_pem(api: ApiServer, kid: str) -> str | None:
    with api.platform.db.session() as session:
        return public_key_pem(session, kid)


def test_create_returns_a_usable_private_key_once(api: ApiServer) -> None:
    answer = api.client.post(_keys(api), timeout=30)
    assert answer.status_code == 201, answer.text
    data = answer.json()["data"]
    assert set(data) == {"id", "private_key", "created_at"}
    assert abs(int(data["created_at"]) - time.time()) < 60
    pem = base64.b64decode(data["private_key"], validate=True)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    private_key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size == 2048

    stored = _public_pem(api, data["id"])
    assert stored is not None
    assert stored == private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with api.platform.db.session() as session:
        assert "PRIVATE" not in session.scalars(sa.select(SigningKey.public_key)
                                                .where(SigningKey.id == data["id"])).one()

    # What issue 5's playback verifier will do: the token's kid selects the public key, RS256 only.
    token = jwt.encode({"sub": "playback1", "aud": "v", "exp": int(time.time()) + 600}, pem,
                       algorithm="RS256", headers={"kid": data["id"]})
    verifying_key = _public_pem(api, jwt.get_unverified_header(token)["kid"])
    assert verifying_key is not None
    claims = jwt.decode(token, verifying_key, algorithms=["RS256"], audience="v")
    assert claims["sub"] == "playback1"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"sub": "playback1", "aud": "v", "exp": int(time.time()) + 600}, other,
                        algorithm="RS256", headers={"kid": data["id"]})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, verifying_key, algorithms=["RS256"], audience="v")


def test_list_and_get_never_show_key_material(api: ApiServer) -> None:
    first = api.client.post(_keys(api), timeout=30).json()["data"]
    second = api.client.post(_keys(api), timeout=30).json()["data"]
    answer = api.client.get(_keys(api), params={"limit": 1}, timeout=10)
    assert answer.status_code == 200
    page = answer.json()
    assert page["data"] == [{"id": second["id"], "created_at": second["created_at"]}]
    rest = api.client.get(_keys(api), params={"limit": 100, "cursor": page["next_cursor"]}, timeout=10)
    assert first["id"] in [item["id"] for item in rest.json()["data"]]
    got = api.client.get(f"{_keys(api)}/{first['id']}", timeout=10)
    assert got.json() == {"data": {"id": first["id"], "created_at": first["created_at"]}}
    for text in (answer.text, rest.text, got.text):
        assert "private" not in text.lower() and "BEGIN" not in text


def test_delete_revokes_the_key(api: ApiServer) -> None:
    key = api.client.post(_keys(api), timeout=30).json()["data"]
    url = f"{_keys(api)}/{key['id']}"
    assert api.client.delete(url, timeout=10).status_code == 204
    assert _public_pem(api, key["id"]) is None
    for answer in (api.client.get(url, timeout=10), api.client.delete(url, timeout=10),
                   api.client.get(f"{_keys(api)}/not-an-id", timeout=10)):
        assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"
    assert _public_pem(api, "../etc") is None


def test_create_refuses_an_idempotency_key(api: ApiServer) -> None:
    before = api.client.get(_keys(api), params={"limit": 100}, timeout=10).json()["data"]
    answer = api.client.post(_keys(api), headers={"Idempotency-Key": "k1"}, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_parameters"
    assert api.client.get(_keys(api), params={"limit": 100}, timeout=10).json()["data"] == before


def test_signing_key_routes_need_credentials(api: ApiServer) -> None:
    base = _keys(api)
    for method, url in [("post", base), ("get", base), ("get", f"{base}/x"), ("delete", f"{base}/x")]:
        answer = requests.request(method, url, timeout=10)
        assert answer.status_code == 401, (method, url)
        assert answer.json()["error"]["type"] == "unauthorized"


# --- webhook endpoint URLs under the default SSRF policy -------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/hook", "http://[::1]/hook", "http://user:pass@example.com/hook",
    "file:///etc/passwd", "ftp://example.com/hook", "gopher://example.com/", "not a url",
])
def test_webhook_endpoint_urls_are_refused_by_default(api: ApiServer, url: str) -> None:
    endpoints = f"{api.url}/system/v1/webhook-endpoints"
    answer = api.client.post(endpoints, json={"url": url}, timeout=10)
    assert answer.status_code == 400, answer.text
    # a non-http(s) URL breaks the documented schema; an http(s) one pointing inside is refused by policy
    expected = "input_url_refused" if url.startswith("http") else "invalid_parameters"
    assert answer.json()["error"]["type"] == expected


def test_webhook_endpoint_url_changes_are_checked(api: ApiServer) -> None:
    endpoints = f"{api.url}/system/v1/webhook-endpoints"
    created = api.client.post(endpoints, json={"url": "http://93.184.215.14/hook"}, timeout=10)
    assert created.status_code == 201, created.text
    url = f"{endpoints}/{created.json()['data']['id']}"
    answer = api.client.patch(url, json={"url": "http://169.254.169.254/"}, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "input_url_refused"
    assert api.client.get(url, timeout=10).json()["data"]["url"] == "http://93.184.215.14/hook"
    assert api.client.delete(url, timeout=10).status_code == 204
