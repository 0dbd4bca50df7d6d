"""Access-token permissions (per product, read-only or full, as Mux scopes its tokens): a read-only token reads
and is refused every write with a typed ``403 forbidden``, a product a token was not given is refused, tokens
made before permissions existed keep full access; tokens are made and listed with their permissions by the
``kinoray token`` command, and Mux's Python SDK sees the refusals — on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mux_python as mux
import pytest
import requests
import sqlalchemy as sa

from kinoray.control.auth import create_token
from kinoray.control.permissions import check, product_of
from kinoray.errors import PermissionDeniedError
from kinoray.settings import settings_env
from kinoray.store.models import AccessToken


def test_paths_map_to_muxs_products() -> None:
    assert product_of("/video/v1/assets/x") == "video"
    assert product_of("/video/v1/delivery-usage") == "video"
    assert product_of("/video/v1/signing-keys") == "system"  # Mux asks for System permission for signing keys
    assert product_of("/system/v1/webhooks") == "system"
    assert product_of("/data/v1/metrics/x") == "data"
    check(None, "DELETE", "/video/v1/assets/x")  # no permissions recorded: full access
    check({"video": "read"}, "GET", "/video/v1/assets")
    with pytest.raises(PermissionDeniedError):
        check({"video": "read"}, "PATCH", "/video/v1/assets/x")
    with pytest.raises(PermissionDeniedError):
        check({"video": "full"}, "GET", "/data/v1/metrics/x")


def _token(api, **permissions: str) -> tuple[str, str]:
    with api.platform.db.session() as session:
        token, secret = create_token(session, name="scoped", permissions=permissions)
    return token.id, secret


def _forbidden(answer: requests.Response) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["type"] == "forbidden" and answer.json()["error"]["messages"]


def test_a_read_only_token_reads_and_is_refused_writes(api) -> None:
    auth = _token(api, video="read")
    base = f"{api.url}/video/v1"
    assert requests.get(f"{base}/assets", auth=auth, timeout=10).status_code == 200
    assert requests.get(f"{base}/playback-restrictions", auth=auth, timeout=10).status_code == 200
    assert requests.get(f"{base}/delivery-usage", auth=auth, timeout=10).status_code == 200
    _forbidden(requests.post(f"{base}/assets", auth=auth, timeout=10,
                             json={"inputs": [{"url": "https://example.com/a.mp4"}]}))
    _forbidden(requests.post(f"{base}/playback-restrictions", auth=auth, timeout=10,
                             json={"referrer": {"allowed_domains": ["*"]}}, headers={"Idempotency-Key": "k1"}))
    _forbidden(requests.delete(f"{base}/assets/{'x' * 32}", auth=auth, timeout=10))
    _forbidden(requests.get(f"{api.url}/system/v1/signing-keys", auth=auth, timeout=10))  # no system permission
    _forbidden(requests.get(f"{base}/signing-keys", auth=auth, timeout=10))
    # through the edge's forwarding too, and seen by Mux's SDK
    _forbidden(requests.post(f"{api.edge_url}/video/v1/uploads", auth=auth, json={}, timeout=10))
    configuration = mux.Configuration(host=api.url)
    configuration.username, configuration.password = auth
    assets = mux.AssetsApi(mux.ApiClient(configuration))
    assert isinstance(assets.list_assets(), mux.ListAssetsResponse)
    with pytest.raises(mux.ApiException) as refused:
        assets.create_asset(mux.CreateAssetRequest(input=[mux.InputSettings(url="https://example.com/a.mp4")]))
    assert refused.value.status == 403 and json.loads(refused.value.body)["error"]["type"] == "forbidden"


def test_products_are_separate_and_old_tokens_keep_full_access(api) -> None:
    auth = _token(api, video="full", system="read")
    made = requests.post(f"{api.url}/video/v1/playback-restrictions", auth=auth, timeout=10,
                         json={"referrer": {"allowed_domains": ["*"]}})
    assert made.status_code == 201
    assert requests.get(f"{api.url}/system/v1/signing-keys", auth=auth, timeout=10).status_code == 200
    _forbidden(requests.post(f"{api.url}/video/v1/signing-keys", auth=auth, timeout=10))
    _forbidden(requests.post(f"{api.url}/system/v1/webhook-endpoints", auth=auth, timeout=10,
                             json={"url": "https://example.com/hook"}))
    # a token from before permissions (NULL): everything, as before
    legacy = _token(api, video="read")
    with api.platform.db.session() as session:
        session.execute(sa.update(AccessToken).where(AccessToken.id == legacy[0]).values(permissions=None))
    assert requests.post(f"{api.url}/video/v1/signing-keys", auth=legacy, timeout=10).status_code == 201
    assert requests.delete(f"{api.url}/video/v1/playback-restrictions/{made.json()['data']['id']}", auth=legacy,
                           timeout=10).status_code == 204


def _cli(api, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(api.settings)}
    return subprocess.run([sys.executable, "-m", "kinoray.cli", "token", *arguments], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_cli_makes_and_lists_tokens_with_permissions(api) -> None:
    made = _cli(api, "create", "--name", "reader", "--permission", "video=read", "--permission", "data=read")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert token["permissions"] == {"video": "read", "data": "read"}
    auth = (token["id"], token["secret"])
    assert requests.get(f"{api.url}/video/v1/assets", auth=auth, timeout=10).status_code == 200
    _forbidden(requests.post(f"{api.url}/video/v1/uploads", auth=auth, json={}, timeout=10))
    listed = {entry["id"]: entry for entry in json.loads(_cli(api, "list").stdout)["data"]}
    assert listed[token["id"]]["permissions"] == {"video": "read", "data": "read"}
    assert listed[api.token_id]["permissions"] == {"video": "full", "data": "full", "system": "full"}
    assert all("secret" not in entry and "secret_hash" not in entry for entry in listed.values())
    wrong = _cli(api, "create", "--permission", "video=write")
    assert wrong.returncode == 2 and json.loads(wrong.stderr.strip().splitlines()[-1])["error"]["type"] == \
        "invalid_parameters"
