"""Retention: purge old scheduled steps and final MPPS instances, periodically.

* A scheduled step goes when its SPS Start Date lies more than ``sps_days`` days before
  ``now``'s date (a step without a usable date: when it was last imported that long ago).
* A final (COMPLETED/DISCONTINUED) MPPS goes ``mpps_days`` days after it became final; it
  leaves a tombstone (UID and times, no patient data) so it answers "gone" (HTTP 410),
  and its UID can never be reused. Tombstones are kept.
* 0 days keeps forever. Work is done in batches, each its own short transaction, so a big
  purge never holds the write lock for long.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from gateway.backends.local.schema import immediate
from gateway.errors import GatewayError
from gateway.logging import get_logger
from gateway.settings import StoreSettings

if TYPE_CHECKING:
    from gateway.backends.base import Backend

BATCH = 5000
log = get_logger("store.retention")


@dataclass(frozen=True)
class PurgeReport:
    """What one purge removed."""

    sps_deleted: int
    mpps_deleted: int


def purge_batch(
    conn: sqlite3.Connection, now: datetime, sps_days: int, mpps_days: int
) -> tuple[int, int, bool]:
    """One transaction of purging: (steps deleted, MPPS tombstoned, nothing left to do)."""
    sps = mpps = 0
    with immediate(conn):
        if sps_days > 0:
            cutoff = now - timedelta(days=sps_days)
            ids = [
                (r[0],)
                for r in conn.execute(
                    "SELECT id FROM sps WHERE (start_dt != '' AND start_dt < ?)"
                    " OR (start_dt = '' AND updated_at < ?) LIMIT ?",
                    (cutoff.strftime("%Y%m%d"), cutoff.timestamp(), BATCH),
                )
            ]
            conn.executemany("DELETE FROM sps_station WHERE sps = ?", ids)
            conn.executemany("DELETE FROM sps WHERE id = ?", ids)
            sps = len(ids)
        if mpps_days > 0:
            cutoff_ts = (now - timedelta(days=mpps_days)).timestamp()
            cursor = conn.execute(
                "UPDATE mpps SET doc = NULL, deleted_at = ? WHERE uid IN ("
                " SELECT uid FROM mpps WHERE final_at < ? AND deleted_at IS NULL LIMIT ?)",
                (now.timestamp(), cutoff_ts, BATCH),
            )
            mpps = cursor.rowcount
    return sps, mpps, sps < BATCH and mpps < BATCH


async def run_retention(backend: Backend, settings: StoreSettings) -> None:
    """Purge every ``settings.retention.interval_s`` seconds until cancelled.

    Returns at once when both retention periods are 0 (keep forever). A failed round is
    logged and retried at the next interval.
    """
    from gateway.backends.local.backend import LocalBackend

    if not isinstance(backend, LocalBackend):
        raise TypeError("retention applies to the local backend only")
    keep = settings.retention
    if not (keep.sps_days or keep.mpps_days):
        return
    while True:
        try:
            report = await backend.purge(
                datetime.now(), sps_days=keep.sps_days, mpps_days=keep.mpps_days
            )
        except GatewayError as exc:
            log.warning("retention purge failed", error=str(exc), kind=exc.kind.value)
        else:
            if report.sps_deleted or report.mpps_deleted:
                log.info(
                    "retention purge",
                    sps_deleted=report.sps_deleted,
                    mpps_deleted=report.mpps_deleted,
                )
        await anyio.sleep(keep.interval_s)
