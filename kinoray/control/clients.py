"""Who is asking: the client address a request's limits are charged to.

A request that reaches the API through the delivery edge or a load balancer comes from that proxy's address; the
proxy names the client in ``X-Forwarded-For`` (each hop appends the address it saw). Only hops in
``api.trusted_proxies`` are believed: the client is the right-most address that is not a trusted proxy, so a
client cannot pick its own address by sending the header itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from kinoray.errors import ConfigurationError

__all__ = ["ClientAddresses"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddresses:
    """Reads client addresses behind the proxies in ``trusted`` (CIDR strings)."""

    def __init__(self, trusted: Iterable[str]) -> None:
        try:
            self.trusted: tuple[_Network, ...] = tuple(ipaddress.ip_network(net, strict=False) for net in trusted)
        except ValueError as error:
            raise ConfigurationError(f"api.trusted_proxies: {error}") from None

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: ``peer`` (the connection's remote address), or when ``peer`` is a trusted proxy
        the right-most untrusted hop of ``forwarded_for``. ``"unknown"`` when there is no peer (a Unix socket)."""
        address = peer or "unknown"
        if not forwarded_for or not self._is_trusted(address):
            return address
        for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
            if not hop:
                continue
            address = hop
            if not self._is_trusted(hop):
                break
        return address
