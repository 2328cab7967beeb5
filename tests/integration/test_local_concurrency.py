"""Concurrent readers and writers on one store, including a second handle on the same file.

Writers add steps in batches of ``BATCH`` (one transaction each) while readers search;
every search must see whole batches only (never a half-written transaction) and never
fewer steps than an earlier search saw. A second :class:`LocalBackend` on the same file
stands in for ``worklist import`` running next to the server (SQLite file locking, not
our async lock, separates those two).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from gateway.backends.local import LocalBackend
from gateway.settings import StoreSettings
from tests.contract.worklist_examples import STATION, item, query, sps_item
from tests.unit.mpps_examples import completed_update, minimal_create

BATCH = 10
BATCHES = 15
WRITERS = 3


def _batch(writer: int, number: int) -> list[dict[str, object]]:
    base = writer * 10_000 + number * BATCH
    return [
        item(
            base + n, f"Writer{writer}^Batch{number}", sps_item(f"W{base + n}", f"W{writer}", "CT")
        )
        for n in range(BATCH)
    ]


@pytest.mark.slow
async def test_readers_see_only_whole_transactions(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "busy.sqlite3")
    server = await LocalBackend.open(settings)
    importer = await LocalBackend.open(settings)  # another handle, like another process
    done = anyio.Event()
    seen: dict[tuple[int, int], list[int]] = {(w, r): [] for w in range(WRITERS) for r in (0, 1)}
    mpps_uids: list[str] = []

    async def write(writer: int, backend: LocalBackend) -> None:
        for number in range(BATCHES):
            await backend.upsert_worklist_items(_batch(writer, number))

    async def write_mpps(prefix: int) -> None:
        for n in range(8):
            uid = f"1.2.826.0.1.3680043.10.8.{prefix}.{n + 1}"
            await server.create_mpps(uid, minimal_create())
            await server.update_mpps(uid, completed_update())
            mpps_uids.append(uid)

    async def read(writer: int, reader: int) -> None:
        while not done.is_set():
            count = 0
            async for _ in server.search_worklist(query((STATION, f"W{writer}"))):
                count += 1
            seen[writer, reader].append(count)
            await anyio.lowlevel.checkpoint()

    try:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as readers:
                for w, r in seen:
                    readers.start_soon(read, w, r)
                async with anyio.create_task_group() as writers:
                    writers.start_soon(write, 0, server)
                    writers.start_soon(write, 1, importer)
                    writers.start_soon(write, 2, importer)
                    writers.start_soon(write_mpps, 1)
                    writers.start_soon(write_mpps, 2)
                done.set()
        for counts in seen.values():
            assert counts, "every reader ran at least once"
            assert all(c % BATCH == 0 for c in counts), counts
            assert counts == sorted(counts), counts
        for w in range(WRITERS):
            final = [r async for r in server.search_worklist(query((STATION, f"W{w}")))]
            assert len(final) == BATCH * BATCHES
        assert len(mpps_uids) == 16
        for uid in mpps_uids:
            result = await importer.retrieve_mpps(uid)
            assert result.dataset["00400252"]["Value"] == ["COMPLETED"]
    finally:
        await importer.aclose()
        await server.aclose()
