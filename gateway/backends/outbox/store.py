"""The durable outbox: queued MPPS messages and the gateway's own copy of each MPPS.

Why a table in the embedded store: a message is acknowledged to the modality only after
its row is committed (WAL, ``synchronous=FULL``), so ``kill -9`` loses nothing that was
acknowledged. Two tables of our own, keyed by backend name, next to the local store's:

* ``outbox_message``: one row per queued Create/Update, ``id`` gives the order per UID;
  ``state`` is ``queued`` or ``dead`` (dead-letter). Delivered rows are deleted.
* ``outbox_mpps``: the MPPS as the gateway last accepted it (forwarded or queued); queued
  messages are validated against it with the shared rules of :mod:`gateway.model.mpps`.

Functions here are blocking and take a connection; :class:`OutboxStore` runs them on a
thread that owns the connection and commits concurrent writes together (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio

from gateway.backends.sqlite_file import open_wal
from gateway.errors import Busy, InternalError
from gateway.model.dicom_json import dumps_stored, loads_stored
from gateway.model.types import JsonDataset

T = TypeVar("T")
Op = Literal["create", "update"]
State = Literal["queued", "dead"]


_DDL = (
    """
    CREATE TABLE IF NOT EXISTS outbox_message (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        backend TEXT NOT NULL,
        uid TEXT NOT NULL,
        op TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        last_error TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS outbox_message_uid ON outbox_message (backend, uid, id)",
    """
    CREATE TABLE IF NOT EXISTS outbox_mpps (
        backend TEXT NOT NULL,
        uid TEXT NOT NULL,
        doc TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (backend, uid)
    ) WITHOUT ROWID
    """,
)

_COLUMNS = "id, backend, uid, op, body, state, created_at, attempts, next_at, last_error"


@dataclass(frozen=True)
class Message:
    """One queued (or dead-lettered) MPPS write."""

    id: int
    backend: str
    uid: str
    op: Op
    body: JsonDataset
    state: State
    created_at: float
    attempts: int
    next_at: float
    last_error: str | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Message:
        """A message from a ``SELECT {_COLUMNS}`` row."""
        return cls(
            id=int(row[0]),
            backend=str(row[1]),
            uid=str(row[2]),
            op=row[3],
            body=loads_stored(row[4]),
            state=row[5],
            created_at=float(row[6]),
            attempts=int(row[7]),
            next_at=float(row[8]),
            last_error=row[9],
        )


@dataclass(frozen=True)
class QueueStats:
    """Queue depth for probes and logs (no patient data)."""

    queued: int
    dead: int
    oldest_created_at: float | None

    def as_dict(self, now: float) -> dict[str, float | int | None]:
        """JSON-friendly: counts and the oldest message's age in seconds."""
        age = None if self.oldest_created_at is None else round(now - self.oldest_created_at, 1)
        return {"queued": self.queued, "dead": self.dead, "oldest_age_s": age}


# --- blocking operations on one connection -------------------------------------------------


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the outbox tables in the SQLite file at ``path``."""
    return open_wal(path, _DDL, what="outbox")


def mirror_get(conn: sqlite3.Connection, backend: str, uid: str) -> JsonDataset | None:
    """The gateway's copy of MPPS ``uid``, or None."""
    row = conn.execute(
        "SELECT doc FROM outbox_mpps WHERE backend = ? AND uid = ?", (backend, uid)
    ).fetchone()
    if row is None:
        return None
    doc: JsonDataset = loads_stored(row[0])
    return doc


def mirror_put(
    conn: sqlite3.Connection, backend: str, uid: str, doc: JsonDataset | None, now: float
) -> None:
    """Replace the copy of ``uid`` (``None`` forgets it: its state is no longer known)."""
    if doc is None:
        conn.execute("DELETE FROM outbox_mpps WHERE backend = ? AND uid = ?", (backend, uid))
        return
    conn.execute(
        "INSERT INTO outbox_mpps (backend, uid, doc, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (backend, uid) DO UPDATE"
        " SET doc = excluded.doc, updated_at = excluded.updated_at",
        (backend, uid, dumps_stored(doc), now),
    )


def insert_message(
    conn: sqlite3.Connection, backend: str, uid: str, op: Op, body: JsonDataset, now: float
) -> int:
    """Queue one message, due at once; its id."""
    cursor = conn.execute(
        "INSERT INTO outbox_message (backend, uid, op, body, created_at, next_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (backend, uid, op, dumps_stored(body), now, now),
    )
    assert cursor.lastrowid is not None
    return int(cursor.lastrowid)


def backlog_uids(conn: sqlite3.Connection, backend: str) -> set[str]:
    """Every UID with a queued or dead message."""
    rows = conn.execute(
        "SELECT DISTINCT uid FROM outbox_message WHERE backend = ?", (backend,)
    ).fetchall()
    return {str(r[0]) for r in rows}


def head(conn: sqlite3.Connection, backend: str, uid: str) -> Message | None:
    """The oldest message of ``uid`` (the only one that may be sent next)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox_message WHERE backend = ? AND uid = ? ORDER BY id LIMIT 1",
        (backend, uid),
    ).fetchone()
    return None if row is None else Message.from_row(row)


def due_uids(conn: sqlite3.Connection, backend: str, now: float, limit: int) -> list[str]:
    """UIDs whose queued head message is due by ``now``, oldest due first.

    Only the UIDs: a round may list hundreds, and each drain reads its head message (with
    the body) anyway; decoding every body here was most of a round's cost.
    """
    rows = conn.execute(
        "SELECT uid FROM outbox_message WHERE id IN"
        " (SELECT MIN(id) FROM outbox_message WHERE backend = ? GROUP BY uid)"
        " AND state = 'queued' AND next_at <= ? ORDER BY next_at, id LIMIT ?",
        (backend, now, limit),
    ).fetchall()
    return [str(r[0]) for r in rows]


def next_due(conn: sqlite3.Connection, backend: str) -> float | None:
    """When the earliest queued head message becomes due."""
    row = conn.execute(
        "SELECT MIN(next_at) FROM outbox_message WHERE id IN"
        " (SELECT MIN(id) FROM outbox_message WHERE backend = ? GROUP BY uid)"
        " AND state = 'queued'",
        (backend,),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def delete_message(conn: sqlite3.Connection, message_id: int) -> bool:
    """Delivered or dropped: the row goes; False if it was already gone."""
    return conn.execute("DELETE FROM outbox_message WHERE id = ?", (message_id,)).rowcount > 0


def postpone(
    conn: sqlite3.Connection, message_id: int, attempts: int, next_at: float, reason: str
) -> None:
    """A failed attempt: count it and set when to try again."""
    conn.execute(
        "UPDATE outbox_message SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
        (attempts, next_at, reason, message_id),
    )


def kill(conn: sqlite3.Connection, message_id: int, attempts: int, reason: str) -> None:
    """Move a message to the dead-letter state (it then blocks its UID until retried)."""
    conn.execute(
        "UPDATE outbox_message SET state = 'dead', attempts = ?, last_error = ? WHERE id = ?",
        (attempts, reason, message_id),
    )


def revive(conn: sqlite3.Connection, message_id: int | None, now: float) -> int:
    """``outbox retry``: dead (or waiting) messages become due now; how many."""
    sql = "UPDATE outbox_message SET state = 'queued', attempts = 0, next_at = ?"
    if message_id is None:
        return conn.execute(sql + " WHERE state = 'dead'", (now,)).rowcount
    return conn.execute(sql + " WHERE id = ?", (now, message_id)).rowcount


def get_message(conn: sqlite3.Connection, message_id: int) -> Message | None:
    """One message by id (any backend)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox_message WHERE id = ?", (message_id,)
    ).fetchone()
    return None if row is None else Message.from_row(row)


def list_messages(conn: sqlite3.Connection, state: State | None, limit: int) -> list[Message]:
    """Messages of every backend in queue order."""
    where, params = ("", ()) if state is None else (" WHERE state = ?", (state,))
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox_message{where} ORDER BY id LIMIT ?", (*params, limit)
    ).fetchall()
    return [Message.from_row(r) for r in rows]


def stats(conn: sqlite3.Connection, backend: str | None) -> QueueStats:
    """Counts per state and the oldest message's creation time."""
    where, params = ("", ()) if backend is None else (" WHERE backend = ?", (backend,))
    row = conn.execute(
        "SELECT SUM(state = 'queued'), SUM(state = 'dead'), MIN(created_at)"
        f" FROM outbox_message{where}",
        params,
    ).fetchone()
    return QueueStats(queued=int(row[0] or 0), dead=int(row[1] or 0), oldest_created_at=row[2])


# --- the async side --------------------------------------------------------------------------


class _Call:
    """One blocking call handed to a connection thread, and its outcome."""

    __slots__ = ("error", "fn", "future", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]):
        self.fn = fn
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None


_STOP = None  # queued to end a connection thread


class _ConnectionThread:
    """A thread that owns one connection and runs the calls queued for it, in order.

    Why not ``anyio.to_thread``: a hop through it cost ~150 us of CPU (limiter, cancel
    scope, a ``queue.Queue`` condition), a C ``SimpleQueue`` and one loop wake-up ~50 us,
    and every queued MPPS write takes a hop. With ``group`` set, the calls queued at the
    same time are run in one transaction (group commit, see :meth:`_commit`).
    """

    def __init__(self, conn: sqlite3.Connection, name: str, *, group: bool) -> None:
        self._conn = conn
        self._group = group
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._stopped: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``fn`` and wait for its outcome; once queued it runs even if we are cancelled."""
        call = _Call(fn, asyncio.get_running_loop().create_future())
        self._queue.put(call)
        await call.future  # cancelled: the call still runs, its outcome is dropped
        if call.error is not None:
            raise call.error
        result: T = call.result
        return result

    async def stop(self) -> None:
        """Run what is queued, close the connection and end the thread."""
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self._queue.put(_STOP)
        await asyncio.shield(self._stopped)

    def _main(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Call] = []
            item = self._queue.get()
            while item is not _STOP:
                batch.append(item)
                if not self._group:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stopping = item is _STOP
            if not batch:
                continue
            try:
                if self._group:
                    _commit(self._conn, batch)
                else:
                    _call(self._conn, batch[0])
            except BaseException as exc:  # never leave a caller waiting for ever
                for call in batch:
                    call.error = call.error or InternalError(f"outbox failure: {exc!r}")
            _resolve_soon(batch)
        self._conn.close()
        stopped = self._stopped
        if stopped is not None:
            _threadsafe(stopped.get_loop(), _finish, stopped)


def _call(conn: sqlite3.Connection, call: _Call) -> None:
    try:
        call.result = call.fn(conn)
    except sqlite3.Error as exc:
        call.error = _translate(exc)
    except Exception as exc:
        call.error = exc


def _commit(conn: sqlite3.Connection, batch: list[_Call]) -> None:
    """Run ``batch`` in one transaction, each call in its own savepoint: one fsync for all,
    and one failing write never takes the others with it."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        for call in batch:
            conn.execute("SAVEPOINT one")
            try:
                call.result = call.fn(conn)
                conn.execute("RELEASE one")
            except Exception as exc:
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                call.error = _translate(exc) if isinstance(exc, sqlite3.Error) else exc
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for call in batch:
            call.error = _translate(exc)


def _resolve_soon(batch: list[_Call]) -> None:
    """Hand the outcomes to the event loop: one wake-up per loop for the whole batch."""
    loops: dict[asyncio.AbstractEventLoop, list[_Call]] = {}
    for call in batch:
        loops.setdefault(call.future.get_loop(), []).append(call)
    for loop, calls in loops.items():
        _threadsafe(loop, _resolve, calls)


def _threadsafe(loop: asyncio.AbstractEventLoop, fn: Callable[[Any], None], arg: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(fn, arg)


def _resolve(calls: list[_Call]) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_result(None)


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class OutboxStore:
    """Two connections, each owned by one thread: the writer commits concurrent writes
    together, the reader never waits for a commit (WAL).

    Group commit is why the outbox keeps up with many modalities: each commit waits for
    an fsync, so writes that arrive while one commits are committed together.
    """

    def __init__(self, conn: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self._writer = _ConnectionThread(conn, "outbox-writer", group=True)
        self._reader = _ConnectionThread(reader, "outbox-reader", group=False)
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> OutboxStore:
        """Open the outbox tables in the SQLite file at ``path``."""
        conn = await anyio.to_thread.run_sync(connect, path)
        try:
            reader = await anyio.to_thread.run_sync(connect, path)
        except BaseException:
            conn.close()
            raise
        return cls(conn, reader)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the reader connection."""
        self._check_open()
        return await self._reader.run(fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a committed transaction; returns after the commit.

        Once queued the write is committed even if the caller is cancelled meanwhile.
        """
        self._check_open()
        with anyio.CancelScope(shield=True):
            result = await self._writer.run(fn)
        return result

    async def aclose(self) -> None:
        """Close both connections (after the calls already queued)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._writer.stop()
            await self._reader.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise Busy("the outbox is closed; try again")


def _translate(exc: sqlite3.Error) -> Busy | InternalError:
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return Busy("the outbox is busy; try again", retry_after_s=1)
    return InternalError(f"outbox failure: {exc}")
