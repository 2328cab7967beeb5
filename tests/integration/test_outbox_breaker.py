"""The circuit breaker end to end: a real ``dicomweb`` backend, a fake origin, real SQLite.

What is checked is what reaches the origin: while the breaker is open nothing from the
modalities does, once it is closed everything does, and the worker probes one message at a
time instead of sending its whole round to a dead upstream.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from gateway.backends.outbox import RetryPolicy
from gateway.errors import DuplicateInstance
from tests.fakes.origin import FakeOrigin, Fault, running_origin
from tests.integration.test_outbox import UID, drained, eventually, outbox_over
from tests.unit.mpps_examples import minimal_create, series_update

DOWN = Fault(503, b"down", times=100_000)
LONG_PAUSE = RetryPolicy(retry_initial_s=20.0, retry_max_s=40.0, grace_s=2.0)


def uid(n: int) -> str:
    return f"{UID}.{n}"


def writes(origin: FakeOrigin) -> int:
    return sum(1 for r in origin.requests if r.method == "POST")


async def test_open_breaker_queues_without_trying_the_upstream(tmp_path: Path) -> None:
    async with running_origin() as origin:
        origin.fail("*", DOWN)
        async with outbox_over(origin, tmp_path / "s.db", policy=LONG_PAUSE) as backend:
            await backend.create_mpps(uid(0), minimal_create())  # 503: queued, opens
            assert writes(origin) == 1 and backend.breaker.tripped
            for n in range(1, 6):
                result = await backend.create_mpps(uid(n), minimal_create())
                assert result.dataset["00400252"]["Value"] == ["IN PROGRESS"]
                await backend.update_mpps(uid(n), series_update())
            assert writes(origin) == 1  # none of them tried the upstream
            assert (await backend.queue_stats()).queued == 11


async def test_breaker_off_forwards_every_write_first(tmp_path: Path) -> None:
    policy = RetryPolicy(retry_initial_s=20.0, retry_max_s=40.0, circuit_breaker_s=0.0)
    async with running_origin() as origin:
        origin.fail("*", DOWN)
        async with outbox_over(origin, tmp_path / "s.db", policy=policy) as backend:
            for n in range(4):
                await backend.create_mpps(uid(n), minimal_create())
            assert writes(origin) == 4  # each one got the upstream's answer first
            assert (await backend.queue_stats()).queued == 4


async def test_closed_by_the_worker_then_the_upstream_verdict_passes_through(
    tmp_path: Path,
) -> None:
    async with running_origin() as origin:
        origin.fail("*", Fault(503, b"down", times=3))
        async with outbox_over(origin, tmp_path / "s.db") as backend:
            await backend.create_mpps(uid(0), minimal_create())  # queued
            await eventually(lambda: drained(backend))  # the worker's probe delivered it
            assert not backend.breaker.tripped
            origin.fail("create", Fault(409, b"in use"))
            with pytest.raises(DuplicateInstance):  # the origin's verdict, unchanged
                await backend.create_mpps(uid(1), minimal_create())
            assert (await backend.queue_stats()).queued == 0


async def test_a_modality_write_probes_and_closes_it(tmp_path: Path) -> None:
    """``circuit_breaker_s`` shorter than the pause: a write probes; its success wakes the
    worker, whose backlog then goes at once although its own pause is not over."""
    policy = RetryPolicy(retry_initial_s=20.0, retry_max_s=40.0, circuit_breaker_s=0.05)
    async with running_origin() as origin:
        origin.fail("*", Fault(503, b"down"))
        async with outbox_over(origin, tmp_path / "s.db", policy=policy) as backend:
            await backend.create_mpps(uid(0), minimal_create())  # queued; pause >= 10 s
            await anyio.sleep(0.1)
            await backend.create_mpps(uid(1), minimal_create())  # the probe: performed
            assert uid(1) in origin.mpps and not backend.breaker.tripped
            with anyio.fail_after(5):
                await eventually(lambda: drained(backend))
            assert uid(0) in origin.mpps


async def test_a_uid_with_a_backlog_stays_queued_when_closed(tmp_path: Path) -> None:
    """Order per UID: the breaker never lets a write overtake its UID's queued messages."""
    policy = RetryPolicy(retry_initial_s=0.02, retry_max_s=0.05, grace_s=2.0)
    async with running_origin() as origin:
        origin.fail("*", Fault(503, b"down"))
        async with outbox_over(origin, tmp_path / "s.db", deliver=False, policy=policy) as sf:
            await sf.create_mpps(uid(0), minimal_create())  # queued, no worker
            await anyio.sleep(0.1)  # the pause is over
            await sf.create_mpps(uid(1), minimal_create())  # forwarded: closes the breaker
            assert not sf.breaker.tripped
            await sf.update_mpps(uid(0), series_update())
            assert [r.method for r in origin.requests if r.path.endswith(uid(0))] == ["POST"]
            assert (await sf.queue_stats()).queued == 2


class SlowDownOrigin(FakeOrigin):
    """Down, and slow to say so: requests that overlap would be seen together."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0

    async def _mpps(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self._record(request)
            await asyncio.sleep(0.05)
            return web.Response(status=503, text="down")
        finally:
            self.in_flight -= 1


async def _started_slow() -> SlowDownOrigin:
    origin = SlowDownOrigin()
    await origin.start()
    return origin


async def test_half_open_sends_one_probe_at_a_time(tmp_path: Path) -> None:
    origin = await _started_slow()
    policy = RetryPolicy(retry_initial_s=0.02, retry_max_s=0.05, grace_s=2.0)
    try:
        async with outbox_over(origin, tmp_path / "s.db", deliver=False, policy=policy) as sf:
            for n in range(30):  # a backlog for the worker
                await sf.create_mpps(uid(n), minimal_create())
        async with outbox_over(origin, tmp_path / "s.db", policy=policy) as sf:
            # A new process starts closed: the worker's first round goes out at once and
            # trips the breaker; from then on one request at a time.
            await eventually(lambda: _true(sf.breaker.tripped))
            await anyio.sleep(0.1)  # the first round's requests have their answers
            origin.most_in_flight = 0
            before = len(origin.requests)

            async def modality(n: int) -> None:
                for k in range(5):
                    await sf.create_mpps(uid(100 + 10 * n + k), minimal_create())
                    await anyio.sleep(0.03)

            async with anyio.create_task_group() as tg:
                for n in range(8):
                    tg.start_soon(modality, n)
            assert (await sf.queue_stats()).queued == 70
            # 40 new writes and 30 queued messages, yet a few probes, one at a time.
            assert origin.most_in_flight == 1
            assert len(origin.requests) - before < 20
    finally:
        await origin.close()


async def _true(value: bool) -> bool:
    return value


async def test_restart_starts_closed(tmp_path: Path) -> None:
    async with running_origin() as origin:
        origin.fail("*", DOWN)
        async with outbox_over(origin, tmp_path / "s.db", policy=LONG_PAUSE) as backend:
            await backend.create_mpps(uid(0), minimal_create())
        origin.faults.clear()
        async with outbox_over(origin, tmp_path / "s.db", policy=LONG_PAUSE) as backend:
            assert not backend.breaker.tripped
            await backend.create_mpps(uid(1), minimal_create())  # straight to the origin
            assert uid(1) in origin.mpps
            await eventually(lambda: drained(backend))


async def test_the_factory_takes_the_policy_from_the_backend_table(tmp_path: Path) -> None:
    """``[backends.NAME]`` retry and breaker settings reach the outbox a gateway opens."""
    from gateway.backends.factory import open_backend
    from gateway.backends.outbox import StoreAndForwardBackend
    from gateway.settings import settings_from_mapping

    table = {"type": "dicomweb", "url": "http://127.0.0.1:9", "circuit_breaker_s": 0}
    settings = settings_from_mapping(
        {"store": {"path": str(tmp_path / "s.db")}, "backends": {"up": {**table, "retry_max_s": 7}}}
    )
    backend = await open_backend("up", settings)
    try:
        assert isinstance(backend, StoreAndForwardBackend)
        assert (backend.policy.circuit_breaker_s, backend.policy.retry_max_s) == (0.0, 7.0)
    finally:
        await backend.aclose()
