"""Instructions per proxied 50-result worklist search, on each side of the DIMSE -> DICOMweb hop.

``bench_proxy_dicomweb.py`` measures what a modality sees: p50 of whole C-FINDs, where the
time A adds moves by +-2 ms from run to run on a shared 2-CPU machine. This counts the
machine instructions of the hop's own work instead (valgrind's callgrind, repeats to 0.1 %):

* ``origin``: gateway B in-process (DICOMweb front -> local store, 50 steps), answering the
  Search that gateway A sends for ``bench_proxy_dicomweb.query()``, from one raw HTTP/1.1
  keep-alive client;
* ``floor``: a bare aiohttp app answering the same client with the same 65 KB body;
* ``agent``: gateway A's ``dicomweb`` backend in-process, running that search against a B
  process (not counted) and taking all 50 results: request, JSON parse, shape checks.

``origin - floor`` is B's work per Search beyond aiohttp's; ``agent`` is A's before its
DIMSE front. Both sit on the path to the modality's first response. Needs valgrind.

Run from the repository root:  python bench/bench_proxy_instructions.py [--searches 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_proxy_dicomweb as proxy  # noqa: E402
from callgrind import count_instructions, instrument, require_valgrind  # noqa: E402
from inprocess import serving, serving_app  # noqa: E402

from tests.gateway_process import web_only_config  # noqa: E402

WARM_UP = 10
SEARCH_PATH = "/dicomweb/modality-scheduled-procedure-steps"


def _search_query_string() -> str:
    """The query string gateway A sends for the benchmark's C-FIND (first page)."""
    from gateway.backends.dicomweb.backend import search_params
    from gateway.model.query import WorklistQuery

    params = search_params(WorklistQuery.from_identifier(proxy.query()))
    return "&".join(f"{k}={v}" for k, v in [*params, ("offset", "0"), ("limit", "100")])


async def _searches(port: int, count: int) -> bytes:
    """``count`` Searches on one keep-alive connection; returns the last body."""
    request = (
        f"GET {SEARCH_PATH}?{_search_query_string()} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: application/dicom+json\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b""
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if int(head.split(b" ", 2)[1]) != 200:
            raise SystemExit(f"unexpected answer: {head!r}")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
    writer.close()
    return body


async def _measure(port: int, count: int) -> bytes:
    await _searches(port, WARM_UP)
    instrument(True)
    body = await _searches(port, count)
    instrument(False)
    return body


async def _origin(count: int, workdir: Path) -> None:
    from tests.gateway_process import import_worklist

    config = web_only_config(workdir / "store.sqlite3")
    items = workdir / "worklist.json"
    items.write_text(json.dumps([proxy.worklist_item(n) for n in range(proxy.ITEMS)]))
    import_worklist(config, workdir, items)
    async with serving(config) as port:
        (workdir / "body.json").write_bytes(await _measure(port, count))


async def _floor(count: int, body: bytes) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/dicom+json", charset="utf-8")

    app = web.Application()
    app.router.add_get(SEARCH_PATH, handle)
    async with serving_app(app) as port:
        await _measure(port, count)


async def _agent(count: int, b_web_port: int, workdir: Path) -> None:
    from gateway.backends.factory import open_backend
    from gateway.logging import configure_logging
    from gateway.model.query import WorklistQuery
    from gateway.settings import settings_from_mapping

    settings = settings_from_mapping(
        tomllib.loads(f"""
[store]
path = "{workdir / "unused.sqlite3"}"
[backends.b]
type = "dicomweb"
url = "http://127.0.0.1:{b_web_port}/dicomweb"
""")
    )
    configure_logging(level="info", fmt="json")
    backend = await open_backend("b", settings)
    query = WorklistQuery.from_identifier(proxy.query())

    async def search() -> None:
        received = [item async for item in backend.search_worklist(query)]
        if len(received) != proxy.ITEMS:
            raise SystemExit(f"{len(received)} results, expected {proxy.ITEMS}")

    try:
        for _ in range(WARM_UP):
            await search()
        instrument(True)
        for _ in range(count):
            await search()
        instrument(False)
    finally:
        await backend.aclose()


def _child(kind: str, count: int, workdir: Path) -> None:
    import anyio

    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the gateway's log lines, unread
    if kind == "origin":
        anyio.run(_origin, count, workdir)
    elif kind == "floor":
        asyncio.run(_floor(count, (workdir / "body.json").read_bytes()))
    else:
        (workdir / "b").mkdir()
        gateway_b = proxy.start_b(workdir / "b")
        try:
            anyio.run(_agent, count, gateway_b.web_port, workdir)
        finally:
            gateway_b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=40, help="measured searches per run")
    parser.add_argument("--child", choices=("origin", "floor", "agent"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.searches, args.workdir)
        return
    require_valgrind()
    per = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("origin", "floor", "agent"):  # floor answers with origin's body
            child = ["--child", kind, "--searches", str(args.searches), "--workdir", tmp]
            per[kind] = count_instructions(__file__, child, kind) / args.searches
    print(f"Instructions per {proxy.ITEMS}-result search, {args.searches} searches per run")
    print("| run                                         | M instructions per search |")
    print("|---------------------------------------------|---------------------------|")
    print(f"| origin (B): DICOMweb front -> local store   | {per['origin'] / 1e6:25.2f} |")
    print(f"| floor: bare aiohttp, same body              | {per['floor'] / 1e6:25.2f} |")
    own = per["origin"] - per["floor"]
    print(f"| origin - floor                              | {own / 1e6:25.2f} |")
    print(f"| agent (A): dicomweb backend, 50 results     | {per['agent'] / 1e6:25.2f} |")


if __name__ == "__main__":
    main()
