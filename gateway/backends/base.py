"""The one async backend protocol that both fronts call and every backend implements.

Fronts never import a concrete backend: they receive a :class:`Backend` from the
composition root (:mod:`gateway.app`). Failures are raised as :mod:`gateway.errors`
exceptions, which each front maps through :mod:`gateway.model.status`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gateway.model.query import WorklistQuery
from gateway.model.types import JsonDataset


@dataclass(frozen=True)
class MppsResult:
    """The outcome of a successful MPPS write or read.

    ``dataset`` is the MPPS as the backend now holds it (for Retrieve: trimmed to the
    requested attributes). ``warnings`` are human-readable texts of a success with warnings
    (DIMSE 0107/0116/Bxxx, HTTP ``Warning: 299``).
    """

    dataset: JsonDataset
    warnings: tuple[str, ...] = field(default=())


@runtime_checkable
class Backend(Protocol):
    """Search the worklist and create, update, retrieve MPPS instances."""

    name: str
    cheap_remaining_count: bool
    """True when reading every match is cheap (a local index), so a paged Search can
    report the exact number of remaining results. False for upstreams, where a front that
    wants one page stops early (C-CANCEL, HTTP request aborted) instead of counting."""

    def search_worklist(self, query: WorklistQuery) -> AsyncIterator[JsonDataset]:
        """Stream every scheduled procedure step matching ``query``.

        Returns an async generator: results are yielded as they are found and the caller
        stops the search (C-CANCEL, client gone, limit reached) by closing it with
        ``aclose()`` or by cancelling the task. Paging (``offset``/``limit``) is applied
        by the caller; the backend yields all matches in a stable order. Each result carries
        at least the query's return keys that the item has.
        """
        ...

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        """Create the MPPS ``uid`` (N-CREATE / Create) from its N-CREATE attributes."""
        ...

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        """Apply an N-SET / Update to the MPPS ``uid``."""
        ...

    async def retrieve_mpps(self, uid: str, tags: Sequence[int] | None = None) -> MppsResult:
        """Return the MPPS ``uid``; ``tags`` limits it to those top-level attributes."""
        ...

    async def check_ready(self) -> None:
        """Raise a :class:`gateway.errors.GatewayError` unless the backend can serve now."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and files."""
        ...
