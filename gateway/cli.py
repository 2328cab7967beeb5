"""The ``modality-gateway`` command line: serve, check-config and operator commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from gateway import __version__
from gateway.commands._common import add_common_options
from gateway.errors import ConfigError
from gateway.logging import configure_logging
from gateway.settings import Settings, load_settings

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; sub-command modules add their own sub-commands."""
    from gateway.commands import mpps as mpps_commands
    from gateway.commands import outbox as outbox_commands
    from gateway.commands import worklist as worklist_commands

    parser = argparse.ArgumentParser(
        prog="modality-gateway",
        description="Modality Worklist and MPPS gateway between DIMSE and DICOMweb.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_common_options(parser, default=None)
    common = argparse.ArgumentParser(add_help=False)
    add_common_options(common)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the DIMSE and DICOMweb fronts")
    serve.add_argument(
        "--demo", action="store_true", help="seed a few example worklist items on first start"
    )
    serve.set_defaults(handler=_serve)

    check = sub.add_parser(
        "check-config", parents=[common], help="validate the configuration and exit"
    )
    check.set_defaults(handler=_check_config)

    worklist_commands.register(sub)
    mpps_commands.register(sub)
    outbox_commands.register(sub)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from gateway.app import serve

    settings: Settings = args.settings
    return serve(settings, demo=args.demo)


def _check_config(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    source = args.config or "built-in defaults"
    fronts = []
    if settings.dimse.enabled:
        fronts.append(
            f"DIMSE {settings.dimse.ae_title}@{settings.dimse.host}:{settings.dimse.port}"
            f" -> {settings.dimse.backend}"
        )
    if settings.web.enabled:
        fronts.append(
            f"DICOMweb http://{settings.web.host}:{settings.web.port}{settings.web.base_path}"
            f" -> {settings.web.backend}"
        )
    print(f"configuration OK ({source})")
    for line in fronts:
        print(f"  {line}")
    print(f"  backends: {', '.join(sorted(settings.backends))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m gateway``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        level=args.log_level or settings.log_level,
        fmt=args.log_format or settings.log_format,
        log_phi=settings.log_phi,
    )
    args.settings = settings
    handler: Handler = args.handler
    return handler(args)
