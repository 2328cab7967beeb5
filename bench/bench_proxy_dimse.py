"""Benchmark proxy direction DICOMweb -> DIMSE: Search through the gateway vs direct C-FIND.

Starts DCMTK's wlmscpfs serving DCMTK's example worklist (10 items) and a gateway process
whose DICOMweb front uses the ``dimse`` backend towards it (8-association pool). In the same
run, alternately, it measures one query three ways:

* ``findscu``: ``/usr/bin/findscu -W`` as a process (associate, C-FIND, release, exit);
* ``direct SCU``: the findscu-equivalent in this process with pynetdicom (a new association
  per query, like findscu, without the process start);
* ``gateway``: HTTP GET Search on one keep-alive connection (the gateway reuses associations).

Then 20 concurrent HTTP clients run the same Search against the 8-association pool and the
failures are counted (target: 0).

Run from the repository root:  python bench/bench_proxy_dimse.py [--queries 100]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydicom import dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE, _config  # noqa: E402
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]  # noqa: E402

from gateway.model.query import WorklistQuery  # noqa: E402
from gateway.model.status import DimseStatus  # noqa: E402
from tests.fakes.mpps_scp import WLMSCPFS_MATCHING_KEYS, Wlmscpfs  # noqa: E402
from tests.gateway_process import start_gateway  # noqa: E402

DCMTK = Path("/usr/bin")
EXAMPLES = Path("/usr/share/doc/dcmtk/examples")
T = TypeVar("T")
CLIENTS = 20
POOL = 8


def convert(dump: Path, target: Path) -> Path:
    subprocess.run([str(DCMTK / "dump2dcm"), "-q", str(dump), str(target)], check=True)
    return target


def prepare(workdir: Path) -> tuple[Path, dict[str, Path]]:
    """wlmscpfs data directory and the query files."""
    data = workdir / "wlistdb"
    (data / "OFFIS").mkdir(parents=True)
    (data / "OFFIS" / "lockfile").touch()
    for dump in sorted((EXAMPLES / "wlistdb" / "OFFIS").glob("*.dump")):
        convert(dump, data / "OFFIS" / f"{dump.stem}.wl")
    everything = convert(EXAMPLES / "wlistqry" / "wlistqry11.dump", workdir / "all.dcm")
    ct = dcmread(everything)
    ct.ScheduledProcedureStepSequence[0].Modality = "CT"
    ct.save_as(workdir / "ct.dcm", enforce_file_format=True)
    return data, {"all 10 items": everything, "modality CT (4 items)": workdir / "ct.dcm"}


def gateway_config(port: int) -> str:
    keys = ", ".join(json.dumps(k) for k in WLMSCPFS_MATCHING_KEYS)
    return f"""
log_level = "info"  # the readiness line is an info record
[dimse]
enabled = false
[web]
host = "127.0.0.1"
port = 0
backend = "ris"
max_search_limit = 1000
[store]
path = "gateway.sqlite3"
[backends.ris]
type = "dimse"
host = "127.0.0.1"
port = {port}
called_ae_title = "OFFIS"
calling_ae_title = "BENCH_GW"
timeout_s = 10
max_associations = {POOL}
matching_keys = [{keys}]
"""


class Web:
    """One keep-alive HTTP connection to the gateway."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def search(self, params: list[tuple[str, str]]) -> tuple[int, int]:
        path = "/dicomweb/modality-scheduled-procedure-steps?" + urlencode(params)
        self.conn.request("GET", path, headers={"Accept": "application/dicom+json"})
        response = self.conn.getresponse()
        body = response.read()
        count = len(json.loads(body)) if response.status == 200 else 0
        return response.status, count

    def close(self) -> None:
        self.conn.close()


def direct_scu(port: int, identifier: Dataset) -> int:
    """findscu's work in-process: associate, C-FIND, release; returns the match count."""
    ae = AE(ae_title="BENCH_SCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="OFFIS")
    assert assoc.is_established
    matches = sum(
        1
        for status, ident in assoc.send_c_find(identifier, ModalityWorklistInformationFind)
        if ident is not None and status.Status in (DimseStatus.PENDING, DimseStatus.PENDING_WARNING)
    )
    assoc.release()
    return matches


def findscu(port: int, query: Path) -> int:
    out = subprocess.run(
        [str(DCMTK / "findscu"), "-W", "-v", "-aec", "OFFIS", "127.0.0.1", str(port), str(query)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stderr.count("Find Response:")


def timed(func: Callable[[], T]) -> tuple[float, T]:
    """Milliseconds ``func`` took, and its result."""
    started = time.perf_counter()
    result = func()
    return (time.perf_counter() - started) * 1000, result


def stats(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99, statistics.fmean(ordered)


def concurrency(port: int, params: list[tuple[str, str]], per_client: int) -> dict[str, float]:
    """CLIENTS threads, each with its own keep-alive connection, ``per_client`` Searches."""
    failures: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def client() -> None:
        web = Web(port)
        barrier.wait()
        try:
            for _ in range(per_client):
                try:
                    ms, (status, _) = timed(lambda w=web: w.search(params))  # type: ignore[misc]
                except OSError as exc:
                    with lock:
                        failures.append(type(exc).__name__)
                    web.close()
                    web = Web(port)
                    continue
                with lock:
                    latencies.append(ms)
                    if status != 200:
                        failures.append(str(status))
        finally:
            web.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    p50, p99, _ = stats(latencies)
    return {
        "requests": CLIENTS * per_client,
        "failures": len(failures),
        "seconds": elapsed,
        "rps": CLIENTS * per_client / elapsed,
        "p50": p50,
        "p99": p99,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100, help="queries per path and query")
    parser.add_argument("--per-client", type=int, default=25, help="Searches per HTTP client")
    args = parser.parse_args()
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_REQUEST_IDENTIFIERS = False
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data, queries = prepare(workdir)
        ris = Wlmscpfs(DCMTK / "wlmscpfs", data, workdir / "wlmscpfs.log").start()
        (workdir / "gw").mkdir()
        gateway = start_gateway(gateway_config(ris.port), workdir / "gw")
        web = Web(gateway.web_port)
        rows: list[tuple[str, str, tuple[float, float, float], int]] = []
        try:
            for name, query_file in queries.items():
                identifier = dcmread(query_file)
                params = WorklistQuery.from_identifier(identifier).to_query_params()
                paths: dict[str, Callable[[], int]] = {
                    "findscu": lambda q=query_file: findscu(ris.port, q),  # type: ignore[misc]
                    "direct SCU": lambda i=identifier: direct_scu(ris.port, i),  # type: ignore[misc]
                    "gateway": lambda p=params: web.search(p)[1],  # type: ignore[misc]
                }
                for func in paths.values():  # warm-up, and check all agree on the count
                    func()
                samples: dict[str, list[float]] = {path: [] for path in paths}
                counts: dict[str, set[int]] = {path: set() for path in paths}
                for _ in range(args.queries):
                    for path, func in paths.items():
                        ms, count = timed(func)
                        samples[path].append(ms)
                        counts[path].add(count)
                for path in paths:
                    [count] = counts[path]
                    rows.append((name, path, stats(samples[path]), count))
            everything = WorklistQuery.from_identifier(dcmread(queries["all 10 items"]))
            load = concurrency(gateway.web_port, everything.to_query_params(), args.per_client)
        finally:
            web.close()
            gateway.stop()
            ris.stop()

    print(f"\ncpus: {os.cpu_count()}   load average: {os.getloadavg()[0]:.2f}")
    print(f"Search via gateway (dimse backend, pool {POOL}) vs direct C-FIND to wlmscpfs")
    print(f"{args.queries} queries per path, interleaved in the same run\n")
    print(f"| {'query':<22} | {'path':<10} | {'results':>7} | {'p50 ms':>7} | {'p99 ms':>7} "
          f"| {'mean ms':>7} |")  # fmt: skip
    print(f"|{'-' * 24}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, path, (p50, p99, mean), count in rows:
        print(
            f"| {name:<22} | {path:<10} | {count:>7} | {p50:>7.1f} | {p99:>7.1f} | {mean:>7.1f} |"
        )
    print(
        f"\n{CLIENTS} concurrent HTTP clients x {args.per_client} Searches (10 results each), "
        f"{POOL}-association pool:"
    )
    print(
        f"requests {load['requests']:.0f}   failures {load['failures']:.0f}   "
        f"{load['rps']:.1f} req/s   p50 {load['p50']:.1f} ms   p99 {load['p99']:.1f} ms   "
        f"({load['seconds']:.1f} s)"
    )
    return 0 if load["failures"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
