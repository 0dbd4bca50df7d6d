"""Which URLs the platform will fetch (asset inputs) or call (webhooks): the SSRF policy.

By default only ``http``, ``https`` and ``s3`` URLs whose host resolves exclusively to public addresses are
accepted: loopback, private (RFC 1918, ULA), link-local (including the cloud metadata service at
169.254.169.254), multicast, reserved and unspecified addresses are refused, and so is a host name that
resolves to any of them. ``api.allow_private_inputs`` lifts the address check (a trusted single-tenant setup);
``api.allow_file_inputs`` additionally accepts ``file://`` inputs.

The check runs when a URL is accepted and again right before each fetch (DNS answers change), redirects are
checked hop by hop by the fetcher (:mod:`kinoray.control.ingest`), and the connections themselves check the
addresses they connect to (:mod:`kinoray.control.outbound`), so a name that resolves elsewhere by then
(DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from kinoray.errors import InputUrlRefusedError
from kinoray.settings import Settings

__all__ = ["check_addresses", "check_public_url", "is_public_address"]

_INPUT_SCHEMES = ("http", "https", "s3")
_WEBHOOK_SCHEMES = ("http", "https")


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback/private/link-local/reserved/...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise InputUrlRefusedError(f"cannot resolve host {host!r}: {error}") from None
    return sorted({str(info[4][0]) for info in infos})


def check_public_url(url: str, settings: Settings, *, purpose: str = "input") -> None:
    """Refuse ``url`` (``InputUrlRefusedError``, 400) unless the policy above accepts it for ``purpose``
    (``"input"`` or ``"webhook"``). Resolves the host name (a DNS lookup)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InputUrlRefusedError(f"malformed URL: {error}") from None
    scheme = parts.scheme.lower()
    allowed = _WEBHOOK_SCHEMES if purpose == "webhook" else _INPUT_SCHEMES
    if scheme == "file" and purpose == "input":
        if not settings.api.allow_file_inputs:
            raise InputUrlRefusedError("file:// inputs are disabled (KINORAY_API__ALLOW_FILE_INPUTS)")
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InputUrlRefusedError("a file:// input must be an absolute local path")
        return
    if scheme not in allowed:
        raise InputUrlRefusedError(f"{purpose} URLs must use {', '.join(allowed)}; got {scheme or 'no'} scheme")
    host = parts.hostname
    if not host:
        raise InputUrlRefusedError(f"the {purpose} URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InputUrlRefusedError("credentials in URLs are not accepted")
    if scheme == "s3" or settings.api.allow_private_inputs:
        return  # an s3 bucket name is not an address; the storage client's endpoint is configured, not given
    check_addresses(host, _resolve(host, port or (443 if scheme == "https" else 80)), settings, purpose=purpose)


def check_addresses(host: str, addresses: list[str], settings: Settings, *, purpose: str = "input",
                    when: str = "") -> None:
    """Refuse (``InputUrlRefusedError``) when any address ``host`` resolved to is not public, unless
    ``api.allow_private_inputs``. ``when`` says at which step, for the message (e.g. " at connection time")."""
    if settings.api.allow_private_inputs:
        return
    refused = [address for address in addresses if not is_public_address(address)]
    if refused:
        raise InputUrlRefusedError(
            f"the {purpose} URL's host {host!r} resolves to a non-public address ({refused[0]}){when}; "
            "such URLs are refused (KINORAY_API__ALLOW_PRIVATE_INPUTS allows them in trusted setups)")
