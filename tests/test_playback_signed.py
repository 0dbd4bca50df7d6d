"""Signed playback over real HTTP: JWTs minted with PyJWT (RS256, ``kid`` header) from a signing key created
through the API; ffmpeg plays the tokenized manifests; every way a token can be wrong is refused with the typed
error, on every kind of URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import m3u8
import mpegdash.parser
import pytest
import requests

from kinoray.store.models import PlaybackPolicy, new_id
from tests.api_server import eventually
from tests.test_playback import assert_error, ffmpeg_decodes, frame_count, packaged_asset, publish


@pytest.fixture(scope="module")
def signed(api, media_dir, tmp_path_factory):
    """``(server, key id, private PEM, public PEM, signed id, second signed id, public id)`` on one asset."""
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    _, (signed_id, other_signed_id, public_id) = publish(
        api, media, policies=(PlaybackPolicy.SIGNED, PlaybackPolicy.SIGNED, PlaybackPolicy.PUBLIC))
    created = api.client.post(f"{api.edge_url}/system/v1/signing-keys", timeout=10)
    assert created.status_code == 201, created.text
    key = created.json()["data"]
    private_pem = base64.b64decode(key["private_key"])
    with api.platform.db.session() as session:
        from kinoray.control.signing import public_key_pem

        public_pem = public_key_pem(session, key["id"])
    assert public_pem is not None
    return api, key["id"], private_pem, public_pem, signed_id, other_signed_id, public_id


def mint(key_id: str, private_pem: bytes, playback_id: str, **claims: Any) -> str:
    payload = {"sub": playback_id, "aud": "v", "exp": int(time.time()) + 600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, private_pem, algorithm="RS256",
                      headers={"kid": key_id})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def tampered(token: str, claims: dict[str, Any]) -> str:
    """``token`` with its payload replaced and its signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def test_valid_token_plays_hls_and_dash(signed) -> None:
    server, kid, private_pem, _, signed_id, _, _ = signed
    token = mint(kid, private_pem, signed_id)
    master_url = f"{server.edge_url}/{signed_id}.m3u8?token={token}"
    answer = requests.get(master_url, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "private, no-store"
    master = m3u8.loads(answer.text, uri=master_url)
    uris = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    assert uris and all(parse_qs(urlsplit(uri).query)["token"] == [token] for uri in uris)
    for uri in uris:  # every media playlist carries the token on its init and segments, and they open
        playlist_url = urljoin(master_url, uri)
        playlist = m3u8.loads(requests.get(playlist_url, timeout=10).text, uri=playlist_url)
        files = [playlist.segment_map[0].uri] + [s.uri for s in playlist.segments]
        assert all(parse_qs(urlsplit(f).query)["token"] == [token] for f in files)
        got = requests.get(urljoin(playlist_url, files[1]), timeout=10)
        assert got.status_code == 200
        max_age = int(got.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
        assert 0 < max_age <= 600  # no cache keeps a signed URL past its token's expiry
    mpd_url = f"{server.edge_url}/{signed_id}.mpd?token={token}"
    mpd = mpegdash.parser.MPEGDASHParser.parse(requests.get(mpd_url, timeout=10).text)
    for adaptation in mpd.periods[0].adaptation_sets:
        for representation in adaptation.representations:
            template = representation.segment_templates[0]
            for attribute in (template.initialization, template.media):
                assert parse_qs(urlsplit(attribute).query)["token"] == [token]
            assert requests.get(urljoin(mpd_url, template.initialization), timeout=10).status_code == 200
    for url in (master_url, mpd_url):
        ffmpeg_decodes(url)
        assert frame_count(url) == 180
    mp4 = requests.get(f"{server.edge_url}/{signed_id}/highest.mp4", params={"token": token},
                       headers={"Range": "bytes=0-9"}, timeout=10)
    assert mp4.status_code == 206 and len(mp4.content) == 10


def test_modifiers_come_from_the_token(signed) -> None:
    server, kid, private_pem, _, signed_id, _, _ = signed

    def heights(token: str, **query: str) -> list[int]:
        answer = requests.get(f"{server.edge_url}/{signed_id}.m3u8", params={"token": token, **query}, timeout=10)
        assert answer.status_code == 200, answer.text
        return [p.stream_info.resolution[1] for p in m3u8.loads(answer.text).playlists]

    limited = mint(kid, private_pem, signed_id, max_resolution="720p", min_resolution="480p")
    assert heights(limited) == [480]
    assert heights(limited, min_resolution="720p", max_resolution="2160p") == [480]  # query ignored
    assert heights(mint(kid, private_pem, signed_id, rendition_order="desc")) == [480, 240]
    assert heights(mint(kid, private_pem, signed_id), rendition_order="desc") == [240, 480]
    bad = mint(kid, private_pem, signed_id, max_resolution="999p")
    assert_error(requests.get(f"{server.edge_url}/{signed_id}.m3u8", params={"token": bad}, timeout=10), 400,
                 "invalid_parameters")


def _refusals(signed) -> dict[str, str | None]:
    server, kid, private_pem, public_pem, signed_id, other_signed_id, public_id = signed
    now = int(time.time())
    claims = {"sub": signed_id, "aud": "v", "exp": now + 600}
    return {
        "no token": None,
        "empty": "",
        "garbage": "not.a.jwt",
        "random text": "x" * 50,
        "expired": mint(kid, private_pem, signed_id, exp=now - 60),
        "not yet valid": mint(kid, private_pem, signed_id, nbf=now + 300),
        "issued in the future": mint(kid, private_pem, signed_id, iat=now + 300),
        "no exp": mint(kid, private_pem, signed_id, exp=None),
        "no sub": mint(kid, private_pem, signed_id, sub=None),
        "thumbnail audience": mint(kid, private_pem, signed_id, aud="t"),
        "list audience": mint(kid, private_pem, signed_id, aud=["t", "x"]),
        "other signed id": mint(kid, private_pem, other_signed_id),
        "public id as sub": mint(kid, private_pem, public_id),
        "unknown kid": mint(new_id(), private_pem, signed_id),
        "kid not an id": mint("../../etc", private_pem, signed_id),
        "no kid": jwt.encode(claims, private_pem, algorithm="RS256"),
        "alg none": forged({"alg": "none", "typ": "JWT", "kid": kid}, claims, lambda _: b""),
        "HS256 with the public key": forged({"alg": "HS256", "typ": "JWT", "kid": kid}, claims,
                                            lambda data: hmac.new(public_pem.encode(), data, hashlib.sha256).digest()),
        "RS512": jwt.encode(claims, private_pem, algorithm="RS512", headers={"kid": kid}),
        "tampered claims": tampered(mint(kid, private_pem, signed_id), {**claims, "sub": other_signed_id}),
        "too long": mint(kid, private_pem, signed_id, pad="x" * 9000),
    }


def test_bad_tokens_are_refused_everywhere(signed) -> None:
    server, _, _, _, signed_id, _, _ = signed
    paths = [f"/{signed_id}.m3u8", f"/{signed_id}.mpd", f"/{signed_id}/480p/index.m3u8",
             f"/{signed_id}/480p/init.mp4", f"/{signed_id}/audio/seg_00001.m4s", f"/{signed_id}/highest.mp4"]
    for reason, token in _refusals(signed).items():
        for path in paths:
            params = {} if token is None else {"token": token}
            answer = requests.get(server.edge_url + path, params=params, timeout=10)
            assert answer.status_code == 403, (reason, path, answer.status_code, answer.text)
            assert_error(answer, 403, "playback_forbidden")
            assert b"ftyp" not in answer.content and b"#EXTM3U" not in answer.content


def test_token_scope_and_public_ids(signed) -> None:
    server, kid, private_pem, _, signed_id, other_signed_id, public_id = signed
    other = mint(kid, private_pem, other_signed_id)
    assert requests.get(f"{server.edge_url}/{other_signed_id}.m3u8", params={"token": other}, timeout=10).status_code == 200
    assert requests.get(f"{server.edge_url}/{signed_id}.m3u8", params={"token": other}, timeout=10).status_code == 403
    # a public id needs no token, ignores one (even a bad one) and never propagates it
    for params in ({}, {"token": "garbage"}, {"token": other}):
        answer = requests.get(f"{server.edge_url}/{public_id}.m3u8", params=params, timeout=10)
        assert answer.status_code == 200 and "token" not in answer.text
        assert answer.headers["Cache-Control"] == "public, max-age=5"


def test_leeway_and_deleted_key(signed) -> None:
    server, kid, private_pem, _, signed_id, _, _ = signed
    now = int(time.time())
    just_expired = mint(kid, private_pem, signed_id, exp=now - 2)  # within the clock-skew leeway
    assert requests.get(f"{server.edge_url}/{signed_id}.m3u8", params={"token": just_expired}, timeout=10).status_code == 200
    created = server.client.post(f"{server.edge_url}/system/v1/signing-keys", timeout=10).json()["data"]
    token = mint(created["id"], base64.b64decode(created["private_key"]), signed_id)
    url = f"{server.edge_url}/{signed_id}/480p/init.mp4"
    assert requests.get(url, params={"token": token}, timeout=10).status_code == 200
    assert server.client.delete(f"{server.edge_url}/system/v1/signing-keys/{created['id']}", timeout=10).status_code == 204
    eventually(lambda: assert_error(requests.get(url, params={"token": token}, timeout=10), 403,
                                    "playback_forbidden"))
