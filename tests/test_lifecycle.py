"""The job lifecycle (:mod:`kinoray.control.jobs`) as a state machine over a real database, without Ray or HTTP:
claims and leases (a live runner's job is never taken, a dead one's is after its lease), retries through
injected transient errors, every inconsistent state the reconciler repairs, idempotent finishes, and exactly one
webhook per finished asset. Time is a fake clock; SQLite and PostgreSQL (the shared server, a fresh schema).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from kinoray.control.assets import NewAssetSettings, create_asset
from kinoray.control.jobs import FinishOutcome, JobLifecycle, retry_transient
from kinoray.settings import JobSettings, Settings
from kinoray.store import (
    Asset,
    AssetStatus,
    Database,
    Event,
    Job,
    JobRecord,
    JobState,
    WebhookDelivery,
    WebhookEndpoint,
)
from kinoray.store.db import is_transient
from tests.api_server import Backend

LEASE = 30.0
PUBLISHED = {"duration": 4.0, "aspect_ratio": "16:9", "resolution_tier": "720p", "encoder_backend": "libx264",
             "max_stored_frame_rate": 30.0, "video_codec": "h264",
             "tracks": [{"type": "video", "id": "t1", "max_width": 1280, "max_height": 720}]}


class Clock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def backend(api_backend: Backend) -> Backend:
    """conftest's fresh-database factory, once per kind (SQLite, PostgreSQL)."""
    return api_backend


@pytest.fixture()
def db(backend: Backend) -> Iterator[Database]:
    database = Database(backend.new_url())
    database.migrate()
    with database.session() as session:
        session.add(WebhookEndpoint(url="https://hooks.example.com/in"))  # so every event queues a delivery
    yield database
    database.dispose()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def _settings(**jobs: Any) -> Settings:
    return Settings(environment="test", jobs={"lease_seconds": LEASE, "retry_seconds": 5.0, **jobs})


def _runner(db: Database, clock: Clock, owner: str, **jobs: Any) -> JobLifecycle:
    return JobLifecycle(db, _settings(**jobs), owner=owner, clock=clock)


def _new_asset(db: Database) -> tuple[str, str]:
    with db.session() as session:
        asset = create_asset(session, _settings(), NewAssetSettings(playback_policies=["public"]),
                             input_url="https://example.com/in.mp4")
        job_id = session.scalars(sa.select(Job.job_id).where(Job.asset_id == asset.id)).one()
    return asset.id, job_id


def _job(db: Database, job_id: str) -> Job:
    with db.session() as session:
        return session.get_one(Job, job_id)


def _asset(db: Database, asset_id: str) -> Asset:
    with db.session() as session:
        return session.get_one(Asset, asset_id)


def _events(db: Database, asset_id: str, event_type: str) -> int:
    """Events of ``event_type`` about the asset, checked against their outbox rows (one per endpoint)."""
    with db.session() as session:
        events = session.scalar(sa.select(sa.func.count()).select_from(Event)
                                .where(Event.object_id == asset_id, Event.type == event_type))
        deliveries = session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)
                                    .join(Event, WebhookDelivery.event_id == Event.id)
                                    .where(Event.object_id == asset_id, Event.type == event_type))
    assert deliveries == events
    return int(events or 0)


def _set_job(db: Database, job_id: str, **values: Any) -> None:
    with db.session() as session:
        session.execute(sa.update(Job).where(Job.job_id == job_id).values(**values))


# --- claims and leases ---------------------------------------------------------------------------------------


def test_claim_takes_a_queued_job_once_under_a_lease(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    first, second = _runner(db, clock, "runner-a"), _runner(db, clock, "runner-b")
    [claimed] = first.claim(5)
    assert (claimed.job_id, claimed.asset_id, claimed.attempt) == (job_id, asset_id, 1)
    assert claimed.input_url == "https://example.com/in.mp4" and claimed.options["codec"] == "h264"
    assert second.claim(5) == []
    job = _job(db, job_id)
    assert (job.state, job.owner, job.lease_expires_at, job.attempts) == ("planning", "runner-a", clock.now + LEASE, 1)


def test_a_live_runners_job_is_not_stolen(db: Database, clock: Clock) -> None:
    _, job_id = _new_asset(db)
    alive, other = _runner(db, clock, "runner-a"), _runner(db, clock, "runner-b")
    alive.claim(1)
    for _ in range(4):  # four heartbeats, 0.8 lease apart: 3.2 leases after the claim, never one without a beat
        clock.advance(0.8 * LEASE)
        assert alive.heartbeat({job_id}) == {job_id}
        assert other.reconcile().total == 0
        assert other.claim(1) == []
    assert alive.progress(job_id, stage="transcoding", fraction=0.5)
    assert _job(db, job_id).owner == "runner-a"


def test_a_dead_runners_job_is_stolen_after_its_lease(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    dead, other = _runner(db, clock, "runner-a"), _runner(db, clock, "runner-b")
    dead.claim(1)
    clock.advance(LEASE - 1)
    assert other.reconcile().total == 0  # not yet
    clock.advance(2)
    assert other.reconcile().requeued == (job_id,)
    [claimed] = other.claim(1)
    assert claimed.job_id == job_id and claimed.attempt == 2
    # The old owner comes back: every write it tries is fenced out, and it learns the job is gone.
    assert dead.heartbeat({job_id}) == set()
    assert not dead.progress(job_id, stage="transcoding", fraction=0.9)
    assert dead.publish(job_id, PUBLISHED) is FinishOutcome.LOST
    assert dead.fail(job_id, "internal_error", "late") is FinishOutcome.LOST
    assert not dead.release(job_id)
    assert _asset(db, asset_id).status is AssetStatus.PREPARING
    assert other.publish(job_id, PUBLISHED) is FinishOutcome.DONE
    assert _asset(db, asset_id).status is AssetStatus.READY and _events(db, asset_id, "video.asset.ready") == 1


def test_own_reconciler_keeps_a_held_job_whose_lease_ran_out(db: Database, clock: Clock) -> None:
    _, job_id = _new_asset(db)
    runner = _runner(db, clock, "runner-a")
    runner.claim(1)
    clock.advance(LEASE * 2)  # a database stall longer than the lease
    assert runner.reconcile(held={job_id}).total == 0
    assert runner.heartbeat({job_id}) == {job_id}
    assert _job(db, job_id).lease_expires_at == clock.now + LEASE


def test_an_active_job_without_a_lease_counts_as_abandoned(db: Database, clock: Clock) -> None:
    """Rows from before migration 0003 (or a runner that crashed mid-claim) have no lease: re-queued at once."""
    _, job_id = _new_asset(db)
    _set_job(db, job_id, state="encoding", owner=None, lease_expires_at=None, attempts=0)
    assert _runner(db, clock, "runner-b").reconcile().requeued == (job_id,)
    assert _job(db, job_id).state == "queued"


def test_a_job_that_keeps_losing_its_runner_errors_after_max_attempts(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    runner = _runner(db, clock, "runner-a", max_attempts=2)
    for _ in range(2):
        assert [c.job_id for c in runner.claim(1)] == [job_id]
        clock.advance(LEASE + 1)
        report = runner.reconcile()
    assert report.abandoned == (job_id,) and report.requeued == ()
    asset, job = _asset(db, asset_id), _job(db, job_id)
    assert job.state == "errored" and job.owner is None and job.attempts == 2
    assert asset.status is AssetStatus.ERRORED and asset.errors["type"] == "internal_error"  # type: ignore[index]
    assert _events(db, asset_id, "video.asset.errored") == 1
    assert runner.reconcile().total == 0


def test_release_gives_the_job_back_without_counting_an_attempt(db: Database, clock: Clock) -> None:
    _, job_id = _new_asset(db)
    runner = _runner(db, clock, "runner-a")
    runner.claim(1)
    assert runner.release(job_id)
    job = _job(db, job_id)
    assert (job.state, job.owner, job.lease_expires_at, job.attempts) == ("queued", None, None, 0)
    assert not runner.release(job_id)


# --- progress and finish -------------------------------------------------------------------------------------


def test_progress_writes_the_record_but_never_a_final_state(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    runner = _runner(db, clock, "runner-a")
    runner.claim(1)
    clock.advance(5)
    record = JobRecord(job_id=job_id, source="file:///in", output="file:///out", state=JobState.ENCODING,
                       chunks_total=4, chunks_done=1, frames_total=100, frames_done=25, encoder="libx264",
                       decoders=("cpu",))
    assert runner.progress(job_id, record, stage="transcoding", fraction=record.progress)
    job, asset = _job(db, job_id), _asset(db, asset_id)
    assert (job.state, job.chunks_done, job.frames_done, job.decoders) == ("encoding", 1, 25, ["cpu"])
    assert job.source == f"assets/{asset_id}/input" and job.lease_expires_at == clock.now + LEASE
    assert (asset.progress_state, round(asset.progress_fraction, 4)) == ("transcoding", 0.2375)
    assert runner.progress(job_id, record.update(state=JobState.READY, finished_at=clock.now))
    assert _job(db, job_id).state == "encoding" and _asset(db, asset_id).status is AssetStatus.PREPARING
    with pytest.raises(ValueError, match="written to job"):
        runner.progress(job_id, JobRecord(job_id="other", source="s", output="o"))


def test_publish_is_one_transaction_and_idempotent(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    runner = _runner(db, clock, "runner-a")
    runner.claim(1)
    record = JobRecord(job_id=job_id, source="s", output="o", state=JobState.READY, frames_total=10, frames_done=10)
    assert runner.publish(job_id, PUBLISHED, record) is FinishOutcome.DONE
    assert runner.publish(job_id, PUBLISHED, record) is FinishOutcome.ALREADY
    job, asset = _job(db, job_id), _asset(db, asset_id)
    assert (job.state, job.owner, job.lease_expires_at, job.result, job.frames_done) == ("ready", None, None,
                                                                                          PUBLISHED, 10)
    assert asset.status is AssetStatus.READY and asset.duration == 4.0 and asset.video_codec == "h264"
    assert asset.progress_state == "completed" and asset.tracks == PUBLISHED["tracks"]
    assert _events(db, asset_id, "video.asset.ready") == 1
    assert runner.fail(job_id, "internal_error", "too late") is FinishOutcome.LOST  # a ready job stays ready
    assert _asset(db, asset_id).status is AssetStatus.READY and _events(db, asset_id, "video.asset.errored") == 0


def test_fail_errors_the_asset_once(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    runner = _runner(db, clock, "runner-a")
    runner.claim(1)
    assert runner.fail(job_id, "invalid_media", "no video stream") is FinishOutcome.DONE
    assert runner.fail(job_id, "invalid_media", "no video stream") is FinishOutcome.ALREADY
    asset = _asset(db, asset_id)
    assert asset.status is AssetStatus.ERRORED
    assert asset.errors == {"type": "invalid_media", "messages": ["no video stream"]}
    assert _events(db, asset_id, "video.asset.errored") == 1 and _job(db, job_id).error_type == "invalid_media"


def test_finishing_a_deleted_assets_job_reports_it_gone(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    runner = _runner(db, clock, "runner-a")
    runner.claim(1)
    with db.session() as session:
        session.delete(session.get_one(Asset, asset_id))
    assert runner.heartbeat({job_id}) == set()
    assert runner.publish(job_id, PUBLISHED) is FinishOutcome.GONE
    assert not runner.asset_exists(asset_id)


# --- transient errors ----------------------------------------------------------------------------------------


class FlakyDatabase:
    """A :class:`Database` whose next sessions fail like a database that is down (``fail_before``: before the
    transaction starts) or like a ``COMMIT`` whose answer was lost (``fail_after``: the transaction did commit)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.fail_before = 0
        self.fail_after = 0
        self.sessions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    @contextmanager
    def session(self) -> Iterator[Session]:
        self.sessions += 1
        if self.fail_before:
            self.fail_before -= 1
            raise sa_exc.OperationalError("BEGIN", None, Exception("connection refused"))
        with self.db.session() as session:
            yield session
        if self.fail_after:
            self.fail_after -= 1
            raise sa_exc.OperationalError("COMMIT", None, Exception("server closed the connection unexpectedly"))


def test_retry_backs_off_through_transient_errors_then_gives_up() -> None:
    settings = JobSettings(retry_seconds=1.0, retry_backoff_seconds=0.1, retry_max_backoff_seconds=0.3)
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    failures = [3]

    def flaky() -> str:
        if failures[0]:
            failures[0] -= 1
            raise sa_exc.OperationalError("UPDATE", None, Exception("database is locked"))
        return "done"

    assert retry_transient(flaky, settings, what="test", sleep=sleep, clock=lambda: now[0]) == "done"
    assert pauses == [0.1, 0.2, 0.3]

    def down() -> None:
        raise sa_exc.OperationalError("UPDATE", None, Exception("connection refused"))

    pauses.clear()
    now[0] = 0.0
    with pytest.raises(sa_exc.OperationalError):
        retry_transient(down, settings, what="test", sleep=sleep, clock=lambda: now[0])
    assert pauses == [0.1, 0.2, 0.3, 0.3] and now[0] <= 1.0

    calls = [0]

    def broken() -> None:
        calls[0] += 1
        raise sa_exc.IntegrityError("INSERT", None, Exception("duplicate key"))

    with pytest.raises(sa_exc.IntegrityError):
        retry_transient(broken, settings, what="test", sleep=sleep)
    assert calls == [1]  # not transient: not retried


def test_a_held_sqlite_write_lock_is_transient(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'locked.db'}", timeout=0.1)
    database.migrate()
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sa_exc.OperationalError) as caught:
            with database.session() as session:
                session.execute(sa.update(Job).values(updated_at=0.0))
        assert is_transient(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        database.dispose()
    assert not is_transient(sa_exc.IntegrityError("INSERT", None, Exception("duplicate key")))
    assert not is_transient(ValueError("not a database error"))


def test_finish_retried_through_an_outage_and_a_lost_commit_emits_once(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    flaky = FlakyDatabase(db)
    runner = JobLifecycle(flaky, _settings(retry_backoff_seconds=0.01), owner="runner-a",  # type: ignore[arg-type]
                          clock=clock)
    runner.claim(1)
    flaky.sessions = 0
    flaky.fail_before, flaky.fail_after = 2, 1  # down twice, then the commit lands but its answer is lost
    outcome = retry_transient(lambda: runner.publish(job_id, PUBLISHED), runner.config, what="publish")
    assert outcome is FinishOutcome.ALREADY and flaky.sessions == 4
    assert _asset(db, asset_id).status is AssetStatus.READY and _events(db, asset_id, "video.asset.ready") == 1


# --- the reconciler ------------------------------------------------------------------------------------------


def test_reconcile_publishes_an_asset_left_preparing_beside_a_ready_job(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    _set_job(db, job_id, state="ready", result=PUBLISHED, finished_at=clock.now)
    runner = _runner(db, clock, "runner-a")
    assert runner.reconcile().published == (asset_id,)
    asset = _asset(db, asset_id)
    assert asset.status is AssetStatus.READY and asset.duration == 4.0
    assert runner.reconcile().total == 0 and _events(db, asset_id, "video.asset.ready") == 1


def test_reconcile_reruns_a_ready_job_without_a_result(db: Database, clock: Clock) -> None:
    """A job marked ready by a runner from before the lifecycle (its record saved, the asset never finished)."""
    asset_id, job_id = _new_asset(db)
    _set_job(db, job_id, state="ready", attempts=1, finished_at=clock.now)
    runner = _runner(db, clock, "runner-a")
    assert runner.reconcile().rerun == (asset_id,)
    job = _job(db, job_id)
    assert (job.state, job.finished_at, job.owner) == ("queued", None, None)
    assert [c.job_id for c in runner.claim(1)] == [job_id]


def test_reconcile_errors_an_asset_left_preparing_beside_an_errored_job(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    _set_job(db, job_id, state="errored", error_type="invalid_media", error="moov atom not found")
    runner = _runner(db, clock, "runner-a")
    assert runner.reconcile().errored == (asset_id,)
    assert _asset(db, asset_id).errors == {"type": "invalid_media", "messages": ["moov atom not found"]}
    assert runner.reconcile().total == 0 and _events(db, asset_id, "video.asset.errored") == 1


def test_reconcile_reruns_a_cancelled_job_of_a_preparing_asset(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    _set_job(db, job_id, state="cancelled", attempts=1)
    assert _runner(db, clock, "runner-a").reconcile().rerun == (asset_id,)
    assert _job(db, job_id).state == "queued"


def test_reconcile_gives_a_preparing_asset_without_a_job_a_new_one(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    with db.session() as session:
        options = session.get_one(Job, job_id).options
        session.execute(sa.delete(Job).where(Job.job_id == job_id))
    runner = _runner(db, clock, "runner-a")
    assert runner.reconcile().rerun == (asset_id,)
    [claimed] = runner.claim(1)
    assert claimed.asset_id == asset_id and claimed.job_id != job_id and claimed.options == options
    assert claimed.source == f"assets/{asset_id}/input" and claimed.output == f"assets/{asset_id}/media"
    assert runner.publish(claimed.job_id, PUBLISHED) is FinishOutcome.DONE
    assert _events(db, asset_id, "video.asset.ready") == 1


def test_reconcile_remakes_a_clips_job_with_its_source_and_range(db: Database, clock: Clock) -> None:
    source_id, _ = _new_asset(db)
    with db.session() as session:
        clip = create_asset(session, _settings(), NewAssetSettings(test=True), input_url=f"mux://assets/{source_id}",
                            source_key=f"assets/{source_id}/input", source_asset_id=source_id, clip_start=2.5,
                            clip_end=30.0)
        job = session.scalars(sa.select(Job).where(Job.asset_id == clip.id)).one()
        options, job_id = dict(job.options), job.job_id
        session.execute(sa.delete(Job).where(Job.job_id == job_id))
    assert (options["clip_start"], options["clip_end"], options["watermark"]) == (2.5, 12.5, True)  # a test clip: 10 s
    runner = _runner(db, clock, "runner-a")
    assert clip.id in runner.reconcile().rerun
    claimed = next(item for item in runner.claim(2) if item.asset_id == clip.id)
    assert claimed.options == options and claimed.source == f"assets/{source_id}/input"


def test_reconcile_errors_a_jobless_asset_whose_settings_cannot_make_a_job(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    with db.session() as session:
        session.execute(sa.delete(Job).where(Job.job_id == job_id))
        session.execute(sa.update(Asset).where(Asset.id == asset_id)
                        .values(create_settings={"max_resolution_tier": "9000p"}))
    assert _runner(db, clock, "runner-a").reconcile().errored == (asset_id,)
    asset = _asset(db, asset_id)
    assert asset.status is AssetStatus.ERRORED and asset.errors["type"] == "internal_error"  # type: ignore[index]
    assert _events(db, asset_id, "video.asset.errored") == 1


def test_reconcile_errors_an_asset_whose_job_used_up_its_attempts(db: Database, clock: Clock) -> None:
    asset_id, job_id = _new_asset(db)
    _set_job(db, job_id, state="cancelled", attempts=3)
    assert _runner(db, clock, "runner-a", max_attempts=3).reconcile().errored == (asset_id,)
    assert _asset(db, asset_id).status is AssetStatus.ERRORED and _job(db, job_id).state == "errored"


def test_reconcile_leaves_consistent_rows_alone(db: Database, clock: Clock) -> None:
    queued_asset, _ = _new_asset(db)
    running_asset, running_job = _new_asset(db)
    finished_asset, finished_job = _new_asset(db)
    runner = _runner(db, clock, "runner-a")
    claimed = {c.job_id for c in runner.claim(3)}
    assert {running_job, finished_job} <= claimed
    runner.release(next(iter(claimed - {running_job, finished_job})))
    runner.publish(finished_job, PUBLISHED)
    assert _runner(db, clock, "runner-b").reconcile().total == 0
    assert _asset(db, queued_asset).status is AssetStatus.PREPARING
    assert _asset(db, running_asset).status is AssetStatus.PREPARING


def test_the_lifecycle_and_the_job_states_are_ray_and_http_free() -> None:
    import subprocess
    import sys

    code = ("import sys, kinoray.control.jobs, kinoray.store.models, kinoray.store.states; "
            "loaded = [m for m in ('ray', 'fastapi', 'starlette', 'kinoray.cluster') if m in sys.modules]; "
            "sys.exit(str(loaded) if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
