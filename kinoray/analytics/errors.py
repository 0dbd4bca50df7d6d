"""Errors (Mux's ``/data/v1/errors``): the views' fatal player errors grouped by code and message.

Each fatal ``error`` event (severity not ``warning``, what makes a playback failure) of a view counts once per
(code, message) for that view: ``count`` is the views with that error, ``percentage`` their share of every view
of the query (0–1, as Mux's percentages in the Data API), ``last_seen`` the server's receipt of the latest
one. ``id`` is a stable number for the (code, message) pair — the first 31 bits of its SHA-256 — so the same
error keeps its id across timeframes (``/data/v1/video-views?error_id=<id>`` lists its views). ``code`` is the
player error code as a number when it is one (Mux's type), ``player_error_code`` as sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from kinoray.analytics.views import View

__all__ = ["ErrorGroup", "error_groups", "error_id", "view_errors"]


@dataclass(frozen=True)
class ErrorGroup:
    id: int
    code: int | None
    player_error_code: str | None
    message: str | None
    count: int
    percentage: float
    last_seen: int | None  # ms since the epoch


def error_id(code: str | None, message: str | None) -> int:
    digest = hashlib.sha256(f"{code or ''}\0{message or ''}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def view_errors(view: View) -> dict[tuple[str | None, str | None], int | None]:
    """The distinct fatal errors of ``view``: (code, message) → when the latest was received (ms)."""
    found: dict[tuple[str | None, str | None], int | None] = {}
    for event in view.events:
        if event["event"] != "error" or event.get("player_error_severity") == "warning":
            continue
        key = (_text(event.get("player_error_code")), _text(event.get("player_error_message")))
        at = event.get("event_time")
        previous = found.get(key)
        found[key] = at if previous is None else max(previous, at) if at is not None else previous
    return found


def error_groups(views: Sequence[View]) -> list[ErrorGroup]:
    """The fatal errors of ``views`` grouped, most views first (then code, message)."""
    counts: dict[tuple[str | None, str | None], int] = {}
    last: dict[tuple[str | None, str | None], int | None] = {}
    for view in views:
        for key, at in view_errors(view).items():
            counts[key] = counts.get(key, 0) + 1
            seen = last.get(key)
            last[key] = at if seen is None else max(seen, at) if at is not None else seen
    total = len(views)
    groups = [ErrorGroup(id=error_id(*key), code=int(key[0]) if key[0] is not None and key[0].lstrip("-").isdigit()
                         and abs(int(key[0])) < 2**31 else None, player_error_code=key[0], message=key[1],
                         count=count, percentage=count / total if total else 0.0, last_seen=last.get(key))
              for key, count in counts.items()]
    groups.sort(key=lambda group: (-group.count, group.player_error_code or "", group.message or ""))
    return groups
