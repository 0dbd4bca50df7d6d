"""HTTP routes, one module per resource; each exposes ``router`` (included by :func:`kinoray.serve.app.build_api`)."""

__all__: list[str] = []
