"""``modality-gateway worklist import|list|delete``: maintain the embedded worklist.

DICOM defines no service to create scheduled steps, so the operator loads them from
files. These commands work on the store file directly (SQLite allows a running server
next to them) and print patient data only to the operator's own terminal.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gateway.backends.local import LocalBackend
from gateway.backends.local.importer import import_paths
from gateway.backends.local.items import (
    ACCESSION_NUMBER,
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    SCHEDULED_STATION_AE,
    SPS_DESCRIPTION,
    SPS_ID,
    SPS_SEQUENCE,
    SPS_START_DATE,
    SPS_START_TIME,
    SPS_STATUS,
    STUDY_INSTANCE_UID,
    person_name_alphabetic,
    values,
)
from gateway.commands._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_common_options,
    error,
    run_with_store,
)
from gateway.model.query import QueryKey, WorklistQuery
from gateway.model.types import JsonDataset

_DATE_ARG = re.compile(r"(\d{8})?(-)?(\d{8})?")
_SPS = int(SPS_SEQUENCE, 16)


def register(subparsers: Any) -> None:
    """Add ``worklist`` with its ``import``, ``list`` and ``delete`` actions."""
    parser = subparsers.add_parser("worklist", help="maintain the embedded worklist")
    add_common_options(parser)
    actions = parser.add_subparsers(dest="worklist_action", required=True, metavar="ACTION")

    imp = actions.add_parser(
        "import",
        help="import DICOM JSON files, Part-10 files (.wl) and directories",
        description="Insert or update scheduled steps (key: Study Instance UID + SPS ID). "
        "A bad file is reported and skipped; the exit status is 1 if any file failed.",
    )
    add_common_options(imp)
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.set_defaults(handler=_import)

    lst = actions.add_parser("list", help="list scheduled steps (matching as in C-FIND)")
    add_common_options(lst)
    lst.add_argument("--modality", help="e.g. CT")
    lst.add_argument("--station", help="Scheduled Station AE Title")
    lst.add_argument(
        "--date", help="today, tomorrow, YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either side open)"
    )
    lst.add_argument("--patient-id")
    lst.add_argument("--patient-name", help="wildcards * and ? allowed, e.g. 'MUELLER*'")
    lst.add_argument("--accession")
    lst.add_argument("--status", help="SPS Status, e.g. SCHEDULED")
    lst.add_argument("--limit", type=int, default=None, help="show at most N steps")
    lst.add_argument("--json", action="store_true", help="print DICOM JSON instead of a table")
    lst.set_defaults(handler=_list)

    delete = actions.add_parser("delete", help="delete one step, or all with --all --yes")
    add_common_options(delete)
    delete.add_argument("study_uid", nargs="?", metavar="STUDY_UID")
    delete.add_argument("sps_id", nargs="?", metavar="SPS_ID")
    delete.add_argument("--all", action="store_true", help="delete every scheduled step")
    delete.add_argument("--yes", action="store_true", help="confirm --all")
    delete.set_defaults(handler=_delete)


# --- import -------------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
    paths: list[Path] = args.paths

    async def work(backend: LocalBackend) -> int:
        with tqdm(
            unit=" items",
            desc="reading",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            delay=0.5,
            leave=False,
        ) as bar:
            summary = await import_paths(backend, paths, on_progress=bar.update)
        for failure in summary.failures:
            error(f"{failure.path}: {failure.reason}")
        print(
            f"imported {summary.steps} scheduled steps from {summary.files} file(s): "
            f"{summary.inserted} new, {summary.updated} updated"
        )
        if summary.failures:
            print(f"{len(summary.failures)} file(s) failed", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK

    return run_with_store(args, work)


# --- list ---------------------------------------------------------------------------------


def parse_date_option(text: str, today: date | None = None) -> str:
    """``--date`` as a DA single value or range; ValueError with the accepted forms."""
    today = today or date.today()
    one_day = timedelta(days=1)
    named = {"today": today, "tomorrow": today + one_day, "yesterday": today - one_day}
    if text.lower() in named:
        return named[text.lower()].strftime("%Y%m%d")
    match = _DATE_ARG.fullmatch(text)
    if match is None or not (match.group(1) or match.group(3)):
        raise ValueError("--date must be today, tomorrow, YYYYMMDD or YYYYMMDD-YYYYMMDD")
    for part in (match.group(1), match.group(3)):
        if part:
            date(int(part[:4]), int(part[4:6]), int(part[6:]))  # raises ValueError if invalid
    return text


def build_list_query(args: argparse.Namespace) -> WorklistQuery:
    """The C-FIND-equivalent query for the ``list`` filters."""
    keys = [QueryKey((_SPS,), "SQ")]
    nested = (
        (SCHEDULED_STATION_AE, "AE", args.station),
        (MODALITY, "CS", args.modality),
        (SPS_START_DATE, "DA", parse_date_option(args.date) if args.date else None),
        (SPS_STATUS, "CS", args.status),
    )
    for tag, vr, value in nested:
        keys.append(QueryKey((_SPS, int(tag, 16)), vr, (value,) if value else ()))
    top = (
        (PATIENT_ID, "LO", args.patient_id),
        (PATIENT_NAME, "PN", args.patient_name),
        (ACCESSION_NUMBER, "SH", args.accession),
    )
    for tag, vr, value in top:
        if value:
            keys.append(QueryKey((int(tag, 16),), vr, (value,)))
    return WorklistQuery(keys=tuple(keys))


def _first(ds: JsonDataset, key: str) -> str:
    found = values(ds.get(key))
    return "\\".join(str(v) for v in found if v is not None) if found else ""


_COLUMNS = (
    ("DATE", 10),
    ("TIME", 5),
    ("STATION", 8),
    ("MOD", 4),
    ("PATIENT NAME", 22),
    ("PATIENT ID", 12),
    ("ACCESSION", 14),
    ("SPS ID", 10),
    ("STATUS", 12),
    ("DESCRIPTION", 20),
    ("STUDY INSTANCE UID", 0),
)


def _fit(text: str, width: int) -> str:
    if not width:
        return text
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def table_row(item: JsonDataset) -> list[str]:
    """The table cells of one step."""
    sps_items = values(item.get(SPS_SEQUENCE))
    sps: JsonDataset = sps_items[0] if sps_items and isinstance(sps_items[0], dict) else {}
    day, tm = _first(sps, SPS_START_DATE), _first(sps, SPS_START_TIME)
    names = values(item.get(PATIENT_NAME))
    return [
        f"{day[:4]}-{day[4:6]}-{day[6:8]}" if len(day) == 8 else day,
        f"{tm[:2]}:{tm[2:4]}" if len(tm) >= 4 else tm,
        _first(sps, SCHEDULED_STATION_AE),
        _first(sps, MODALITY),
        person_name_alphabetic(names[0]) if names else "",
        _first(item, PATIENT_ID),
        _first(item, ACCESSION_NUMBER),
        _first(sps, SPS_ID),
        _first(sps, SPS_STATUS),
        _first(sps, SPS_DESCRIPTION),
        _first(item, STUDY_INSTANCE_UID),
    ]


def format_table(rows: list[list[str]]) -> Iterator[str]:
    """Fixed-width lines (header first) so long listings can stream."""
    yield "  ".join(_fit(name, width) for name, width in _COLUMNS).rstrip()
    for row in rows:
        yield "  ".join(_fit(cell, width) for cell, (_, width) in zip(row, _COLUMNS, strict=True))


def _list(args: argparse.Namespace) -> int:
    try:
        query = build_list_query(args)
    except ValueError as exc:
        error(str(exc))
        return EXIT_USAGE
    limit: int | None = args.limit

    async def work(backend: LocalBackend) -> int:
        found: list[JsonDataset] = []
        results = backend.search_worklist(query)
        try:
            async for item in results:
                found.append(item)
                if limit is not None and len(found) >= limit:
                    break
        finally:
            await results.aclose()
        if args.json:
            print(json.dumps(found, ensure_ascii=False, indent=2))
            return EXIT_OK
        for line in format_table([table_row(item) for item in found]):
            print(line)
        print(f"{len(found)} scheduled step(s)", file=sys.stderr)
        return EXIT_OK

    return run_with_store(args, work)


# --- delete -------------------------------------------------------------------------------


def _delete(args: argparse.Namespace) -> int:
    if args.all:
        if args.study_uid or args.sps_id:
            error("give either --all or STUDY_UID SPS_ID, not both")
            return EXIT_USAGE
        if not args.yes:
            error("deleting the whole worklist needs --yes")
            return EXIT_USAGE
    elif not (args.study_uid and args.sps_id):
        error("give STUDY_UID and SPS_ID of the step to delete (or --all --yes)")
        return EXIT_USAGE

    async def work(backend: LocalBackend) -> int:
        if args.all:
            count = await backend.delete_all_worklist_items()
            print(f"deleted {count} scheduled step(s)")
            return EXIT_OK
        if await backend.delete_worklist_item(args.study_uid, args.sps_id):
            print("deleted 1 scheduled step")
            return EXIT_OK
        error(f"no scheduled step {args.sps_id} in study {args.study_uid}")
        return EXIT_FAILED

    return run_with_store(args, work)
