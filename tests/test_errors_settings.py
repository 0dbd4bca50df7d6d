import pytest

from kinoray import errors
from kinoray.errors import (
    ERROR_TABLE,
    EncoderUnavailableError,
    InvalidMediaError,
    KinorayError,
    MediaLimitError,
    http_status,
)
from kinoray.settings import Settings


def test_tree_and_builtin_bases() -> None:
    assert issubclass(InvalidMediaError, ValueError)
    assert issubclass(MediaLimitError, InvalidMediaError)
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type):
            assert issubclass(value, KinorayError)
            assert value in ERROR_TABLE, f"{name} has no HTTP status"


def test_status_table_follows_mro() -> None:
    assert http_status(InvalidMediaError("x")) == 400
    assert http_status(MediaLimitError("x")) == 413
    assert http_status(EncoderUnavailableError("x")) == 503

    class Custom(InvalidMediaError):
        pass

    assert http_status(Custom("x")) == 400


def test_types_are_stable_strings() -> None:
    types = [cls.type for cls in ERROR_TABLE]
    assert len(types) == len(set(types))


def test_settings_env_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINORAY_LIMITS__MAX_PIXELS", "1000")
    monkeypatch.setenv("KINORAY_TRANSCODE__SEGMENT_SECONDS", "6")
    settings = Settings()
    assert settings.limits.max_pixels == 1000
    assert settings.transcode.segment_seconds == 6


def test_production_refuses_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINORAY_ENVIRONMENT", "production")
    with pytest.raises(errors.ConfigurationError):
        Settings()
    monkeypatch.setenv("KINORAY_SECRET_KEY", "a-real-secret-value")
    assert Settings().environment == "production"
