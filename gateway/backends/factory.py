"""Build the configured backends by their ``type`` (the only place that knows all kinds)."""

from __future__ import annotations

from gateway.backends.base import Backend
from gateway.backends.local import LocalBackend
from gateway.errors import ConfigError
from gateway.settings import LocalBackendSettings, Settings


async def open_backend(name: str, settings: Settings) -> Backend:
    """Open the backend ``name`` defined in ``settings.backends``."""
    config = settings.backends[name]
    if isinstance(config, LocalBackendSettings):
        return await LocalBackend.open(settings.store)
    raise ConfigError(
        f"backends.{name}.type",
        f"backend type {config.type!r} is not available in this version",
    )
