"""Outbound connections (input fetches, webhook posts) apply the SSRF policy to the addresses they connect to.

Real HTTP and HTTPS servers on loopback. The DNS-rebinding case needs a name whose answer changes between the
policy's lookup and the connection's; no DNS server can be pointed at from a test, so that one test swaps
``socket.getaddrinfo`` for a resolver that answers a public address once and loopback afterwards — what a
rebinding DNS server does. Everything after the lookup (the check, the connection, the server) is real.
"""

from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kinoray.control.ingest import fetch_input
from kinoray.control.outbound import policed_handlers
from kinoray.control.webhooks import _Claimed, _send
from kinoray.errors import InputUrlRefusedError, InvalidMediaError
from kinoray.settings import ApiSettings, Settings
from kinoray.store import ObjectStore

BODY = b"not really a video, but bytes all the same" * 100


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_POST(self) -> None:  # noqa: N802
        self.requests.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _serve(context: ssl.SSLContext | None = None) -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, requests


@pytest.fixture
def server() -> Iterator[tuple[int, list[str]]]:
    httpd, requests = _serve()
    yield httpd.server_address[1], requests
    httpd.shutdown()


def settings_for(tmp_path: Path, *, private: bool) -> Settings:
    return Settings(data_dir=tmp_path / "data", api=ApiSettings(allow_private_inputs=private))


def test_a_connection_to_a_private_address_is_refused_before_any_byte_is_sent(server, tmp_path):
    port, requests = server
    opener = urllib.request.build_opener(*policed_handlers(settings_for(tmp_path, private=False)))
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(InputUrlRefusedError, match="non-public address"):
            opener.open(f"http://{host}:{port}/clip.mp4", timeout=5)
    assert requests == []
    # Allowed in a trusted setup: the same policed connection fetches.
    opener = urllib.request.build_opener(*policed_handlers(settings_for(tmp_path, private=True)))
    with opener.open(f"http://localhost:{port}/clip.mp4", timeout=5) as response:
        assert response.read() == BODY
    assert requests == ["/clip.mp4"]


def test_environment_proxies_are_not_used(server, tmp_path, monkeypatch):
    port, requests = server
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there: a used proxy would fail
    store = ObjectStore(str(tmp_path / "store"))
    assert fetch_input(f"http://localhost:{port}/a.mp4", store, "in", settings_for(tmp_path, private=True)) == len(BODY)
    assert requests == ["/a.mp4"]


@pytest.fixture
def rebinding_dns(monkeypatch):
    """``rebind.test`` answers a public address to the first lookup and loopback to every later one."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        address = "93.184.216.34" if not lookups else "127.0.0.1"
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_dns_rebinding_between_the_check_and_the_connection_is_refused(server, rebinding_dns, tmp_path):
    port, requests = server
    store = ObjectStore(str(tmp_path / "store"))
    with pytest.raises(InputUrlRefusedError, match="127.0.0.1"):
        fetch_input(f"http://rebind.test:{port}/clip.mp4", store, "input", settings_for(tmp_path, private=False))
    # The policy's own lookup saw the public address and passed it; the connection's lookup was caught.
    assert rebinding_dns == ["93.184.216.34", "127.0.0.1"]
    assert requests == [], "the loopback server was reached"
    assert not store.exists("input")


def test_a_webhook_whose_name_rebinds_to_loopback_is_not_posted(server, rebinding_dns, tmp_path):
    port, requests = server
    now = datetime.datetime.now(datetime.UTC)
    claimed = _Claimed(id="d1", endpoint_id="e1", event_id="ev1", event_type="video.asset.ready", payload={"a": 1},
                       attempts=0, created_at=now, url=f"http://rebind.test:{port}/hook", secret="s" * 32,
                       attempt_log=())
    result = _send(claimed, settings_for(tmp_path, private=False))
    assert result.status is None and "URL refused" in (result.error or "")
    assert requests == []


def _certificates(tmp_path: Path, name: str) -> tuple[Path, ssl.SSLContext]:
    """A CA (written to a PEM file) and a server context with a certificate for ``name`` signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kinoray test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file = tmp_path / f"ca-{name}.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / f"server-{name}.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_file, context


@pytest.mark.parametrize("certified", ["localhost", "elsewhere.test"])
def test_https_still_verifies_the_certificate_against_the_host_name(certified, tmp_path, monkeypatch):
    ca_file, context = _certificates(tmp_path, certified)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the default TLS context trusts the test CA
    httpd, requests = _serve(context)
    store = ObjectStore(str(tmp_path / "store"))
    url = f"https://localhost:{httpd.server_address[1]}/clip.mp4"
    try:
        if certified == "localhost":
            assert fetch_input(url, store, "input", settings_for(tmp_path, private=True)) == len(BODY)
            assert requests == ["/clip.mp4"]
        else:  # connected to the checked address, but the name must still match the certificate
            with pytest.raises(InvalidMediaError, match="(?i)certificate"):
                fetch_input(url, store, "input", settings_for(tmp_path, private=True))
            assert requests == [] and not store.exists("input")
    finally:
        httpd.shutdown()
