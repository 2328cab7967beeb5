"""Store-and-forward in direction W->D: DICOMweb modalities -> gateway -> DIMSE RIS.

The RIS (a pynetdicom MPPS SCP) answers 0213 "resource limitation" (not performed) for a
stretch; every Create/Update is still answered 201/200, and once the RIS accepts again
the gateway delivers each MPPS in order: N-CREATE, then its two N-SETs. Direction D->W is
covered by ``tests/integration/test_outbox_process.py``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.model.status import DimseStatus
from tests.fakes.mpps_scp import FakeRis
from tests.gateway_process import start_gateway, web_only_config
from tests.unit.mpps_examples import completed_update, minimal_create, series_update

UID_ROOT = "1.2.826.0.1.3680043.10.78"
COUNT = 20
MPPS_PATH = "dicomweb/modality-performed-procedure-steps"


@pytest.fixture
def ris() -> Iterator[FakeRis]:
    with FakeRis() as fake:
        yield fake


def config(port: int) -> str:
    return web_only_config(
        "gateway.sqlite3",
        web_backend="ris",
        extra=f"""[backends.ris]
type = "dimse"
host = "127.0.0.1"
port = {port}
called_ae_title = "FAKE_RIS"
timeout_s = 5.0
retry_initial_s = 0.05
retry_max_s = 0.3
""",
    )


def post(url: str, dataset: object) -> int:
    request = urllib.request.Request(url, data=json.dumps([dataset]).encode(), method="POST")
    request.add_header("Content-Type", "application/dicom+json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_ris_refusing_then_back(ris: FakeRis, tmp_path: Path) -> None:
    ris.statuses["create"] = DimseStatus.RESOURCE_LIMITATION
    ris.statuses["set"] = DimseStatus.RESOURCE_LIMITATION
    gateway = start_gateway(config(ris.port), tmp_path)
    base = f"http://127.0.0.1:{gateway.web_port}/{MPPS_PATH}"
    answers: list[tuple[int, int, int]] = []

    def modality(numbers: range) -> None:
        for n in numbers:
            url = f"{base}/{UID_ROOT}.{n}"
            answers.append(
                (
                    post(url, minimal_create()),
                    post(f"{url}?update", series_update()),
                    post(f"{url}?update", completed_update()),
                )
            )

    try:
        threads = [threading.Thread(target=modality, args=(range(i, COUNT, 4),)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [(201, 200, 200)] * COUNT
        assert ris.store == {}
        ris.statuses.clear()
        deadline = time.monotonic() + 20
        while len(_completed(ris)) < COUNT:
            assert time.monotonic() < deadline, "the backlog was not delivered"
            time.sleep(0.02)
    finally:
        assert gateway.stop() == 0
    assert sorted(_completed(ris)) == sorted(f"{UID_ROOT}.{n}" for n in range(COUNT))
    accepted: dict[str, list[str]] = {}
    for received in ris.received:
        assert received.uid is not None
        accepted.setdefault(received.uid, []).append(received.op)
    for ops in accepted.values():
        # Refused attempts may repeat the head message; the order never changes.
        collapsed = [op for i, op in enumerate(ops) if i == 0 or op != ops[i - 1]]
        assert collapsed[-2:] == ["create", "set"] and "set" not in collapsed[:-1]
        assert ops.count("set") == 2


def _completed(ris: FakeRis) -> list[str]:
    return [
        uid
        for uid, ds in list(ris.store.items())
        if str(ds.get("PerformedProcedureStepStatus", "")) == "COMPLETED"
    ]
