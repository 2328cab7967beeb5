"""Every status code of every transaction table (PS3.18 14.4.3, 15.4.3-15.6.3, 8.9), the
error boundary, probes, and closing a search when the client leaves."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.backends.local import LocalBackend
from gateway.errors import (
    Busy,
    PayloadTooLarge,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.settings import Settings
from tests.fakes.faulty_backend import FaultyBackend, SearchStall
from tests.fakes.web_harness import MPPS, SPS, WebGateway, demo_worklist, running_gateway
from tests.unit import mpps_examples as ex

UID = ex.MPPS_UID
RESOURCE = f"/{MPPS}/{UID}"


@pytest.fixture
async def faulty(local_backend: LocalBackend) -> FaultyBackend:
    await local_backend.upsert_worklist_items(demo_worklist())
    return FaultyBackend(local_backend)


@pytest.fixture
async def gw(faulty: FaultyBackend) -> AsyncIterator[WebGateway]:
    async with running_gateway(faulty) as gateway:
        yield gateway


# --- Search (Table 14.4.3-1) ----------------------------------------------------------------


async def test_search_200_and_204(gw: WebGateway) -> None:
    assert (await gw.get(f"/{SPS}")).status == 200
    empty = await gw.get(f"/{SPS}?PatientID=NOBODY")
    assert empty.status == 204
    assert empty.body == b"" and "Content-Type" not in empty.headers


async def test_search_400_names_the_parameter(gw: WebGateway) -> None:
    reply = await gw.get(f"/{SPS}?00400100.00400002=2025-01-01")
    assert reply.status == 400
    assert "00400002" in reply.offending()[0] or "ScheduledProcedureStepStartDate" in (
        reply.report_text()
    )
    limit = await gw.get(f"/{SPS}?limit=-1")
    assert limit.status == 400 and "limit" in limit.report_text()


async def test_search_unknown_parameter_is_ignored(gw: WebGateway) -> None:
    reply = await gw.get(f"/{SPS}?vendorflag=1&_x=2")
    assert reply.status == 200


@pytest.mark.parametrize(
    ("error", "status", "strict_status"),
    [
        (PayloadTooLarge("too many results"), 413, 413),
        (Busy("shutting down", retry_after_s=5), 503, 503),
        (UpstreamUnavailable("RIS unreachable"), 503, 503),
        (UpstreamTimeout("RIS timeout"), 504, 503),
        (UpstreamBadResponse("garbage"), 502, 500),
    ],
)
async def test_search_backend_failures(
    faulty: FaultyBackend, error: Exception, status: int, strict_status: int
) -> None:
    for strict, expected in ((False, status), (True, strict_status)):
        settings = dataclasses.replace(Settings(), strict_status_codes=strict)
        async with running_gateway(faulty, settings) as gw:
            faulty.fail("search", error)
            reply = await gw.get(f"/{SPS}")
            assert reply.status == expected
            assert str(error) in reply.report_text()
            if isinstance(error, Busy):
                assert reply.headers["Retry-After"] == "5"
            await gw.alive()


async def test_unexpected_exception_is_a_500_and_the_server_keeps_serving(
    gw: WebGateway, faulty: FaultyBackend
) -> None:
    faulty.fail("search", RuntimeError("secret patient Doe^Sally"))
    reply = await gw.get(f"/{SPS}")
    assert reply.status == 500
    assert "Doe^Sally" not in reply.report_text()
    faulty.fail("create", ZeroDivisionError())
    assert (await gw.send("POST", RESOURCE, ex.minimal_create())).status == 500
    await gw.alive()


# --- Create (Table 15.4.3-1) ----------------------------------------------------------------


async def test_create_201_409(gw: WebGateway) -> None:
    assert (await gw.send("POST", RESOURCE, ex.minimal_create())).status == 201
    duplicate = await gw.send("POST", RESOURCE, ex.minimal_create())
    assert duplicate.status == 409
    assert duplicate.report_dataset()["00000900"]["Value"] == [0x0111]


async def test_create_400_lists_missing_and_invalid_attributes(gw: WebGateway) -> None:
    dataset = ex.minimal_create()
    del dataset["00400241"]  # Performed Station AE Title (1/1)
    reply = await gw.send("POST", RESOURCE, dataset)
    assert reply.status == 400
    assert "00400241" in reply.offending()
    assert "PerformedStationAETitle" in reply.report_text()

    bad_status = ex.minimal_create()
    bad_status["00400252"] = {"vr": "CS", "Value": ["COMPLETED"]}
    invalid = await gw.send("POST", RESOURCE, bad_status)
    assert invalid.status == 400
    assert "00400252" in invalid.offending()
    assert (await gw.get(RESOURCE)).status == 404  # nothing was stored


async def test_create_with_backend_warnings(gw: WebGateway, faulty: FaultyBackend) -> None:
    faulty.warnings = ("The MPPS was created with modifications",)
    reply = await gw.send("POST", RESOURCE, ex.minimal_create())
    assert reply.status == 201
    assert reply.warnings == [f"299 {gw.service}: The MPPS was created with modifications"]


@pytest.mark.parametrize("op", ["create", "update", "retrieve"])
async def test_mpps_503(gw: WebGateway, faulty: FaultyBackend, op: str) -> None:
    if op != "create":
        await gw.send("POST", RESOURCE, ex.minimal_create())
    faulty.fail(op, UpstreamUnavailable("the MPPS store is unavailable"))
    if op == "create":
        reply = await gw.send("POST", RESOURCE, ex.minimal_create())
    elif op == "update":
        reply = await gw.send("POST", f"{RESOURCE}?update", ex.series_update())
    else:
        reply = await gw.get(RESOURCE)
    assert reply.status == 503
    assert "unavailable" in reply.report_text()


# --- Update (Table 15.5.3-1) ----------------------------------------------------------------


async def test_update_200_404_409_400(gw: WebGateway) -> None:
    unknown = await gw.send("POST", f"{RESOURCE}?update", ex.series_update())
    assert unknown.status == 404
    await gw.send("POST", RESOURCE, ex.minimal_create())
    not_allowed = await gw.send(
        "POST", f"{RESOURCE}?update", {"00100020": {"vr": "LO", "Value": ["OTHER"]}}
    )
    assert not_allowed.status in (400, 409)
    assert (await gw.send("POST", f"{RESOURCE}?update", ex.series_update())).status == 200
    assert (await gw.send("POST", f"{RESOURCE}?update", ex.completed_update())).status == 200
    final = await gw.send("POST", f"{RESOURCE}?update", ex.series_update())
    assert final.status == 409
    assert final.report_dataset()["00000903"]["Value"] == [0xA710]


async def test_update_and_retrieve_410_after_deletion(
    gw: WebGateway, local_backend: LocalBackend
) -> None:
    await gw.send("POST", RESOURCE, ex.minimal_create())
    await local_backend.delete_mpps(UID)
    assert (await gw.send("POST", f"{RESOURCE}?update", ex.series_update())).status == 410
    assert (await gw.get(RESOURCE)).status == 410


# --- Retrieve (Table 15.6.3-1) --------------------------------------------------------------


async def test_retrieve_200_400_404(gw: WebGateway) -> None:
    assert (await gw.get(RESOURCE)).status == 404
    await gw.send("POST", RESOURCE, ex.minimal_create())
    ok = await gw.get(RESOURCE)
    assert ok.status == 200 and len(ok.datasets()) == 1
    bad = await gw.get(f"{RESOURCE}?includefield=NoSuchKeyword")
    assert bad.status == 400 and "includefield" in bad.report_text()
    assert (await gw.get(f"/{MPPS}/1.2.03")).status == 400


async def test_retrieve_of_absent_attribute_warns(gw: WebGateway) -> None:
    await gw.send("POST", RESOURCE, ex.minimal_create())
    reply = await gw.get(f"{RESOURCE}?includefield=00400252,00181000")
    assert reply.status == 200
    assert len(reply.warnings) == 1 and "(0018,1000)" in reply.warnings[0]


# --- Retrieve Capabilities and method errors ------------------------------------------------


async def test_405_carries_allow(gw: WebGateway) -> None:
    reply = await gw.request("DELETE", RESOURCE)
    assert reply.status == 405
    assert set(reply.headers["Allow"].split(", ")) == {"GET", "OPTIONS", "PATCH", "POST", "PUT"}
    assert "DELETE" in reply.report_text()
    listing = await gw.get(f"/{MPPS}")
    assert listing.status == 405 and listing.headers["Allow"] == "OPTIONS"


async def test_unknown_path_404(gw: WebGateway) -> None:
    reply = await gw.get("/studies")
    assert reply.status == 404
    assert reply.report_text().startswith("404 Not Found")


# --- probes -----------------------------------------------------------------------------


async def test_health_and_ready(gw: WebGateway, faulty: FaultyBackend) -> None:
    health = await gw.request("GET", "/health", absolute=True)
    assert health.status == 200 and health.body == b'{"status": "ok"}'
    ready = await gw.request("GET", "/ready", absolute=True)
    assert ready.status == 200
    faulty.fail("ready", Busy("database locked"))
    not_ready = await gw.request("GET", "/ready", absolute=True)
    assert not_ready.status == 503
    assert b"busy" in not_ready.body
    faulty.fail("ready", OSError("disk gone"))
    assert (await gw.request("GET", "/ready", absolute=True)).status == 503
    # outside the base path only
    assert (await gw.get("/health")).status == 404


# --- client disconnect ----------------------------------------------------------------------


async def test_search_is_closed_when_the_client_disconnects(
    gw: WebGateway, faulty: FaultyBackend
) -> None:
    stall = SearchStall(after=2)
    faulty.stall = stall
    async with aiohttp.ClientSession() as other:
        request = asyncio.create_task(other.get(f"{gw.base}/{SPS}"))
        await asyncio.wait_for(stall.reached.wait(), 10)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    await asyncio.wait_for(stall.closed.wait(), 10)
    faulty.stall = None
    await gw.alive()


async def test_search_generator_is_closed_after_a_full_search(
    gw: WebGateway, faulty: FaultyBackend
) -> None:
    await gw.get(f"/{SPS}?limit=1")
    assert faulty.closed_searches == 1
