"""Worklist import: item-by-item JSON decoding keeps the careful parser's answers.

The fast path decodes a JSON array one element at a time (so a big file never exists as
millions of live objects); it must accept exactly what ``json.loads`` accepts, fall back
to :func:`parse_json_body` for everything else, and reject a file for the same reason as
before: the first JSON or shape error, else the first item the store cannot key on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.backends.local import LocalBackend
from gateway.backends.local.importer import (
    PROGRESS_EVERY,
    FileRejected,
    _json_items,
    import_paths,
    read_rows,
)
from gateway.backends.local.items import split_item
from tests.contract.worklist_examples import WORKLIST, attr, item, sps_item

TEXTS = [
    "[]",
    " [ ] ",
    "[{}]",
    '[{"a": 1}, {"b": [1, 2, {"c": null}]}]',
    '\n\t[\r\n{"a": "x"}\n,\n{"b": "y"}\n]\n',
    '{"a": [1, 2]}',
    "[[1], [2]]",
    '[1, "two", null, true]',
    '[{"a": 1},]',
    '[,{"a": 1}]',
    '[{"a": 1} {"b": 2}]',
    '[{"a": 1}] x',
    '[{"a": 1}',
    "[",
    '[{"a": NaN}]',
    '[{"a": 1}]\u00a0',  # no-break space is no JSON whitespace
    '\u00a0[{"a": 1}]',
    '[{"a": "\\ud800"}]',
]


@pytest.mark.parametrize("text", TEXTS)
def test_json_items_accept_exactly_what_json_loads_accepts(text: str) -> None:
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            list(_json_items(text))
        return
    expected = parsed if isinstance(parsed, list) else [parsed]
    assert json.dumps(list(_json_items(text))) == json.dumps(expected)


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_read_rows_of_an_array_equal_split_items(tmp_path: Path) -> None:
    text = json.dumps(WORKLIST, ensure_ascii=False, indent=1)
    rows = read_rows(_write(tmp_path / "w.json", "\ufeff\n" + text + "\n"))
    expected = [r for i in WORKLIST for r in split_item(i)]
    assert rows == expected
    assert [orjson.loads(r.doc) for r in rows] == [json.loads(r.doc) for r in expected]


def test_lower_case_keys_take_the_careful_parser(tmp_path: Path) -> None:
    lowered = json.loads(json.dumps(WORKLIST[:2]).replace('"0020000D"', '"0020000d"'))
    seen: list[int] = []
    rows = read_rows(_write(tmp_path / "l.json", json.dumps(lowered)), seen.append)
    assert [r.study_uid for r in rows] == [r.study_uid for i in WORKLIST[:2] for r in split_item(i)]
    assert sum(seen) == 2  # progress counts each item once, even after the fallback


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        # An item the store cannot key on, and later a JSON error: the JSON error wins.
        ('[{"00100010": {"vr": "PN"}}, {"0020000D": ', "malformed JSON"),
        # ... and a later shape error wins too.
        ('[{"00100010": {"vr": "PN"}}, {"00100010": {"vr": "XX"}}]', "unknown VR"),
        ('[{"00100010": {"vr": "PN"}}, {"00100010": {"vr": "PN"}}]', "item 1: Study Instance"),
        ('{"00100010": {"vr": "PN"}}', "Study Instance UID (0020,000D) is missing"),
        ("[]", "no worklist items in this file"),
        ('[{"00100010": {"vr": "PN", "Value": [NaN]}}]', "malformed JSON"),
    ],
)
def test_rejected_files_keep_their_reason(tmp_path: Path, content: str, reason: str) -> None:
    with pytest.raises(FileRejected) as caught:
        read_rows(_write(tmp_path / "bad.json", content))
    assert str(caught.value).startswith(reason) or reason in str(caught.value), caught.value


def test_progress_reports_every_item_once(tmp_path: Path) -> None:
    many = [
        item(n, "A^B", sps_item(f"S{n}", "CT01", "CT", "20250110"))
        for n in range(PROGRESS_EVERY * 2 + 7)
    ]
    seen: list[int] = []
    rows = read_rows(_write(tmp_path / "many.json", json.dumps(many)), seen.append)
    assert len(rows) == len(many)
    assert seen == [PROGRESS_EVERY, PROGRESS_EVERY, 7]


def test_integers_beyond_64_bits_are_stored_with_the_standard_encoder() -> None:
    huge = item(1, "A^B", sps_item("S1", "CT01", "CT", "20250110"))
    huge["00189219"] = attr("UV", 2**70)
    (row,) = split_item(huge)
    assert json.loads(row.doc)["00189219"]["Value"] == [2**70]


async def test_import_keeps_files_atomic_and_updates_on_reimport(
    local_backend: LocalBackend, tmp_path: Path
) -> None:
    good = _write(tmp_path / "a.json", json.dumps(WORKLIST[:4], ensure_ascii=False))
    broken = [*WORKLIST[4:6], {"00100010": {"vr": "PN"}}]
    bad = _write(tmp_path / "b.json", json.dumps(broken, ensure_ascii=False))
    summary = await import_paths(local_backend, [good, bad], batch_rows=3)
    assert (summary.files, summary.inserted, summary.updated) == (1, 4, 0)
    assert [f.path.name for f in summary.failures] == ["b.json"]
    assert "item 3: Study Instance UID" in summary.failures[0].reason
    again = await import_paths(local_backend, [good], batch_rows=3)
    assert (again.inserted, again.updated) == (0, 4)
    assert await local_backend.count_worklist_items() == 4
