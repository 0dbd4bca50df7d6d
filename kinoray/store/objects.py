"""Object storage over fsspec: a local directory or an ``s3://bucket/prefix`` (s3fs), behind one class.

Keys are ``/``-separated paths relative to the store's root. Writes are committed the same way on every
backend: the bytes go to a temporary key beside the final one and are then renamed (local: ``os.rename``;
S3: copy + delete), so a reader never sees half an object and a retried writer simply replaces it.
Transient errors (connection resets, throttling, 5xx) are retried with exponential backoff; missing keys and
permission errors are not.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from kinoray.errors import StorageError
from kinoray.settings import StorageSettings, get_settings

__all__ = ["ObjectStore", "is_local_url", "join_url", "open_url", "storage_options", "url_size"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_TEMP_MARK = ".tmp-"


def is_local_url(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def join_url(base: str, *parts: str) -> str:
    """``base`` joined with ``parts`` by ``/`` (works for paths and URLs alike)."""
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts if part)])


def storage_options(url: str, settings: StorageSettings | None = None) -> dict[str, Any]:
    """fsspec options for ``url`` from :class:`~kinoray.settings.StorageSettings` (endpoint, region)."""
    settings = settings or get_settings().storage
    if url.startswith(("s3://", "s3a://")):
        client: dict[str, Any] = {}
        if settings.s3_endpoint_url:
            client["endpoint_url"] = settings.s3_endpoint_url
        if settings.s3_region:
            client["region_name"] = settings.s3_region
        return {"client_kwargs": client} if client else {}
    return {}


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    name = type(error).__name__
    if name in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ServerDisconnectedError",
                "ClientOSError", "ResponseStreamingError", "IncompleteReadError"}:
        return True
    text = str(error)
    return any(mark in text for mark in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                                         "503", "500 ", "Throttl"))


def _retrying(operation: str, call: Callable[[], T], retries: int) -> T:
    delay = 0.2
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - classified below
            if isinstance(error, StorageError):
                raise
            if attempt >= retries or not _is_transient(error):
                raise StorageError(f"{operation} failed: {type(error).__name__}: {error}") from error
            log.warning("transient storage error, retrying",
                        extra={"operation": operation, "attempt": attempt + 1, "error": str(error)})
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


class ObjectStore:
    """A root (directory or bucket prefix) holding keyed objects.

    Picklable: it carries only its URL and settings and reconnects lazily, so it can be shipped to Ray workers.
    """

    def __init__(self, url: str, settings: StorageSettings | None = None) -> None:
        self.url = url.rstrip("/")
        self.settings = settings or get_settings().storage
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["settings"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    @property
    def is_local(self) -> bool:
        return is_local_url(self.url)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            if self.is_local:
                self._fs, self._root = LocalFileSystem(), os.path.abspath(_local_path(self.url))
            else:
                self._fs, self._root = fsspec.core.url_to_fs(self.url, **storage_options(self.url, self.settings))
        return self._fs

    @property
    def root(self) -> str:
        self.fs  # noqa: B018 - resolves the root
        assert self._root is not None
        return self._root

    def path(self, key: str) -> str:
        """The backend path of ``key`` (a filesystem path for local stores)."""
        return f"{self.root}/{key.strip('/')}" if key else self.root

    def url_of(self, key: str) -> str:
        return join_url(self.url, key)

    def child(self, prefix: str) -> ObjectStore:
        """A store rooted at ``prefix`` inside this one."""
        return ObjectStore(self.url_of(prefix), self.settings)

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        return _retrying(f"{operation} {self.url}", call, self.settings.transient_retries)

    # --- writing -------------------------------------------------------------------------------------------
    def _commit(self, key: str, write_temp: Callable[[str], None], retry_write: bool = True) -> None:
        final = self.path(key)
        temp = f"{final}{_TEMP_MARK}{uuid.uuid4().hex[:12]}"
        if self.is_local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            if retry_write:
                self._call(f"write {key}", lambda: write_temp(temp))
            else:
                write_temp(temp)
            self._call(f"commit {key}", lambda: self._rename(temp, final))
        except BaseException:
            try:
                self.fs.rm(temp)
            except Exception:  # noqa: BLE001 - the temp may never have been written
                pass
            raise

    def _rename(self, temp: str, final: str) -> None:
        if self.is_local:
            os.replace(temp, final)
        else:
            self.fs.mv(temp, final)

    def put_file(self, local_path: str | Path, key: str) -> None:
        """Upload a local file to ``key`` (temp key, then rename)."""
        self._commit(key, lambda temp: self.fs.put_file(str(local_path), temp))

    def put_bytes(self, data: bytes, key: str) -> None:
        self._commit(key, lambda temp: self.fs.pipe_file(temp, data))

    def put_stream(self, chunks: Iterable[bytes], key: str) -> int:
        """Write ``chunks`` to ``key`` as they come (temp key, then rename), never holding them all in memory;
        returns the bytes written. The iterable is consumed once, so a transient error while writing is not
        retried; if the iterable raises, nothing is committed."""
        written = 0

        def write(temp: str) -> None:
            nonlocal written
            with self.fs.open(temp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)

        self._commit(key, write, retry_write=False)
        return written

    def move(self, source: str, key: str) -> None:
        """Rename ``source`` to ``key`` (replacing it): ``os.replace`` locally, a server-side copy + delete on S3,
        so the bytes never pass through this process."""
        final = self.path(key)
        if self.is_local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
        self._call(f"move {source}", lambda: self._rename(self.path(source), final))

    def publish_tree(self, local_dir: str | Path, *, last: tuple[str, ...] = ()) -> list[str]:
        """Upload every file under ``local_dir`` (keys relative to it), the names in ``last`` after all others,
        in that order, then delete keys this store held before that the new tree lacks. A reader that
        fetches a manifest named in ``last`` therefore finds every file it references."""
        local_dir = Path(local_dir)
        before = set(self.list())
        files = sorted(path.relative_to(local_dir).as_posix() for path in local_dir.rglob("*") if path.is_file())
        rank = {name: position for position, name in enumerate(last)}
        ordered = sorted(files, key=lambda key: (rank.get(key.rsplit("/", 1)[-1], -1), key))
        for key in ordered:
            self.put_file(local_dir / key, key)
        for stale in sorted(before - set(files)):
            self.delete(stale)
        return ordered

    # --- reading -------------------------------------------------------------------------------------------
    def get_file(self, key: str, local_path: str | Path) -> None:
        """Download ``key`` to ``local_path`` (written to a temp name, then renamed)."""
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        temp = local_path.with_name(local_path.name + f"{_TEMP_MARK}{uuid.uuid4().hex[:8]}")
        try:
            self._call(f"read {key}", lambda: self.fs.get_file(self.path(key), str(temp)))
            os.replace(temp, local_path)
        finally:
            temp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        return self._call(f"read {key}", lambda: self.fs.cat_file(self.path(key)))

    def open(self, key: str) -> IO[bytes]:
        """A seekable binary reader for ``key``."""
        return self._call(f"open {key}", lambda: self.fs.open(self.path(key), "rb"))

    def exists(self, key: str) -> bool:
        self._invalidate()
        return self._call(f"stat {key}", lambda: self.fs.exists(self.path(key)))

    def size(self, key: str) -> int:
        return int(self._call(f"stat {key}", lambda: self.fs.size(self.path(key))))

    def modified(self, key: str) -> datetime:
        """When the object was last written (UTC); ``StorageError`` if the backend cannot say."""
        def stamp() -> datetime:
            when = self.fs.modified(self.path(key))
            return when if when.tzinfo else when.replace(tzinfo=UTC)

        return self._call(f"stat {key}", stamp)

    def _keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, committed or temporary."""
        self._invalidate()
        base = self.path(prefix)

        def find() -> list[str]:
            return self.fs.find(base) if self.fs.exists(base) else []

        root = self.root.rstrip("/") + "/"
        return [path.removeprefix(root) for path in self._call(f"list {prefix}", find)]

    def list(self, prefix: str = "") -> list[str]:
        """Committed keys under ``prefix`` (temporary objects excluded), sorted."""
        return sorted(key for key in self._keys(prefix) if _TEMP_MARK not in key)

    def iter_temporary(self, prefix: str = "") -> Iterator[str]:
        """Uncommitted temporary objects under ``prefix`` (what a crashed writer left behind)."""
        return (key for key in self._keys(prefix) if _TEMP_MARK in key)

    # --- deleting ------------------------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        def remove() -> None:
            try:
                self.fs.rm(self.path(key))
            except FileNotFoundError:
                pass

        self._call(f"delete {key}", remove)

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under ``prefix`` (idempotent)."""
        self._invalidate()

        def remove() -> None:
            path = self.path(prefix)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

        self._call(f"delete {prefix}/", remove)

    def _invalidate(self) -> None:
        if not self.is_local:
            self.fs.invalidate_cache()


def open_url(url: str, settings: StorageSettings | None = None) -> IO[bytes]:
    """A seekable binary reader for a path, ``file://``, ``s3://`` or ``http(s)://`` URL."""
    if is_local_url(url):
        return open(_local_path(url), "rb")  # noqa: SIM115 - the caller owns it
    opener = fsspec.open(url, "rb", **storage_options(url, settings))
    return _retrying(f"open {url}", opener.open, (settings or get_settings().storage).transient_retries)


def url_size(url: str, settings: StorageSettings | None = None) -> int:
    """Size in bytes of the object at ``url``."""
    if is_local_url(url):
        return os.path.getsize(_local_path(url))
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url, settings))
    return int(_retrying(f"stat {url}", lambda: fs.size(path), (settings or get_settings().storage).transient_retries))
