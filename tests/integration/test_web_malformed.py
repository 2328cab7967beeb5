"""A table of malformed requests: each gets the right 4xx with a Status Report, and the
server keeps answering normal requests afterwards."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.backends.local import LocalBackend
from tests.fakes.web_harness import MPPS, OMIT, SPS, WebGateway, demo_worklist, running_gateway
from tests.unit import mpps_examples as ex

MAX_BODY = 64 * 1024
UID = ex.MPPS_UID
RESOURCE = f"/{MPPS}/{UID}"
DATE = "00400100.00400002"
CREATE = json.dumps(ex.minimal_create())
XML = "application/dicom+xml"


@dataclass(frozen=True)
class Bad:
    """One malformed request and the status it must get."""

    id: str
    method: str
    path: str
    status: int
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


def _create(
    body: bytes | str, content_type: str = "application/dicom+json", **kw: object
) -> dict[str, Any]:
    return {"body": body, "headers": {"Content-Type": content_type}, **kw}


def _with(**changes: object) -> str:
    dataset = ex.minimal_create()
    for key, attr in changes.items():
        if attr is None:
            del dataset[key.removeprefix("x")]
        else:
            dataset[key.removeprefix("x")] = attr
    return json.dumps(dataset)


BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b'<NativeDicomModel xml:space="preserve"><DicomAttribute tag="00100010" vr="LO">'
    b'<Value number="1">&lol3;</Value></DicomAttribute></NativeDicomModel>'
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b'<NativeDicomModel><DicomAttribute tag="00100010" vr="LO"><Value number="1">&e;'
    b"</Value></DicomAttribute></NativeDicomModel>"
)
DTD = b'<?xml version="1.0"?><!DOCTYPE NativeDicomModel SYSTEM "x.dtd"><NativeDicomModel/>'

CASES = [
    # --- UIDs in the path ---
    Bad("uid-leading-zero", "GET", f"/{MPPS}/1.2.03", 400),
    Bad("uid-empty-component", "GET", f"/{MPPS}/1..2", 400),
    Bad("uid-leading-dot", "GET", f"/{MPPS}/.1.2", 400),
    Bad("uid-trailing-dot", "GET", f"/{MPPS}/1.2.", 400),
    Bad("uid-empty", "GET", f"/{MPPS}/", 400),
    Bad("uid-letters", "GET", f"/{MPPS}/1.2.abc", 400),
    Bad("uid-too-long", "GET", f"/{MPPS}/1.{'2' * 64}", 400),
    Bad("uid-create-letters", "POST", f"/{MPPS}/1.2.x3", 400, **_create(CREATE)),
    Bad("uid-space", "POST", f"/{MPPS}/1.2.3%20", 400, **_create(CREATE)),
    Bad("uid-update-zero", "PATCH", f"/{MPPS}/00.1", 400, **_create(CREATE)),
    Bad("uid-unicode-digits", "GET", f"/{MPPS}/1.%D9%A3", 400),
    # --- dates, ranges and other match values ---
    Bad("date-dashes", "GET", f"/{SPS}?{DATE}=2025-01-01", 400),
    Bad("date-month-13", "GET", f"/{SPS}?{DATE}=20251301", 400),
    Bad("date-three-part-range", "GET", f"/{SPS}?{DATE}=20250101-20250102-20250103", 400),
    Bad("time-out-of-range", "GET", f"/{SPS}?00400100.00400003=2561", 400),
    Bad("birthdate-text", "GET", f"/{SPS}?PatientBirthDate=abc", 400),
    Bad("attribute-repeated", "GET",
        f"/{SPS}?00400100.00080060=CT&ScheduledProcedureStepSequence.Modality=MR", 400),
    Bad("path-through-non-sequence", "GET", f"/{SPS}?PatientName.PatientID=x", 400),
    Bad("unknown-keyword", "GET", f"/{SPS}?NoSuchKeyword=1", 400),
    Bad("bad-hex-tag", "GET", f"/{SPS}?0010001G=1", 400),
    Bad("backslash-value", "GET", f"/{SPS}?00100020=a%5Cb", 400),
    # --- paging and flags ---
    Bad("limit-text", "GET", f"/{SPS}?limit=abc", 400),
    Bad("limit-negative", "GET", f"/{SPS}?limit=-1", 400),
    Bad("offset-negative", "GET", f"/{SPS}?offset=-5", 400),
    Bad("offset-text", "GET", f"/{SPS}?offset=x", 400),
    Bad("limit-twice", "GET", f"/{SPS}?limit=1&limit=2", 400),
    Bad("fuzzy-maybe", "GET", f"/{SPS}?fuzzymatching=maybe", 400),
    Bad("emptyvalue-yes", "GET", f"/{SPS}?emptyvaluematching=yes", 400),
    # --- includefield ---
    Bad("search-includefield-unknown", "GET", f"/{SPS}?includefield=NoSuchKeyword", 400),
    Bad("search-includefield-empty", "GET", f"/{SPS}?includefield=", 400),
    Bad("retrieve-includefield-unknown", "GET", f"{RESOURCE}?includefield=NoSuch", 400),
    Bad("retrieve-includefield-all-not-alone", "GET", f"{RESOURCE}?includefield=all,00100010", 400),
    Bad("retrieve-includefield-non-sq-path", "GET",
        f"{RESOURCE}?includefield=00100010.00100020", 400),
    Bad("retrieve-includefield-empty", "GET", f"{RESOURCE}?includefield=", 400),
    Bad("retrieve-includefield-7-hex", "GET", f"{RESOURCE}?includefield=0010001", 400),
    # --- malformed JSON bodies ---
    Bad("json-truncated", "POST", RESOURCE, 400, **_create(CREATE[:-5])),
    Bad("json-null", "POST", RESOURCE, 400, **_create("null")),
    Bad("json-empty-array", "POST", RESOURCE, 400, **_create("[]")),
    Bad("json-two-datasets", "POST", RESOURCE, 400, **_create(f"[{CREATE},{CREATE}]")),
    Bad("json-missing-vr", "POST", RESOURCE, 400,
        **_create('{"00400252": {"Value": ["IN PROGRESS"]}}')),
    Bad("json-value-not-array", "POST", RESOURCE, 400,
        **_create('{"00400252": {"vr": "CS", "Value": "IN PROGRESS"}}')),
    Bad("json-deep", "POST", RESOURCE, 400, **_create("[" * 5000 + "]" * 5000)),
    Bad("json-deep-objects", "POST", RESOURCE, 400, **_create('{"a":' * 3000 + "1" + "}" * 3000)),
    Bad("json-not-utf8", "POST", RESOURCE, 400, **_create(b'{"00100010": "\xff\xfe"}')),
    Bad("json-empty-body", "POST", RESOURCE, 400, **_create(b"")),
    Bad("json-duplicate-member", "POST", RESOURCE, 400,
        **_create('{"00080060": {"vr": "CS"}, "00080060": {"vr": "CS"}}')),
    Bad("json-nan", "POST", RESOURCE, 400, **_create('{"00101030": {"vr": "DS", "Value": [NaN]}}')),
    # --- malformed XML bodies ---
    Bad("xml-not-well-formed", "POST", RESOURCE, 400, **_create(b"<NativeDicomModel>", XML)),
    Bad("xml-entity-bomb", "POST", RESOURCE, 400, **_create(BOMB, XML)),
    Bad("xml-external-entity", "POST", RESOURCE, 400, **_create(XXE, XML)),
    Bad("xml-dtd", "POST", RESOURCE, 400, **_create(DTD, XML)),
    Bad("xml-wrong-root", "POST", RESOURCE, 400, **_create(b"<html><body/></html>", XML)),
    # --- invalid MPPS content ---
    Bad("create-completed", "POST", RESOURCE, 400,
        **_create(_with(x00400252={"vr": "CS", "Value": ["COMPLETED"]}))),
    Bad("create-missing-modality", "POST", RESOURCE, 400, **_create(_with(x00080060=None))),
    Bad("create-other-sop-instance-uid", "POST", RESOURCE, 400,
        **_create(_with(x00080018={"vr": "UI", "Value": ["1.2.3.4"]}))),
    Bad("update-flag-with-value", "POST", f"{RESOURCE}?update=false", 400,
        **_create('{"00400340": {"vr": "SQ"}}')),
    # --- sizes ---
    Bad("body-too-large", "POST", RESOURCE, 413, **_create(b" " * (MAX_BODY + 1))),
    Bad("chunked-body-too-large", "POST", RESOURCE, 413, chunked=True,
        **_create(b" " * (MAX_BODY * 2))),
    # --- media types and charsets ---
    Bad("content-type-text", "POST", RESOURCE, 415, **_create(CREATE, "text/plain")),
    Bad("content-type-missing", "POST", RESOURCE, 415, body=CREATE,
        headers={"Content-Type": OMIT}),
    Bad("content-type-generic-xml", "POST", RESOURCE, 415, **_create(CREATE, "application/xml")),
    Bad("content-type-multipart", "POST", RESOURCE, 415,
        **_create(CREATE, 'multipart/related; type="application/dicom+json"; boundary=x')),
    Bad("content-type-unknown-charset", "POST", RESOURCE, 415,
        **_create(CREATE, "application/dicom+json; charset=klingon")),
    Bad("accept-image", "GET", f"/{SPS}", 406, headers={"Accept": "image/jpeg"}),
    Bad("accept-missing", "GET", f"/{SPS}", 406, headers={"Accept": OMIT}),
    Bad("accept-charset-latin1", "GET", f"/{SPS}", 406, headers={"Accept-Charset": "iso-8859-1"}),
    Bad("accept-charset-malformed", "GET", f"/{SPS}", 400,
        headers={"Accept-Charset": "utf-8;q=abc"}),
    Bad("accept-param-wildcard", "GET", f"/{SPS}?accept=*/*", 400),
    Bad("charset-param-latin1", "GET", f"/{SPS}?charset=ISO-8859-1", 400),
    Bad("accept-mixes-rendered", "GET", f"/{SPS}", 400,
        headers={"Accept": "application/dicom+json, image/jpeg"}),
    # --- wrong methods and paths ---
    Bad("delete-mpps", "DELETE", RESOURCE, 405),
    Bad("put-search", "PUT", f"/{SPS}", 405, **_create(CREATE)),
    Bad("post-search", "POST", f"/{SPS}", 405, **_create(CREATE)),
    Bad("patch-base", "PATCH", "/", 405),
    Bad("get-mpps-collection", "GET", f"/{MPPS}", 405),
    Bad("get-update-path", "GET", f"{RESOURCE}/update", 405),
    Bad("unknown-resource", "GET", "/workitems", 404),
]  # fmt: skip


@pytest.fixture(scope="module")
def case_ids() -> list[str]:
    return [case.id for case in CASES]


def test_table_is_large_and_ids_are_unique(case_ids: list[str]) -> None:
    assert len(CASES) >= 40
    assert len(set(case_ids)) == len(case_ids)


@pytest.fixture
async def gw(local_backend: LocalBackend) -> AsyncIterator[WebGateway]:
    await local_backend.upsert_worklist_items(demo_worklist())
    await local_backend.create_mpps(UID, ex.minimal_create())
    async with running_gateway(local_backend, max_body_bytes=MAX_BODY) as gateway:
        yield gateway


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 8192):
        yield body[start : start + 8192]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_malformed_request(gw: WebGateway, case: Bad) -> None:
    body = case.body.encode() if isinstance(case.body, str) else case.body
    data: object = _chunks(body) if case.chunked and body is not None else body
    reply = await gw.request(case.method, case.path, headers=case.headers, data=data)
    assert reply.status == case.status, reply.body[:300]
    text = reply.report_text()
    assert text.startswith(f"{case.status} "), text
    await gw.alive()
    stored = await gw.get(f"{RESOURCE}?includefield=00400252")
    assert stored.datasets()[0]["00400252"]["Value"] == ["IN PROGRESS"]


async def test_all_malformed_requests_in_a_row_on_one_server(gw: WebGateway) -> None:
    for case in CASES:
        body = case.body.encode() if isinstance(case.body, str) else case.body
        reply = await gw.request(case.method, case.path, headers=case.headers, data=body)
        assert reply.status == case.status, case.id
    await gw.alive()
