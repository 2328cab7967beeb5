"""Search through the dicomweb backend: parameters, paging, streaming, cancel, faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.backends.dicomweb import DicomwebBackend
from gateway.backends.dicomweb.client import RetryPolicy
from gateway.errors import (
    BadQuery,
    GatewayError,
    NotSupported,
    PayloadTooLarge,
    UpstreamBadResponse,
    UpstreamFailure,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.model.query import WorklistQuery
from gateway.model.status import DimseStatus, Operation, dimse_failure
from gateway.model.types import JsonDataset
from gateway.settings import DicomwebBackendSettings
from tests.fakes.origin import (
    FakeOrigin,
    Fault,
    malformed_json,
    running_origin,
    wrong_content_type,
)

FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05)


def item(n: int) -> JsonDataset:
    """A small scheduled procedure step numbered ``n``."""
    return {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"Doe^Patient{n}"}]},
        "00100020": {"vr": "LO", "Value": [f"P{n:04d}"]},
        "00400100": {
            "vr": "SQ",
            "Value": [
                {
                    "00080060": {"vr": "CS", "Value": ["CT"]},
                    "00400009": {"vr": "SH", "Value": [f"SPS{n}"]},
                }
            ],
        },
    }


def all_query() -> WorklistQuery:
    return WorklistQuery.from_query_params([("PatientName", ""), ("PatientID", "")])


async def collect(backend: DicomwebBackend, query: WorklistQuery) -> list[JsonDataset]:
    return [result async for result in backend.search_worklist(query)]


@contextlib.asynccontextmanager
async def origin_and_backend(
    page_size: int = 100,
    timeout_s: float = 2.0,
    first_page_size: int | None = None,
    **origin_options: Any,
) -> AsyncIterator[tuple[FakeOrigin, DicomwebBackend]]:
    """By default every page, the first included, asks for ``page_size`` results."""
    async with running_origin(**origin_options) as origin:
        settings = DicomwebBackendSettings(
            url=origin.url,
            page_size=page_size,
            first_page_size=first_page_size,
            timeout_s=timeout_s,
        )
        backend = await DicomwebBackend.open("cloud", settings, retry=FAST_RETRY)
        try:
            yield origin, backend
        finally:
            await backend.aclose()


def paging(origin: FakeOrigin) -> list[tuple[str, str]]:
    return [(dict(r.query)["offset"], dict(r.query)["limit"]) for r in origin.requests]


# --- parameters ----------------------------------------------------------------------------


async def test_match_and_include_parameters_are_passed_through() -> None:
    query = WorklistQuery.from_query_params(
        [
            ("ScheduledProcedureStepSequence.Modality", "CT"),
            ("ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate", "20250101-"),
            ("PatientName", "Doe^J*"),
            ("StudyInstanceUID", "1.2.3,1.2.4"),
            ("AccessionNumber", "A,B"),
            ("includefield", "PatientID"),
            ("fuzzymatching", "true"),
            ("offset", "5"),
            ("limit", "7"),
        ]
    )
    async with origin_and_backend() as (origin, backend):
        assert await collect(backend, query) == []
    [request] = origin.requests
    assert sorted(request.query[:-2]) == [
        ("00080050", "A,B"),
        ("00100010", "Doe^J*"),
        ("0020000D", "1.2.3,1.2.4"),
        ("00400100.00080060", "CT"),
        ("00400100.00400002", "20250101-"),
        ("fuzzymatching", "true"),
        ("includefield", "00100020"),
    ]
    # The caller's offset/limit are the front's business; the backend pages on its own.
    assert request.query[-2:] == [("offset", "0"), ("limit", "100")]
    # A UID list keeps its commas; a comma inside any other value is escaped.
    assert "0020000D=1.2.3,1.2.4" in request.query_string
    assert "00080050=A%2CB" in request.query_string


# --- paging --------------------------------------------------------------------------------


async def test_pages_follow_the_additional_results_warning() -> None:
    async with origin_and_backend(page_size=100) as (origin, backend):
        origin.worklist = [item(n) for n in range(250)]
        results = await collect(backend, all_query())
    assert results == origin.worklist
    assert paging(origin) == [("0", "100"), ("100", "100"), ("200", "100")]
    assert len({r.peer for r in origin.requests}) == 1  # one pooled connection


async def test_by_default_every_page_asks_for_page_size() -> None:
    assert DicomwebBackendSettings(url="http://x/d").first_page_size is None
    async with origin_and_backend(page_size=20) as (origin, backend):
        origin.worklist = [item(n) for n in range(45)]
        assert await collect(backend, all_query()) == origin.worklist
    assert paging(origin) == [("0", "20"), ("20", "20"), ("40", "20")]


async def test_a_small_first_page_then_full_pages() -> None:
    async with origin_and_backend(page_size=100, first_page_size=10) as (origin, backend):
        origin.worklist = [item(n) for n in range(250)]
        results = await collect(backend, all_query())
    assert results == origin.worklist
    assert paging(origin) == [("0", "10"), ("10", "100"), ("110", "100"), ("210", "100")]


async def test_a_small_first_page_without_warning() -> None:
    kwargs: dict[str, Any] = {"page_size": 50, "first_page_size": 10, "warn_remaining": False}
    async with origin_and_backend(**kwargs) as (origin, backend):
        origin.worklist = [item(n) for n in range(30)]
        results = await collect(backend, all_query())
    assert results == origin.worklist
    assert paging(origin) == [("0", "10"), ("10", "50")]  # the second page is short: the end


async def test_the_first_page_is_never_larger_than_a_page() -> None:
    async with origin_and_backend(page_size=5, first_page_size=10) as (origin, backend):
        origin.worklist = [item(n) for n in range(7)]
        assert await collect(backend, all_query()) == origin.worklist
    assert paging(origin) == [("0", "5"), ("5", "5")]


async def test_origin_clamping_the_limit_is_followed_by_its_warning() -> None:
    async with origin_and_backend(page_size=100, max_limit=30) as (origin, backend):
        origin.worklist = [item(n) for n in range(70)]
        results = await collect(backend, all_query())
    assert results == origin.worklist
    assert [offset for offset, _ in paging(origin)] == ["0", "30", "60"]


async def test_without_warning_paging_continues_while_pages_are_full() -> None:
    async with origin_and_backend(page_size=50, warn_remaining=False) as (origin, backend):
        origin.worklist = [item(n) for n in range(100)]
        results = await collect(backend, all_query())
    assert results == origin.worklist
    assert paging(origin) == [("0", "50"), ("50", "50"), ("100", "50")]  # the last one: 204


async def test_an_origin_ignoring_limit_is_read_once() -> None:
    async with origin_and_backend(page_size=10, ignore_paging=True) as (origin, backend):
        origin.worklist = [item(n) for n in range(25)]
        results = await collect(backend, all_query())
    assert results == origin.worklist
    assert len(origin.requests) == 1


async def test_an_origin_ignoring_offset_is_not_paged_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.backends.dicomweb.backend.MAX_SEARCH_RESULTS", 30)
    async with origin_and_backend(page_size=10, warn_remaining=False) as (origin, backend):
        origin.worklist = [item(n) for n in range(10)] * 10
        with pytest.raises(PayloadTooLarge):
            await collect(backend, all_query())
    assert len(origin.requests) == 3


async def test_204_is_an_empty_result() -> None:
    async with origin_and_backend() as (origin, backend):
        assert await collect(backend, all_query()) == []
    assert len(origin.requests) == 1


async def test_413_halves_the_page_size() -> None:
    async with origin_and_backend(page_size=40) as (origin, backend):
        origin.worklist = [item(n) for n in range(30)]
        origin.fail("search", Fault(413, b"too large", times=2))
        results = await collect(backend, all_query())
    assert results == origin.worklist
    assert paging(origin) == [("0", "40"), ("0", "20"), ("0", "10"), ("10", "10"), ("20", "10")]


# --- streaming and cancel ------------------------------------------------------------------


async def test_results_arrive_before_the_page_is_complete_and_close_aborts_it() -> None:
    async with origin_and_backend() as (origin, backend):
        origin.worklist = [item(n) for n in range(10)]
        origin.stall_after = 3  # the origin sends 3 results, then waits forever
        search = backend.search_worklist(all_query())
        first = [await anext(search) for _ in range(3)]
        assert first == origin.worklist[:3]
        await search.aclose()  # C-CANCEL
        await asyncio.wait_for(origin.aborted.wait(), 10)  # the origin saw the connection closed
        origin.stall_after = None
        assert await collect(backend, all_query()) == origin.worklist  # still serving


async def test_cancelling_the_consuming_task_aborts_the_request() -> None:
    async with origin_and_backend() as (origin, backend):
        origin.worklist = [item(n) for n in range(10)]
        origin.fail("search", Fault(hang=True))
        search = backend.search_worklist(all_query())

        async def first() -> JsonDataset:
            return await anext(search)

        task = asyncio.create_task(first())
        await asyncio.wait_for(origin.received.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(origin.aborted.wait(), 10)


async def test_a_stalled_page_times_out() -> None:
    async with origin_and_backend(timeout_s=0.2) as (origin, backend):
        origin.worklist = [item(n) for n in range(10)]
        origin.stall_after = 2
        received: list[JsonDataset] = []
        with pytest.raises(UpstreamTimeout) as raised:
            async for result in backend.search_worklist(all_query()):
                received.append(result)
    assert len(received) == 2
    assert dimse_failure(raised.value, Operation.FIND).status is DimseStatus.OUT_OF_RESOURCES


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "dimse"),
    [
        (Fault(400, b"bad date"), BadQuery, DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
        (Fault(401, b"no"), UpstreamRefused, DimseStatus.UNABLE_TO_PROCESS_FORBIDDEN),
        (Fault(404, b"no MWL here"), NotSupported, DimseStatus.SOP_CLASS_NOT_SUPPORTED),
        (Fault(410, b"gone"), GatewayError, None),
        (Fault(500, b"boom"), UpstreamFailure, DimseStatus.UNABLE_TO_PROCESS_UPSTREAM_ERROR),
        (Fault(503, b"later"), UpstreamUnavailable, DimseStatus.OUT_OF_RESOURCES),
        (Fault(hang=True), UpstreamTimeout, DimseStatus.OUT_OF_RESOURCES),
        (
            malformed_json(),
            UpstreamBadResponse,
            DimseStatus.UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE,
        ),
        (
            wrong_content_type(),
            UpstreamBadResponse,
            DimseStatus.UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE,
        ),
        (
            Fault(200, b'[{"00100010": {"Value": []}}]', "application/dicom+json"),
            UpstreamBadResponse,
            DimseStatus.UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE,
        ),
    ],
)
async def test_search_fault_table(
    fault: Fault, error: type[GatewayError], dimse: DimseStatus | None
) -> None:
    async with origin_and_backend(timeout_s=0.3) as (origin, backend):
        origin.worklist = [item(1)]
        fault.times = 5
        origin.fail("search", fault)
        with pytest.raises(error) as raised:
            await collect(backend, all_query())
        if dimse is not None:
            assert dimse_failure(raised.value, Operation.FIND).status is dimse
        if fault.status >= 400 and not fault.hang:
            assert raised.value.upstream_detail == fault.body.decode()
        retried = fault.status == 503 and not fault.hang
        assert len(origin.requests) == (FAST_RETRY.attempts if retried else 1)
        origin.faults.clear()
        assert await collect(backend, all_query()) == [item(1)]


async def test_garbage_outside_the_query_does_not_cost_the_modality_its_worklist() -> None:
    """Only what the query returns is shape-checked; the projection drops the rest."""
    sloppy = {**item(1), "00101010": 5, "0010abcd": {"vr": "LO"}}
    async with origin_and_backend() as (origin, backend):
        origin.worklist = [sloppy, item(2)]
        results = await collect(backend, all_query())
        assert results == [sloppy, item(2)]
        assert all_query().project(results[0]) == all_query().project(item(1))
        origin.worklist = [{**item(1), "00100020": {"vr": "LO", "Value": "P0001"}}]
        with pytest.raises(UpstreamBadResponse, match="00100020: Value is not an array"):
            await collect(backend, all_query())
