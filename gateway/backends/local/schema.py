"""The SQLite schema of the embedded store and how its connections are opened.

WAL mode lets searches read while a write commits; ``synchronous=FULL`` makes an
acknowledged MPPS write survive a crash or power loss; ``busy_timeout`` lets another
process (``worklist import`` next to a running server) wait for the write lock instead of
failing at once. Every write is one ``BEGIN IMMEDIATE`` transaction (:func:`immediate`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.errors import Busy, InternalError

SCHEMA_VERSION = 2  # 2: sps.exact; an older gateway must not write rows without it
BUSY_TIMEOUT_MS = 10_000
WRITER_CACHE_KIB = 32_768  # page cache of the writer: index updates of big imports stay in it

# start_dt: "YYYYMMDD[HHMMSS[.ffffff]]" or "" when the date is unknown; it orders results
# and serves date ranges as a prefix range. irregular = 1: the columns cannot stand for the
# item (see items.py); such rows are always handed to the matcher. exact: bits of the columns
# that hold exactly what the matcher sees (items.py EXACT_*); 0 (rows from schema 1) trusts
# none, so every key is checked by the matcher.
_DDL = """
CREATE TABLE IF NOT EXISTS sps (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL,
    sps_id TEXT NOT NULL,
    start_dt TEXT NOT NULL,
    modality TEXT,
    patient_id TEXT,
    patient_name TEXT,
    name_key TEXT,
    accession TEXT,
    status TEXT,
    irregular INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    doc TEXT NOT NULL,
    exact INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS sps_key ON sps (study_uid, sps_id);
CREATE INDEX IF NOT EXISTS sps_start ON sps (start_dt);
CREATE INDEX IF NOT EXISTS sps_modality ON sps (modality, start_dt);
CREATE INDEX IF NOT EXISTS sps_patient_id ON sps (patient_id);
CREATE INDEX IF NOT EXISTS sps_name ON sps (name_key);
CREATE INDEX IF NOT EXISTS sps_accession ON sps (accession);
CREATE INDEX IF NOT EXISTS sps_status ON sps (status, start_dt);
CREATE INDEX IF NOT EXISTS sps_irregular ON sps (start_dt) WHERE irregular != 0;

CREATE TABLE IF NOT EXISTS sps_station (
    ae TEXT NOT NULL,
    start_dt TEXT NOT NULL,
    sps INTEGER NOT NULL,
    PRIMARY KEY (ae, start_dt, sps)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sps_station_sps ON sps_station (sps);

CREATE TABLE IF NOT EXISTS mpps (
    uid TEXT PRIMARY KEY,
    status TEXT,
    doc TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    final_at REAL,
    deleted_at REAL
);
CREATE INDEX IF NOT EXISTS mpps_final ON mpps (final_at)
    WHERE final_at IS NOT NULL AND deleted_at IS NULL;
"""


def _configure(conn: sqlite3.Connection, *, readonly: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA temp_store = MEMORY")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    else:
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) usable from any thread.

    It must still be used by one thread at a time; the backend guarantees that.
    """
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    try:
        _configure(conn, readonly=readonly)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """Switch to WAL and create or check the schema (idempotent, safe for several processes)."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise InternalError(f"the store cannot use WAL journaling (got {mode!r})")
    with immediate(conn):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise InternalError(
                f"the store was created by a newer version (schema {version} > {SCHEMA_VERSION})"
            )
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(sps)")}
        if "exact" not in columns:  # schema 1: its rows keep 0, nothing trusted
            conn.execute("ALTER TABLE sps ADD COLUMN exact INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: take the write lock first, commit all or roll back all."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def translate(exc: sqlite3.Error) -> Busy | InternalError:
    """Map a SQLite failure onto the gateway's error family (never leak sqlite3 errors)."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return Busy("the local store is busy; try again", retry_after_s=1)
    return InternalError(f"local store failure: {exc}")
