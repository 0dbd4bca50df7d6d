"""The metadata database: engine and sessions from a URL, Alembic migrations, newest-first pages.

SQLite is the embedded default (``sqlite:///DATA_DIR/kinoray.db``), opened with WAL journaling, foreign keys on
and real transactions that SQLAlchemy begins itself (so SAVEPOINTs work). A :meth:`Database.session` on SQLite
starts with ``BEGIN IMMEDIATE``: it takes the write lock up front, so waiting for another writer is covered by the
busy timeout. A deferred ``BEGIN`` that reads and then writes cannot wait: SQLite refuses its upgrade at once
("database is locked") when another writer got in between. Read-only work uses :meth:`Database.reader`
(a deferred ``BEGIN``; under WAL it never waits for writers). PostgreSQL is used when
``KINORAY_DATABASE_URL`` says so; ``postgres://`` and ``postgresql://`` URLs are read as
``postgresql+psycopg://`` (psycopg 3).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from kinoray.settings import Settings, get_settings
from kinoray.store import scoping
from kinoray.store.models import Base

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["Database", "alembic_config", "database_url", "decode_cursor", "downgrade", "encode_cursor", "is_transient",
           "migrate", "newest_first", "newest_first_params", "newest_first_select", "page_and_cursor"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_READ_ONLY = "kinoray_read_only"  # execution option of the reader sessions' engine
_MIGRATION_LOCK = 0x6B696E6F  # PostgreSQL advisory lock id held while migrating ("kino")
M = TypeVar("M", bound=Base)
R = TypeVar("R")
S = TypeVar("S", bound=sa.Select[Any])


def _normalize_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def database_url(settings: Settings | None = None) -> str:
    """``settings.database_url`` (normalised), or the SQLite file ``DATA_DIR/kinoray.db`` as an absolute path, so
    processes started in other directories (Ray workers, Serve replicas) open the same file."""
    settings = settings or get_settings()
    if settings.database_url:
        return _normalize_url(settings.database_url)
    return f"sqlite:///{(Path(settings.data_dir) / 'kinoray.db').resolve()}"


def _create_engine(url: str, timeout: float = 15.0, **options: Any) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_timeout", timeout)
        options.setdefault("connect_args", {}).setdefault("connect_timeout", max(1, round(timeout)))
        return sa.create_engine(parsed, **options)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file:")
    if not in_memory:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    options.setdefault("connect_args", {}).setdefault("timeout", timeout)  # seconds to wait for a writer's lock
    if not in_memory:
        # API replicas serve from a 40-thread pool: keep that many connections open rather than churning.
        options.setdefault("pool_size", 16)
        options.setdefault("max_overflow", 48)
    engine = sa.create_engine(parsed, **options)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; let SQLAlchemy own it (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; WAL's usual pairing
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _scope_info(environment_id: str | None) -> dict[str, Any]:
    environment_id = environment_id or scoping.current_environment()
    return {} if environment_id is None else {scoping.ENVIRONMENT_KEY: environment_id}


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says the database is unreachable, restarting, timed out or locked (the same statement may
    succeed later), rather than that the statement itself is wrong."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError)


class Database:
    """One engine (connection pool) and its session factory. Create one per process and share it.

    ``timeout`` is SQLite's busy timeout (seconds a statement waits for another writer's lock) and PostgreSQL's
    connect and pool timeouts. ``engine_options`` go to :func:`sqlalchemy.create_engine` (``echo=True``,
    ``pool_size=...``).
    """

    def __init__(self, url: str, timeout: float = 15.0, **engine_options: Any) -> None:
        self.url = _normalize_url(url)
        self.engine = _create_engine(self.url, timeout, **engine_options)
        #: Sessions keep loaded objects usable after commit (``expire_on_commit=False``): the API serialises a
        #: row after committing it without another round trip.
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(**{_READ_ONLY: True})
        self._readers = sessionmaker(self._read_engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **engine_options: Any) -> Database:
        """The database :func:`database_url` names, with the settings' ``database_timeout_seconds``."""
        settings = settings or get_settings()
        return cls(database_url(settings), settings.database_timeout_seconds, **engine_options)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self, environment_id: str | None = None) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises.

        Scoped to ``environment_id``, else to the environment in scope (:func:`kinoray.store.scoping.scoped`:
        the API's calling token), else unscoped (:mod:`kinoray.store.scoping`).

        On SQLite the transaction holds the database's write lock from its start (waiting up to the busy timeout
        for it), so keep it short: verify secrets, fetch URLs and encode outside it. Use :meth:`reader` for
        work that only reads."""
        with self.sessionmaker(info=_scope_info(environment_id)) as session, session.begin():
            yield session

    @contextmanager
    def reader(self, environment_id: str | None = None) -> Iterator[Session]:
        """A session for reads only: on SQLite a deferred transaction that never takes the write lock, so readers
        run beside a writer. A write in it may fail at once with "database is locked": use :meth:`session`.
        Scoped as :meth:`session` is."""
        with self._readers(info=_scope_info(environment_id)) as session, session.begin():
            yield session

    @contextmanager
    def read_connection(self, environment_id: str | None = None) -> Iterator[Connection]:
        """:meth:`reader`'s transaction without the ORM session around it, for reads in SQLAlchemy Core (the
        session's bookkeeping cost a quarter of a one-SELECT read). Scoped as :meth:`session` is:
        :func:`kinoray.store.scoping.environment_of` tells the connection's environment."""
        with self._read_engine.connect() as connection, connection.begin():
            yield connection.execution_options(**_scope_info(environment_id))

    def migrate(self, revision: str = "head") -> None:
        """:func:`migrate` this database."""
        migrate(self.engine, revision)

    def dispose(self) -> None:
        """Close every pooled connection (call before a fork, and at shutdown)."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"


# --- migrations ----------------------------------------------------------------------------------------------


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration for our migrations on ``connection`` (for ``alembic.command`` calls: ``revision``,
    ``check``, ``history``; see docs/DATA_MODEL.md)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _run_alembic(target: str | Engine, action: Callable[[Config], None]) -> None:
    engine = target if isinstance(target, Engine) else _create_engine(_normalize_url(target))
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # SQLite alters a table by copying it and dropping the old one; with foreign keys on, that DROP
                # would cascade into the child tables. The pragma is ignored inside a transaction, so it is set on
                # the raw connection before SQLAlchemy begins one, and checked before committing.
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                with connection.begin():
                    if connection.dialect.name == "postgresql":
                        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                    action(alembic_config(connection))
                    if sqlite:
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise RuntimeError(f"migration left rows violating foreign keys: {broken[:5]}")
            finally:
                if sqlite:
                    connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
    finally:
        if engine is not target:
            engine.dispose()


def migrate(target: str | Engine, revision: str = "head") -> None:
    """Upgrade the database at ``target`` (a URL or an engine) to ``revision`` with Alembic, in one transaction.

    Idempotent; concurrent callers on PostgreSQL queue on an advisory lock. ``kinoray up`` runs this on start.
    """
    from alembic import command

    log.info("migrating database", extra={"revision": revision})
    _run_alembic(target, lambda config: command.upgrade(config, revision))


def downgrade(target: str | Engine, revision: str = "base") -> None:
    """Downgrade the database at ``target`` to ``revision`` (``"base"`` drops every table)."""
    from alembic import command

    _run_alembic(target, lambda config: command.downgrade(config, revision))


# --- pages ---------------------------------------------------------------------------------------------------


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque cursor for the row after which the next page starts."""
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, id)`` in ``cursor``; ``ValueError`` if it is not one of ours."""
    try:
        created_at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created_at)
    except (ValueError, TypeError) as error:
        raise ValueError(f"invalid cursor {cursor!r}") from error
    if when.tzinfo is None or not isinstance(row_id, str):
        raise ValueError(f"invalid cursor {cursor!r}")
    return when, row_id


def newest_first(session: Session, model: type[M], *, limit: int, cursor: str | None = None, page: int = 1,
                 where: Iterable[sa.ColumnElement[bool]] = (),
                 options: Iterable[Any] = ()) -> tuple[list[M], str | None]:
    """One page of ``model`` rows, newest first (``created_at DESC, id DESC``: the ``(created_at, id)`` indexes),
    and the cursor of the next page (``None`` on the last). With ``cursor``, keyset pagination: rows created
    meanwhile never shift a page; without, Mux's numbered ``page`` (1 = newest). ``options`` are loader options
    (``selectinload(...)``). ``ValueError`` for a bad cursor or page."""
    params = newest_first_params(limit=limit, cursor=cursor, page=page)
    query = newest_first_select(sa.select(model).options(*options).where(*where), model.__table__,
                                keyset=cursor is not None)
    rows = list(session.scalars(query, params).unique())  # unique(): options may join a collection
    return page_and_cursor(rows, limit)


def newest_first_select(query: S, table: sa.FromClause, *, keyset: bool) -> S:
    """``query`` (rows of ``table``, or columns of it) ordered and cut as :func:`newest_first`'s page — after a
    cursor's row (``keyset``) or at a numbered page's offset — with one row more than the page:
    :func:`page_and_cursor` tells from it whether a next page exists. Its bound parameters are
    :func:`newest_first_params`', so one statement serves every page (built once, its cache key too)."""
    created, row_id = table.c.created_at, table.c.id
    query = query.order_by(created.desc(), row_id.desc()).limit(sa.bindparam("page_rows", type_=sa.Integer))
    if not keyset:
        return query.offset(sa.bindparam("page_offset", type_=sa.Integer))
    after_time = sa.bindparam("after_created_at", type_=created.type)
    return query.where(sa.or_(created < after_time, sa.and_(created == after_time,
                                                           row_id < sa.bindparam("after_id", type_=row_id.type))))


def newest_first_params(*, limit: int, cursor: str | None = None, page: int = 1) -> dict[str, Any]:
    """The bound parameters of :func:`newest_first_select`'s statement for one page (``keyset`` when ``cursor``
    is given). ``ValueError`` for a bad cursor or page."""
    if limit < 1 or page < 1:
        raise ValueError("limit and page must be at least 1")
    if cursor is None:
        return {"page_rows": limit + 1, "page_offset": (page - 1) * limit}
    after_time, after_id = decode_cursor(cursor)
    return {"page_rows": limit + 1, "after_created_at": after_time, "after_id": after_id}


def page_and_cursor(rows: list[R], limit: int) -> tuple[list[R], str | None]:
    """The page in ``rows`` (read with :func:`newest_first_select`: rows, or Core rows with ``created_at`` and
    ``id``) and the cursor of the next page (``None`` on the last)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last: Any = rows[-1]
    return rows, encode_cursor(last.created_at, last.id)
