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
    upstream: Backend
    if isinstance(config, DicomwebBackendSettings):
        from gateway.backends.dicomweb import DicomwebBackend

        upstream = await DicomwebBackend.open(name, config)
    elif isinstance(config, DimseBackendSettings):
        from gateway.backends.dimse import DimseBackend

        upstream = await DimseBackend.open(name, config, settings.store)
    else:
        raise AssertionError(f"unhandled backend settings {config!r}")  # settings validated
    if not config.store_and_forward:
        return upstream
    return await _with_outbox(upstream, config, settings)


async def _with_outbox(
    upstream: Backend, config: DicomwebBackendSettings | DimseBackendSettings, settings: Settings
) -> Backend:
    """Wrap an upstream in the durable MPPS outbox (``store_and_forward = true``)."""
    from gateway.backends.outbox import RetryPolicy, StoreAndForwardBackend

    policy = RetryPolicy.from_settings(config, settings.shutdown_grace_s)
    try:
        return await StoreAndForwardBackend.open(upstream, settings.store.path, policy)
    except BaseException:
        await upstream.aclose()
        raise
