"""Crash safety: SIGKILL in the middle of MPPS writes loses no acknowledged write.

A child process writes MPPS instances (create, then complete) as fast as it can and prints
each UID once the backend has acknowledged the write. The test kills it with SIGKILL after
a number of acknowledgements, several rounds on the same file, then reopens the store.
"""

from __future__ import annotations

import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.backends.local import LocalBackend
from gateway.settings import StoreSettings

WRITER = r"""
import sys, anyio
from pathlib import Path
from gateway.backends.local import LocalBackend
from gateway.settings import StoreSettings
from tests.unit.mpps_examples import completed_update, minimal_create

async def main(path: str, prefix: str) -> None:
    backend = await LocalBackend.open(StoreSettings(path=Path(path)))
    n = 0
    while True:
        n += 1
        uid = f"{prefix}.{n}"
        await backend.create_mpps(uid, minimal_create())
        print("created", uid, flush=True)
        await backend.update_mpps(uid, completed_update())
        print("completed", uid, flush=True)

anyio.run(main, sys.argv[1], sys.argv[2])
"""

ROOT = Path(__file__).resolve().parents[2]


def _run_and_kill(db: Path, prefix: str, acks_before_kill: int) -> list[tuple[str, str]]:
    """Start the writer, SIGKILL it after some acknowledgements; every line it printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    acked: list[tuple[str, str]] = []
    buffer = b""
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while len(acked) < acks_before_kill:
            if time.monotonic() > deadline or not selector.select(timeout=1):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    stderr = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"writer stopped or stalled: {stderr[-2000:]}")
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            acked.extend(tuple(line.decode().split()) for line in lines if line)  # type: ignore[misc]
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    buffer += rest
    acked.extend(tuple(line.decode().split()) for line in buffer.split(b"\n") if line)  # type: ignore[misc]
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.mark.slow
async def test_sigkill_during_mpps_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite3"
    acked: list[tuple[str, str]] = []
    wanted = [40, 57, 74]  # acknowledgements before each kill (varied to vary the moment)
    for round_, count in enumerate(wanted, 1):
        acked += _run_and_kill(db, f"1.2.826.0.1.3680043.10.7.{round_}", count)
    assert len(acked) >= sum(wanted)

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    backend = await LocalBackend.open(StoreSettings(path=db))
    try:
        await backend.check_ready()
        completed = {uid for what, uid in acked if what == "completed"}
        created = {uid for what, uid in acked if what == "created"}
        assert completed <= created
        for uid in sorted(created):
            status = (await backend.retrieve_mpps(uid)).dataset["00400252"]["Value"][0]
            if uid in completed:
                assert status == "COMPLETED", uid
            else:
                assert status in ("IN PROGRESS", "COMPLETED"), uid
        # The store still takes writes after the crashes.
        from tests.unit.mpps_examples import minimal_create

        await backend.create_mpps("1.2.826.0.1.3680043.10.7.99", minimal_create())
    finally:
        await backend.aclose()
