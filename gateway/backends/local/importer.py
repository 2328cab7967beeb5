"""Read worklist files for ``worklist import``: DICOM JSON, Part-10 (``.wl``), directories.

A file is the unit of failure: it is parsed and every item checked before any of its
items is queued, so a bad file is reported with one clear reason and contributes nothing,
while the other files still go in. Valid rows are written in batches, each one
transaction, which keeps imports fast (no per-item commit) without holding the write lock
for the whole run.

A JSON array is decoded item by item and each item is turned into its rows (plain text)
at once, so a big file never exists as millions of live Python objects: the garbage
collector's passes over those cost more than the decoding itself.
"""

from __future__ import annotations

import io
import json
import re
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
_JSON_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace (RFC 8259), as json.loads skips
_DECODER = json.JSONDecoder()  # the same decoder as json.loads


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


class _Progress:
    """Report items checked in steps of PROGRESS_EVERY, never one item twice."""

    def __init__(self, callback: Callable[[int], object] | None) -> None:
        self._callback = callback
        self._reported = 0

    def update(self, checked: int, *, final: bool = False) -> None:
        step = checked - self._reported
        if self._callback is not None and (step >= PROGRESS_EVERY or (final and step > 0)):
            self._callback(step)
            self._reported = checked


def _skip_space(text: str, pos: int) -> int:
    found = _JSON_SPACE.match(text, pos)
    return found.end() if found else pos


def _json_items(text: str) -> Iterator[Any]:
    """The values of a JSON text: each element of a top-level array, one at a time.

    Accepts exactly what ``json.loads`` accepts (same decoder, same whitespace); raises
    ``ValueError`` (or ``RecursionError``) for anything else, possibly after some items.
    """
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        yield json.loads(text)
        return
    pos = _skip_space(text, pos + 1)
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            item, pos = _DECODER.raw_decode(text, pos)
            yield item
            pos = _skip_space(text, pos)
            if text.startswith(",", pos):
                pos = _skip_space(text, pos + 1)
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise ValueError(f"expected ',' or ']' at character {pos}")
    if _skip_space(text, pos) != len(text):
        raise ValueError(f"extra data at character {pos}")


def _rows_of_items(items: list[Any], *, checked: bool, progress: _Progress) -> list[SpsRow]:
    """Split every item; the first that cannot be stored rejects the file."""
    rows: list[SpsRow] = []
    for number, item in enumerate(items, 1):
        try:
            rows.extend(split_item(item, checked=checked))
        except GatewayError as exc:
            raise FileRejected(_item_reason(exc, number, len(items))) from None
        progress.update(number)
    progress.update(len(items), final=True)
    return rows


def _item_reason(exc: GatewayError, number: int, total: int) -> str:
    where = f"item {number}: " if total > 1 else ""
    return f"{where}{exc.message}"


def _rows_of_json(data: bytes, progress: _Progress) -> list[SpsRow]:
    """Rows of a DICOM JSON file (object or array), every item shape-checked.

    Fast path for big operator files: the C JSON decoder item by item plus the shared
    shape check. Anything it rejects goes through :func:`parse_json_body`, which also
    accepts lower-case tag keys and words the error precisely; an item the store cannot
    key on is reported only once the whole file is known to be valid JSON, so a file is
    rejected for the same reason as by the careful parser. (The fast path lets a duplicate
    member in one object win silently, as JSON parsers commonly do.)
    """
    rows: list[SpsRow] = []
    unusable: tuple[GatewayError, int] | None = None
    count = 0
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
        for count, item in enumerate(_json_items(text), 1):
            validate_json_dataset(item, max_depth=MAX_JSON_DEPTH)
            if unusable is not None:
                continue
            try:
                rows.extend(split_item(item, checked=True))
            except GatewayError as exc:
                unusable = (exc, count)
            progress.update(count)
    except (ValueError, RecursionError, GatewayError):
        items = parse_json_body(data, max_depth=MAX_JSON_DEPTH, max_items=MAX_JSON_DATASETS)
        return _rows_of_items(items, checked=True, progress=progress)
    if unusable is not None:
        raise FileRejected(_item_reason(unusable[0], unusable[1], count))
    progress.update(count, final=True)
    return rows


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
    progress = _Progress(on_checked)
    if _looks_like_json(data):
        try:
            rows = _rows_of_json(data, progress)
        except GatewayError as exc:
            raise FileRejected(exc.message) from None
    else:
        try:
            items = _read_dicom(data)
        except GatewayError as exc:
            raise FileRejected(exc.message) from None
        except FileRejected:
            raise
        except Exception as exc:  # pydicom raises many exception types on corrupt files
            raise FileRejected(f"not a readable DICOM file ({type(exc).__name__})") from None
        rows = _rows_of_items(items, checked=False, progress=progress)
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
