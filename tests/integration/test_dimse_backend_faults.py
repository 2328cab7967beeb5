"""The ``dimse`` backend's fault table and association pool, against a pynetdicom RIS.

Every fault must end in the error the status table maps to the documented HTTP status
(``status-mapping.md`` §2-§4.1), and the backend must keep serving afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from gateway.backends.dimse import DimseBackend
from gateway.errors import Busy, ErrorKind, GatewayError
from gateway.model.query import WorklistQuery
from gateway.model.status import DimseStatus, ErrorId, Operation, dimse_failure, http_status
from gateway.model.types import JsonDataset
from gateway.settings import DimseBackendSettings, StoreSettings
from tests.fakes.mpps_scp import FakeRis, free_port, status_dataset
from tests.unit.mpps_examples import MPPS_UID, minimal_create, series_update

S = DimseStatus
FIND, CREATE, UPDATE, RETRIEVE = (
    Operation.FIND,
    Operation.CREATE,
    Operation.UPDATE,
    Operation.RETRIEVE,
)


def settings_for(port: int, called: str = "FAKE_RIS", **kw: Any) -> DimseBackendSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "called_ae_title": called,
        "calling_ae_title": "GW_TEST",
        "timeout_s": 5.0,
        "max_associations": 2,
    }
    values.update(kw)
    return DimseBackendSettings(**values)


def worklist_item(n: int) -> Dataset:
    ds = Dataset()
    ds.PatientName = f"PATIENT^{n}"
    ds.PatientID = f"P{n}"
    return ds


@pytest.fixture
def ris() -> Iterator[FakeRis]:
    with FakeRis() as server:
        server.worklist = [worklist_item(n) for n in range(5)]
        yield server


async def open_backend(port: int, tmp_path: Path, **kw: Any) -> DimseBackend:
    store = StoreSettings(path=tmp_path / "gateway.sqlite3")
    return await DimseBackend.open("ris", settings_for(port, **kw), store)


@pytest.fixture
async def backend(ris: FakeRis, tmp_path: Path) -> AsyncIterator[DimseBackend]:
    opened = await open_backend(ris.port, tmp_path)
    try:
        yield opened
    finally:
        await opened.aclose()


ALL = WorklistQuery.from_query_params([("PatientID", "*")])


async def search(backend: DimseBackend) -> list[JsonDataset]:
    results = backend.search_worklist(ALL)
    try:
        return [item async for item in results]
    finally:
        await results.aclose()  # type: ignore[attr-defined]


async def run(backend: DimseBackend, op: Operation) -> Any:
    if op is FIND:
        return await search(backend)
    if op is CREATE:
        return await backend.create_mpps(MPPS_UID, minimal_create())
    if op is UPDATE:
        return await backend.update_mpps(MPPS_UID, series_update())
    return await backend.retrieve_mpps(MPPS_UID)


async def fails(backend: DimseBackend, op: Operation) -> tuple[GatewayError, int]:
    with pytest.raises(GatewayError) as caught:
        await run(backend, op)
    return caught.value, int(http_status(caught.value, op))


async def still_serves(backend: DimseBackend, ris: FakeRis) -> None:
    ris.statuses.clear()
    ris.abort_after.clear()
    ris.release()
    assert len(await search(backend)) == len(ris.worklist)


# --- transport-level faults (status-mapping.md §2) ---------------------------------------------


async def test_ris_down(tmp_path: Path) -> None:
    backend = await open_backend(free_port(), tmp_path)
    try:
        for op in (FIND, CREATE, RETRIEVE):
            error, status = await fails(backend, op)
            assert (error.kind, status) == (ErrorKind.UPSTREAM_UNAVAILABLE, 503)
    finally:
        await backend.aclose()


async def test_association_rejected_bad_called_ae(ris: FakeRis, tmp_path: Path) -> None:
    backend = await open_backend(ris.port, tmp_path, called="NOT_THE_RIS")
    try:
        error, status = await fails(backend, FIND)
        assert status == 503
        assert "Called AE" in (error.upstream_detail or "")
        error, status = await fails(backend, CREATE)
        assert status == 503
    finally:
        await backend.aclose()


async def test_association_rejected_for_our_calling_ae(tmp_path: Path) -> None:
    """The RIS refuses the gateway itself: 502, not a client error."""
    with FakeRis(require_calling_aet=("SOMEONE_ELSE",)) as ris:
        backend = await open_backend(ris.port, tmp_path)
        try:
            error, status = await fails(backend, FIND)
        finally:
            await backend.aclose()
    assert (error.kind, status) == (ErrorKind.UPSTREAM_REFUSED, 502)


async def test_ris_aborts_mid_query(ris: FakeRis, backend: DimseBackend) -> None:
    ris.abort_after["find"] = 2
    received: list[JsonDataset] = []
    with pytest.raises(GatewayError) as caught:
        async for item in backend.search_worklist(ALL):
            received.append(item)
    assert http_status(caught.value, FIND) == 503
    assert len(received) == 2  # a partial worklist ends in an error, never looks complete
    await still_serves(backend, ris)


@pytest.mark.parametrize("op", [CREATE, UPDATE, RETRIEVE])
async def test_ris_aborts_during_mpps(ris: FakeRis, backend: DimseBackend, op: Operation) -> None:
    if op is not CREATE:
        await backend.create_mpps(MPPS_UID, minimal_create())
    ris.abort_after[{CREATE: "create", UPDATE: "set", RETRIEVE: "get"}[op]] = 0
    error, status = await fails(backend, op)
    # Writes: the request left, the outcome is unknown (504); a read is just not done (503).
    assert status == (503 if op is RETRIEVE else 504), error
    await still_serves(backend, ris)


@pytest.mark.parametrize("op", [FIND, CREATE, UPDATE, RETRIEVE])
async def test_ris_slow_past_the_timeout(ris: FakeRis, tmp_path: Path, op: Operation) -> None:
    backend = await open_backend(ris.port, tmp_path, timeout_s=0.5)
    try:
        if op is UPDATE or op is RETRIEVE:
            await backend.create_mpps(MPPS_UID, minimal_create())
        ris.hold({FIND: "find", CREATE: "create", UPDATE: "set", RETRIEVE: "get"}[op])
        error, status = await fails(backend, op)
        assert (error.kind, status) == (ErrorKind.UPSTREAM_TIMEOUT, 504)
        if op in (CREATE, UPDATE):
            assert "outcome unknown" in dimse_failure(error, op).error_comment
        await still_serves(backend, ris)
    finally:
        ris.release()
        await backend.aclose()


async def test_mpps_not_offered_by_the_ris(tmp_path: Path) -> None:
    with FakeRis(offer_mpps=False, offer_retrieve=False) as ris:
        ris.worklist = [worklist_item(1)]
        backend = await open_backend(ris.port, tmp_path)
        try:
            error, status = await fails(backend, CREATE)
            assert (error.kind, status) == (ErrorKind.NOT_SUPPORTED, 501)
            assert len(await search(backend)) == 1
        finally:
            await backend.aclose()


# --- each DIMSE failure status (status-mapping.md §3.1, §4.1) ---------------------------------

FAILURES: list[tuple[Operation, int, int]] = [
    (FIND, S.OUT_OF_RESOURCES, 503),
    (FIND, S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, 400),
    (FIND, S.UNABLE_TO_PROCESS, 500),
    (FIND, S.SOP_CLASS_NOT_SUPPORTED, 501),
    (CREATE, S.NO_SUCH_ATTRIBUTE, 400),
    (CREATE, S.INVALID_ATTRIBUTE_VALUE, 400),
    (CREATE, S.PROCESSING_FAILURE, 500),
    (CREATE, S.DUPLICATE_SOP_INSTANCE, 409),
    (CREATE, S.INVALID_SOP_INSTANCE, 400),
    (CREATE, S.NO_SUCH_SOP_CLASS, 501),
    (CREATE, S.MISSING_ATTRIBUTE, 400),
    (CREATE, S.MISSING_ATTRIBUTE_VALUE, 400),
    (CREATE, S.SOP_CLASS_NOT_SUPPORTED, 501),
    (CREATE, S.NOT_AUTHORIZED, 502),
    (CREATE, S.DUPLICATE_INVOCATION, 500),
    (CREATE, S.UNRECOGNIZED_OPERATION, 500),
    (CREATE, S.MISTYPED_ARGUMENT, 500),
    (CREATE, S.RESOURCE_LIMITATION, 503),
    (CREATE, S.UNABLE_TO_PROCESS, 500),
    (UPDATE, S.NO_SUCH_ATTRIBUTE, 400),
    (UPDATE, S.INVALID_ATTRIBUTE_VALUE, 400),
    (UPDATE, S.PROCESSING_FAILURE, 500),
    (UPDATE, S.NO_SUCH_SOP_INSTANCE, 410),  # the gateway created it: known to have existed
    (UPDATE, S.INVALID_SOP_INSTANCE, 400),
    (UPDATE, S.CLASS_INSTANCE_CONFLICT, 404),
    (UPDATE, S.MISSING_ATTRIBUTE_VALUE, 400),
    (UPDATE, S.NOT_AUTHORIZED, 502),
    (UPDATE, S.RESOURCE_LIMITATION, 503),
    (RETRIEVE, S.PROCESSING_FAILURE, 500),
    (RETRIEVE, S.NO_SUCH_SOP_INSTANCE, 410),
    (RETRIEVE, S.INVALID_SOP_INSTANCE, 400),
    (RETRIEVE, S.CLASS_INSTANCE_CONFLICT, 404),
    (RETRIEVE, S.NOT_AUTHORIZED, 502),
    (RETRIEVE, S.RESOURCE_LIMITATION, 503),
]
OP_NAMES = {FIND: "find", CREATE: "create", UPDATE: "set", RETRIEVE: "get"}


@pytest.mark.parametrize(
    ("op", "status", "expected"),
    FAILURES,
    ids=[f"{op.value}-{status:04X}" for op, status, _ in FAILURES],
)
async def test_failure_status(
    ris: FakeRis, tmp_path: Path, op: Operation, status: int, expected: int
) -> None:
    backend = await open_backend(ris.port, tmp_path, mpps_retrieve="n-get")
    try:
        if op in (UPDATE, RETRIEVE):
            await backend.create_mpps(MPPS_UID, minimal_create())
        ris.statuses[OP_NAMES[op]] = status_dataset(status, comment="said the RIS")
        error, got = await fails(backend, op)
        assert got == expected, error
        assert error.upstream_status == status
        assert "said the RIS" in (error.upstream_detail or "")
        await still_serves(backend, ris)
    finally:
        await backend.aclose()


@pytest.mark.parametrize("status", [S.NO_SUCH_SOP_CLASS, S.SOP_CLASS_NOT_SUPPORTED])
async def test_retrieve_not_supported_by_the_ris_falls_back_to_the_mirror(
    ris: FakeRis, backend: DimseBackend, status: int
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    ris.statuses["get"] = status_dataset(status)
    result = await backend.retrieve_mpps(MPPS_UID, [0x00400252])
    assert result.dataset == {"00400252": {"vr": "CS", "Value": ["IN PROGRESS"]}}
    with pytest.raises(GatewayError) as caught:  # not forwarded by the gateway: no copy
        await backend.retrieve_mpps("1.2.3.4")
    assert http_status(caught.value, RETRIEVE) == 501


async def test_final_state_status_from_the_ris(ris: FakeRis, backend: DimseBackend) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    ris.statuses["set"] = status_dataset(
        S.PROCESSING_FAILURE, error_id=ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED
    )
    error, status = await fails(backend, UPDATE)
    assert (error.kind, status) == (ErrorKind.FINAL_STATE, 409)


@pytest.mark.parametrize(
    ("op", "status"),
    [
        (CREATE, S.ATTRIBUTE_LIST_ERROR),
        (CREATE, S.ATTRIBUTE_VALUE_OUT_OF_RANGE),
        (CREATE, 0xB000),
        (UPDATE, S.ATTRIBUTE_LIST_ERROR),
        (RETRIEVE, S.ATTRIBUTE_NOT_SUPPORTED_WARNING),
    ],
)
async def test_warning_status_is_success_with_warning(
    ris: FakeRis, backend: DimseBackend, op: Operation, status: int
) -> None:
    if op is not CREATE:
        await backend.create_mpps(MPPS_UID, minimal_create())
    ris.statuses[OP_NAMES[op]] = status_dataset(status, comment="partly")
    result = await run(backend, op)
    assert len(result.warnings) == 1
    assert f"{status:04X}" in result.warnings[0]


async def test_find_warning_pending_is_a_result(ris: FakeRis, backend: DimseBackend) -> None:
    """FF01 (optional keys not supported) still carries a match."""
    ris.pending_status = S.PENDING_WARNING
    assert len(await search(backend)) == len(ris.worklist)


# --- the association pool -----------------------------------------------------------------------


async def test_associations_are_reused(ris: FakeRis, backend: DimseBackend) -> None:
    for _ in range(3):
        await search(backend)
    await backend.create_mpps(MPPS_UID, minimal_create())
    await backend.retrieve_mpps(MPPS_UID)
    assert ris.associations == 1


async def test_waiting_for_a_free_association_ends_in_busy(ris: FakeRis, tmp_path: Path) -> None:
    backend = await open_backend(ris.port, tmp_path, max_associations=1, timeout_s=1.0)
    ris.hold("find")
    try:
        async with anyio.create_task_group() as tg:
            started = anyio.Event()

            async def occupy() -> None:
                results = backend.search_worklist(ALL)
                started.set()
                with pytest.raises(GatewayError):
                    await results.__anext__()
                await results.aclose()  # type: ignore[attr-defined]

            tg.start_soon(occupy)
            await started.wait()
            await wait_for(lambda: len(ris.ops("find")) == 1)
            with pytest.raises(Busy) as caught:
                await search(backend)
            assert caught.value.retry_after_s is not None and caught.value.retry_after_s >= 1
            assert http_status(caught.value, FIND) == 503
            ris.release()
        await still_serves(backend, ris)
    finally:
        ris.release()
        await backend.aclose()


async def test_dropped_idle_association_is_replaced(tmp_path: Path) -> None:
    """The RIS drops idle associations; the next request re-associates transparently."""
    with FakeRis(network_timeout_s=0.3) as ris:
        ris.worklist = [worklist_item(1)]
        backend = await open_backend(ris.port, tmp_path)
        try:
            assert len(await search(backend)) == 1
            await wait_for(lambda: backend.pool.open_count == 0, limit_s=10)
            assert len(await search(backend)) == 1
            await backend.create_mpps(MPPS_UID, minimal_create())
            assert ris.associations == 2
        finally:
            await backend.aclose()


async def test_idle_associations_expire(ris: FakeRis, tmp_path: Path) -> None:
    store = StoreSettings(path=tmp_path / "gateway.sqlite3")
    backend = await DimseBackend.open("ris", settings_for(ris.port), store, idle_timeout_s=0.2)
    try:
        await search(backend)
        await wait_for(lambda: backend.pool.open_count == 0, limit_s=10)  # released by itself
        await search(backend)
        assert ris.associations == 2
    finally:
        await backend.aclose()


async def wait_for(condition: Any, limit_s: float = 5.0) -> None:
    """Poll ``condition`` until true or fail: it changes in pynetdicom's threads, which
    cannot set an anyio Event, so there is nothing to await but the state itself."""
    with anyio.fail_after(limit_s):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_check_ready(ris: FakeRis, tmp_path: Path) -> None:
    backend = await open_backend(ris.port, tmp_path, max_associations=1, timeout_s=5.0)
    down = await open_backend(free_port(), tmp_path, timeout_s=1.0)
    try:
        await backend.check_ready()
        with pytest.raises(GatewayError) as caught:
            await down.check_ready()
        assert http_status(caught.value, FIND) == 503
        # Every association busy with a slow Search: ready at once, no queueing.
        ris.hold("find")
        async with anyio.create_task_group() as tg:
            tg.start_soon(search, backend)
            await wait_for(lambda: len(ris.ops("find")) == 1)
            with anyio.fail_after(1.0):
                await backend.check_ready()
            ris.release()
    finally:
        ris.release()
        await backend.aclose()
        await down.aclose()


def test_matching_keys_are_checked_at_open(tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    settings = settings_for(1, matching_keys=("PatientID", "NoSuchKeyword"))
    with pytest.raises(ConfigError) as caught:
        anyio.run(DimseBackend.open, "ris", settings, StoreSettings(tmp_path / "g.db"))
    assert caught.value.key == "backends.ris.matching_keys[1]"
