"""Playback restrictions (Mux's ``/video/v1/playback-restrictions``): managed with Mux's own Python SDK (its
models deserialize every answer), enforced by the edge on every URL a signed token opens when the token names
the restriction in its ``playback_restriction_id`` claim — checked with requests carrying real headers and with
Debian's ffmpeg playing the whole stream — and changed or deleted restrictions reaching every Granian worker
within the 5-second bound, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import m3u8
import mux_python as mux
import pytest
import requests

from kinoray.control.restrictions import RestrictionRule, Viewer, high_risk, normalize_domain
from kinoray.errors import InvalidParametersError, PlaybackRestrictedError
from kinoray.store.models import PlaybackPolicy
from tests.api_server import INVALIDATION_BOUND, eventually
from tests.compat import mux_python_client
from tests.test_edge import WORKERS, _assert_refused_everywhere, _by_worker
from tests.test_playback import assert_error, packaged_asset, publish
from tests.test_playback_signed import mint

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
          "Safari/537.36")
ALLOWED = {"Referer": "https://www.example.com/watch?v=1", "User-Agent": CHROME}


def _rule(domains: tuple[str, ...], **flags: bool) -> RestrictionRule:
    return RestrictionRule(id="r", allowed_domains=tuple(normalize_domain(d) for d in domains),
                           allow_no_referrer=flags.get("allow_no_referrer", False),
                           allow_no_user_agent=flags.get("allow_no_user_agent", True),
                           allow_high_risk_user_agent=flags.get("allow_high_risk_user_agent", True))


def _allowed(rule: RestrictionRule, referer: str | None, user_agent: str | None = CHROME) -> bool:
    try:
        rule.check(Viewer(referer, user_agent))
    except PlaybackRestrictedError:
        return False
    return True


# --- the rules, without a server -------------------------------------------------------------------------------


def test_referrer_rules_follow_muxs_list_semantics() -> None:
    wildcard = _rule(("*.example.com", "foo.com"))
    assert _allowed(wildcard, "https://www.example.com/page")
    assert _allowed(wildcard, "https://a.b.EXAMPLE.com:8443/x")  # any depth, case and port ignored
    assert not _allowed(wildcard, "https://example.com/")  # the wildcard is below the apex, not the apex
    assert not _allowed(wildcard, "https://evil-example.com/")
    assert not _allowed(wildcard, "https://example.com.evil.net/")
    assert _allowed(wildcard, "http://foo.com/")
    assert not _allowed(wildcard, "http://www.foo.com/")  # an exact entry is that host only
    assert not _allowed(wildcard, None)  # allow_no_referrer defaults to false
    assert not _allowed(wildcard, "not a url")
    assert _allowed(_rule(("*.example.com",), allow_no_referrer=True), None)
    assert _allowed(_rule(("*",)), "https://anything.test/") and not _allowed(_rule(("*",)), None)
    assert not _allowed(_rule(()), "https://www.example.com/")  # [] denies every referrer
    assert _allowed(_rule((), allow_no_referrer=True), None)  # ... but not the requests without one
    for bad in ("https://example.com", "example.com:443", "www.*.com", "*", "*.", "exa mple.com", "-a.com"):
        if bad == "*":
            assert normalize_domain(bad) == "*"
            continue
        with pytest.raises(InvalidParametersError):
            normalize_domain(bad)


def test_user_agent_rules() -> None:
    for agent in ("curl/8.5.0", "Wget/1.21.3", "python-requests/2.32.3", "Lavf/59.27.100", "yt-dlp/2024.08.06",
                  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0",
                  "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Go-http-client/1.1"):
        assert high_risk(agent), agent
    for agent in (CHROME, "AppleCoreMedia/1.0.0.21F79 (iPhone; U; CPU OS 17_5 like Mac OS X; en_us)",
                  "Mozilla/5.0 (Linux; Android 9; Cubot X20) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
                  "ExoPlayerLib/2.19.1", "Roku/DVP-13.0 (13.0.0.4172-46)"):
        assert not high_risk(agent), agent
    strict = _rule(("*",), allow_no_user_agent=False, allow_high_risk_user_agent=False)
    assert _allowed(strict, "https://x.test/", CHROME)
    assert not _allowed(strict, "https://x.test/", "curl/8.5.0")
    assert not _allowed(strict, "https://x.test/", None)
    assert _allowed(_rule(("*",)), "https://x.test/", None)  # both user-agent flags default to true


# --- the API, through Mux's SDK ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def restrictions_api(api) -> mux.PlaybackRestrictionsApi:
    return mux.PlaybackRestrictionsApi(mux_python_client(api.url, api.auth))


def test_the_sdk_manages_restrictions(restrictions_api: mux.PlaybackRestrictionsApi) -> None:
    created = restrictions_api.create_playback_restriction(mux.CreatePlaybackRestrictionRequest(
        referrer=mux.ReferrerDomainRestriction(allowed_domains=["*.Example.com", "foo.com"], allow_no_referrer=True),
        user_agent=mux.UserAgentRestrictionRequest(allow_no_user_agent=False, allow_high_risk_user_agent=False)))
    restriction = created.data
    assert isinstance(restriction, mux.PlaybackRestriction)
    assert restriction.referrer.allowed_domains == ["*.example.com", "foo.com"]  # stored normalized
    assert restriction.referrer.allow_no_referrer is True
    assert restriction.user_agent.allow_no_user_agent is False
    assert restriction.user_agent.allow_high_risk_user_agent is False
    assert int(restriction.created_at) == int(restriction.updated_at) > 0
    fetched = restrictions_api.get_playback_restriction(restriction.id).data
    assert fetched.to_dict() == restriction.to_dict()
    listed = restrictions_api.list_playback_restrictions(limit=100).data
    assert restriction.id in {item.id for item in listed}
    assert all(isinstance(item, mux.PlaybackRestriction) for item in listed)
    updated = restrictions_api.update_referrer_domain_restriction(
        restriction.id, mux.UpdateReferrerDomainRestrictionRequest(allowed_domains=["*"], allow_no_referrer=False)).data
    assert updated.referrer.allowed_domains == ["*"] and updated.referrer.allow_no_referrer is False
    assert updated.user_agent.allow_no_user_agent is False  # the other rule is untouched
    updated = restrictions_api.update_user_agent_restriction(
        restriction.id, mux.UpdateUserAgentRestrictionRequest(allow_no_user_agent=True,
                                                              allow_high_risk_user_agent=True)).data
    assert updated.user_agent.allow_no_user_agent is True and updated.referrer.allowed_domains == ["*"]
    with pytest.raises(mux.ApiException) as refused:
        restrictions_api.update_referrer_domain_restriction(
            restriction.id, mux.UpdateReferrerDomainRestrictionRequest(allowed_domains=["https://a.com/"]))
    assert refused.value.status == 400
    with pytest.raises(mux.ApiException) as refused:  # Mux's limit: 10 domains
        restrictions_api.update_referrer_domain_restriction(
            restriction.id, mux.UpdateReferrerDomainRestrictionRequest(
                allowed_domains=[f"d{i}.example.com" for i in range(11)]))
    assert refused.value.status == 400
    restrictions_api.delete_playback_restriction(restriction.id)
    with pytest.raises(mux.ApiException) as gone:
        restrictions_api.get_playback_restriction(restriction.id)
    assert gone.value.status == 404


def test_bad_restrictions_are_refused_by_name(api) -> None:
    url = f"{api.url}/video/v1/playback-restrictions"
    for body in ({}, {"referrer": {}}, {"referrer": {"allowed_domains": ["a.com"], "allowed": True}},
                 {"referrer": {"allowed_domains": "a.com"}}, {"referrer": {"allowed_domains": [" a.com"]}},
                 {"referrer": {"allowed_domains": ["a.com"]}, "user_agent": {"allow_no_user_agent": "maybe"}}):
        answer = api.client.post(url, json=body, timeout=10)
        assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_parameters", (body, answer.text)
    made = api.client.post(url, json={"referrer": {"allowed_domains": ["a.com", "*", "A.com."]}}, timeout=10)
    assert made.json()["data"]["referrer"]["allowed_domains"] == ["*"]  # '*' allows all: the rest adds nothing
    assert made.json()["data"]["user_agent"] == {"allow_no_user_agent": True, "allow_high_risk_user_agent": True}
    assert api.client.put(f"{url}/{'Z' * 32}/referrer", json={"allowed_domains": []}, timeout=10).status_code == 404
    assert api.client.delete(f"{url}/..%2Fx", timeout=10).status_code == 404


# --- enforced by the edge ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def restricted(api, media_dir, tmp_path_factory):
    """``(server, signing key id, private PEM, signed playback id, restriction id)``: a restriction allowing
    ``*.example.com`` only, on a signed asset."""
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    _, (signed_id,) = publish_video(api, media, policies=(PlaybackPolicy.SIGNED,))
    key = api.client.post(f"{api.url}/video/v1/signing-keys", timeout=10).json()["data"]
    made = api.client.post(f"{api.url}/video/v1/playback-restrictions", timeout=10, json={
        "referrer": {"allowed_domains": ["*.example.com"]}})
    assert made.status_code == 201, made.text
    return api, key["id"], base64.b64decode(key["private_key"]), signed_id, made.json()["data"]["id"]


def publish_video(server, media, *, policies: tuple[PlaybackPolicy, ...] = (PlaybackPolicy.PUBLIC,),
                  passthrough: str | None = None) -> tuple[str, list[str]]:
    """:func:`tests.test_playback.publish` with the asset facts a transcode records (duration, tier, tracks of
    the packaged 6 s 854x480 clip), so images and the usage report see a whole asset."""
    from kinoray.control.assets import resolution_tier
    from kinoray.store.models import Asset

    asset_id, playback_ids = publish(server, media, policies=policies)
    with server.platform.db.session() as session:
        asset = session.get(Asset, asset_id)
        asset.duration, asset.resolution_tier, asset.passthrough = 6.0, resolution_tier(480), passthrough
        asset.tracks = [{"type": "video", "id": "v" * 32, "max_width": 854, "max_height": 480, "duration": 6.0},
                        {"type": "audio", "id": "a" * 32, "max_channels": 2, "duration": 6.0}]
    return asset_id, playback_ids


def _stream_urls(base: str, playback_id: str, token: str, headers: dict[str, str]) -> list[str]:
    """Every URL of the HLS stream, walked from the master with ``headers`` (each must answer 200)."""
    master_url = f"{base}/{playback_id}.m3u8?token={token}"
    master = requests.get(master_url, headers=headers, timeout=10)
    assert master.status_code == 200, master.text
    urls = [master_url]
    parsed = m3u8.loads(master.text, uri=master_url)
    for playlist in [*parsed.playlists, *parsed.media]:
        if playlist.absolute_uri is None:
            continue
        urls.append(playlist.absolute_uri)
        media = m3u8.loads(requests.get(playlist.absolute_uri, headers=headers, timeout=10).text,
                           uri=playlist.absolute_uri)
        urls += [segment.absolute_uri for segment in media.segments]
        urls += [init.absolute_uri for init in media.segment_map]
    return urls


def _ffmpeg(url: str, headers: dict[str, str]) -> subprocess.CompletedProcess[str]:
    referer = "".join(f"{name}: {value}\r\n" for name, value in headers.items() if name != "User-Agent")
    command = ["ffmpeg", "-nostdin", "-v", "error"]
    if "User-Agent" in headers:
        command += ["-user_agent", headers["User-Agent"]]
    if referer:
        command += ["-headers", referer]
    return subprocess.run([*command, "-i", url, "-f", "null", "-"], capture_output=True, text=True, timeout=180)


def test_an_allowed_referrer_plays_everything_and_others_are_refused(restricted) -> None:
    server, kid, private_pem, signed_id, restriction_id = restricted
    token = mint(kid, private_pem, signed_id, playback_restriction_id=restriction_id)
    base = server.edge_url
    urls = _stream_urls(base, signed_id, token, ALLOWED)
    assert len(urls) > 10
    for url in urls:
        answer = requests.get(url, headers=ALLOWED, timeout=10)
        assert answer.status_code == 200, (url, answer.text)
    image_token = mint(kid, private_pem, signed_id, aud="t", playback_restriction_id=restriction_id)
    thumbnail = f"{base}/{signed_id}/thumbnail.jpg?token={image_token}"
    for url in (urls[0], urls[-1], urls[len(urls) // 2], thumbnail):
        for headers in ({**ALLOWED, "Referer": "https://evil.test/"}, {"User-Agent": CHROME}):
            answer = requests.get(url, headers=headers, timeout=10)
            assert (answer.status_code, answer.json()["error"]["type"]) == (403, "playback_restricted"), url
            if url != thumbnail:
                assert_error(answer, 403, "playback_restricted")  # stream errors: typed, CORS, no-store
    # the apex is not under its own wildcard
    assert_error(requests.get(urls[-1], headers={**ALLOWED, "Referer": "https://example.com/"}, timeout=10), 403,
                 "playback_restricted")
    assert requests.get(thumbnail, headers=ALLOWED, timeout=30).status_code == 200
    # Debian's ffmpeg, an independent client, decodes the whole stream with an allowed Referer, not without
    assert _ffmpeg(urls[0], {"Referer": "https://player.example.com/"}).returncode == 0
    refused = _ffmpeg(urls[0], {})
    assert refused.returncode != 0 and "403" in refused.stderr
    # a token without the claim is not restricted; a token naming no restriction is refused
    assert requests.get(f"{base}/{signed_id}.m3u8?token={mint(kid, private_pem, signed_id)}", timeout=10).ok
    ghost = mint(kid, private_pem, signed_id, playback_restriction_id="A" * 32)
    assert_error(requests.get(f"{base}/{signed_id}.m3u8?token={ghost}", headers=ALLOWED, timeout=10), 403,
                 "playback_forbidden")
    bad = mint(kid, private_pem, signed_id, playback_restriction_id=["x"])
    assert_error(requests.get(f"{base}/{signed_id}.m3u8?token={bad}", headers=ALLOWED, timeout=10), 403,
                 "playback_forbidden")


def test_user_agent_rule_through_the_edge(restricted) -> None:
    server, kid, private_pem, signed_id, _ = restricted
    made = server.client.post(f"{server.url}/video/v1/playback-restrictions", timeout=10, json={
        "referrer": {"allowed_domains": ["*"], "allow_no_referrer": True},
        "user_agent": {"allow_no_user_agent": False, "allow_high_risk_user_agent": False}}).json()["data"]
    token = mint(kid, private_pem, signed_id, playback_restriction_id=made["id"])
    segment = f"{server.edge_url}/{signed_id}/480p/seg_00001.m4s?token={token}"
    assert requests.get(segment, headers={"User-Agent": CHROME}, timeout=10).status_code == 200
    assert_error(requests.get(segment, timeout=10), 403, "playback_restricted")  # python-requests/...
    assert_error(requests.get(segment, headers={"User-Agent": ""}, timeout=10), 403, "playback_restricted")
    assert "403" in _ffmpeg(segment.replace("/480p/seg_00001.m4s", ".m3u8"), {}).stderr  # Lavf/...
    assert _ffmpeg(segment.replace("/480p/seg_00001.m4s", ".m3u8"), {"User-Agent": CHROME}).returncode == 0


# --- every Granian worker within the bound -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def granian(restricted):
    server = restricted[0]
    process, url = server.start_granian_edge(workers=WORKERS)
    try:
        yield url
    finally:
        process.stop()


def test_changed_and_deleted_restrictions_reach_every_worker_within_the_bound(restricted, granian) -> None:
    server, kid, private_pem, signed_id, _ = restricted
    made = server.client.post(f"{server.url}/video/v1/playback-restrictions", timeout=10, json={
        "referrer": {"allowed_domains": ["*.example.com"]}}).json()["data"]
    token = mint(kid, private_pem, signed_id, playback_restriction_id=made["id"])
    segment = f"{granian}/{signed_id}/480p/seg_00001.m4s"
    kwargs: dict[str, Any] = {"params": {"token": token}, "headers": ALLOWED}
    seen = _by_worker(segment, lambda a: a.status_code == 200, **kwargs)
    assert len(seen) == WORKERS and all(all(answers) for answers in seen.values()), seen  # every cache warm
    server.client.put(f"{server.url}/video/v1/playback-restrictions/{made['id']}/referrer", timeout=10,
                      json={"allowed_domains": ["other.test"]}).raise_for_status()
    assert _assert_refused_everywhere(segment, 403, "playback_restricted", **kwargs) <= INVALIDATION_BOUND
    server.client.put(f"{server.url}/video/v1/playback-restrictions/{made['id']}/referrer", timeout=10,
                      json={"allowed_domains": ["*.example.com"]}).raise_for_status()
    eventually(lambda: _all_play(segment, kwargs))
    assert server.client.delete(f"{server.url}/video/v1/playback-restrictions/{made['id']}",
                                timeout=10).status_code == 204
    assert _assert_refused_everywhere(segment, 403, "playback_forbidden", **kwargs) <= INVALIDATION_BOUND


def _all_play(url: str, kwargs: dict[str, Any]) -> None:
    seen = _by_worker(url, lambda a: a.status_code == 200, rounds=40, **kwargs)
    assert len(seen) == WORKERS and all(all(answers) for answers in seen.values()), seen


# --- a browser on an allowed site plays, one on another site is refused ----------------------------------------


class _Pages:
    """A local web server for pages of any host name Chromium is told resolves to it (``--host-resolver-rules``):
    ``www.example.com`` and ``evil.test`` are the same server, so the browser sends each its own ``Referer``."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.html = ""
        pages = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                body = pages.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def pages_and_browser(api_backend):
    if api_backend.kind != "sqlite":
        pytest.skip("the browser runs on one backend (SQLite); the header tests above cover both")
    from tests.browser import chromium

    pages = _Pages()
    rules = "MAP www.example.com 127.0.0.1, MAP evil.test 127.0.0.1"
    try:
        with chromium(f"--host-resolver-rules={rules}") as browser:
            yield pages, browser
    finally:
        pages.close()


def test_chromium_plays_on_an_allowed_site_and_is_refused_elsewhere(restricted, pages_and_browser) -> None:
    server, kid, private_pem, signed_id, restriction_id = restricted
    pages, browser = pages_and_browser
    token = mint(kid, private_pem, signed_id, playback_restriction_id=restriction_id)
    poster = mint(kid, private_pem, signed_id, aud="t", playback_restriction_id=restriction_id)
    pages.html = (f'<!doctype html><script src="{server.edge_url}/player/static/kinoray-player.js"></script>'
                  f'<kinoray-player playback-id="{signed_id}" token="{token}" thumbnail-token="{poster}" '
                  'autoplay muted></kinoray-player>')
    outcomes = {}
    for host in ("www.example.com", "evil.test"):
        context = browser.new_context()
        page = context.new_page()
        referers: list[str] = []
        page.on("request", lambda request, seen=referers: ".m4s" in request.url and seen.append(
            request.headers.get("referer", "")))
        try:
            page.goto(f"http://{host}:{pages.port}/", wait_until="load")
            page.wait_for_function("(() => { const p = document.querySelector('kinoray-player');"
                                   " return p && (p.error || (p.video && p.video.currentTime > 1.5)); })()",
                                   timeout=60_000)
            outcomes[host] = page.evaluate("(() => { const p = document.querySelector('kinoray-player');"
                                           " return {time: p.video.currentTime, error: p.error}; })()")
            outcomes[host]["referers"] = referers
        finally:
            context.close()
    allowed, refused = outcomes["www.example.com"], outcomes["evil.test"]
    assert allowed["error"] is None and allowed["time"] > 1.5, allowed
    assert allowed["referers"] and all(r.startswith("http://www.example.com") for r in allowed["referers"])
    assert refused["error"]["type"] == "playback_restricted" and refused["error"]["status"] == 403, refused


def test_muxs_node_sdk_manages_restrictions_and_signs_tokens_that_name_them(restricted) -> None:
    import shutil

    if shutil.which("node") is None:
        pytest.skip("node is missing: the Node SDK's run needs it")
    from tests.js_clients import run_node

    server, kid, private_pem, signed_id, _ = restricted
    result = run_node("restrictions_usage.mjs", {
        "api": server.url, "tokenId": server.token_id, "tokenSecret": server.secret, "playbackId": signed_id,
        "keyId": kid, "keySecret": base64.b64encode(private_pem).decode(), "assetId": "N" * 32}, timeout=120)
    restriction = result["restriction"]
    assert result["fetched"] == restriction
    assert restriction["referrer"] == {"allowed_domains": ["*.example.com"], "allow_no_referrer": False}
    assert len(result["listed"]) >= 2  # auto-paged over pages of 2
    assert result["updated"]["referrer"]["allowed_domains"] == ["*.example.com", "example.com"]
    assert result["updated"]["user_agent"] == {"allow_no_user_agent": False, "allow_high_risk_user_agent": True}
    assert result["usage"] == []  # nothing delivered for that asset
    master = f"{server.edge_url}/{signed_id}.m3u8?token={result['token']}"
    assert requests.get(master, headers={"Referer": "https://example.com/", "User-Agent": CHROME}, timeout=10).ok
    assert_error(requests.get(master, headers={"Referer": "https://example.org/", "User-Agent": CHROME}, timeout=10),
                 403, "playback_restricted")
    assert_error(requests.get(master, headers={"Referer": "https://example.com/", "User-Agent": ""}, timeout=10),
                 403, "playback_restricted")
