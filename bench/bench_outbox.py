"""Benchmark MPPS store-and-forward: create+set pairs/s accepted while the upstream is down,
then while the backlog drains.

Starts one real gateway process (``--front web``: DICOMweb front, the default; ``--front
dimse``: DIMSE front; either -> ``dicomweb`` backend, store-and-forward on) in front of a
fake DICOMweb origin on loopback, in this process. Phase 1: the origin answers 503 (down);
``--scus`` concurrent clients (aiohttp, or pynetdicom SCUs) send ``--pairs`` Create + Update
pairs in total, each acknowledged only after the outbox committed it. Phase 2: the origin
comes back; the same clients send as many pairs again while the delivery worker drains the
backlog. Prints accepted pairs/s per phase, per-pair p50/p99, the gateway's CPU time per
pair, how many requests reached the origin, and the drain rate (target: >= 300 pairs/s
accepted while the upstream is down).

Run from the repository root:  python bench/bench_outbox.py [--pairs 2000] [--scus 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import anyio  # noqa: E402
from aiohttp import web  # noqa: E402
from anyio.from_thread import BlockingPortal, start_blocking_portal  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]  # noqa: E402

from gateway.dicom_scu import guard_responses  # noqa: E402
from gateway.model.dicom_json import json_to_dataset  # noqa: E402
from tests.gateway_process import start_gateway  # noqa: E402
from tests.integration.test_outbox_process import GW_AE, RecordingOrigin, config  # noqa: E402
from tests.unit.mpps_examples import minimal_create, series_update  # noqa: E402


class CountingOrigin(RecordingOrigin):
    """The recording origin, also counting every MPPS request it received (503s included)."""

    def __init__(self) -> None:
        super().__init__()
        self.received_mpps = 0

    async def _mpps(self, request: web.Request) -> web.StreamResponse:
        self.received_mpps += 1
        return await super()._mpps(request)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send_pairs(port: int, uids: list[str], scus: int) -> tuple[float, list[float]]:
    """Send create+set for each UID from ``scus`` associations; (seconds, per-pair times)."""
    create, update = json_to_dataset(minimal_create()), json_to_dataset(series_update())
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def modality(mine: list[str]) -> None:
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = guard_responses(ae.associate("127.0.0.1", port, ae_title=GW_AE))
        if not assoc.is_established:
            with lock:
                errors.append("association not established")
            return
        try:
            for uid in mine:
                start = time.perf_counter()
                a = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)[0]
                b = assoc.send_n_set(update, ModalityPerformedProcedureStep, uid)[0]
                elapsed = time.perf_counter() - start
                # An empty status: no answer within the DIMSE timeout, or the association
                # was lost.
                statuses = (a.get("Status"), b.get("Status"))
                with lock:
                    times.append(elapsed)
                    if statuses != (0, 0):
                        shown = " ".join("none" if s is None else f"{s:04X}" for s in statuses)
                        errors.append(f"{uid}: {shown}")
                if not assoc.is_established:
                    break
        finally:
            assoc.release()

    threads = [threading.Thread(target=modality, args=(uids[i::scus],)) for i in range(scus)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} pairs failed, e.g. {errors[0]}")
    return elapsed, times


def send_pairs_web(url: str, uids: list[str], clients: int) -> tuple[float, list[float]]:
    """The same through the DICOMweb front: ``clients`` concurrent HTTP clients."""
    create = json.dumps([minimal_create()]).encode()
    update = json.dumps([series_update()]).encode()
    headers = {"Content-Type": "application/dicom+json"}
    times: list[float] = []
    errors: list[str] = []

    async def run() -> float:
        queue = list(reversed(uids))
        async with aiohttp.ClientSession(headers=headers) as session:

            async def client() -> None:
                while queue:
                    uid = queue.pop()
                    start = time.perf_counter()
                    async with session.post(f"{url}/{uid}", data=create) as a:
                        await a.read()
                    async with session.post(f"{url}/{uid}?update", data=update) as b:
                        await b.read()
                    times.append(time.perf_counter() - start)
                    if a.status >= 300 or b.status >= 300:
                        errors.append(f"{uid}: {a.status} {b.status}")

            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(clients):
                    tg.start_soon(client)
            return time.perf_counter() - start

    elapsed = anyio.run(run)
    if errors:
        raise SystemExit(f"{len(errors)} pairs failed, e.g. {errors[0]}")
    return elapsed, times


def report_problems(lines: list[str]) -> None:
    """Count the gateway's warning and error events (and non-JSON lines) on stderr."""
    counts: dict[str, int] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            key = f"(text) {line.strip()[:120]}"
        else:
            if event.get("level") not in ("warning", "error", "critical"):
                continue
            key = f"{event.get('level')}: {event.get('event')}"
        counts[key] = counts.get(key, 0) + 1
    for key, count in sorted(counts.items(), key=lambda kv: -kv[1])[:15]:
        print(f"gateway log: {count:6} x {key}", file=sys.stderr)


def performed(portal: BlockingPortal, origin: RecordingOrigin) -> int:
    async def count() -> int:
        return len(origin.performed)

    return portal.call(count)


def received(portal: BlockingPortal, origin: CountingOrigin) -> int:
    async def count() -> int:
        return origin.received_mpps

    return portal.call(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000, help="pairs per phase")
    parser.add_argument("--scus", type=int, default=8, help="concurrent modalities")
    parser.add_argument("--front", choices=("dimse", "web"), default="web")
    parser.add_argument("--gateway-log", type=Path, help="write the gateway's log lines here")
    args = parser.parse_args()

    async def started() -> CountingOrigin:
        origin = CountingOrigin()
        await origin.start()
        origin.mode = "down"
        return origin

    async def come_back(origin: CountingOrigin) -> None:
        origin.mode = "up"

    with tempfile.TemporaryDirectory() as tmp, start_blocking_portal() as portal:
        workdir = Path(tmp)
        origin = portal.call(started)
        text = config(origin.url, workdir)
        if args.front == "web":
            text = text.replace("[dimse]\n", "[dimse]\nenabled = false\n").replace(
                "[web]\nenabled = false\n", '[web]\nhost = "127.0.0.1"\nport = 0\nbackend = "up"\n'
            )
        gateway = start_gateway(text, workdir)
        mpps_url = f"http://127.0.0.1:{gateway.ports.get('web')}/dicomweb/modality-performed-procedure-steps"

        def send(uids: list[str]) -> tuple[float, list[float]]:
            if args.front == "web":
                return send_pairs_web(mpps_url, uids, args.scus)
            return send_pairs(gateway.dimse_port, uids, args.scus)

        try:
            root = "1.2.826.0.1.3680043.10.99"
            down_uids = [f"{root}.1.{n}" for n in range(args.pairs)]
            up_uids = [f"{root}.2.{n}" for n in range(args.pairs)]
            pid = gateway.proc.pid
            cpu_before, own_before = cpu_s(pid), time.process_time()
            down_s, down_times = send(down_uids)
            down_cpu = cpu_s(pid) - cpu_before
            own_cpu = time.process_time() - own_before
            down_received = received(portal, origin)
            portal.call(come_back, origin)
            drain_start = time.perf_counter()
            cpu_before = cpu_s(pid)
            up_s, up_times = send(up_uids)
            up_cpu = cpu_s(pid) - cpu_before
            total = 4 * args.pairs
            deadline = time.monotonic() + 300
            while performed(portal, origin) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            drain_s = time.perf_counter() - drain_start
            delivered = performed(portal, origin)
        finally:
            gateway.stop()
            report_problems(gateway.lines)
            if args.gateway_log:
                args.gateway_log.write_text("".join(gateway.lines))
            portal.call(origin.close)

    def row(name: str, seconds: float, times: list[float], cpu: float) -> str:
        ordered = sorted(times)
        p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
        return (
            f"| {name:28} | {len(times):6} | {len(times) / seconds:8.0f} |"
            f" {statistics.median(times) * 1000:7.1f} | {p99:7.1f} |"
            f" {cpu / len(times) * 1000:9.2f} |"
        )

    print(
        f"MPPS store-and-forward, {args.scus} concurrent {args.front} clients"
        f" -> gateway -> DICOMweb origin (gw CPU: gateway CPU time per pair)"
    )
    print("| phase                        |  pairs | pairs/s  | p50 ms  | p99 ms  | gw CPU ms |")
    print("|------------------------------|--------|----------|---------|---------|-----------|")
    print(row("accepted, upstream down", down_s, down_times, down_cpu))
    print(row("accepted, while draining", up_s, up_times, up_cpu))
    print(
        f"while down: {down_received} requests reached the origin; this process (clients and"
        f" origin) used {own_cpu / len(down_times) * 1000:.2f} ms CPU per pair"
    )
    print(
        f"drain: {delivered}/{total} messages delivered in {drain_s:.1f} s"
        f" ({delivered / drain_s / 2:.0f} pairs/s)"
    )


if __name__ == "__main__":
    main()
