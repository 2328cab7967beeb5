"""Instructions per MPPS create+set pair through the DICOMweb front into the outbox.

``bench_outbox.py`` measures pairs/s, which on a shared 2-CPU machine moves by +-20 % from
run to run. This counts machine instructions instead (valgrind's callgrind), which repeat
to 0.1 %, so a change of a few per cent in the gateway's own work can be seen at all.

Each measurement runs in-process under callgrind with instrumentation switched on only for
the measured pairs: 8 raw HTTP/1.1 keep-alive clients send Create + Update pairs to

* ``floor``: a bare aiohttp app that reads the body and answers 201/200, and
* ``gateway``: the real gateway (DICOMweb front -> ``dicomweb`` backend with
  store-and-forward; the upstream port refuses connections, so every write is queued in
  the outbox, as in ``bench_outbox.py`` while the upstream is down).

The clients are the same in both, so ``gateway - floor`` is the gateway's own work per
pair beyond aiohttp's, and ``gateway / floor`` is the ratio to quote. Needs valgrind.

Run from the repository root:  python bench/bench_outbox_instructions.py [--pairs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from callgrind import count_instructions, instrument, require_valgrind  # noqa: E402
from inprocess import serving, serving_app  # noqa: E402

from tests.gateway_process import web_only_config  # noqa: E402

MPPS_PATH = "/dicomweb/modality-performed-procedure-steps"
CLIENTS = 8
WARM_UP = 10
UID_ROOT = "1.2.826.0.1.3680043.10.99"


def _request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/dicom+json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> None:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    if status >= 300:
        raise SystemExit(f"HTTP {status}: {head!r}")


async def _send_pairs(port: int, uids: list[str]) -> None:
    from tests.unit.mpps_examples import minimal_create, series_update

    create = json.dumps([minimal_create()]).encode()
    update = json.dumps([series_update()]).encode()
    queue = list(reversed(uids))

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            path = f"{MPPS_PATH}/{queue.pop()}"
            await _exchange(reader, writer, _request(path, create))
            await _exchange(reader, writer, _request(f"{path}?update", update))
        writer.close()

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def _measure(port: int, pairs: int) -> None:
    await _send_pairs(port, [f"{UID_ROOT}.9.{n}" for n in range(WARM_UP)])
    instrument(True)
    await _send_pairs(port, [f"{UID_ROOT}.1.{n}" for n in range(pairs)])
    instrument(False)


async def _floor(pairs: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200 if "update" in request.query else 201)

    app = web.Application()
    app.router.add_post(MPPS_PATH + "/{uid}", handle)
    async with serving_app(app) as port:
        await _measure(port, pairs)


async def _gateway(pairs: int, workdir: str) -> None:
    upstream = """
[backends.up]
type = "dicomweb"
url = "http://127.0.0.1:9/dicomweb"
retry_initial_s = 60
retry_max_s = 60
"""
    config = web_only_config(Path(workdir) / "store.sqlite3", web_backend="up", extra=upstream)
    async with serving(config) as port:
        await _measure(port, pairs)


def _child(kind: str, pairs: int) -> None:
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the gateway's log lines, unread
    if kind == "floor":
        asyncio.run(_floor(pairs))
        return
    import anyio

    with tempfile.TemporaryDirectory() as workdir:
        anyio.run(_gateway, pairs, workdir)


def _instructions(kind: str, pairs: int) -> float:
    """Instructions per pair of one child run under callgrind."""
    args = ["--child", kind, "--pairs", str(pairs)]
    return count_instructions(__file__, args, kind) / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100, help="measured pairs per run")
    parser.add_argument("--child", choices=("floor", "gateway"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.pairs)
        return
    require_valgrind()
    floor = _instructions("floor", args.pairs)
    gateway = _instructions("gateway", args.pairs)
    print(f"Instructions per create+set pair, {CLIENTS} raw HTTP clients, {args.pairs} pairs")
    print("| run                                    | M instructions per pair |")
    print("|----------------------------------------|-------------------------|")
    print(f"| floor: bare aiohttp app                | {floor / 1e6:23.2f} |")
    print(f"| gateway: web front -> outbox (queued)  | {gateway / 1e6:23.2f} |")
    print(f"| gateway - floor                        | {(gateway - floor) / 1e6:23.2f} |")
    print(f"gateway / floor: {gateway / floor:.2f}")


if __name__ == "__main__":
    main()
