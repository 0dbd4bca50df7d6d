"""Ray Serve application (REST API, playback delivery)."""

__all__: list[str] = []
