"""Playback restrictions (Mux's ``/video/v1/playback-restrictions``): referrer and user-agent rules that a signed
playback token opts into with its ``playback_restriction_id`` claim, enforced by the delivery edge on every
manifest, segment, file and image the token opens.

A restriction holds:

- ``referrer.allowed_domains``: ``[]`` refuses every request that carries a ``Referer``; ``["*"]`` allows any;
  otherwise up to :data:`MAX_DOMAINS` host names (``example.com``: that host only) or DNS-style wildcards
  (``*.example.com``: any host below ``example.com``, at any depth — ``www.example.com``,
  ``a.b.example.com`` — but not ``example.com`` itself: list both to allow both). Matching is on the
  ``Referer``'s host, case-insensitive, port ignored; a ``Referer`` without a host matches only ``*``.
- ``referrer.allow_no_referrer`` (default false): whether requests without a ``Referer`` play (native apps,
  smart TVs and ``Referrer-Policy: no-referrer`` pages send none).
- ``user_agent.allow_no_user_agent`` (default true): whether requests without a ``User-Agent`` play.
- ``user_agent.allow_high_risk_user_agent`` (default true): whether clients that announce themselves as
  automated fetchers play. Mux does not publish its list; kinoray's rule is :data:`HIGH_RISK_USER_AGENT`, product
  tokens of command-line HTTP clients and HTTP libraries (curl, Wget, python-requests, ...), media downloaders
  and FFmpeg (``Lavf/``, yt-dlp, streamlink, ...), headless browsers (``HeadlessChrome``, PhantomJS) and
  self-declared crawlers (``...bot/``, ``crawler``, ``spider``). It is a filter on what a client says about
  itself: a tool that sends a browser's ``User-Agent`` passes, as it does at Mux.

Headers can be forged by anything that is not a browser, so a restriction keeps honest browsers on other sites
from embedding a video; the signed token (short ``exp``) remains what gates access.

The edge caches a restriction for ``edge.cache_seconds`` per process
(:class:`kinoray.control.resolver.PlaybackResolver`), so a change or a delete reaches every edge process within
that bound. A token naming a restriction that does not exist (deleted, or never made) is refused: a rule that
cannot be read is not skipped.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from kinoray.control.lookup import find
from kinoray.errors import InvalidParametersError, PlaybackForbiddenError, PlaybackRestrictedError
from kinoray.store.db import newest_first
from kinoray.store.models import PlaybackRestriction, is_valid_id, utcnow

__all__ = [
    "CLAIM",
    "DOMAIN_PATTERN",
    "HIGH_RISK_USER_AGENT",
    "MAX_DOMAINS",
    "CreateRestriction",
    "PlaybackRestrictionView",
    "ReferrerRule",
    "RestrictionRule",
    "UserAgentRule",
    "Viewer",
    "create_restriction",
    "delete_restriction",
    "get_restriction",
    "high_risk",
    "list_restrictions",
    "load_rule",
    "normalize_domain",
    "restriction_id_of",
    "restriction_view",
    "update_referrer",
    "update_user_agent",
]

#: The JWT claim that names the restriction a token plays under (what ``mux.jwt``'s ``playbackRestrictionId``
#: and mux-python's signing helpers write).
CLAIM = "playback_restriction_id"
MAX_DOMAINS = 10

#: Clients that say they are automated fetchers (see the module docstring): any of these, in lower case,
#: anywhere in the ``User-Agent``.
HIGH_RISK_USER_AGENT = (
    "curl/", "wget/", "python-requests/", "python-urllib/", "python-httpx/", "aiohttp/", "go-http-client/",
    "libwww-perl/", "node-fetch/", "axios/", "undici", "powershell/", "httpie/",
    "lavf/", "ffmpeg", "ffprobe", "yt-dlp", "youtube-dl", "streamlink", "aria2/",
    "headlesschrome", "phantomjs",
    "bot/", "crawler", "spider", "scrapy",
)

_LABEL_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: What an ``allowed_domains`` entry may be: ``*``, or a host name (``*.`` in front for a wildcard), trailing dot
#: allowed. Also the OpenAPI document's pattern, so generated clients and schemathesis know it.
DOMAIN_PATTERN = rf"^(?:\*|(?:\*\.)?{_LABEL_PATTERN}(?:\.{_LABEL_PATTERN})*\.?)$"
_DOMAIN = re.compile(DOMAIN_PATTERN)


# --- the rule and its check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """What a restriction looks at in a viewer's request: its ``Referer`` and ``User-Agent`` (``None``: absent)."""

    referer: str | None = None
    user_agent: str | None = None

    @classmethod
    def from_headers(cls, headers: Any) -> Viewer:
        """From a mapping of lower-case header names (an ``EdgeRequest``'s, Starlette's ``Headers``)."""
        return cls(referer=headers.get("referer") or None, user_agent=headers.get("user-agent") or None)


@functools.lru_cache(maxsize=4096)
def high_risk(user_agent: str) -> bool:
    """Whether ``user_agent`` names an automated fetcher (:data:`HIGH_RISK_USER_AGENT`); remembered per process,
    since a viewer sends the same one for every segment."""
    lowered = user_agent.lower()
    return any(token in lowered for token in HIGH_RISK_USER_AGENT)


def _host_of(referer: str) -> str | None:
    try:
        host = urlsplit(referer.strip()).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


@dataclass(frozen=True)
class RestrictionRule:
    """A restriction as the edge checks it: one database row read, cached per process."""

    id: str
    allowed_domains: tuple[str, ...]
    allow_no_referrer: bool
    allow_no_user_agent: bool
    allow_high_risk_user_agent: bool

    def allows_host(self, host: str) -> bool:
        for entry in self.allowed_domains:
            if entry == "*" or entry == host:
                return True
            if entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        return False

    def check(self, viewer: Viewer) -> None:
        """Nothing when ``viewer`` may play under this restriction.

        Raises:
            PlaybackRestrictedError: the ``Referer`` or ``User-Agent`` is refused (the reason in the message).
        """
        if viewer.referer is None:
            if not self.allow_no_referrer:
                raise PlaybackRestrictedError(f"playback restriction {self.id} refuses requests without a Referer")
        else:
            host = _host_of(viewer.referer)
            if not (self.allowed_domains == ("*",) or (host is not None and self.allows_host(host.lower()))):
                shown = host if host is not None else viewer.referer[:64]
                raise PlaybackRestrictedError(f"referrer {shown!r} is not allowed by playback restriction {self.id}")
        if viewer.user_agent is None:
            if not self.allow_no_user_agent:
                raise PlaybackRestrictedError(f"playback restriction {self.id} refuses requests without a User-Agent")
        elif not self.allow_high_risk_user_agent and high_risk(viewer.user_agent):
            raise PlaybackRestrictedError(f"playback restriction {self.id} refuses this User-Agent (an automated "
                                          "client)")


def restriction_id_of(claims: Any) -> str | None:
    """The restriction a token's verified ``claims`` name, or ``None``.

    Raises:
        PlaybackForbiddenError: the claim is there but cannot be an id.
    """
    value = claims.get(CLAIM) if claims is not None else None
    if value is None:
        return None
    if not isinstance(value, str) or not is_valid_id(value):
        raise PlaybackForbiddenError(f"token claim {CLAIM} is not a playback restriction id")
    return value


def load_rule(session: Session, restriction_id: str, environment_id: str | None = None) -> RestrictionRule | None:
    """The restriction's rule, or ``None`` when there is no such restriction (in ``environment_id``, if given:
    a signed playback id's token names a restriction of the playback id's own environment)."""
    row = session.get(PlaybackRestriction, restriction_id) if is_valid_id(restriction_id) else None
    if row is None or (environment_id is not None and row.environment_id != environment_id):
        return None
    return RestrictionRule(id=row.id, allowed_domains=tuple(row.allowed_domains or ()),
                           allow_no_referrer=row.allow_no_referrer, allow_no_user_agent=row.allow_no_user_agent,
                           allow_high_risk_user_agent=row.allow_high_risk_user_agent)


# --- the resource ----------------------------------------------------------------------------------------------


def normalize_domain(entry: str) -> str:
    """``entry`` as stored: lower case, no trailing dot. ``*``, a host name (or IPv4 address) or ``*.`` and a host
    name (:data:`DOMAIN_PATTERN`).

    Raises:
        InvalidParametersError: anything else (a URL, a port, a wildcard elsewhere than the first label).
    """
    value = entry.strip().lower()
    if len(value) > 253 or not _DOMAIN.match(value):
        raise InvalidParametersError(f"allowed_domains entry {entry[:80]!r} is not a domain, '*' or a '*.' wildcard "
                                     "(no scheme, port or path)")
    return value if value == "*" else value.removesuffix(".")


class ReferrerRule(BaseModel):
    """Mux's ``referrer`` object."""

    model_config = ConfigDict(extra="forbid")

    allowed_domains: list[Annotated[str, Field(max_length=253, pattern=DOMAIN_PATTERN)]] = Field(
        max_length=MAX_DOMAINS, description="[] denies every referrer, ['*'] allows any, else up to 10 domains or "
                                            "'*.example.com' wildcards (any host below example.com)")
    allow_no_referrer: bool = Field(default=False, description="whether requests without a Referer play")


class UserAgentRule(BaseModel):
    """Mux's ``user_agent`` object."""

    model_config = ConfigDict(extra="forbid")

    allow_no_user_agent: bool = Field(default=True, description="whether requests without a User-Agent play")
    allow_high_risk_user_agent: bool = Field(
        default=True, description="whether clients announcing themselves as automated fetchers play (kinoray's "
                                  "list: docs/API.md)")


class CreateRestriction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    referrer: ReferrerRule
    user_agent: UserAgentRule = Field(default_factory=UserAgentRule)


class PlaybackRestrictionView(BaseModel):
    """A playback restriction as the API shows it (Mux's ``PlaybackRestriction``)."""

    id: str
    created_at: str = Field(description="unix seconds")
    updated_at: str = Field(description="unix seconds")
    referrer: ReferrerRule
    user_agent: UserAgentRule


def _unix(when: datetime) -> str:
    return str(int(when.timestamp()))


def restriction_view(row: PlaybackRestriction) -> PlaybackRestrictionView:
    return PlaybackRestrictionView(
        id=row.id, created_at=_unix(row.created_at), updated_at=_unix(row.updated_at),
        referrer=ReferrerRule(allowed_domains=list(row.allowed_domains or ()),
                              allow_no_referrer=row.allow_no_referrer),
        user_agent=UserAgentRule(allow_no_user_agent=row.allow_no_user_agent,
                                 allow_high_risk_user_agent=row.allow_high_risk_user_agent))


def _domains(rule: ReferrerRule) -> list[str]:
    domains = list(dict.fromkeys(normalize_domain(entry) for entry in rule.allowed_domains))
    return ["*"] if "*" in domains else domains  # '*' allows every domain: the others add nothing


def create_restriction(session: Session, request: CreateRestriction) -> PlaybackRestriction:
    row = PlaybackRestriction(allowed_domains=_domains(request.referrer),
                              allow_no_referrer=request.referrer.allow_no_referrer,
                              allow_no_user_agent=request.user_agent.allow_no_user_agent,
                              allow_high_risk_user_agent=request.user_agent.allow_high_risk_user_agent)
    session.add(row)
    session.flush()
    return row


def get_restriction(session: Session, restriction_id: str, *, for_update: bool = False) -> PlaybackRestriction:
    return find(session, PlaybackRestriction, restriction_id, what="playback restriction", for_update=for_update)


def list_restrictions(session: Session, *, limit: int, page: int = 1, cursor: str | None = None
                      ) -> tuple[list[PlaybackRestriction], str | None]:
    """One page, newest first (``cursor``, else Mux's numbered ``page``), and the next page's cursor.

    Raises:
        InvalidParametersError: a cursor that is not one of ours.
    """
    try:
        return newest_first(session, PlaybackRestriction, limit=limit, page=page, cursor=cursor)
    except ValueError as error:
        raise InvalidParametersError(str(error)) from None


def update_referrer(session: Session, restriction_id: str, rule: ReferrerRule) -> PlaybackRestriction:
    """Replace the referrer rule (Mux's ``PUT .../referrer``: the new list replaces the old one)."""
    row = get_restriction(session, restriction_id, for_update=True)
    row.allowed_domains, row.allow_no_referrer = _domains(rule), rule.allow_no_referrer
    row.updated_at = utcnow()
    session.flush()
    return row


def update_user_agent(session: Session, restriction_id: str, rule: UserAgentRule) -> PlaybackRestriction:
    row = get_restriction(session, restriction_id, for_update=True)
    row.allow_no_user_agent, row.allow_high_risk_user_agent = rule.allow_no_user_agent, rule.allow_high_risk_user_agent
    row.updated_at = utcnow()
    session.flush()
    return row


def delete_restriction(session: Session, restriction_id: str) -> None:
    """Delete it: tokens naming it are refused from the next cache expiry on."""
    session.delete(get_restriction(session, restriction_id))
    session.flush()
