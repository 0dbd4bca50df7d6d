"""The job lifecycle under real faults, with real components: the runner (:class:`kinoray.serve.runner.Runner`)
transcoding on a local Ray cluster, a real database, local storage, webhooks POSTed to a local receiver.

(a) The database stops in the middle of a finish:
    - PostgreSQL: a private server (Debian's ``initdb`` + ``pg_ctl`` in a temporary directory, on a free port) is
      stopped (``-m immediate``: connections cut) inside the finish's transaction, and started again
      ``OUTAGE`` seconds later, while other jobs are still encoding;
    - SQLite: another connection holds the write lock (``BEGIN IMMEDIATE``) for ``OUTAGE`` seconds from the
      moment the finish starts, several times the busy timeout.
(b) A runner process is killed (SIGKILL) between encode and publish; another runner takes its job over once
    the lease has expired and finishes it.

Every accepted asset must end ``ready`` with exactly one ``video.asset.ready`` webhook within ``BOUND`` seconds
of the fault (the outage plus a retry, or the lease plus a re-run). Leases, heartbeats, retries and the
reconciler run on second-scale settings (``JOBS``) so the module takes about a minute.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from kinoray.control.assets import NewAssetSettings, create_asset
from kinoray.control.jobs import FinishOutcome, JobLifecycle
from kinoray.control.platform import Platform
from kinoray.control.ratelimit import RateLimiter
from kinoray.control.resolver import PlaybackResolver
from kinoray.media.synthetic import generate_clip
from kinoray.serve.runner import Runner
from kinoray.settings import Settings, settings_env
from kinoray.store import Asset, Database, Job, ObjectStore, WebhookEndpoint
from tests.api_server import PrivatePostgres
from tests.test_serve_e2e import Receiver

pytestmark = pytest.mark.slow

OUTAGE = 5.0  # seconds the database is down / locked: longer than the busy timeout and the in-thread retries
JOBS = {"lease_seconds": 3.0, "heartbeat_seconds": 0.5, "reconcile_seconds": 0.5, "retry_seconds": 1.5,
        "retry_backoff_seconds": 0.05, "retry_max_backoff_seconds": 0.5}
#: Seconds from the fault to every asset ready with its webhook: the outage or lease, plus a transcode of the
#: small clip on a loaded 2-core machine, with room.
BOUND = 60.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("faults") / "clip.mp4", width=320, height=180, fps=24, seconds=2)


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    import ray

    from kinoray.cluster import ensure_ray

    started = not ray.is_initialized()
    ensure_ray()
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        if started:
            ray.shutdown()


def _settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(environment="test", data_dir=data_dir, database_url=database_url, jobs=JOBS,
                    serve={"poll_seconds": 0.2, "max_concurrent_jobs": 3},
                    api={"allow_file_inputs": True, "allow_private_inputs": True})


def _platform(settings: Settings, **engine_options: Any) -> Platform:
    db = Database(settings.database_url or "", **engine_options)
    db.migrate()
    return Platform(settings=settings, db=db, store=ObjectStore(settings.storage_url, settings.storage),
                    limiter=RateLimiter.from_settings(settings), resolver=PlaybackResolver(db, ttl=0))


def _accept(platform: Platform, clip: Path, count: int) -> list[str]:
    """What ``POST /video/v1/assets`` does, ``count`` times."""
    ids = []
    for _ in range(count):
        with platform.db.session() as session:
            asset = create_asset(session, platform.settings, NewAssetSettings(video_quality="basic"),
                                 input_url=f"file://{clip}")
            ids.append(asset.id)
    return ids


def _hook(platform: Platform, receiver: Receiver) -> None:
    with platform.db.session() as session:
        session.add(WebhookEndpoint(url=receiver.url))


def _all_ready_with_webhooks(platform: Platform, receiver: Receiver, asset_ids: list[str], within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with platform.db.session() as session:
                states = {a.id: a.status.value for a in session.scalars(sa.select(Asset).where(Asset.id.in_(asset_ids)))}
        except sa.exc.OperationalError:
            states = {}
        ready = [json.loads(body)["object"]["id"] for _, body in receiver.events("video.asset.ready")]
        if all(states.get(a) == "ready" for a in asset_ids) and all(a in ready for a in asset_ids):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"after {within} s: {states}; ready webhooks for {ready}")
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate webhook would have been sent by now
    ready = [json.loads(body)["object"]["id"] for _, body in receiver.events("video.asset.ready")]
    assert sorted(ready) == sorted(asset_ids), "exactly one video.asset.ready per asset"
    assert not receiver.events("video.asset.errored")


def _wait_state(platform: Platform, job_filter: Any, within: float = 60.0) -> Job:
    deadline = time.monotonic() + within
    while True:
        with platform.db.session() as session:
            job = session.scalars(sa.select(Job).where(job_filter)).first()
        if job is not None:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError("no job reached the awaited state")
        time.sleep(0.1)


class FaultAtFinish(JobLifecycle):
    """The real lifecycle with ``fault()`` called once, by the first finish to commit: before its transaction
    starts (``inside=False``) or inside it, after the job's row was updated (``inside=True``)."""

    def __init__(self, *args: Any, fault: Any, inside: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fault, self._inside = fault, inside
        self._fired = threading.Event()
        self.fired_at: float | None = None
        self.finishes = 0  # publish calls, retries included

    def _fire(self) -> None:
        if not self._fired.is_set():
            self._fired.set()
            self.fired_at = time.monotonic()
            self._fault()

    def publish(self, job_id: str, published: dict[str, Any], record: Any = None) -> FinishOutcome:
        self.finishes += 1
        if not self._inside:
            self._fire()
        return super().publish(job_id, published, record)

    def _finish(self, session: Session, job_id: str, values: dict[str, Any], final: Any) -> FinishOutcome:
        outcome = super()._finish(session, job_id, values, final)
        if self._inside:
            self._fire()
        return outcome


# --- (a) the database stops mid-finish -----------------------------------------------------------------------


def _run_through_fault(platform: Platform, lifecycle: FaultAtFinish, clip: Path, count: int,
                       caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver()
    _hook(platform, receiver)
    asset_ids = _accept(platform, clip, count)
    runner = Runner(platform, lifecycle=lifecycle)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while lifecycle.fired_at is None:
            assert time.monotonic() < deadline, "no job reached its finish"
            time.sleep(0.1)
        _all_ready_with_webhooks(platform, receiver, asset_ids, within=BOUND - (time.monotonic() - lifecycle.fired_at))
        assert time.monotonic() - lifecycle.fired_at >= OUTAGE  # the fault held the finish up
        assert lifecycle.finishes > count  # the first finish failed and was retried...
        assert "the job's finish is retried by the runner loop" in caplog.text  # ...past the in-thread budget
        assert not runner.deferred and not runner.running
        with platform.db.session() as session:
            jobs = session.scalars(sa.select(Job).where(Job.asset_id.in_(asset_ids))).all()
        assert {(job.state, job.attempts, job.owner) for job in jobs} == {("ready", 1, None)}
    finally:
        runner.stop()
        receiver.server.shutdown()
        platform.close()


def test_postgresql_stopped_mid_finish(private_postgres: PrivatePostgres, clip: Path, ray_address: str,
                                       tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path, private_postgres.url)
    platform = _platform(settings)

    def outage() -> None:
        private_postgres.stop("immediate")  # every connection cut, inside the finish's transaction
        threading.Timer(OUTAGE, private_postgres.start).start()

    lifecycle = FaultAtFinish(platform.db, settings, fault=outage, inside=True)
    _run_through_fault(platform, lifecycle, clip, count=3, caplog=caplog)


def test_sqlite_write_lock_held_through_finish(clip: Path, ray_address: str, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'kinoray.db'}")
    platform = _platform(settings, timeout=0.5)  # the busy timeout: a tenth of the lock
    holder = sqlite3.connect(tmp_path / "kinoray.db", isolation_level=None, check_same_thread=False)

    def lock() -> None:
        holder.execute("BEGIN IMMEDIATE")
        threading.Timer(OUTAGE, lambda: holder.execute("ROLLBACK")).start()

    lifecycle = FaultAtFinish(platform.db, settings, fault=lock, inside=False)
    try:
        _run_through_fault(platform, lifecycle, clip, count=2, caplog=caplog)
    finally:
        holder.close()


# --- (b) a runner killed between encode and publish ----------------------------------------------------------

_DOOMED_RUNNER = """
import os, signal, sys, time
from kinoray.control.jobs import JobLifecycle
from kinoray.control.platform import Platform
from kinoray.serve.runner import Runner
from kinoray.settings import Settings

class DiesBeforePublish(JobLifecycle):
    def publish(self, *args, **kwargs):
        print("encoded", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

settings = Settings()
platform = Platform.from_settings(settings)
Runner(platform, lifecycle=DiesBeforePublish(platform.db, settings, owner="doomed")).start()
time.sleep(600)
"""


def test_runner_killed_between_encode_and_publish(clip: Path, ray_address: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'kinoray.db'}")
    platform = _platform(settings)
    receiver = Receiver()
    _hook(platform, receiver)
    [asset_id] = _accept(platform, clip, 1)
    env = {**os.environ, **settings_env(settings), "RAY_ADDRESS": ray_address}
    doomed = subprocess.Popen([sys.executable, "-c", _DOOMED_RUNNER], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    survivor: Runner | None = None
    try:
        assert doomed.wait(timeout=120) == -signal.SIGKILL
        assert doomed.stdout is not None and b"encoded" in doomed.stdout.read()
        with platform.db.session() as session:
            job = session.scalars(sa.select(Job).where(Job.asset_id == asset_id)).one()
        assert (job.owner, job.attempts) == ("doomed", 1) and job.state in ("planning", "encoding", "packaging")
        assert platform.store.exists(f"assets/{asset_id}/media/master.m3u8")  # encoded and packaged, not published

        survivor = Runner(platform)
        survivor.start()
        _all_ready_with_webhooks(platform, receiver, [asset_id], within=BOUND)
        with platform.db.session() as session:
            job = session.scalars(sa.select(Job).where(Job.asset_id == asset_id)).one()
        assert (job.state, job.attempts, job.owner) == ("ready", 2, None)
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait()
        if survivor is not None:
            survivor.stop()
        receiver.server.shutdown()
        platform.close()
