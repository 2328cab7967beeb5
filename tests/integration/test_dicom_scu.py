"""A guarded requestor association gets every response, even when pynetdicom's reactor runs
its poll in the gap between two operations (gateway/dicom_scu.py).

The gap is a matter of thread scheduling, so the test forces it: the association's reactor
checkpoint is replaced by an Event that, when its wait() returns although a send_*() has
cleared it again meanwhile, holds the reactor until the next response is queued, exactly
what a reactor starved of the GIL does by chance.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association

from gateway.backends.base import MppsResult
from gateway.dicom_scu import guard_responses
from gateway.dimse.association import MPPS
from gateway.model.dicom_json import json_to_dataset
from gateway.model.types import JsonDataset
from tests.integration.dimse_fixtures import GATEWAY_AE, DelegatingBackend, running_dimse
from tests.unit.mpps_examples import minimal_create, series_update


class _Instant(DelegatingBackend):
    """Answers MPPS writes at once, so a response can arrive before a starved reactor runs."""

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        return MppsResult({})

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        return MppsResult({})


class _LateReactorCheckpoint(threading.Event):
    """The reactor's pause checkpoint, holding a reactor that slipped through the gap."""

    def __init__(self, assoc: Association) -> None:
        super().__init__()
        self._assoc = assoc
        self.forced = 0

    def wait(self, timeout: float | None = None) -> bool:
        woke = super().wait(timeout)
        if not self.is_set():  # woken by set(), but the next send_*() has cleared it again
            self.forced += 1
            deadline = time.monotonic() + 3
            while self._assoc.dimse.msg_queue.empty() and time.monotonic() < deadline:
                time.sleep(0.001)
        return woke


def test_back_to_back_operations_get_every_response(tmp_path: Path) -> None:
    create, update = json_to_dataset(minimal_create()), json_to_dataset(series_update())
    with running_dimse(tmp_path / "store.sqlite3", wrap=_Instant) as harness:
        ae = AE(ae_title="SCU")
        ae.acse_timeout = ae.network_timeout = 10
        ae.dimse_timeout = 3
        ae.add_requested_context(MPPS)
        assoc = guard_responses(ae.associate("127.0.0.1", harness.port, ae_title=GATEWAY_AE))
        assert assoc.is_established
        checkpoint = _LateReactorCheckpoint(assoc)
        checkpoint.set()
        assoc._reactor_checkpoint = checkpoint
        statuses: list[Any] = []
        try:
            for n in range(3):
                uid = f"1.2.826.0.1.3680043.10.99.7.{n}"
                statuses.append(assoc.send_n_create(create, MPPS, uid)[0].get("Status"))
                statuses.append(assoc.send_n_set(update, MPPS, uid)[0].get("Status"))
        finally:
            if assoc.is_established:
                assoc.release()
    assert statuses == [0] * 6
    assert checkpoint.forced > 0  # the gap was really taken (else the test proves nothing)


def test_guarding_is_idempotent_and_uses_pynetdicoms_internals(tmp_path: Path) -> None:
    with running_dimse(tmp_path / "store.sqlite3") as harness:
        ae = AE(ae_title="SCU")
        ae.add_requested_context(MPPS)
        assoc = ae.associate("127.0.0.1", harness.port, ae_title=GATEWAY_AE)
        try:
            guarded = guard_responses(assoc).dimse.get_msg
            assert guard_responses(assoc).dimse.get_msg is guarded
            assert isinstance(assoc._reactor_checkpoint, threading.Event)
            assert hasattr(assoc.dimse.msg_queue, "mutex")
            assert assoc.dimse.get_msg(block=False) == (None, None)
        finally:
            assoc.release()
