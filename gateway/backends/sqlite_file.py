"""Opening the gateway's one SQLite file for a component that keeps its own tables there.

The embedded store, the ``dimse`` backend's MPPS mirror and the store-and-forward outbox
share ``[store] path``; each opens it the same way: WAL (readers never block the writer),
``synchronous = FULL`` (an acknowledged write survives a crash), a busy timeout, and its
tables created in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import InternalError

BUSY_TIMEOUT_S = 10.0


def open_wal(
    path: Path, ddl: Sequence[str], *, what: str, autocommit: bool = True
) -> sqlite3.Connection:
    """A thread-shareable connection with ``ddl`` applied; ``what`` names it in errors.

    ``autocommit`` connections take explicit ``BEGIN``; the others use Python's implicit
    transactions (``with conn:``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise InternalError(f"the {what} cannot use WAL journaling (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in ddl:
            conn.execute(statement)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        raise InternalError(f"cannot open the {what} at {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    if not autocommit:
        conn.isolation_level = "DEFERRED"
    return conn
