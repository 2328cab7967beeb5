"""Read worklist files for ``worklist import``: DICOM JSON, Part-10 (``.wl``), directories.

A file is the unit of failure: it is parsed and every item checked before any of its
items is queued, so a bad file is reported with one clear reason and contributes nothing,
while the other files still go in. Valid rows are written in batches, each one
transaction, which keeps imports fast (no per-item commit) without holding the write lock
for the whole run.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from gateway.backends.local.items import SpsRow, split_item
from gateway.errors import GatewayError
from gateway.model.dicom_json import dataset_to_json, parse_json_body, validate_json_dataset

if TYPE_CHECKING:
    from gateway.backends.local.backend import LocalBackend

DIRECTORY_SUFFIXES = frozenset({".json", ".wl", ".dcm", ".dicom"})
BATCH_ROWS = 2000
PROGRESS_EVERY = 500
MAX_JSON_DEPTH = 64
MAX_JSON_DATASETS = 50_000_000


class FileRejected(Exception):
    """A file that cannot be imported; the message says why (never patient data)."""


@dataclass(frozen=True)
class FileFailure:
    """One file that was not imported, and why."""

    path: Path
    reason: str


@dataclass
class ImportSummary:
    """The outcome of an import run."""

    files: int = 0
    steps: int = 0
    inserted: int = 0
    updated: int = 0
    failures: list[FileFailure] = field(default_factory=list)


def _is_part10(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def expand_paths(paths: Iterable[Path]) -> tuple[list[Path], list[FileFailure]]:
    """Files to import: named files as given, directories recursively, sorted.

    Inside directories only ``.json``/``.wl``/``.dcm``/``.dicom`` files and files with a
    Part-10 preamble are taken (so ``lockfile`` and README files are skipped).
    """
    files: list[Path] = []
    failures: list[FileFailure] = []
    for path in paths:
        if path.is_dir():
            found = [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and not p.name.startswith(".")
                and (p.suffix.lower() in DIRECTORY_SUFFIXES or _is_part10(p))
            ]
            if not found:
                failures.append(FileFailure(path, "no worklist files in this directory"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            failures.append(FileFailure(path, "no such file or directory"))
    return files, failures


def _looks_like_json(data: bytes) -> bool:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return head in (b"{", b"[")


def _read_dicom(data: bytes) -> list[dict[str, object]]:
    with warnings.catch_warnings():
        # pydicom warns (quoting values) about odd but readable elements; the store keeps
        # them as they are and the matcher copes, so these warnings are no failure.
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(io.BytesIO(data))
        except InvalidDicomError:
            # Files without preamble: accept only if they start like a dataset (group 2/8).
            if data[:2] not in (b"\x02\x00", b"\x08\x00"):
                raise FileRejected("neither DICOM JSON nor a DICOM file") from None
            ds = dcmread(io.BytesIO(data), force=True)
        return [dataset_to_json(ds)]


def _read_json(data: bytes) -> list[Any]:
    """Items of a DICOM JSON file (object or array), shape-checked.

    Fast path for big operator files: the C JSON parser plus the shared shape check per
    item. Anything it rejects goes through :func:`parse_json_body`, which also accepts
    lower-case tag keys and words the error precisely. (The fast path lets a duplicate
    member in one object win silently, as JSON parsers commonly do.)
    """
    try:
        parsed = json.loads(data.decode("utf-8").removeprefix("\ufeff"))
        items = parsed if isinstance(parsed, list) else [parsed]
        for item in items:
            validate_json_dataset(item, max_depth=MAX_JSON_DEPTH)
        return items
    except (ValueError, RecursionError, GatewayError):
        return parse_json_body(data, max_depth=MAX_JSON_DEPTH, max_items=MAX_JSON_DATASETS)


def read_rows(path: Path, on_checked: Callable[[int], object] | None = None) -> list[SpsRow]:
    """All SPS rows of one file (blocking), or :class:`FileRejected`.

    ``on_checked`` is called (in this thread) with the number of items checked since its
    last call, so a progress bar moves while a big file is read, which is most of the work.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileRejected(f"cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise FileRejected("file is empty")
    try:
        if _looks_like_json(data):
            items = _read_json(data)
            checked = True
        else:
            items = _read_dicom(data)
            checked = False
    except GatewayError as exc:
        raise FileRejected(exc.message) from None
    except FileRejected:
        raise
    except Exception as exc:  # pydicom raises many exception types on corrupt files
        raise FileRejected(f"not a readable DICOM file ({type(exc).__name__})") from None
    rows: list[SpsRow] = []
    for number, item in enumerate(items, 1):
        try:
            rows.extend(split_item(item, checked=checked))
        except GatewayError as exc:
            where = f"item {number}: " if len(items) > 1 else ""
            raise FileRejected(f"{where}{exc.message}") from None
        if on_checked is not None and number % PROGRESS_EVERY == 0:
            on_checked(PROGRESS_EVERY)
    if on_checked is not None and len(items) % PROGRESS_EVERY:
        on_checked(len(items) % PROGRESS_EVERY)
    if not rows:
        raise FileRejected("no worklist items in this file")
    return rows


def _batches(rows: list[SpsRow], size: int) -> Iterator[list[SpsRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def import_paths(
    backend: LocalBackend,
    paths: Iterable[Path],
    *,
    on_progress: Callable[[int], object] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ImportSummary:
    """Import files and directories; per-file failures are collected, not raised.

    ``on_progress`` is called, from a worker thread, with the number of items read and
    checked (see :func:`read_rows`). Store failures (:class:`gateway.errors.GatewayError`)
    are raised: they are not about one file.
    """
    files, failures = await anyio.to_thread.run_sync(expand_paths, list(paths))
    summary = ImportSummary(failures=failures)
    pending: list[SpsRow] = []

    async def flush() -> None:
        for chunk in _batches(pending, batch_rows):
            report = await backend.upsert_rows(chunk)
            summary.inserted += report.inserted
            summary.updated += report.updated
            summary.steps += len(chunk)
        pending.clear()

    for path in files:
        try:
            rows = await anyio.to_thread.run_sync(read_rows, path, on_progress)
        except FileRejected as exc:
            summary.failures.append(FileFailure(path, str(exc)))
            continue
        summary.files += 1
        pending.extend(rows)
        if len(pending) >= batch_rows:
            await flush()
    await flush()
    return summary
