"""Ray execution of transcodes. The only package (with ``jobs`` and ``serve``) that imports Ray."""

from kinoray.cluster.local import ensure_ray, ray_executor

__all__ = ["ensure_ray", "ray_executor"]
