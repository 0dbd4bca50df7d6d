"""Pure media functions over PyAV: probe, keyframe index, chunk plan, chunk transcode, audio, packaging.

No Ray, HTTP or database here; typed dataclasses in and out.
"""

from kinoray.media.audio import AudioResult, encode_audio
from kinoray.media.keyframes import KeyframeIndex, index_keyframes
from kinoray.media.ladder import DEFAULT_LADDER, Rendition, build_ladder
from kinoray.media.pipeline import TranscodeOptions, TranscodeResult, sequential_executor, transcode_file
from kinoray.media.plan import Chunk, ChunkPlan, plan_chunks
from kinoray.media.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo, probe
from kinoray.media.transcode import ChunkResult, EncodeOptions, transcode_chunk

__all__ = [
    "DEFAULT_LADDER",
    "AudioResult",
    "AudioStreamInfo",
    "Chunk",
    "ChunkPlan",
    "ChunkResult",
    "EncodeOptions",
    "KeyframeIndex",
    "MediaInfo",
    "Rendition",
    "TranscodeOptions",
    "TranscodeResult",
    "VideoStreamInfo",
    "build_ladder",
    "encode_audio",
    "index_keyframes",
    "plan_chunks",
    "probe",
    "sequential_executor",
    "transcode_chunk",
    "transcode_file",
]
