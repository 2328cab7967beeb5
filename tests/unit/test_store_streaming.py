"""Streaming searches: batch boundaries, JSON text decoded late, the cursor freed early."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.backends.local import LocalBackend
from gateway.backends.local import backend as local_backend_module
from gateway.model.query import WorklistQuery
from gateway.model.types import JsonDataset
from tests.contract.worklist_examples import (
    PATIENT_NAME,
    START_DATE,
    STATION,
    item,
    query,
    sps_item,
    step_id,
)


def _steps(count: int) -> list[JsonDataset]:
    return [
        item(n, "Stream^Patient", sps_item(f"S{n}", "CT01", "CT", "20250110", f"{n % 24:02d}00"))
        for n in range(count)
    ]


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 7, 8, 9, 13, 14])
async def test_every_batch_boundary_returns_every_match_in_order(
    local_backend: LocalBackend, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    monkeypatch.setattr(local_backend_module, "FETCH_ROWS", 2)
    monkeypatch.setattr(local_backend_module, "FIRST_BATCH_ROWS", 3)
    monkeypatch.setattr(local_backend_module, "NEXT_BATCH_ROWS", 5)
    await local_backend.upsert_worklist_items(_steps(count))
    expected = sorted(range(count), key=lambda n: (n % 24, n))
    for q in (
        WorklistQuery(),  # full scan, matcher on every row
        query((STATION, "CT01"), (START_DATE, "20250110")),  # decided by SQL: JSON text
        query((STATION, "CT01"), (PATIENT_NAME, "Stream*")),  # residual matcher
    ):
        found = [r async for r in local_backend.search_worklist(q)]
        assert [step_id(r) for r in found] == [str(n) for n in expected], q
        assert all(isinstance(r, dict) for r in found)


async def test_a_finished_scan_frees_its_snapshot_before_the_consumer_is_done(
    local_backend: LocalBackend,
) -> None:
    await local_backend.upsert_worklist_items(_steps(5))
    results = local_backend.search_worklist(query((STATION, "CT01")))
    await anext(results)  # the whole result came in the first thread call
    with sqlite3.connect(local_backend.path, timeout=0) as conn:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    assert busy == 0
    assert len([r async for r in results]) == 4
