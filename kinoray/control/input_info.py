"""Mux's input info (``GET /video/v1/assets/{id}/input-info``): what an asset's stored source holds — its
container and its video and audio tracks — read from the stored bytes with PyAV (:func:`kinoray.media.probe`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from kinoray.control.assets import job_source
from kinoray.errors import AssetNotReadyError, MediaError, NotFoundError
from kinoray.media.probe import probe
from kinoray.settings import InputLimits
from kinoray.store.models import Asset, AssetStatus
from kinoray.store.objects import ObjectStore

__all__ = ["InputFile", "InputInfo", "InputSettingsView", "InputTrack", "input_info"]


class InputTrack(BaseModel):
    """One track of the source, with Mux's field names (video: size and rate; audio: rate and channels)."""

    type: Literal["video", "audio"]
    duration: float | None = None
    encoding: str
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


class InputFile(BaseModel):
    container_format: str | None = Field(default=None, description="None when the stored bytes are unreadable")
    tracks: list[InputTrack] = Field(default_factory=list)


class InputSettingsView(BaseModel):
    url: str | None = Field(default=None, description="the input URL (absent for a direct upload)")


class InputInfo(BaseModel):
    settings: InputSettingsView
    file: InputFile


def _seconds(value: object) -> float | None:
    return round(float(value), 6) if value is not None else None  # type: ignore[arg-type]


def input_info(store: ObjectStore, asset: Asset, limits: InputLimits) -> list[InputInfo]:
    """The asset's one input as Mux describes it.

    Raises:
        AssetNotReadyError: the source is not stored yet (it is still being fetched or uploaded).
        NotFoundError: the source was never stored (a fetch that failed).
    """
    key, _ = job_source(asset)  # a clip's input is its source asset's stored input
    if not store.exists(key):
        if asset.status == AssetStatus.PREPARING:
            raise AssetNotReadyError("the asset's input is not stored yet")
        raise NotFoundError("this asset has no stored input")
    try:
        media = probe(store.url_of(key), limits)
    except MediaError:  # stored, but not media kinoray can read (the asset errored on it)
        media = None
    tracks: list[InputTrack] = []
    if media is not None and media.video is not None:
        video = media.video
        rate = video.average_rate or video.real_rate
        tracks.append(InputTrack(type="video", duration=_seconds(video.duration_seconds), encoding=video.codec,
                                 width=video.display_width, height=video.display_height,
                                 frame_rate=round(float(rate), 3) if rate else None))
    if media is not None and media.audio is not None:
        audio = media.audio
        tracks.append(InputTrack(type="audio", duration=_seconds(audio.duration_seconds), encoding=audio.codec,
                                 sample_rate=audio.sample_rate, channels=audio.channels))
    file = InputFile(container_format=media.container if media is not None else None, tracks=tracks)
    return [InputInfo(settings=InputSettingsView(url=asset.input_url), file=file)]
