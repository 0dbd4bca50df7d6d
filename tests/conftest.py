"""Markers, GPU skips and shared fixtures.

``gpu`` tests skip with a reason where no NVIDIA GPU is usable; set ``KINORAY_FAIL_WITHOUT_GPU=1`` on a GPU
machine to turn those skips into failures.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.browser import BROWSER_DEADLINE, kill_wedged_browsers
from tests.media import default_cache_dir


def _gpu_reason() -> str | None:
    from kinoray.encoders.nvenc import nvdec_hwaccel, pynvvideocodec_status

    if nvdec_hwaccel() is not None:
        return None
    ok, reason = pynvvideocodec_status()
    return None if ok else f"no usable NVIDIA GPU: {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    reason = _gpu_reason()
    if reason is None:
        return
    if os.environ.get("KINORAY_FAIL_WITHOUT_GPU") == "1":
        return  # run them anyway: on a machine that should have a GPU, a missing one is a failure
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """A browser still open :data:`tests.browser.BROWSER_DEADLINE` seconds after a test's setup began is killed:
    the test fails with its stacks, the suite goes on. (Past that, pyproject's ``faulthandler_timeout`` ends a
    run whose test outlived pytest-timeout, with every thread's stack: a hang costs CI minutes, never its limit.)"""
    watchdog = threading.Timer(BROWSER_DEADLINE, kill_wedged_browsers, args=(item.nodeid,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Generated media, cached on disk across sessions (the generators are deterministic and versioned)."""
    return default_cache_dir()


_START_PRIORITY = (os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0))


@pytest.fixture(autouse=True)
def _process_priority_kept():
    """A test that lowers the test process's own priority (kinoray's ``yield_cpu`` run in-process, an encoder
    that makes its caller real-time) fails here: every later test, and every server it starts, would inherit it."""
    yield
    now = (os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0))
    assert now == _START_PRIORITY, f"the test process's (niceness, policy) went from {_START_PRIORITY} to {now}"


@pytest.fixture(autouse=True)
def _fresh_settings():
    from kinoray.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: What every process of a test (including Ray workers started after it is set) needs to reach the S3 server.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """moto's threaded S3 server on 127.0.0.1 (a real HTTP S3 endpoint); yields its endpoint URL.

    Sets the AWS credentials and ``KINORAY_STORAGE__S3_ENDPOINT_URL`` in the environment for the session, so
    Ray workers started afterwards inherit them.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in [*S3_ENV, "KINORAY_STORAGE__S3_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, KINORAY_STORAGE__S3_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def s3_bucket(s3_server):
    """A fresh bucket on the test S3 server; yields its name."""
    import uuid

    import s3fs

    name = f"kinoray-test-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir(name)
    yield name
    fs.rm(name, recursive=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Fresh-database factory of one kind: the API suite runs once on SQLite and once on PostgreSQL."""
    from tests.api_server import POSTGRES_URL, Backend

    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("KINORAY_TEST_POSTGRES_URL is empty: PostgreSQL half skipped on purpose")
    backend = Backend(request.param, tmp_path_factory.mktemp(f"db-{request.param}"))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory):
    """A running API (``tests.api_server.ApiServer``) on a fresh database and data dir, shared by a module."""
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("api-data"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture()
def private_postgres():
    """A throwaway PostgreSQL server of our own (``tests.api_server.PrivatePostgres``), for outage tests."""
    from tests.api_server import PG_BIN, PrivatePostgres

    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}")
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()
