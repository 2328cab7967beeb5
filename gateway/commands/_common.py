"""Helpers shared by the operator sub-commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio

from gateway.backends.local import LocalBackend
from gateway.errors import ConfigError, GatewayError
from gateway.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_common_options(
    parser: argparse.ArgumentParser, *, default: Any = argparse.SUPPRESS
) -> None:
    """``--config``/``--log-*`` may stand before or after the sub-command.

    The top-level parser gets real defaults (``None``); sub-command parsers use SUPPRESS so
    that they never reset a value given before the sub-command.
    """
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        help="TOML configuration file (default: $MODALITY_GATEWAY_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=default,
        help="override log_format",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=default,
        help="override log_level",
    )


def error(message: str) -> None:
    """One line on stderr."""
    print(f"error: {message}", file=sys.stderr)


class _Closable(Protocol):
    async def aclose(self) -> None: ...


R = TypeVar("R", bound=_Closable)


def run_with(opener: Callable[[], Awaitable[R]], work: Callable[[R], Awaitable[int]]) -> int:
    """Open a resource, run ``work`` on it, close it; GatewayError -> exit 1, config -> 2."""

    async def main() -> int:
        resource = await opener()
        try:
            return await work(resource)
        finally:
            await resource.aclose()

    try:
        result: Any = anyio.run(main)
    except GatewayError as exc:
        error(str(exc))
        return EXIT_FAILED
    except ConfigError as exc:
        error(f"configuration: {exc}")
        return EXIT_USAGE
    return int(result)


def run_with_store(args: argparse.Namespace, work: Callable[[LocalBackend], Awaitable[int]]) -> int:
    """Run ``work`` on the local store of ``args.settings``."""
    settings: Settings = args.settings
    return run_with(lambda: LocalBackend.open(settings.store), work)
