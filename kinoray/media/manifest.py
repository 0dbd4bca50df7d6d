"""HLS (RFC 8216, version 7, fMP4) and DASH (static, SegmentTemplate + SegmentTimeline) manifests over one
set of CMAF files. The MP4 boxes are FFmpeg's; these are the text/XML indexes that point at them."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Collection
from fractions import Fraction

from kinoray.media.package import FIRST_SEGMENT_NUMBER, SEGMENT_TEMPLATE, Track

__all__ = ["dash_mpd", "hls_master_playlist", "hls_media_playlist", "iso_duration"]

AUDIO_GROUP = "audio"


def _seconds(value: Fraction) -> str:
    return f"{float(value):.6f}"


def hls_media_playlist(track: Track, discontinuities: Collection[int] = ()) -> str:
    """A VOD media playlist; EXT-X-TARGETDURATION is the longest segment rounded up. ``discontinuities``: the
    positions of segments that start a new encoder run (a live recording's reconnect or failover), each after
    ``EXT-X-DISCONTINUITY`` and the ``EXT-X-MAP`` again."""
    durations = [s.seconds(track.timescale) for s in track.segments]
    target = max(1, math.ceil(max(durations) - Fraction(1, 1000)))
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{track.init_uri}"',
    ]
    for position, (segment, duration) in enumerate(zip(track.segments, durations, strict=True)):
        if position and position in discontinuities:
            lines += ["#EXT-X-DISCONTINUITY", f'#EXT-X-MAP:URI="{track.init_uri}"']
        lines += [f"#EXTINF:{_seconds(duration)},", segment.uri]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _frame_rate(rate: Fraction | None) -> str:
    return f"{float(rate):.3f}" if rate else ""


def hls_master_playlist(video: list[Track], audio: Track | None) -> str:
    """Master playlist: one variant per video rendition (largest first), audio as an alternate rendition.

    BANDWIDTH is the peak segment bitrate of video plus audio and AVERAGE-BANDWIDTH their averages, both
    measured from the written segment files; CODECS come from the bitstream configuration.
    """
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None:
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",NAME="Default",DEFAULT=YES,AUTOSELECT=YES,'
            f'CHANNELS="{audio.channels}",URI="{audio.name}/index.m3u8"'
        )
    audio_peak = audio.peak_bandwidth if audio else 0
    audio_average = audio.average_bandwidth if audio else 0
    for track in video:
        codecs = track.codec_string + (f",{audio.codec_string}" if audio else "")
        attributes = [
            f"BANDWIDTH={track.peak_bandwidth + audio_peak}",
            f"AVERAGE-BANDWIDTH={track.average_bandwidth + audio_average}",
            f'CODECS="{codecs}"',
            f"RESOLUTION={track.width}x{track.height}",
            f"FRAME-RATE={_frame_rate(track.frame_rate)}",
        ]
        if audio is not None:
            attributes.append(f'AUDIO="{AUDIO_GROUP}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), f"{track.name}/index.m3u8"]
    if not video and audio is not None:
        lines += [
            f'#EXT-X-STREAM-INF:BANDWIDTH={audio_peak},AVERAGE-BANDWIDTH={audio_average},CODECS="{audio.codec_string}"',
            f"{audio.name}/index.m3u8",
        ]
    return "\n".join(lines) + "\n"


def iso_duration(seconds: Fraction) -> str:
    return f"PT{float(seconds):.3f}S"


def _segment_timeline(parent: ET.Element, track: Track) -> None:
    timeline = ET.SubElement(parent, "SegmentTimeline")
    runs: list[list[int]] = []  # [t, d, repeat]
    expected_start = None
    for segment in track.segments:
        if runs and segment.duration == runs[-1][1] and segment.start == expected_start:
            runs[-1][2] += 1
        else:
            runs.append([segment.start, segment.duration, 0])
        expected_start = segment.start + segment.duration
    for position, (start, duration, repeat) in enumerate(runs):
        attributes = {"t": str(start), "d": str(duration)}
        if repeat:
            attributes["r"] = str(repeat)
        if position and start == runs[position - 1][0] + runs[position - 1][1] * (runs[position - 1][2] + 1):
            del attributes["t"]
        ET.SubElement(timeline, "S", attributes)


def _representation(adaptation: ET.Element, track: Track) -> None:
    attributes = {"id": track.name, "codecs": track.codec_string, "bandwidth": str(track.peak_bandwidth)}
    if track.kind == "video":
        attributes.update(width=str(track.width), height=str(track.height), sar="1:1")
        if track.frame_rate:
            attributes["frameRate"] = str(track.frame_rate)
    else:
        attributes["audioSamplingRate"] = str(track.sample_rate)
    representation = ET.SubElement(adaptation, "Representation", attributes)
    if track.kind == "audio":
        ET.SubElement(representation, "AudioChannelConfiguration", {
            "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011", "value": str(track.channels)})
    template = ET.SubElement(representation, "SegmentTemplate", {
        "timescale": str(track.timescale),
        "initialization": f"{track.name}/{track.init_uri}",
        "media": f"{track.name}/{SEGMENT_TEMPLATE}",
        "startNumber": str(FIRST_SEGMENT_NUMBER),
    })
    _segment_timeline(template, track)


def dash_mpd(video: list[Track], audio: Track | None, duration: Fraction, segment_seconds: Fraction) -> str:
    """A static MPD (isoff-live profile) whose SegmentTemplates name the same files as the HLS playlists."""
    ET.register_namespace("", "urn:mpeg:dash:schema:mpd:2011")
    mpd = ET.Element("MPD", {
        "xmlns": "urn:mpeg:dash:schema:mpd:2011",
        "profiles": "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019",
        "type": "static",
        "mediaPresentationDuration": iso_duration(duration),
        "minBufferTime": iso_duration(segment_seconds),
    })
    period = ET.SubElement(mpd, "Period", {"id": "0", "start": "PT0S"})
    if video:
        largest = video[0]
        adaptation = ET.SubElement(period, "AdaptationSet", {
            "id": "0", "contentType": "video", "mimeType": "video/mp4", "segmentAlignment": "true",
            "startWithSAP": "1", "maxWidth": str(max(t.width for t in video)),
            "maxHeight": str(max(t.height for t in video)),
            **({"maxFrameRate": str(largest.frame_rate)} if largest.frame_rate else {}),
        })
        for track in video:
            _representation(adaptation, track)
    if audio is not None:
        adaptation = ET.SubElement(period, "AdaptationSet", {
            "id": "1", "contentType": "audio", "mimeType": "audio/mp4", "segmentAlignment": "true",
            "startWithSAP": "1", "lang": "und",
        })
        _representation(adaptation, audio)
    ET.indent(mpd)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(mpd, encoding="unicode") + "\n"
