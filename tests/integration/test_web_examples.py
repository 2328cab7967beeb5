"""The worked examples B.X1-B.X5 (PS3.18 B.36-B.40) against the real front and local store,
and every accepted Create/Update spelling."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.backends.local import LocalBackend
from gateway.model.mwl_keys import DICOMWEB_REQUIRED_RETURN_KEYS
from gateway.model.types import JsonDataset, TagPath, tag_key
from tests.fakes.web_harness import (
    MPPS,
    SPS,
    WebGateway,
    demo_worklist,
    running_gateway,
)
from tests.unit import mpps_examples as ex

UID = ex.MPPS_UID
RESOURCE = f"/{MPPS}/{UID}"


@pytest.fixture
async def gw(local_backend: LocalBackend) -> AsyncIterator[WebGateway]:
    await local_backend.upsert_worklist_items(demo_worklist())
    async with running_gateway(local_backend, base_path="/radiology") as gateway:
        yield gateway


def has_path(dataset: JsonDataset, path: TagPath) -> bool:
    """True when ``path`` is present in every item (a zero-item sequence has no nesting)."""
    attribute = dataset.get(tag_key(path[0]))
    if attribute is None:
        return False
    if len(path) == 1:
        return True
    return all(has_path(item, path[1:]) for item in attribute.get("Value", []))


def value(dataset: JsonDataset, *tags: int) -> object:
    for tag in tags[:-1]:
        dataset = dataset[tag_key(tag)]["Value"][0]
    return dataset[tag_key(tags[-1])].get("Value", [None])[0]


async def test_bx1_search_today_ct_steps_of_a_station(gw: WebGateway) -> None:
    reply = await gw.get(
        f"/{SPS}?00400100.00400010=CTSCANNER&00400100.00400002=20250101"
        "&00400100.00080060=CT&limit=20&offset=0&includefield=all"
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/dicom+json; charset=utf-8"
    results = reply.datasets()
    assert len(results) == 5
    for result in results:
        assert len(result["00400100"]["Value"]) == 1  # one SPS per result
        assert value(result, 0x00400100, 0x00080060) == "CT"
        assert value(result, 0x00400100, 0x00400010) == "CTSCANNER"
        assert value(result, 0x00100010) == {"Alphabetic": "Doe^Sally"}
        for path in DICOMWEB_REQUIRED_RETURN_KEYS:
            assert has_path(result, path), f"missing Type 1/2 return key {path}"
    assert reply.warnings == []


async def test_search_without_includefield_still_has_every_type_1_2_key(gw: WebGateway) -> None:
    reply = await gw.get(f"/{SPS}?ScheduledProcedureStepSequence.Modality=MR")
    assert reply.status == 200
    (result,) = reply.datasets()
    for path in DICOMWEB_REQUIRED_RETURN_KEYS:
        assert has_path(result, path), f"missing Type 1/2 return key {path}"
    assert value(result, 0x00100010) == {"Alphabetic": "Roe^Ann"}
    # keys are emitted in ascending tag order (F.2.2)
    assert list(result) == sorted(result)


async def test_search_paging_and_remaining_warning(gw: WebGateway) -> None:
    first = await gw.get(f"/{SPS}?00400100.00080060=CT&limit=2")
    second = await gw.get(f"/{SPS}?00400100.00080060=CT&limit=2&offset=2")
    last = await gw.get(f"/{SPS}?00400100.00080060=CT&limit=2&offset=4")
    beyond = await gw.get(f"/{SPS}?00400100.00080060=CT&offset=5")
    assert first.warnings == [
        f"299 {gw.service}: There are 3 additional results that can be requested"
    ]
    assert second.warnings == [
        f"299 {gw.service}: There are 1 additional results that can be requested"
    ]
    assert last.warnings == []
    assert beyond.status == 204 and beyond.body == b""
    ids = [
        str(value(ds, 0x00400100, 0x00400009))
        for page in (first, second, last)
        for ds in page.datasets()
    ]
    assert sorted(ids) == [f"PS-ID-{n}" for n in range(1, 6)]  # every step exactly once


async def test_server_maximum_caps_the_limit(local_backend: LocalBackend) -> None:
    await local_backend.upsert_worklist_items(demo_worklist())
    async with running_gateway(local_backend, max_search_limit=4) as gw:
        reply = await gw.get(f"/{SPS}?limit=100")
        assert len(reply.datasets()) == 4
        assert reply.warnings == [
            f"299 {gw.service}: There are 2 additional results that can be requested"
        ]


async def test_fuzzymatching_warning_text(gw: WebGateway) -> None:
    reply = await gw.get(f"/{SPS}?PatientName=Doe*&fuzzymatching=true")
    assert reply.status == 200
    assert (
        f"299 {gw.service}: The fuzzymatching parameter is not supported. "
        "Only literal matching has been performed." in reply.warnings
    )
    none = await gw.get(f"/{SPS}?PatientName=Nobody&fuzzymatching=true&emptyvaluematching=true")
    assert none.status == 204
    assert len(none.warnings) == 2
    assert none.warnings[1] == (
        f"299 {gw.service}: The emptyvaluematching parameter is not supported. "
        "Empty Value Matching has not been performed."
    )


async def test_bx2_to_bx5_create_update_complete_retrieve(gw: WebGateway) -> None:
    created = await gw.send("POST", RESOURCE, ex.minimal_create())
    assert created.status == 201
    assert created.body == b""
    assert created.headers["Location"] == f"{gw.service}{RESOURCE}"

    series = await gw.send("POST", f"{RESOURCE}?update", ex.series_update())
    assert series.status == 200 and series.body == b""

    completed = await gw.send("POST", f"{RESOURCE}?update", ex.completed_update())
    assert completed.status == 200 and completed.body == b""

    everything = await gw.get(RESOURCE)
    assert everything.status == 200
    (mpps,) = everything.datasets()
    assert value(mpps, 0x00400252) == "COMPLETED"
    assert value(mpps, 0x00400340, 0x0020000E) == ex.SERIES_UID
    assert value(mpps, 0x00400241) == "CTSCANNER"

    selected = await gw.get(f"{RESOURCE}?includefield=00100010,00400252,00400242")
    assert selected.status == 200
    assert selected.datasets() == [
        {
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Sally"}]},
            "00400242": {"vr": "SH", "Value": ["CT01"]},
            "00400252": {"vr": "CS", "Value": ["COMPLETED"]},
        }
    ]


async def test_retrieve_by_keyword_and_nested_path(gw: WebGateway) -> None:
    await gw.send("POST", RESOURCE, ex.minimal_create())
    await gw.send("POST", f"{RESOURCE}?update", ex.series_update())
    reply = await gw.get(
        f"{RESOURCE}?includefield=PerformedProcedureStepStatus"
        "&includefield=PerformedSeriesSequence.SeriesInstanceUID"
    )
    assert reply.datasets() == [
        {
            "00400252": {"vr": "CS", "Value": ["IN PROGRESS"]},
            "00400340": {
                "vr": "SQ",
                "Value": [{"0020000E": {"vr": "UI", "Value": [ex.SERIES_UID]}}],
            },
        }
    ]
    whole = await gw.get(f"{RESOURCE}?includefield=all")
    assert whole.datasets()[0]["00400340"]["Value"][0] == ex.series_item()


CREATE_SPELLINGS = [("POST", ""), ("PUT", "")]
UPDATE_SPELLINGS = [
    ("POST", "?update"),
    ("POST", "?update=true"),
    ("POST", "/update"),
    ("PATCH", ""),
]


@pytest.mark.parametrize(("method", "suffix"), CREATE_SPELLINGS)
async def test_every_create_spelling(gw: WebGateway, method: str, suffix: str) -> None:
    reply = await gw.send(method, RESOURCE + suffix, ex.minimal_create())
    assert reply.status == 201
    stored = await gw.get(RESOURCE)
    assert value(stored.datasets()[0], 0x00400252) == "IN PROGRESS"
    again = await gw.send(method, RESOURCE + suffix, ex.minimal_create())
    assert again.status == 409


@pytest.mark.parametrize(("method", "suffix"), UPDATE_SPELLINGS)
async def test_every_update_spelling(gw: WebGateway, method: str, suffix: str) -> None:
    await gw.send("POST", RESOURCE, ex.minimal_create())
    reply = await gw.send(method, RESOURCE + suffix, ex.completed_update())
    assert reply.status == 200
    stored = await gw.get(f"{RESOURCE}?includefield=00400252")
    assert stored.datasets() == [{"00400252": {"vr": "CS", "Value": ["COMPLETED"]}}]
    final = await gw.send(method, RESOURCE + suffix, ex.series_update())
    assert final.status == 409


async def test_create_accepts_a_one_element_array_and_xml(gw: WebGateway) -> None:
    from gateway.model.dicom_xml import json_to_xml

    array = await gw.send("POST", RESOURCE, [ex.minimal_create()])
    assert array.status == 201
    other = f"/{MPPS}/1.2.3.4.5"
    xml = await gw.send(
        "POST", other, json_to_xml(ex.minimal_create()), content_type="application/dicom+xml"
    )
    assert xml.status == 201
    update = await gw.send(
        "POST",
        f"{other}?update",
        json_to_xml(ex.completed_update()),
        content_type="application/dicom+xml; charset=utf-8",
    )
    assert update.status == 200
    as_xml = await gw.get(other, headers={"Accept": "application/dicom+xml"})
    as_json = await gw.get(other)
    assert as_xml.media_type == "application/dicom+xml"
    assert as_xml.datasets() == as_json.datasets()


async def test_discontinued_update_then_retrieve(gw: WebGateway) -> None:
    await gw.send("POST", RESOURCE, ex.minimal_create())
    reply = await gw.send("POST", f"{RESOURCE}?update", ex.discontinued_update())
    assert reply.status == 200
    stored = await gw.get(f"{RESOURCE}?includefield=00400252")
    assert stored.datasets()[0]["00400252"]["Value"] == ["DISCONTINUED"]


async def test_upstream_backend_search_stops_after_the_page(local_backend: LocalBackend) -> None:
    """An upstream (costly to count) backend is read only to one match past the page."""
    from tests.fakes.faulty_backend import FaultyBackend

    await local_backend.upsert_worklist_items(demo_worklist())
    upstream = FaultyBackend(local_backend)
    upstream.cheap_remaining_count = False
    async with running_gateway(upstream) as gw:
        first = await gw.get(f"/{SPS}?limit=2")
        assert len(first.datasets()) == 2
        assert first.warnings == [
            f"299 {gw.service}: There are additional results that can be requested"
        ]
        last = await gw.get(f"/{SPS}?offset=4&limit=2")
        assert len(last.datasets()) == 2
        assert last.warnings == []
    assert upstream.closed_searches == 2
