"""Chunk plan and ladder rules on described (not decoded) inputs; the engine tests check them on real files."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import pytest

from kinoray.errors import InvalidMediaError
from kinoray.media import KeyframeIndex, MediaInfo, VideoStreamInfo, build_ladder, plan_chunks

VIDEO = VideoStreamInfo(
    index=0, codec="h264", profile="High", width=1920, height=1080, display_width=1920, display_height=1080,
    rotation=0, sample_aspect_ratio=Fraction(1), pix_fmt="yuv420p", bit_depth=8, color_primaries=None,
    color_trc=None, colorspace=None, color_range=None, average_rate=Fraction(30), real_rate=Fraction(30),
    time_base=Fraction(1, 90000), start_pts=0, duration_seconds=None, frame_count=None,
)


def _index(pts: list[int], keyframes: set[int], time_base: Fraction = Fraction(1, 90000)) -> KeyframeIndex:
    count = len(pts)
    return KeyframeIndex(
        stream_index=0, time_base=time_base, pts=tuple(pts), dts=tuple(pts), keyframe=tuple(p in keyframes for p in pts),
        position=(None,) * count, size=(1,) * count, duration=(0,) * count,
        random_access_pts=tuple(sorted(keyframes)),
    )


def _info(video: VideoStreamInfo = VIDEO) -> MediaInfo:
    return MediaInfo(path="x.mp4", container="mp4", size_bytes=1, duration_seconds=None, bit_rate=None,
                     stream_count=1, video=video, audio=None)


def test_cfr_maps_one_to_one_and_segments_never_exceed_target() -> None:
    pts = [i * 3000 for i in range(900)]  # 30 s at 30 fps
    plan = plan_chunks(_info(), _index(pts, {p for p in pts if p % (90000 * 10) == 0}), segment_seconds=4,
                       chunk_seconds=20)
    assert plan.is_cfr and plan.frame_rate == 30 and plan.frame_count == 900
    assert plan.segment_frames == 120 and plan.frame_ticks == 3000 and plan.timescale == 90000
    assert [c.frame_count for c in plan.chunks] == [600, 300]
    assert all(d <= 4 for d in plan.segment_durations())
    assert plan.chunks[1].decode_from_pts == 10 * 90000 * 2  # keyframe at 20 s is the chunk start
    assert [plan.slot_of(p) for p in pts[:5]] == [0, 1, 2, 3, 4]


def test_ntsc_rate_floors_segment_frames() -> None:
    video = replace(VIDEO, average_rate=Fraction(30000, 1001), real_rate=Fraction(30000, 1001))
    pts = [i * 3003 for i in range(600)]
    plan = plan_chunks(_info(video), _index(pts, {0}), segment_seconds=4)
    assert plan.segment_frames == 119 and plan.frame_ticks == 3003
    assert max(plan.segment_durations()) == Fraction(119 * 1001, 30000) < 4


def test_chunk_decodes_from_random_access_point_before_start() -> None:
    pts = [i * 3000 for i in range(900)]
    plan = plan_chunks(_info(), _index(pts, {0, 17 * 3000 * 30}), segment_seconds=2, chunk_seconds=6)
    second = plan.chunks[1]
    assert second.start_frame == 180
    assert second.decode_from_pts == 0  # the only earlier random-access point
    third = plan.chunks[2]
    assert third.decode_from_pts == 0
    assert plan.chunks[3].decode_from_pts == 17 * 3000 * 30


def test_vfr_is_resampled_at_average_rate() -> None:
    pts, t = [], 0
    for i in range(200):
        pts.append(t)
        t += 1000 if i % 2 else 2000  # 1/90 s and 2/90 s alternating at 1/90000: average 60 fps
    pts = [p * 1 for p in pts]
    video = replace(VIDEO, average_rate=None, real_rate=Fraction(90))
    plan = plan_chunks(_info(video), _index(pts, {0}, Fraction(1, 90000)), segment_seconds=1, max_frame_rate=120)
    assert not plan.is_cfr
    average = Fraction(199 * 90000, pts[-1])
    assert abs(plan.frame_rate - average) / average < Fraction(1, 200)  # snapped to 59.94
    assert plan.frame_rate == Fraction(60000, 1001)
    assert "VFR" in plan.cfr_rule


def test_high_rates_are_divided_under_the_cap() -> None:
    video = replace(VIDEO, average_rate=Fraction(120), real_rate=Fraction(120))
    pts = [i * 750 for i in range(240)]
    plan = plan_chunks(_info(video), _index(pts, {0}), max_frame_rate=60)
    assert plan.frame_rate == 60 and plan.frame_count == 120 and not plan.is_cfr


def test_frames_before_first_random_access_point_are_excluded() -> None:
    pts = [i * 3000 for i in range(90)]
    plan = plan_chunks(_info(), _index(pts, {30 * 3000}))
    assert plan.origin_pts == 90000 and plan.frame_count == 60


def test_plan_rejects_audio_only() -> None:
    with pytest.raises(InvalidMediaError):
        plan_chunks(replace(_info(), video=None), _index([0], {0}))


@pytest.mark.parametrize(
    ("size", "rotation", "expected"),
    [
        ((1920, 1080), 0, [(1920, 1080), (1280, 720), (854, 480), (640, 360), (426, 240)]),
        ((1280, 720), 0, [(1280, 720), (854, 480), (640, 360), (426, 240)]),
        ((1080, 1920), 0, [(1080, 1920), (720, 1280), (480, 854), (360, 640), (240, 426)]),
        ((1920, 1080), 90, [(1080, 1920), (720, 1280), (480, 854), (360, 640), (240, 426)]),
        ((321, 181), 0, [(320, 180)]),
        ((1280, 544), 0, [(1130, 480), (848, 360), (564, 240)]),
        ((1280, 640), 0, [(1280, 640), (960, 480), (720, 360), (480, 240)]),
    ],
)
def test_ladder_never_upscales_and_keeps_aspect(size: tuple[int, int], rotation: int, expected: list) -> None:
    width, height = size
    display = (height, width) if rotation in (90, 270) else (width, height)
    video = replace(VIDEO, width=width, height=height, rotation=rotation, display_width=display[0],
                    display_height=display[1])
    ladder = build_ladder(video)
    assert [(r.width, r.height) for r in ladder] == expected
    for rendition in ladder:
        assert rendition.width % 2 == 0 and rendition.height % 2 == 0
        assert rendition.width <= max(display) and rendition.height <= max(display)
        assert abs(rendition.width / rendition.height - display[0] / display[1]) < 0.02


def test_ladder_bitrates_scale_by_codec() -> None:
    h264 = build_ladder(VIDEO, (1080,), "h264")[0]
    av1 = build_ladder(VIDEO, (1080,), "av1")[0]
    assert h264.max_bitrate == 5_000_000 and av1.max_bitrate < h264.max_bitrate
    assert h264.buffer_size == 2 * h264.max_bitrate


@pytest.mark.parametrize(("seconds", "workers", "expected"), [
    (60, None, [600, 600, 600]),  # 20 s chunks, no hint
    (60, 2, [360, 480, 480, 480]),  # 4 chunks of 4 segments (one of 3: first, as its cuts decode least) fill 2
    (60, 3, [600, 600, 600]),  # already a multiple
    (40, 2, [600, 600]),
    (8, 4, [240]),  # fewer segments than workers: nothing to balance
])
def test_chunk_count_fills_the_workers(seconds: int, workers: int | None, expected: list[int]) -> None:
    pts = [i * 3000 for i in range(seconds * 30)]
    plan = plan_chunks(_info(), _index(pts, {0}), segment_seconds=4, chunk_seconds=20, parallelism=workers)
    assert [c.frame_count for c in plan.chunks] == expected
    assert all(c.start_frame % plan.segment_frames == 0 for c in plan.chunks)


def test_short_chunk_goes_where_cuts_follow_keyframes() -> None:
    """60 s at 30 fps with a keyframe every 250 frames, 4 s segments on 2 workers: 4 chunks, one of them a
    segment short. Cutting at 360/840/1320 (110, 90, 70 frames after keyframes 250/750/1250) decodes 270 pre-roll
    frames; the plain order (short chunk last: 480/960/1440) would decode 630."""
    pts = [i * 3000 for i in range(60 * 30)]
    plan = plan_chunks(_info(), _index(pts, {p for i, p in enumerate(pts) if i % 250 == 0}),
                       segment_seconds=4, chunk_seconds=20, parallelism=2)
    assert [c.frame_count for c in plan.chunks] == [360, 480, 480, 480]
    assert [c.decode_from_pts // 3000 for c in plan.chunks] == [0, 250, 750, 1250]
    preroll = sum(c.first_source_pts // 3000 - c.decode_from_pts // 3000 for c in plan.chunks)
    assert preroll == 270


def test_short_chunk_stays_last_when_every_cut_costs_the_same() -> None:
    pts = [i * 3000 for i in range(60 * 30)]
    plan = plan_chunks(_info(), _index(pts, set(pts)), segment_seconds=4, chunk_seconds=20, parallelism=2)
    assert [c.frame_count for c in plan.chunks] == [480, 480, 480, 360]
