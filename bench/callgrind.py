"""Counting machine instructions with valgrind's callgrind, for the ``*_instructions`` benches.

Seconds on a shared 2-CPU machine move by +-20 % between runs; instruction counts repeat to
0.1 %. A bench re-runs itself as a child under callgrind with instrumentation off, and the
child switches it on only around the measured work (:func:`instrument`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys


def require_valgrind() -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")


def instrument(on: bool) -> None:
    """Switch callgrind's counting on or off for this process (a no-op without callgrind)."""
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
        stdout=subprocess.DEVNULL,
        check=False,
    )


def count_instructions(script: str, args: list[str], label: str) -> int:
    """Instructions counted while ``python script *args`` ran under callgrind."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        script,
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"Collected\s*:\s*([\d,]+)", done.stderr) or re.search(
        r"I\s+refs:\s*([\d,]+)", done.stderr
    )
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{label}: callgrind run failed\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))
