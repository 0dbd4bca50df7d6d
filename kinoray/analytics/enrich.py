"""What the collector adds to a view from the request itself: browser, OS and device from the ``User-Agent``
(``ua-parser``'s bundled regexes) and country and ASN from the client address (``geoip2fast``'s bundled
database, read from the package, never downloaded). The address itself is only looked up, never returned.

Both databases load on first use (~0.2 s and ~50 MB for the geo tables) and are shared by the process.
``geoip2fast``'s bundled data has countries and ASNs but no regions: ``region`` stays unset.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from functools import lru_cache
from typing import Any

__all__ = ["client_dimensions"]

log = logging.getLogger(__name__)

_geo_lock = threading.Lock()
_geo: Any = None
_TABLETS = ("ipad", "tablet", "kindle", "nexus 7", "nexus 9", "nexus 10")
_PHONE_OSES = ("ios", "android", "windows phone", "kaios")
_TV_MARKS = ("smart-tv", "smarttv", "tizen", "webos", "roku", "appletv", "apple tv", "crkey", "bravia", "aft")


def _geo_db() -> Any:
    global _geo
    with _geo_lock:
        if _geo is None:
            from geoip2fast import GeoIP2Fast

            _geo = GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn.dat.gz")
        return _geo


@lru_cache(maxsize=4096)
def _user_agent(ua: str) -> tuple[tuple[str, str], ...]:
    from ua_parser import parse

    parsed = parse(ua)
    out: dict[str, str] = {}
    if parsed.user_agent is not None:
        out["browser"] = parsed.user_agent.family
        if parsed.user_agent.major:
            out["browser_version"] = ".".join(p for p in (parsed.user_agent.major, parsed.user_agent.minor) if p)
    os_family = ""
    if parsed.os is not None:
        os_family = parsed.os.family
        out["operating_system"] = os_family
        if parsed.os.major:
            out["operating_system_version"] = ".".join(p for p in (parsed.os.major, parsed.os.minor) if p)
    device = parsed.device
    if device is not None:
        if device.brand:
            out["viewer_device_manufacturer"] = device.brand
        if device.model or device.family:
            out["viewer_device_name"] = device.model or device.family
    lowered = ua.lower()
    family = (device.family if device else "").lower()
    if family == "spider":
        category = "bot"
    elif any(mark in lowered for mark in _TV_MARKS):
        category = "tv"
    elif any(mark in family or mark in lowered for mark in _TABLETS) or (
            os_family.lower() == "android" and "mobile" not in lowered):
        category = "tablet"
    elif os_family.lower() in _PHONE_OSES:
        category = "phone"
    else:
        category = "desktop"
    out["viewer_device_category"] = category
    return tuple(out.items())


@lru_cache(maxsize=16384)
def _address(address: str) -> tuple[tuple[str, str], ...]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ()
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified:
        return ()
    try:
        found = _geo_db().lookup(str(ip))
    except Exception:  # noqa: BLE001 - a geo lookup never fails a beacon
        log.warning("geo lookup failed", exc_info=True)
        return ()
    out = {}
    code = getattr(found, "country_code", "") or ""
    if len(code) == 2 and code.isalpha():
        out["country"] = code.upper()
    asn = getattr(found, "asn_name", "") or ""
    if asn:
        out["asn"] = asn
    return tuple(out.items())


def client_dimensions(user_agent: str | None, address: str | None) -> dict[str, str]:
    """Browser, OS, device and country/ASN dimensions of one request (only those that are known)."""
    out: dict[str, str] = {}
    if user_agent:
        out.update(_user_agent(user_agent[:512]))
    if address:
        out.update(_address(address))
    return out
