"""Pinned API of the local backend (being implemented)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from gateway.backends.base import MppsResult
from gateway.model.query import WorklistQuery
from gateway.model.types import JsonDataset
from gateway.settings import StoreSettings


@dataclass(frozen=True)
class ImportReport:
    """What an import did: counts of inserted and updated items."""

    inserted: int
    updated: int


class LocalBackend:
    """The Backend protocol on SQLite (WAL), plus worklist maintenance for operators."""

    name: str = "local"

    @classmethod
    async def open(cls, settings: StoreSettings) -> LocalBackend:
        """Open (creating if needed) the database at ``settings.path``."""
        raise NotImplementedError

    async def upsert_worklist_items(self, items: Iterable[JsonDataset]) -> ImportReport:
        """Insert or update scheduled procedure steps (key: Study Instance UID + SPS ID)."""
        raise NotImplementedError

    def search_worklist(self, query: WorklistQuery) -> AsyncIterator[JsonDataset]:
        raise NotImplementedError

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        raise NotImplementedError

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        raise NotImplementedError

    async def retrieve_mpps(self, uid: str, tags: Sequence[int] | None = None) -> MppsResult:
        raise NotImplementedError

    async def check_ready(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError
