"""The outbox store on a real SQLite file: group commit, cancellation, closing, encoding."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from gateway.backends.outbox import store as sql
from gateway.backends.outbox.store import OutboxStore
from gateway.errors import Busy, InternalError

UID = "1.2.826.0.1.3680043.10.2"


async def test_concurrent_writes_share_commits_and_fail_alone(tmp_path: Path) -> None:
    store = await OutboxStore.open(tmp_path / "s.db")
    results: dict[int, object] = {}
    try:

        async def insert(n: int) -> None:
            def work(conn: sqlite3.Connection) -> int:
                if n == 7:
                    raise ValueError("this one is refused")
                return sql.insert_message(conn, "up", f"{UID}.{n}", "create", {"n": n}, 1.0)

            try:
                results[n] = await store.write(work)
            except ValueError as exc:
                results[n] = exc

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(insert, n)
        assert isinstance(results.pop(7), ValueError)
        assert sorted(results.values()) == list(range(1, 50))  # type: ignore[type-var]
        stats = await store.read(lambda c: sql.stats(c, "up"))
        assert stats.queued == 49
        heads = await store.read(lambda c: sql.due_uids(c, "up", 2.0, 100))
        assert len(heads) == 49 and f"{UID}.7" not in heads
    finally:
        await store.aclose()


async def test_a_cancelled_write_is_still_committed(tmp_path: Path) -> None:
    store = await OutboxStore.open(tmp_path / "s.db")
    try:
        with anyio.move_on_after(0):  # cancelled before the commit could finish
            await store.write(lambda c: sql.insert_message(c, "up", UID, "create", {}, 1.0))
        assert (await store.read(lambda c: sql.stats(c, "up"))).queued == 1
    finally:
        await store.aclose()


async def test_closed_store_refuses_and_closes_once(tmp_path: Path) -> None:
    store = await OutboxStore.open(tmp_path / "s.db")
    await store.aclose()
    await store.aclose()
    with pytest.raises(Busy):
        await store.read(lambda c: sql.stats(c, None))
    with pytest.raises(Busy):
        await store.write(lambda c: sql.stats(c, None))


async def test_sqlite_errors_become_gateway_errors(tmp_path: Path) -> None:
    store = await OutboxStore.open(tmp_path / "s.db")
    try:
        with pytest.raises(InternalError, match="outbox failure"):
            await store.read(lambda c: c.execute("SELECT nothing FROM nowhere"))
    finally:
        await store.aclose()


async def test_bodies_orjson_cannot_write_still_round_trip(tmp_path: Path) -> None:
    """Integers beyond 64 bits (an IS value sent as a number) fall back to the json module."""
    store = await OutboxStore.open(tmp_path / "s.db")
    body = {"00201000": {"vr": "IS", "Value": [2**70]}, "00100010": {"vr": "PN"}}
    try:
        await store.write(lambda c: sql.insert_message(c, "up", UID, "create", body, 1.0))
        message = await store.read(lambda c: sql.head(c, "up", UID))
        assert message is not None and message.body == body
    finally:
        await store.aclose()
