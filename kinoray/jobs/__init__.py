"""Ray job entrypoints (``ray job submit -- python -m kinoray.jobs.<name>``)."""

__all__: list[str] = []
