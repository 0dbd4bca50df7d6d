"""The analytics dashboard, HTTP-free: the static files shipped in ``static/`` (kinoray's script and CSS plus
uPlot vendored from npm by ``build.mjs``) and the HTML of ``/dashboard/``. The page signs in with an access token
and reads the Data API (``/data/v1/…``) from the browser.

``kinoray.serve.routes.dashboard`` serves them; nothing here knows about FastAPI.
"""

from kinoray.dashboard.assets import STATIC_DIR, static_file, static_names, static_url, vendored
from kinoray.dashboard.page import CONTENT_SECURITY_POLICY, dashboard_page, page_etag

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "STATIC_DIR",
    "dashboard_page",
    "page_etag",
    "static_file",
    "static_names",
    "static_url",
    "vendored",
]
