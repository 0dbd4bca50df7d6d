"""Delivery usage (Mux's ``/video/v1/delivery-usage``): segments fetched through the production edge (Granian,
two worker processes) are counted per worker, flushed to the database by an upsert every worker shares, and
reported to Mux's Python SDK, whose models deserialize the answer: the delivered seconds equal the ``#EXTINF``
durations (read with the ``m3u8`` library) of exactly the segments fetched, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import m3u8
import mux_python as mux
import pytest
import requests

from kinoray.control.usage import UsageFlusher, UsageMeter, flush_counts, pixel_tier, rendition_usage
from kinoray.store.db import Database
from kinoray.store.models import DeliveryUsage
from tests.api_server import eventually
from tests.compat import mux_python_client
from tests.test_playback import packaged_asset
from tests.test_playback_restrictions import publish_video


def test_tiers_follow_muxs_pixel_bounds() -> None:
    assert pixel_tier(1280, 720) == "720p" and pixel_tier(426, 240) == "720p"
    assert pixel_tier(1281, 720) == "1080p" and pixel_tier(1920, 1080) == "1080p"
    assert pixel_tier(1728, 720) == "1080p"  # a wide 720p has 1080p-tier pixels, as Mux counts them
    assert pixel_tier(2560, 1440) == "1440p" and pixel_tier(2048, 2048) == "1440p"
    assert pixel_tier(2560, 1640) == "2160p" and pixel_tier(3840, 2160) == "2160p"


def test_rendition_usage_reads_the_packagers_playlists(media_dir, tmp_path_factory) -> None:
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    master = (media / "master.m3u8").read_text()
    for rung in ("480p", "240p"):
        playlist = (media / rung / "index.m3u8").read_text()
        found = rendition_usage(master, rung, playlist)
        parsed = m3u8.loads(playlist)
        assert found.tier == "720p"
        assert found.seconds == {segment.uri: segment.duration for segment in parsed.segments}
    assert rendition_usage(master, "audio", (media / "audio" / "index.m3u8").read_text()).tier is None
    audio_only = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"mp4a.40.2\"\naudio/index.m3u8\n"
    assert rendition_usage(audio_only, "audio", "#EXTINF:2.000,\nseg_00001.m4s\n").tier == "audio-only"


def test_a_live_playlist_is_read_again_when_it_grew(tmp_path) -> None:
    """A live rung's playlist gains segments: what the meter read first is kept, a refresh sees the new ones."""
    from kinoray.store.objects import ObjectStore

    store = ObjectStore(str(tmp_path / "storage"))
    store.put_bytes(b'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=426x240,CODECS="avc1.64001e"\n'
                    b"240p/index.m3u8\n", "live/s/master.m3u8")
    store.put_bytes(b"#EXTM3U\n#EXTINF:2.000,\nseg_00001.m4s\n", "live/s/240p/index.m3u8")
    meter = UsageMeter()
    assert meter.rendition(store, "live/s", "240p").seconds == {"seg_00001.m4s": 2.0}
    store.put_bytes(b"#EXTM3U\n#EXTINF:2.000,\nseg_00001.m4s\n#EXTINF:1.500,\nseg_00002.m4s\n",
                    "live/s/240p/index.m3u8")
    assert "seg_00002.m4s" not in meter.rendition(store, "live/s", "240p").seconds  # kept for VOD
    assert meter.rendition(store, "live/s", "240p", refresh=True).seconds["seg_00002.m4s"] == 1.5


def _usage(db: Database) -> dict[tuple[str, str], tuple[float, int]]:
    with db.reader() as session:
        return {(row.asset_id, row.tier): (row.delivered_seconds, row.delivered_bytes)
                for row in session.query(DeliveryUsage)}


def test_concurrent_flushes_sum_exactly_and_a_failed_flush_keeps_its_counts(api) -> None:
    """Four writers (own connection pools, as edge processes have) upserting the same rows at once."""
    url = api.settings.database_url or f"sqlite:///{Path(api.settings.data_dir) / 'kinoray.db'}"
    hour = int(time.time()) // 3600 * 3600
    errors: list[BaseException] = []

    def writer() -> None:
        db = Database(url)
        try:
            for _ in range(25):
                flush_counts(db, {("concurrency" + "x" * 21, hour, "720p"): [0.5, 10],
                                  ("concurrency" + "y" * 21, hour, "1080p"): [2.0, 1]})
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            db.dispose()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    usage = _usage(api.platform.db)
    assert usage[("concurrency" + "x" * 21, "720p")] == (50.0, 1000)
    assert usage[("concurrency" + "y" * 21, "1080p")] == (200.0, 100)

    meter = UsageMeter()
    meter.add("kept" + "k" * 28, "720p", 4.0, 100)
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/none", timeout=1)
    flusher = UsageFlusher(meter, down, interval=3600)
    try:
        assert flusher.flush() is False  # the database is unreachable: nothing lost
        meter.add("kept" + "k" * 28, "720p", 1.0, 1)
        flusher.db = api.platform.db
        assert flusher.flush() is True
    finally:
        flusher.close()
        down.dispose()
    assert _usage(api.platform.db)[("kept" + "k" * 28, "720p")] == (5.0, 101)


def test_the_table_takes_only_muxs_tiers(api) -> None:
    import sqlalchemy as sa

    hour = int(time.time()) // 3600 * 3600
    with pytest.raises(sa.exc.IntegrityError):
        flush_counts(api.platform.db, {("tier" + "t" * 28, hour, "4320p"): [1.0, 1]})


@pytest.fixture(scope="module")
def granian(api):
    process, url = api.start_granian_edge(workers=2, usage_flush_seconds=1)
    try:
        yield url
    finally:
        process.stop()


def _fresh(url: str, **kwargs) -> requests.Response:
    with requests.Session() as session:
        return session.get(url, timeout=10, headers={"Connection": "close", **kwargs.pop("headers", {})}, **kwargs)


def test_fetched_segments_are_reported_to_the_sdk(api, granian, media_dir, tmp_path_factory) -> None:
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    asset_id, (playback_id,) = publish_video(api, media, passthrough="usage test")
    started = int(time.time())
    expected_seconds, expected_bytes, served_by = 0.0, 0, set()
    for rung in ("480p", "240p"):
        playlist = m3u8.load(str(media / rung / "index.m3u8"))
        for segment in [*playlist.segments, playlist.segments[0]]:  # every segment, the first one twice
            answer = _fresh(f"{granian}/{playback_id}/{rung}/{segment.uri}")
            assert answer.status_code == 200
            served_by.add(answer.headers["X-Served-By"])
            expected_seconds += segment.duration
            expected_bytes += len(answer.content)
        init = _fresh(f"{granian}/{playback_id}/{rung}/init.mp4")  # bytes, no seconds
        expected_bytes += len(init.content)
    first = m3u8.load(str(media / "480p" / "index.m3u8")).segments[0]
    size = (media / "480p" / first.uri).stat().st_size
    ranged = _fresh(f"{granian}/{playback_id}/480p/{first.uri}", headers={"Range": f"bytes=0-{size // 4 - 1}"})
    assert ranged.status_code == 206
    expected_seconds += first.duration * (size // 4) / size
    expected_bytes += size // 4
    # not counted: a HEAD, a 304, the audio of a video asset, manifests, the MP4
    etag = _fresh(f"{granian}/{playback_id}/480p/{first.uri}", headers={"Range": "bytes=0-0"}).headers["ETag"]
    expected_seconds += first.duration / size
    expected_bytes += 1
    assert requests.head(f"{granian}/{playback_id}/480p/{first.uri}", timeout=10).status_code == 200
    assert _fresh(f"{granian}/{playback_id}/480p/{first.uri}", headers={"If-None-Match": etag}).status_code == 304
    for name in ("audio/seg_00001.m4s", "audio/init.mp4", "480p/index.m3u8", "highest.mp4"):
        assert _fresh(f"{granian}/{playback_id}/{name}").status_code == 200
    assert _fresh(f"{granian}/{playback_id}.m3u8").status_code == 200
    # both worker processes count some of it: the kernel spreads new connections over the listening workers,
    # and a worker still starting on a loaded machine takes none, so fetch on until each has served one
    deadline = time.monotonic() + 60
    while len(served_by) < 2 and time.monotonic() < deadline:
        again = _fresh(f"{granian}/{playback_id}/480p/{first.uri}")
        served_by.add(again.headers["X-Served-By"])
        expected_seconds += first.duration
        expected_bytes += len(again.content)
    assert len(served_by) == 2

    usage_api = mux.DeliveryUsageApi(mux_python_client(api.url, api.auth))
    timeframe = [str(started - 60), str(int(time.time()) + 60)]

    def reported() -> mux.DeliveryReport:
        answer = usage_api.list_delivery_usage(asset_id=asset_id, timeframe=timeframe)
        assert isinstance(answer, mux.ListDeliveryUsageResponse) and answer.total_row_count == 1
        assert answer.timeframe == [int(value) for value in timeframe] and answer.limit == 100
        (row,) = answer.data
        assert row.delivered_seconds == pytest.approx(expected_seconds, abs=1e-5)
        return row

    row = eventually(reported, within=20)  # flushed every second by each worker
    assert isinstance(row, mux.DeliveryReport)
    assert row.delivered_seconds_by_resolution.tier_720p == pytest.approx(expected_seconds, abs=1e-5)
    assert row.delivered_seconds_by_resolution.tier_1080p is None
    assert (row.asset_id, row.asset_state, row.passthrough, row.asset_duration) == (asset_id, "ready", "usage test",
                                                                                    6.0)
    assert (row.asset_resolution_tier, row.asset_video_quality, row.asset_encoding_tier) == ("720p", "plus", "smart")
    raw = api.client.get(f"{api.url}/video/v1/delivery-usage", params={"asset_id": asset_id, "timeframe[]": timeframe},
                         timeout=10).json()
    assert raw["data"][0]["kinoray_delivered_bytes"] == expected_bytes
    assert set(raw["data"][0]["delivered_seconds_by_resolution"]) == {"tier_720p"}  # only tiers with delivery

    everything = usage_api.list_delivery_usage(timeframe=timeframe, limit=100)
    assert asset_id in {report.asset_id for report in everything.data}
    nothing_then = usage_api.list_delivery_usage(asset_id=asset_id, timeframe=[str(started - 7 * 3600),
                                                                                str(started - 3 * 3600)])
    assert nothing_then.data == [] and nothing_then.total_row_count == 0
    assert usage_api.list_delivery_usage(live_stream_id="L" * 32, timeframe=timeframe).data == []
    with pytest.raises(mux.ApiException) as refused:
        usage_api.list_delivery_usage(asset_id=asset_id, live_stream_id="L" * 32)
    assert refused.value.status == 400
    with pytest.raises(mux.ApiException) as refused:
        usage_api.list_delivery_usage(timeframe=[timeframe[1], timeframe[0]])
    assert refused.value.status == 400

    # a deleted asset's delivery stays in the report, with when it went and what it was
    assert api.client.delete(f"{api.url}/video/v1/assets/{asset_id}", timeout=10).status_code == 204
    (gone,) = usage_api.list_delivery_usage(asset_id=asset_id, timeframe=timeframe).data
    assert (gone.asset_state, gone.passthrough, gone.asset_duration) == ("deleted", "usage test", 6.0)
    assert int(gone.deleted_at) >= int(gone.created_at) and gone.delivered_seconds == row.delivered_seconds
