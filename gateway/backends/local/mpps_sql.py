"""Blocking SQL for MPPS instances; called in worker threads only.

The shared rules of :mod:`gateway.model.mpps` decide what is valid; this module keeps the
instances. Create and update are each one ``BEGIN IMMEDIATE`` transaction that also
carries the optional SPS status follow-up, so a step's status never disagrees with an
acknowledged MPPS. Deleted or purged instances leave a tombstone (UID and times, no
data) so later requests get "gone" (HTTP 410) rather than "unknown".
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from gateway.backends.local.schema import immediate
from gateway.backends.local.worklist_sql import set_step_status
from gateway.errors import DuplicateInstance, InstanceGone, NoSuchInstance
from gateway.model import mpps as rules
from gateway.model.types import JsonDataset
from gateway.model.uids import validate_uid

_FINAL = (rules.PpsStatus.COMPLETED, rules.PpsStatus.DISCONTINUED)

# IHE Scheduled Workflow: the SPS Status a referenced step takes for each MPPS status.
SPS_STATUS_FOR = {
    rules.PpsStatus.IN_PROGRESS: "STARTED",
    rules.PpsStatus.COMPLETED: "COMPLETED",
    rules.PpsStatus.DISCONTINUED: "DISCONTINUED",
}


@dataclass(frozen=True)
class MppsSummary:
    """One line of ``mpps list``."""

    uid: str
    status: str | None
    created_at: float
    updated_at: float
    deleted: bool


def _status_text(status: rules.PpsStatus | None) -> str | None:
    return status.value if status is not None else None


def _follow_up(
    conn: sqlite3.Connection, mpps: JsonDataset, status: rules.PpsStatus | None, now: float
) -> None:
    target = SPS_STATUS_FOR.get(status) if status is not None else None
    if target is None:
        return
    for study_uid, sps_id in rules.referenced_steps(mpps):
        set_step_status(conn, study_uid, sps_id, target, now)


def _load(conn: sqlite3.Connection, uid: str) -> JsonDataset:
    found = conn.execute("SELECT doc, deleted_at FROM mpps WHERE uid = ?", (uid,)).fetchone()
    if found is None:
        raise NoSuchInstance(f"no MPPS instance {uid}")
    doc, deleted_at = found
    if deleted_at is not None or doc is None:
        raise InstanceGone(f"MPPS instance {uid} was deleted")
    stored: JsonDataset = json.loads(doc)
    return stored


def create(
    conn: sqlite3.Connection, uid: str, attributes: JsonDataset, *, follow_up: bool, now: float
) -> JsonDataset:
    """N-CREATE: validate, store, follow up; DuplicateInstance if the UID was ever used."""
    stored = rules.validate_create(uid, attributes)
    status = rules.status_of(stored)
    with immediate(conn):
        if conn.execute("SELECT 1 FROM mpps WHERE uid = ?", (uid,)).fetchone() is not None:
            raise DuplicateInstance(f"MPPS instance {uid} already exists")
        conn.execute(
            "INSERT INTO mpps (uid, status, doc, created_at, updated_at, final_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                uid,
                _status_text(status),
                json.dumps(stored, ensure_ascii=False, separators=(",", ":")),
                now,
                now,
                now if status in _FINAL else None,
            ),
        )
        if follow_up:
            _follow_up(conn, stored, status, now)
    return stored


def update(
    conn: sqlite3.Connection, uid: str, changes: JsonDataset, *, follow_up: bool, now: float
) -> JsonDataset:
    """N-SET: apply the shared update rules to the stored instance in one transaction."""
    validate_uid(uid)
    with immediate(conn):
        stored = _load(conn, uid)
        new = rules.apply_update(stored, changes)
        old_status, new_status = rules.status_of(stored), rules.status_of(new)
        became_final = new_status in _FINAL and old_status not in _FINAL
        conn.execute(
            "UPDATE mpps SET status = ?, doc = ?, updated_at = ?,"
            " final_at = CASE WHEN ? THEN ? ELSE final_at END WHERE uid = ?",
            (
                _status_text(new_status),
                json.dumps(new, ensure_ascii=False, separators=(",", ":")),
                now,
                became_final,
                now,
                uid,
            ),
        )
        if follow_up and new_status != old_status:
            _follow_up(conn, new, new_status, now)
    return new


def get(conn: sqlite3.Connection, uid: str) -> JsonDataset:
    """The stored MPPS; NoSuchInstance / InstanceGone otherwise."""
    validate_uid(uid)
    return _load(conn, uid)


def delete(conn: sqlite3.Connection, uid: str, now: float) -> None:
    """Replace the instance by a tombstone (idempotent); NoSuchInstance when unknown."""
    with immediate(conn):
        if conn.execute("SELECT 1 FROM mpps WHERE uid = ?", (uid,)).fetchone() is None:
            raise NoSuchInstance(f"no MPPS instance {uid}")
        conn.execute(
            "UPDATE mpps SET doc = NULL, deleted_at = ? WHERE uid = ? AND deleted_at IS NULL",
            (now, uid),
        )


def summaries(conn: sqlite3.Connection, limit: int) -> list[MppsSummary]:
    """The most recently updated instances first (tombstones included)."""
    rows = conn.execute(
        "SELECT uid, status, created_at, updated_at, deleted_at FROM mpps"
        " ORDER BY updated_at DESC, uid LIMIT ?",
        (limit,),
    ).fetchall()
    return [MppsSummary(r[0], r[1], r[2], r[3], r[4] is not None) for r in rows]
