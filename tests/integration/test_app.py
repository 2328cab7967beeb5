"""The composed gateway as a real process: both fronts, one store, clean signals."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from tests.gateway_process import start_gateway

CONFIG = """
[dimse]
host = "127.0.0.1"
port = 0
[web]
host = "127.0.0.1"
port = 0
[store]
path = "{store}"
"""


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture
def demo_gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    gateway = start_gateway(
        CONFIG.format(store=tmp_path / "gw.sqlite3"), tmp_path, args=("--demo",)
    )
    yield gateway
    gateway.stop()


def test_demo_serves_both_fronts_from_one_store(demo_gateway) -> None:  # type: ignore[no-untyped-def]
    status, _ = _get(f"http://127.0.0.1:{demo_gateway.web_port}/health")
    assert status == 200
    status, body = _get(
        f"http://127.0.0.1:{demo_gateway.web_port}/dicomweb/modality-scheduled-procedure-steps"
    )
    assert status == 200
    web_items = json.loads(body)
    assert web_items, "the demo seeds worklist items"

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", demo_gateway.dimse_port, ae_title="MODALITY_GW")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        from pydicom.dataset import Dataset

        identifier = Dataset()
        identifier.PatientName = ""
        identifier.PatientID = ""
        identifier.StudyInstanceUID = ""
        dimse_ids = set()
        for status_ds, found in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
            if status_ds.Status == 0xFF00:
                assert found is not None
                dimse_ids.add(found.StudyInstanceUID)
    finally:
        assoc.release()
    web_ids = {item["0020000D"]["Value"][0] for item in web_items}
    assert dimse_ids == web_ids


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    gateway = start_gateway(CONFIG.format(store=tmp_path / "gw.sqlite3"), tmp_path)
    assert gateway.stop() == 0
    assert any('"stopped"' in line for line in gateway.lines)


def test_json_logs_keep_patient_data_out(demo_gateway) -> None:  # type: ignore[no-untyped-def]
    url = (
        f"http://127.0.0.1:{demo_gateway.web_port}/dicomweb/modality-scheduled-procedure-steps"
        "?PatientName=M*"
    )
    _get(url)
    demo_gateway.stop()
    log = "".join(demo_gateway.lines)
    assert "Müller" not in log and "M\\u00fcller" not in log


def test_mpps_over_dimse_is_visible_through_dicomweb(demo_gateway) -> None:  # type: ignore[no-untyped-def]
    """One store behind both fronts: a lifecycle over DIMSE, then Retrieve over HTTP."""
    from pydicom.uid import generate_uid
    from pynetdicom.sop_class import ModalityPerformedProcedureStep

    from gateway.model.dicom_json import json_to_dataset
    from tests.unit import mpps_examples as ex

    def dataset(attributes: dict[str, object]):  # type: ignore[no-untyped-def]
        ds = json_to_dataset(attributes)
        ds.SpecificCharacterSet = "ISO_IR 192"
        return ds

    uid = generate_uid(prefix=None)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", demo_gateway.dimse_port, ae_title="MODALITY_GW")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_create(
            dataset(ex.minimal_create()), ModalityPerformedProcedureStep, uid
        )
        assert status.Status == 0x0000
        for changes in (ex.series_update(), ex.completed_update()):
            status, _ = assoc.send_n_set(dataset(changes), ModalityPerformedProcedureStep, uid)
            assert status.Status == 0x0000
        status, _ = assoc.send_n_set(
            dataset(ex.completed_update()), ModalityPerformedProcedureStep, uid
        )
        assert (status.Status, status.ErrorID) == (0x0110, 0xA710)
    finally:
        assoc.release()

    code, body = _get(
        f"http://127.0.0.1:{demo_gateway.web_port}/dicomweb/modality-performed-procedure-steps/{uid}"
    )
    assert code == 200
    [mpps] = json.loads(body)
    assert mpps["00400252"]["Value"] == ["COMPLETED"]
    assert mpps["00080018"]["Value"] == [uid]
    assert mpps["00400340"] == ex.completed_update()["00400340"]
