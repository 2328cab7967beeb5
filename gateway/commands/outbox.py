"""``modality-gateway outbox list|show|retry|drop``: the store-and-forward queue.

Works on the store file while the gateway runs (SQLite WAL, busy timeout): a retried
message is picked up by the running delivery worker within a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from gateway.backends.outbox import store as sql
from gateway.backends.outbox.store import OutboxStore
from gateway.commands._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_common_options,
    error,
    run_with,
)
from gateway.settings import Settings


def register(subparsers: Any) -> None:
    """Add ``outbox`` with its ``list``, ``show``, ``retry`` and ``drop`` actions."""
    parser = subparsers.add_parser("outbox", help="inspect and repair the MPPS outbox")
    add_common_options(parser)
    actions = parser.add_subparsers(dest="outbox_action", required=True, metavar="ACTION")

    lst = actions.add_parser("list", help="list queued and dead-lettered messages, oldest first")
    add_common_options(lst)
    lst.add_argument("--dead", action="store_true", help="only the dead-letter list")
    lst.add_argument("--limit", type=int, default=100, help="show at most N (default 100)")
    lst.set_defaults(handler=_list)

    show = actions.add_parser("show", help="print one message with its MPPS attributes")
    add_common_options(show)
    show.add_argument("id", type=int, metavar="ID")
    show.set_defaults(handler=_show)

    retry = actions.add_parser("retry", help="send a message again now (dead-letter included)")
    add_common_options(retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", metavar="ID")
    which.add_argument("--all", action="store_true", help="every dead-lettered message")
    retry.set_defaults(handler=_retry)

    drop = actions.add_parser("drop", help="delete a message without sending it")
    add_common_options(drop)
    drop.add_argument("id", type=int, metavar="ID")
    drop.set_defaults(handler=_drop)


def _run(args: argparse.Namespace, work: Callable[[OutboxStore], Awaitable[int]]) -> int:
    settings: Settings = args.settings
    return run_with(lambda: OutboxStore.open(settings.store.path), work)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _list(args: argparse.Namespace) -> int:
    limit: int = args.limit
    if limit < 1:
        error("--limit must be at least 1")
        return EXIT_USAGE
    state: sql.State | None = "dead" if args.dead else None

    async def work(outbox: OutboxStore) -> int:
        rows = await outbox.read(lambda c: sql.list_messages(c, state, limit))
        stats = await outbox.read(lambda c: sql.stats(c, None))
        print(f"{'ID':>8}  {'STATE':6}  {'OP':6}  {'TRIES':>5}  {'QUEUED AT':19}  BACKEND  UID")
        for m in rows:
            print(
                f"{m.id:>8}  {m.state:6}  {m.op:6}  {m.attempts:>5}  {_when(m.created_at):19}"
                f"  {m.backend}  {m.uid}"
            )
        summary = stats.as_dict(time.time())
        print(
            f"{summary['queued']} queued, {summary['dead']} dead,"
            f" oldest {summary['oldest_age_s']} s",
            file=sys.stderr,
        )
        return EXIT_OK

    return _run(args, work)


def _show(args: argparse.Namespace) -> int:
    message_id: int = args.id

    async def work(outbox: OutboxStore) -> int:
        m = await outbox.read(lambda c: sql.get_message(c, message_id))
        if m is None:
            error(f"no outbox message {message_id}")
            return EXIT_FAILED
        record = {
            "id": m.id,
            "backend": m.backend,
            "uid": m.uid,
            "op": m.op,
            "state": m.state,
            "queued_at": _when(m.created_at),
            "attempts": m.attempts,
            "next_attempt_at": _when(m.next_at),
            "last_error": m.last_error,
            "body": m.body,
        }
        print(json.dumps(record, ensure_ascii=False, indent=2))
        return EXIT_OK

    return _run(args, work)


def _retry(args: argparse.Namespace) -> int:
    message_id: int | None = None if args.all else args.id

    async def work(outbox: OutboxStore) -> int:
        count = await outbox.write(lambda c: sql.revive(c, message_id, time.time()))
        if message_id is not None and count == 0:
            error(f"no outbox message {message_id}")
            return EXIT_FAILED
        print(f"{count} message(s) due for delivery now")
        return EXIT_OK

    return _run(args, work)


def _drop(args: argparse.Namespace) -> int:
    message_id: int = args.id

    async def work(outbox: OutboxStore) -> int:
        if not await outbox.write(lambda c: sql.delete_message(c, message_id)):
            error(f"no outbox message {message_id}")
            return EXIT_FAILED
        print(f"dropped outbox message {message_id}")
        return EXIT_OK

    return _run(args, work)
