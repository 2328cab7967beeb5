"""Store-and-forward in process: a real ``dicomweb`` backend, a fake origin, real SQLite.

The origin is "down" by answering 503 (status-mapping §2: not performed, retry later); the
delivery worker runs in the test's task group.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from gateway.backends.dicomweb import DicomwebBackend
from gateway.backends.outbox import RetryPolicy, StoreAndForwardBackend
from gateway.backends.outbox import store as sql
from gateway.backends.outbox.policy import upstream_matches
from gateway.errors import DuplicateInstance, FinalStateViolation, UpstreamUnavailable
from gateway.settings import DicomwebBackendSettings
from tests.fakes.origin import FakeOrigin, Fault, running_origin
from tests.unit.mpps_examples import completed_update, minimal_create, series_update

UID = "1.2.826.0.1.3680043.10.1.1"
FAST = RetryPolicy(retry_initial_s=0.02, retry_max_s=0.1, grace_s=2.0)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check()`` holds: the state is in SQLite, written by the worker task, so
    there is no event to wait for; poll it, and fail after 10 s."""
    with anyio.fail_after(10):
        while not await check():  # noqa: ASYNC110 - polls a database condition
            await anyio.sleep(0.01)


@asynccontextmanager
async def outbox_over(
    origin: FakeOrigin, path: Path, *, deliver: bool = True, policy: RetryPolicy = FAST
) -> AsyncIterator[StoreAndForwardBackend]:
    upstream = await DicomwebBackend.open("up", DicomwebBackendSettings(url=origin.url))
    backend = await StoreAndForwardBackend.open(upstream, path, policy)
    try:
        async with anyio.create_task_group() as tg:
            if deliver:
                tg.start_soon(backend.run_delivery)
            yield backend
            tg.cancel_scope.cancel()
    finally:
        await backend.aclose()


async def drained(backend: StoreAndForwardBackend) -> bool:
    stats = await backend.queue_stats()
    return stats.queued == 0


def applied(origin: FakeOrigin, uid: str) -> list[str]:
    """The writes the origin received for ``uid``, in order ("create", "update")."""
    return [
        route
        for r in origin.requests
        if r.path.endswith(uid) and (route := _route(r.method, r.query_string)) != "retrieve"
    ]


def _route(method: str, query: str) -> str:
    if method == "GET":
        return "retrieve"
    return "update" if "update" in query else "create"


async def test_passes_through_when_upstream_is_up(tmp_path: Path) -> None:
    async with running_origin() as origin, outbox_over(origin, tmp_path / "s.db") as backend:
        result = await backend.create_mpps(UID, minimal_create())
        assert result.warnings == ()
        assert UID in origin.mpps
        origin.fail("create", Fault(409, b"in use"))
        with pytest.raises(DuplicateInstance):  # the upstream's verdict, unchanged
            await backend.create_mpps(UID + "9", minimal_create())
        assert (await backend.queue_stats()).queued == 0


async def test_queues_while_down_and_delivers_in_order(tmp_path: Path) -> None:
    async with running_origin() as origin:
        origin.fail("*", Fault(503, b"down", times=10_000))
        async with outbox_over(origin, tmp_path / "s.db", deliver=False) as backend:
            created = await backend.create_mpps(UID, minimal_create())
            assert created.dataset["00400252"]["Value"] == ["IN PROGRESS"]
            await backend.update_mpps(UID, series_update())
            await backend.update_mpps(UID, completed_update())
            # Validated against the gateway's copy: a final MPPS refuses more updates now.
            with pytest.raises(FinalStateViolation):
                await backend.update_mpps(UID, series_update())
            retrieved = await backend.retrieve_mpps(UID)
            assert retrieved.dataset["00400252"]["Value"] == ["COMPLETED"]
            stats = await backend.queue_stats()
            assert (stats.queued, stats.dead) == (3, 0)
        origin.faults.clear()
        # A new process (here: a new backend on the same file) delivers the backlog.
        async with outbox_over(origin, tmp_path / "s.db") as backend:
            await eventually(lambda: drained(backend))
        # The 503 answer to the first create is recorded too; after it, exactly the three.
        assert applied(origin, UID) == ["create", "create", "update", "update"]
        writes = [r for r in origin.requests if r.method == "POST"]
        assert [_route(r.method, r.query_string) for r in writes[-3:]] == [
            "create",
            "update",
            "update",
        ]
        assert origin.mpps[UID]["00400252"]["Value"] == ["COMPLETED"]


async def test_update_without_copy_is_not_queued(tmp_path: Path) -> None:
    async with running_origin() as origin, outbox_over(origin, tmp_path / "s.db") as backend:
        origin.fail("update", Fault(503, b"down"))
        with pytest.raises(UpstreamUnavailable):
            await backend.update_mpps(UID, series_update())
        assert (await backend.queue_stats()).queued == 0


async def test_refused_message_is_dead_lettered_then_retried(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with running_origin() as origin:
        origin.fail("create", Fault(503, b"down"))
        origin.fail("create", Fault(400, b"refused"))
        async with outbox_over(origin, path) as backend:
            await backend.create_mpps(UID, minimal_create())
            await backend.update_mpps(UID, completed_update())  # queued behind the create

            async def dead() -> bool:
                return (await backend.queue_stats()).dead == 1

            await eventually(dead)
            stats = await backend.queue_stats()
            assert (stats.queued, stats.dead) == (1, 1)
            assert UID not in origin.mpps
            count = await backend.outbox.write(lambda c: sql.revive(c, None, 0.0))
            assert count == 1
            backend.delivery.wake()
            await eventually(lambda: drained(backend))
            assert (await backend.queue_stats()).dead == 0
        assert origin.mpps[UID]["00400252"]["Value"] == ["COMPLETED"]


async def test_resent_create_that_landed_counts_as_delivered(tmp_path: Path) -> None:
    async with running_origin() as origin:
        origin.fail("create", Fault(503, b"down"))
        async with outbox_over(origin, tmp_path / "s.db", deliver=False) as backend:
            await backend.create_mpps(UID, minimal_create())
        # It landed already (e.g. an earlier attempt whose answer was lost).
        origin.mpps[UID] = json.loads(json.dumps(minimal_create()))
        async with outbox_over(origin, tmp_path / "s.db") as backend:
            await eventually(lambda: drained(backend))
            assert (await backend.queue_stats()).dead == 0


async def test_resent_create_that_differs_is_dead_lettered(tmp_path: Path) -> None:
    async with running_origin() as origin:
        origin.fail("create", Fault(503, b"down"))
        async with outbox_over(origin, tmp_path / "s.db", deliver=False) as backend:
            await backend.create_mpps(UID, minimal_create())
        other = minimal_create()
        other["00400253"] = {"vr": "SH", "Value": ["SOMEONE-ELSE"]}
        origin.mpps[UID] = other
        async with outbox_over(origin, tmp_path / "s.db") as backend:

            async def dead() -> bool:
                return (await backend.queue_stats()).dead == 1

            await eventually(dead)


def test_upstream_matches_is_loose_about_spelling() -> None:
    sent = {"00200013": {"vr": "IS", "Value": ["7 "]}, "00100010": {"vr": "PN"}}
    assert upstream_matches({"00200013": {"vr": "IS", "Value": [7]}}, sent)
    assert not upstream_matches({"00200013": {"vr": "IS", "Value": [8]}}, sent)
