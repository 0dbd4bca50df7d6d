"""Storage: object storage over fsspec (local directory or S3) and the metadata database (SQLAlchemy models,
Alembic migrations; SQLite by default, PostgreSQL via ``KINORAY_DATABASE_URL``)."""

import importlib
from typing import Any

from kinoray.store.objects import ObjectStore, is_local_url, join_url, open_url, storage_options, url_size

__all__ = [
    "JOB_STATES",
    "AccessToken",
    "Asset",
    "AssetStatus",
    "Base",
    "Database",
    "Event",
    "IdempotencyKey",
    "Job",
    "JobRecord",
    "JobState",
    "ObjectStore",
    "PlaybackId",
    "PlaybackPolicy",
    "SigningKey",
    "UTCDateTime",
    "Upload",
    "UploadStatus",
    "ViewEvent",
    "WebhookDelivery",
    "WebhookEndpoint",
    "database_url",
    "decode_cursor",
    "downgrade",
    "encode_cursor",
    "hash_secret",
    "is_local_url",
    "is_valid_id",
    "join_url",
    "migrate",
    "new_id",
    "new_secret",
    "newest_first",
    "open_url",
    "request_fingerprint",
    "storage_options",
    "url_size",
    "utcnow",
    "verify_secret",
]


# The metadata database loads SQLAlchemy; media workers only need object storage, so those names load on
# first use.
_LAZY = {
    "Database": "kinoray.store.db",
    "database_url": "kinoray.store.db",
    "decode_cursor": "kinoray.store.db",
    "downgrade": "kinoray.store.db",
    "encode_cursor": "kinoray.store.db",
    "migrate": "kinoray.store.db",
    "newest_first": "kinoray.store.db",
    "JOB_STATES": "kinoray.store.states",
    "JobRecord": "kinoray.store.states",
    "JobState": "kinoray.store.states",
    "AccessToken": "kinoray.store.models",
    "Asset": "kinoray.store.models",
    "AssetStatus": "kinoray.store.models",
    "Base": "kinoray.store.models",
    "Event": "kinoray.store.models",
    "IdempotencyKey": "kinoray.store.models",
    "Job": "kinoray.store.models",
    "PlaybackId": "kinoray.store.models",
    "PlaybackPolicy": "kinoray.store.models",
    "SigningKey": "kinoray.store.models",
    "Upload": "kinoray.store.models",
    "UploadStatus": "kinoray.store.models",
    "UTCDateTime": "kinoray.store.models",
    "ViewEvent": "kinoray.store.models",
    "WebhookDelivery": "kinoray.store.models",
    "WebhookEndpoint": "kinoray.store.models",
    "hash_secret": "kinoray.store.models",
    "is_valid_id": "kinoray.store.models",
    "new_id": "kinoray.store.models",
    "new_secret": "kinoray.store.models",
    "request_fingerprint": "kinoray.store.models",
    "utcnow": "kinoray.store.models",
    "verify_secret": "kinoray.store.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
