"""Each package's ``__all__`` is exactly its public surface (nothing leaks, nothing is missing)."""

import importlib

import pytest

PACKAGES = ["kinoray", "kinoray.media", "kinoray.encoders", "kinoray.cluster", "kinoray.store", "kinoray.errors",
            "kinoray.settings", "kinoray.player", "kinoray.edge", "kinoray.live"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    is_package = hasattr(module, "__path__")
    public = set()
    for attr, value in vars(module).items():
        origin = getattr(value, "__module__", None)
        if attr.startswith("_") or not isinstance(origin, str) or isinstance(value, type(module)):
            continue
        if origin == name or (is_package and origin.startswith(f"{name}.")):
            public.add(attr)
    assert sorted(module.__all__) == sorted(set(module.__all__))
    missing = public - set(module.__all__)
    assert not missing, f"{name} exposes names not in __all__: {sorted(missing)}"
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ lists {attr} but it is not defined"


def test_edge_never_imports_ray() -> None:
    import subprocess
    import sys

    code = "import sys, kinoray.edge, kinoray.edge.app; sys.exit(1 if 'ray' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "the edge runs outside Ray: Ray-free"


def test_live_never_imports_ray_or_http_frameworks() -> None:
    import subprocess
    import sys

    code = ("import sys, kinoray.live; "
            "sys.exit(1 if {'ray', 'fastapi', 'starlette'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_media_never_imports_ray() -> None:
    import subprocess
    import sys

    code = ("import sys, kinoray.media, kinoray.encoders, kinoray.store, kinoray.media.torch_scale; "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "kinoray.media must stay Ray-free"
