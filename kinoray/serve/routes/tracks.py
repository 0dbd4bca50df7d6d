"""``/video/v1/assets/{asset_id}/tracks``: Mux's text tracks (subtitles, closed captions) on a ready asset.

``POST`` fetches the SRT or WebVTT file at ``url`` while the request waits (bounded: 2 MiB, 30 s, the SSRF
policy), validates it, and answers with the track, already ``ready``; a file that is not valid SRT/WebVTT is a
``400 invalid_media`` whose message names the line. ``DELETE`` removes a text track. Players get the tracks in
the HLS master (``SUBTITLES`` group) and the MPD (text adaptation sets): :mod:`kinoray.control.tracks`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from kinoray.control.tracks import TextTrackCreate, add_text_track, delete_track
from kinoray.control.views import TrackView
from kinoray.serve.deps import CurrentToken, IdempotentRoute, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, Envelope, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/video/v1", tags=["assets"], route_class=IdempotentRoute)


@router.post("/assets/{asset_id}/tracks", status_code=201, response_model=Envelope[TrackView],
             responses=error_responses(*AUTHENTICATED, 404, 409, 412, 422))
def create(asset_id: str, body: TextTrackCreate, platform: PlatformDep, token: CurrentToken) -> Envelope[TrackView]:
    """Add a text track from an SRT or WebVTT file at ``url`` (the asset must be ready)."""
    return Envelope(data=add_text_track(platform, asset_id, body))


@router.delete("/assets/{asset_id}/tracks/{track_id}", status_code=204,
               responses=error_responses(*AUTHENTICATED, 404, 409))
def delete(asset_id: str, track_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete a text track (its file and its entries in the manifests go with it)."""
    delete_track(platform, asset_id, track_id)
    return Response(status_code=204)
