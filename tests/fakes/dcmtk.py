"""DCMTK's wlmscpfs as a real upstream RIS for tests and benchmarks, plus findscu -W."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

WLMSCPFS_MATCHING_KEYS = (
    # The keys wlmscpfs matches on (wlmscpfs(1), "DICOM Conformance"); others it ignores.
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "RequestingPhysician",
    "AdmissionID",
    "ScheduledProcedureStepSequence.Modality",
    "ScheduledProcedureStepSequence.ScheduledStationAETitle",
    "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepSequence.ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence.ScheduledPerformingPhysicianName",
    "RequestedProcedureID",
    "RequestedProcedurePriority",
)


def free_port() -> int:
    """A TCP port that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Return once something accepts TCP connections on ``port`` (readiness, not a delay)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port}") from None
            time.sleep(0.02)  # poll back-off: a refused connect returns at once


class Wlmscpfs:
    """``/usr/bin/wlmscpfs`` serving ``data_dir`` (``<dir>/<AE title>/*.wl``), logging to a file."""

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        log_path: Path,
        *,
        args: tuple[str, ...] = (),
        port: int = 0,
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = args
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> Wlmscpfs:
        self.port = self.port or free_port()
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [str(self.binary), "-v", *self.args, "-dfp", str(self.data_dir), str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,  # its own process group: stop() ends forked children too
        )
        wait_listening(self.port, self._proc)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> Wlmscpfs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def findscu(
    binary: Path, port: int, query_file: Path, workdir: Path, *, called_ae: str = "OFFIS"
) -> list[Dataset]:
    """``findscu -W -X`` straight against the RIS: every response identifier, in order."""
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(binary), "-W", "-X", "-aec", called_ae, "127.0.0.1", str(port), str(query_file)],
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return [dcmread(path) for path in sorted(workdir.glob("rsp*.dcm"))]


def write_big_worklist(template: Path, target: Path, count: int) -> None:
    """``count`` copies of one worklist file, each with its own Patient ID / Accession."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "lockfile").touch()
    ds = dcmread(template)
    ds.PatientID = "PID000000"
    ds.AccessionNumber = "ACC000000"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    for i in range(count):
        body = data.replace(b"PID000000", f"PID{i:06d}".encode()).replace(
            b"ACC000000", f"ACC{i:06d}".encode()
        )
        (target / f"item{i:06d}.wl").write_bytes(body)
