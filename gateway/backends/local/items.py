"""Worklist items as the store keeps them: one row per Scheduled Procedure Step.

An imported item may carry several SPS items in its Scheduled Procedure Step Sequence;
MWL answers one response per SPS (PS3.4 K.6-1), so the store splits it into one row per SPS,
each holding the whole item with a one-item sequence, keyed by (Study Instance UID, SPS ID).

Besides the DICOM JSON document each row has a few plain columns the search narrows on.
A column can only stand for the item when the value is single and regular; when it is not
(several values of a VM-1 attribute, a date that is not ``YYYYMMDD``, a name with
several values), the row is flagged ``irregular`` and every search re-checks it with the
shared matcher instead of trusting the columns. Station AE Titles may legitimately be
multi-valued, so they get a side table with one row per value.

A regular column can still differ from what the matcher sees in corner cases (a number
instead of text, NUL padding, a date that is no calendar date). ``SpsRow.exact`` has one
bit per column that holds *exactly* the matcher's view of its attribute; only those
columns may decide a key on their own (see ``search.py``), the others only narrow.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidAttributeValue, MissingAttribute
from gateway.model.dicom_json import dumps_stored, validate_json_dataset
from gateway.model.matching import parse_da
from gateway.model.types import JsonDataset, copy_json

# Tags as DICOM JSON keys.
SPECIFIC_CHARACTER_SET = "00080005"
ACCESSION_NUMBER = "00080050"
MODALITY = "00080060"
PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
STUDY_INSTANCE_UID = "0020000D"
SCHEDULED_STATION_AE = "00400001"
SPS_START_DATE = "00400002"
SPS_START_TIME = "00400003"
SPS_DESCRIPTION = "00400007"
SPS_ID = "00400009"
SPS_STATUS = "00400020"
SPS_SEQUENCE = "00400100"

# ASCII digits only: ``\d`` also takes other scripts' digits, which int() reads as numbers
# but which do not sort like dates in start_dt.
_DATE = re.compile(r"[0-9]{8}")
_TIME = re.compile(r"([0-9]{2})([0-9]{2})?([0-9]{2})?(\.[0-9]{1,6})?")

# Bits of SpsRow.exact (stored in sps.exact): this column is exactly the matcher's view.
EXACT_MODALITY = 1
EXACT_STATION = 2  # the sps_station rows
EXACT_DATE = 4  # the date part of start_dt
EXACT_STATUS = 8
EXACT_SPS_ID = 16
EXACT_PATIENT_ID = 32
EXACT_ACCESSION = 64
EXACT_STUDY_UID = 128


@dataclass(frozen=True, slots=True)
class SpsRow:
    """One scheduled procedure step ready to be written."""

    study_uid: str
    sps_id: str
    start_dt: str  # normalised YYYYMMDD[HHMMSS[.ffffff]], "" when unknown
    modality: str | None
    patient_id: str | None
    patient_name: str | None  # Alphabetic group as stored, for listings
    name_key: str | None  # normalised Patient's Name, for prefix narrowing
    accession: str | None
    status: str | None
    stations: tuple[str, ...]
    irregular: bool
    doc: str  # the DICOM JSON text of the item with exactly one SPS item
    exact: int = 0  # EXACT_* bits; 0 trusts no column (always safe)


def values(element: Any) -> list[Any]:
    """The ``Value`` array of a DICOM JSON attribute, [] when absent or empty."""
    if not isinstance(element, dict):
        return []
    found = element.get("Value")
    return found if isinstance(found, list) else []


def _strings(ds: JsonDataset, key: str) -> list[str]:
    """Non-empty string values of ``key`` with insignificant padding removed."""
    out = []
    for value in values(ds.get(key)):
        if isinstance(value, str) and value.strip(" \0"):
            out.append(value.strip(" \0"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append(str(value))
    return out


def single_string(ds: JsonDataset, key: str) -> str | None:
    """The value of a VM-1 string attribute, or None when absent, empty or multi-valued."""
    found = _strings(ds, key)
    return found[0] if len(found) == 1 else None


def person_name_alphabetic(value: Any) -> str:
    """The Alphabetic group of one PN value (tolerating pydicom's plain-string form)."""
    if isinstance(value, dict):
        text = value.get("Alphabetic", "")
        return text if isinstance(text, str) else ""
    if isinstance(value, str):
        return value.split("=", 1)[0]
    return ""


def fold_name(text: str) -> str:
    """Fold for narrowing: no case, no accents; never separates what a matcher equates.

    Looser than both the literal and the case-insensitive PN matcher (casefold after
    compatibility decomposition, combining marks dropped), so narrowing on it can only
    keep extra rows, never drop a true match.
    """
    # Upper-casing first also joins what re.IGNORECASE equates but casefold keeps apart
    # (dotless i and I); then Unicode's compatibility caseless form, accents dropped.
    nfkd = unicodedata.normalize
    folded = nfkd("NFKD", nfkd("NFKD", text).upper().casefold())
    return "".join(c for c in folded if not unicodedata.combining(c))


def name_search_key(alphabetic: str) -> str:
    """The stored name in the matcher's canonical form (padding, trailing ``^`` cut), folded."""
    return fold_name(alphabetic.strip(" ").rstrip("^"))


def normalise_time(text: str) -> str | None:
    """TM to ``HHMMSS[.ffffff]`` for ordering; None when it is not a DICOM time."""
    match = _TIME.fullmatch(text.replace(":", "").strip())
    if match is None:
        return None
    hh, mm, ss, frac = match.groups()
    return f"{hh}{mm or '00'}{ss or '00'}{frac or ''}"


def _texts(element: Any) -> tuple[list[str], bool]:
    """Non-blank values without padding (numbers as text, as ``_strings``) and plainness.

    Plain: every value is null or text padded with spaces only. The column strips spaces
    and NULs, the string matcher strips spaces only and never matches a non-string; for a
    plain attribute both see the same non-blank values, and its blank values (spaces)
    match no key SQL compares, so its column is exactly the matcher's view.
    """
    if not isinstance(element, dict):
        return [], element is None
    found = element.get("Value")
    if found is None:
        return [], True
    if not isinstance(found, list):
        return [], False
    out: list[str] = []
    plain = True
    for value in found:
        if isinstance(value, str):
            text = value.strip(" \0")
            if text:
                out.append(text)
            if plain and value.strip(" ") != text:
                plain = False
        elif value is not None:
            plain = False
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append(str(value))
    return out, plain


def plain_text(element: Any) -> bool:
    """True when the column of this attribute is exactly what the string matcher compares."""
    return _texts(element)[1]


def _text_values(element: Any) -> list[Any] | None:
    """The values of an attribute when every one is null or text, else None."""
    if element is None:
        return []
    if not isinstance(element, dict):
        return None
    found = element.get("Value")
    if found is None:
        return []
    if not isinstance(found, list) or any(v is not None and not isinstance(v, str) for v in found):
        return None
    return found


def exact_date(element: Any, date: str) -> bool:
    """True when ``date`` (the column's ASCII ``YYYYMMDD``) is all the DA matcher can see.

    The matcher reads ``value.strip()`` of text values only and needs a calendar date; the
    other values must be blank, which the matcher can never parse as a date.
    """
    found = _text_values(element)
    if found is None or parse_da(date) is None:
        return False
    return all(v is None or not v.strip(" \0") or v.strip() == date for v in found)


class _Columns:
    """Collects column values, notes when one cannot stand for the item, and exact bits."""

    def __init__(self) -> None:
        self.irregular = False
        self.exact = 0

    def single(self, element: Any, bit: int) -> str | None:
        found, plain = _texts(element)
        if plain:
            self.exact |= bit
        if len(found) > 1:
            self.irregular = True
        return found[0] if len(found) == 1 else None


def _missing(key: str, what: str) -> MissingAttribute:
    return MissingAttribute(
        f"{what} ({key[:4]},{key[4:]}) is missing or empty", offending=[int(key, 16)]
    )


def split_item(item: Any, *, checked: bool = False) -> list[SpsRow]:
    """Turn one imported worklist item into its SPS rows.

    ``checked``: the DICOM JSON shape was already validated (e.g. by ``parse_json_body``);
    otherwise an ill-formed object raises :class:`gateway.errors.InvalidPayload`. Raise
    :class:`MissingAttribute` / :class:`InvalidAttributeValue` when the item lacks what the
    store keys on (Study Instance UID, SPS Sequence, SPS ID).

    Items are stored as received, not canonicalised (``normalize_json`` cost more than
    half of the import time): the matcher compares values by meaning and fronts must read
    any valid DICOM JSON anyway. Top-level keys are sorted; Specific Character Set (the
    text is Unicode, fronts encode on output) and group lengths are dropped.
    """
    if not isinstance(item, dict):
        raise InvalidAttributeValue("a worklist item must be a JSON object")
    if not checked:
        validate_json_dataset(item)
    study_values = _strings(item, STUDY_INSTANCE_UID)
    if not study_values:
        raise _missing(STUDY_INSTANCE_UID, "Study Instance UID")
    if len(study_values) > 1:
        raise InvalidAttributeValue(
            "Study Instance UID (0020,000D) must have one value",
            offending=[int(STUDY_INSTANCE_UID, 16)],
        )
    sps_items = [s for s in values(item.get(SPS_SEQUENCE)) if isinstance(s, dict)]
    if not sps_items:
        raise _missing(SPS_SEQUENCE, "Scheduled Procedure Step Sequence")
    base = {
        k: v
        for k, v in item.items()
        if k not in (SPS_SEQUENCE, SPECIFIC_CHARACTER_SET) and not k.endswith("0000")
    }
    rows: list[SpsRow] = []
    seen: set[str] = set()
    for sps in sps_items:
        sps_id = single_string(sps, SPS_ID)
        if sps_id is None:
            raise _missing(SPS_ID, "Scheduled Procedure Step ID")
        if sps_id in seen:
            raise InvalidAttributeValue(
                f"Scheduled Procedure Step ID {sps_id!r} occurs twice in one item",
                offending=[int(SPS_ID, 16)],
            )
        seen.add(sps_id)
        rows.append(_row(base, sps, study_values[0], sps_id))
    return rows


def _row(base: JsonDataset, sps: JsonDataset, study_uid: str, sps_id: str) -> SpsRow:
    cols = _Columns()
    doc = dict(sorted({**base, SPS_SEQUENCE: {"vr": "SQ", "Value": [sps]}}.items()))
    names = values(base.get(PATIENT_NAME))
    patient_name: str | None = None
    name_key: str | None = None
    if len(names) > 1:
        cols.irregular = True
    elif names:
        patient_name = person_name_alphabetic(names[0]) or None
        if patient_name is not None:
            name_key = name_search_key(patient_name)
    date_element = sps.get(SPS_START_DATE)
    date_text = cols.single(date_element, 0)
    start_dt = ""
    if date_text is not None:
        if _DATE.fullmatch(date_text):
            time_text = single_string(sps, SPS_START_TIME)
            time_key = normalise_time(time_text) if time_text is not None else None
            start_dt = date_text + (time_key or "")
            if exact_date(date_element, date_text):
                cols.exact |= EXACT_DATE
        else:
            cols.irregular = True
    stations, plain_stations = _texts(sps.get(SCHEDULED_STATION_AE))
    if plain_stations:
        cols.exact |= EXACT_STATION
    if plain_text(sps.get(SPS_ID)):
        cols.exact |= EXACT_SPS_ID
    # UIDs: both sides strip spaces and NULs; only a non-string value differs.
    if _text_values(base.get(STUDY_INSTANCE_UID)) is not None:
        cols.exact |= EXACT_STUDY_UID
    return SpsRow(
        study_uid=study_uid,
        sps_id=sps_id,
        start_dt=start_dt,
        modality=cols.single(sps.get(MODALITY), EXACT_MODALITY),
        patient_id=cols.single(base.get(PATIENT_ID), EXACT_PATIENT_ID),
        patient_name=patient_name,
        name_key=name_key,
        accession=cols.single(base.get(ACCESSION_NUMBER), EXACT_ACCESSION),
        status=cols.single(sps.get(SPS_STATUS), EXACT_STATUS),
        stations=tuple(stations),
        irregular=cols.irregular,
        doc=dumps_stored(doc),
        exact=cols.exact,
    )


def with_sps_status(doc: JsonDataset, status: str) -> JsonDataset:
    """A copy of a stored SPS row's document with its SPS Status set to ``status``."""
    new: JsonDataset = copy_json(doc)
    sequence = new.setdefault(SPS_SEQUENCE, {"vr": "SQ", "Value": [{}]})
    items = sequence.setdefault("Value", [{}]) or [{}]
    sequence["Value"] = items
    items[0][SPS_STATUS] = {"vr": "CS", "Value": [status]}
    return new
