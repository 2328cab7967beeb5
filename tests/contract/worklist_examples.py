"""Worklist items and query builders for the contract and store tests.

``WORKLIST`` is small but covers what narrowing could get wrong: a multi-valued station,
an item with two SPS items, an empty date, a Latin-1 name, a lower-case name, and a name
with an Ideographic group.
"""

from __future__ import annotations

from typing import Any

from gateway.model.query import QueryKey, WorklistQuery
from gateway.model.types import JsonDataset

SPS = 0x00400100
STATION = (SPS, 0x00400001)
MODALITY = (SPS, 0x00080060)
START_DATE = (SPS, 0x00400002)
START_TIME = (SPS, 0x00400003)
SPS_ID = (SPS, 0x00400009)
SPS_STATUS = (SPS, 0x00400020)
PATIENT_NAME = (0x00100010,)
PATIENT_ID = (0x00100020,)
ACCESSION = (0x00080050,)
STUDY_UID = (0x0020000D,)

VRS = {
    STATION: "AE",
    MODALITY: "CS",
    START_DATE: "DA",
    START_TIME: "TM",
    SPS_ID: "SH",
    SPS_STATUS: "CS",
    PATIENT_NAME: "PN",
    PATIENT_ID: "LO",
    ACCESSION: "SH",
    STUDY_UID: "UI",
}


def attr(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON attribute (no values: the empty form)."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def sps_item(
    sps_id: str,
    station: str | list[str],
    modality: str,
    day: str = "",
    tm: str = "",
    status: str = "SCHEDULED",
    description: str = "Exam",
) -> JsonDataset:
    """One Scheduled Procedure Step Sequence item."""
    stations = station if isinstance(station, list) else [station]
    return {
        "00080060": attr("CS", modality),
        "00400001": attr("AE", *stations),
        "00400002": attr("DA", *([day] if day else [])),
        "00400003": attr("TM", *([tm] if tm else [])),
        "00400007": attr("LO", description),
        "00400009": attr("SH", sps_id),
        "00400020": attr("CS", status),
    }


def item(
    n: int,
    name: str | dict[str, str],
    *steps: JsonDataset,
    patient_id: str | None = None,
) -> JsonDataset:
    """A worklist item with study UID ``1.2.826.0.1.3680043.10.1.<n>``."""
    pn = name if isinstance(name, dict) else {"Alphabetic": name}
    return {
        "00080050": attr("SH", f"ACC{n:04d}"),
        "00100010": {"vr": "PN", "Value": [pn]},
        "00100020": attr("LO", patient_id or f"PID{n}"),
        "00100030": attr("DA", "19700101"),
        "00100040": attr("CS", "O"),
        "0020000D": attr("UI", study_uid(n)),
        "00321060": attr("LO", "Requested procedure"),
        "00400100": {"vr": "SQ", "Value": list(steps)},
        "00401001": attr("SH", f"RP{n}"),
    }


def study_uid(n: int) -> str:
    """The Study Instance UID of example item ``n``."""
    return f"1.2.826.0.1.3680043.10.1.{n}"


WORKLIST: list[JsonDataset] = [
    item(1, "Müller^Jürgen", sps_item("S1", "CT01", "CT", "20250110", "0800")),
    item(2, "Smith^Anna", sps_item("S2", "CT01", "CT", "20250110", "1400")),
    item(3, "Smith^John", sps_item("S3", "MR01", "MR", "20250110", "0900")),
    item(4, "Doe^Jane", sps_item("S4", ["MR01", "MR02"], "MR", "20250111", "1000")),
    item(5, "smith^anna", sps_item("S5", "CT02", "CT", "20250112", "083000", "STARTED")),
    item(6, "Nobody^Empty", sps_item("S6", "US01", "US")),
    item(
        7,
        "Brown^Bob",
        sps_item("S7a", "CT01", "CT", "20250113", "0700"),
        sps_item("S7b", "MR01", "MR", "20250113", "1500"),
    ),
    item(
        8,
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"},
        sps_item("S8", "MR01", "MR", "20250111", "0800"),
    ),
]
"""Ids of the resulting steps: "1".."6", "7a", "7b", "8" (see :func:`step_ids`)."""

ALL_STEPS = {"1", "2", "3", "4", "5", "6", "7a", "7b", "8"}


def query(*keys: tuple[tuple[int, ...], str | tuple[str, ...]], **flags: Any) -> WorklistQuery:
    """A query from (path, value) pairs; a tuple value is a UID list."""
    built = [QueryKey((SPS,), "SQ")]
    for path, value in keys:
        values = value if isinstance(value, tuple) else (value,)
        built.append(QueryKey(path, VRS[path], values))
    return WorklistQuery(keys=tuple(built), **flags)


def step_id(result: JsonDataset) -> str:
    """The example step a result stands for: SPS ID without the "S"."""
    sps = result["00400100"]["Value"]
    assert len(sps) == 1, "every result holds exactly one SPS item"
    value: str = sps[0]["00400009"]["Value"][0]
    return value.removeprefix("S")


def step_ids(results: list[JsonDataset]) -> set[str]:
    """The example steps of a result list (asserting no step comes twice)."""
    ids = [step_id(r) for r in results]
    assert len(ids) == len(set(ids)), f"duplicate results: {sorted(ids)}"
    return set(ids)
