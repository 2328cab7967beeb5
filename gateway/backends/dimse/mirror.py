"""The gateway's own copy of every MPPS it forwarded to a DIMSE RIS.

Why: Retrieve can be answered without the RIS (``mpps_retrieve = "mirror"``, or a RIS that
does not offer MPPS Retrieve), updates can be checked before they are forwarded, and a 404
from the RIS for an MPPS we know we created becomes 410.

It lives in the embedded SQLite file (``[store] path``, shared with the local store) in its
own table ``dimse_mpps_mirror``, keyed by backend name and SOP Instance UID; the local
store's tables and ``user_version`` are not touched. WAL journaling, one connection used by
one worker thread at a time (a ``CapacityLimiter`` of 1), never the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from gateway.backends.sqlite_file import open_wal
from gateway.errors import Busy, InternalError
from gateway.model.types import JsonDataset

T = TypeVar("T")


_DDL = (
    """
    CREATE TABLE IF NOT EXISTS dimse_mpps_mirror (
        backend TEXT NOT NULL,
        uid TEXT NOT NULL,
        doc TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (backend, uid)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS dimse_mpps_mirror_updated ON dimse_mpps_mirror (updated_at)",
)


class MppsMirror:
    """Copies of forwarded MPPS instances for one ``dimse`` backend."""

    def __init__(self, conn: sqlite3.Connection, backend: str) -> None:
        self._conn = conn
        self._backend = backend
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path, backend: str) -> MppsMirror:
        """Open (creating if needed) the mirror table in the SQLite file at ``path``."""
        conn = await anyio.to_thread.run_sync(_connect, path)
        return cls(conn, backend)

    async def get(self, uid: str) -> JsonDataset | None:
        """The mirrored MPPS ``uid``, or ``None`` if the gateway never forwarded it."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT doc FROM dimse_mpps_mirror WHERE backend = ? AND uid = ?",
                (self._backend, uid),
            ).fetchone()
        )
        if row is None:
            return None
        doc: JsonDataset = json.loads(row[0])
        return doc

    async def put(self, uid: str, dataset: JsonDataset) -> None:
        """Store ``dataset`` as the current copy of ``uid`` (insert or replace)."""
        doc = json.dumps(dataset, separators=(",", ":"), ensure_ascii=False)
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(
                    "INSERT INTO dimse_mpps_mirror (backend, uid, doc, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (backend, uid) DO UPDATE"
                    " SET doc = excluded.doc, updated_at = excluded.updated_at",
                    (self._backend, uid, doc, now, now),
                )

        await self._run(write)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._run(lambda c: c.close())

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return func(self._conn)
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if "locked" in text or "busy" in text:
                    raise Busy("the MPPS mirror is busy; try again", retry_after_s=1) from exc
                raise InternalError(f"MPPS mirror failure: {exc}") from exc
            except sqlite3.Error as exc:
                raise InternalError(f"MPPS mirror failure: {exc}") from exc

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)


def _connect(path: Path) -> sqlite3.Connection:
    return open_wal(path, _DDL, what="MPPS mirror", autocommit=False)
