"""The real gateway on the benchmark's own event loop, for the ``*_instructions`` benches.

In-process, callgrind counts the gateway's work and the driving clients' in one run, and
the clients stay the same whatever is measured against them.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def serving(config: str) -> AsyncIterator[int]:
    """Run the gateway for ``config`` (TOML text) until the block ends; yield its web port."""
    import anyio

    from gateway.app import RunningGateway, run_gateway
    from gateway.logging import configure_logging
    from gateway.settings import settings_from_mapping

    configure_logging(level="info", fmt="json")
    settings = settings_from_mapping(tomllib.loads(config))
    ready, stop = anyio.Event(), anyio.Event()
    ports: list[int] = []

    def on_ready(running: RunningGateway) -> None:
        ports.append(running.web_port or 0)
        ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_gateway(settings, on_ready=on_ready, stop=stop))
        await ready.wait()
        try:
            yield ports[0]
        finally:
            stop.set()


@contextlib.asynccontextmanager
async def serving_app(app: Any) -> AsyncIterator[int]:
    """Serve a bare aiohttp ``app`` (a floor to compare with) until the block ends."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server  # the port of a port-0 site
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()
