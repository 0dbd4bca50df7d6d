"""The metadata database on SQLite and PostgreSQL: migrations build exactly the models' schema, every model
round-trips, constraints hold, job records persist, pages are stable.

PostgreSQL is the server on 127.0.0.1:5432 (``KINORAY_TEST_POSTGRES_URL`` overrides it; an empty value skips
the PostgreSQL half). Each test module gets fresh schemas there, selected through ``search_path`` and dropped
at the end; SQLite gets fresh files.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError, StatementError

from kinoray.settings import Settings
from kinoray.store import (
    JOB_STATES,
    AccessToken,
    Asset,
    AssetStatus,
    Base,
    Database,
    Event,
    IdempotencyKey,
    Job,
    PlaybackId,
    PlaybackPolicy,
    SigningKey,
    Upload,
    UploadStatus,
    WebhookDelivery,
    WebhookEndpoint,
    database_url,
    decode_cursor,
    downgrade,
    encode_cursor,
    hash_secret,
    is_valid_id,
    migrate,
    new_id,
    newest_first,
    request_fingerprint,
    utcnow,
    verify_secret,
)
from kinoray.store import models as models_module
from kinoray.store.db import MIGRATIONS_DIR
from kinoray.store.models import Environment
from tests.api_server import Backend


@pytest.fixture(scope="module")
def backend(api_backend: Backend) -> Backend:
    """conftest's fresh-database factory, once per kind (SQLite, PostgreSQL)."""
    return api_backend


@pytest.fixture(scope="module")
def db(backend: Backend) -> Iterator[Database]:
    database = Database(backend.new_url())
    database.migrate()
    yield database
    database.dispose()


def _asset(**fields_: object) -> Asset:
    return Asset(input_url="https://example.com/in.mp4", **fields_)


def _schema_diffs(connection: sa.Connection, metadata: sa.MetaData = Base.metadata) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata))


# --- migrations ----------------------------------------------------------------------------------------------


def test_migrations_build_the_models_schema_and_go_back(backend: Backend) -> None:
    url = backend.new_url()
    migrate(url)
    migrate(url)  # idempotent
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            assert _schema_diffs(connection) == []
            newest = max(path.name[:4] for path in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
            assert MigrationContext.configure(connection).get_current_revision() == newest
            inspector = sa.inspect(connection)
            for table in Base.metadata.sorted_tables:  # Alembic does not compare CHECK constraints: names here
                expected = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
                assert {c["name"] for c in inspector.get_check_constraints(table.name)} == expected, table.name
        downgrade(url)
        with database.engine.connect() as connection:
            assert set(sa.inspect(connection).get_table_names()) == {"alembic_version"}
            assert MigrationContext.configure(connection).get_current_revision() is None
        migrate(url)
        with database.engine.connect() as connection:
            assert _schema_diffs(connection) == []
    finally:
        database.dispose()


def test_schema_comparison_can_fail(db: Database) -> None:
    changed = sa.MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["assets"].c.passthrough.type = sa.String(200)
    with db.engine.connect() as connection:
        assert [diff[0][0] for diff in _schema_diffs(connection, changed)] == ["modify_type"]  # type: ignore[index]
        connection.rollback()
        with connection.begin() as transaction:
            connection.exec_driver_sql("DROP INDEX ix_assets_created_at_id")
            assert [diff[0] for diff in _schema_diffs(connection)] == ["add_index"]  # type: ignore[index]
            transaction.rollback()


# --- assets, playback ids, uploads ---------------------------------------------------------------------------


def test_asset_round_trip(db: Database) -> None:
    with db.session() as session:
        asset = _asset(passthrough="p" * 255, meta={"title": "Été", "creator_id": "c1", "external_id": "x1"},
                       create_settings={"playback_policies": ["public"], "video_quality": "basic"},
                       storage_prefix="assets/a", duration=12.345, aspect_ratio="16:9", resolution_tier="1080p",
                       max_stored_frame_rate=29.97, video_codec="h264", encoder_backend="libx264",
                       tracks=[{"type": "video", "max_width": 1920, "max_height": 1080}])
        session.add(asset)
        session.flush()
        asset_id = asset.id
    assert is_valid_id(asset_id) and len(asset_id) >= 24

    with db.session() as session:
        loaded = session.get_one(Asset, asset_id)
        assert loaded.status is AssetStatus.PREPARING and loaded.errors is None
        assert loaded.meta["title"] == "Été" and loaded.tracks[0]["max_width"] == 1920
        assert loaded.create_settings == {"playback_policies": ["public"], "video_quality": "basic"}
        assert (loaded.duration, loaded.max_stored_frame_rate, loaded.progress_fraction) == (12.345, 29.97, 0.0)
        assert loaded.created_at.tzinfo is UTC and abs(loaded.created_at - utcnow()) < timedelta(minutes=1)
        created, updated = loaded.created_at, loaded.updated_at
        assert session.scalar(sa.select(sa.func.count()).where(Asset.id == asset_id, Asset.errors.is_(None))) == 1
        time.sleep(0.002)
        loaded.status = AssetStatus.ERRORED
        loaded.errors = {"type": "invalid_media", "messages": ["no video stream"]}

    with db.session() as session:
        loaded = session.get_one(Asset, asset_id)
        assert loaded.status == "errored" and loaded.errors == {"type": "invalid_media", "messages": ["no video stream"]}
        assert loaded.created_at == created and loaded.updated_at > updated
        session.delete(loaded)
    with db.session() as session:
        assert session.get(Asset, asset_id) is None


def test_statuses_and_datetimes_are_checked(db: Database) -> None:
    now = "2030-01-01 00:00:00+00:00"
    with pytest.raises(IntegrityError), db.session() as session:  # the CHECK constraint, below the ORM's check
        session.execute(sa.text(
            "INSERT INTO assets (id, status, meta, create_settings, tracks, progress_state, progress_fraction, "
            "created_at, updated_at) VALUES (:id, 'bogus', '{}', '{}', '[]', 'ingesting', 0, :now, :now)"),
            {"id": new_id(), "now": now})
    with pytest.raises(StatementError, match="naive datetime"), db.session() as session:
        session.add(_asset(created_at=datetime(2030, 1, 1)))
        session.flush()
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(_asset())
        session.flush()
        session.add(Job(job_id=uuid.uuid4().hex, asset_id=session.scalars(sa.select(Asset.id)).first(),
                        source="s", output="o", state="bogus", created_at=1.0, updated_at=1.0))


def test_playback_ids_need_an_asset_and_go_with_it(db: Database) -> None:
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(PlaybackId(asset_id="missing", policy=PlaybackPolicy.PUBLIC))

    with db.session() as session:
        asset = _asset(playback_ids=[PlaybackId(policy=PlaybackPolicy.PUBLIC),
                                     PlaybackId(policy=PlaybackPolicy.SIGNED)])
        session.add(asset)
        session.flush()
        session.add(Job(job_id=uuid.uuid4().hex, asset_id=asset.id, source="s", output="o",
                        created_at=1.0, updated_at=1.0))
        upload = Upload(asset_id=asset.id, status=UploadStatus.ASSET_CREATED)
        session.add(upload)
        session.flush()
        asset_id, upload_id = asset.id, upload.id

    with db.session() as session:
        policies = sorted(p.policy for p in session.get_one(Asset, asset_id).playback_ids)
        assert policies == [PlaybackPolicy.PUBLIC, PlaybackPolicy.SIGNED]
        session.execute(sa.delete(Asset).where(Asset.id == asset_id))  # the database cascades, not the ORM
    with db.session() as session:
        assert session.scalars(sa.select(PlaybackId).where(PlaybackId.asset_id == asset_id)).all() == []
        assert session.scalars(sa.select(Job).where(Job.asset_id == asset_id)).all() == []
        kept = session.get_one(Upload, upload_id)
        assert kept.asset_id is None and kept.status is UploadStatus.ASSET_CREATED


def test_upload_round_trip_and_expiry(db: Database) -> None:
    with db.session() as session:
        upload = Upload(timeout_seconds=120, cors_origin="https://app.example.com",
                        new_asset_settings={"playback_policies": ["signed"]}, upload_length=10 * 1024**3,
                        upload_metadata={"filename": "clip.mp4"}, storage_key="uploads/u/data")
        stale = Upload(created_at=utcnow() - timedelta(hours=2), expires_at=utcnow() - timedelta(hours=1))
        session.add_all([upload, stale])
        session.flush()
        upload_id, stale_id = upload.id, stale.id
    with db.session() as session:
        loaded = session.get_one(Upload, upload_id)
        assert loaded.status is UploadStatus.WAITING and loaded.upload_offset == 0
        assert loaded.upload_length == 10 * 1024**3 and loaded.upload_metadata == {"filename": "clip.mp4"}
        assert abs((loaded.expires_at - loaded.created_at) - timedelta(seconds=120)) < timedelta(seconds=1)
        loaded.upload_offset = 5 * 1024**3
        loaded.part_checksums = [{"offset": 0, "length": 5 * 1024**3, "algorithm": "sha1", "digest": "ab"}]
        expired = session.scalars(sa.select(Upload.id).where(
            Upload.status == UploadStatus.WAITING, Upload.expires_at < utcnow())).all()
        assert stale_id in expired and upload_id not in expired
    with db.session() as session:
        assert session.get_one(Upload, upload_id).upload_offset == 5 * 1024**3


# --- jobs ----------------------------------------------------------------------------------------------------


def test_job_record_persists_and_rebuilds_equal(db: Database) -> None:
    from kinoray.store.states import JobRecord, JobState  # Ray-free: the store never imports kinoray.cluster

    assert JOB_STATES == tuple(state.value for state in JobState)
    assert {f.name for f in fields(JobRecord)} <= set(Job.__table__.c.keys())

    with db.session() as session:
        asset = _asset()
        session.add(asset)
        session.flush()
        asset_id = asset.id
    started = time.time()
    record = JobRecord(job_id=uuid.uuid4().hex, source="s3://in/a.mp4", output="s3://out/assets/a",
                       state=JobState.ENCODING, chunks_total=7, chunks_done=3, frames_total=9_000_000_000,
                       frames_done=1234, duration_seconds=61.061, workers=4, encoder="libx264",
                       fallback_from="nvenc", fallback_reason="no NVENC session", decoders=("cpu", "nvdec"),
                       scalers=("swscale",), retries=2, created_at=started - 1.1234567,
                       encode_started_at=started + 1e-7)
    with db.session() as session:
        session.add(Job.from_record(record, asset_id=asset_id, options={"codec": "h264", "ladder": [720, 360]}))
    with db.session() as session:
        job = session.get_one(Job, record.job_id)
        assert job.to_record() == record and job.options == {"codec": "h264", "ladder": [720, 360]}
        finished = record.update(state=JobState.ERRORED, error_type="worker_lost", error="chunk 3: node died",
                                 finished_at=time.time())
        job.apply_record(finished)
        with pytest.raises(ValueError, match="applied to job"):
            job.apply_record(JobRecord(job_id="other", source="s", output="o"))
    with db.session() as session:
        rebuilt = session.get_one(Job, record.job_id).to_record()
        assert rebuilt == finished and rebuilt.state is JobState.ERRORED and rebuilt.decoders == ("cpu", "nvdec")
        unfinished = session.scalars(sa.select(Job.job_id).where(Job.state.in_(["queued", "encoding"]))).all()
        assert record.job_id not in unfinished


# --- tokens, keys, idempotency -------------------------------------------------------------------------------


def test_access_token_secret_is_hashed_and_checked_in_constant_time(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(models_module.hmac, "compare_digest", spy)
    token, secret = AccessToken.issue(name="ci", environment_id="production")
    with db.session() as session:
        session.add(Environment(id="production", name="production", env_key="prodkey"))
        session.flush()
        session.add(token)
    with db.session() as session:
        loaded = session.get_one(AccessToken, token.id)
        assert secret not in loaded.secret_hash and loaded.secret_hash.startswith("scrypt$")
        assert not loaded.check_secret(secret + "x") and not loaded.check_secret("")
        assert len(compared) == 2
        assert loaded.check_secret(secret) and len(compared) == 3
        assert loaded.check_secret(secret)  # remembered
        assert not loaded.revoked and loaded.environment_id == "production"
        loaded.revoked_at = loaded.last_used_at = utcnow()
    with db.session() as session:
        assert session.get_one(AccessToken, token.id).revoked
    assert hash_secret(secret) != hash_secret(secret)  # a fresh salt each time
    assert not verify_secret("not a hash", secret) and not verify_secret("bcrypt$1$2$3$4$5", secret)


def test_idempotency_key_is_unique_per_token(db: Database) -> None:
    first, _ = AccessToken.issue()
    second, _ = AccessToken.issue()
    fingerprint = request_fingerprint("post", "/video/v1/assets", b'{"input": "x"}')
    assert fingerprint != request_fingerprint("POST", "/video/v1/assets", b'{"input": "y"}')
    with db.session() as session:
        session.add_all([first, second])
        session.flush()
        session.add(IdempotencyKey(token_id=first.id, key="k1", request_hash=fingerprint, response_status=201,
                                   response_body={"data": {"id": "a", "tracks": []}}))
        session.add(IdempotencyKey(token_id=second.id, key="k1", request_hash=fingerprint))
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(IdempotencyKey(token_id=first.id, key="k1", request_hash=fingerprint))
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(IdempotencyKey(token_id="missing", key="k1", request_hash=fingerprint))
    with db.session() as session:
        replay = session.get_one(IdempotencyKey, (first.id, "k1"))
        assert replay.response_body == {"data": {"id": "a", "tracks": []}} and replay.request_hash == fingerprint
        assert session.get_one(IdempotencyKey, (second.id, "k1")).response_status is None


def test_signing_key_round_trip(db: Database) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n"
    with db.session() as session:
        key = SigningKey(public_key=pem)
        session.add(key)
        session.flush()
        key_id = key.id
    with db.session() as session:
        assert session.get_one(SigningKey, key_id).public_key == pem
        assert not hasattr(SigningKey, "private_key")


# --- events and webhooks -------------------------------------------------------------------------------------


def test_webhook_outbox_due_deliveries(db: Database) -> None:
    now = utcnow()
    with db.session() as session:
        endpoint = WebhookEndpoint(url="https://hooks.example.com/kinoray")
        event = Event(type="video.asset.ready", object_type="asset", object_id="a1", payload={"id": "a1"})
        other = Event(type="video.asset.created", object_type="asset", object_id="a1", payload={"id": "a1"})
        third = Event(type="video.asset.deleted", object_type="asset", object_id="a1", payload={"id": "a1"})
        session.add_all([endpoint, event, other, third])
        session.flush()

        def delivery(of: Event, **fields_: object) -> WebhookDelivery:
            return WebhookDelivery(endpoint_id=endpoint.id, event_id=of.id, event_type=of.type,
                                   payload={"type": of.type, "id": of.id, "data": of.payload}, **fields_)

        due = delivery(event)
        later = delivery(other, attempts=3, next_attempt_at=now + timedelta(minutes=5), last_status=503)
        done = delivery(third, attempts=1, delivered_at=now, last_status=200)
        session.add_all([due, later, done])
        session.flush()
        done.next_attempt_at = None  # at insert, None means "the default" (due now)
        session.flush()
        endpoint_id, due_id = endpoint.id, due.id
        assert endpoint.enabled and len(endpoint.secret) >= 32
    with db.session() as session:
        query = (sa.select(WebhookDelivery.id)
                 .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.next_attempt_at <= utcnow())
                 .order_by(WebhookDelivery.next_attempt_at))
        assert session.scalars(query).all() == [due_id]
        events = session.scalars(sa.select(Event.type).where(Event.object_type == "asset", Event.object_id == "a1")
                                 .order_by(Event.created_at)).all()
        assert set(events) >= {"video.asset.ready", "video.asset.created", "video.asset.deleted"}
    with pytest.raises(IntegrityError), db.session() as session:  # one delivery per (endpoint, event)
        session.add(WebhookDelivery(endpoint_id=endpoint_id, event_id=session.get_one(WebhookDelivery, due_id)
                                    .event_id, event_type="video.asset.ready", payload={}))
    with db.session() as session:
        session.execute(sa.delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
    with db.session() as session:
        assert session.get(WebhookDelivery, due_id) is None


# --- pages ---------------------------------------------------------------------------------------------------


def test_assets_page_newest_first_with_a_cursor(db: Database) -> None:
    tag = new_id()
    base = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    offsets = [0, 1, 1, 1, 2, 3, 3]  # ties on created_at are broken by id
    with db.session() as session:
        session.add_all([_asset(passthrough=tag, created_at=base + timedelta(seconds=s)) for s in offsets])
    with db.session() as session:
        expected = [(a.created_at, a.id) for a in session.scalars(sa.select(Asset).where(Asset.passthrough == tag))]
        expected.sort(reverse=True)
        seen: list[tuple[datetime, str]] = []
        cursor: str | None = None
        pages = 0
        while True:
            rows, cursor = newest_first(session, Asset, limit=3, cursor=cursor, where=[Asset.passthrough == tag])
            seen += [(row.created_at, row.id) for row in rows]
            pages += 1
            if cursor is None:
                break
        assert seen == expected and pages == 3
        _, next_cursor = newest_first(session, Asset, limit=2, where=[Asset.passthrough == tag])
    with db.session() as session:  # a row added after a page was served does not shift the next page
        session.add(_asset(passthrough=tag, created_at=base + timedelta(seconds=10)))
    with db.session() as session:
        later, _ = newest_first(session, Asset, limit=2, cursor=next_cursor, where=[Asset.passthrough == tag])
        assert [row.id for row in later] == [asset_id for _, asset_id in expected[2:4]]
    with pytest.raises(ValueError):
        decode_cursor("not-a-cursor")
    with pytest.raises(ValueError):
        decode_cursor(encode_cursor(datetime(2030, 1, 1), "a"))  # naive: not one of ours
    assert decode_cursor(encode_cursor(base, "abc")) == (base, "abc")


# --- connections and settings --------------------------------------------------------------------------------


def test_sqlite_connections_have_foreign_keys_wal_and_savepoints(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'kinoray.db'}")
    try:
        database.migrate()
        with database.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        with database.session() as session:
            session.add(_asset(passthrough="kept"))
            with pytest.raises(IntegrityError):
                with session.begin_nested():
                    session.add(PlaybackId(asset_id="missing"))
        with database.session() as session:
            assert session.scalars(sa.select(Asset.passthrough)).all() == ["kept"]
    finally:
        database.dispose()


def test_database_url_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert database_url(Settings(data_dir=tmp_path)) == f"sqlite:///{tmp_path.resolve()}/kinoray.db"
    monkeypatch.setenv("KINORAY_DATABASE_URL", "postgresql://kinoray:hunter2@db.internal/kinoray")
    settings = Settings()
    assert database_url(settings) == "postgresql+psycopg://kinoray:hunter2@db.internal/kinoray"
    database = Database.from_settings(settings)  # no connection is made until one is needed
    assert database.dialect == "postgresql" and "hunter2" not in repr(database)
    database.dispose()


def test_ids_are_random_and_path_safe() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and is_valid_id(i) for i in ids)
    assert is_valid_id(uuid.uuid4().hex)
    for bad in ("", "../etc", "a/b", "a.b", "x" * 65, "ä"):
        assert not is_valid_id(bad)
