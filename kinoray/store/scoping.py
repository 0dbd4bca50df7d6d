"""Environments that isolate data: the one place that adds the environment predicate.

A session opened while an environment is in scope (:func:`scoped`, which the API's authentication enters for
the calling token, or ``Database.session(environment_id=...)``) carries it in ``session.info``. Two session
events then do the isolating, so no route or control function can forget it:

- every ORM ``SELECT``, ``UPDATE`` and ``DELETE`` (``session.get``, ``select(Model)``, ``select(Model.column)``,
  relationship loads, ORM bulk updates) gets ``with_loader_criteria`` for each scoped table: ``environment_id =
  :env`` on :class:`~kinoray.store.models.EnvironmentScoped` tables, and "its parent is in the environment" on
  their child tables (playback ids, jobs, static renditions, simulcast targets, chat messages, webhook
  deliveries, incidents, live playback ids). A row of another environment is therefore simply not found: the
  API answers ``404``, as for an id that never existed, never a ``403`` that would confirm it exists;
- a new scoped row is stamped with the session's environment at flush; a row already naming another environment
  is refused (``ValueError``), so a bug cannot write across environments either.

Sessions opened without an environment (the job runner, the webhook sender, the delivery edge's playback
lookups, the CLI) see every environment: what they write takes its environment from the row it derives from
(an upload's asset, a live stream's recording), else the default environment. Core statements over
``Model.__table__`` bypass the ORM and must add the predicate themselves: :func:`own_criterion` is the one the ORM
adds for an environment's own table (the polled asset reads, :mod:`kinoray.control.asset_reads`, read that way);
``delete_environment`` counts another environment's rows without it, on purpose.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from kinoray.store.models import (
    AccessToken,
    AlertRule,
    Asset,
    ChatMessage,
    DataIncident,
    EnvironmentScoped,
    Job,
    LiveStream,
    LiveStreamPlaybackId,
    PlaybackId,
    SimulcastTarget,
    StaticRendition,
    WebhookDelivery,
    WebhookEndpoint,
)

__all__ = ["ENVIRONMENT_KEY", "ENVIRONMENT_PARAM", "SCOPED_MODELS", "current_env_key_filters", "current_environment",
           "environment_of", "own_criterion", "scoped"]

#: ``session.info`` key (a read connection's execution option) holding its environment id (absent: unscoped).
ENVIRONMENT_KEY = "kinoray_environment_id"

_current: ContextVar[str | None] = ContextVar("kinoray_environment_id", default=None)
#: Data's counterpart: ``(env_key, negated)`` filters on the views' ``env_key`` dimension, which every
#: :class:`kinoray.analytics.query.Query` applies before its own (Data views live in the event log, not here).
_env_keys: ContextVar[tuple[tuple[str, bool], ...]] = ContextVar("kinoray_env_key_filters", default=())


def current_environment() -> str | None:
    """The environment in scope in this context (``None``: unscoped)."""
    return _current.get()


def current_env_key_filters() -> tuple[tuple[str, bool], ...]:
    """The Data ``env_key`` filters in scope (empty: every view): ``(env_key, negated)`` pairs."""
    return _env_keys.get()


@contextmanager
def scoped(environment_id: str | None, env_key_filters: tuple[tuple[str, bool], ...] = ()) -> Iterator[None]:
    """Sessions opened inside the block are scoped to ``environment_id`` (``None``: unscoped), and Data queries
    made inside it to ``env_key_filters`` (:func:`kinoray.control.environments.data_filters`)."""
    reset, reset_keys = _current.set(environment_id), _env_keys.set(env_key_filters)
    try:
        yield
    finally:
        _env_keys.reset(reset_keys)
        _current.reset(reset)


def _own(model: Any) -> Callable[[str], sa.ColumnElement[bool]]:
    return lambda env: model.environment_id == env


def _child(column: Any, parent: Any) -> Callable[[str], sa.ColumnElement[bool]]:
    return lambda env: column.in_(sa.select(parent.id).where(parent.environment_id == env).scalar_subquery())


#: Every table an environment isolates, and the predicate that keeps a scoped session inside it. A test
#: (``tests/test_environments.py``) checks that every table with an ``environment_id`` or a foreign key to
#: one is listed here.
SCOPED_MODELS: dict[type, Callable[[str], sa.ColumnElement[bool]]] = {
    **{model: _own(model) for model in EnvironmentScoped.__subclasses__()},
    AccessToken: _own(AccessToken),
    PlaybackId: _child(PlaybackId.asset_id, Asset),
    StaticRendition: _child(StaticRendition.asset_id, Asset),
    Job: _child(Job.asset_id, Asset),
    LiveStreamPlaybackId: _child(LiveStreamPlaybackId.live_stream_id, LiveStream),
    SimulcastTarget: _child(SimulcastTarget.live_stream_id, LiveStream),
    ChatMessage: _child(ChatMessage.live_stream_id, LiveStream),
    WebhookDelivery: _child(WebhookDelivery.endpoint_id, WebhookEndpoint),
    DataIncident: _child(DataIncident.rule_id, AlertRule),
}


def environment_of(target: Session | Connection) -> str | None:
    """The environment a session, or a :meth:`~kinoray.store.db.Database.read_connection`, is scoped to
    (``None``: unscoped)."""
    options = target.info if isinstance(target, Session) else target.get_execution_options()
    value = options.get(ENVIRONMENT_KEY)
    return value if isinstance(value, str) else None


#: The bound parameter :func:`own_criterion` compares with: a statement using it is executed with
#: ``{ENVIRONMENT_PARAM: environment_of(session)}``.
ENVIRONMENT_PARAM = "kinoray_environment_id"


def own_criterion(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """What a Core statement reading ``table`` (an :class:`~kinoray.store.models.EnvironmentScoped` model's) adds
    to see one environment only, as the ORM's criteria do: ``environment_id = :kinoray_environment_id``, bound per
    execution to the session's environment (:data:`ENVIRONMENT_PARAM`), so the statement is built once. A session
    with no environment (:func:`environment_of` is ``None``) runs the statement without it. Child tables joined by
    their parent's id need none: the parent's row decides.

    Raises:
        ValueError: ``table`` names no environment (a child table: scope the parent it is joined to).
    """
    if "environment_id" not in table.c:
        raise ValueError(f"{table.description} names no environment: scope the table it belongs to")
    return table.c.environment_id == sa.bindparam(ENVIRONMENT_PARAM, type_=table.c.environment_id.type)


@event.listens_for(Session, "do_orm_execute")
def _add_environment_criteria(state: ORMExecuteState) -> None:
    environment_id = environment_of(state.session)
    if environment_id is None or not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return  # the criteria of the statement that loaded the row travel with it
    options = _criteria(environment_id)
    # The criteria of the scoped tables the statement returns rows or columns of (each propagates to the lazy
    # loads of those rows), which keeps a read's cost low; every table's when it names none of them at the top
    # (``select(func.count()).select_from(Asset)``), so nothing reaches the database unscoped.
    present = [options[mapper.class_] for mapper in state.all_mappers if mapper.class_ in options]
    state.statement = state.statement.options(*(present or options.values()))


@functools.lru_cache(maxsize=1024)
def _criteria(environment_id: str) -> dict[type, Any]:
    """The loader option of each scoped table for one environment, built once per environment."""
    return {model: with_loader_criteria(model, make(environment_id), include_aliases=True)
            for model, make in SCOPED_MODELS.items()}


@event.listens_for(Session, "before_flush")
def _stamp_new_rows(session: Session, _context: Any, _instances: Any) -> None:
    environment_id = environment_of(session)
    if environment_id is None:
        return
    for row in session.new:
        if not isinstance(row, EnvironmentScoped):
            continue
        if row.environment_id is None:
            row.environment_id = environment_id
        elif row.environment_id != environment_id:
            raise ValueError(f"{type(row).__name__} of environment {row.environment_id!r} written in a session "
                             f"scoped to {environment_id!r}")
