"""Run ``modality-gateway serve`` as a real child process and learn its bound ports.

Configurations use port 0; the gateway logs JSON lines "DIMSE front listening" and
"DICOMweb front listening" with the bound ``port``, which is how readiness is detected
(no sleeps).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def checkout_env() -> dict[str, str]:
    """The environment for a child ``python -m gateway``: this checkout's code first.

    Without it a child started outside the checkout imports whatever copy of the package
    is installed, which on a developer machine may be an older, non-editable one.
    """
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


READY_EVENTS = {"DIMSE front listening": "dimse", "DICOMweb front listening": "web"}


@dataclass
class GatewayProcess:
    """A running gateway child process."""

    proc: subprocess.Popen[str]
    ports: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def dimse_port(self) -> int:
        return self.ports["dimse"]

    @property
    def web_port(self) -> int:
        return self.ports["web"]

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def web_only_config(store: Path | str, *, web_backend: str | None = None, extra: str = "") -> str:
    """TOML for a gateway with only its DICOMweb front, on a free loopback port.

    ``web_backend`` names the backend the front uses (default: the local store at
    ``store``); ``extra`` is appended (the ``[backends.*]`` tables).
    """
    backend_line = f'backend = "{web_backend}"\n' if web_backend else ""
    return f"""
log_format = "json"
[dimse]
enabled = false
[web]
host = "127.0.0.1"
port = 0
{backend_line}[store]
path = "{store}"
{extra}"""


def _pump(stream: IO[str], sink: queue.Queue[str | None]) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


def start_gateway(
    config: str, workdir: Path, *, args: tuple[str, ...] = (), timeout: float = 30.0
) -> GatewayProcess:
    """Write ``config`` to ``workdir/gateway.toml``, start ``serve`` and wait until listening."""
    path = workdir / "gateway.toml"
    path.write_text(config)
    env = checkout_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(path),
            "--log-format",
            "json",
            *args,
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stderr, lines), daemon=True).start()
    gateway = GatewayProcess(proc)
    expected = _expected_fronts(config)
    while set(gateway.ports) != expected:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            gateway.kill()
            raise AssertionError("gateway did not start:\n" + "".join(gateway.lines)) from None
        if line is None:
            raise AssertionError("gateway exited:\n" + "".join(gateway.lines))
        gateway.lines.append(line)
        try:
            event = json.loads(line)
        except ValueError:
            continue
        front = READY_EVENTS.get(event.get("event", ""))
        if front:
            gateway.ports[front] = int(event["port"])
    # Keep draining stderr so the child never blocks on a full pipe.
    threading.Thread(target=_drain, args=(lines, gateway.lines), daemon=True).start()
    return gateway


def _drain(lines: queue.Queue[str | None], sink: list[str]) -> None:
    while (line := lines.get()) is not None:
        sink.append(line)


def _expected_fronts(config: str) -> set[str]:
    import tomllib

    data = tomllib.loads(config)
    fronts = set()
    if data.get("dimse", {}).get("enabled", True):
        fronts.add("dimse")
    if data.get("web", {}).get("enabled", True):
        fronts.add("web")
    return fronts


def import_worklist(config: str, workdir: Path, *paths: Path) -> None:
    """Load worklist files into the store of ``config`` with the operator CLI, as a site would.

    Writes ``config`` to ``workdir/gateway.toml`` (the file :func:`start_gateway` uses too).
    """
    path = workdir / "gateway.toml"
    path.write_text(config)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(path),
            "worklist",
            "import",
            *map(str, paths),
        ],
        cwd=workdir,
        env=checkout_env(),
        check=True,
        capture_output=True,
    )
