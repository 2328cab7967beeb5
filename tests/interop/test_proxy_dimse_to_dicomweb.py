"""End to end, proxy direction DIMSE -> DICOMweb: two real gateway processes.

Gateway B serves DCMTK's example worklist from its local store through its DICOMweb front
(its DIMSE front is on too, as the reference). Gateway A has only a DIMSE front, wired to a
``dicomweb`` backend pointing at B. A modality (DCMTK's findscu, a pynetdicom SCU) must see
through A exactly what B answers directly. Further A gateways point at a fake origin (both
MPPS dialects, the fault table) and at a closed port (origin down).
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityPerformedProcedureStepRetrieve,
    ModalityWorklistInformationFind,
    Verification,
)

from gateway.model.dicom_json import dataset_to_json, json_to_dataset
from gateway.model.status import DimseStatus, ErrorId
from gateway.model.types import JsonDataset
from tests.conftest import require_tool
from tests.fakes.origin import (
    FakeOrigin,
    Fault,
    Route,
    malformed_json,
    origin_in_thread,
    wait_event,
    wrong_content_type,
)
from tests.gateway_process import GatewayProcess, import_worklist, start_gateway
from tests.unit.mpps_examples import completed_update, minimal_create, series_update

A_AE, B_AE = "GW_A", "GW_B"
# Two tags: pynetdicom 3.0's N-GET request logging fails on a one-tag list.
STATUS_TAGS = [Tag(0x00100010), Tag(0x00400252)]
UID_ROOT = "1.2.826.0.1.3680043.8.498.7"


# --- gateways --------------------------------------------------------------------------------


def proxy_config(url: str, workdir: Path, **backend: Any) -> str:
    """Gateway A: DIMSE front only, wired to a dicomweb backend at ``url``."""
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in backend.items())
    return f"""
log_format = "json"
[dimse]
host = "127.0.0.1"
port = 0
ae_title = "{A_AE}"
backend = "up"
operation_timeout_s = 20.0
[web]
enabled = false
[store]
path = "{workdir / "unused.sqlite3"}"
[backends.up]
type = "dicomweb"
url = "{url}"
{extra}"""


@pytest.fixture(scope="module")
def gateway_b(
    dcmtk_worklist: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("gateway_b")
    config = f"""
log_format = "json"
[dimse]
host = "127.0.0.1"
port = 0
ae_title = "{B_AE}"
[web]
host = "127.0.0.1"
port = 0
[store]
path = "{workdir / "store.sqlite3"}"
"""
    import_worklist(config, workdir, dcmtk_worklist / "OFFIS")
    gateway = start_gateway(config, workdir)
    yield gateway
    gateway.stop()


def b_url(gateway_b: GatewayProcess) -> str:
    return f"http://127.0.0.1:{gateway_b.web_port}/dicomweb"


@pytest.fixture(scope="module")
def gateway_a(
    gateway_b: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("gateway_a")
    gateway = start_gateway(proxy_config(b_url(gateway_b), workdir, page_size=4), workdir)
    yield gateway
    assert gateway.stop() == 0  # a clean shutdown closes the backend's session


@pytest.fixture(scope="module")
def fake(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FakeOrigin, BlockingPortal, GatewayProcess]]:
    """A standard-dialect fake origin and a gateway A in front of it (1 s timeout)."""
    with origin_in_thread() as (origin, portal):
        workdir = tmp_path_factory.mktemp("gateway_fake")
        gateway = start_gateway(
            proxy_config(origin.url, workdir, timeout_s=1.0, store_and_forward=False), workdir
        )
        try:
            yield origin, portal, gateway
        finally:
            assert gateway.stop() == 0  # a clean shutdown closes the backend's session


@pytest.fixture
def faulty(
    fake: tuple[FakeOrigin, BlockingPortal, GatewayProcess],
) -> Iterator[tuple[FakeOrigin, BlockingPortal, GatewayProcess]]:
    """The fake origin with a small worklist, reset after each test."""
    origin, portal, _ = fake

    def reset() -> None:
        origin.faults.clear()
        origin.stall_after = None
        origin.worklist = [_sps(n) for n in range(5)]
        origin.mpps.clear()
        origin.requests.clear()
        origin.aborted.clear()

    portal.call(reset)
    yield fake
    portal.call(reset)


# --- SCU helpers -----------------------------------------------------------------------------


def associate(port: int, called: str = A_AE) -> Association:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for context in (
        Verification,
        ModalityWorklistInformationFind,
        ModalityPerformedProcedureStep,
        ModalityPerformedProcedureStepRetrieve,
    ):
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    return assoc


def find(assoc: Association, identifier: Dataset) -> tuple[int, list[Dataset]]:
    results = []
    final = -1
    for status, found in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
        assert status is not None and "Status" in status, "no C-FIND response"
        if status.Status in (DimseStatus.PENDING, DimseStatus.PENDING_WARNING):
            assert found is not None
            results.append(found)
        else:
            final = int(status.Status)
    return final, results


def patient_query() -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    return ds


def _sps(n: int) -> JsonDataset:
    return {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"Fake^Patient{n}"}]},
        "00100020": {"vr": "LO", "Value": [f"F{n}"]},
    }


def _status(result: Any) -> int:
    status = result[0] if isinstance(result, tuple) else result
    return int(status.Status)


# --- C-FIND: A must answer as B does ---------------------------------------------------------


def findscu(port: int, called: str, query: Path, out: Path) -> list[JsonDataset]:
    """Run DCMTK's findscu -W; the responses as DICOM JSON (charset-decoded, sorted)."""
    out.mkdir(parents=True)
    done = subprocess.run(
        [
            *(str(require_tool("findscu")), "-W", "-aec", called, "-X", "-od", str(out)),
            *("127.0.0.1", str(port), str(query)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = []
    for path in sorted(out.glob("rsp*.dcm")):
        found = dataset_to_json(dcmread(path))
        found.pop("00080005", None)  # each side may answer in its own character set
        results.append(found)
    return sorted(results, key=lambda r: json.dumps(r, sort_keys=True))


@pytest.mark.dcmtk
def test_findscu_through_a_equals_b_for_every_dcmtk_query(
    gateway_a: GatewayProcess, gateway_b: GatewayProcess, dcmtk_queries: list[Path], tmp_path: Path
) -> None:
    total = 0
    for query in dcmtk_queries:
        direct = findscu(gateway_b.dimse_port, B_AE, query, tmp_path / f"b-{query.stem}")
        proxied = findscu(gateway_a.dimse_port, A_AE, query, tmp_path / f"a-{query.stem}")
        assert proxied == direct, query.stem
        total += len(direct)
    assert total > len(dcmtk_queries)  # the queries really found items


@pytest.mark.dcmtk  # gateway B is loaded with DCMTK's example worklist
def test_paged_search_through_a(gateway_a: GatewayProcess, gateway_b: GatewayProcess) -> None:
    """A pages B with limit=4 (10 items, 3 pages); the modality sees one stream of 10."""
    assoc = associate(gateway_a.dimse_port)
    try:
        status, proxied = find(assoc, patient_query())
    finally:
        assoc.release()
    assoc = associate(gateway_b.dimse_port, B_AE)
    try:
        _, direct = find(assoc, patient_query())
    finally:
        assoc.release()
    assert status == DimseStatus.SUCCESS
    assert len(proxied) == len(direct) == 10
    assert sorted(str(d.PatientID) for d in proxied) == sorted(str(d.PatientID) for d in direct)
    assert set(proxied[0].keys()) == set(direct[0].keys())  # trimmed to the keys asked for


# --- MPPS: a full lifecycle through A lands in B ---------------------------------------------


def b_retrieve(gateway_b: GatewayProcess, uid: str) -> JsonDataset:
    request = urllib.request.Request(
        f"{b_url(gateway_b)}/modality-performed-procedure-steps/{uid}",
        headers={"Accept": "application/dicom+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        [dataset] = json.loads(response.read())
    result: JsonDataset = dataset
    return result


@pytest.mark.dcmtk  # gateway B is loaded with DCMTK's example worklist
def test_mpps_lifecycle_through_a(gateway_a: GatewayProcess, gateway_b: GatewayProcess) -> None:
    uid = f"{UID_ROOT}.1"
    assoc = associate(gateway_a.dimse_port)
    try:
        create = assoc.send_n_create(
            json_to_dataset(minimal_create()), ModalityPerformedProcedureStep, uid
        )
        assert _status(create) == DimseStatus.SUCCESS
        series = assoc.send_n_set(
            json_to_dataset(series_update()), ModalityPerformedProcedureStep, uid
        )
        assert _status(series) == DimseStatus.SUCCESS

        status, got = assoc.send_n_get(
            [Tag(0x00400252), Tag(0x00100010), Tag(0x00400340)],
            ModalityPerformedProcedureStepRetrieve,
            uid,
        )
        assert int(status.Status) == DimseStatus.SUCCESS
        assert got is not None
        assert got.PerformedProcedureStepStatus == "IN PROGRESS"
        assert str(got.PatientName) == "Doe^Sally"
        assert len(got.PerformedSeriesSequence) == 1
        assert "PerformedStationAETitle" not in got  # only what was asked for

        done = assoc.send_n_set(
            json_to_dataset(completed_update()), ModalityPerformedProcedureStep, uid
        )
        assert _status(done) == DimseStatus.SUCCESS

        # B's store has the completed step, as B's own DICOMweb front shows it.
        stored = b_retrieve(gateway_b, uid)
        assert stored["00400252"]["Value"] == ["COMPLETED"]
        for key, attr in completed_update().items():
            assert stored[key] == attr, key
        assert stored["00400241"] == minimal_create()["00400241"]

        # After the final state: B's 409 reaches the modality as 0110 + A710.
        again = assoc.send_n_set(
            json_to_dataset(series_update()), ModalityPerformedProcedureStep, uid
        )
        status = again[0]
        assert int(status.Status) == DimseStatus.PROCESSING_FAILURE
        assert int(status.ErrorID) == ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED

        duplicate = assoc.send_n_create(
            json_to_dataset(minimal_create()), ModalityPerformedProcedureStep, uid
        )
        assert _status(duplicate) == DimseStatus.DUPLICATE_SOP_INSTANCE
        assert "HTTP 409" in str(duplicate[0].ErrorComment)

        unknown = assoc.send_n_get(
            STATUS_TAGS, ModalityPerformedProcedureStepRetrieve, f"{UID_ROOT}.404"
        )
        assert _status(unknown) == DimseStatus.NO_SUCH_SOP_INSTANCE
    finally:
        assoc.release()


# --- any front on any backend: a DICOMweb -> DICOMweb relay --------------------------------


def http(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, Any, Any]:
    """(status, headers, body) of one request; error statuses are returned, not raised."""
    headers = {"Accept": "application/dicom+json"}
    if body is not None:
        headers["Content-Type"] = "application/dicom+json"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.dcmtk  # gateway B is loaded with DCMTK's example worklist
def test_web_front_relays_to_the_dicomweb_backend(
    gateway_b: GatewayProcess, tmp_path: Path
) -> None:
    config = proxy_config(b_url(gateway_b), tmp_path, page_size=3).replace(
        "[web]\nenabled = false", '[web]\nhost = "127.0.0.1"\nport = 0\nbackend = "up"'
    )
    relay = start_gateway(config, tmp_path)
    try:
        search = "/modality-scheduled-procedure-steps?PatientID=&limit=4&offset=2"
        status, headers, body = http(f"http://127.0.0.1:{relay.web_port}/dicomweb{search}")
        direct_status, _, direct_body = http(f"{b_url(gateway_b)}{search}")
        assert (status, direct_status) == (200, 200)
        ids = [r["00100020"]["Value"] for r in json.loads(body)]
        assert ids == [r["00100020"]["Value"] for r in json.loads(direct_body)]
        # The relay stops one match past the page (counting would page through the whole
        # upstream), so it says more results exist without inventing a number.
        assert "There are additional results that can be requested" in headers["Warning"]

        uid = f"{UID_ROOT}.5"
        mpps = (
            f"http://127.0.0.1:{relay.web_port}/dicomweb/modality-performed-procedure-steps/{uid}"
        )
        created = http(mpps, "POST", json.dumps(minimal_create()).encode())
        assert created[0] == 201
        again = http(mpps, "POST", json.dumps(minimal_create()).encode())
        assert again[0] == 409  # B's 409 -> DuplicateInstance -> 409 again
        updated = http(f"{mpps}?update", "POST", json.dumps(completed_update()).encode())
        assert updated[0] == 200
        assert b_retrieve(gateway_b, uid)["00400252"]["Value"] == ["COMPLETED"]
        status, _, body = http(f"{mpps}?includefield=00400252")
        assert (status, json.loads(body)[0]["00400252"]["Value"]) == (200, ["COMPLETED"])
    finally:
        assert relay.stop() == 0  # a clean shutdown closes the backend's session


# --- the draft dialect -----------------------------------------------------------------------


def test_draft_dialect_through_a(tmp_path: Path) -> None:
    uid = f"{UID_ROOT}.2"
    with origin_in_thread(dialect="draft") as (origin, portal):
        gateway = start_gateway(proxy_config(origin.url, tmp_path, mpps_dialect="draft"), tmp_path)
        try:
            assoc = associate(gateway.dimse_port)
            try:
                create = assoc.send_n_create(
                    json_to_dataset(minimal_create()), ModalityPerformedProcedureStep, uid
                )
                update = assoc.send_n_set(
                    json_to_dataset(completed_update()), ModalityPerformedProcedureStep, uid
                )
                status, got = assoc.send_n_get(
                    STATUS_TAGS, ModalityPerformedProcedureStepRetrieve, uid
                )
            finally:
                assoc.release()
        finally:
            assert gateway.stop() == 0  # a clean shutdown closes the backend's session
        methods = portal.call(lambda: [(r.method, r.query_string) for r in origin.requests])
        stored = portal.call(lambda: origin.mpps[uid]["00400252"])
    assert (_status(create), _status(update), int(status.Status)) == (0, 0, 0)
    assert methods[:2] == [("PUT", ""), ("PATCH", "")]
    assert methods[-1][0] == "GET"
    assert got is not None
    assert got.PerformedProcedureStepStatus == "COMPLETED"
    assert stored["Value"] == ["COMPLETED"]


# --- the fault table -------------------------------------------------------------------------


def _mpps_call(assoc: Association, operation: str, uid: str) -> Any:
    if operation == "create":
        return assoc.send_n_create(
            json_to_dataset(minimal_create()), ModalityPerformedProcedureStep, uid
        )
    if operation == "update":
        return assoc.send_n_set(
            json_to_dataset(series_update()), ModalityPerformedProcedureStep, uid
        )
    return assoc.send_n_get(STATUS_TAGS, ModalityPerformedProcedureStepRetrieve, uid)


FAULTS: list[tuple[Route, Fault, DimseStatus]] = [
    # (route, fault, DIMSE status the modality gets; status-mapping.md §3.2 / §4.2)
    ("search", Fault(404, b"no worklist here"), DimseStatus.SOP_CLASS_NOT_SUPPORTED),
    ("search", Fault(503, b"busy", times=10), DimseStatus.OUT_OF_RESOURCES),
    ("search", Fault(hang=True), DimseStatus.OUT_OF_RESOURCES),
    ("search", malformed_json(), DimseStatus.UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE),
    ("search", wrong_content_type(), DimseStatus.UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE),
    ("create", Fault(409, b"UID in use"), DimseStatus.DUPLICATE_SOP_INSTANCE),
    ("create", Fault(503, b"busy"), DimseStatus.RESOURCE_LIMITATION),
    ("create", Fault(hang=True), DimseStatus.PROCESSING_FAILURE),
    ("create", wrong_content_type(), DimseStatus.SUCCESS),  # a 2xx is success, body unread
    ("update", Fault(404, b"unknown"), DimseStatus.NO_SUCH_SOP_INSTANCE),
    ("update", Fault(409, b"not allowed now"), DimseStatus.PROCESSING_FAILURE),
    ("update", Fault(410, b"deleted"), DimseStatus.NO_SUCH_SOP_INSTANCE),
    ("retrieve", Fault(404, b"unknown"), DimseStatus.NO_SUCH_SOP_INSTANCE),
    ("retrieve", Fault(410, b"deleted"), DimseStatus.NO_SUCH_SOP_INSTANCE),
    ("retrieve", Fault(hang=True), DimseStatus.RESOURCE_LIMITATION),
    ("retrieve", malformed_json(), DimseStatus.PROCESSING_FAILURE),
    ("retrieve", wrong_content_type(), DimseStatus.PROCESSING_FAILURE),
]


def _fault_id(route: Route, fault: Fault) -> str:
    if fault.hang:
        return f"{route}-slow"
    if fault.status < 400:
        return f"{route}-{fault.content_type.split('/')[-1]}-{len(fault.body)}"
    return f"{route}-{fault.status}"


@pytest.mark.parametrize(
    ("route", "fault", "expected"), FAULTS, ids=[_fault_id(r, f) for r, f, _ in FAULTS]
)
def test_fault_table_through_a(
    faulty: tuple[FakeOrigin, BlockingPortal, GatewayProcess],
    route: Route,
    fault: Fault,
    expected: DimseStatus,
) -> None:
    origin, portal, gateway = faulty
    uid = f"{UID_ROOT}.3"
    portal.call(origin.mpps.__setitem__, uid, minimal_create())
    portal.call(origin.fail, route, fault)
    assoc = associate(gateway.dimse_port)
    try:
        if route == "search":
            outcome, _ = find(assoc, patient_query())
            comment = None
        else:
            response = _mpps_call(assoc, route, uid)
            outcome = _status(response)
            comment = (
                str(response[0].get("ErrorComment", "")) if isinstance(response, tuple) else None
            )
        assert outcome == expected
        if fault.status >= 400 and not fault.hang and comment is not None:
            assert fault.body.decode() in comment  # the origin's text reaches the modality
        if fault.hang:
            wait_event(portal, origin.aborted)  # A gave up and closed the connection
        # A keeps serving on the same association.
        portal.call(origin.faults.clear)
        status, results = find(assoc, patient_query())
        assert (status, len(results)) == (DimseStatus.SUCCESS, 5)
    finally:
        assoc.release()


def test_search_cancelled_mid_page(
    faulty: tuple[FakeOrigin, BlockingPortal, GatewayProcess],
) -> None:
    origin, portal, gateway = faulty
    portal.call(setattr, origin, "stall_after", 2)  # 2 results, then the page stalls
    assoc = associate(gateway.dimse_port)
    try:
        statuses = []
        responses = assoc.send_c_find(patient_query(), ModalityWorklistInformationFind, msg_id=77)
        for status, _ in responses:
            statuses.append(int(status.Status))
            if len(statuses) == 1:
                assoc.send_c_cancel(77, query_model=ModalityWorklistInformationFind)
        assert statuses[0] == DimseStatus.PENDING
        assert statuses[-1] == DimseStatus.CANCEL
        wait_event(portal, origin.aborted)  # the HTTP request was aborted, mid-page
        portal.call(setattr, origin, "stall_after", None)
        final, results = find(assoc, patient_query())
        assert (final, len(results)) == (DimseStatus.SUCCESS, 5)
    finally:
        assoc.release()


def test_a_malformed_result_ends_the_search_with_c502_naming_it(
    faulty: tuple[FakeOrigin, BlockingPortal, GatewayProcess],
) -> None:
    """Results before the malformed one go out, then C502 names the attribute whole in the
    Error Comment; garbage in an attribute nobody asked for is dropped."""
    origin, portal, gateway = faulty
    results = [_sps(n) for n in range(5)]
    results[0] = {**results[0], "00101010": 5}  # Patient's Age, not asked for
    results[2] = {**results[2], "00100020": {"vr": "LO", "Value": "F2"}}
    portal.call(setattr, origin, "worklist", results)
    assoc = associate(gateway.dimse_port)
    try:
        statuses = []
        for status, found in assoc.send_c_find(patient_query(), ModalityWorklistInformationFind):
            statuses.append(int(status.Status))
            if found is not None:
                assert "PatientAge" not in found
        assert statuses[:-1] == [DimseStatus.PENDING] * 2
        assert statuses[-1] == DimseStatus.UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE
        assert status.ErrorComment == "unusable answer: attribute 00100020: Value is not an array"
        portal.call(setattr, origin, "worklist", [_sps(n) for n in range(5)])
        final, found_all = find(assoc, patient_query())  # still serving, same association
        assert (final, len(found_all)) == (DimseStatus.SUCCESS, 5)
    finally:
        assoc.release()


def test_a_relay_answers_a_malformed_result_with_502_naming_it(tmp_path: Path) -> None:
    """A web client of a relay gets 502 naming the fault; the relay keeps serving."""
    config = proxy_config("{url}", tmp_path).replace(
        "[web]\nenabled = false", '[web]\nhost = "127.0.0.1"\nport = 0\nbackend = "up"'
    )
    with origin_in_thread() as (origin, portal):
        bad = {**_sps(1), "00100010": {"vr": "PN", "Value": "Fake^Patient1"}}
        portal.call(setattr, origin, "worklist", [_sps(0), bad])
        relay = start_gateway(config.replace("{url}", origin.url), tmp_path)
        try:
            search = (
                f"http://127.0.0.1:{relay.web_port}/dicomweb/modality-scheduled-procedure-steps"
            )
            status, _, body = http(f"{search}?PatientID=")
            assert status == 502
            assert b"unusable answer: attribute 00100010: Value is not an array" in body
            portal.call(setattr, origin, "worklist", [_sps(0), _sps(1)])
            status, _, body = http(f"{search}?PatientID=")
            assert (status, len(json.loads(body))) == (200, 2)
        finally:
            assert relay.stop() == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_origin_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/dicomweb"
    gateway = start_gateway(proxy_config(url, tmp_path, store_and_forward=False), tmp_path)
    try:
        assoc = associate(gateway.dimse_port)
        try:
            status, results = find(assoc, patient_query())
            assert (status, results) == (DimseStatus.OUT_OF_RESOURCES, [])
            create = _mpps_call(assoc, "create", f"{UID_ROOT}.4")
            assert _status(create) == DimseStatus.RESOURCE_LIMITATION  # not performed
            retrieve = _mpps_call(assoc, "retrieve", f"{UID_ROOT}.4")
            assert _status(retrieve) == DimseStatus.RESOURCE_LIMITATION
            assert assoc.send_c_echo().Status == DimseStatus.SUCCESS  # still serving
        finally:
            assoc.release()
    finally:
        assert gateway.stop() == 0  # a clean shutdown closes the backend's session
