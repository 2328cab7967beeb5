"""C-ECHO and Modality Worklist C-FIND over real associations on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.backends.local import LocalBackend
from gateway.dimse.association import VERIFICATION, WORKLIST_FIND
from gateway.errors import UpstreamBadResponse, UpstreamUnavailable
from gateway.model.query import WorklistQuery
from gateway.model.status import DimseStatus
from gateway.model.types import JsonDataset
from tests.integration import dimse_fixtures as fx
from tests.integration.dimse_fixtures import (
    DelegatingBackend,
    DimseHarness,
    c_find,
    worklist_item,
    worklist_query,
)

dimse = fx.dimse
dimse_factory = fx.dimse_factory

S = DimseStatus
Factory = Callable[..., DimseHarness]


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_echo_and_find_in_both_little_endian_syntaxes(dimse: DimseHarness, syntax: str) -> None:
    dimse.load_worklist([worklist_item(1), worklist_item(2)])
    assoc = dimse.associate(transfer_syntaxes=[syntax])
    assert assoc.is_established
    try:
        assert assoc.accepted_contexts[0].transfer_syntax[0] == syntax
        assert assoc.send_c_echo().Status == S.SUCCESS
        result = c_find(assoc, worklist_query(PatientID=""))
    finally:
        assoc.release()
    assert result.status == S.SUCCESS
    assert sorted(ds.PatientID for ds in result.identifiers) == ["PID00001", "PID00002"]


def test_each_response_has_exactly_the_requested_keys(dimse: DimseHarness) -> None:
    item = worklist_item(7)
    del item["00321060"]  # Requested Procedure Description: asked for, but not held
    dimse.load_worklist([item])
    query = worklist_query(PatientName="", AccessionNumber="", RequestedProcedureDescription="")
    assoc = dimse.associate()
    try:
        result = c_find(assoc, query)
    finally:
        assoc.release()
    assert result.status == S.SUCCESS
    (found,) = result.identifiers
    assert [elem.keyword for elem in found] == [
        "AccessionNumber",
        "PatientName",
        "RequestedProcedureDescription",
        "ScheduledProcedureStepSequence",
    ]
    assert found.RequestedProcedureDescription == ""  # requested, zero length
    (step,) = found.ScheduledProcedureStepSequence
    assert [elem.keyword for elem in step] == ["Modality", "ScheduledProcedureStepID"]
    assert (found.AccessionNumber, step.ScheduledProcedureStepID) == ("ACC00007", "SPS00007")
    assert "ErrorComment" not in result.final


def test_matching_keys_filter_and_no_match_is_plain_success(dimse: DimseHarness) -> None:
    dimse.load_worklist([worklist_item(1, modality="MR"), worklist_item(2, modality="CT")])
    assoc = dimse.associate()
    try:
        mr = worklist_query(PatientID="")
        mr.ScheduledProcedureStepSequence[0].Modality = "MR"
        none = worklist_query(PatientID="NOBODY")
        mr_result, none_result = c_find(assoc, mr), c_find(assoc, none, msg_id=2)
    finally:
        assoc.release()
    assert [ds.PatientID for ds in mr_result.identifiers] == ["PID00001"]
    assert (none_result.status, none_result.identifiers) == (S.SUCCESS, [])


def test_malformed_identifier_fails_with_a900_and_a_comment(dimse: DimseHarness) -> None:
    query = worklist_query(PatientName="")
    query.ScheduledProcedureStepSequence.append(Dataset())  # a sequence key needs <= 1 item
    bad_charset = worklist_query(PatientName="")
    bad_charset.SpecificCharacterSet = "ISO_IR 999"
    assoc = dimse.associate()
    try:
        two_items = c_find(assoc, query)
        # pydicom warns about the unknown term on both sides (only warns in production).
        with pytest.warns(UserWarning, match="Unknown encoding"):
            unknown_charset = c_find(assoc, bad_charset, msg_id=2)
        assert assoc.send_c_echo().Status == S.SUCCESS  # the association survives
    finally:
        assoc.release()
    assert two_items.status == S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert two_items.final.ErrorComment
    assert unknown_charset.status == S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "Specific Character Set" in unknown_charset.final.ErrorComment
    assert int(unknown_charset.final.OffendingElement) == 0x00080005


class _FailingSearch(DelegatingBackend):
    """Yields ``good`` real results, then raises ``error``."""

    def __init__(self, inner: LocalBackend, error: Exception, good: int = 0) -> None:
        super().__init__(inner)
        self.error = error
        self.good = good

    async def results(self, query: WorklistQuery) -> AsyncGenerator[JsonDataset, None]:
        count = 0
        async with aclosing(self.inner.search_worklist(query)) as results:
            async for item in results:
                if count == self.good:
                    break
                count += 1
                yield item
        raise self.error


@pytest.mark.parametrize(
    ("error", "good", "expected"),
    [
        (UpstreamUnavailable("RIS down"), 0, S.OUT_OF_RESOURCES),
        (UpstreamBadResponse("garbage"), 2, S.UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE),
        (RuntimeError("bug"), 1, S.UNABLE_TO_PROCESS),
    ],
)
def test_backend_failures_end_with_the_table_status(
    dimse_factory: Factory, error: Exception, good: int, expected: DimseStatus
) -> None:
    harness = dimse_factory(wrap=lambda inner: _FailingSearch(inner, error, good))
    harness.load_worklist(worklist_item(n) for n in range(5))
    assoc = harness.associate()
    try:
        result = c_find(assoc, worklist_query(PatientID=""))
        assert assoc.send_c_echo().Status == S.SUCCESS
    finally:
        assoc.release()
    assert len(result.identifiers) == good  # pendings already sent stay sent
    assert result.status == expected
    assert result.final.ErrorComment


class _StallingSearch(DelegatingBackend):
    """Yields one result, then waits forever (an upstream that stopped answering)."""

    async def results(self, query: WorklistQuery) -> AsyncGenerator[JsonDataset, None]:
        async with aclosing(self.inner.search_worklist(query)) as results:
            async for item in results:
                yield item
                break
        await anyio.sleep_forever()
        yield {}  # pragma: no cover - never reached


def test_a_stalled_backend_times_out_with_a700(dimse_factory: Factory) -> None:
    doubles: list[_StallingSearch] = []

    def wrap(inner: LocalBackend) -> _StallingSearch:
        doubles.append(_StallingSearch(inner))
        return doubles[-1]

    harness = dimse_factory(wrap=wrap, operation_timeout_s=0.5)
    harness.load_worklist([worklist_item(1), worklist_item(2)])
    assoc = harness.associate()
    try:
        result = c_find(assoc, worklist_query(PatientID=""))
    finally:
        assoc.release()
    assert len(result.identifiers) == 1
    assert result.status == S.OUT_OF_RESOURCES
    assert "timeout" in result.final.ErrorComment
    assert doubles[0].search_closed.is_set()


def test_c_cancel_interrupts_a_backend_that_is_waiting(dimse_factory: Factory) -> None:
    doubles: list[_StallingSearch] = []

    def wrap(inner: LocalBackend) -> _StallingSearch:
        doubles.append(_StallingSearch(inner))
        return doubles[-1]

    harness = dimse_factory(wrap=wrap)
    harness.load_worklist([worklist_item(1), worklist_item(2)])
    assoc = harness.associate()
    try:
        statuses = []
        for status, _ in assoc.send_c_find(worklist_query(PatientID=""), WORKLIST_FIND, msg_id=9):
            statuses.append(int(status.Status))
            if len(statuses) == 1:  # the backend now waits for its next result
                cancelled_at = time.monotonic()
                assoc.send_c_cancel(9, query_model=WORKLIST_FIND)
        elapsed = time.monotonic() - cancelled_at
        assert assoc.send_c_echo().Status == S.SUCCESS
    finally:
        assoc.release()
    assert statuses == [S.PENDING, S.CANCEL]
    assert elapsed < 1.0
    assert doubles[0].search_closed.is_set()  # the backend's generator was closed


@pytest.mark.slow
def test_c_cancel_mid_stream_on_10000_items_is_prompt(dimse_factory: Factory) -> None:
    doubles: list[DelegatingBackend] = []

    def wrap(inner: LocalBackend) -> DelegatingBackend:
        doubles.append(DelegatingBackend(inner))
        return doubles[-1]

    harness = dimse_factory(wrap=wrap)
    harness.load_worklist(worklist_item(n) for n in range(10_000))
    assoc = harness.associate()
    try:
        pending = 0
        final = None
        for status, _ in assoc.send_c_find(worklist_query(PatientID=""), WORKLIST_FIND, msg_id=3):
            if status.Status != S.PENDING:
                final = int(status.Status)
                break
            pending += 1
            if pending == 100:
                cancelled_at = time.monotonic()
                assoc.send_c_cancel(3, query_model=WORKLIST_FIND)
        elapsed = time.monotonic() - cancelled_at
        # The association stays usable: echo and a new query on the same association.
        assert assoc.send_c_echo().Status == S.SUCCESS
        again = c_find(assoc, worklist_query(PatientID="PID00042"), msg_id=4)
    finally:
        assoc.release()
    assert final == S.CANCEL
    assert 100 <= pending < 10_000
    assert elapsed < 1.0, f"cancel took {elapsed:.3f} s"
    assert doubles[0].search_closed.is_set()
    assert (again.status, [ds.PatientID for ds in again.identifiers]) == (S.SUCCESS, ["PID00042"])


def test_find_is_refused_per_context_when_not_offered(dimse: DimseHarness) -> None:
    assoc = dimse.associate(sop_classes=[VERIFICATION])
    try:
        with pytest.raises(ValueError, match="No presentation context"):
            next(assoc.send_c_find(worklist_query(PatientID=""), WORKLIST_FIND))
    finally:
        assoc.release()


def test_concurrent_associations_each_get_their_results(dimse: DimseHarness) -> None:
    dimse.load_worklist(worklist_item(n) for n in range(20))
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            assoc = dimse.associate(calling_ae=f"SCU{index}")
            try:
                results[index] = len(c_find(assoc, worklist_query(PatientID="")).identifiers)
            finally:
                assoc.release()
        except BaseException as exc:  # reported below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert results == {0: 20, 1: 20, 2: 20, 3: 20}
