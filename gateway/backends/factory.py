"""Build the configured backends by their ``type`` (the only place that knows all kinds)."""

from __future__ import annotations

from gateway.backends.base import Backend
from gateway.backends.local import LocalBackend
from gateway.settings import (
    DicomwebBackendSettings,
    DimseBackendSettings,
    LocalBackendSettings,
    Settings,
)


async def open_backend(name: str, settings: Settings) -> Backend:
    """Open the backend ``name`` defined in ``settings.backends``."""
    config = settings.backends[name]
    if isinstance(config, LocalBackendSettings):
        return await LocalBackend.open(settings.store)
    if isinstance(config, DicomwebBackendSettings):
        from gateway.backends.dicomweb import DicomwebBackend

        return await DicomwebBackend.open(name, config)
    if isinstance(config, DimseBackendSettings):
        from gateway.backends.dimse import DimseBackend

        return await DimseBackend.open(name, config, settings.store)
    raise AssertionError(f"unhandled backend settings {config!r}")  # settings validated types
