"""``modality-gateway mpps show|list|delete``: inspect MPPS instances of the embedded store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from gateway.backends.local import LocalBackend
from gateway.commands._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_common_options,
    error,
    run_with_store,
)
from gateway.errors import GatewayError


def register(subparsers: Any) -> None:
    """Add ``mpps`` with its ``show``, ``list`` and ``delete`` actions."""
    parser = subparsers.add_parser("mpps", help="inspect MPPS instances of the embedded store")
    add_common_options(parser)
    actions = parser.add_subparsers(dest="mpps_action", required=True, metavar="ACTION")

    show = actions.add_parser("show", help="print one MPPS as DICOM JSON")
    add_common_options(show)
    show.add_argument("uid", metavar="UID", help="SOP Instance UID of the MPPS")
    show.set_defaults(handler=_show)

    lst = actions.add_parser("list", help="list MPPS instances, most recently changed first")
    add_common_options(lst)
    lst.add_argument("--limit", type=int, default=50, help="show at most N (default 50)")
    lst.set_defaults(handler=_list)

    delete = actions.add_parser(
        "delete", help="delete an MPPS (a tombstone stays: it then answers 'gone')"
    )
    add_common_options(delete)
    delete.add_argument("uid", metavar="UID")
    delete.add_argument("--yes", action="store_true", help="confirm the deletion")
    delete.set_defaults(handler=_delete)


def _show(args: argparse.Namespace) -> int:
    uid: str = args.uid

    async def work(backend: LocalBackend) -> int:
        try:
            result = await backend.retrieve_mpps(uid)
        except GatewayError as exc:
            error(str(exc))
            return EXIT_FAILED
        print(json.dumps(result.dataset, ensure_ascii=False, indent=2))
        return EXIT_OK

    return run_with_store(args, work)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _list(args: argparse.Namespace) -> int:
    limit: int = args.limit
    if limit < 1:
        error("--limit must be at least 1")
        return EXIT_USAGE

    async def work(backend: LocalBackend) -> int:
        rows = await backend.list_mpps(limit)
        print(f"{'UPDATED':19}  {'STATUS':12}  UID")
        for row in rows:
            status = "(deleted)" if row.deleted else row.status or "?"
            print(f"{_when(row.updated_at):19}  {status:12}  {row.uid}")
        print(f"{len(rows)} MPPS instance(s)", file=sys.stderr)
        return EXIT_OK

    return run_with_store(args, work)


def _delete(args: argparse.Namespace) -> int:
    if not args.yes:
        error("deleting an MPPS needs --yes")
        return EXIT_USAGE
    uid: str = args.uid

    async def work(backend: LocalBackend) -> int:
        try:
            await backend.delete_mpps(uid)
        except GatewayError as exc:
            error(str(exc))
            return EXIT_FAILED
        print(f"deleted MPPS {uid}")
        return EXIT_OK

    return run_with_store(args, work)
