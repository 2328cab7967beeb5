"""Contract: worklist search semantics, streaming and early close, for every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from gateway.backends.base import Backend
from gateway.model.query import WorklistQuery
from gateway.model.types import JsonDataset
from tests.contract.conftest import Harness
from tests.contract.worklist_examples import (
    ACCESSION,
    ALL_STEPS,
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    SPS_STATUS,
    START_DATE,
    START_TIME,
    STATION,
    STUDY_UID,
    WORKLIST,
    item,
    query,
    sps_item,
    step_id,
    step_ids,
    study_uid,
)


async def collect(backend: Backend, q: WorklistQuery) -> list[JsonDataset]:
    return [result async for result in backend.search_worklist(q)]


@pytest.fixture
async def seeded(harness: Harness) -> Backend:
    await harness.seed(WORKLIST)
    return harness.backend


Key = tuple[tuple[int, ...], str | tuple[str, ...]]

# Each case: query keys -> exactly the steps that must come back.
EXACT_CASES: dict[str, tuple[tuple[Key, ...], set[str]]] = {
    "universal": ((), ALL_STEPS),
    "station": (((STATION, "CT01"),), {"1", "2", "7a"}),
    "station, one of several values": (((STATION, "MR02"),), {"4"}),
    "station wildcard": (((STATION, "CT*"),), {"1", "2", "5", "7a"}),
    "modality + date": (((MODALITY, "CT"), (START_DATE, "20250110")), {"1", "2"}),
    "date range": (((START_DATE, "20250110-20250111"),), {"1", "2", "3", "4", "8"}),
    "date open end": (((START_DATE, "20250112-"),), {"5", "7a", "7b"}),
    "date open start": (((START_DATE, "-20250110"),), {"1", "2", "3"}),
    # Both ranges: one period from 2025-01-10 09:00 to 2025-01-11 09:59 (K.6-1 remark).
    "combined date-time": (
        ((START_DATE, "20250110-20250111"), (START_TIME, "0900-0959")),
        {"2", "3", "8"},
    ),
    "time range alone": (((START_TIME, "0800-0830"),), {"1", "5", "8"}),
    "no cross-item sequence match": (((STATION, "CT01"), (MODALITY, "MR")), set()),
    "empty stored date never matches": (((STATION, "US01"), (START_DATE, "-20991231")), set()),
    "name exact": (((PATIENT_NAME, "Müller^Jürgen"),), {"1"}),
    "name wildcard with ?": (((PATIENT_NAME, "M?ller^J*"),), {"1"}),
    "name trailing component wildcard": (((PATIENT_NAME, "Doe^Jane^*"),), {"4"}),
    "name ideographic group": (((PATIENT_NAME, "=山田*"),), {"8"}),
    "patient id": (((PATIENT_ID, "PID3"),), {"3"}),
    "accession": (((ACCESSION, "ACC0007"),), {"7a", "7b"}),
    "study uid list": (((STUDY_UID, (study_uid(1), study_uid(3))),), {"1", "3"}),
    "sps status": (((SPS_STATUS, "STARTED"),), {"5"}),
    "no match": (((MODALITY, "DX"),), set()),
}


@pytest.mark.parametrize("case", sorted(EXACT_CASES))
async def test_search_returns_exactly_the_matching_steps(seeded: Backend, case: str) -> None:
    keys, expected = EXACT_CASES[case]
    results = await collect(seeded, query(*keys))
    assert step_ids(results) == expected


async def test_pn_case_follows_one_documented_rule(seeded: Backend) -> None:
    # Literal (case-sensitive) or case-insensitive PN matching are both conformant; the
    # exact-case matches must always be there and nothing but the case variant may be added.
    results = step_ids(await collect(seeded, query((PATIENT_NAME, "Smith*"))))
    assert {"2", "3"} <= results <= {"2", "3", "5"}


async def test_results_hold_the_stored_values_of_one_step(seeded: Backend) -> None:
    results = await collect(seeded, query((PATIENT_ID, "PID7"), (MODALITY, "MR")))
    assert len(results) == 1
    result = results[0]
    assert result["0020000D"]["Value"] == [study_uid(7)]
    sps = result["00400100"]["Value"][0]
    assert sps["00400001"]["Value"] == ["MR01"]
    assert sps["00400002"]["Value"] == ["20250113"]
    assert result["00100010"]["Value"] == [{"Alphabetic": "Brown^Bob"}]


async def test_order_is_stable_across_searches(seeded: Backend) -> None:
    first = [step_id(r) for r in await collect(seeded, query())]
    second = [step_id(r) for r in await collect(seeded, query())]
    assert first == second
    assert set(first) == ALL_STEPS


async def test_reseeding_a_step_updates_it(harness: Harness) -> None:
    await harness.seed(WORKLIST)
    moved = item(2, "Smith^Anna", sps_item("S2", "CT09", "CT", "20250110", "1400"))
    await harness.seed([moved])
    results = await collect(harness.backend, query((STUDY_UID, (study_uid(2),))))
    assert [r["00400100"]["Value"][0]["00400001"]["Value"] for r in results] == [["CT09"]]
    assert step_ids(await collect(harness.backend, query((STATION, "CT01")))) == {"1", "7a"}


def _many(count: int) -> list[JsonDataset]:
    return [
        item(1000 + n, f"Stream^Patient{n}", sps_item(f"M{n}", "BULK1", "CT", "20250201", "0800"))
        for n in range(count)
    ]


async def test_early_aclose_stops_the_search_and_frees_the_backend(harness: Harness) -> None:
    await harness.seed(_many(600))
    results = harness.backend.search_worklist(query((STATION, "BULK1")))
    assert isinstance(results, AsyncIterator)
    taken = [await anext(results) for _ in range(3)]
    assert len(taken) == 3
    await results.aclose()  # type: ignore[attr-defined]
    with anyio.fail_after(10):
        await harness.seed([item(9999, "After^Close", sps_item("X1", "BULK2", "CT", "20250202"))])
        again = await collect(harness.backend, query((STATION, "BULK2")))
    assert [step_id(r) for r in again] == ["X1"]


async def test_cancelling_the_consumer_stops_the_search(harness: Harness) -> None:
    await harness.seed(_many(600))
    seen = 0
    with anyio.move_on_after(30) as timeout:
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                nonlocal seen
                async for _ in harness.backend.search_worklist(query((STATION, "BULK1"))):
                    seen += 1
                    if seen == 5:
                        tg.cancel_scope.cancel()

            tg.start_soon(consume)
    assert not timeout.cancelled_caught
    assert seen == 5
    with anyio.fail_after(10):
        assert len(await collect(harness.backend, query((STATION, "BULK1")))) == 600


async def test_concurrent_searches_do_not_interfere(seeded: Backend) -> None:
    outcomes: dict[str, set[str]] = {}

    async def run(name: str, q: WorklistQuery) -> None:
        outcomes[name] = step_ids(await collect(seeded, q))

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(run, f"ct{n}", query((STATION, "CT01")))
            tg.start_soon(run, f"mr{n}", query((MODALITY, "MR")))
    assert all(v == {"1", "2", "7a"} for k, v in outcomes.items() if k.startswith("ct"))
    assert all(v == {"3", "4", "7b", "8"} for k, v in outcomes.items() if k.startswith("mr"))


async def test_check_ready_passes_on_a_working_backend(backend: Backend) -> None:
    await backend.check_ready()
