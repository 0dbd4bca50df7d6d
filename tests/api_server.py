"""The control plane served for tests: a real HTTP server (uvicorn on 127.0.0.1, in a thread) over
:func:`kinoray.serve.app.build_api`, on a fresh SQLite or PostgreSQL database and a fresh storage directory.

Fixtures in ``conftest.py`` (``api_backend``, ``api``) build these; tests talk to them with ``requests`` like any
client would. The job runner is started on demand (:meth:`ApiServer.start_runner`).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

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


class ApiServer:
    """One running API: ``url``, an access token (``token_id``/``secret``), ``client`` (a ``requests.Session``
    with those credentials) and the :class:`~kinoray.control.Platform` behind it."""

    def __init__(self, database_url: str, data_dir: Path, **settings: Any) -> None:
        import uvicorn

        from kinoray.control.auth import create_token
        from kinoray.control.platform import Platform
        from kinoray.serve.app import build_api
        from kinoray.serve.deps import set_platform
        from kinoray.settings import Settings
        from tests.conftest import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings.setdefault("serve", {})
        settings["serve"] = {"host": "127.0.0.1", "port": self.port, **settings["serve"]}
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
        config = uvicorn.Config(build_api(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test API server did not start")
            time.sleep(0.02)

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
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.client.close()
        set_platform(None)
        self.platform.close()
