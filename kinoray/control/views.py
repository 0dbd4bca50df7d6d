"""The API's resources as typed view models: one per resource, used both as the route's ``response_model``
(inside the ``{"data": ...}`` envelope) and as a webhook event's ``data``, so a dropped or mistyped field fails
validation here, in the OpenAPI document (schemathesis) and in Mux's SDK models alike.

Field names, enums and which fields are always present follow Mux's API (mux-python's models, @mux/mux-node's
types: ``tests/test_views.py`` checks both); kinoray's own values are in fields named for kinoray
(``kinoray_*``, ``video_codec``, ``encoder_backend``). A field whose value is ``None`` is left out of the JSON,
as Mux leaves out what an object does not have (:class:`View`). Pydantic only: no HTTP framework, no database.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

__all__ = [
    "AccessTokenView",
    "AdvancedPlaybackPolicyView",
    "AssetErrorsView",
    "AssetMetaView",
    "AssetProgressView",
    "AssetView",
    "EventEnvelope",
    "EventEnvironment",
    "EventObject",
    "EnvironmentView",
    "LiveStreamMetaView",
    "LiveStreamView",
    "MasterView",
    "NewAccessTokenView",
    "NewAssetSettingsView",
    "NewEnvironmentView",
    "NewSigningKeyView",
    "PlaybackIdTargetView",
    "PlaybackIdView",
    "PlaybackObject",
    "SimulcastTargetView",
    "SigningKeyView",
    "StaticRenditionEventData",
    "StaticRenditionRequestView",
    "StaticRenditionView",
    "StaticRenditionsView",
    "TrackEventData",
    "TrackView",
    "UploadErrorView",
    "UploadView",
    "View",
    "WebhookDeliveryView",
    "WebhookEndpointView",
    "WebhookView",
]

PlaybackPolicy = Literal["public", "signed", "drm"]
ResolutionTier = Literal["audio-only", "720p", "1080p", "1440p", "2160p"]
StaticResolution = Literal["highest", "audio-only", "2160p", "1440p", "1080p", "720p", "540p", "480p", "360p",
                           "270p"]
Mp4Support = Literal["none", "standard", "capped-1080p", "audio-only", "audio-only,capped-1080p"]


class View(BaseModel):
    """A resource as the API answers it: unknown fields are an error where the view is built, and a field whose
    value is ``None`` is left out when serialized (in answers and in webhook bodies alike), unless the class
    sets :attr:`omit_none` false (kinoray's own resources, which show every field)."""

    model_config = ConfigDict(extra="forbid")
    #: Leave fields whose value is ``None`` out of the JSON (Mux's resources); false: show them as ``null``.
    omit_none: ClassVar[bool] = True

    # No return annotation, on purpose: pydantic then documents the serialized view with the view's own schema
    # (an annotated ``dict[str, Any]`` would turn every view into a free-form object in the OpenAPI document).
    @model_serializer(mode="wrap")
    def _without_none(self, handler: SerializerFunctionWrapHandler):
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None} if self.omit_none else data

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict the API answers and a webhook carries."""
        return self.model_dump(mode="json")


# --- playback ids and tracks ---------------------------------------------------------------------------------


class PlaybackIdView(View):
    """Mux's ``PlaybackID`` (of an asset or a live stream)."""

    id: str
    policy: PlaybackPolicy


class PlaybackObject(View):
    type: Literal["asset", "live_stream"]
    id: str


class PlaybackIdTargetView(PlaybackIdView):
    """``GET /video/v1/playback-ids/{id}``: the playback id and what it plays."""

    object: PlaybackObject


class TrackView(View):
    """Mux's ``Track``: the asset's video and audio (as encoded) and its text tracks (added through the API)."""

    id: str
    type: Literal["video", "audio", "text"]
    status: Literal["preparing", "ready", "errored", "deleted"] = "ready"
    duration: float | None = None
    max_width: int | None = None
    max_height: int | None = None
    max_frame_rate: float | None = None
    max_channels: int | None = None
    max_channel_layout: str | None = None
    text_type: Literal["subtitles"] | None = None
    text_source: Literal["uploaded", "embedded", "generated_live", "generated_live_final", "generated_vod"] | None \
        = None
    language_code: str | None = None
    name: str | None = None
    closed_captions: bool | None = None
    passthrough: str | None = None
    primary: bool | None = Field(default=None, description="audio tracks: the one players pick by default")


class TrackEventData(TrackView):
    """A ``video.asset.track.*`` event's ``data``: the track and its asset."""

    asset_id: str


# --- static renditions and master ----------------------------------------------------------------------------


class StaticRenditionView(View):
    """A static rendition as the API answers it and webhooks carry it (Mux's ``StaticRendition``)."""

    id: str
    type: Literal["standard", "advanced"]
    status: Literal["preparing", "ready", "skipped", "errored"]
    resolution: StaticResolution | None = Field(default=None,
                                                description="absent on a legacy mp4_support video file")
    resolution_tier: Literal["2160p", "1440p", "1080p", "720p", "audio-only"] | None = None
    name: Literal["low.mp4", "medium.mp4", "high.mp4", "highest.mp4", "audio.m4a", "capped-1080p.mp4", "2160p.mp4",
                  "1440p.mp4", "1080p.mp4", "720p.mp4", "540p.mp4", "480p.mp4", "360p.mp4", "270p.mp4"]
    ext: Literal["mp4", "m4a"]
    width: int | None = None
    height: int | None = None
    bitrate: int | None = None
    filesize: str | None = None
    passthrough: str | None = None
    kinoray_reason: str | None = Field(default=None, description="kinoray: why it was skipped or errored")


class StaticRenditionEventData(StaticRenditionView):
    """A ``video.asset.static_rendition.*`` event's ``data``: the rendition and its asset."""

    asset_id: str


class StaticRenditionsView(View):
    """Mux's ``static_renditions`` of an asset."""

    status: Literal["ready", "preparing", "disabled", "errored"]
    files: list[StaticRenditionView]


class MasterView(View):
    """Mux's ``master``: the temporary download of the asset's original input."""

    status: Literal["ready", "preparing", "errored"]
    url: str | None = None


# --- assets --------------------------------------------------------------------------------------------------


class AssetMetaView(View):
    title: str | None = None
    creator_id: str | None = None
    external_id: str | None = None


class AssetErrorsView(View):
    type: str = Field(description="kinoray's error type (invalid_media, storage_error, ...)")
    messages: list[str]


class AssetProgressView(View):
    state: Literal["ingesting", "transcoding", "completed", "live", "errored"]
    progress: float = Field(description="percent done, 0 to 100")


class AssetView(View):
    """Mux's ``Asset``."""

    id: str
    status: Literal["preparing", "ready", "errored"]
    created_at: str = Field(description="unix seconds")
    updated_at: str | None = Field(default=None, description="unix seconds")
    duration: float | None = None
    aspect_ratio: str | None = None
    resolution_tier: ResolutionTier | None = None
    max_resolution_tier: Literal["1080p", "1440p", "2160p"]
    kinoray_max_resolution_tier: str | None = Field(
        default=None, description="kinoray's own tier where it differs from max_resolution_tier (720p)")
    max_stored_resolution: Literal["Audio only", "SD", "HD", "FHD", "UHD"] | None = None
    video_quality: Literal["basic", "plus", "premium"]
    encoding_tier: Literal["smart", "baseline", "premium"]
    max_stored_frame_rate: float | None = Field(default=None, description="-1 for an audio-only asset")
    playback_ids: list[PlaybackIdView]
    tracks: list[TrackView]
    mp4_support: Mp4Support
    master_access: Literal["temporary", "none"]
    master: MasterView | None = None
    normalize_audio: bool
    source_asset_id: str | None = None
    live_stream_id: str | None = None
    is_live: bool
    ingest_type: Literal["on_demand_url", "on_demand_direct_upload", "on_demand_clip", "live_rtmp", "live_srt"]
    static_renditions: StaticRenditionsView | None = None
    passthrough: str | None = None
    meta: AssetMetaView | None = None
    errors: AssetErrorsView | None = None
    progress: AssetProgressView
    upload_id: str | None = None
    test: bool | None = None
    video_codec: Literal["h264", "hevc", "av1"] | None = Field(default=None, description="kinoray: the ladder's codec")
    encoder_backend: str | None = Field(default=None, description="kinoray: the encoder that made the ladder")


# --- uploads -------------------------------------------------------------------------------------------------


class AdvancedPlaybackPolicyView(View):
    policy: PlaybackPolicy
    drm_configuration_id: str | None = None


class StaticRenditionRequestView(View):
    resolution: StaticResolution
    passthrough: str | None = None


class NewAssetSettingsView(View):
    """An upload's ``new_asset_settings`` as the client gave them (fields it left out are absent); Mux's
    ``max_resolution_tier`` enum (kinoray's ``720p`` is named in the upload's ``kinoray_max_resolution_tier``)."""

    playback_policies: list[PlaybackPolicy] | None = None
    playback_policy: list[PlaybackPolicy] | PlaybackPolicy | None = None
    advanced_playback_policies: list[AdvancedPlaybackPolicyView] | None = None
    passthrough: str | None = None
    meta: AssetMetaView | None = None
    max_resolution_tier: Literal["1080p", "1440p", "2160p"] | None = None
    video_quality: Literal["basic", "plus", "premium"] | None = None
    encoding_tier: Literal["baseline", "smart", "premium"] | None = None
    static_renditions: list[StaticRenditionRequestView] | None = None
    mp4_support: Mp4Support | None = None
    normalize_audio: bool | None = None
    copy_overlays: bool | None = None
    master_access: Literal["none", "temporary"] | None = None
    per_title_encode: bool | None = None
    video_codec: Literal["h264", "hevc", "av1"] | None = None
    test: bool | None = None


class UploadErrorView(View):
    type: str
    message: str


class UploadView(View):
    """Mux's ``Upload``."""

    id: str
    status: Literal["waiting", "asset_created", "errored", "cancelled", "timed_out"]
    url: str = Field(description="where the client sends the file: tus 1.0.0, or PUT with Content-Range")
    timeout: int = Field(description="seconds the upload may take before it becomes timed_out")
    cors_origin: str | None = None
    new_asset_settings: NewAssetSettingsView
    asset_id: str | None = Field(default=None, description="the asset made from the upload, once complete")
    error: UploadErrorView | None = None
    test: bool | None = None
    kinoray_max_resolution_tier: str | None = Field(
        default=None, description="kinoray's own max_resolution_tier (720p), shown as 1080p in new_asset_settings")


# --- live streams --------------------------------------------------------------------------------------------


class SimulcastTargetView(View):
    """Mux's ``SimulcastTarget``."""

    id: str
    url: str
    stream_key: str | None = None
    passthrough: str | None = None
    status: Literal["idle", "starting", "broadcasting", "errored"]
    error_severity: Literal["normal", "fatal"] | None = Field(default=None, description="only while errored")


class LiveStreamMetaView(View):
    title: str | None = None


class LiveStreamView(View):
    """Mux's ``LiveStream``."""

    id: str
    created_at: str = Field(description="unix seconds")
    stream_key: str | None = Field(default=None, description="only in the answers to create and reset-stream-key")
    status: Literal["active", "idle", "disabled"]
    active_asset_id: str | None = None
    recent_asset_ids: list[str]
    playback_ids: list[PlaybackIdView]
    new_asset_settings: NewAssetSettingsView | None = None
    kinoray_max_resolution_tier: str | None = Field(
        default=None, description="kinoray's own max_resolution_tier (720p), shown as 1080p in new_asset_settings")
    passthrough: str | None = None
    audio_only: bool
    reconnect_window: float
    use_slate_for_standard_latency: bool
    reconnect_slate_url: str | None = None
    latency_mode: Literal["low", "reduced", "standard"]
    simulcast_targets: list[SimulcastTargetView]
    max_continuous_duration: int
    test: bool | None = None
    meta: LiveStreamMetaView | None = None
    kinoray_session: str | None = Field(default=None, description="kinoray: the ingest session's state (none, "
                                                                   "connected, recording, disconnected)")
    active_ingest_protocol: Literal["rtmp", "srt"] | None = Field(
        default=None, description="while a publisher is connected: Mux's rtmp (RTMP or RTMPS) or srt")
    kinoray_active_ingest_protocol: str | None = Field(
        default=None, description="kinoray: the connected publisher's protocol exactly (rtmp, rtmps, whip)")
    kinoray_scheduled_start: str | None = Field(
        default=None, description="kinoray: unix seconds before which the stream key is refused")
    kinoray_scheduled_end: str | None = Field(
        default=None, description="kinoray: unix seconds from which the stream key is refused and a publisher "
                                  "is stopped")


# --- signing keys and webhooks -------------------------------------------------------------------------------


class SigningKeyView(View):
    """Mux's ``SigningKey`` as listed: never key material."""

    id: str = Field(description="the kid of JWTs signed with this key")
    created_at: str = Field(description="unix seconds")


class NewSigningKeyView(SigningKeyView):
    private_key: str = Field(description="base64 of the PEM private key; shown only in this response")


class AccessTokenView(View):
    """kinoray's ``/system/v1/access-tokens`` resource (Mux manages tokens in its dashboard): never the secret."""

    omit_none = False

    id: str = Field(description="the HTTP Basic user name")
    name: str | None
    environment_id: str
    permissions: dict[Literal["video", "data", "system"], Literal["read", "full"]] = Field(
        description="per product: read (GET/HEAD) or full; a product left out is refused")
    created_at: str = Field(description="unix seconds")
    revoked: bool
    revoked_at: str | None = Field(description="unix seconds")
    last_used_at: str | None = Field(description="unix seconds, to the minute")


class NewAccessTokenView(AccessTokenView):
    secret: str = Field(description="the HTTP Basic password; shown only in this response")


class EnvironmentView(View):
    """kinoray's ``/system/v1/environments`` resource: a partition of the data (Mux's environments)."""

    omit_none = False

    id: str
    name: str
    env_key: str = Field(description="Mux Data's environment key: beacons carrying it count in this environment")
    created_at: str = Field(description="unix seconds")


class NewEnvironmentView(EnvironmentView):
    access_token: NewAccessTokenView = Field(
        description="the new environment's first token (full access), its secret shown only in this response")


class WebhookEndpointView(View):
    """kinoray's ``/system/v1/webhook-endpoints`` resource (every field present, ``null`` where unset)."""

    omit_none = False

    id: str
    url: str
    enabled: bool
    secret: str = Field(description="HMAC-SHA256 key of this endpoint's Mux-Signature header")
    disabled_reason: str | None = Field(default=None, description="why the endpoint was disabled, if it was")
    created_at: str = Field(description="unix seconds")
    updated_at: str = Field(description="unix seconds")


class WebhookView(View):
    """The same endpoint as Mux's ``/system/v1/webhooks`` shows it."""

    id: str
    address: str
    enabled: bool
    created_at: str = Field(description="ISO 8601, UTC")
    signing_secret: str | None = Field(default=None, description="only in the answer to create")


class WebhookDeliveryView(View):
    """One outbox row (every field present, ``null`` where there is no value)."""

    omit_none = False

    id: str
    event_id: str = Field(description="also the Webhook-Id header of every attempt")
    event_type: str
    status: Literal["pending", "delivered", "failed"] = Field(
        description="pending | delivered | failed (given up, or stopped by disabling)")
    attempts: int
    last_status: int | None = Field(description="HTTP status of the last attempt; null if none came back")
    last_error: str | None
    delivered_at: str | None
    next_attempt_at: str | None
    created_at: str


# --- events --------------------------------------------------------------------------------------------------


class EventObject(BaseModel):
    type: str = Field(description="asset, upload, live_stream, simulcast_target")
    id: str


class EventEnvironment(BaseModel):
    name: str
    id: str


class EventEnvelope(BaseModel):
    """The body a webhook POSTs (Mux's envelope). ``attempts`` lists the earlier attempts (empty at the first);
    ``accessor_source``, ``accessor`` and ``request_id`` are always present and always null: Mux fills them for
    changes made in its dashboard, which kinoray has not."""

    type: str
    id: str
    created_at: str = Field(description="ISO 8601, UTC")
    object: EventObject
    environment: EventEnvironment
    data: dict[str, Any] = Field(description="the object's view as the API showed it then (``View.dump()``)")
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    accessor_source: None = None
    accessor: None = None
    request_id: None = None
