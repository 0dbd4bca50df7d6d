"""The delivery edge: the viewer-facing paths (streams, images, the upload URL, beacons, the player) served by
Granian worker processes outside Ray Serve, with per-process caches; everything else forwarded to the
management API. See docs/ARCHITECTURE.md ("Delivery edge")."""

from kinoray.edge.app import EdgeApp, build_edge_api, create_app
from kinoray.edge.server import EdgeProcess, serve

__all__ = ["EdgeApp", "EdgeProcess", "build_edge_api", "create_app", "serve"]
