"""Caps on images made on request (``KINORAY_IMAGES__*``, :class:`kinoray.control.images.ImageGuard`): many
distinct URLs from one client, the per-process render budget and concurrency, and the per-asset storage caps.

Over real HTTP through the test edge (:class:`tests.api_server.ApiServer`), one server per test with the caps it
needs. Oracles are independent of the code under test: what is stored is read by walking the storage directory
with ``os``, and every image a test calls served is decoded by the Debian ffprobe. A second client is a second
source address on the loopback network (127.0.0.2), which the edge sees as another peer.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.test_images import Images, probe_image, transcoded  # noqa: F401 - transcoded is a fixture

OTHER_CLIENT = "127.0.0.2"


class _FromAddress(HTTPAdapter):
    """Connections from ``address`` (a second client, as the server sees it)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def other_client() -> requests.Session:
    session = requests.Session()
    session.mount("http://", _FromAddress(OTHER_CLIENT))
    return session


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory):
    from tests.api_server import Backend

    backend = Backend("sqlite", tmp_path_factory.mktemp("caps-db"))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def serve(backend, transcoded, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811 - the fixture
    """``serve(**images)``: a running server with those ``images`` settings and one ready asset (``Images``).
    Only 127.0.0.1 (the test clients' own address) is a trusted proxy."""
    from tests.api_server import ApiServer

    @contextmanager
    def start(**images) -> Iterator[Images]:
        server = ApiServer(backend.new_url(), tmp_path_factory.mktemp("caps-api"), images=images,
                           api={"trusted_proxies": ["127.0.0.1/32"]})
        try:
            yield Images(server, *transcoded)
        finally:
            server.close()

    return start


def stored(directory: Path) -> dict[str, int]:
    """Every file under an asset's images directory and its size, committed or not, read with ``os``."""
    if not directory.exists():
        return {}
    return {entry.name: entry.stat().st_size for entry in os.scandir(directory) if entry.is_file()}


def assert_image(answer: requests.Response, codec: str, size: tuple[int, int]) -> None:
    """``answer`` is a 200 whose body the Debian ffprobe decodes as ``codec`` of ``size``."""
    assert answer.status_code == 200, answer.text
    stream = probe_image(answer.content)
    assert stream["codec_name"] == codec and (stream["width"], stream["height"]) == size
    assert int(stream["nb_read_frames"]) >= 1


def assert_limited(answer: requests.Response, most_seconds: float) -> int:
    """A typed 429 with an integer ``Retry-After`` of 1..``most_seconds``; returns it."""
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"]["type"] == "too_many_requests"
    retry_after = int(answer.headers["retry-after"])
    assert 1 <= retry_after <= math.ceil(most_seconds)
    assert answer.headers["x-ratelimit-remaining"] == "0"
    return retry_after


def renders() -> int:
    from kinoray.control.images import RENDERS

    return sum(RENDERS.values())


# --- many distinct URLs from one client ----------------------------------------------------------------------


def test_distinct_urls_from_one_client_are_capped(serve) -> None:
    """The audit's amplification: one client asking for 24 distinct thumbnails. It gets ``client_render_burst``
    of them made, the asset keeps ``max_variants_per_asset``, the rest is a typed 429 with Retry-After; stored
    images are still served to it, and another client is not held back by its bucket."""
    burst, variants, rate = 10, 4, 0.01
    with serve(client_render_burst=burst, client_renders_per_second=rate, max_variants_per_asset=variants,
               render_seconds_per_window=1000) as images:
        before = renders()
        answers = [images.get("thumbnail.jpg", time=round(0.2 * n, 1), width=160) for n in range(24)]
        served = answers[:burst]
        for answer in served:
            assert_image(answer, "mjpeg", (160, 90))
        assert [answer.headers["x-image-cache"] for answer in served] == ["miss"] * variants + ["bypass"] * (
            burst - variants)
        for answer in answers[burst:]:
            assert_limited(answer, 1 / rate)
        assert renders() - before == burst

        on_disk = stored(images.images_dir)
        assert len(on_disk) == variants and all(".tmp-" not in name for name in on_disk)
        assert sorted(on_disk.values()) == sorted(len(answer.content) for answer in served[:variants])

        # stored images are served to the limited client, bytes unchanged, without a render
        for n in range(variants):
            again = images.get("thumbnail.jpg", time=round(0.2 * n, 1), width=160)
            assert again.status_code == 200 and again.headers["x-image-cache"] == "hit"
            assert again.content == served[n].content
        head = requests.head(answers[0].url, timeout=30)
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(served[0].content)
        # one that was made but not stored needs a render: the limited client is refused it
        assert_limited(images.get("thumbnail.jpg", time=round(0.2 * variants, 1), width=160), 1 / rate)
        assert renders() - before == burst

        # another client has its own bucket: a new image is made for it (the asset is full: not stored)
        with other_client() as session:
            fresh = session.get(f"{images.url}/{images.public}/thumbnail.png", params={"time": 3, "width": 200},
                                timeout=60)
            assert_image(fresh, "png", (200, 112))
            assert fresh.headers["x-image-cache"] == "bypass"
            hit = session.get(answers[1].url, timeout=60)
            assert hit.status_code == 200 and hit.headers["x-image-cache"] == "hit"
        # behind a trusted proxy (a load balancer at 127.0.0.1), the client it names is charged, not the proxy
        forwarded = requests.get(f"{images.url}/{images.public}/thumbnail.webp", params={"time": 4, "width": 120},
                                 headers={"X-Forwarded-For": "198.51.100.7"}, timeout=60)
        assert_image(forwarded, "webp", (120, 68))
        assert forwarded.headers["x-image-cache"] == "bypass"
        assert renders() - before == burst + 2
        assert stored(images.images_dir) == on_disk


def test_client_bucket_refills(serve) -> None:
    """After Retry-After seconds the limited client may have a new image made."""
    with serve(client_render_burst=2, client_renders_per_second=0.5, render_seconds_per_window=1000) as images:
        for n in range(2):
            assert images.get("thumbnail.jpg", time=n, width=64).status_code == 200
        retry_after = assert_limited(images.get("thumbnail.jpg", time=2, width=64), 2.0)
        time.sleep(retry_after)
        assert_image(images.get("thumbnail.jpg", time=2, width=64), "mjpeg", (64, 36))


# --- the render budget ---------------------------------------------------------------------------------------


def test_render_budget_refuses_new_renders_for_every_client(serve) -> None:
    """Once the process has spent its rendering seconds, new images are refused to every client (429, Retry-After
    when the budget holds some again) while stored ones are served; after Retry-After renders resume."""
    from kinoray.control.images import guard_for

    seconds, window = 0.05, 0.25  # refills at 0.2 s of rendering per second; one GIF costs more than 0.05 s
    rate = seconds / window
    with serve(render_seconds_per_window=seconds, render_window_seconds=window, client_render_burst=100) as images:
        budget = guard_for(images.server.platform).budget
        before = renders()
        first = images.get("animated.gif", start=0, end=5, fps=20)  # a few tenths of a second of rendering
        assert_image(first, "gif", (320, 180))
        made, refused = 1, None
        for n in range(1, 10):  # spend the rest, if the first did not
            answer = images.get("animated.gif", start=n * 0.25, end=n * 0.25 + 5, fps=20)
            if answer.status_code == 429:
                refused = answer
                break
            assert_image(answer, "gif", (320, 180))
            made += 1
        assert refused is not None, "the budget was never spent"
        assert renders() - before == made
        left = budget.left()
        assert left < 0  # a debt: the render that spent the budget ran past it
        retry_after = assert_limited(refused, -left / rate + 2)
        assert retry_after >= -left / rate  # the debt when it was refused was at least what is left of it now
        assert "budget" in refused.json()["error"]["messages"][0]

        # the budget is the process's: another client is refused too, and stored images are still served
        with other_client() as session:
            other = session.get(f"{images.url}/{images.public}/thumbnail.jpg", params={"time": 1}, timeout=60)
            assert_limited(other, retry_after + 1)
        hit = images.get("animated.gif", start=0, end=5, fps=20)
        assert hit.status_code == 200 and hit.headers["x-image-cache"] == "hit" and hit.content == first.content
        assert renders() - before == made

        time.sleep(retry_after)
        assert_image(images.get("thumbnail.jpg", time=1, width=96), "mjpeg", (96, 54))
        assert renders() - before == made + 1


def test_concurrent_renders_are_bounded(serve) -> None:
    """``max_concurrent_renders`` 1 and no wait: of four distinct GIFs asked for at once, the one rendering
    holds the slot and the ones that find it taken are refused (429, Retry-After 1); with a wait, all are made."""
    from kinoray.control.images import guard_for

    def together(images: Images, offset: float) -> list[requests.Response]:
        barrier = threading.Barrier(4)
        answers: list[requests.Response] = []
        lock = threading.Lock()

        def fetch(n: int) -> None:
            barrier.wait()
            answer = images.get("animated.gif", start=offset + n * 0.25, end=offset + n * 0.25 + 4, fps=20)
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=fetch, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        return answers

    with serve(max_concurrent_renders=1, render_wait_seconds=0, render_seconds_per_window=1000) as images:
        answers = together(images, 0)
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses.count(200) >= 1 and statuses.count(429) >= 1 and set(statuses) == {200, 429}
        for answer in answers:
            if answer.status_code == 429:
                assert assert_limited(answer, 1) == 1
            else:
                assert_image(answer, "gif", (320, 180))
        assert guard_for(images.server.platform).budget.concurrent == 1

    with serve(max_concurrent_renders=1, render_wait_seconds=60, render_seconds_per_window=1000) as images:
        for answer in together(images, 0.5):
            assert_image(answer, "gif", (320, 180))


# --- per-asset storage ---------------------------------------------------------------------------------------


def test_stored_bytes_per_asset_never_exceed_the_cap(serve) -> None:
    """Distinct PNGs, eight at a time: what is stored for the asset never passes ``max_bytes_per_asset``
    (the storage directory, walked after every round), each image left unstored would not have fitted, and the
    unstored ones are served whole."""
    cap = 150_000
    with serve(max_bytes_per_asset=cap, max_variants_per_asset=1000, client_render_burst=1000,
               render_seconds_per_window=1000, max_concurrent_renders=4) as images:
        answers: list[requests.Response] = []
        lock = threading.Lock()

        def fetch(width: int) -> None:
            answer = images.get("thumbnail.png", time=width / 100, width=width)
            with lock:
                answers.append(answer)

        for round_ in range(3):
            threads = [threading.Thread(target=fetch, args=(200 + 40 * (8 * round_ + n),)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert sum(stored(images.images_dir).values()) <= cap
        assert len(answers) == 24
        for answer in answers:
            width = int(answer.url.rsplit("width=", 1)[1])
            assert_image(answer, "png", (width, round(Fraction(width * 9, 16))))
        on_disk = stored(images.images_dir)
        kept = [answer for answer in answers if answer.headers["x-image-cache"] == "miss"]
        left_out = [answer for answer in answers if answer.headers["x-image-cache"] == "bypass"]
        assert kept and left_out and len(kept) + len(left_out) == 24
        assert sorted(on_disk.values()) == sorted(len(answer.content) for answer in kept)
        total = sum(on_disk.values())
        assert total <= cap
        assert all(total + len(answer.content) > cap for answer in left_out)


def test_storage_usage_is_the_listing(tmp_path: Path) -> None:
    """:class:`ImageStorage` counts what the store lists (another process's images included once its listing is
    older than the TTL; at once with TTL 0), never its own guess, and refuses what would pass either cap."""
    from kinoray.control.images import ImageStorage, ImageUsage
    from kinoray.settings import StorageSettings
    from kinoray.store.objects import ObjectStore

    store = ObjectStore(str(tmp_path), StorageSettings())
    now = [0.0]
    mine = ImageStorage(store, max_variants=3, max_bytes=1000, ttl=10, clock=lambda: now[0])
    other = ImageStorage(store, max_variants=3, max_bytes=1000, ttl=0)
    prefix = "assets/a/images"
    assert mine.usage(prefix) == ImageUsage(0, 0)
    assert mine.store_if_room(prefix, f"{prefix}/1.jpg", b"x" * 400)
    (tmp_path / prefix / "2.jpg.tmp-abc").write_bytes(b"y" * 50)  # a writer's uncommitted object: not a variant
    assert other.store_if_room(prefix, f"{prefix}/3.jpg", b"z" * 500)  # another process, listing every time
    assert mine.usage(prefix) == ImageUsage(1, 400)  # its listing is still fresh
    assert mine.store_if_room(prefix, f"{prefix}/4.jpg", b"w" * 550)  # within what it knows: 950
    now[0] = 10.0  # stale: listed again, and now it sees the other's 500 bytes
    assert mine.usage(prefix) == ImageUsage(3, 1450)  # two processes passed the cap within one TTL
    assert not mine.store_if_room(prefix, f"{prefix}/5.jpg", b"v")
    assert not other.store_if_room(prefix, f"{prefix}/5.jpg", b"v")
    assert sorted(os.listdir(tmp_path / prefix)) == ["1.jpg", "2.jpg.tmp-abc", "3.jpg", "4.jpg"]

    strict = ImageStorage(store, max_variants=2, max_bytes=10_000, ttl=0)
    second = "assets/b/images"
    assert strict.store_if_room(second, f"{second}/1.jpg", b"a")
    assert strict.store_if_room(second, f"{second}/1.jpg", b"bb")  # the same key again: still one variant
    assert strict.store_if_room(second, f"{second}/3.jpg", b"c")  # the second variant
    assert strict.usage(second).variants == 2
    assert not strict.store_if_room(second, f"{second}/4.jpg", b"d")
    assert strict.usage(second) == ImageUsage(2, 3)


def test_storage_usage_on_s3(s3_server, s3_bucket) -> None:
    """The same accounting over S3 (moto): keys and sizes from the bucket's listing, checked with boto3."""
    import boto3

    from kinoray.control.images import ImageStorage, ImageUsage
    from kinoray.settings import StorageSettings
    from kinoray.store.objects import ObjectStore

    store = ObjectStore(f"s3://{s3_bucket}/root", StorageSettings(s3_endpoint_url=s3_server))
    prefix = "assets/a/images"
    first = ImageStorage(store, max_variants=10, max_bytes=1000, ttl=0)
    second = ImageStorage(ObjectStore(store.url, store.settings), max_variants=10, max_bytes=1000, ttl=0)
    assert first.store_if_room(prefix, f"{prefix}/1.jpg", b"x" * 600)
    assert second.usage(prefix) == ImageUsage(1, 600)
    assert not second.store_if_room(prefix, f"{prefix}/2.jpg", b"y" * 401)
    assert second.store_if_room(prefix, f"{prefix}/2.jpg", b"y" * 400)
    assert first.usage(prefix) == ImageUsage(2, 1000)
    listing = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3_bucket, Prefix=f"root/{prefix}/")
    assert sorted((item["Key"], item["Size"]) for item in listing["Contents"]) == [
        (f"root/{prefix}/1.jpg", 600), (f"root/{prefix}/2.jpg", 400)]


# --- the pieces, with a clock --------------------------------------------------------------------------------


def test_render_budget_bucket() -> None:
    from kinoray.control.images import RenderBudget
    from kinoray.errors import RateLimitedError

    now = [0.0]
    budget = RenderBudget(10.0, 60.0, concurrent=2, wait=0, clock=lambda: now[0])
    budget.check()
    budget.charge(12.0)  # a render may end past the budget: a debt of 2 s
    assert budget.left() == pytest.approx(-2.0)
    with pytest.raises(RateLimitedError) as refused:
        budget.check()
    assert refused.value.retry_after == pytest.approx(2.0 / (10 / 60))
    assert refused.value.limit == 10
    now[0] = 12.0 + 1e-6  # 2 s of debt back at 1/6 s per second
    budget.check()
    now[0] = 1000.0
    assert budget.left() == 10.0  # never more than the budget
    with budget.slot(), budget.slot():
        with pytest.raises(RateLimitedError) as busy:
            with budget.slot():
                pass
        assert busy.value.retry_after == 1.0 and busy.value.limit == 2
    with budget.slot():
        pass


def test_guard_charges_the_client_only_when_the_budget_allows(tmp_path: Path) -> None:
    """A refusal for the server's sake (budget spent) costs the client no token."""
    from kinoray.control.images import ImageGuard
    from kinoray.errors import RateLimitedError
    from kinoray.settings import Settings
    from kinoray.store.objects import ObjectStore

    settings = Settings(data_dir=tmp_path, images={"client_render_burst": 1, "client_renders_per_second": 0.001,
                                                   "render_seconds_per_window": 1, "render_window_seconds": 3600})
    guard = ImageGuard.from_settings(settings, ObjectStore(str(tmp_path)))
    guard.budget.charge(5)
    with pytest.raises(RateLimitedError, match="budget"):
        guard.render("10.0.0.1", lambda: b"never")
    guard.budget.charge(-10)
    assert guard.render("10.0.0.1", lambda: b"made") == b"made"  # its one token was still there
    with pytest.raises(RateLimitedError, match="per client"):
        guard.render("10.0.0.1", lambda: b"never")
    assert guard.render("10.0.0.2", lambda: b"other") == b"other"


def test_image_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from kinoray.settings import Settings, settings_env

    monkeypatch.setenv("KINORAY_IMAGES__MAX_VARIANTS_PER_ASSET", "7")
    monkeypatch.setenv("KINORAY_IMAGES__CLIENT_RENDERS_PER_SECOND", "0.5")
    settings = Settings()
    assert settings.images.max_variants_per_asset == 7 and settings.images.client_renders_per_second == 0.5
    assert settings.images.max_bytes_per_asset == 16 * 1024**2
    # an edge worker process rebuilds them from the environment it is given
    monkeypatch.delenv("KINORAY_IMAGES__MAX_VARIANTS_PER_ASSET")
    monkeypatch.delenv("KINORAY_IMAGES__CLIENT_RENDERS_PER_SECOND")
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert Settings().images == settings.images
