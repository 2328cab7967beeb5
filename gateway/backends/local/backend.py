"""The ``local`` backend: the Backend protocol on an embedded SQLite file (WAL mode).

All SQLite work runs in worker threads (``anyio.to_thread.run_sync`` under one
:class:`anyio.CapacityLimiter`), never on the event loop. Writes share one connection and
are serialised by an async lock, so a waiting writer holds no thread; searches take a
connection of their own from a small pool and keep its cursor open while the consumer
pulls results, so the worklist is streamed in batches, never loaded whole.

A search hands rows that SQL alone decided (see ``search.py``, residual matching) over as
JSON bytes, decoded one at a time just before it is yielded (some microseconds on the event
loop): decoding a whole batch up front kept hundreds of items alive at once, and the
garbage collector's passes over them cost more than the decoding itself. Rows that need
the matcher are decoded and matched in the thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel
import orjson

from gateway.backends.base import MppsResult
from gateway.backends.local import mpps_sql, retention, worklist_sql
from gateway.backends.local.items import SpsRow, split_item
from gateway.backends.local.schema import connect, create_schema, translate
from gateway.backends.local.search import plan_search
from gateway.errors import Busy, ConfigError
from gateway.model import mpps as rules
from gateway.model.query import WorklistQuery
from gateway.model.types import JsonDataset
from gateway.settings import StoreSettings

T = TypeVar("T")

THREADS = 8  # worker threads for SQLite work of one backend
MAX_IDLE_READERS = 4
FETCH_ROWS = 128  # rows per fetchmany() step
# Rows one thread call takes at most. Each call is a thread hop, which costs 0.1 ms idle
# and over a millisecond on a busy machine, so the first call already takes a typical
# search whole (a day's steps of one modality: a few hundred); later calls take more.
FIRST_BATCH_ROWS = 384
NEXT_BATCH_ROWS = 2048


@dataclass(frozen=True)
class ImportReport:
    """What an import did: counts of inserted and updated items."""

    inserted: int
    updated: int


class _Readers:
    """A small pool of read-only connections (created on demand, in worker threads)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # worker threads and the event loop both use the pool
        self.closed = False

    def acquire(self) -> sqlite3.Connection:
        """Blocking: an idle connection or a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return connect(self._path, readonly=True)

    def release(self, conn: sqlite3.Connection) -> None:
        """Return a connection with no open statement; cheap, safe on the event loop."""
        with self._lock:
            keep = not self.closed and len(self._idle) < MAX_IDLE_READERS
            if keep and not conn.in_transaction:
                self._idle.append(conn)
                return
        conn.close()

    def close_idle(self) -> None:
        """Close the idle connections; connections in use are closed when released."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Scan:
    """One streaming search: a connection, a cursor and the matchers, used batch by batch."""

    def __init__(self, readers: _Readers, query: WorklistQuery) -> None:
        self._readers = readers
        self._query = query
        self._conn: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None
        self._limit = FIRST_BATCH_ROWS
        self._residual: Callable[[JsonDataset], bool] | None = None
        self._done = False

    def next_batch(self) -> tuple[list[bytes | JsonDataset], bool]:
        """Blocking: the next matches (maybe none) and whether the scan is done.

        A match is a decoded item, or the JSON (bytes) of a row that needed no matcher.
        """
        if self._done:
            return [], True
        if self._cursor is None:
            plan = plan_search(self._query)
            compiled = plan.residual.compiled()
            self._residual = None if compiled.universal else compiled.matches
            self._conn = self._readers.acquire()
            self._cursor = self._conn.execute(plan.sql, plan.params)
        residual = self._residual
        matches: list[bytes | JsonDataset] = []
        limit, self._limit = self._limit, NEXT_BATCH_ROWS
        scanned = 0
        while scanned < limit:
            size = min(FETCH_ROWS, limit - scanned)
            rows = self._cursor.fetchmany(size)
            scanned += len(rows)
            for _start, _id, doc, trusted in rows:
                # Untrusted rows (irregular, older, or with an inexact column) get the whole
                # query; it is compiled once, on the first such row.
                check = residual if trusted else self._query.compiled().matches
                if check is None:
                    matches.append(doc)  # SQL decided every key for this row
                    continue
                item: JsonDataset = orjson.loads(doc)
                if check(item):
                    matches.append(item)
            if len(rows) < size:  # fetchmany comes back short only at the end
                self._done = True
                self.close()  # frees the connection while the consumer takes the last batch
                return matches, True
        return matches, False

    def close(self) -> None:
        """Finalize the statement (ends the read snapshot) and give the connection back."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self._conn is not None:
            self._readers.release(self._conn)
            self._conn = None


class LocalBackend:
    """The Backend protocol on SQLite (WAL), plus worklist maintenance for operators."""

    name: str = "local"
    cheap_remaining_count = True

    def __init__(self, settings: StoreSettings, writer: sqlite3.Connection) -> None:
        """Use :meth:`open`; this only wires an already opened writer connection."""
        self._settings = settings
        self._writer = writer
        self._readers = _Readers(settings.path)
        self._limiter = anyio.CapacityLimiter(THREADS)
        self._write_lock = anyio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, settings: StoreSettings) -> LocalBackend:
        """Open (creating if needed) the database at ``settings.path``.

        Raise :class:`gateway.errors.ConfigError` (key ``store.path``) when the file cannot
        be created or is no store, :class:`gateway.errors.Busy` when it is locked.
        """

        def _open() -> sqlite3.Connection:
            settings.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(settings.path)
            try:
                create_schema(conn)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            writer = await anyio.to_thread.run_sync(_open)
        except sqlite3.Error as exc:
            error = translate(exc)
            if isinstance(error, Busy):
                raise error from exc
            raise ConfigError("store.path", f"cannot use {settings.path}: {exc}") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError("store.path", f"cannot create {settings.path}: {reason}") from exc
        return cls(settings, writer)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._settings.path

    # --- plumbing -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Busy("the local store is closed")

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run blocking SQLite work in a worker thread; sqlite3 errors become ours."""
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        readers = self._readers

        def work() -> T:
            conn = readers.acquire()
            try:
                return fn(conn)
            finally:
                readers.release(conn)

        return await self._call(work)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        async with self._write_lock:
            self._check_open()
            writer = self._writer
            return await self._call(lambda: fn(writer))

    # --- Backend protocol -------------------------------------------------------------

    async def search_worklist(self, query: WorklistQuery) -> AsyncGenerator[JsonDataset, None]:
        """Stream matching steps in (SPS start date/time, row) order; see the protocol."""
        self._check_open()
        scan = _Scan(self._readers, query)
        try:
            while True:
                batch, done = await self._call(scan.next_batch)
                for found in batch:
                    # Cheap: raises only if our scope was cancelled (no task switch), so a
                    # cancelled consumer stops within one result, not one batch.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    yield orjson.loads(found) if isinstance(found, bytes) else found
                if done:
                    return
        finally:
            # No thread can be using the scan here: run_sync waits for its thread even
            # when cancelled, and aclose() only reaches us at a yield.
            scan.close()

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        """N-CREATE / Create in one transaction (with the SPS status follow-up if enabled)."""
        follow = self._settings.sps_status_follow_up
        stored = await self._write(
            lambda c: mpps_sql.create(c, uid, attributes, follow_up=follow, now=time.time())
        )
        return MppsResult(stored)

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        """N-SET / Update in one transaction (with the SPS status follow-up if enabled)."""
        follow = self._settings.sps_status_follow_up
        stored = await self._write(
            lambda c: mpps_sql.update(c, uid, changes, follow_up=follow, now=time.time())
        )
        return MppsResult(stored)

    async def retrieve_mpps(self, uid: str, tags: Sequence[int] | None = None) -> MppsResult:
        """N-GET / Retrieve; ``tags`` trims to top-level attributes, warning on absent ones."""
        stored = await self._read(lambda c: mpps_sql.get(c, uid))
        if tags is None:
            return MppsResult(stored)
        missing = rules.missing_requested(stored, tags)
        warnings: tuple[str, ...] = ()
        if missing:
            names = ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in missing)
            warnings = (f"requested attributes not held for this MPPS: {names}",)
        return MppsResult(rules.select_attributes(stored, tags), warnings)

    async def check_ready(self) -> None:
        """Raise :class:`Busy` unless the database answers a trivial read."""
        await self._read(lambda c: c.execute("SELECT 1 FROM sps LIMIT 1").fetchall())

    async def aclose(self) -> None:
        """Close every connection; searches still streaming close theirs when they end."""
        if self._closed:
            return
        async with self._write_lock:
            self._closed = True
            readers, writer = self._readers, self._writer

            def _close() -> None:
                readers.close_idle()
                try:
                    writer.execute("PRAGMA optimize")
                finally:
                    writer.close()

            with anyio.CancelScope(shield=True):
                await self._call(_close)

    # --- worklist maintenance (operators, demo, tests) ------------------------------

    async def upsert_worklist_items(self, items: Iterable[JsonDataset]) -> ImportReport:
        """Insert or update scheduled procedure steps (key: Study Instance UID + SPS ID).

        All items are checked first; one invalid item raises its typed error and nothing is
        written. An item with several SPS items becomes one step per SPS item.
        """
        rows = [row for item in items for row in split_item(item)]
        return await self.upsert_rows(rows)

    async def upsert_rows(self, rows: Sequence[SpsRow]) -> ImportReport:
        """Write already split and checked rows in one transaction."""
        inserted, updated = await self._write(
            lambda c: worklist_sql.upsert_rows(c, rows, time.time())
        )
        return ImportReport(inserted=inserted, updated=updated)

    async def delete_worklist_item(self, study_uid: str, sps_id: str) -> bool:
        """Delete one step; False when no such step exists."""
        return await self._write(lambda c: worklist_sql.delete_step(c, study_uid, sps_id))

    async def delete_all_worklist_items(self) -> int:
        """Delete the whole worklist; the number of steps deleted."""
        return await self._write(worklist_sql.delete_all)

    async def count_worklist_items(self) -> int:
        """How many steps the store holds."""
        return await self._read(worklist_sql.count_steps)

    async def get_worklist_item(self, study_uid: str, sps_id: str) -> JsonDataset | None:
        """The stored item of one step, or None."""
        return await self._read(lambda c: worklist_sql.get_step(c, study_uid, sps_id))

    async def delete_mpps(self, uid: str) -> None:
        """Delete an MPPS, keeping a tombstone so it answers "gone" from now on."""
        await self._write(lambda c: mpps_sql.delete(c, uid, time.time()))

    async def list_mpps(self, limit: int = 100) -> list[mpps_sql.MppsSummary]:
        """The most recently changed MPPS instances (tombstones included)."""
        return await self._read(lambda c: mpps_sql.summaries(c, limit))

    async def purge(
        self, now: datetime, *, sps_days: int | None = None, mpps_days: int | None = None
    ) -> retention.PurgeReport:
        """Apply the retention rules once (periods default to the store settings)."""
        keep = self._settings.retention
        sps_keep = keep.sps_days if sps_days is None else sps_days
        mpps_keep = keep.mpps_days if mpps_days is None else mpps_days
        sps_total = mpps_total = 0
        while True:
            sps, mpps, done = await self._write(
                lambda c: retention.purge_batch(c, now, sps_keep, mpps_keep)
            )
            sps_total += sps
            mpps_total += mpps
            if done:
                return retention.PurgeReport(sps_deleted=sps_total, mpps_deleted=mpps_total)
