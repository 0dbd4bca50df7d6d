"""Environments that isolate data, and the access-token API (issue 15), on SQLite and PostgreSQL.

Two environments, each with its own token: the default one (the test server's token) holds one of every
resource; the other's token must see none of it. The isolation test enumerates the API's routes from its
OpenAPI document rather than listing them, so a route added later is checked too (and a path parameter it has
never seen fails the test until it is given a resource): every read and write of a resource of the other
environment answers ``404`` (never ``403``, which would confirm that it exists), every list leaves them out,
and afterwards every resource is as it was. Webhooks, Data views (by the beacon's ``env_key``), their daily
exports, delivery usage, signing keys, uploads and clips each get a test of their own. A test over the models checks that every table
naming an environment, or hanging off one that does, is in :data:`kinoray.store.scoping.SCOPED_MODELS`; the
access-token and environment APIs, their ``system=full`` refusals, the CLI and migration 0012 are tested too.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import mux_python as mux
import pyarrow.parquet as pq
import pytest
import requests
import sqlalchemy as sa

from kinoray.analytics.exports import file_key
from kinoray.control.analytics import export_views, flush_collector
from kinoray.control.usage import flush_counts
from kinoray.store import scoping
from kinoray.store.models import DEFAULT_ENVIRONMENT_ID, Base, WebhookDelivery
from tests.compat import mux_python_client
from tests.test_analytics import CHROME, Player
from tests.test_data_insights import ingest, simulate

S3_INPUT = "s3://media-bucket/in/clip.mp4"  # accepted without DNS; no runner in this module
HOOK = "http://127.0.0.1:9/hook"  # never called: the outbox rows are what is checked

#: Tables outside the environment scope, and why.
UNSCOPED_TABLES = {
    "environments": "the environments themselves: listed to every admin token",
    "idempotency_keys": "keyed by the token that made them: no token reads another's",
    "view_events": "retired (Data views live in the event log, scoped by env_key)",
    "alembic_version": "Alembic's",
}


@pytest.fixture(scope="module")
def server(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("environments"),
                       api={"allow_private_inputs": True})
    try:
        yield server
    finally:
        server.close()


@dataclass
class World:
    """The default environment's resources (``ids``: path parameter name → id) and the other environment."""

    a_auth: tuple[str, str]
    b_auth: tuple[str, str]
    b_environment: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)


def _made(answer: requests.Response) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


@pytest.fixture(scope="module")
def world(server) -> World:
    a = server.client
    b_environment = _made(a.post(f"{server.url}/system/v1/environments", json={"name": "staging"}, timeout=30))
    first = b_environment["access_token"]
    assert first["environment_id"] == b_environment["id"] != DEFAULT_ENVIRONMENT_ID
    world = World(server.auth, (first["id"], first["secret"]), b_environment)
    video, system = f"{server.url}/video/v1", f"{server.url}/system/v1"
    asset = _made(a.post(f"{video}/assets", json={"inputs": [{"url": S3_INPUT}], "playback_policies": ["public"],
                                                  "passthrough": "a-asset"}, timeout=30))
    live = _made(a.post(f"{video}/live-streams", json={"playback_policies": ["public"], "passthrough": "a-live"},
                        timeout=30))
    target = _made(a.post(f"{video}/live-streams/{live['id']}/simulcast-targets", timeout=30,
                          json={"url": "rtmp://127.0.0.1:1/app", "stream_key": "k"}))
    restriction = _made(a.post(f"{video}/playback-restrictions", json={"referrer": {"allowed_domains": ["*"]}},
                               timeout=30))
    endpoint = _made(a.post(f"{system}/webhook-endpoints", json={"url": HOOK}, timeout=30))
    alert = _made(a.post(f"{server.url}/data/v1/alerts", timeout=30, json={
        "name": "a-alert", "metric": "video_startup_time", "comparison": "gt", "threshold": 1000}))
    world.ids = {
        "asset_id": asset["id"], "playback_id": asset["playback_ids"][0]["id"],
        "upload_id": _made(a.post(f"{video}/uploads", json={"new_asset_settings": {}}, timeout=30))["id"],
        "live_stream_id": live["id"], "target_id": target["id"],
        "key_id": _made(a.post(f"{system}/signing-keys", timeout=30))["id"],
        "restriction_id": restriction["id"], "endpoint_id": endpoint["id"], "webhook_id": endpoint["id"],
        "alert_id": alert["id"],
        "token_id": _made(a.post(f"{system}/access-tokens", json={"name": "a-reader"}, timeout=30))["id"],
        "live_playback_id": live["playback_ids"][0]["id"],
    }
    return world


# Path parameters that name no resource of their own here: a made-up id (the resource they hang off is the
# other environment's, which is what must be refused), or not a resource at all (Data's metric and dimension
# names: those routes answer over the caller's views, checked for leaks by their content).
_PLACEHOLDERS = {name: "x" * 32 for name in ("track_id", "rendition_id", "message_id", "incident_id", "view_id")}
_NOT_RESOURCES = {"metric_id": "video_startup_time", "realtime_metric_id": "current-concurrent-viewers",
                  "histogram_metric_id": "video-startup-time", "dimension_id": "browser", "filter_id": "browser",
                  "day": "2026-01-01", "name": "views.jsonl", "viewer_user_id": "nobody",
                  "environment_id": DEFAULT_ENVIRONMENT_ID}  # a view export's link: its signature is the credential
#: Deployment-level routes, answered alike for every environment's admin (documented in docs/API.md).
_DEPLOYMENT_WIDE = ("/system/v1/environments", "/healthz", "/readyz", "/metrics", "/system/v1/capabilities")


@pytest.fixture(scope="module")
def routes(server) -> list[tuple[str, str]]:
    from kinoray.serve.api import build_api

    schema = build_api().openapi()
    return [(method.upper(), path) for path, operations in schema["paths"].items() for method in operations
            if not path.startswith(_DEPLOYMENT_WIDE)]


def _fill(path: str, ids: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name == "playback_id" and path.startswith("/video/v1/live-streams/"):
            return ids["live_playback_id"]
        for table in (ids, _PLACEHOLDERS, _NOT_RESOURCES):
            if name in table:
                return table[name]
        raise AssertionError(f"route {path}: path parameter {name!r} names nothing this test knows: give it one")

    return re.sub(r"{(\w+)}", value, path)


def _snapshot(server, world: World) -> dict[str, Any]:
    """Everything the default environment's token sees of its resources (compared before and after)."""
    get = {"asset": "/video/v1/assets/{asset_id}", "upload": "/video/v1/uploads/{upload_id}",
           "live": "/video/v1/live-streams/{live_stream_id}", "key": "/system/v1/signing-keys/{key_id}",
           "restriction": "/video/v1/playback-restrictions/{restriction_id}",
           "endpoint": "/system/v1/webhook-endpoints/{endpoint_id}", "alert": "/data/v1/alerts/{alert_id}",
           "token": "/system/v1/access-tokens/{token_id}",
           "target": "/video/v1/live-streams/{live_stream_id}/simulcast-targets/{target_id}"}
    seen = {}
    for name, path in get.items():
        answer = requests.get(server.url + _fill(path, world.ids), auth=world.a_auth, timeout=30)
        assert answer.status_code == 200, (name, answer.text)
        data = answer.json()["data"]
        for volatile in ("updated_at", "last_used_at", "recent_asset_ids"):
            data.pop(volatile, None) if isinstance(data, dict) else None
        seen[name] = data
    return seen


def test_another_environments_resources_are_not_found_on_every_route(server, world: World, routes) -> None:
    before = _snapshot(server, world)
    resource_ids = set(world.ids.values())
    checked = 0
    for method, path in routes:
        url = server.url + _fill(path, world.ids)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        answer = requests.request(method, url, auth=world.b_auth, json=body, timeout=60)
        assert answer.status_code != 403, (method, path, answer.text)  # never "it exists, but not for you"
        if "{" in path and not set(re.findall(r"{(\w+)}", path)) <= set(_NOT_RESOURCES):
            # a route about one of the default environment's resources: not found, whatever the method
            assert answer.status_code in (404, 400, 422), (method, path, answer.status_code, answer.text)
            if method in ("GET", "DELETE"):
                assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found", \
                    (method, path, answer.text)
        leaked = [value for value in resource_ids if value in answer.text and value not in url]  # not an echo
        assert not leaked, (method, path, leaked)
        checked += 1
    assert checked > 60
    # the same writes with bodies the routes accept: still not found
    valid = {("PATCH", "/video/v1/assets/{asset_id}"): {"passthrough": "b"},
             ("POST", "/video/v1/assets/{asset_id}/playback-ids"): {"policy": "public"},
             ("PATCH", "/video/v1/live-streams/{live_stream_id}"): {"latency_mode": "low"},
             ("PUT", "/video/v1/playback-restrictions/{restriction_id}/referrer"): {"allowed_domains": ["b.com"]},
             ("PATCH", "/system/v1/webhook-endpoints/{endpoint_id}"): {"url": HOOK + "/b"},
             ("PATCH", "/data/v1/alerts/{alert_id}"): {"name": "b"},
             ("POST", "/video/v1/assets"): {"inputs": [{"url": f"mux://assets/{world.ids['asset_id']}"}]}}
    for (method, path), body in valid.items():
        answer = requests.request(method, server.url + _fill(path, world.ids), auth=world.b_auth, json=body,
                                  timeout=60)
        assert answer.status_code == 404, (method, path, answer.text)
    # mux-python, as a client of the other environment, sees the same
    assets = mux.AssetsApi(mux_python_client(server.url, world.b_auth))
    with pytest.raises(mux.ApiException) as missing:
        assets.get_asset(world.ids["asset_id"])
    assert missing.value.status == 404
    assert [item.id for item in assets.list_assets().data] == []
    with pytest.raises(mux.ApiException) as missing:
        mux.PlaybackIDApi(mux_python_client(server.url, world.b_auth)).get_asset_or_livestream_id(
            world.ids["playback_id"])
    assert missing.value.status == 404
    assert _snapshot(server, world) == before


def test_each_environment_writes_and_lists_its_own(server, world: World) -> None:
    b = requests.Session()
    b.auth = world.b_auth
    mine = _made(b.post(f"{server.url}/video/v1/assets", json={"inputs": [{"url": S3_INPUT}]}, timeout=30))
    b_key = _made(b.post(f"{server.url}/system/v1/signing-keys", timeout=30))
    # (the route walk above may have made some of B's own: what matters is what is and is not listed)
    listed = {asset["id"] for asset in b.get(f"{server.url}/video/v1/assets", timeout=30).json()["data"]}
    assert mine["id"] in listed and world.ids["asset_id"] not in listed
    keys = {key["id"] for key in b.get(f"{server.url}/system/v1/signing-keys", timeout=30).json()["data"]}
    assert b_key["id"] in keys and world.ids["key_id"] not in keys
    a_listed = {asset["id"] for asset in server.client.get(f"{server.url}/video/v1/assets", timeout=30).json()["data"]}
    assert world.ids["asset_id"] in a_listed and mine["id"] not in a_listed
    assert server.client.get(f"{server.url}/video/v1/assets/{mine['id']}", timeout=30).status_code == 404
    # a clip is cut only from an asset of the caller's environment; cut in B from B's asset it stays in B (the
    # source is marked ready by hand: no runner here, and the clip is only queued)
    with server.platform.db.session() as session:
        session.execute(sa.text("UPDATE assets SET status = 'ready', duration = 4 WHERE id = :id"), {"id": mine["id"]})
    clip = _made(b.post(f"{server.url}/video/v1/assets", timeout=30,
                        json={"inputs": [{"url": f"mux://assets/{mine['id']}", "end_time": 1}]}))
    assert clip["ingest_type"] == "on_demand_clip" and clip["source_asset_id"] == mine["id"]
    assert mine["ingest_type"] == "on_demand_url"
    with server.platform.db.reader() as session:
        rows = dict(session.execute(sa.text("SELECT id, environment_id FROM assets")).all())
    assert rows[mine["id"]] == rows[clip["id"]] == world.b_environment["id"]
    assert rows[world.ids["asset_id"]] == DEFAULT_ENVIRONMENT_ID
    for path in (f"/video/v1/assets/{clip['id']}", f"/video/v1/assets/{mine['id']}",
                 f"/system/v1/signing-keys/{b_key['id']}"):
        assert b.delete(server.url + path, timeout=30).status_code == 204


def test_an_environments_events_go_only_to_its_endpoints(server, world: World) -> None:
    b = requests.Session()
    b.auth = world.b_auth
    b_endpoint = _made(b.post(f"{server.url}/system/v1/webhook-endpoints", json={"url": HOOK + "/b"}, timeout=30))
    asset = _made(b.post(f"{server.url}/video/v1/assets", json={"inputs": [{"url": S3_INPUT}]}, timeout=30))
    a_asset = _made(server.client.post(f"{server.url}/video/v1/assets", json={"inputs": [{"url": S3_INPUT}]},
                                       timeout=30))
    with server.platform.db.reader() as session:
        deliveries = session.execute(sa.select(WebhookDelivery.endpoint_id, WebhookDelivery.payload)).all()
    to_b = [payload for endpoint, payload in deliveries if endpoint == b_endpoint["id"]]
    to_a = [payload for endpoint, payload in deliveries if endpoint == world.ids["endpoint_id"]]
    assert {payload["object"]["id"] for payload in to_b} == {asset["id"]}
    assert asset["id"] not in {payload["object"]["id"] for payload in to_a}
    assert a_asset["id"] in {payload["object"]["id"] for payload in to_a}
    assert all(payload["environment"] == {"id": world.b_environment["id"], "name": "staging"} for payload in to_b)
    assert all(payload["environment"] == {"id": DEFAULT_ENVIRONMENT_ID, "name": "default"} for payload in to_a)
    # deliveries are listed per endpoint, in its own environment only
    assert b.get(f"{server.url}/system/v1/webhook-endpoints/{world.ids['endpoint_id']}/deliveries",
                 timeout=30).status_code == 404
    b.delete(f"{server.url}/video/v1/assets/{asset['id']}", timeout=30)
    b.delete(f"{server.url}/system/v1/webhook-endpoints/{b_endpoint['id']}", timeout=30)
    server.client.delete(f"{server.url}/video/v1/assets/{a_asset['id']}", timeout=30)


def test_an_uploads_asset_and_its_events_stay_in_the_uploads_environment(server, world: World) -> None:
    """The upload URL takes no token (its id is the capability): the asset it makes takes the upload's
    environment, and so do the events about it."""
    b = requests.Session()
    b.auth = world.b_auth
    upload = _made(b.post(f"{server.url}/video/v1/uploads", json={"new_asset_settings": {}}, timeout=30))
    answer = requests.put(upload["url"], data=b"not really a video", timeout=30)
    assert answer.status_code == 200 and answer.json()["data"]["status"] == "asset_created", answer.text
    asset_id = answer.json()["data"]["asset_id"]
    assert b.get(f"{server.url}/video/v1/assets/{asset_id}", timeout=30).json()["data"]["ingest_type"] == \
        "on_demand_direct_upload"
    assert server.client.get(f"{server.url}/video/v1/assets/{asset_id}", timeout=30).status_code == 404
    with server.platform.db.reader() as session:
        events = session.execute(sa.text("SELECT type, environment_id FROM events WHERE object_id IN (:a, :u)"),
                                 {"a": asset_id, "u": upload["id"]}).all()
    assert {"video.asset.created", "video.upload.asset_created"} <= {kind for kind, _ in events}
    assert {environment for _, environment in events} == {world.b_environment["id"]}
    b.delete(f"{server.url}/video/v1/assets/{asset_id}", timeout=30)


def _sign(private_key_b64: str, kid: str, playback_id: str) -> str:
    import base64

    return jwt.encode({"sub": playback_id, "aud": "v", "exp": int(time.time()) + 600, "kid": kid},
                      base64.b64decode(private_key_b64), algorithm="RS256")


def test_signing_keys_sign_only_their_environments_playback_ids(server, world: World) -> None:
    """Mux's signing keys are per environment: a key of B does not open A's signed playback id."""
    a_signed = _made(server.client.post(f"{server.url}/video/v1/assets/{world.ids['asset_id']}/playback-ids",
                                        json={"policy": "signed"}, timeout=30))["id"]
    b_key = _made(requests.post(f"{server.url}/system/v1/signing-keys", auth=world.b_auth, timeout=30))
    a_key = _made(server.client.post(f"{server.url}/system/v1/signing-keys", timeout=30))
    resolver = server.platform.resolver
    from kinoray.errors import AssetNotReadyError, PlaybackForbiddenError

    with pytest.raises(PlaybackForbiddenError, match="kid names no signing key"):
        resolver.resolve(a_signed, _sign(b_key["private_key"], b_key["id"], a_signed), "v")
    with pytest.raises(AssetNotReadyError):  # the token opens it: only the asset's state stops it
        resolver.resolve(a_signed, _sign(a_key["private_key"], a_key["id"], a_signed), "v")


def test_data_views_and_delivery_usage_belong_to_their_environment(server, world: World) -> None:
    with server.platform.db.reader() as session:
        default_key = session.scalar(sa.text("SELECT env_key FROM environments WHERE id = 'default'"))
    b_played = _made(requests.post(f"{server.url}/video/v1/assets", auth=world.b_auth, timeout=30, json={
        "inputs": [{"url": S3_INPUT}], "playback_policies": ["public"]}))
    start = int(time.time() * 1000) - 60_000
    views = {"b": f"view-b-{uuid.uuid4().hex[:8]}", "a": f"view-a-{uuid.uuid4().hex[:8]}",
             "none": f"view-n-{uuid.uuid4().hex[:8]}", "b_player": f"view-p-{uuid.uuid4().hex[:8]}"}
    keys = {"b": world.b_environment["env_key"], "a": default_key, "none": None, "b_player": None}
    for name, view_id in views.items():
        first = {"ake": keys[name]} if keys[name] else {}
        if name == "b_player":  # kinoray's player sends no env_key: the played asset's environment counts
            first["vid"] = b_played["playback_ids"][0]["id"]
        player = Player(view_id=view_id, start=start, **first)
        if not keys[name]:
            player.first.pop("ake")
        player.at(0, "viewstart").at(10, "play").at(600, "playing").at(2000, "pause").at(500, "viewend")
        answer = requests.post(f"{server.edge_url}/", data=player.batch(), timeout=30,
                               headers={"Content-Type": "text/plain", "User-Agent": CHROME})
        assert answer.status_code < 300, answer.text
    flush_collector(server.platform)

    def seen(auth: tuple[str, str]) -> set[str]:
        answer = requests.get(f"{server.url}/data/v1/video-views", auth=auth, timeout=60,
                              params={"timeframe[]": "1:hours", "limit": 100})
        assert answer.status_code == 200, answer.text
        return {view["id"] for view in answer.json()["data"]} & set(views.values())

    assert seen(world.b_auth) == {views["b"], views["b_player"]}
    assert seen(world.a_auth) == {views["a"], views["none"]}  # no env_key and no asset: the default environment's
    assert requests.get(f"{server.url}/data/v1/video-views/{views['a']}", auth=world.b_auth,
                        timeout=60).status_code == 404
    assert requests.get(f"{server.url}/data/v1/video-views/{views['b']}", auth=world.b_auth,
                        timeout=60).status_code == 200
    sdk = mux.VideoViewsApi(mux_python_client(server.url, world.b_auth))
    assert views["a"] not in {view.id for view in sdk.list_video_views(timeframe=["1:hours"], limit=100).data}

    # delivery usage: counted under the asset's environment, reported to that environment's tokens only
    b_asset = _made(requests.post(f"{server.url}/video/v1/assets", auth=world.b_auth, timeout=30,
                                  json={"inputs": [{"url": S3_INPUT}]}))
    hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600 - 3600
    flush_counts(server.platform.db, {(world.ids["asset_id"], hour, "720p"): [12.0, 1000],
                                      (b_asset["id"], hour, "720p"): [7.0, 500]})
    timeframe = {"timeframe[]": [hour, hour + 3600]}

    def usage(auth: tuple[str, str]) -> set[str]:
        answer = requests.get(f"{server.url}/video/v1/delivery-usage", auth=auth, params=timeframe, timeout=30)
        assert answer.status_code == 200, answer.text
        return {row["asset_id"] for row in answer.json()["data"]}

    assert usage(world.b_auth) == {b_asset["id"]}
    assert world.ids["asset_id"] in usage(world.a_auth) and b_asset["id"] not in usage(world.a_auth)
    for asset in (b_asset, b_played):
        requests.delete(f"{server.url}/video/v1/assets/{asset['id']}", auth=world.b_auth, timeout=30)


def test_erasing_a_viewer_erases_only_in_the_callers_environment(server, world: World) -> None:
    """A viewer id is each customer's own: the same id in two environments is two people. Erasure through one
    environment's token deletes that environment's views of the id, and the other's stay."""
    with server.platform.db.reader() as session:
        default_key = session.scalar(sa.text("SELECT env_key FROM environments WHERE id = 'default'"))
    viewer = f"shared-{uuid.uuid4().hex[:8]}"
    views = {"a": f"view-ea-{uuid.uuid4().hex[:8]}", "b": f"view-eb-{uuid.uuid4().hex[:8]}"}
    start = int(time.time() * 1000) - 60_000
    for name, key in (("a", default_key), ("b", world.b_environment["env_key"])):
        player = Player(view_id=views[name], start=start, ake=key, uusid=viewer)
        player.at(0, "viewstart").at(10, "play").at(600, "playing").at(2000, "pause").at(500, "viewend")
        answer = requests.post(f"{server.edge_url}/", data=player.batch(), timeout=30,
                               headers={"Content-Type": "text/plain", "User-Agent": CHROME})
        assert answer.status_code < 300, answer.text
    flush_collector(server.platform)

    def seen(auth: tuple[str, str]) -> set[str]:
        answer = requests.get(f"{server.url}/data/v1/video-views", auth=auth, timeout=60,
                              params={"timeframe[]": "1:hours", "limit": 100, "filters[]": f"viewer_user_id:{viewer}"})
        assert answer.status_code == 200, answer.text
        return {view["id"] for view in answer.json()["data"]}

    assert seen(world.a_auth) == {views["a"]} and seen(world.b_auth) == {views["b"]}
    erased = requests.delete(f"{server.url}/data/v1/viewers/{viewer}", auth=world.b_auth, timeout=120)
    assert erased.status_code == 200, erased.text
    assert erased.json()["data"]["views_deleted"] == 1
    assert seen(world.b_auth) == set()
    assert seen(world.a_auth) == {views["a"]}  # the other environment's viewer of the same id is untouched


def test_view_exports_are_split_by_environment(server, world: World) -> None:
    """One day's views in both environments (and one without a key: the default environment's): each
    environment's export holds its own views only (the Parquet read by pyarrow, the CSV by the csv module, from
    storage and through the links), each token lists only its own files, a link moved to the other
    environment's file is refused, an export on request writes the caller's file only, and erasure through
    either environment takes its viewer's view out of that environment's export and no other."""
    with server.platform.db.reader() as session:
        default_key = session.scalar(sa.text("SELECT env_key FROM environments WHERE id = 'default'"))
    b_env, b_key = world.b_environment["id"], world.b_environment["env_key"]
    tag = uuid.uuid4().hex[:8]
    day = datetime.now(UTC).date() - timedelta(days=2)  # a finished day whose views are final
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    shared = f"shared-{tag}"  # one viewer id in both environments: two people
    keys = {f"xa0-{tag}": default_key, f"xa1-{tag}": default_key, f"xn-{tag}": None,
            f"xb0-{tag}": b_key, f"xb1-{tag}": b_key}
    rng, traffic = random.Random(15), []
    for view_id, key in keys.items():
        viewer = shared if view_id.startswith(("xa0", "xb0")) else f"u-{view_id}"
        events = simulate(rng, view_id, int(noon.timestamp() * 1000), uusid=viewer)
        events[0].pop("ake")
        if key:
            events[0]["ake"] = key
        traffic.append((events, CHROME, "8.8.8.8"))
    ingest(server.platform.store, traffic, received_at=noon)
    expected = {DEFAULT_ENVIRONMENT_ID: {f"xa0-{tag}", f"xa1-{tag}", f"xn-{tag}"}, b_env: {f"xb0-{tag}", f"xb1-{tag}"}}
    written: list[str] = []
    while done := export_views(server.platform):  # the runner's sweep
        written += done
    assert day.isoformat() in written
    store = server.platform.store

    def stored(environment_id: str) -> tuple[set[str], set[str]]:
        parquet = pq.read_table(io.BytesIO(store.get_bytes(file_key(environment_id, day, "parquet"))))
        rows = csv.DictReader(io.StringIO(store.get_bytes(file_key(environment_id, day, "csv")).decode()))
        return set(parquet["view_id"].to_pylist()), {row["view_id"] for row in rows}

    for environment_id, views in expected.items():
        assert stored(environment_id) == (views, views), environment_id

    def listed(auth: tuple[str, str]) -> list[str]:
        answer = requests.get(f"{server.url}/data/v1/exports/views", auth=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        entry = next(item for item in answer.json()["data"] if item["export_date"] == day.isoformat())
        assert [f["type"] for f in entry["files"]] == ["parquet", "csv"]
        return [f["path"] for f in entry["files"]]

    a_links, b_links = listed(world.a_auth), listed(world.b_auth)
    assert all(f"/exports/views/{DEFAULT_ENVIRONMENT_ID}/" in link for link in a_links)
    assert all(f"/exports/views/{b_env}/" in link for link in b_links)
    b_flat = {url.split("?")[0] for url in mux.ExportsApi(mux_python_client(server.url, world.b_auth)).list_exports().data}
    assert {url.split("?")[0] for url in b_links} <= b_flat  # (the expiry may differ by a second)
    assert not {url.split("?")[0] for url in a_links} & b_flat
    for links, environment_id in ((a_links, DEFAULT_ENVIRONMENT_ID), (b_links, b_env)):
        parquet, csv_file = (requests.get(link, timeout=30) for link in links)  # no token: the link is the credential
        assert parquet.status_code == csv_file.status_code == 200, (parquet.text, csv_file.text)
        assert set(pq.read_table(io.BytesIO(parquet.content))["view_id"].to_pylist()) == expected[environment_id]
        assert {row["view_id"] for row in csv.DictReader(io.StringIO(csv_file.text))} == expected[environment_id]
    # another environment's file through a link: the environment is inside what is signed
    b_path, b_query = b_links[0].split("?")
    a_path, a_query = a_links[0].split("?")
    for moved in (f"{b_path.replace(f'/{b_env}/', f'/{DEFAULT_ENVIRONMENT_ID}/')}?{b_query}",
                  f"{a_path.replace(f'/{DEFAULT_ENVIRONMENT_ID}/', f'/{b_env}/')}?{a_query}",
                  f"{b_path}?{a_query}"):
        refused = requests.get(moved, timeout=30)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "invalid_download_link", moved
    # an export on request writes the caller's environment's file only
    before = store.get_bytes(file_key(DEFAULT_ENVIRONMENT_ID, day, "parquet"))
    made = requests.post(f"{server.url}/data/v1/exports/views", params={"date": day.isoformat()},
                         auth=world.b_auth, timeout=60)
    assert made.status_code == 201 and made.json()["data"]["views"] == 2, made.text
    assert all(f"/exports/views/{b_env}/" in f["path"] for f in made.json()["data"]["files"])
    assert store.get_bytes(file_key(DEFAULT_ENVIRONMENT_ID, day, "parquet")) == before
    # erasure, through either environment, reaches its own export and leaves the other's
    erased = requests.delete(f"{server.url}/data/v1/viewers/{shared}", auth=world.b_auth, timeout=120)
    assert erased.status_code == 200 and erased.json()["data"]["views_deleted"] == 1, erased.text
    assert stored(b_env) == ({f"xb1-{tag}"},) * 2
    assert stored(DEFAULT_ENVIRONMENT_ID) == (expected[DEFAULT_ENVIRONMENT_ID],) * 2
    erased = requests.delete(f"{server.url}/data/v1/viewers/{shared}", auth=world.a_auth, timeout=120)
    assert erased.status_code == 200 and erased.json()["data"]["views_deleted"] == 1, erased.text
    assert stored(DEFAULT_ENVIRONMENT_ID) == ({f"xa1-{tag}", f"xn-{tag}"},) * 2
    assert stored(b_env) == ({f"xb1-{tag}"},) * 2


def test_real_time_counts_each_environments_viewers_only(server, world: World) -> None:
    """Real time (and monitoring, which shares its handlers) sees only the caller's environment: one view
    playing now in each environment, the same title, is one concurrent viewer to each token, not two."""
    with server.platform.db.reader() as session:
        default_key = session.scalar(sa.text("SELECT env_key FROM environments WHERE id = 'default'"))
    title = f"rt-{uuid.uuid4().hex[:8]}"
    start = int(time.time() * 1000) - 5_000
    for name, key in (("a", default_key), ("b", world.b_environment["env_key"])):
        player = Player(view_id=f"view-rt{name}-{uuid.uuid4().hex[:8]}", start=start, ake=key, vtt=title)
        player.at(0, "viewstart").at(10, "play").at(600, "playing")  # still playing: a concurrent viewer
        answer = requests.post(f"{server.edge_url}/", data=player.batch(), timeout=30,
                               headers={"Content-Type": "text/plain", "User-Agent": CHROME})
        assert answer.status_code < 300, answer.text
    flush_collector(server.platform)

    def concurrent(auth: tuple[str, str], path: str) -> int:
        answer = requests.get(f"{server.url}/data/v1/{path}/metrics/current-concurrent-viewers/breakdown",
                              auth=auth, timeout=60, params={"dimension": "video_title",
                                                             "filters[]": f"video_title:{title}"})
        assert answer.status_code == 200, answer.text
        return sum(row["concurrent_viewers"] for row in answer.json()["data"])

    for path in ("realtime", "monitoring"):
        assert concurrent(world.a_auth, path) == 1, path
        assert concurrent(world.b_auth, path) == 1, path


def test_access_token_lifecycle_over_http(server, world: World) -> None:
    tokens = f"{server.url}/system/v1/access-tokens"
    made = _made(server.client.post(tokens, json={"name": "ci", "permissions": {"video": "read"}}, timeout=30))
    assert made["secret"] and made["permissions"] == {"video": "read"} and not made["revoked"]
    assert made["environment_id"] == DEFAULT_ENVIRONMENT_ID
    auth = (made["id"], made["secret"])
    assert requests.get(f"{server.url}/video/v1/assets", auth=auth, timeout=30).status_code == 200
    listed = server.client.get(tokens, timeout=30).json()["data"]
    assert made["id"] in {token["id"] for token in listed}
    assert all("secret" not in token for token in listed)
    assert world.b_auth[0] not in {token["id"] for token in listed}  # the other environment's tokens
    got = server.client.get(f"{tokens}/{made['id']}", timeout=30).json()["data"]
    assert got["name"] == "ci" and "secret" not in got
    # revoking is immediate: the authenticator reads the token's row on every request (no cache to outlive it)
    assert server.client.delete(f"{tokens}/{made['id']}", timeout=30).status_code == 204
    refused = requests.get(f"{server.url}/video/v1/assets", auth=auth, timeout=30)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
    assert server.client.get(f"{tokens}/{made['id']}", timeout=30).json()["data"]["revoked"] is True
    # typed refusals: bad permissions, and a create that names Idempotency-Key (the secret cannot be replayed)
    bad = server.client.post(tokens, json={"permissions": {"video": "write"}}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_parameters"
    assert server.client.post(tokens, json={}, headers={"Idempotency-Key": "k"}, timeout=30).status_code == 400


@pytest.mark.parametrize("permissions", [{"video": "full", "data": "full", "system": "read"},
                                         {"video": "full", "data": "full"}])
def test_only_system_full_tokens_manage_tokens_and_environments(server, permissions: dict[str, str]) -> None:
    made = _made(server.client.post(f"{server.url}/system/v1/access-tokens", json={"permissions": permissions},
                                    timeout=30))
    auth = (made["id"], made["secret"])
    for method, path in (("GET", "/system/v1/access-tokens"), ("POST", "/system/v1/access-tokens"),
                         ("GET", f"/system/v1/access-tokens/{made['id']}"),
                         ("DELETE", f"/system/v1/access-tokens/{made['id']}"),
                         ("GET", "/system/v1/environments"), ("POST", "/system/v1/environments"),
                         ("DELETE", f"/system/v1/environments/{DEFAULT_ENVIRONMENT_ID}")):
        answer = requests.request(method, server.url + path, auth=auth, json={"name": "x"}, timeout=30)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"]["type"] == "forbidden" and answer.json()["error"]["messages"]


def test_environments_crud_and_guarded_delete(server, world: World) -> None:
    environments = f"{server.url}/system/v1/environments"
    made = _made(server.client.post(environments, json={"name": "qa", "env_key": "qakey123"}, timeout=30))
    assert made["env_key"] == "qakey123" and made["access_token"]["secret"]
    taken = server.client.post(environments, json={"name": "qa"}, timeout=30)
    assert taken.status_code == 409 and taken.json()["error"]["type"] == "conflict"
    listed = {env["name"] for env in server.client.get(environments, timeout=30).json()["data"]}
    assert {"default", "staging", "qa"} <= listed
    renamed = server.client.patch(f"{environments}/{made['id']}", json={"name": "qa2"}, timeout=30)
    assert renamed.status_code == 200 and renamed.json()["data"]["name"] == "qa2"
    # not while its first token is live, never the default one nor the caller's own
    assert server.client.delete(f"{environments}/{made['id']}", timeout=30).status_code == 409
    assert server.client.delete(f"{environments}/{DEFAULT_ENVIRONMENT_ID}", timeout=30).status_code == 409
    assert requests.delete(f"{environments}/{world.b_environment['id']}", auth=world.b_auth,
                           timeout=30).status_code == 409
    qa = (made["access_token"]["id"], made["access_token"]["secret"])
    assert requests.delete(f"{server.url}/system/v1/access-tokens/{qa[0]}", auth=qa, timeout=30).status_code == 204
    assert server.client.delete(f"{environments}/{made['id']}", timeout=30).status_code == 204
    assert server.client.get(f"{environments}/{made['id']}", timeout=30).status_code == 404


def test_the_cli_makes_environments_and_tokens_in_them(server) -> None:
    import os
    import subprocess
    import sys

    from kinoray.settings import settings_env

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kinoray.cli", *arguments], capture_output=True, text=True,
                              env={**os.environ, **settings_env(server.settings)}, timeout=120)

    made = cli("environment", "create", "cli-env")
    assert made.returncode == 0, made.stderr
    environment = json.loads(made.stdout)
    token = cli("token", "create", "--environment", "cli-env", "--permission", "video=read")
    assert token.returncode == 0, token.stderr
    created = json.loads(token.stdout)
    assert created["environment_id"] == environment["id"] and created["permissions"] == {"video": "read"}
    listed = {entry["id"]: entry for entry in json.loads(cli("token", "list").stdout)["data"]}
    assert listed[created["id"]]["environment_id"] == environment["id"]
    assert listed[server.token_id]["environment_id"] == DEFAULT_ENVIRONMENT_ID
    unknown = cli("token", "create", "--environment", "nope")
    assert unknown.returncode == 1 and json.loads(unknown.stderr.strip().splitlines()[-1])["error"]["type"] == \
        "not_found"
    assert requests.get(f"{server.url}/video/v1/assets", auth=(created["id"], created["secret"]),
                        timeout=30).json()["data"] == []


def test_every_table_naming_an_environment_is_scoped() -> None:
    """New tables cannot be forgotten: a table with ``environment_id``, or a foreign key to a scoped table, is
    in SCOPED_MODELS; every other table is listed above with the reason it is not."""
    scoped = {model.__table__.name: model for model in scoping.SCOPED_MODELS}  # type: ignore[attr-defined]
    for table in Base.metadata.sorted_tables:
        parents = {key.column.table.name for key in table.foreign_keys} - {"environments"}
        needs = "environment_id" in table.c or bool(parents & set(scoped))
        if table.name in UNSCOPED_TABLES:
            continue
        assert not needs or table.name in scoped, f"{table.name} holds an environment's rows but is not scoped"
        assert needs, f"{table.name}: scoped or listed in UNSCOPED_TABLES with a reason"


def test_a_scoped_session_cannot_write_into_another_environment(server, world: World) -> None:
    from kinoray.store.models import Asset

    with pytest.raises(ValueError, match="written in a session scoped to"), \
            server.platform.db.session(environment_id=DEFAULT_ENVIRONMENT_ID) as session:
        session.add(Asset(environment_id=world.b_environment["id"], storage_prefix="x"))
        session.flush()
    with scoping.scoped(world.b_environment["id"]), server.platform.db.reader() as session:
        assert session.get(Asset, world.ids["asset_id"]) is None
    with server.platform.db.reader() as session:  # unscoped (the runner): every environment
        assert session.get(Asset, world.ids["asset_id"]) is not None


def test_migration_0012_puts_existing_rows_and_tokens_in_environments(api_backend) -> None:
    """Rows made before 0012 land in the default environment; each other token ``environment`` name becomes an
    environment of its own; the downgrade gives the tokens their names back."""
    from kinoray.store.db import Database, downgrade, migrate

    url = api_backend.new_url()
    migrate(url, "0011")
    engine = Database(url).engine
    try:
        with engine.begin() as connection:
            for number, name in enumerate(["default", "staging", "staging"]):
                connection.execute(sa.text("INSERT INTO access_tokens (id, secret_hash, name, environment, "
                                           "created_at) VALUES (:id, 'h', 'n', :env, CURRENT_TIMESTAMP)"),
                                   {"id": f"t{number}", "env": name})
            connection.execute(sa.text(
                "INSERT INTO assets (id, status, meta, create_settings, tracks, progress_state, progress_fraction, "
                "master_access, created_at, updated_at) VALUES ('a1', 'ready', '{}', '{}', '[]', 'completed', 1, "
                "'none', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        migrate(url)
        with engine.begin() as connection:
            names = dict(connection.execute(sa.text("SELECT name, id FROM environments")).all())
            assert set(names) == {"default", "staging"} and names["default"] == DEFAULT_ENVIRONMENT_ID
            tokens = dict(connection.execute(sa.text("SELECT id, environment_id FROM access_tokens")).all())
            assert tokens == {"t0": DEFAULT_ENVIRONMENT_ID, "t1": names["staging"], "t2": names["staging"]}
            assert connection.scalar(sa.text("SELECT environment_id FROM assets")) == DEFAULT_ENVIRONMENT_ID
        downgrade(url, "0011")
        with engine.begin() as connection:
            assert dict(connection.execute(sa.text("SELECT id, environment FROM access_tokens")).all()) == \
                {"t0": "default", "t1": "staging", "t2": "staging"}
    finally:
        engine.dispose()
