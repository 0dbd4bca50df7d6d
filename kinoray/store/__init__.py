"""Storage: object storage over fsspec (local directory or S3). Metadata storage joins with the API layer."""

from kinoray.store.objects import ObjectStore, is_local_url, join_url, open_url, storage_options, url_size

__all__ = ["ObjectStore", "is_local_url", "join_url", "open_url", "storage_options", "url_size"]
