"""The backend contract: one suite, parametrised over every Backend implementation.

Each implementation contributes a :class:`Harness`: the backend under test plus the
backend-specific ways to put scheduled steps in place (DICOM has no service for that) and,
where the backend can, to delete an MPPS. Add a new backend by adding its factory to
``_FACTORIES``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.backends.base import Backend
from gateway.backends.local import LocalBackend
from gateway.model.types import JsonDataset
from gateway.settings import StoreSettings
from tests.fakes.origin import dicomweb_over


@dataclass
class Harness:
    """A backend under test and the out-of-band operations the contract needs."""

    backend: Backend
    seed: Callable[[list[JsonDataset]], Awaitable[None]]
    delete_mpps: Callable[[str], Awaitable[None]] | None = None


@asynccontextmanager
async def _local(tmp_path: Path) -> AsyncIterator[Harness]:
    backend = await LocalBackend.open(StoreSettings(path=tmp_path / "contract.sqlite3"))

    async def seed(items: list[JsonDataset]) -> None:
        await backend.upsert_worklist_items(items)

    try:
        yield Harness(backend=backend, seed=seed, delete_mpps=backend.delete_mpps)
    finally:
        await backend.aclose()


@asynccontextmanager
async def _dicomweb(tmp_path: Path) -> AsyncIterator[Harness]:
    """The dicomweb backend relaying to our own DICOMweb front over a local store."""
    async with _local(tmp_path) as local, dicomweb_over(local.backend, page_size=50) as relay:
        yield Harness(backend=relay, seed=local.seed, delete_mpps=local.delete_mpps)


_FACTORIES: dict[str, Callable[[Path], AbstractAsyncContextManager[Harness]]] = {
    "local": _local,
    "dicomweb": _dicomweb,
}


@pytest.fixture(params=sorted(_FACTORIES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """One harness per backend implementation."""
    async with _FACTORIES[request.param](tmp_path) as built:
        yield built


@pytest.fixture
def backend(harness: Harness) -> Backend:
    """The backend under test."""
    return harness.backend
