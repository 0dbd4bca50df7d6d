"""Access-token permissions, as Mux scopes its tokens: per product, read-only or full.

Products, by the path a request names:

- ``system``: ``/system/v1/...`` and the signing keys also served at ``/video/v1/signing-keys`` (Mux asks for
  System permission to manage signing keys);
- ``video``: every other ``/video/v1/...`` path (assets, uploads, playback restrictions, delivery usage, ...);
- ``data``: ``/data/v1/...`` (Mux Data's API; the beacon collector, ``POST /`` and ``/data/v1/beacons`` on the
  edge, takes no token).

A token holds ``{"video": "read"|"full", "data": ..., "system": ...}``: ``read`` allows ``GET``/``HEAD``, ``full``
everything; a product left out is refused altogether. A token without permissions (every token made before
they existed, ``NULL`` in the database) has full access to every product, so existing tokens keep working.
A refusal is ``403 forbidden`` (:class:`~kinoray.errors.PermissionDeniedError`).

Managing access tokens and environments (``/system/v1/access-tokens``, ``/system/v1/environments``) needs
``system=full`` for every method, reads included (:func:`require_admin`). What a token reads and writes is
further bounded by its environment (:mod:`kinoray.store.scoping`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kinoray.errors import InvalidParametersError, PermissionDeniedError

__all__ = ["FULL_ACCESS", "LEVELS", "PRODUCTS", "check", "parse_permissions", "product_of", "require_admin"]

PRODUCTS = ("video", "data", "system")
LEVELS = ("read", "full")
#: What a token without explicit permissions may do.
FULL_ACCESS: Mapping[str, str] = {product: "full" for product in PRODUCTS}
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SYSTEM_PREFIXES = ("/system/", "/video/v1/signing-keys")


def product_of(path: str) -> str:
    """The product a request path belongs to (paths outside the three count as ``system``)."""
    if path.startswith(_SYSTEM_PREFIXES):
        return "system"
    if path.startswith("/video/"):
        return "video"
    if path.startswith("/data/"):
        return "data"
    return "system"


def parse_permissions(entries: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """Permissions from ``{"video": "read", ...}`` or ``["video=read", "system=full", ...]``.

    Raises:
        InvalidParametersError: an unknown product or level, or a product named twice.
    """
    pairs = entries.items() if isinstance(entries, Mapping) else [entry.partition("=")[::2] for entry in entries]
    permissions: dict[str, str] = {}
    for product, level in pairs:
        if product not in PRODUCTS or level not in LEVELS:
            raise InvalidParametersError(f"permission {product}={level} is not one of "
                                         f"{'|'.join(PRODUCTS)}={'|'.join(LEVELS)}")
        if product in permissions:
            raise InvalidParametersError(f"permission for {product} given twice")
        permissions[product] = level
    if not permissions:
        raise InvalidParametersError("a token needs at least one permission")
    return permissions


def check(permissions: Mapping[str, str] | None, method: str, path: str) -> None:
    """Nothing when a token with ``permissions`` (``None``: full access) may send ``method`` to ``path``.

    Raises:
        PermissionDeniedError: it may not.
    """
    if permissions is None:
        return
    product = product_of(path)
    level = permissions.get(product)
    if level == "full" or (level == "read" and method.upper() in _READ_METHODS):
        return
    if level is None:
        raise PermissionDeniedError(f"this access token has no {product} permission")
    raise PermissionDeniedError(f"this access token has read-only {product} permission: {method.upper()} needs "
                                "full access")


def require_admin(permissions: Mapping[str, str] | None) -> None:
    """Nothing when a token with ``permissions`` may manage access tokens and environments (``system=full``).

    Raises:
        PermissionDeniedError: it may not.
    """
    if permissions is not None and permissions.get("system") != "full":
        raise PermissionDeniedError("managing access tokens and environments needs system=full permission")
