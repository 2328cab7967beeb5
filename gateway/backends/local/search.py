"""Turn a :class:`WorklistQuery` into SQL that narrows the candidate rows with indexes.

The SQL only ever narrows: every row it keeps is still checked by ``query.matches()``,
which alone decides. So a key is translated only where the translation keeps every true
match (a superset is fine, a dropped match is a bug):

* exact values (no ``*``/``?``/``"``, one value) of AE/CS/LO/SH keys -> equality, or a
  prefix range for a value with a literal head before its first wildcard;
* Patient's Name (Alphabetic group) -> equality or a prefix range over a folded key (no
  case, no accents) of the matcher's canonical form, plus the padded-component case, so
  literal and case-insensitive matching both keep every match; skipped when fuzzy;
* SPS Start Date single value or range -> a prefix range of ``start_dt`` (time is left to
  the matcher: combined date-time ranges and TM precision are its business);
* Study Instance UID list -> ``IN``.

Rows flagged ``irregular`` (their columns cannot stand for the item) are always added back
through a second arm, so they reach the matcher whatever the narrowing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.backends.local.items import fold_name
from gateway.model.query import QueryKey, WorklistQuery
from gateway.model.types import TagPath

SPS_SEQ = 0x00400100
STATION: TagPath = (SPS_SEQ, 0x00400001)
MODALITY: TagPath = (SPS_SEQ, 0x00080060)
START_DATE: TagPath = (SPS_SEQ, 0x00400002)
SPS_STATUS: TagPath = (SPS_SEQ, 0x00400020)
SPS_ID: TagPath = (SPS_SEQ, 0x00400009)
PATIENT_ID: TagPath = (0x00100020,)
PATIENT_NAME: TagPath = (0x00100010,)
ACCESSION: TagPath = (0x00080050,)
STUDY_UID: TagPath = (0x0020000D,)

# Plain string keys narrowed by equality or literal-prefix range: path -> column.
_STRING_COLUMNS: dict[TagPath, str] = {
    MODALITY: "s.modality",
    SPS_STATUS: "s.status",
    SPS_ID: "s.sps_id",
    PATIENT_ID: "s.patient_id",
    ACCESSION: "s.accession",
}
_SPECIAL = re.compile(r'[*?"\\]')
_WILDCARD = re.compile(r"[*?]")
_DATE = re.compile(r"\d{8}")
_DATE_RANGE = re.compile(r"(\d{8})?-(\d{8})?")
_DATE_END = ":"  # sorts after every digit and '.', so "D" <= start_dt < "D:" is "starts with D"


@dataclass
class SqlPlan:
    """The statement to run and its parameters (kept separate: values are never inlined)."""

    sql: str
    params: list[str] = field(default_factory=list)
    narrowed: bool = False


def _upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return None
    return prefix[:-1] + chr(last + 1)


def _prefix_range(column: str, prefix: str, where: list[str], params: list[str]) -> None:
    where.append(f"{column} >= ?")
    params.append(prefix)
    upper = _upper_bound(prefix)
    if upper is not None:
        where.append(f"{column} < ?")
        params.append(upper)


def _single(key: QueryKey) -> str | None:
    """The one matching value of a key, stripped, or None when it is not a single value."""
    if not key.is_matching or len(key.values) != 1:
        return None
    value = key.values[0].strip(" ")
    return value or None


def _string_condition(key: QueryKey, column: str, where: list[str], params: list[str]) -> None:
    value = _single(key)
    if value is None or '"' in value or "\\" in value:
        return
    head = _WILDCARD.split(value, maxsplit=1)[0]
    if head == value:
        where.append(f"{column} = ?")
        params.append(value)
    elif head:
        _prefix_range(column, head, where, params)


def _name_condition(key: QueryKey, fuzzy: bool, where: list[str], params: list[str]) -> None:
    """Patient's Name: mirror the matcher's canonical form, then a folded prefix.

    Only the Alphabetic group is used (other groups only add constraints). A stored name
    matches a wildcard key with literal head H when it starts with H or, because the
    matcher pads missing components with ``^``, when it is H without its trailing ``^``.
    """
    value = _single(key)
    if fuzzy or value is None or '"' in value or "\\" in value:
        return
    group = value.split("=", 1)[0].strip(" ").rstrip("^")
    if group in ("", "*"):
        return
    head = _WILDCARD.split(group, maxsplit=1)[0]
    if head == group:
        where.append("s.name_key = ?")
        params.append(fold_name(group))
        return
    folded = fold_name(head)
    if not folded:
        return
    terms: list[str] = []
    _prefix_range("s.name_key", folded, terms, params)
    condition = " AND ".join(terms)
    if head.endswith("^"):
        condition = f"({condition}) OR s.name_key = ?"
        params.append(fold_name(head.rstrip("^")))
    where.append(f"({condition})")


def _date_bounds(key: QueryKey) -> tuple[str | None, str | None] | None:
    """(low, high) dates of a DA key, None when it cannot be narrowed on safely."""
    value = _single(key)
    if value is None:
        return None
    if _DATE.fullmatch(value):
        return value, value
    match = _DATE_RANGE.fullmatch(value)
    if match is None or (match.group(1) is None and match.group(2) is None):
        return None
    return match.group(1), match.group(2)


def _date_condition(
    bounds: tuple[str | None, str | None], column: str, where: list[str], params: list[str]
) -> None:
    low, high = bounds
    # "0" also excludes rows with an unknown date: an empty value never matches (K.2.2.1.1.1).
    where.append(f"{column} >= ?")
    params.append(low or "0")
    if high is not None:
        where.append(f"{column} < ?")
        params.append(high + _DATE_END)


def _uid_condition(key: QueryKey, where: list[str], params: list[str]) -> None:
    if not key.is_matching:
        return
    uids = [v.strip("\0 ") for v in key.values]
    if not uids or any(not u or _SPECIAL.search(u) for u in uids):
        return
    where.append(f"s.study_uid IN ({', '.join('?' for _ in uids)})")
    params.extend(uids)


def plan_search(query: WorklistQuery) -> SqlPlan:
    """The narrowing SQL for ``query``; rows come as (start_dt, id, doc) in stable order."""
    where: list[str] = []
    params: list[str] = []
    station: str | None = None
    date: tuple[str | None, str | None] | None = None
    for key in query.keys:
        if key.path in _STRING_COLUMNS:
            _string_condition(key, _STRING_COLUMNS[key.path], where, params)
        elif key.path == STATION:
            value = _single(key)
            if value is not None and not _SPECIAL.search(value):
                station = value
        elif key.path == START_DATE:
            date = _date_bounds(key) or date
        elif key.path == PATIENT_NAME:
            _name_condition(key, query.fuzzy, where, params)
        elif key.path == STUDY_UID:
            _uid_condition(key, where, params)
    if station is None and date is None and not where:
        return SqlPlan("SELECT s.start_dt, s.id, s.doc FROM sps AS s ORDER BY 1, 2")
    head: list[str] = []
    head_params: list[str] = []
    if station is not None:
        source = "sps_station AS k JOIN sps AS s ON s.id = k.sps"
        columns = "k.start_dt, k.sps, s.doc"
        head.append("k.ae = ?")
        head_params.append(station)
        if date is not None:
            _date_condition(date, "k.start_dt", head, head_params)
    else:
        source = "sps AS s"
        columns = "s.start_dt, s.id, s.doc"
        if date is not None:
            _date_condition(date, "s.start_dt", head, head_params)
    conditions = " AND ".join([*head, "s.irregular = 0", *where])
    sql = (
        f"SELECT {columns} FROM {source} WHERE {conditions} "
        "UNION ALL SELECT s.start_dt, s.id, s.doc FROM sps AS s WHERE s.irregular != 0 "
        "ORDER BY 1, 2"
    )
    return SqlPlan(sql, head_params + params, narrowed=True)
