"""A Backend wrapper that injects faults a real local store cannot produce on demand.

Everything not scripted goes to the wrapped real backend. Faults are exceptions raised by
one operation (``search``, ``create``, ``update``, ``retrieve``, ``ready``); a search can
also stall after its first results until the caller stops it, to test client disconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from gateway.backends.base import Backend, MppsResult
from gateway.model.query import WorklistQuery
from gateway.model.types import JsonDataset


@dataclass
class SearchStall:
    """Yield ``after`` results, then wait forever; records how the generator ended."""

    after: int = 1
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class FaultyBackend:
    """Wraps ``inner``; ``faults[op]`` is raised by that operation (once or always)."""

    name = "faulty"

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.cheap_remaining_count = inner.cheap_remaining_count
        self.faults: dict[str, BaseException] = {}
        self.sticky: set[str] = set()
        self.stall: SearchStall | None = None
        self.warnings: tuple[str, ...] = ()
        self.closed_searches = 0

    def fail(self, op: str, error: BaseException, *, always: bool = False) -> None:
        self.faults[op] = error
        if always:
            self.sticky.add(op)

    def _fault(self, op: str) -> BaseException | None:
        if op in self.sticky:
            return self.faults.get(op)
        return self.faults.pop(op, None)

    async def search_worklist(self, query: WorklistQuery) -> AsyncIterator[JsonDataset]:
        error = self._fault("search")
        stall = self.stall
        inner = self.inner.search_worklist(query)
        try:
            if error is not None:
                raise error
            count = 0
            async for item in inner:
                if stall is not None and count == stall.after:
                    stall.reached.set()
                    await asyncio.Event().wait()
                yield item
                count += 1
        finally:
            await inner.aclose()  # type: ignore[attr-defined]
            self.closed_searches += 1
            if stall is not None:
                stall.closed.set()

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        error = self._fault("create")
        if error is not None:
            raise error
        result = await self.inner.create_mpps(uid, attributes)
        return MppsResult(result.dataset, result.warnings + self.warnings)

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        error = self._fault("update")
        if error is not None:
            raise error
        result = await self.inner.update_mpps(uid, changes)
        return MppsResult(result.dataset, result.warnings + self.warnings)

    async def retrieve_mpps(self, uid: str, tags: Sequence[int] | None = None) -> MppsResult:
        error = self._fault("retrieve")
        if error is not None:
            raise error
        return await self.inner.retrieve_mpps(uid, tags)

    async def check_ready(self) -> None:
        error = self._fault("ready")
        if error is not None:
            raise error
        await self.inner.check_ready()

    async def aclose(self) -> None:
        """The wrapped backend belongs to its fixture; nothing to release here."""
