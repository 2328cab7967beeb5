"""The dicomweb backend's MPPS side and HTTP hygiene against a real fake origin on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.backends.base import Backend
from gateway.backends.dicomweb import DicomwebBackend
from gateway.backends.dicomweb.client import RetryPolicy
from gateway.errors import (
    ConfigError,
    DuplicateInstance,
    FinalStateViolation,
    GatewayError,
    IncompatibleUpdate,
    InstanceGone,
    InvalidInstanceUID,
    MissingAttribute,
    NoSuchInstance,
    NotSupported,
    UpstreamBadResponse,
    UpstreamFailure,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.model.status import DimseStatus, ErrorId, Operation, dimse_failure
from gateway.settings import DicomwebBackendSettings
from tests.fakes.origin import (
    FakeOrigin,
    Fault,
    malformed_json,
    running_origin,
    status_report,
    wrong_content_type,
)
from tests.unit.mpps_examples import MPPS_UID, completed_update, minimal_create, series_update

FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05)


def settings_for(url: str, **overrides: object) -> DicomwebBackendSettings:
    values: dict[str, object] = {"url": url, "timeout_s": 2.0, **overrides}
    return DicomwebBackendSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def origin() -> AsyncIterator[FakeOrigin]:
    async with running_origin() as fake:
        yield fake


@pytest.fixture
async def backend(origin: FakeOrigin) -> AsyncIterator[DicomwebBackend]:
    opened = await DicomwebBackend.open("cloud", settings_for(origin.url), retry=FAST_RETRY)
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_implements_the_backend_protocol(backend: DicomwebBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name == "cloud"


# --- the standard dialect ------------------------------------------------------------------


async def test_create_posts_the_dataset_to_the_uid(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    attributes = minimal_create()
    result = await backend.create_mpps(MPPS_UID, attributes)

    [request] = origin.requests
    assert request.method == "POST"
    assert request.path == f"/dicomweb/modality-performed-procedure-steps/{MPPS_UID}"
    assert request.query_string == ""
    assert request.headers["Content-Type"].startswith("application/dicom+json")
    assert request.headers["Accept"] == "application/dicom+json"
    assert json.loads(request.body) == attributes
    assert origin.mpps[MPPS_UID] == attributes
    # The result is the MPPS as a conformant origin holds it: with its SOP UIDs.
    assert result.dataset == {
        **attributes,
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.3.1.2.3.3"]},
        "00080018": {"vr": "UI", "Value": [MPPS_UID]},
    }


async def test_any_2xx_is_success_for_create() -> None:
    async with running_origin(create_status=200) as origin:  # PS3.18 B.37 answers 200
        backend = await DicomwebBackend.open("cloud", settings_for(origin.url))
        try:
            await backend.create_mpps(MPPS_UID, minimal_create())
        finally:
            await backend.aclose()
    assert MPPS_UID in origin.mpps


async def test_update_posts_with_the_bare_update_flag(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    result = await backend.update_mpps(MPPS_UID, series_update())

    update, retrieve = origin.requests[-2:]
    assert (update.method, update.query_string) == ("POST", "update")
    assert update.path.endswith(f"/modality-performed-procedure-steps/{MPPS_UID}")
    assert origin.mpps[MPPS_UID]["00400340"] == series_update()["00400340"]
    # The result is the whole MPPS as the origin now holds it (one Retrieve of everything).
    assert (retrieve.method, retrieve.query) == ("GET", [])
    assert result.dataset == origin.mpps[MPPS_UID]


async def test_update_succeeds_when_the_origin_cannot_retrieve(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    origin.fail("retrieve", Fault(501, b"Retrieve is optional", times=5))
    result = await backend.update_mpps(MPPS_UID, series_update())
    assert result.dataset == series_update()
    assert result.warnings == ()


async def test_retrieve_asks_for_the_tags_and_trims_the_answer(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    origin.mpps[MPPS_UID] = minimal_create()
    origin.mpps[MPPS_UID]["99990010"] = {"vr": "LO", "Value": ["extra"]}  # never requested
    result = await backend.retrieve_mpps(MPPS_UID, [0x00400252, 0x00100010])

    request = origin.requests[-1]
    assert request.method == "GET"
    assert request.query == [("includefield", "00400252,00100010")]
    assert list(result.dataset) == ["00100010", "00400252"]
    assert result.dataset["00400252"]["Value"] == ["IN PROGRESS"]


async def test_retrieve_without_tags_returns_everything(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    origin.mpps[MPPS_UID] = minimal_create()
    result = await backend.retrieve_mpps(MPPS_UID)

    assert origin.requests[-1].query == []
    assert result.dataset == minimal_create()


async def test_a_malformed_retrieve_answer_is_refused_naming_the_attribute(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    """The text fits a 64-character Error Comment whole (an N-GET's answer through A)."""
    origin.mpps[MPPS_UID] = {**minimal_create(), "00400252": {"vr": "CS", "Value": "DONE"}}
    with pytest.raises(UpstreamBadResponse) as raised:
        await backend.retrieve_mpps(MPPS_UID)
    assert raised.value.message.startswith("unusable answer: 00400252")
    assert len(raised.value.message) <= 64


# --- the draft dialect ---------------------------------------------------------------------


async def test_draft_dialect_uses_put_and_patch() -> None:
    async with running_origin(dialect="draft") as origin:
        backend = await DicomwebBackend.open(
            "draft", settings_for(origin.url, mpps_dialect="draft")
        )
        try:
            await backend.create_mpps(MPPS_UID, minimal_create())
            await backend.update_mpps(MPPS_UID, completed_update())
            result = await backend.retrieve_mpps(MPPS_UID, [0x00400252])
        finally:
            await backend.aclose()
    methods = [(r.method, r.query_string) for r in origin.requests]
    assert methods == [("PUT", ""), ("PATCH", ""), ("GET", ""), ("GET", "includefield=00400252")]
    assert result.dataset["00400252"]["Value"] == ["COMPLETED"]


async def test_standard_dialect_against_a_draft_origin_is_not_supported() -> None:
    async with running_origin(dialect="draft") as origin:
        backend = await DicomwebBackend.open("cloud", settings_for(origin.url))
        try:
            with pytest.raises(NotSupported) as raised:
                await backend.create_mpps(MPPS_UID, minimal_create())
        finally:
            await backend.aclose()
    assert raised.value.upstream_status == 405


# --- outcomes ------------------------------------------------------------------------------


async def test_duplicate_create_is_0111_with_the_origin_text(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    with pytest.raises(DuplicateInstance) as raised:
        await backend.create_mpps(MPPS_UID, minimal_create())

    error = raised.value
    assert error.upstream_status == 409
    assert error.upstream_detail == f"MPPS {MPPS_UID} already exists"
    failure = dimse_failure(error, Operation.CREATE)
    assert failure.status is DimseStatus.DUPLICATE_SOP_INSTANCE
    assert failure.error_comment.startswith("HTTP 409: MPPS ")


async def test_update_of_unknown_mpps_is_0112(backend: DicomwebBackend) -> None:
    with pytest.raises(NoSuchInstance) as raised:
        await backend.update_mpps(MPPS_UID, series_update())
    assert raised.value.upstream_detail == "no such MPPS"
    assert dimse_failure(raised.value, Operation.UPDATE).status is DimseStatus.NO_SUCH_SOP_INSTANCE


async def test_update_of_deleted_mpps_is_gone(backend: DicomwebBackend, origin: FakeOrigin) -> None:
    origin.gone.add(MPPS_UID)
    with pytest.raises(InstanceGone) as raised:
        await backend.update_mpps(MPPS_UID, series_update())
    assert dimse_failure(raised.value, Operation.UPDATE).status is DimseStatus.NO_SUCH_SOP_INSTANCE


async def test_unexplained_409_on_a_final_mpps_becomes_a710(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    await backend.update_mpps(MPPS_UID, completed_update())
    with pytest.raises(FinalStateViolation) as raised:
        await backend.update_mpps(MPPS_UID, series_update())

    # The origin said only "409 conflict"; a Retrieve of the status told us why.
    assert [r.method for r in origin.requests[-2:]] == ["POST", "GET"]
    failure = dimse_failure(raised.value, Operation.UPDATE)
    assert failure.status is DimseStatus.PROCESSING_FAILURE
    assert failure.error_id is ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED
    assert raised.value.upstream_status == 409


async def test_409_on_an_mpps_in_progress_stays_incompatible(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    origin.fail("update", status_report(409, "attribute was not created"))
    with pytest.raises(IncompatibleUpdate) as raised:
        await backend.update_mpps(MPPS_UID, series_update())
    failure = dimse_failure(raised.value, Operation.UPDATE)
    assert failure.status is DimseStatus.PROCESSING_FAILURE
    assert failure.error_id is None
    assert "attribute was not created" in failure.error_comment


async def test_a710_in_a_dicom_json_status_report_needs_no_second_request(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    report = [
        {
            "00000900": {"vr": "US", "Value": [0x0110]},
            "00000902": {"vr": "LO", "Value": ["MPPS is COMPLETED"]},
            "00000903": {"vr": "US", "Value": [0xA710]},
        }
    ]
    body = json.dumps(report).encode()
    origin.fail("update", Fault(409, body, "application/dicom+json"))
    with pytest.raises(FinalStateViolation) as raised:
        await backend.update_mpps(MPPS_UID, series_update())
    assert len(origin.requests) == 1
    assert raised.value.upstream_detail == "MPPS is COMPLETED"


async def test_precise_request_error_of_a_gateway_origin_is_passed_on(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    report = {
        "httpStatus": 400,
        "dimseStatus": "0120",
        "errorComment": "missing Performed Series Sequence",
        "offendingElements": ["00400340"],
    }
    origin.fail("update", Fault(400, json.dumps(report).encode(), "application/json"))
    with pytest.raises(MissingAttribute) as raised:
        await backend.update_mpps(MPPS_UID, series_update())
    failure = dimse_failure(raised.value, Operation.UPDATE)
    assert failure.status is DimseStatus.MISSING_ATTRIBUTE
    assert failure.offending == (0x00400340,)


async def test_invalid_uid_and_invalid_create_never_leave_the_gateway(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    with pytest.raises(InvalidInstanceUID):
        await backend.create_mpps("1.02.3", minimal_create())
    with pytest.raises(InvalidInstanceUID):
        await backend.update_mpps("1.2/../x", series_update())
    with pytest.raises(InvalidInstanceUID):
        await backend.retrieve_mpps("abc")
    incomplete = minimal_create()
    del incomplete["00400241"]  # Performed Station AE Title, Type 1
    with pytest.raises(MissingAttribute) as raised:
        await backend.create_mpps(MPPS_UID, incomplete)
    assert 0x00400241 in raised.value.offending
    assert origin.requests == []


@pytest.mark.parametrize(
    ("fault", "operation", "error", "dimse"),
    [
        (Fault(400, b"bad payload"), "create", UpstreamFailure, DimseStatus.PROCESSING_FAILURE),
        (Fault(401, b"who are you"), "create", UpstreamRefused, DimseStatus.NOT_AUTHORIZED),
        (Fault(403, b"forbidden"), "update", UpstreamRefused, DimseStatus.NOT_AUTHORIZED),
        (Fault(404, b"nope"), "retrieve", NoSuchInstance, DimseStatus.NO_SUCH_SOP_INSTANCE),
        (Fault(410, b"gone"), "retrieve", InstanceGone, DimseStatus.NO_SUCH_SOP_INSTANCE),
        (Fault(413, b"too big"), "create", UpstreamUnavailable, DimseStatus.RESOURCE_LIMITATION),
        (Fault(500, b"oops"), "update", UpstreamFailure, DimseStatus.PROCESSING_FAILURE),
        (Fault(502, b"bad gw"), "create", UpstreamUnavailable, DimseStatus.RESOURCE_LIMITATION),
        (Fault(503, b"later"), "create", UpstreamUnavailable, DimseStatus.RESOURCE_LIMITATION),
        (Fault(504, b"slow"), "update", UpstreamTimeout, DimseStatus.PROCESSING_FAILURE),
        (malformed_json(), "retrieve", UpstreamBadResponse, DimseStatus.PROCESSING_FAILURE),
        (wrong_content_type(), "retrieve", UpstreamBadResponse, DimseStatus.PROCESSING_FAILURE),
        (
            Fault(200, b'[{"00100010": {"vr": "PN", "Value": [5]}}]', "application/dicom+json"),
            "retrieve",
            UpstreamBadResponse,
            DimseStatus.PROCESSING_FAILURE,
        ),
    ],
)
async def test_fault_table(
    backend: DicomwebBackend,
    origin: FakeOrigin,
    fault: Fault,
    operation: str,
    error: type[GatewayError],
    dimse: DimseStatus,
) -> None:
    origin.mpps[MPPS_UID] = minimal_create()
    fault.times = 10  # also every retry of a GET
    origin.fail(operation, fault)  # type: ignore[arg-type]
    op = Operation(operation)
    with pytest.raises(error) as raised:
        await _call(backend, op)
    assert dimse_failure(raised.value, op).status is dimse
    if fault.status >= 400:
        assert raised.value.upstream_status == fault.status
        assert raised.value.upstream_detail == fault.body.decode()
    # The backend keeps serving.
    origin.faults.clear()
    assert (await backend.retrieve_mpps(MPPS_UID, [0x00400252])).dataset


async def _call(backend: DicomwebBackend, op: Operation) -> object:
    if op is Operation.CREATE:
        return await backend.create_mpps("1.2.3.4", minimal_create())
    if op is Operation.UPDATE:
        return await backend.update_mpps(MPPS_UID, series_update())
    return await backend.retrieve_mpps(MPPS_UID)


async def test_one_pooled_connection_serves_consecutive_requests(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    await backend.update_mpps(MPPS_UID, series_update())
    await backend.retrieve_mpps(MPPS_UID)
    await backend.check_ready()
    assert len({r.peer for r in origin.requests}) == 1


# --- retries, timeouts, connection failures --------------------------------------------------


async def test_get_is_retried_after_503_but_create_is_not(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    origin.mpps[MPPS_UID] = minimal_create()
    origin.fail("retrieve", Fault(503, times=2))
    result = await backend.retrieve_mpps(MPPS_UID, [0x00400252])
    assert result.dataset["00400252"]["Value"] == ["IN PROGRESS"]
    assert len(origin.requests_to("retrieve")) == 3

    origin.fail("create", Fault(503, times=2))
    with pytest.raises(UpstreamUnavailable):
        await backend.create_mpps("1.2.3.4", minimal_create())
    assert len(origin.requests_to("create")) == 1


async def test_retry_gives_up_and_keeps_retry_after(
    backend: DicomwebBackend, origin: FakeOrigin
) -> None:
    origin.fail("retrieve", Fault(503, headers={"Retry-After": "0"}, times=5))
    with pytest.raises(UpstreamUnavailable) as raised:
        await backend.retrieve_mpps(MPPS_UID)
    assert len(origin.requests) == FAST_RETRY.attempts
    assert raised.value.retry_after_s == 0


async def test_slow_origin_times_out_and_the_request_is_abandoned(origin: FakeOrigin) -> None:
    backend = await DicomwebBackend.open("cloud", settings_for(origin.url, timeout_s=0.2))
    try:
        origin.fail("create", Fault(hang=True))
        with pytest.raises(UpstreamTimeout) as raised:
            await backend.create_mpps(MPPS_UID, minimal_create())
        await asyncio.wait_for(origin.aborted.wait(), 10)  # the origin saw the connection go away
        failure = dimse_failure(raised.value, Operation.CREATE)
        assert failure.status is DimseStatus.PROCESSING_FAILURE  # outcome unknown, not 0213
        assert "outcome unknown" in failure.error_comment

        origin.fail("retrieve", Fault(hang=True))
        with pytest.raises(UpstreamTimeout) as raised:
            await backend.retrieve_mpps(MPPS_UID)
        assert len(origin.requests_to("retrieve")) == 1  # timeouts are not retried
        status = dimse_failure(raised.value, Operation.RETRIEVE).status
        assert status is DimseStatus.RESOURCE_LIMITATION
        await backend.create_mpps(MPPS_UID, minimal_create())  # still serving
    finally:
        await backend.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_origin_down_is_not_performed() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/dicomweb"
    backend = await DicomwebBackend.open("cloud", settings_for(url), retry=FAST_RETRY)
    try:
        with pytest.raises(UpstreamUnavailable) as raised:
            await backend.create_mpps(MPPS_UID, minimal_create())
        status = dimse_failure(raised.value, Operation.CREATE).status
        assert status is DimseStatus.RESOURCE_LIMITATION  # nothing was sent: 0213
        with pytest.raises(UpstreamUnavailable):
            await backend.retrieve_mpps(MPPS_UID)
        with pytest.raises(UpstreamUnavailable):
            await backend.check_ready()
    finally:
        await backend.aclose()


async def test_check_ready(backend: DicomwebBackend, origin: FakeOrigin) -> None:
    await backend.check_ready()
    assert origin.requests[-1].query == [("limit", "1")]
    origin.fail("search", Fault(401, b"token expired"))
    with pytest.raises(UpstreamRefused):
        await backend.check_ready()


# --- credentials, headers, TLS ----------------------------------------------------------------


async def test_bearer_token_and_custom_headers(origin: FakeOrigin) -> None:
    settings = settings_for(origin.url, bearer_token_env="RIS_TOKEN", headers={"X-Site": "north"})
    backend = await DicomwebBackend.open("cloud", settings, environ={"RIS_TOKEN": "s3cret"})
    try:
        await backend.check_ready()
    finally:
        await backend.aclose()
    headers = origin.requests[0].headers
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Site"] == "north"


async def test_basic_credentials(origin: FakeOrigin) -> None:
    settings = settings_for(origin.url, basic_user_env="U", basic_password_env="P")
    backend = await DicomwebBackend.open("cloud", settings, environ={"U": "gw", "P": "pw"})
    try:
        await backend.check_ready()
    finally:
        await backend.aclose()
    assert origin.requests[0].headers["Authorization"] == "Basic Z3c6cHc="


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"bearer_token_env": "MISSING"}, "backends.cloud.bearer_token_env"),
        ({"basic_user_env": "U"}, "backends.cloud"),
        ({"bearer_token_env": "T", "basic_user_env": "U"}, "backends.cloud"),
        ({"ca_file": Path("/nonexistent/ca.pem")}, "backends.cloud.ca_file"),
    ],
)
async def test_bad_credentials_configuration_names_the_key(
    overrides: dict[str, object], key: str
) -> None:
    settings = settings_for("http://127.0.0.1:1/dicomweb", **overrides)
    with pytest.raises(ConfigError) as raised:
        await DicomwebBackend.open("cloud", settings, environ={"T": "t", "U": "u"})
    assert raised.value.key == key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (key, cert), made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    root = tmp_path_factory.mktemp("tls")
    key, cert = root / "key.pem", root / "cert.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


async def test_tls_is_verified_by_default(certificate: tuple[Path, Path]) -> None:
    key, cert = certificate
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    async with running_origin(ssl_context=server_ssl) as origin:
        assert origin.url.startswith("https://")
        outcomes = []
        for overrides in ({}, {"ca_file": cert}, {"verify_tls": False}):
            backend = await DicomwebBackend.open("cloud", settings_for(origin.url, **overrides))
            try:
                await backend.check_ready()
                outcomes.append("ok")
            except UpstreamUnavailable as exc:
                outcomes.append(exc.message)
            finally:
                await backend.aclose()
    assert outcomes == ["TLS failure", "ok", "ok"]
