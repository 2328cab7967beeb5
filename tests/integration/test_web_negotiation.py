"""Media types and content negotiation of the DICOMweb front (PS3.18 8.3.3, 8.7, 8.8, 8.9),
over the real server; plus the pure selection rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from xml.etree import ElementTree as ET

import pytest

from gateway.backends.local import LocalBackend
from gateway.errors import BadQuery
from gateway.web.negotiation import (
    DICOM_JSON,
    DICOM_XML,
    MULTIPART_JSON,
    MULTIPART_XML,
    NegotiationFailure,
    check_charset,
    select_media_type,
)
from gateway.web.routes import ROUTES
from tests.fakes.web_harness import (
    MPPS,
    OMIT,
    SPS,
    WebGateway,
    demo_worklist,
    running_gateway,
    split_multipart,
)
from tests.unit import mpps_examples as ex

OFFERS = (DICOM_JSON, DICOM_XML, MULTIPART_XML, MULTIPART_JSON)
WADL_NS = "{http://wadl.dev.java.net/2009/02}"
RESOURCE = f"/{MPPS}/{ex.MPPS_UID}"
CT = f"/{SPS}?00400100.00080060=CT"


@pytest.fixture
async def gw(local_backend: LocalBackend) -> AsyncIterator[WebGateway]:
    await local_backend.upsert_worklist_items(demo_worklist())
    async with running_gateway(local_backend) as gateway:
        yield gateway


# --- pure selection rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/dicom+json", DICOM_JSON),
        ("*/*", DICOM_JSON),
        ("application/*", DICOM_JSON),
        ("multipart/*", MULTIPART_XML),
        ("application/dicom+xml", DICOM_XML),
        ("APPLICATION/DICOM+XML", DICOM_XML),
        ("application/dicom+xml;q=0.5, application/dicom+json;q=0.9", DICOM_JSON),
        ("application/dicom+json;q=0.1, application/dicom+xml", DICOM_XML),
        ("application/dicom+json;q=0, */*", DICOM_XML),
        ("image/png, */*;q=0.1", DICOM_JSON),
        ('multipart/related; type="application/dicom+xml"', MULTIPART_XML),
        ("multipart/related; type=application/dicom+json; q=0.9", MULTIPART_JSON),
        ("multipart/related", MULTIPART_XML),
        ("application/dicom+json; charset=utf-8", DICOM_JSON),
        ("application/dicom+json; charset=iso-8859-1, application/dicom+xml;q=0.2", DICOM_XML),
        ("garbage;;, application/dicom+xml", DICOM_XML),
    ],
)
def test_selection(accept: str, expected: str) -> None:
    assert select_media_type(accept, (), OFFERS).media_type == expected


@pytest.mark.parametrize(
    "accept", ["image/png", "text/html", "application/json", "application/dicom+json;q=0", ""]
)
def test_nothing_acceptable_is_406(accept: str) -> None:
    with pytest.raises(NegotiationFailure) as failure:
        select_media_type(accept, (), OFFERS)
    assert failure.value.status == 406


def test_missing_accept() -> None:
    with pytest.raises(NegotiationFailure):
        select_media_type(None, (), OFFERS)
    assert select_media_type(None, (), OFFERS, require_accept=False).media_type == DICOM_JSON
    assert select_media_type(None, [DICOM_XML], OFFERS).media_type == DICOM_XML


def test_accept_parameter_wins_and_forbids_wildcards() -> None:
    assert select_media_type(DICOM_JSON, [DICOM_XML], OFFERS).media_type == DICOM_XML
    assert select_media_type("*/*", ["application/dicom xml"], OFFERS).media_type == DICOM_XML
    with pytest.raises(BadQuery):
        select_media_type("*/*", ["*/*"], OFFERS)
    with pytest.raises(BadQuery):
        select_media_type(f"{DICOM_JSON}, text/html", (), OFFERS)


@pytest.mark.parametrize(
    "header", [None, "utf-8", "UTF-8;q=0.5, iso-8859-1", "*", "iso-8859-1, *;q=0.1", '"ISO_IR 192"']
)
def test_acceptable_charsets(header: str | None) -> None:
    assert check_charset(header, ()) == "utf-8"


@pytest.mark.parametrize("header", ["iso-8859-1", "utf-8;q=0, *", "us-ascii, latin1"])
def test_unacceptable_charsets(header: str) -> None:
    with pytest.raises(NegotiationFailure):
        check_charset(header, ())


def test_charset_parameter() -> None:
    assert check_charset("iso-8859-1", ["utf-8"]) == "utf-8"
    with pytest.raises(BadQuery):
        check_charset(None, ["iso-8859-1"])


# --- over the wire ----------------------------------------------------------------------


async def test_json_xml_and_multipart_search_responses_hold_the_same_results(
    gw: WebGateway,
) -> None:
    as_json = await gw.get(CT)
    as_xml = await gw.get(CT, headers={"Accept": DICOM_XML})
    as_multi_xml = await gw.get(CT, headers={"Accept": MULTIPART_XML})
    as_multi_json = await gw.get(CT, headers={"Accept": MULTIPART_JSON})
    expected = as_json.datasets()
    assert len(expected) == 5
    for reply in (as_xml, as_multi_xml, as_multi_json):
        assert reply.status == 200
        assert reply.datasets() == expected
    content_type = as_multi_xml.headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom+xml"; boundary=')
    parts = split_multipart(as_multi_xml.body, content_type)
    assert len(parts) == 5
    assert all(h["content-type"] == "application/dicom+xml; charset=utf-8" for h, _ in parts)
    assert len(split_multipart(as_multi_json.body, as_multi_json.headers["Content-Type"])) == 1


async def test_single_xml_result_is_one_document(gw: WebGateway) -> None:
    reply = await gw.get(f"/{SPS}?00400100.00080060=MR", headers={"Accept": DICOM_XML})
    assert reply.headers["Content-Type"] == "application/dicom+xml; charset=utf-8"
    root = ET.fromstring(reply.body)
    assert root.tag.endswith("NativeDicomModel")


async def test_accept_query_parameter(gw: WebGateway) -> None:
    reply = await gw.get(f"{CT}&accept=application%2Fdicom%2Bxml", headers={"Accept": "*/*"})
    assert reply.media_type == "multipart/related"
    single = await gw.get(f"{CT}&limit=1&accept=application/dicom%2Bxml")
    assert single.media_type == DICOM_XML


async def test_406_and_415_carry_a_status_report_listing_types(gw: WebGateway) -> None:
    reply = await gw.get(CT, headers={"Accept": "image/jpeg"})
    assert reply.status == 406
    assert reply.media_type == "text/plain"
    assert "application/dicom+json" in reply.report_text()
    no_accept = await gw.get(CT, headers={"Accept": OMIT})
    assert no_accept.status == 406
    charset = await gw.get(CT, headers={"Accept-Charset": "iso-8859-1"})
    assert charset.status == 406
    unsupported = await gw.send("POST", RESOURCE, ex.minimal_create(), content_type="text/plain")
    assert unsupported.status == 415
    assert unsupported.media_type == DICOM_JSON
    assert "application/dicom+xml" in unsupported.report_text()


async def test_create_needs_no_accept_and_json_is_taken_as_dicom_json(gw: WebGateway) -> None:
    reply = await gw.send(
        "POST", RESOURCE, ex.minimal_create(), content_type="application/json",
        headers={"Accept": OMIT},
    )  # fmt: skip
    assert reply.status == 201
    odd_accept = await gw.send(
        "POST", f"{RESOURCE}?update", ex.series_update(), headers={"Accept": "image/png"}
    )
    assert odd_accept.status == 200


async def test_latin1_json_body_is_transcoded(gw: WebGateway) -> None:
    dataset = ex.minimal_create()
    dataset["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]}
    body = json.dumps(dataset, ensure_ascii=False).encode("iso-8859-1")
    reply = await gw.send(
        "POST", RESOURCE, body, content_type="application/dicom+json; charset=ISO-8859-1"
    )
    assert reply.status == 201
    stored = await gw.get(f"{RESOURCE}?includefield=PatientName")
    assert stored.datasets()[0]["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (DICOM_XML, DICOM_XML),
        (MULTIPART_XML, DICOM_XML),
        ("application/json", "application/json"),
        ("text/plain", "text/plain"),
        ("*/*", DICOM_JSON),
    ],
)
async def test_status_report_follows_accept(gw: WebGateway, accept: str, media: str) -> None:
    reply = await gw.get(f"/{MPPS}/1.2.3.4", headers={"Accept": accept})
    if accept in ("application/json", "text/plain"):
        assert reply.status == 406  # not a type Retrieve offers; the report still is
    else:
        assert reply.status == 404
    assert reply.media_type == media
    assert reply.report_text().startswith(f"{reply.status} ")
    if media == "application/json":
        assert json.loads(reply.body)["httpStatus"] == 406


async def test_status_report_json_object_on_unknown_path(gw: WebGateway) -> None:
    reply = await gw.get("/nowhere", headers={"Accept": "application/json"})
    assert reply.status == 404
    assert json.loads(reply.body)["httpStatus"] == 404


# --- Retrieve Capabilities --------------------------------------------------------------


async def test_capabilities_wadl_is_generated_from_the_route_table(gw: WebGateway) -> None:
    reply = await gw.request("OPTIONS", "/", headers={"Accept": "*/*"})
    assert reply.status == 200
    assert reply.media_type == "application/vnd.sun.wadl+xml"
    root = ET.fromstring(reply.body)
    resources = root.find(f"{WADL_NS}resources")
    assert resources is not None and resources.get("base") == gw.service + "/"
    described = {
        (resource.get("path"), method.get("name"), method.get("id"))
        for resource in resources.iter(f"{WADL_NS}resource")
        for method in resource.iter(f"{WADL_NS}method")
    }
    assert described == {(r.path or "/", r.method, r.id) for r in ROUTES}
    search = next(m for m in root.iter(f"{WADL_NS}method") if m.get("id") == "Search")
    params = {p.get("name") for p in search.iter(f"{WADL_NS}param")}
    assert {"includefield", "fuzzymatching", "offset", "limit"} <= params
    media = {r.get("mediaType") for r in search.iter(f"{WADL_NS}representation")}
    assert MULTIPART_XML in media and DICOM_JSON in media
    assert "origin server" in (root.findtext(f"{WADL_NS}doc") or "")
    update = next(m for m in root.iter(f"{WADL_NS}method") if m.get("id") == "Update")
    assert any(p.get("name") == "update" for p in update.iter(f"{WADL_NS}param"))


async def test_capabilities_json_and_per_resource(gw: WebGateway) -> None:
    reply = await gw.request("OPTIONS", f"/{SPS}", headers={"Accept": "application/json"})
    assert reply.status == 200 and reply.media_type == "application/json"
    description = json.loads(reply.body)
    assert description["role"] == "origin-server"
    assert [r["path"] for r in description["resources"]] == [SPS]
    assert {m["id"] for m in description["resources"][0]["methods"]} == {
        "Search",
        "Capabilities-modality-scheduled-procedure-steps",
    }
    assert reply.headers["Allow"] == "GET, OPTIONS"
    instance = await gw.request("OPTIONS", RESOURCE, headers={"Accept": "application/json"})
    methods = json.loads(instance.body)["resources"][0]["methods"]
    assert {(m["name"], m["transaction"]) for m in methods} >= {
        ("POST", "Create"),
        ("POST", "Update"),
        ("PUT", "Create"),
        ("PATCH", "Update"),
        ("GET", "Retrieve"),
    }
    refused = await gw.request("OPTIONS", "/", headers={"Accept": DICOM_JSON})
    assert refused.status == 406


async def test_trailing_slash_and_base_path_variants(local_backend: LocalBackend) -> None:
    await local_backend.upsert_worklist_items(demo_worklist())
    async with running_gateway(local_backend, base_path="/") as gw:
        assert (await gw.get(f"/{SPS}/")).status == 200
        assert (await gw.request("OPTIONS", "/", headers={"Accept": "*/*"})).status == 200
    async with running_gateway(
        local_backend, base_path="/a/b", public_url="https://gw.example/a/b/"
    ) as gw:
        reply = await gw.get(f"/{SPS}?limit=1")
        assert reply.warnings[0].startswith("299 https://gw.example/a/b: There are ")
        assert (await gw.request("OPTIONS", "", headers={"Accept": "*/*"})).status == 200
