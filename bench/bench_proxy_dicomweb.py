"""Benchmark proxy direction DIMSE -> DICOMweb: a 50-result C-FIND through A->B vs B directly.

Starts two real gateway processes on loopback: B (local store with 50 scheduled steps,
DIMSE and DICOMweb fronts) and A (DIMSE front -> ``dicomweb`` backend -> B's DICOMweb
front). One pynetdicom SCU keeps one association to each and sends the same worklist query
(universal matching, 50 results with the usual modality keys) alternately to B and to A,
200 times each after a warm-up, measuring each query from request to final status.

Prints per-query p50/p99 for both paths, their ratio and the time A adds at p50
(target: ratio <= 1.3 and <= 5 ms added per hop at p50), and the median of the per-pair
differences with its 95 % interval: how far one run's figure can be trusted.

Then where the CPU went, which the host's noise moves less than wall time: each process's
CPU time per query (SCU, A, B) from the kernel's run time of each of its threads
(``/proc/PID/task/*/schedstat``, in ns, time taken by the hypervisor not counted), the same
over an idle stretch as long as a query (what the processes burn waiting: pynetdicom
polls each association's sockets and queues every millisecond), and the host's steal time
during the run (Linux only: elsewhere that part is skipped).

Run from the repository root:  python bench/bench_proxy_dicomweb.py [--queries 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE, _config  # noqa: E402
from pynetdicom.association import Association  # noqa: E402
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]  # noqa: E402

from gateway.dicom_scu import guard_responses  # noqa: E402
from tests.gateway_process import GatewayProcess, import_worklist, start_gateway  # noqa: E402

ITEMS = 50
WARMUP = 20
IDLE_SAMPLES = 30
PROC = Path("/proc")  # where the kernel tells threads' run times and the host's steal (Linux)


def worklist_item(n: int) -> dict[str, Any]:
    """One scheduled procedure step, shaped like DCMTK's example worklist entries."""

    def v(vr: str, *values: Any) -> dict[str, Any]:
        return {"vr": vr, "Value": list(values)}

    return {
        "00080005": v("CS", "ISO_IR 192"),
        "00080050": v("SH", f"ACC{n:05d}"),
        "00100010": v("PN", {"Alphabetic": f"BENCH^PATIENT^{n}"}),
        "00100020": v("LO", f"PID{n:05d}"),
        "00100030": v("DA", "19700101"),
        "00100040": v("CS", "O"),
        "0020000D": v("UI", f"1.2.826.0.1.3680043.8.498.9.{n + 1}"),
        "00321032": v("PN", {"Alphabetic": "SMITH"}),
        "00321060": v("LO", f"EXAM {n}"),
        "00400100": v(
            "SQ",
            {
                "00080060": v("CS", "CT"),
                "00400001": v("AE", "CT01"),
                "00400002": v("DA", "20250101"),
                "00400003": v("TM", f"{8 + n // 10:02d}{n % 60:02d}00"),
                "00400006": v("PN", {"Alphabetic": "JOHNSON"}),
                "00400007": v("LO", f"STEP {n}"),
                "00400009": v("SH", f"SPS{n:05d}"),
                "00400010": v("SH", "STATION1"),
                "00400011": v("SH", "ROOM 1"),
            },
        ),
        "00401001": v("SH", f"RP{n:05d}"),
        "00401003": v("SH", "LOW"),
    }


def query() -> Dataset:
    """What a CT modality typically asks for: patient, order and step keys."""
    ds = Dataset()
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
    ):
        setattr(ds, keyword, "")
    step = Dataset()
    step.Modality = "CT"
    for keyword in (
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepDescription",
        "ScheduledProcedureStepID",
    ):
        setattr(step, keyword, "")
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def start_b(workdir: Path) -> GatewayProcess:
    config = f"""
log_format = "json"
[dimse]
host = "127.0.0.1"
port = 0
ae_title = "GW_B"
[web]
host = "127.0.0.1"
port = 0
[store]
path = "{workdir / "store.sqlite3"}"
"""
    items = workdir / "worklist.json"
    items.write_text(json.dumps([worklist_item(n) for n in range(ITEMS)]))
    import_worklist(config, workdir, items)
    return start_gateway(config, workdir)


def start_a(workdir: Path, b_web_port: int) -> GatewayProcess:
    config = f"""
log_format = "json"
[dimse]
host = "127.0.0.1"
port = 0
ae_title = "GW_A"
backend = "b"
[web]
enabled = false
[store]
path = "{workdir / "unused.sqlite3"}"
[backends.b]
type = "dicomweb"
url = "http://127.0.0.1:{b_web_port}/dicomweb"
"""
    return start_gateway(config, workdir)


def associate(port: int, called: str) -> Association:
    # The SCU renders every response identifier for its log by default (~0.5 ms each):
    # on a 2-core machine that CPU would be taken from the gateways being measured.
    _config.LOG_RESPONSE_IDENTIFIERS = False
    ae = AE(ae_title="BENCH_SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = guard_responses(ae.associate("127.0.0.1", port, ae_title=called))
    if not assoc.is_established:
        raise SystemExit(f"cannot associate with {called} on port {port}")
    return assoc


def timed_find(assoc: Association, identifier: Dataset) -> float:
    """Seconds from C-FIND-RQ to the final response; checks the 50 results arrived."""
    started = time.perf_counter()
    count = 0
    final = None
    for status, _ in assoc.send_c_find(identifier, ModalityWorklistInformationFind):
        if status.Status == 0xFF00:
            count += 1
        else:
            final = int(status.Status)
    elapsed = time.perf_counter() - started
    if final != 0 or count != ITEMS:
        raise SystemExit(f"unexpected answer: status {final}, {count} results")
    return elapsed


class CpuMeter:
    """CPU time per process over an interval, read from every live thread's schedstat."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def now(self) -> dict[str, int]:
        return {name: _process_cpu_ns(pid) for name, pid in self.pids.items()}

    def since(self, before: dict[str, int]) -> dict[str, float]:
        """Milliseconds of CPU each process used since ``before``."""
        after = self.now()
        return {name: (after[name] - before[name]) / 1e6 for name in self.pids}


def _process_cpu_ns(pid: int) -> int:
    total = 0
    for task in (PROC / str(pid) / "task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # the thread ended since the listing
            total += int((task / "schedstat").read_text().split()[0])
    return total


def steal_seconds() -> float:
    """The host's steal time so far, both CPUs (the 8th value of /proc/stat's cpu line)."""
    if not PROC.is_dir():
        return 0.0
    values = (PROC / "stat").read_text().split("\n", 1)[0].split()
    return int(values[8]) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200, help="queries per path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "b").mkdir()
        (root / "a").mkdir()
        gateway_b = start_b(root / "b")
        gateway_a = start_a(root / "a", gateway_b.web_port)
        try:
            direct = associate(gateway_b.dimse_port, "GW_B")
            proxied = associate(gateway_a.dimse_port, "GW_A")
            identifier = query()
            for _ in range(WARMUP):
                timed_find(direct, identifier)
                timed_find(proxied, identifier)
            paths = {"B direct": direct, "A -> B": proxied}
            samples: dict[str, list[float]] = {name: [] for name in paths}
            cpu: dict[str, list[dict[str, float]]] = {name: [] for name in [*paths, "idle"]}
            pids = {"SCU": os.getpid(), "A": gateway_a.proc.pid, "B": gateway_b.proc.pid}
            meter = CpuMeter(pids if PROC.is_dir() else {})
            steal_before = steal_seconds()
            for _ in range(args.queries):  # alternate, so drift hits both paths alike
                for name, assoc in paths.items():
                    before = meter.now()
                    samples[name].append(timed_find(assoc, identifier))
                    cpu[name].append(meter.since(before))
            steal = steal_seconds() - steal_before
            idle_s = percentile(samples["B direct"], 50)
            for _ in range(IDLE_SAMPLES if meter.pids else 0):
                before = meter.now()
                time.sleep(idle_s)
                cpu["idle"].append(meter.since(before))
            direct.release()
            proxied.release()
        finally:
            gateway_a.stop()
            gateway_b.stop()
    report(samples, args.queries)
    report_cpu(cpu, steal)
    return 0


def report(samples: dict[str, list[float]], queries: int) -> None:
    ms = {name: [s * 1000 for s in values] for name, values in samples.items()}
    print(f"\n{ITEMS}-result MWL C-FIND, {queries} queries per path, persistent association\n")
    print(f"| {'path':<10} | {'p50 ms':>8} | {'p99 ms':>8} | {'mean ms':>8} |")
    print(f"|{'-' * 12}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for name, values in ms.items():
        print(
            f"| {name:<10} | {percentile(values, 50):8.2f} | {percentile(values, 99):8.2f}"
            f" | {statistics.fmean(values):8.2f} |"
        )
    b50, a50 = percentile(ms["B direct"], 50), percentile(ms["A -> B"], 50)
    b99, a99 = percentile(ms["B direct"], 99), percentile(ms["A -> B"], 99)
    print(f"\nratio A->B / B at p50: {a50 / b50:.2f}   at p99: {a99 / b99:.2f}")
    print(f"added by the hop at p50: {a50 - b50:.2f} ms   (target: ratio <= 1.3, <= 5 ms)")
    low, mid, high = paired_shift(ms["B direct"], ms["A -> B"])
    print(
        f"added by the hop, median of per-pair differences: {mid:.2f} ms"
        f" (95 % confidence {low:.2f} to {high:.2f})"
    )


def report_cpu(cpu: dict[str, list[dict[str, float]]], steal: float) -> None:
    if not cpu["idle"]:
        print("\nCPU per process: not measured (no /proc on this system)")
        return
    processes = list(cpu["idle"][0])
    print("\nCPU per query by process, median ms (idle: no query, as long as B direct's p50)\n")
    print("| path       | " + " | ".join(f"{name:>6}" for name in processes) + " |")
    print("|------------|" + "|".join("-" * 8 for _ in processes) + "|")
    for path, rows in cpu.items():
        medians = [statistics.median(row[name] for row in rows) for name in processes]
        print(f"| {path:<10} | " + " | ".join(f"{value:6.2f}" for value in medians) + " |")
    gateways = {path: [row["A"] + row["B"] for row in cpu[path]] for path in ("B direct", "A -> B")}
    low, mid, high = paired_shift(gateways["B direct"], gateways["A -> B"])
    print(
        f"\nCPU the hop adds in the gateways (A + B), median of per-pair differences:"
        f" {mid:.2f} ms (95 % confidence {low:.2f} to {high:.2f})"
    )
    print(f"host steal during the timed queries: {steal:.1f} s over both CPUs")


def paired_shift(direct: list[float], proxied: list[float]) -> tuple[float, float, float]:
    """Median of ``proxied[i] - direct[i]`` with a distribution-free 95 % interval.

    The two queries of a pair run back to back, so slow drift in the machine's load cancels
    out of their difference. Single queries still vary by tens of ms on a shared 2-CPU
    machine: the interval (about +-3.5 ms over 200 pairs there) says how much one run shows.
    """
    differences = sorted(a - b for a, b in zip(proxied, direct, strict=True))
    n = len(differences)
    half_width = 1.96 * math.sqrt(n) / 2  # order statistics bounding the median
    low = max(0, math.floor(n / 2 - half_width))
    high = min(n - 1, math.ceil(n / 2 + half_width) - 1)
    return differences[low], statistics.median(differences), differences[high]


if __name__ == "__main__":
    raise SystemExit(main())
