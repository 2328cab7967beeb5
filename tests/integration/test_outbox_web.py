"""The DICOMweb front over store-and-forward: real aiohttp server, origin and SQLite.

A modality's Create/Update is answered once the outbox committed it, the origin is not
tried while the breaker is open, and each request leaves exactly one log line.
"""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from gateway.backends.outbox import RetryPolicy
from tests.fakes.origin import Fault, running_origin
from tests.fakes.web_harness import MPPS, running_gateway
from tests.integration.test_outbox import UID, outbox_over
from tests.unit.mpps_examples import minimal_create, series_update

DOWN = Fault(503, b"down", times=100_000)
LONG_PAUSE = RetryPolicy(retry_initial_s=20.0, retry_max_s=40.0, grace_s=2.0)


async def test_writes_are_queued_and_logged_once(tmp_path: Path) -> None:
    async with (
        running_origin() as origin,
        outbox_over(origin, tmp_path / "s.db", policy=LONG_PAUSE) as backend,
        running_gateway(backend) as gw,
    ):
        origin.fail("*", DOWN)
        with capture_logs() as logs:
            for n in range(3):
                created = await gw.send("POST", f"/{MPPS}/{UID}.{n}", [minimal_create()])
                assert created.status == 201
                assert created.headers["Location"].endswith(f"/{MPPS}/{UID}.{n}")
                updated = await gw.send("POST", f"/{MPPS}/{UID}.{n}?update", [series_update()])
                assert updated.status == 200
            missing = await gw.get("/no-such-resource")
            assert missing.status == 404
        assert len(origin.requests) == 1  # the first create; then the breaker was open
        assert (await backend.queue_stats()).queued == 6
        requests = [e for e in logs if e["event"] == "dicomweb request"]
        pairs = [("Create", 201), ("Update", 200)] * 3
        assert [(e["form"], e["status"]) for e in requests] == pairs
        assert all(e["seconds"] >= 0 and e["remote"] == "127.0.0.1" for e in requests)
        assert requests[0]["uid"] == f"{UID}.0"
        # Routed requests have their line; only the others get an access-log line.
        assert [e["status"] for e in logs if e["event"] == "http"] == [404]
        queued = [e for e in logs if e["event"] == "MPPS queued"]
        reasons = ["upstream-unavailable", "backlog"] + ["upstream down", "backlog"] * 2
        assert [e["reason"] for e in queued] == reasons


async def test_a_refused_write_still_gets_its_report_in_the_accepted_type(
    tmp_path: Path,
) -> None:
    """Negotiation of a write's Status Report happens only when there is one to send."""
    async with (
        running_origin() as origin,
        outbox_over(origin, tmp_path / "s.db", policy=LONG_PAUSE) as backend,
        running_gateway(backend) as gw,
    ):
        origin.fail("*", DOWN)
        bad = minimal_create()
        del bad["00400252"]  # Performed Procedure Step Status is required
        reply = await gw.send(
            "POST", f"/{MPPS}/{UID}", [bad], headers={"Accept": "application/dicom+xml"}
        )
        assert reply.status == 400
        assert reply.headers["Content-Type"].startswith("application/dicom+xml")
        odd = await gw.send("POST", f"/{MPPS}/{UID}", [bad], headers={"Accept": "image/png"})
        assert odd.status == 400  # never refused over the type of its report
