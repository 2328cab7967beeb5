"""Helpers shared by the operator sub-commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from gateway.backends.local import LocalBackend
from gateway.errors import ConfigError, GatewayError
from gateway.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Let ``--config``/``--log-*`` also follow the sub-command (without resetting them)."""
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def error(message: str) -> None:
    """One line on stderr."""
    print(f"error: {message}", file=sys.stderr)


def run_with_store(args: argparse.Namespace, work: Callable[[LocalBackend], Awaitable[int]]) -> int:
    """Open the local store of ``args.settings``, run ``work``, close; GatewayError -> exit 1."""
    settings: Settings = args.settings

    async def main() -> int:
        backend = await LocalBackend.open(settings.store)
        try:
            return await work(backend)
        finally:
            await backend.aclose()

    try:
        result: Any = anyio.run(main)
    except GatewayError as exc:
        error(str(exc))
        return EXIT_FAILED
    except ConfigError as exc:
        error(f"configuration: {exc}")
        return EXIT_USAGE
    return int(result)
