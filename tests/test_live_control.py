"""The live stream control plane without Ray or HTTP (:mod:`kinoray.control.live`): the ingest session's state
machine driven as the live runtime drives it, with a fake clock (every call takes ``now``), on SQLite and
PostgreSQL. Recordings are real FLV files made by Debian's ``ffmpeg``; the joined input is checked with
Debian's ``ffprobe``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kinoray.control.live import (
    LiveStreamCreate,
    authorize_publish,
    complete_live_stream,
    create_live_stream,
    delete_live_stream,
    expire_live,
    publish_active,
    publish_ended,
    publish_should_stop,
    reset_stream_key,
    set_live_stream_enabled,
)
from kinoray.control.platform import Platform
from kinoray.control.playback import load_record
from kinoray.errors import InvalidMediaError
from kinoray.media.flv_join import join_flv
from kinoray.settings import Settings
from kinoray.store.models import Asset, Event, Job, LiveStream
from tests.oracles import ffprobe_json

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def flv_parts(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Two 1-second FLV recordings (10 fps H.264 + AAC), as two publisher connections would write them."""
    directory = tmp_path_factory.mktemp("live-flv")
    parts = []
    for index, pattern in enumerate(("testsrc2", "smptebars")):
        path = directory / f"part{index}.flv"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"{pattern}=size=160x120:rate=10",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "1",
                        "-c:v", "libx264", "-g", "5", "-c:a", "aac", "-f", "flv", str(path)], check=True, timeout=60)
        parts.append(path.read_bytes())
    return parts


@pytest.fixture(scope="module")
def platform(api_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    directory = tmp_path_factory.mktemp("live-control")
    platform = Platform.from_settings(Settings(data_dir=directory, database_url=api_backend.new_url(),
                                               environment="test"))
    try:
        yield platform
    finally:
        platform.close()


def new_stream(platform: Platform, **fields: Any) -> tuple[str, str]:
    with platform.db.session() as session:
        stream, key = create_live_stream(session, LiveStreamCreate(playback_policies=["public"], **fields))
        return stream.id, key


def stream_row(platform: Platform, live_stream_id: str) -> LiveStream:
    with platform.db.reader() as session:
        stream = session.get(LiveStream, live_stream_id)
        assert stream is not None
        session.expunge(stream)
        return stream


def events_of(platform: Platform, object_id: str) -> list[str]:
    """The object's event types in order; ``recording`` and ``active`` come from one transaction (possibly the
    same microsecond), so they are listed as one ``recording+active``."""
    with platform.db.reader() as session:
        types = list(session.scalars(sa.select(Event.type).where(Event.object_id == object_id)
                                     .order_by(Event.created_at, Event.id)))
    folded: list[str] = []
    for event_type in types:
        pair = {"video.live_stream.recording", "video.live_stream.active"}
        if event_type in pair and folded and folded[-1] in pair and folded[-1] != event_type:
            folded[-1] = "recording+active"
        else:
            folded.append(event_type)
    return folded


def asset_row(platform: Platform, asset_id: str) -> Asset | None:
    with platform.db.reader() as session:
        asset = session.get(Asset, asset_id)
        if asset is not None:
            session.expunge(asset)
        return asset


def jobs_of(platform: Platform, asset_id: str) -> list[Job]:
    with platform.db.reader() as session:
        jobs = list(session.scalars(sa.select(Job).where(Job.asset_id == asset_id)))
        session.expunge_all()
        return jobs


def test_a_reconnect_within_the_window_continues_the_recording_and_the_end_queues_its_transcode(
        platform: Platform, flv_parts: list[bytes], tmp_path: Path) -> None:
    stream_id, key = new_stream(platform, reconnect_window=30)
    first = authorize_publish(platform, key, now=at(0))
    assert first is not None and not first.continued and first.part == 0
    assert first.source_key == f"assets/{first.asset_id}/input.part-0000"
    assert (first.live_stream_id, first.latency_mode, first.reconnect_window) == (stream_id, "standard", 30)
    assert authorize_publish(platform, key, now=at(1)) is None, "one ingest per stream"
    recording = asset_row(platform, first.asset_id)
    assert recording is not None and recording.live_stream_id == stream_id and recording.progress_state == "live"
    assert jobs_of(platform, first.asset_id) == [], "no transcode while the broadcast runs"

    platform.store.put_bytes(flv_parts[0], first.source_key)
    assert publish_active(platform, stream_id, now=at(2))
    assert stream_row(platform, stream_id).status.value == "active"
    assert publish_ended(platform, stream_id, "connection reset", now=at(10))
    assert stream_row(platform, stream_id).session_state == "disconnected"
    assert expire_live(platform, now=at(39)) == 0, "the window (30 s) is still open"
    # the reconciler leaves a live recording (preparing, no job) alone
    from kinoray.control.jobs import JobLifecycle
    JobLifecycle(platform.db, platform.settings).reconcile()
    assert jobs_of(platform, first.asset_id) == []

    second = authorize_publish(platform, key, now=at(39))
    assert second is not None and second.continued and second.asset_id == first.asset_id and second.part == 1
    platform.store.put_bytes(flv_parts[1], second.source_key)
    assert publish_active(platform, stream_id, now=at(40))
    assert publish_ended(platform, stream_id, None, now=at(50))
    assert expire_live(platform, now=at(79)) == 0
    assert expire_live(platform, now=at(80)) == 1

    stream = stream_row(platform, stream_id)
    assert (stream.status.value, stream.session_state, stream.active_asset_id) == ("idle", "none", None)
    assert stream.recent_asset_ids == [first.asset_id]
    assert events_of(platform, stream_id) == [
        "video.live_stream.created", "video.live_stream.connected", "recording+active",
        "video.live_stream.disconnected", "video.live_stream.connected", "recording+active",
        "video.live_stream.disconnected", "video.live_stream.idle"]
    [job] = jobs_of(platform, first.asset_id)
    assert job.state == "queued" and job.source == f"assets/{first.asset_id}/input"
    recording = asset_row(platform, first.asset_id)
    assert recording is not None and recording.progress_state == "transcoding"
    assert not any(".part-" in key for key in platform.store.list(f"assets/{first.asset_id}"))

    joined = tmp_path / "input.flv"
    platform.store.get_file(job.source, joined)
    probe = ffprobe_json(joined, "-count_frames", "-show_streams", "-show_format")
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert int(video["nb_read_frames"]) == 20, "both connections' frames, in one file"
    assert 1.9 <= float(probe["format"]["duration"]) <= 2.3
    packets = ffprobe_json(joined, "-select_streams", "v", "-show_entries", "packet=dts")["packets"]
    dts = [int(packet["dts"]) for packet in packets]
    assert dts == sorted(dts) and len(set(dts)) == len(dts), "time never goes backwards across the reconnect"


def test_a_reconnect_after_the_window_starts_a_new_recording(platform: Platform, flv_parts: list[bytes]) -> None:
    stream_id, key = new_stream(platform, reconnect_window=5)
    first = authorize_publish(platform, key, now=at(0))
    assert first is not None
    platform.store.put_bytes(flv_parts[0], first.source_key)
    publish_active(platform, stream_id, now=at(1))
    publish_ended(platform, stream_id, now=at(2))
    # no sweep ran: the returning publisher itself finds the window over
    second = authorize_publish(platform, key, now=at(8))
    assert second is not None and not second.continued and second.asset_id != first.asset_id
    assert second.source_key.endswith("input.part-0000")
    assert [job.state for job in jobs_of(platform, first.asset_id)] == ["queued"]
    assert platform.store.exists(f"assets/{first.asset_id}/input")
    assert stream_row(platform, stream_id).recent_asset_ids == [first.asset_id]


def test_reduced_latency_has_no_window_and_a_session_without_media_leaves_no_asset(platform: Platform) -> None:
    stream_id, key = new_stream(platform, latency_mode="reduced")
    assert stream_row(platform, stream_id).reconnect_window == 0
    publish = authorize_publish(platform, key, now=at(0))
    assert publish is not None and publish.reconnect_window == 0
    assert publish_ended(platform, stream_id, "handshake only", now=at(1))
    stream = stream_row(platform, stream_id)
    assert (stream.session_state, stream.status.value, stream.recent_asset_ids) == ("none", "idle", [])
    assert asset_row(platform, publish.asset_id) is None
    assert events_of(platform, publish.asset_id) == ["video.asset.created", "video.asset.deleted"]


def test_wrong_disabled_reset_and_deleted_keys_are_refused(platform: Platform) -> None:
    stream_id, key = new_stream(platform)
    assert authorize_publish(platform, "") is None
    assert authorize_publish(platform, key + "x") is None
    assert authorize_publish(platform, "k" * 10_000) is None
    set_live_stream_enabled(platform, stream_id, False)
    assert stream_row(platform, stream_id).status.value == "disabled"
    assert authorize_publish(platform, key, now=at(0)) is None
    set_live_stream_enabled(platform, stream_id, True)
    with platform.db.session() as session:
        _, new_key = reset_stream_key(session, stream_id)
    assert new_key != key
    assert authorize_publish(platform, key, now=at(0)) is None, "the old key stops working at once"
    publish = authorize_publish(platform, new_key, now=at(0))
    assert publish is not None
    assert publish_should_stop(platform, stream_id, publish.asset_id, now=at(1)) is None
    delete_live_stream(platform, stream_id)
    assert publish_should_stop(platform, stream_id, publish.asset_id, now=at(2)) == "deleted"
    assert authorize_publish(platform, new_key, now=at(3)) is None
    assert events_of(platform, stream_id)[-1] == "video.live_stream.deleted"
    assert asset_row(platform, publish.asset_id) is None, "nothing was written: no recording"


def test_complete_ends_the_session_without_a_window(platform: Platform, flv_parts: list[bytes]) -> None:
    stream_id, key = new_stream(platform, reconnect_window=600)
    publish = authorize_publish(platform, key, now=at(0))
    assert publish is not None
    platform.store.put_bytes(flv_parts[0], publish.source_key)
    publish_active(platform, stream_id, now=at(1))
    complete_live_stream(platform, stream_id, now=at(2))
    assert publish_should_stop(platform, stream_id, publish.asset_id, now=at(2)) == "completed"
    assert stream_row(platform, stream_id).session_state == "recording", "the publisher is stopped by the runtime"
    publish_ended(platform, stream_id, now=at(3))
    stream = stream_row(platform, stream_id)
    assert (stream.session_state, stream.status.value, stream.recent_asset_ids) == ("none", "idle",
                                                                                   [publish.asset_id])
    assert [job.state for job in jobs_of(platform, publish.asset_id)] == ["queued"]
    # a disconnected session completed is ended at once
    again = authorize_publish(platform, key, now=at(10))
    assert again is not None and not again.continued
    platform.store.put_bytes(flv_parts[1], again.source_key)
    publish_ended(platform, stream_id, now=at(11))
    complete_live_stream(platform, stream_id, now=at(12))
    assert stream_row(platform, stream_id).recent_asset_ids == [publish.asset_id, again.asset_id]


def test_max_continuous_duration_and_a_lost_runtime(platform: Platform, flv_parts: list[bytes]) -> None:
    stream_id, key = new_stream(platform, max_continuous_duration=60)
    publish = authorize_publish(platform, key, now=at(0))
    assert publish is not None and publish.max_continuous_duration == 60 and publish.started_at == at(0)
    platform.store.put_bytes(flv_parts[0], publish.source_key)
    publish_active(platform, stream_id, now=at(1))
    assert publish_should_stop(platform, stream_id, publish.asset_id, now=at(59)) is None
    assert publish_should_stop(platform, stream_id, publish.asset_id, now=at(60)) == "max_continuous_duration"
    assert expire_live(platform, now=at(61)) == 0, "the runtime gets time to stop it"
    assert expire_live(platform, now=at(60 + 301)) == 1, "its runtime is gone: the session is ended"
    assert stream_row(platform, stream_id).session_state == "none"
    assert [job.state for job in jobs_of(platform, publish.asset_id)] == ["queued"]


def test_a_live_playback_id_resolves_to_its_stream(platform: Platform) -> None:
    stream_id, key = new_stream(platform)
    with platform.db.reader() as session:
        playback_id = session.get_one(LiveStream, stream_id).playback_ids[0].id
        record = load_record(session, playback_id)
    assert record.live_stream_id == stream_id and record.status.value == "preparing" and record.asset_id == ""
    publish = authorize_publish(platform, key, now=at(0))
    assert publish is not None
    publish_active(platform, stream_id, now=at(1))
    with platform.db.reader() as session:
        record = load_record(session, playback_id)
    assert (record.status.value, record.asset_id, record.storage_prefix) == ("ready", publish.asset_id,
                                                                            publish.live_prefix)


def test_join_flv_refuses_what_is_not_flv_and_keeps_a_torn_part_s_whole_tags(flv_parts: list[bytes]) -> None:
    import io

    with pytest.raises(InvalidMediaError):
        b"".join(join_flv([io.BytesIO(b"not an flv at all")]))
    whole = b"".join(join_flv([io.BytesIO(flv_parts[0])]))
    torn = b"".join(join_flv([io.BytesIO(flv_parts[0][:-7])]))
    assert whole.startswith(torn) and len(whole) - 7 > len(torn) > 13, "the torn last tag is left out"
    assert b"onMetaData" in flv_parts[0] and b"onMetaData" not in whole, "one part's duration is not kept"


def test_a_recording_whose_finishing_was_interrupted_is_finished_by_the_sweep(
        platform: Platform, flv_parts: list[bytes]) -> None:
    from kinoray.store.models import utcnow

    stream_id, key = new_stream(platform)
    publish = authorize_publish(platform, key, now=at(0))
    assert publish is not None
    platform.store.put_bytes(flv_parts[0], publish.source_key)
    with platform.db.session() as session:  # the session ended, then the process died before the join
        stream = session.get_one(LiveStream, stream_id)
        stream.session_state, stream.active_asset_id, stream.session_started_at = "none", None, None
    # the recording's row was written at the wall clock's time, so these sweeps run on it (not on T0, as the
    # other tests'); they may end those tests' streams, left running at T0, too: only this recording is judged
    soon = utcnow() + timedelta(minutes=1)
    expire_live(platform, now=soon)
    assert jobs_of(platform, publish.asset_id) == [], "within the grace"
    later = utcnow() + timedelta(minutes=11)
    expire_live(platform, now=later)
    [job] = jobs_of(platform, publish.asset_id)
    assert job.state == "queued" and platform.store.exists(job.source)
    expire_live(platform, now=later + timedelta(minutes=11))
    assert len(jobs_of(platform, publish.asset_id)) == 1, "finished once"
