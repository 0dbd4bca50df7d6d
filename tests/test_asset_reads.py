"""The polled asset reads (:mod:`kinoray.control.asset_reads`, SQLAlchemy Core) show exactly what the ORM read
shows (:func:`kinoray.control.assets.asset_view` of :func:`~kinoray.control.assets.get_asset`), page for page
and cursor for cursor, and only the caller's environment, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from kinoray.control import asset_reads
from kinoray.control.assets import AssetCreate, asset_view, create_asset_from_request, get_asset
from kinoray.control.platform import Platform
from kinoray.errors import InvalidParametersError, NotFoundError
from kinoray.settings import Settings
from kinoray.store import scoping
from kinoray.store.db import newest_first
from kinoray.store.models import (
    Asset,
    AssetStatus,
    StaticRenditionStatus,
    Upload,
    UploadStatus,
    new_id,
    utcnow,
)

OTHER = "kinoray-test-other-environment"


@pytest.fixture(scope="module")
def platform(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir: Path = tmp_path_factory.mktemp("asset-reads")
    settings = Settings(data_dir=data_dir, database_url=api_backend.new_url(), environment="test",
                        api={"allow_private_inputs": True})
    platform = Platform.from_settings(settings)
    platform.db.migrate()
    try:
        yield platform
    finally:
        platform.db.dispose()


def _create(platform: Platform, environment_id: str, **fields: object) -> str:
    body = AssetCreate.model_validate({"inputs": [{"url": "s3://media-bucket/in/clip.mp4"}], **fields})
    with platform.db.session(environment_id=environment_id) as session:
        return create_asset_from_request(session, platform.settings, body).id


@pytest.fixture(scope="module")
def made(platform: Platform) -> dict[str, list[str]]:
    """Assets of every shape a view shows, in the default environment and another one."""
    plain = _create(platform, "default")
    full = _create(platform, "default", playback_policies=["public", "signed"], passthrough="p", test=True,
                   meta={"title": "t", "creator_id": "c"}, master_access="temporary", max_resolution_tier="720p",
                   static_renditions=[{"resolution": "highest"}, {"resolution": "audio-only"},
                                      {"resolution": "720p", "passthrough": "x"}])
    legacy = _create(platform, "default", playback_policies=["public"], mp4_support="capped-1080p")
    uploaded = _create(platform, "default", playback_policies=["signed"])
    with platform.db.session() as session:
        asset = session.get(Asset, full)
        assert asset is not None
        asset.status, asset.duration, asset.aspect_ratio, asset.resolution_tier = AssetStatus.READY, 12.5, "16:9", "720p"
        asset.tracks = [{"id": "v1", "type": "video", "max_width": 1280, "max_height": 720, "max_frame_rate": 30},
                        {"id": "a1", "type": "audio", "max_channels": 2}]
        asset.progress_state, asset.progress_fraction = "completed", 1.0
        asset.master_status, asset.master_url = "ready", "http://edge/master/x"
        asset.master_expires_at = utcnow() + timedelta(hours=1)
        asset.video_codec, asset.encoder_backend, asset.max_stored_frame_rate = "h264", "libx264", 30.0
        highest, audio, scaled = asset.static_files
        highest.status, highest.width, highest.height, highest.filesize = StaticRenditionStatus.READY, 1280, 720, 9
        audio.status, audio.filesize, audio.bitrate = StaticRenditionStatus.READY, 5, 128_000
        scaled.status, scaled.reason = StaticRenditionStatus.SKIPPED, "no 720p rung"
        errored = session.get(Asset, plain)
        assert errored is not None
        errored.status, errored.progress_state = AssetStatus.ERRORED, "errored"
        errored.errors = {"type": "invalid_input", "messages": ["no video"]}
        session.add(Upload(id=new_id(), asset_id=uploaded, status=UploadStatus.ASSET_CREATED))
    other = [_create(platform, OTHER, playback_policies=["public"]) for _ in range(2)]
    return {"default": [plain, full, legacy, uploaded], OTHER: other}


def test_one_read_shows_what_the_orm_read_shows(platform: Platform, made: dict[str, list[str]]) -> None:
    for environment_id, ids in made.items():
        with scoping.scoped(environment_id), platform.db.reader() as session, \
                platform.db.read_connection() as connection:
            for asset_id in ids:
                assert asset_reads.read_asset(connection, asset_id) == asset_view(get_asset(session, asset_id))
    with platform.db.read_connection() as connection:  # unscoped (the runner, the CLI): every environment
        for asset_id in made[OTHER]:
            assert asset_reads.read_asset(connection, asset_id).id == asset_id
    with platform.db.read_connection(environment_id=OTHER) as connection:  # scoped explicitly, as sessions are
        with pytest.raises(NotFoundError):
            asset_reads.read_asset(connection, made["default"][0])


def test_a_page_shows_what_the_orm_page_shows(platform: Platform, made: dict[str, list[str]]) -> None:
    for environment_id in made:
        with scoping.scoped(environment_id), platform.db.reader() as session, \
                platform.db.read_connection() as connection:
            cursor: str | None = None
            shown: list[str] = []
            while True:
                page, next_cursor = asset_reads.read_assets(connection, limit=3, cursor=cursor)
                rows, orm_cursor = newest_first(session, Asset, limit=3, cursor=cursor)
                assert page == [asset_view(row) for row in rows] and next_cursor == orm_cursor
                shown += [view.id for view in page]
                if next_cursor is None:
                    break
                cursor = next_cursor
            assert sorted(shown) == sorted(made[environment_id])
            numbered, _ = asset_reads.read_assets(connection, limit=1, page=2)
            assert [view.id for view in numbered] == shown[1:2]


def test_another_environments_asset_is_not_found(platform: Platform, made: dict[str, list[str]]) -> None:
    with platform.db.reader() as session:
        upload = get_asset(session, made["default"][3]).upload
        assert upload is not None
    with scoping.scoped(OTHER), platform.db.read_connection() as connection:
        with pytest.raises(NotFoundError):
            asset_reads.read_asset(connection, made["default"][0])
        assert asset_reads.read_assets(connection, limit=25, upload_id=upload.id) == ([], None)
    with scoping.scoped("default"), platform.db.read_connection() as connection:
        with pytest.raises(NotFoundError):
            asset_reads.read_asset(connection, made[OTHER][0])
        listed, _ = asset_reads.read_assets(connection, limit=25, upload_id=upload.id)
        assert [view.id for view in listed] == [made["default"][3]]
        with pytest.raises(NotFoundError):
            asset_reads.read_asset(connection, "../not-an-id")
        with pytest.raises(InvalidParametersError):
            asset_reads.read_assets(connection, limit=25, cursor="not-a-cursor")

