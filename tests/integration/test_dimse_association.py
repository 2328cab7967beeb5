"""Association policy (A-ASSOCIATE-RJ reasons) and the graceful stop of the DIMSE front."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

import anyio
import pytest
from pynetdicom.association import Association

from gateway.backends.local import LocalBackend
from gateway.dimse.association import WORKLIST_FIND
from gateway.model.query import WorklistQuery
from gateway.model.status import DimseStatus
from gateway.model.types import JsonDataset
from tests.integration import dimse_fixtures as fx
from tests.integration.dimse_fixtures import (
    DelegatingBackend,
    DimseHarness,
    worklist_item,
    worklist_query,
)

dimse = fx.dimse
dimse_factory = fx.dimse_factory

S = DimseStatus
Factory = Callable[..., DimseHarness]

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, reason/diagnostic.
REJECTED_PERMANENT, REJECTED_TRANSIENT = 1, 2
SERVICE_USER, PROVIDER_PRESENTATION = 1, 3
CALLING_AE_NOT_RECOGNIZED, CALLED_AE_NOT_RECOGNIZED = 3, 7
LOCAL_LIMIT_EXCEEDED = 2


def _rejection(assoc: Association) -> tuple[int, int, int]:
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert rj is not None
    return (int(rj.result or 0), int(rj.result_source or 0), int(rj.diagnostic or 0))


def test_strict_policy_rejects_a_wrong_called_ae(dimse: DimseHarness) -> None:
    assoc = dimse.associate(called_ae="SOMEONE_ELSE")
    assert _rejection(assoc) == (REJECTED_PERMANENT, SERVICE_USER, CALLED_AE_NOT_RECOGNIZED)
    ok = dimse.associate()
    assert ok.is_established
    ok.release()


def test_any_policy_accepts_any_called_ae(dimse_factory: Factory) -> None:
    harness = dimse_factory(called_ae_policy="any")
    assoc = harness.associate(called_ae="ANYTHING")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == S.SUCCESS
    assoc.release()


def test_calling_ae_must_be_allowed_when_a_list_is_configured(dimse_factory: Factory) -> None:
    harness = dimse_factory(allowed_calling_ae_titles=["CT1", "MR1"])
    stranger = harness.associate(calling_ae="HACKER")
    assert _rejection(stranger) == (REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)
    known = harness.associate(calling_ae="MR1")
    assert known.is_established
    known.release()


def test_max_associations_rejects_transiently(dimse_factory: Factory) -> None:
    harness = dimse_factory(max_associations=1)
    first = harness.associate(calling_ae="CT1")
    assert first.is_established
    try:
        second = harness.associate(calling_ae="CT2")
        assert _rejection(second) == (
            REJECTED_TRANSIENT,
            PROVIDER_PRESENTATION,
            LOCAL_LIMIT_EXCEEDED,
        )
        assert first.send_c_echo().Status == S.SUCCESS  # the first one is unaffected
    finally:
        first.release()


class _Gate(DelegatingBackend):
    """A search that yields its results slowly (``pause`` s each) or never (``None``)."""

    def __init__(self, inner: LocalBackend, pause: float | None) -> None:
        super().__init__(inner)
        self.pause = pause

    async def results(self, query: WorklistQuery) -> AsyncGenerator[JsonDataset, None]:
        async with aclosing(self.inner.search_worklist(query)) as results:
            async for item in results:
                if self.pause is None:
                    await anyio.sleep_forever()
                else:
                    await anyio.sleep(self.pause)  # a slow upstream, not test synchronisation
                yield item


def _stop_when_searching(harness: DimseHarness, gate: _Gate, grace_s: float) -> threading.Thread:
    def stop() -> None:
        assert gate.search_started.wait(30)
        harness.front.stop(grace_s)

    thread = threading.Thread(target=stop)
    thread.start()
    return thread


def _gated(dimse_factory: Factory, pause: float | None) -> tuple[DimseHarness, _Gate]:
    gates: list[_Gate] = []

    def wrap(inner: LocalBackend) -> _Gate:
        gates.append(_Gate(inner, pause))
        return gates[-1]

    harness = dimse_factory(wrap=wrap)
    harness.load_worklist(worklist_item(n) for n in range(3))
    return harness, gates[0]


def test_stop_lets_an_operation_in_flight_finish(dimse_factory: Factory) -> None:
    harness, gate = _gated(dimse_factory, pause=0.3)
    assoc = harness.associate()
    stopper = _stop_when_searching(harness, gate, grace_s=30)
    statuses = [
        int(status.Status)
        for status, _ in assoc.send_c_find(worklist_query(PatientID=""), WORKLIST_FIND)
    ]
    assoc.release()  # the stop waits for this rather than aborting
    stopper.join(timeout=60)
    assert not stopper.is_alive()
    assert statuses == [S.PENDING, S.PENDING, S.PENDING, S.SUCCESS]
    assert not harness.associate().is_established  # no longer accepting


def test_stop_ends_a_stuck_operation_with_a_status_after_the_grace_period(
    dimse_factory: Factory,
) -> None:
    harness, gate = _gated(dimse_factory, pause=None)
    assoc = harness.associate()
    stopper = _stop_when_searching(harness, gate, grace_s=0.5)
    responses = list(assoc.send_c_find(worklist_query(PatientID=""), WORKLIST_FIND))
    stopper.join(timeout=60)
    assert not stopper.is_alive()
    (final, _), *_ = responses
    assert final.Status == S.OUT_OF_RESOURCES
    assert "shutdown" in final.ErrorComment
    assert gate.search_closed.is_set()
    assoc.join(timeout=10)  # then the association is aborted: nothing left to wait for
    assert assoc.is_aborted


@pytest.mark.parametrize("grace_s", [0.0, 5.0])
def test_stop_aborts_idle_associations_at_the_deadline(dimse: DimseHarness, grace_s: float) -> None:
    assoc = dimse.associate()
    assert assoc.is_established
    dimse.front.stop(grace_s)
    dimse.front.stop(grace_s)
    assert dimse.front.port is None
    assoc.join(timeout=10)  # the SCU's association thread ends on the server's A-ABORT
    assert assoc.is_aborted
