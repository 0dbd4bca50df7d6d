"""The control plane's per-process state: settings, the metadata database, object storage, the rate limiter,
the authenticator and the playback resolver.

Every API replica and the job runner hold one :class:`Platform`. It is cheap to build (no I/O beyond opening a
connection pool lazily) and owns nothing that cannot be rebuilt from the settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kinoray.control.auth import Authenticator
from kinoray.control.clients import ClientAddresses
from kinoray.settings import Settings, get_settings
from kinoray.store.db import Database
from kinoray.store.objects import ObjectStore

if TYPE_CHECKING:
    from kinoray.control.ratelimit import RateLimiter
    from kinoray.control.resolver import PlaybackResolver

__all__ = ["Platform"]

log = logging.getLogger(__name__)


@dataclass
class Platform:
    """What a request handler or the runner needs. ``store`` is rooted at :attr:`Settings.storage_url`:

    ``assets/<asset_id>/input``    the asset's source bytes (an upload, or the fetched input URL)
    ``assets/<asset_id>/media/``   HLS/DASH/MP4 output of the transcode
    ``uploads/<upload_id>/...``     a direct upload's received parts until it completes
    """

    settings: Settings
    db: Database
    store: ObjectStore
    limiter: RateLimiter = field(repr=False)
    #: Playback ids → what they may serve, cached for ``edge.cache_seconds`` (images and stream delivery).
    resolver: PlaybackResolver = field(repr=False)
    #: Basic credentials → token, with the failure buckets that bound a wrong-secret flood's cost.
    authenticator: Authenticator = field(init=False, repr=False)
    #: The client address of a request (``X-Forwarded-For`` believed from ``api.trusted_proxies`` only).
    clients: ClientAddresses = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.db, self.settings.api)
        self.clients = ClientAddresses(self.settings.api.trusted_proxies)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, migrate: bool = True) -> Platform:
        from kinoray.control.ratelimit import RateLimiter
        from kinoray.control.resolver import PlaybackResolver

        settings = settings or get_settings()
        db = Database.from_settings(settings)
        if migrate:
            db.migrate()
        store = ObjectStore(settings.storage_url, settings.storage)
        return cls(settings=settings, db=db, store=store, limiter=RateLimiter.from_settings(settings),
                   resolver=PlaybackResolver(db, ttl=settings.edge.cache_seconds))

    def close(self) -> None:
        self.db.dispose()
        self.limiter.close()
