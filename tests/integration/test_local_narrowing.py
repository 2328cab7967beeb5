"""Index narrowing never drops a true match: randomized search vs brute-force matching.

Items mix the awkward cases (case and accent variants, padded and trailing-caret names,
Ideographic groups, multi-valued attributes, legacy dates, empty values); queries mix exact
values, wildcards, ranges and case variants. The store's answer must equal the shared
matcher applied to every stored item. The SQL plan is also checked directly with
case-insensitive PN matching, which the narrowing must support as well.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import unicodedata
from typing import Any

import pytest

from gateway.backends.local import LocalBackend
from gateway.backends.local.items import fold_name
from gateway.backends.local.search import plan_search
from gateway.model.query import QueryKey, WorklistQuery
from gateway.model.types import JsonDataset
from tests.contract.worklist_examples import (
    ACCESSION,
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    SPS,
    SPS_STATUS,
    START_DATE,
    START_TIME,
    STATION,
    STUDY_UID,
    VRS,
    attr,
    study_uid,
)

NAMES: list[Any] = [
    "Müller^Jürgen",
    "MÜLLER^JÜRGEN",
    "Muller^Jurgen",
    "müller",
    "Smith^Anna^^",
    "SMITH^ANNA",
    "Smith",
    "Smith^",
    "Doe^Jane^Q^Dr^Jr",
    "Straße^Öl",
    "STRASSE^OL",
    "İnce^Ayşe",
    "ince^ayse",
    " Lee^Kim ",
    "Σίσυφος^Ζ",
    "ΣΊΣΥΦΟΣ",
    {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"},
    {"Ideographic": "山田^花子"},
    ["Two^Names", "Second^Value"],
    None,
]
STATIONS: list[Any] = ["CT01", "CT02", "MR01", ["MR01", "MR02"], "ct01", "CT1", None]
MODALITIES: list[Any] = ["CT", "MR", "ct", "US", ["CT", "MR"], None]
DATES: list[Any] = ["20250110", "20250111", "20250112", "2025.01.11", "20250230", None]
TIMES: list[Any] = ["0800", "083000", "1400", "08", "12:30", "235959.5", None]
IDS: list[Any] = ["P1", "P10", "p1", "P2", ["P1", "P3"], None]
STATUSES: list[Any] = ["SCHEDULED", "STARTED", "scheduled", None]


def _values(vr: str, value: Any) -> dict[str, Any]:
    if value is None:
        return attr(vr)
    listed = value if isinstance(value, list) else [value]
    if vr == "PN":
        return {
            "vr": "PN",
            "Value": [v if isinstance(v, dict) else {"Alphabetic": v} for v in listed],
        }
    return attr(vr, *listed)


def _random_item(rng: random.Random, n: int) -> JsonDataset:
    sps = {
        "00080060": _values("CS", rng.choice(MODALITIES)),
        "00400001": _values("AE", rng.choice(STATIONS)),
        "00400002": _values("DA", rng.choice(DATES)),
        "00400003": _values("TM", rng.choice(TIMES)),
        "00400009": attr("SH", f"S{n}"),
        "00400020": _values("CS", rng.choice(STATUSES)),
    }
    return {
        "00080050": _values("SH", rng.choice(IDS)),
        "00100010": _values("PN", rng.choice(NAMES)),
        "00100020": _values("LO", rng.choice(IDS)),
        "0020000D": attr("UI", study_uid(n)),
        "00400100": {"vr": "SQ", "Value": [sps]},
    }


def _mutate(rng: random.Random, text: str) -> str:
    """A wildcard or case variant of a stored string value."""
    choice = rng.randrange(6)
    if choice == 0 or not text:
        return text
    if choice == 1:
        return text[: rng.randrange(1, len(text) + 1)] + "*"
    if choice == 2:
        i = rng.randrange(len(text))
        return text[:i] + "?" + text[i + 1 :]
    if choice == 3:
        return text.upper()
    if choice == 4:
        return text.lower()
    return "*" + text[rng.randrange(len(text)) :]


def _name_key(rng: random.Random) -> str:
    name = rng.choice([n for n in NAMES if isinstance(n, str)])
    variant = _mutate(rng, name.strip())
    extra = rng.choice(["", "", "^*", "^", "=*", "=山田*"])
    return variant + extra if "=" not in variant else variant


def _date_key(rng: random.Random) -> str:
    days = ["20250110", "20250111", "20250112"]
    low, high = sorted(rng.sample(days, 2))
    return rng.choice([low, f"{low}-{high}", f"-{high}", f"{low}-"])


def _time_key(rng: random.Random) -> str:
    return rng.choice(["0800", "0800-0830", "-1200", "1200-", "08-09", "083000"])


def _random_query(rng: random.Random) -> WorklistQuery:
    makers = {
        STATION: lambda: _mutate(rng, rng.choice(["CT01", "MR01", "MR02", "CT1"])),
        MODALITY: lambda: _mutate(rng, rng.choice(["CT", "MR", "US"])),
        START_DATE: lambda: _date_key(rng),
        START_TIME: lambda: _time_key(rng),
        SPS_STATUS: lambda: _mutate(rng, "SCHEDULED"),
        PATIENT_NAME: lambda: _name_key(rng),
        PATIENT_ID: lambda: _mutate(rng, rng.choice(["P1", "P10", "P3"])),
        ACCESSION: lambda: _mutate(rng, "P1"),
    }
    keys = [QueryKey((SPS,), "SQ")]
    for path in rng.sample(sorted(makers), rng.randrange(1, 4)):
        keys.append(QueryKey(path, VRS[path], (makers[path](),)))
    if rng.random() < 0.1:
        keys.append(QueryKey(STUDY_UID, "UI", (study_uid(1), study_uid(7))))
    return WorklistQuery(keys=tuple(keys))


def _ids(items: list[JsonDataset]) -> list[str]:
    return sorted(i["00400100"]["Value"][0]["00400009"]["Value"][0] for i in items)


@pytest.mark.slow
async def test_narrowed_search_equals_brute_force(local_backend: LocalBackend) -> None:
    rng = random.Random(20250110)
    await local_backend.upsert_worklist_items([_random_item(rng, n) for n in range(1, 161)])
    stored = [i async for i in local_backend.search_worklist(WorklistQuery())]
    assert len(stored) == 160
    narrowed = 0
    with sqlite3.connect(local_backend.path) as conn:
        for _ in range(250):
            query = _random_query(rng)
            plan = plan_search(query)
            narrowed += plan.narrowed
            found = [i async for i in local_backend.search_worklist(query)]
            assert _ids(found) == _ids([i for i in stored if query.matches(i)]), query
            # Same plan, case-insensitive PN matching: still a superset of the matches.
            candidates = [json.loads(r[2]) for r in conn.execute(plan.sql, plan.params)]
            insensitive = [i for i in candidates if query.matches(i, case_insensitive_pn=True)]
            expected = [i for i in stored if query.matches(i, case_insensitive_pn=True)]
            assert _ids(insensitive) == _ids(expected), query
    assert narrowed > 180  # the test exercised the narrowing, not the full scan


def _ignorecase_equal(a: str, b: str) -> bool:
    return re.fullmatch(re.escape(a), b, re.IGNORECASE) is not None


@pytest.mark.parametrize("block", [(0x20, 0x250), (0x370, 0x530), (0x1E00, 0x2000)])
def test_fold_never_separates_what_matching_equates(block: tuple[int, int]) -> None:
    for code in range(*block):
        char = chr(code)
        if unicodedata.category(char).startswith("C"):
            continue
        variants = {char.lower(), char.upper(), char.casefold(), char.swapcase()}
        for other in variants:
            if len(other) == 1 and (other == char or _ignorecase_equal(char, other)):
                assert fold_name(char) == fold_name(other), (char, other)
            if char.casefold() == other.casefold():
                assert fold_name(char) == fold_name(other), (char, other)
        assert fold_name("x" + char + "y").startswith(fold_name("x" + char)), char
