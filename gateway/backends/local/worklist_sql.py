"""Blocking SQL for scheduled procedure steps; called in worker threads only.

Each public function that writes runs one ``BEGIN IMMEDIATE`` transaction, so an import
batch, a delete or a status follow-up is all-or-nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from gateway.backends.local.items import SpsRow, with_sps_status
from gateway.backends.local.schema import immediate
from gateway.model.dicom_json import dumps_stored, loads_stored
from gateway.model.types import JsonDataset

_FIND = "SELECT id FROM sps WHERE study_uid = ? AND sps_id = ?"
_INSERT = (
    "INSERT INTO sps (study_uid, sps_id, start_dt, modality, patient_id, patient_name,"
    " name_key, accession, status, irregular, updated_at, doc, exact)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE sps SET start_dt = ?, modality = ?, patient_id = ?, patient_name = ?,"
    " name_key = ?, accession = ?, status = ?, irregular = ?, updated_at = ?, doc = ?,"
    " exact = ? WHERE id = ?"
)
_INSERT_STATION = "INSERT INTO sps_station (ae, start_dt, sps) VALUES (?, ?, ?)"


def upsert_rows(conn: sqlite3.Connection, rows: Iterable[SpsRow], now: float) -> tuple[int, int]:
    """Insert or replace rows keyed on (Study Instance UID, SPS ID); (inserted, updated)."""
    inserted = updated = 0
    execute = conn.execute  # the loop runs once per step of a big import: keep it lean
    with immediate(conn):
        for row in rows:
            found = execute(_FIND, (row.study_uid, row.sps_id)).fetchone()
            values = (
                row.study_uid,
                row.sps_id,
                row.start_dt,
                row.modality,
                row.patient_id,
                row.patient_name,
                row.name_key,
                row.accession,
                row.status,
                int(row.irregular),
                now,
                row.doc,
                row.exact,
            )
            if found is None:
                rowid = execute(_INSERT, values).lastrowid
                inserted += 1
            else:
                rowid = found[0]
                execute(_UPDATE, (*values[2:], rowid))
                execute("DELETE FROM sps_station WHERE sps = ?", (rowid,))
                updated += 1
            stations = row.stations
            if len(stations) == 1:
                execute(_INSERT_STATION, (stations[0], row.start_dt, rowid))
            elif stations:
                conn.executemany(
                    _INSERT_STATION, [(ae, row.start_dt, rowid) for ae in dict.fromkeys(stations)]
                )
    return inserted, updated


def _delete_ids(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    conn.executemany("DELETE FROM sps_station WHERE sps = ?", [(i,) for i in ids])
    conn.executemany("DELETE FROM sps WHERE id = ?", [(i,) for i in ids])


def delete_step(conn: sqlite3.Connection, study_uid: str, sps_id: str) -> bool:
    """Delete one step; False when it does not exist."""
    with immediate(conn):
        found = conn.execute(
            "SELECT id FROM sps WHERE study_uid = ? AND sps_id = ?", (study_uid, sps_id)
        ).fetchone()
        if found is None:
            return False
        _delete_ids(conn, [found[0]])
    return True


def delete_all(conn: sqlite3.Connection) -> int:
    """Delete every step; the number deleted."""
    with immediate(conn):
        count = int(conn.execute("SELECT count(*) FROM sps").fetchone()[0])
        conn.execute("DELETE FROM sps_station")
        conn.execute("DELETE FROM sps")
    return count


def count_steps(conn: sqlite3.Connection) -> int:
    """How many scheduled procedure steps the store holds."""
    return int(conn.execute("SELECT count(*) FROM sps").fetchone()[0])


def get_step(conn: sqlite3.Connection, study_uid: str, sps_id: str) -> JsonDataset | None:
    """The stored item of one step, or None."""
    found = conn.execute(
        "SELECT doc FROM sps WHERE study_uid = ? AND sps_id = ?", (study_uid, sps_id)
    ).fetchone()
    if found is None:
        return None
    doc: JsonDataset = loads_stored(found[0])
    return doc


def set_step_status(
    conn: sqlite3.Connection, study_uid: str, sps_id: str, status: str, now: float
) -> bool:
    """Set one step's SPS Status inside the caller's transaction; False if it is unknown.

    A COMPLETED step is never moved back (another MPPS of the same step may start or be
    discontinued after one completed it).
    """
    found = conn.execute(
        "SELECT id, status, doc FROM sps WHERE study_uid = ? AND sps_id = ?", (study_uid, sps_id)
    ).fetchone()
    if found is None:
        return False
    rowid, current, doc = found
    if current == status or (current == "COMPLETED" and status != "COMPLETED"):
        return True
    new_doc = dumps_stored(with_sps_status(loads_stored(doc), status))
    conn.execute(
        "UPDATE sps SET status = ?, doc = ?, updated_at = ? WHERE id = ?",
        (status, new_doc, now, rowid),
    )
    return True
