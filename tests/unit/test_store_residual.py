"""Residual matching: keys the SQL decides exactly are not re-checked, and nothing changes.

The store trusts a column only where it is exactly what the shared matcher compares
(``items.py`` EXACT_* bits) and decides a key in SQL only where the SQL condition is exactly
C.2.2.2 matching (``search.py``). These tests store values built to break that promise
(NUL padding, numbers in text attributes, invalid and non-ASCII dates, blank and null
values, several values, several SPS items per item) and check, for random queries, that
every row SQL returns is decided the same by the residual query as by the whole query, and
that the store's answer equals the matcher applied to every stored item.
"""

from __future__ import annotations

import json
import random
import sqlite3
from typing import Any

import pytest

from gateway.backends.local import LocalBackend
from gateway.backends.local import items as cols
from gateway.backends.local.items import exact_date, plain_text, split_item
from gateway.backends.local.search import plan_search
from gateway.model.query import QueryKey, WorklistQuery
from gateway.model.types import JsonDataset
from gateway.settings import StoreSettings
from tests.contract.worklist_examples import (
    ACCESSION,
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    SPS,
    SPS_ID,
    SPS_STATUS,
    START_DATE,
    START_TIME,
    STATION,
    STUDY_UID,
    VRS,
    attr,
    item,
    query,
    sps_item,
    step_ids,
    study_uid,
)

# Stored values: (vr, values) with values None for an absent attribute.
Stored = tuple[str, list[Any] | None]

MODALITIES: list[Stored] = [
    ("CS", ["CT"]),
    ("CS", [" CT "]),
    ("CS", ["CT\0"]),
    ("CS", ["\0CT"]),
    ("CS", ["ct"]),
    ("CS", ["MR"]),
    ("IS", [5]),
    ("CS", ["", "CT"]),
    ("CS", [None, "CT"]),
    ("CS", [" ", "MR"]),
    ("CS", ["\0", "CT"]),
    ("CS", ["CT", "MR"]),
    ("CS", ["CT", "CT"]),
    ("CS", []),
    ("CS", None),
]
STATIONS: list[Stored] = [
    ("AE", ["CT01"]),
    ("AE", ["CT01 "]),
    ("AE", ["CT01\0"]),
    ("AE", ["CT01", "MR01"]),
    ("AE", ["CT01", "CT01 "]),
    ("AE", ["", "MR01"]),
    ("AE", [None, "CT01"]),
    ("IS", [7]),
    ("AE", ["ct01"]),
    ("AE", []),
    ("AE", None),
]
DATES: list[Stored] = [
    ("DA", ["20250110"]),
    ("DA", ["20250111"]),
    ("DA", ["20250112"]),
    ("DA", [" 20250111"]),
    ("DA", ["20250110\0"]),
    ("DA", ["20250230"]),
    ("DA", ["2025.01.11"]),
    ("DA", ["٢٠٢٥٠١١١"]),  # Arabic-Indic digits: int() reads them, strings do not sort
    ("DA", ["", "20250110"]),
    ("DA", ["\0", "20250112"]),
    ("DA", ["20250110", "20250111"]),
    ("IS", [20250110]),
    ("DA", ["\t20250110"]),
    ("DA", []),
    ("DA", None),
]
TIMES: list[Stored] = [
    ("TM", ["0800"]),
    ("TM", ["1400"]),
    ("TM", ["08"]),
    ("TM", ["235959.5"]),
    ("TM", ["٠٨٠٠"]),
    ("TM", []),
]
STATUSES: list[Stored] = [
    ("CS", ["SCHEDULED"]),
    ("CS", ["SCHEDULED\0"]),
    ("CS", ["scheduled"]),
    ("CS", ["STARTED"]),
    ("CS", []),
]
IDS: list[Stored] = [
    ("LO", ["P1"]),
    ("LO", [" P1 "]),
    ("LO", ["P1\0"]),
    ("LO", ["p1"]),
    ("IS", [1]),
    ("LO", ["P1", "P2"]),
    ("LO", ["", "P2"]),
    ("LO", None),
]


def _element(stored: Stored) -> dict[str, Any] | None:
    vr, found = stored
    if found is None:
        return None
    return attr(vr, *found)


def _put(ds: JsonDataset, key: str, stored: Stored) -> None:
    element = _element(stored)
    if element is not None:
        ds[key] = element


def _random_item(rng: random.Random, n: int) -> JsonDataset:
    steps = []
    for s in range(rng.choice([1, 1, 2])):
        sps: JsonDataset = {}
        _put(sps, "00080060", rng.choice(MODALITIES))
        _put(sps, "00400001", rng.choice(STATIONS))
        _put(sps, "00400002", rng.choice(DATES))
        _put(sps, "00400003", rng.choice(TIMES))
        _put(sps, "00400020", rng.choice(STATUSES))
        if rng.random() < 0.1:
            sps["00400009"] = attr("IS", n * 10 + s)  # an SPS ID stored as a number
        else:
            sps["00400009"] = attr("SH", rng.choice(["", " ", "\0"]) + f"S{n}.{s}")
        steps.append(sps)
    ds: JsonDataset = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": rng.choice(["A^B", "Smith^Anna"])}]},
        "0020000D": attr("UI", study_uid(n) + rng.choice(["", "\0", " "])),
        "00400100": {"vr": "SQ", "Value": steps},
    }
    if rng.random() < 0.05:
        ds["0020000D"] = attr("IS", n)  # a "UID" that only a UID column can equal
    _put(ds, "00100020", rng.choice(IDS))
    _put(ds, "00080050", rng.choice(IDS))
    return ds


def _string_key(rng: random.Random, choices: list[str]) -> str:
    value = rng.choice(choices)
    return rng.choice([value, value, value, value.lower(), value[:1] + "*", "*", value + "\0"])


def _date_key(rng: random.Random) -> str:
    low, high = sorted(rng.sample(["20250110", "20250111", "20250112", "20250113"], 2))
    return rng.choice([low, f"{low}-{high}", f"-{high}", f"{low}-", f"{high}-{low}"])


def _random_query(rng: random.Random) -> WorklistQuery:
    makers = {
        MODALITY: lambda: _string_key(rng, ["CT", "MR"]),
        STATION: lambda: _string_key(rng, ["CT01", "MR01"]),
        START_DATE: lambda: _date_key(rng),
        START_TIME: lambda: rng.choice(["0800", "0700-0900", "-1200", "1200-", "08"]),
        SPS_STATUS: lambda: _string_key(rng, ["SCHEDULED", "STARTED"]),
        SPS_ID: lambda: rng.choice(["S1.0", "S2.1", "10", "S3.0"]),
        PATIENT_ID: lambda: _string_key(rng, ["P1", "P2", "1"]),
        ACCESSION: lambda: _string_key(rng, ["P1", "1"]),
        PATIENT_NAME: lambda: rng.choice(["Smith*", "A^B"]),
    }
    keys = [QueryKey((SPS,), "SQ"), QueryKey(START_TIME, "TM")]
    for path in rng.sample(sorted(makers), rng.randrange(1, 4)):
        vr = VRS[path]
        if path == MODALITY and rng.random() < 0.15:
            vr = rng.choice(["LO", "LT"])  # a wrong VR from an SCU: never decided by SQL
        keys = [k for k in keys if k.path != path]
        keys.append(QueryKey(path, vr, (makers[path](),)))
    if rng.random() < 0.15:
        uids = rng.choice([(study_uid(1), study_uid(7)), ("5",), ("12", study_uid(3))])
        keys.append(QueryKey(STUDY_UID, "UI", uids))
    return WorklistQuery(keys=tuple(keys))


def _ids(found: list[JsonDataset]) -> list[str]:
    return sorted(json.dumps(i["00400100"]["Value"][0]["00400009"]) for i in found)


async def test_residual_matching_equals_the_whole_matcher(local_backend: LocalBackend) -> None:
    rng = random.Random(20260501)
    await local_backend.upsert_worklist_items([_random_item(rng, n) for n in range(1, 241)])
    stored = [i async for i in local_backend.search_worklist(WorklistQuery())]
    assert len(stored) > 240
    decided = trusted_rows = 0
    with sqlite3.connect(local_backend.path) as conn:
        for _ in range(300):
            q = _random_query(rng)
            plan = plan_search(q)
            decided += bool(plan.decided)
            for _start, _id, doc, trusted in conn.execute(plan.sql, plan.params):
                if trusted:
                    trusted_rows += 1
                    candidate = json.loads(doc)
                    assert plan.residual.matches(candidate) == q.matches(candidate), (q, doc)
            found = [i async for i in local_backend.search_worklist(q)]
            assert _ids(found) == _ids([i for i in stored if q.matches(i)]), q
    assert decided > 100 and trusted_rows > 1000  # the residual path was exercised


async def test_keys_padded_with_nul_still_find_their_rows(local_backend: LocalBackend) -> None:
    """The columns drop NULs at the ends, the matcher does not: narrowing must agree."""
    padded = item(1, "A^B", sps_item("S1", "CT01\0", "CT\0", "20250110", status="DONE\0"))
    plain = item(2, "A^B", sps_item("S2", "CT01", "CT", "20250110", status="DONE"))
    await local_backend.upsert_worklist_items([padded, plain])
    for keys, expected in [
        (((MODALITY, "CT\0"),), {"1"}),
        (((MODALITY, "CT"),), {"2"}),
        (((STATION, "CT01\0"),), {"1"}),
        (((SPS_STATUS, "DONE\0*"),), {"1"}),
        (((SPS_STATUS, "DONE*"),), {"1", "2"}),
        (((STATION, "CT01"), (START_DATE, "20250110")), {"2"}),
    ]:
        found = [r async for r in local_backend.search_worklist(query(*keys))]
        assert step_ids(found) == expected, keys


def _exact(ds: JsonDataset) -> int:
    (row,) = split_item(ds)
    return row.exact


@pytest.mark.parametrize(
    ("stored", "plain"),
    [
        (["CT"], True),
        ([" CT "], True),
        (["", "CT"], True),
        ([None, "CT"], True),
        (["C\0T"], True),
        ([], True),
        (["CT\0"], False),
        (["\0CT"], False),
        (["\0"], False),
        ([5], False),
        ([True], False),
    ],
)
def test_plain_text_is_what_both_sides_see(stored: list[Any], plain: bool) -> None:
    assert plain_text(attr("CS", *stored) if stored else attr("CS")) is plain
    assert plain_text(None) and not plain_text({"vr": "CS", "Value": "CT"})


@pytest.mark.parametrize(
    ("stored", "column", "exact"),
    [
        (["20250110"], "20250110", True),
        ([" 20250110 "], "20250110", True),
        (["", "20250110"], "20250110", True),
        ([None, "20250110"], "20250110", True),
        (["\0", "20250110"], "20250110", True),  # a NUL alone is blank on both sides
        (["20250110\0"], "20250110", False),  # the matcher strips whitespace only
        (["20250230"], "20250230", False),  # no calendar date: the matcher never matches
        ([20250110], "20250110", False),  # not text: the matcher never matches it
    ],
)
def test_exact_date_is_what_the_matcher_parses(stored: list[Any], column: str, exact: bool) -> None:
    assert exact_date(attr("DA", *stored), column) is exact


def test_rows_get_exact_bits_only_for_faithful_columns() -> None:
    clean = item(1, "A^B", sps_item("S1", "CT01", "CT", "20250110", "0800"))
    assert _exact(clean) == 255
    padded = item(2, "A^B", sps_item("S2", "CT01\0", "CT\0", "20250110\0", "0800"))
    assert _exact(padded) & (cols.EXACT_STATION | cols.EXACT_MODALITY | cols.EXACT_DATE) == 0
    numbers = item(3, "A^B", sps_item("S3", "CT01", "CT", "20250110"))
    numbers["00100020"] = attr("IS", 3)
    numbers["0020000D"] = attr("IS", 3)
    assert _exact(numbers) & (cols.EXACT_PATIENT_ID | cols.EXACT_STUDY_UID) == 0
    foreign = item(4, "A^B", sps_item("S4", "CT01", "CT", "٢٠٢٥٠١١٠"))
    (row,) = split_item(foreign)
    assert row.irregular and row.start_dt == ""


def _keys(*pairs: tuple[tuple[int, ...], str, str]) -> WorklistQuery:
    built = [QueryKey((SPS,), "SQ")] + [QueryKey(p, vr, (v,)) for p, vr, v in pairs]
    return WorklistQuery(keys=tuple(built))


def test_plan_decides_only_exact_keys() -> None:
    bench_b = query((MODALITY, "CT"), (START_DATE, "20250110-20250111"))
    plan = plan_search(bench_b)
    assert plan.decided == (MODALITY, START_DATE)
    assert plan.residual.compiled().universal
    plan = plan_search(query((STATION, "CT01"), (START_DATE, "20250110"), (PATIENT_NAME, "A*")))
    assert plan.decided == (STATION, START_DATE)
    assert not plan.residual.compiled().universal  # the name stays with the matcher
    # A date range with a time range is one combined period: the matcher decides.
    combined = query((START_DATE, "20250110-20250111"), (START_TIME, "0800-1000"))
    assert plan_search(combined).decided == ()
    # A time key at all keeps the date with the matcher (simple and safe).
    assert plan_search(query((START_DATE, "20250110"), (START_TIME, "0800"))).decided == ()
    # Wildcards, wrong VRs, dates that are not ASCII calendar dates: narrowing only.
    assert plan_search(query((MODALITY, "C*"))).decided == ()
    assert plan_search(_keys((MODALITY, "LT", "CT"))).decided == ()
    assert plan_search(_keys((START_DATE, "DA", "20250230-"))).decided == ()
    assert plan_search(query((STUDY_UID, (study_uid(1), study_uid(2))))).decided == (STUDY_UID,)
    universal = plan_search(WorklistQuery())
    assert not universal.narrowed and universal.residual.compiled().universal


def test_non_ascii_date_keys_are_not_narrowed() -> None:
    # "٢٠٢٥٠١١٠" is 2025-01-10 for the matcher; a string range on start_dt would drop rows.
    plan = plan_search(query((START_DATE, "٢٠٢٥٠١١٠")))
    assert not plan.narrowed and plan.decided == ()


async def test_trusted_rows_skip_the_matcher_and_others_do_not(
    local_backend: LocalBackend,
) -> None:
    """A trusted column decides alone (the fast path is used); an untrusted one does not."""
    await local_backend.upsert_worklist_items(
        [
            item(1, "A^B", sps_item("S1", "CT01", "CT", "20250110")),
            item(2, "A^B", sps_item("S2", "CT01", "CT", "20250110")),
        ]
    )
    with sqlite3.connect(local_backend.path) as conn:
        # Make both columns lie: the documents say MR. Row 1 keeps its exact bits.
        conn.execute("UPDATE sps SET doc = replace(doc, '\"CT\"', '\"MR\"')")
        conn.execute("UPDATE sps SET exact = 0 WHERE sps_id = 'S2'")
    found = [r async for r in local_backend.search_worklist(query((MODALITY, "CT")))]
    assert step_ids(found) == {"1"}


async def test_schema_1_store_is_upgraded_and_trusts_nothing(local_backend: LocalBackend) -> None:
    await local_backend.upsert_worklist_items(
        [item(1, "A^B", sps_item("S1", "CT01", "CT", "20250110"))]
    )
    path = local_backend.path
    await local_backend.aclose()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE sps DROP COLUMN exact")
        conn.execute("UPDATE sps SET doc = replace(doc, '\"CT\"', '\"MR\"')")
        conn.execute("PRAGMA user_version = 1")
    reopened = await LocalBackend.open(StoreSettings(path=path))
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT exact FROM sps").fetchall() == [(0,)]
            assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        # The column says CT, the document MR: an old row is decided by the document.
        assert [r async for r in reopened.search_worklist(query((MODALITY, "CT")))] == []
        assert len([r async for r in reopened.search_worklist(query((STATION, "CT01")))]) == 1
    finally:
        await reopened.aclose()


async def test_prefix_range_before_the_surrogates_can_be_bound(local_backend: LocalBackend) -> None:
    step = sps_item("S1", "CT01", "C\ud7ff\ue000", "20250110")
    await local_backend.upsert_worklist_items([item(1, "A^B", step)])
    plan = plan_search(query((MODALITY, "C\ud7ff*")))
    assert all(isinstance(p, str) and p.encode() for p in plan.params)
    found = [r async for r in local_backend.search_worklist(query((MODALITY, "C\ud7ff*")))]
    assert step_ids(found) == {"1"}
