"""Turn a :class:`WorklistQuery` into SQL that narrows the candidate rows with indexes.

The SQL narrows: every row it keeps is still checked by the shared matcher for every key
the SQL does not decide exactly (see *Residual matching* below). So a key is translated
only where the translation keeps every true match (a superset is fine, a dropped match is
a bug):

* exact values (no ``*``/``?``/``"``, one value) of AE/CS/LO/SH keys -> equality, or a
  prefix range for a value with a literal head before its first wildcard (both without
  NULs and spaces at the ends, as the columns hold them);
* Patient's Name (Alphabetic group) -> equality or a prefix range over a folded key (no
  case, no accents) of the matcher's canonical form, plus the padded-component case, so
  literal and case-insensitive matching both keep every match; skipped when fuzzy;
* SPS Start Date single value or range -> a prefix range of ``start_dt`` (time is left to
  the matcher: combined date-time ranges and TM precision are its business);
* Study Instance UID list -> ``IN``.

Rows flagged ``irregular`` (their columns cannot stand for the item) are always added back
through a second arm, so they reach the matcher whatever the narrowing.

**Residual matching.** Deciding every row with the whole matcher costs most of a search
that returns hundreds of steps. Where a SQL condition is *exactly* C.2.2.2 matching, the
matcher need not repeat it: :attr:`SqlPlan.residual` is the query without those keys,
valid for rows whose ``trusted`` column (the fourth) is 1; every other row (irregular,
stored before schema 2, or with a column that is not exactly the matcher's view: see
``items.py`` EXACT_*) is decided by the whole query. A key is decided by SQL only when:

* it has its standard VR and one value without ``*``, ``?``, ``"`` or ``\\`` (a UID list:
  every UID non-empty), so the matcher compares by plain equality after stripping spaces;
* the row's column holds exactly what the matcher compares (EXACT_* bit): stored values
  are text padded with spaces only (dates: one ASCII calendar date, other values blank);
* the key sits in the Scheduled Procedure Step Sequence, which holds exactly one item in
  every stored row, so "some item matches all nested keys" splits into SQL + residual;
* for SPS Start Date: both ends are ASCII calendar dates and the query has no matching
  SPS Start Time key (a date range with a time range is one combined period,
  C.2.2.2.5.3, left to the matcher); then a day's prefix range is exactly DA range
  matching.

Patient's Name (PN rules, case folding, component groups) is always left to the matcher.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from gateway.backends.local import items as columns
from gateway.backends.local.items import fold_name
from gateway.model.matching import parse_da
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
START_TIME: TagPath = (SPS_SEQ, 0x00400003)

# Plain string keys narrowed by equality or literal-prefix range: path -> column, the VR
# the key must have to be decided by SQL alone, and the row's EXACT_* bit that allows it.
_STRING_COLUMNS: dict[TagPath, tuple[str, str, int]] = {
    MODALITY: ("s.modality", "CS", columns.EXACT_MODALITY),
    SPS_STATUS: ("s.status", "CS", columns.EXACT_STATUS),
    SPS_ID: ("s.sps_id", "SH", columns.EXACT_SPS_ID),
    PATIENT_ID: ("s.patient_id", "LO", columns.EXACT_PATIENT_ID),
    ACCESSION: ("s.accession", "SH", columns.EXACT_ACCESSION),
}
_SPECIAL = re.compile(r'[*?"\\]')
_WILDCARD = re.compile(r"[*?]")
# ASCII digits only: start_dt holds ASCII dates, and other digits would not sort with them.
_DATE = re.compile(r"[0-9]{8}")
_DATE_RANGE = re.compile(r"([0-9]{8})?-([0-9]{8})?")
_DATE_END = ":"  # sorts after every digit and '.', so "D" <= start_dt < "D:" is "starts with D"
# The document as UTF-8 bytes: orjson reads them as they are, a str would be decoded from
# UTF-8 and encoded back (about a tenth of fetching and decoding a row).
_DOC = "CAST(s.doc AS BLOB)"


@dataclass
class SqlPlan:
    """The statement to run and its parameters (kept separate: values are never inlined).

    Rows come as (start_dt, id, doc, trusted), the doc as UTF-8 JSON bytes. ``residual`` is
    the query minus the keys the SQL decides exactly; it is valid for rows with ``trusted``
    = 1 only, the others need the whole query (it is the query itself when SQL decides
    nothing).
    """

    sql: str
    params: list[str] = field(default_factory=list)
    narrowed: bool = False
    residual: WorklistQuery = field(default_factory=WorklistQuery)
    decided: tuple[TagPath, ...] = ()  # the keys SQL decides for trusted rows


def _upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return None
    following = last + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be bound (nor stored) as UTF-8
        following = 0xE000
    return prefix[:-1] + chr(following)


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


def _string_condition(key: QueryKey, column: str, where: list[str], params: list[str]) -> bool:
    """Narrow on a plain string column; True when the condition is an exact match.

    Columns lose NULs as well as spaces at both ends (``items._strings``) while the matcher
    strips spaces only; a stored value the key matches has the key's column form, the key
    without NULs and spaces at its ends, so that form is compared.
    """
    value = _single(key)
    if value is None or '"' in value or "\\" in value:
        return False
    head = _WILDCARD.split(value, maxsplit=1)[0]
    if head == value:
        literal = value.strip(" \0")
        if literal:
            where.append(f"{column} = ?")
            params.append(literal)
        return literal == value
    prefix = head.strip(" \0")
    if prefix:
        _prefix_range(column, prefix, where, params)
    return False


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


def _exact_dates(bounds: tuple[str | None, str | None]) -> bool:
    """Both given ends are calendar dates, so the day range is exactly DA range matching."""
    return all(end is None or parse_da(end) is not None for end in bounds)


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


def _uid_condition(key: QueryKey, where: list[str], params: list[str]) -> bool:
    """Narrow on Study Instance UID; True when the condition is exact List of UID matching."""
    if not key.is_matching:
        return False
    uids = [v.strip("\0 ") for v in key.values]
    if not uids or any(not u or _SPECIAL.search(u) for u in uids):
        return False
    where.append(f"s.study_uid IN ({', '.join('?' for _ in uids)})")
    params.extend(uids)
    return key.vr == "UI"


def _time_is_matched(query: WorklistQuery) -> bool:
    """A matching SPS Start Time key (it may combine with the date, C.2.2.2.5.3)."""
    return any(key.path == START_TIME and key.is_matching for key in query.keys)


def _residual(query: WorklistQuery, decided: set[TagPath]) -> WorklistQuery:
    """The query with the decided keys made universal (kept as return keys)."""
    if not decided:
        return query
    keys = tuple(QueryKey(k.path, k.vr) if k.path in decided else k for k in query.keys)
    return replace(query, keys=keys)


def plan_search(query: WorklistQuery) -> SqlPlan:
    """The narrowing SQL for ``query``; rows come as (start_dt, id, doc, trusted), ordered."""
    where: list[str] = []
    params: list[str] = []
    station: str | None = None
    date: tuple[str | None, str | None] | None = None
    decided: dict[TagPath, int] = {}  # key path -> EXACT_* bit the row needs
    for key in query.keys:
        if key.path in _STRING_COLUMNS:
            column, vr, bit = _STRING_COLUMNS[key.path]
            if _string_condition(key, column, where, params) and key.vr == vr:
                decided[key.path] = bit
        elif key.path == STATION:
            value = _single(key)
            literal = value.strip(" \0") if value is not None else ""
            if value is not None and literal and not _SPECIAL.search(value):
                station = literal  # the column form, as in _string_condition
                if key.vr == "AE" and literal == value:
                    decided[key.path] = columns.EXACT_STATION
        elif key.path == START_DATE:
            bounds = _date_bounds(key)
            if bounds is not None:
                date = bounds
                if key.vr == "DA" and _exact_dates(bounds) and not _time_is_matched(query):
                    decided[key.path] = columns.EXACT_DATE
        elif key.path == PATIENT_NAME:
            _name_condition(key, query.fuzzy, where, params)
        elif key.path == STUDY_UID and _uid_condition(key, where, params):
            decided[key.path] = columns.EXACT_STUDY_UID
    if station is None and date is None and not where:
        return SqlPlan(
            f"SELECT s.start_dt, s.id, {_DOC}, 1 FROM sps AS s ORDER BY 1, 2", [], False, query
        )
    mask = 0
    for bit in decided.values():
        mask |= bit
    # The mask is ours (not a user value), so it is written into the statement.
    trusted = f"(s.exact & {mask}) = {mask}" if mask else "1"
    head: list[str] = []
    head_params: list[str] = []
    if station is not None:
        source = "sps_station AS k JOIN sps AS s ON s.id = k.sps"
        selected = f"k.start_dt, k.sps, {_DOC}, {trusted}"
        head.append("k.ae = ?")
        head_params.append(station)
        if date is not None:
            _date_condition(date, "k.start_dt", head, head_params)
    else:
        source = "sps AS s"
        selected = f"s.start_dt, s.id, {_DOC}, {trusted}"
        if date is not None:
            _date_condition(date, "s.start_dt", head, head_params)
    conditions = " AND ".join([*head, "s.irregular = 0", *where])
    sql = (
        f"SELECT {selected} FROM {source} WHERE {conditions} "
        f"UNION ALL SELECT s.start_dt, s.id, {_DOC}, 0 FROM sps AS s WHERE s.irregular != 0 "
        "ORDER BY 1, 2"
    )
    residual = _residual(query, set(decided))
    return SqlPlan(sql, head_params + params, True, residual, tuple(sorted(decided)))
