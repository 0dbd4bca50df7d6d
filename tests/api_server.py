"""The platform served for tests: the management API (:func:`kinoray.serve.api.build_api`) and the delivery
edge (:class:`kinoray.edge.EdgeApp`, forwarding other paths to that API), each a real HTTP server (uvicorn on
127.0.0.1, in a thread) on one :class:`~kinoray.control.Platform`, over a fresh SQLite or PostgreSQL database and
a fresh storage directory. ``url`` is the API, ``edge_url`` the edge: viewer-facing paths (streams, images,
the upload URL, beacons, the player) are tested through the edge. ``tests/test_edge.py`` runs the production
edge (Granian worker processes) too.

Fixtures in ``conftest.py`` (``api_backend``, ``api``) build these; tests talk to them with ``requests`` like any
client would. The job runner is started on demand (:meth:`ApiServer.start_runner`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
import sqlalchemy as sa

T = TypeVar("T")

POSTGRES_URL = os.environ.get("KINORAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class Backend:
    """Hands out URLs of fresh, empty databases of one kind and removes them all at the end."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind, self.directory = kind, directory
        self.schemas: list[str] = []
        self.admin = sa.create_engine(POSTGRES_URL) if kind == "postgresql" else None

    def new_url(self) -> str:
        if self.admin is None:
            return f"sqlite:///{self.directory / f'{uuid.uuid4().hex[:8]}.db'}"
        schema = f"kinoray_test_{uuid.uuid4().hex[:12]}"
        with self.admin.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def close(self) -> None:
        if self.admin is None:
            return
        with self.admin.begin() as connection:
            for schema in self.schemas:
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        self.admin.dispose()


#: Seconds within which a change (a deleted asset, playback id, text track or signing key) must reach every
#: edge process: the issue's bound; the edge's own is ``edge.cache_seconds`` (2 s) plus one request.
INVALIDATION_BOUND = 5.0


def eventually(check: Callable[[], T], within: float = INVALIDATION_BOUND) -> T:
    """``check()``'s result once it stops failing an assertion, retried for at most ``within`` seconds: how a
    test reads through the edge after changing what it serves (the edge's caches expire within the bound)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass(frozen=True)
class EdgeCertificate:
    """A self-signed certificate for the edge's HTTPS: its PEM files and the base64 SHA-256 of its public key
    (what Chromium's ``--ignore-certificate-errors-spki-list`` trusts, and nothing else)."""

    cert: str
    key: str
    spki_sha256: str


def self_signed(directory: Path, *, dns_names: tuple[str, ...] = ()) -> EdgeCertificate:
    """A certificate valid for 127.0.0.1 and ``dns_names`` (wildcards allowed) for one day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    names = [*(x509.DNSName(dns) for dns in dns_names), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "edge.pem", directory / "edge.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return EdgeCertificate(str(cert_path), str(key_path), base64.b64encode(hashlib.sha256(spki).digest()).decode())


def _wait_tls(process: Any, url: str, ca: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/edge/healthz", verify=ca, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if not process.alive or time.monotonic() > deadline:
            raise RuntimeError(f"the TLS edge did not start: {process._log_tail()}")
        time.sleep(0.1)


class ApiServer:
    """One running API: ``url``, an access token (``token_id``/``secret``), ``client`` (a ``requests.Session``
    with those credentials) and the :class:`~kinoray.control.Platform` behind it."""

    def __init__(self, database_url: str, data_dir: Path, **settings: Any) -> None:
        import uvicorn

        from kinoray.control.auth import create_token
        from kinoray.control.platform import Platform
        from kinoray.edge import EdgeApp
        from kinoray.serve.api import build_api
        from kinoray.serve.deps import set_platform
        from kinoray.settings import Settings
        from tests.conftest import free_port

        self.port, self.edge_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.edge_url = f"http://127.0.0.1:{self.edge_port}"
        settings.setdefault("serve", {})
        settings["serve"] = {"host": "127.0.0.1", "port": self.port, **settings["serve"]}
        settings["edge"] = {"host": "127.0.0.1", "port": self.edge_port, "api_url": self.url,
                            **settings.get("edge", {})}
        # Every test client is 127.0.0.1, and the auth matrix sends hundreds of wrong credentials on purpose: the
        # failed-authentication throttle keeps its defaults only where a test asks (tests/test_abuse.py).
        settings["api"] = {"auth_failure_burst": 1_000_000, **settings.get("api", {})}
        self.settings = Settings(data_dir=data_dir, database_url=database_url, environment="test", **settings)
        self.platform = Platform.from_settings(self.settings)
        with self.platform.db.session() as session:
            token, self.secret = create_token(session, name="tests")
        self.token_id = token.id
        self.auth = (self.token_id, self.secret)
        self.client = requests.Session()
        self.client.auth = self.auth
        set_platform(self.platform)
        self.runner: Any = None
        self.edge = EdgeApp(self.platform, api_url=self.url, domain=self.settings.edge.domain)
        self.servers: list[tuple[Any, threading.Thread]] = []
        for app, port in ((build_api(), self.port), (self.edge, self.edge_port)):
            # the edge's lifespan closes its connection pool to the API when the server stops
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                    lifespan="on" if app is self.edge else "off")
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
            thread.start()
            self.servers.append((server, thread))
        deadline = time.monotonic() + 20
        for server, thread in self.servers:
            while not server.started:
                if time.monotonic() > deadline or not thread.is_alive():
                    raise RuntimeError("the test API server did not start")
                time.sleep(0.02)

    def start_granian_edge(self, workers: int = 2, **edge: Any) -> tuple[Any, str]:
        """The production edge (``kinoray edge``: Granian, ``workers`` processes) on this platform's database
        and storage, forwarding to this API; ``(EdgeProcess, url)``. The caller stops it."""
        from kinoray.edge import EdgeProcess
        from kinoray.settings import settings_env
        from tests.conftest import free_port

        port = free_port()
        env = {**settings_env(self.settings), "KINORAY_EDGE__PORT": str(port), "KINORAY_EDGE__WORKERS": str(workers)}
        env.update({f"KINORAY_EDGE__{name.upper()}": str(value) for name, value in edge.items()})
        scheme = "https" if "tls_cert" in edge else "http"
        url = f"{scheme}://127.0.0.1:{port}"
        process = EdgeProcess(env, log_path=Path(self.settings.data_dir) / f"edge-{port}.log").start()
        try:
            if scheme == "http":
                process.wait_ready(url, workers=workers)
            else:
                _wait_tls(process, url, edge["tls_cert"])
        except BaseException:
            process.stop()
            raise
        return process, url

    def new_token(self, name: str = "extra") -> tuple[str, str]:
        from kinoray.control.auth import create_token

        with self.platform.db.session() as session:
            token, secret = create_token(session, name=name)
        return token.id, secret

    def start_runner(self, **options: Any) -> Any:
        """Start the job runner on this platform (in-process transcodes unless ``use_ray=True``)."""
        from kinoray.serve.runner import Runner

        if self.runner is None:
            self.runner = Runner(self.platform, **options)
            self.runner.start()
        return self.runner

    def wait_asset(self, asset_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll ``GET /video/v1/assets/{id}`` until it is ready or errored; its ``data``."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.client.get(f"{self.url}/video/v1/assets/{asset_id}", timeout=10)
            answer.raise_for_status()
            data = answer.json()["data"]
            if data["status"] in ("ready", "errored"):
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"asset {asset_id} still {data['status']} after {timeout} s: {data}")
            time.sleep(0.2)

    def close(self) -> None:
        from kinoray.serve.deps import set_platform

        if self.runner is not None:
            self.runner.stop()
        for server, _ in self.servers:
            server.should_exit = True
        for _, thread in self.servers:
            thread.join(timeout=10)
        self.client.close()
        set_platform(None)
        self.platform.close()


class Receiver:
    """A webhook endpoint on 127.0.0.1 recording (headers, body) of every POST (headers lower-cased)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, event_type: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.received if json.loads(b)["type"] == event_type]

    def types_for(self, object_id: str) -> list[str]:
        """The types of the events received about ``object_id``, in arrival order."""
        return [json.loads(b)["type"] for _, b in self.received if json.loads(b)["object"]["id"] == object_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def api_with_runner(database_url: str, data_dir: Path, **settings: Any) -> Iterator[ApiServer]:
    """An :class:`ApiServer` that takes ``file://`` inputs, with its job runner on a private local Ray (started
    here on the main thread, so the runner's job threads find it up; shut down after if it was not up), small
    chunks and one encoder actor: assets created through it become ready."""
    import ray

    from kinoray.cluster.local import ensure_ray

    started_ray = not ray.is_initialized()
    ensure_ray(num_cpus=2)
    settings = {"api": {"allow_file_inputs": True}, "transcode": {"chunk_seconds": 4, "segment_seconds": 2},
                "cluster": {"max_workers": 1, "keep_workers_seconds": 0}, "serve": {"poll_seconds": 0.1},
                **settings}
    server = ApiServer(database_url, data_dir, **settings)
    server.start_runner()
    try:
        yield server
    finally:
        server.close()
        if started_ray:
            ray.shutdown()


#: Debian's PostgreSQL server binaries (the newest installed major version), for private throwaway servers.
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name), default=Path("/nonexistent"))


class PrivatePostgres:
    """A throwaway PostgreSQL server in a temporary directory (never the shared one): initdb, start, stop."""

    def __init__(self) -> None:
        from tests.conftest import free_port

        self.root = Path(tempfile.mkdtemp(prefix="kinoray-pg-"))
        self.root.chmod(0o755)
        self.data, self.port = self.root / "data", free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        self._run(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: Any) -> None:
        subprocess.run([*self.as_postgres, *map(str, command)], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "server.log", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)
