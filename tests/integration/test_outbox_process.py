"""Store-and-forward end to end: concurrent DIMSE modalities -> gateway process -> origin.

The origin records every write it performed. It is down (503) for a stretch, then
flapping, then slow; a second test kills the gateway with SIGKILL while it drains a
backlog and restarts it. Either way the origin ends with exactly the 100 final MPPS and
no UID ever saw its writes out of order. A third test dead-letters a refused message and
re-sends it with ``modality-gateway outbox retry``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import web
from anyio.from_thread import BlockingPortal, start_blocking_portal
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from gateway.model.dicom_json import json_to_dataset
from gateway.model.status import DimseStatus
from tests.fakes.origin import FakeOrigin, Fault
from tests.gateway_process import GatewayProcess, checkout_env, start_gateway
from tests.unit.mpps_examples import completed_update, minimal_create, series_update

Mode = Literal["up", "down", "flap", "slow"]
GW_AE = "OUTBOX_GW"
UID_ROOT = "1.2.826.0.1.3680043.10.77"
LIFECYCLES = 100
SCUS = 10


class RecordingOrigin(FakeOrigin):
    """A fake origin that can be down, flapping or slow and logs each write it performs."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.mode: Mode = "up"
        self.slow_s = 0.02
        self.performed: list[tuple[str, str]] = []  # (uid, "C" | "U1" | "U2")
        self._flip = itertools.cycle((True, False))

    async def _mpps(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "down" or (self.mode == "flap" and next(self._flip)):
            await request.read()
            return web.Response(status=503, text="down for maintenance")
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        response = await super()._mpps(request)
        write = request.method == "POST"
        if write and response.status < 300:
            body = json.loads(self.requests[-1].body)
            item = body[0] if isinstance(body, list) else body
            label = "C" if "update" not in request.query else _update_label(item)
            self.performed.append((request.match_info["uid"], label))
        return response


def _update_label(item: dict[str, Any]) -> str:
    status = item.get("00400252", {}).get("Value", [""])[0]
    return "U2" if status == "COMPLETED" else "U1"


@pytest.fixture
def origin() -> Iterator[tuple[RecordingOrigin, BlockingPortal]]:
    with start_blocking_portal() as portal:
        recording = portal.call(_started_recording)
        try:
            yield recording, portal
        finally:
            portal.call(recording.close)


async def _started_recording() -> RecordingOrigin:
    recording = RecordingOrigin()
    await recording.start()
    return recording


def config(url: str, workdir: Path) -> str:
    return f"""
log_format = "json"
shutdown_grace_s = 5.0
[dimse]
host = "127.0.0.1"
port = 0
ae_title = "{GW_AE}"
backend = "up"
[web]
enabled = false
[store]
path = "{workdir / "store.sqlite3"}"
[backends.up]
type = "dicomweb"
url = "{url}"
timeout_s = 5.0
retry_initial_s = 0.05
retry_max_s = 0.4
"""


def set_mode(
    portal: BlockingPortal, origin: RecordingOrigin, mode: Mode, slow_s: float = 0.02
) -> None:
    async def change() -> None:
        origin.mode = mode
        origin.slow_s = slow_s

    portal.call(change)


def lifecycles(port: int, numbers: range, failures: list[str]) -> None:
    """Run create + 2 updates for each number from ``SCUS`` concurrent modalities."""

    def one_modality(mine: list[int]) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", port, ae_title=GW_AE)
        if not assoc.is_established:
            failures.append("association failed")
            return
        try:
            for n in mine:
                uid = f"{UID_ROOT}.{n}"
                create = assoc.send_n_create(
                    json_to_dataset(minimal_create()), ModalityPerformedProcedureStep, uid
                )
                statuses = [create[0].Status]
                for changes in (series_update(), completed_update()):
                    reply = assoc.send_n_set(
                        json_to_dataset(changes), ModalityPerformedProcedureStep, uid
                    )
                    statuses.append(reply[0].Status)
                if statuses != [DimseStatus.SUCCESS] * 3:
                    failures.append(f"{n}: {[hex(s) for s in statuses]}")
        finally:
            assoc.release()

    threads = [
        threading.Thread(target=one_modality, args=(list(numbers[i::SCUS]),)) for i in range(SCUS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def snapshot(portal: BlockingPortal, origin: RecordingOrigin) -> tuple[dict[str, Any], list[Any]]:
    async def take() -> tuple[dict[str, Any], list[Any]]:
        return dict(origin.mpps), list(origin.performed)

    result: tuple[dict[str, Any], list[Any]] = portal.call(take)
    return result


def all_completed(portal: BlockingPortal, origin: RecordingOrigin) -> bool:
    mpps, _ = snapshot(portal, origin)
    done = [u for u, d in mpps.items() if d.get("00400252", {}).get("Value") == ["COMPLETED"]]
    return len(done) == LIFECYCLES


def assert_exactly_100_in_order(portal: BlockingPortal, origin: RecordingOrigin) -> None:
    mpps, performed = snapshot(portal, origin)
    assert sorted(mpps) == sorted(f"{UID_ROOT}.{n}" for n in range(LIFECYCLES))
    expected_series = series_update()["00400340"]
    for doc in mpps.values():
        assert doc["00400252"]["Value"] == ["COMPLETED"]
        assert doc["00400250"]["Value"] == ["20250101"]
        assert doc["00400340"] == expected_series
        assert doc["00100020"]["Value"] == ["P-4711"]
    per_uid: dict[str, list[str]] = {}
    for uid, label in performed:
        seen = per_uid.setdefault(uid, [])
        if not seen or seen[-1] != label:  # a re-sent message repeats; it never reorders
            seen.append(label)
    assert all(seq == ["C", "U1", "U2"] for seq in per_uid.values()), per_uid


def outbox_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "outbox", *args, "--config", "gateway.toml"],
        cwd=workdir,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


def test_down_then_flapping_then_slow(
    origin: tuple[RecordingOrigin, BlockingPortal], tmp_path: Path
) -> None:
    fake, portal = origin
    gateway = start_gateway(config(fake.url, tmp_path), tmp_path)
    failures: list[str] = []
    try:
        set_mode(portal, fake, "down")
        lifecycles(gateway.dimse_port, range(0, 40), failures)
        set_mode(portal, fake, "flap")
        lifecycles(gateway.dimse_port, range(40, 70), failures)
        set_mode(portal, fake, "slow")
        lifecycles(gateway.dimse_port, range(70, 100), failures)
        assert failures == []
        wait_until(lambda: all_completed(portal, fake), 30, "the backlog to drain")
        assert "0 queued, 0 dead" in _stats_line(tmp_path)
    finally:
        assert gateway.stop() == 0
    assert_exactly_100_in_order(portal, fake)


def test_sigkill_while_draining(
    origin: tuple[RecordingOrigin, BlockingPortal], tmp_path: Path
) -> None:
    fake, portal = origin
    set_mode(portal, fake, "down")
    gateway = start_gateway(config(fake.url, tmp_path), tmp_path)
    failures: list[str] = []
    try:
        lifecycles(gateway.dimse_port, range(LIFECYCLES), failures)
        assert failures == []
        set_mode(portal, fake, "slow", 0.1)  # up, but slow: the kill lands mid-delivery
        wait_until(lambda: len(snapshot(portal, fake)[1]) >= 60, 30, "delivery to start")
    finally:
        gateway.kill()
    assert not all_completed(portal, fake)
    restarted: GatewayProcess = start_gateway(config(fake.url, tmp_path), tmp_path)
    try:
        wait_until(lambda: all_completed(portal, fake), 30, "the backlog to drain")
    finally:
        assert restarted.stop() == 0
    assert_exactly_100_in_order(portal, fake)


def _stats_line(workdir: Path) -> str:
    return outbox_cli(workdir, "list").stderr


def test_dead_letter_and_retry(
    origin: tuple[RecordingOrigin, BlockingPortal], tmp_path: Path
) -> None:
    fake, portal = origin
    set_mode(portal, fake, "down")
    gateway = start_gateway(config(fake.url, tmp_path), tmp_path)
    failures: list[str] = []
    try:
        lifecycles(gateway.dimse_port, range(1), failures)
        assert failures == []

        async def refuse_creates() -> None:
            fake.mode = "up"
            fake.fail("create", Fault(400, b"unknown procedure code", times=1000))

        portal.call(refuse_creates)
        wait_until(lambda: " dead " in outbox_cli(tmp_path, "list", "--dead").stdout, 15, "dead")
        listing = outbox_cli(tmp_path, "list").stdout.splitlines()[1:]
        states = [(line.split()[1], line.split()[2]) for line in listing]
        assert states == [("dead", "create"), ("queued", "update"), ("queued", "update")]
        shown = json.loads(outbox_cli(tmp_path, "show", listing[0].split()[0]).stdout)
        assert shown["state"] == "dead" and "400" in shown["last_error"]
        assert f"{UID_ROOT}.0" not in snapshot(portal, fake)[0]

        async def fix_cause() -> None:
            fake.faults.clear()

        portal.call(fix_cause)
        assert "1 message(s)" in outbox_cli(tmp_path, "retry", "--all").stdout
        wait_until(lambda: "0 queued, 0 dead" in _stats_line(tmp_path), 15, "the retried message")
    finally:
        assert gateway.stop() == 0
    mpps, performed = snapshot(portal, fake)
    assert mpps[f"{UID_ROOT}.0"]["00400252"]["Value"] == ["COMPLETED"]
    assert [label for _, label in performed] == ["C", "U1", "U2"]
