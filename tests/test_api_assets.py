"""The asset resource over HTTP (SQLite and PostgreSQL): create, get, list with pages and cursors, update,
delete, playback ids, typed errors, SSRF refusals, auth on every route."""

from __future__ import annotations

import base64

import pytest

INPUT = "s3://media-bucket/in/clip.mp4"  # accepted without DNS; the runner is not started in this module


def _create(api, **body):
    answer = api.client.post(f"{api.url}/video/v1/assets", json={"inputs": [{"url": INPUT}], **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


def test_create_get_update_delete(api) -> None:
    asset = _create(api, playback_policies=["public", "signed"], passthrough="order-17",
                    meta={"title": "Demo", "external_id": "x1"}, static_renditions=[{"resolution": "highest"}])
    assert asset["status"] == "preparing"
    assert asset["progress"] == {"state": "ingesting", "progress": 0.0}
    assert sorted(p["policy"] for p in asset["playback_ids"]) == ["public", "signed"]
    assert asset["passthrough"] == "order-17" and asset["meta"]["title"] == "Demo"
    assert asset["static_renditions"]["status"] == "preparing"
    assert asset["max_resolution_tier"] == "1080p" and int(asset["created_at"]) > 1_700_000_000

    got = api.client.get(f"{api.url}/video/v1/assets/{asset['id']}").json()["data"]
    assert got["id"] == asset["id"] and got["playback_ids"] == asset["playback_ids"]

    patched = api.client.patch(f"{api.url}/video/v1/assets/{asset['id']}", json={"passthrough": "p2"})
    assert patched.status_code == 200 and patched.json()["data"]["passthrough"] == "p2"
    assert patched.json()["data"]["meta"]["title"] == "Demo"  # untouched

    playback_id = asset["playback_ids"][0]["id"]
    lookup = api.client.get(f"{api.url}/video/v1/playback-ids/{playback_id}").json()["data"]
    assert lookup["object"] == {"type": "asset", "id": asset["id"]}

    assert api.client.delete(f"{api.url}/video/v1/assets/{asset['id']}").status_code == 204
    gone = api.client.get(f"{api.url}/video/v1/assets/{asset['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"
    assert api.client.get(f"{api.url}/video/v1/playback-ids/{playback_id}").status_code == 404


def test_delete_removes_stored_files(api) -> None:
    asset = _create(api)
    store = api.platform.store
    store.put_bytes(b"source", f"assets/{asset['id']}/input")
    store.put_bytes(b"#EXTM3U\n", f"assets/{asset['id']}/media/master.m3u8")
    assert api.client.delete(f"{api.url}/video/v1/assets/{asset['id']}").status_code == 204
    assert store.list(f"assets/{asset['id']}") == []


def test_playback_ids_add_get_delete(api) -> None:
    asset = _create(api)
    added = api.client.post(f"{api.url}/video/v1/assets/{asset['id']}/playback-ids", json={"policy": "signed"})
    assert added.status_code == 201
    pid = added.json()["data"]
    assert pid["policy"] == "signed"
    one = api.client.get(f"{api.url}/video/v1/assets/{asset['id']}/playback-ids/{pid['id']}")
    assert one.json()["data"] == pid
    listed = api.client.get(f"{api.url}/video/v1/assets/{asset['id']}/playback-ids").json()["data"]
    assert pid in listed
    bad = api.client.post(f"{api.url}/video/v1/assets/{asset['id']}/playback-ids", json={"policy": "drm"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_parameters"
    assert api.client.delete(f"{api.url}/video/v1/assets/{asset['id']}/playback-ids/{pid['id']}").status_code == 204
    assert api.client.get(f"{api.url}/video/v1/assets/{asset['id']}/playback-ids/{pid['id']}").status_code == 404


def test_list_pages_and_cursor(api) -> None:
    created = [_create(api, passthrough=f"page-{i}")["id"] for i in range(5)]
    newest_first = list(reversed(created))
    first = api.client.get(f"{api.url}/video/v1/assets", params={"limit": 2}).json()
    ours = [a["id"] for a in first["data"]]
    assert ours == newest_first[:2] and first["next_cursor"]
    second = api.client.get(f"{api.url}/video/v1/assets", params={"limit": 2, "page": 2}).json()
    assert [a["id"] for a in second["data"]] == newest_first[2:4]
    by_cursor = api.client.get(f"{api.url}/video/v1/assets",
                               params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [a["id"] for a in by_cursor["data"]] == newest_first[2:4]
    _create(api)  # a new asset does not shift cursor pages
    again = api.client.get(f"{api.url}/video/v1/assets", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [a["id"] for a in again["data"]] == newest_first[2:4]
    bad = api.client.get(f"{api.url}/video/v1/assets", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_parameters"
    too_big = api.client.get(f"{api.url}/video/v1/assets", params={"limit": 1000})
    assert too_big.status_code == 400


@pytest.mark.parametrize("body, fragment", [
    ({}, "inputs"),
    ({"inputs": [{"url": INPUT}], "max_resolution_tier": "8k"}, "max_resolution_tier"),
    ({"inputs": [{"url": INPUT}], "passthrough": "x" * 256}, "passthrough"),
    ({"inputs": [{"url": INPUT}], "meta": {"colour": "red"}}, "meta"),
    ({"inputs": [{"url": INPUT}], "surprise": 1}, "surprise"),
])
def test_invalid_create_is_a_typed_400(api, body, fragment) -> None:
    answer = api.client.post(f"{api.url}/video/v1/assets", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_parameters" and any(fragment in m for m in error["messages"])


def test_malformed_json_is_a_typed_400(api) -> None:
    answer = api.client.post(f"{api.url}/video/v1/assets", data=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_parameters"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/video.mp4", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/a.mp4",
    "http://192.168.0.10/a.mp4", "http://[::1]/a.mp4", "http://localhost/a.mp4", "http://0.0.0.0/a.mp4",
    "file:///etc/passwd", "ftp://example.com/a.mp4", "gopher://x/", "http://user:pw@example.com/a.mp4",
])
def test_ssrf_input_urls_are_refused(api, url) -> None:
    answer = api.client.post(f"{api.url}/video/v1/assets", json={"inputs": [{"url": url}]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "input_url_refused"


@pytest.mark.parametrize("asset_id", ["..%2F..%2Fetc%2Fpasswd", "..", "a.b", "x" * 65, "%00", "a%2Fb"])
def test_path_traversal_ids_are_not_found(api, asset_id) -> None:
    for method in ("get", "patch", "delete"):
        answer = api.client.request(method, f"{api.url}/video/v1/assets/{asset_id}", json={})
        assert answer.status_code == 404, (method, asset_id, answer.text)


def test_idempotency_key_replays_and_refuses_reuse(api) -> None:
    headers = {"Idempotency-Key": "create-once-1"}
    body = {"inputs": [{"url": INPUT}], "passthrough": "idem"}
    first = api.client.post(f"{api.url}/video/v1/assets", json=body, headers=headers)
    again = api.client.post(f"{api.url}/video/v1/assets", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    listed = api.client.get(f"{api.url}/video/v1/assets", params={"limit": 100}).json()["data"]
    assert sum(a.get("passthrough") == "idem" for a in listed) == 1
    other = api.client.post(f"{api.url}/video/v1/assets", json={**body, "passthrough": "other"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["type"] == "idempotency_key_reused"
    # a failed request does not burn its key
    failing = {"Idempotency-Key": "fails-first"}
    assert api.client.post(f"{api.url}/video/v1/assets", json={}, headers=failing).status_code == 400
    assert api.client.post(f"{api.url}/video/v1/assets", json=body, headers=failing).status_code == 201
    # keys belong to a token: another token's same key is a new request
    other_token = api.new_token("idem-other")
    answer = api.client.post(f"{api.url}/video/v1/assets", json=body, headers=headers, auth=other_token)
    assert answer.status_code == 201 and answer.json()["data"]["id"] != first.json()["data"]["id"]


def test_credentials_are_required_and_checked(api) -> None:
    import requests

    url = f"{api.url}/video/v1/assets"
    assert requests.get(url, timeout=5).status_code == 401
    wrong = requests.get(url, auth=(api.token_id, api.secret + "x"), timeout=5)
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "unauthorized"
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    garbage = requests.get(url, headers={"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
                           timeout=5)
    assert garbage.status_code == 401
    bearer = requests.get(url, headers={"Authorization": "Bearer abc"}, timeout=5)
    assert bearer.status_code == 401
    ok = api.client.get(url)
    assert ok.status_code == 200
    assert int(ok.headers["X-RateLimit-Limit"]) >= 1 and "X-RateLimit-Remaining" in ok.headers


@pytest.mark.parametrize("text", ["nul\x00inside", "lone \ud800 surrogate"])
def test_text_no_database_can_store_is_a_typed_400(api, text) -> None:
    # JSON can carry both (\u0000, an unpaired \ud800); PostgreSQL cannot store NUL and UTF-8 cannot encode the
    # surrogate, so every request body refuses them up front, on every backend alike.
    import json

    body = json.dumps({"inputs": [{"url": INPUT}], "passthrough": text})
    answer = api.client.post(f"{api.url}/video/v1/assets", data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_parameters"
    beacon = json.dumps({"events": [{"e": "error", "uti": 1, "xid": "v" * 10, "perme": text}]})
    answer = api.client.post(f"{api.edge_url}/data/v1/beacons", data=beacon, headers={"Content-Type": "text/plain"})
    assert answer.status_code == 400, answer.text


def test_deprecated_input_takes_a_bare_url_and_keeps_the_url_rules(api) -> None:
    """Mux's older ``input``: a URL string or the ``inputs`` list; the same URL pattern and SSRF policy."""
    asset = api.client.post(f"{api.url}/video/v1/assets", json={"input": INPUT}).json()["data"]
    assert asset["status"] == "preparing"
    for body, kind in (({"input": "not a url"}, "invalid_parameters"),
                       ({"input": "http://127.0.0.1/a.mp4"}, "input_url_refused"),
                       ({"input": INPUT, "inputs": [{"url": INPUT}]}, "invalid_parameters")):
        answer = api.client.post(f"{api.url}/video/v1/assets", json=body)
        assert (answer.status_code, answer.json()["error"]["type"]) == (400, kind), answer.text


def test_input_info_before_and_without_a_stored_input(api) -> None:
    """Input info is read from the stored source: ``412`` while it is still being fetched, ``404`` once the
    asset ended without one, and a stored file that is not media answers with no container or tracks."""
    import sqlalchemy as sa

    from kinoray.control.assets import input_key
    from kinoray.store.models import Asset, AssetStatus

    asset = _create(api)
    url = f"{api.url}/video/v1/assets/{asset['id']}/input-info"
    waiting = api.client.get(url)
    assert (waiting.status_code, waiting.json()["error"]["type"]) == (412, "asset_not_ready")
    with api.platform.db.session() as session:
        session.execute(sa.update(Asset).where(Asset.id == asset["id"]).values(status=AssetStatus.ERRORED))
    missing = api.client.get(url)
    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "not_found")
    api.platform.store.put_bytes(b"this is not a video" * 100, input_key(asset["id"]))
    garbage = api.client.get(url)
    assert garbage.status_code == 200, garbage.text
    [info] = garbage.json()["data"]
    assert info == {"settings": {"url": INPUT}, "file": {"container_format": None, "tracks": []}}
