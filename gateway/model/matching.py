"""C-FIND attribute matching (PS3.4 C.2.2.2 as used by Annex K) on DICOM JSON datasets.

Keys are compiled once per query (wildcards to regular expressions, ranges to integer
intervals), because a store calls the matcher on thousands of items. Rules implemented:

* Universal matching: a zero-length key value, or ``*`` alone.
* Single value matching: exact and case-sensitive, except PN (optionally case-insensitive);
  leading/trailing padding is not significant; numbers, dates and times by meaning.
* Wild card matching (AE CS LO LT PN SH ST UC UR UT): ``*`` any run, ``?`` one Unicode
  character. PN keys are matched per component group (Alphabetic=Ideographic=Phonetic).
* Range matching (DA TM DT), open ranges included; a value with partial precision stands
  for its whole period (``10`` is 10:00:00.000000 to 10:59:59.999999) and matches when it
  overlaps the key's period. A TM range whose start is after its end matches nothing.
* Combined date-time matching: a DA key ``xxxDate`` and a TM key ``xxxTime`` at the same
  level that are both ranges form one continuous period (C.2.2.2.5.3, K.6-1 remark).
* List of UID matching; any value of a multi-valued stored attribute may match (C.2.2.3).
* Sequence matching: some stored item must satisfy all nested keys (C.2.2.2.6).
* K.2.2.1.1.1: an absent or zero-length stored value never matches a non-universal key.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from gateway.model import mwl_keys
from gateway.model.types import JsonDataset, TagPath, tag_key

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
NUMERIC_VRS = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"})
INTEGER_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
DATE_TIME_VRS = frozenset({"DA", "TM", "DT"})
TEXT_VRS = frozenset({"LT", "ST", "UT"})  # leading spaces significant, backslash allowed
UNIVERSAL = frozenset({"", "*"})

_DAY_US = 86_400_000_000
_NEG_INF = -(2**62)
_POS_INF = 2**62
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

Interval = tuple[int, int]
ValueMatcher = Callable[[Any], bool]
ItemMatcher = Callable[[JsonDataset], bool]

_DA_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM_RE = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_DT_RE = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"([+-]\d{4})?"
)
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_AT_RE = re.compile(r"[0-9A-Fa-f]{8}")


# --- dates and times as integer microsecond intervals -------------------------------


def _time_part(hh: str, mm: str | None, ss: str | None, frac: str | None) -> Interval | None:
    hour, minute, second = int(hh), int(mm or 0), int(ss or 0)
    if hour > 23 or minute > 59 or second > 60:
        return None
    lo = ((hour * 60 + minute) * 60 + second) * 1_000_000
    if frac:
        lo += int(frac.ljust(6, "0"))
        unit = 10 ** (6 - len(frac))
    else:
        unit = 3_600_000_000 if mm is None else 60_000_000 if ss is None else 1_000_000
    return lo, lo + unit - 1


def parse_da(text: str) -> Interval | None:
    """A DA value as the microseconds of its day, or None when invalid."""
    m = _DA_RE.fullmatch(text)
    if m is None:
        return None
    try:
        day = datetime.date(int(m[1]), int(m[2]), int(m[3])).toordinal() * _DAY_US
    except ValueError:
        return None
    return day, day + _DAY_US - 1


def parse_tm(text: str) -> Interval | None:
    """A TM value as microseconds since midnight covering its precision, or None."""
    m = _TM_RE.fullmatch(text)
    return None if m is None else _time_part(m[1], m[2], m[3], m[4])


def parse_dt(text: str) -> Interval | None:
    """A DT value (partial precision, optional UTC offset) as an interval, or None."""
    m = _DT_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day = int(m[1]), int(m[2] or 1), int(m[3] or 1)
    try:
        first = datetime.date(year, month, day).toordinal() * _DAY_US
        if m[2] is None:
            last_day = datetime.date(year, 12, 31)
        elif m[3] is None:
            last_day = datetime.date(year, month, calendar.monthrange(year, month)[1])
        else:
            last_day = datetime.date(year, month, day)
    except ValueError:
        return None
    if m[4] is None:
        lo, hi = first, last_day.toordinal() * _DAY_US + _DAY_US - 1
    else:
        time = _time_part(m[4], m[5], m[6], m[7])
        if time is None:
            return None
        lo, hi = first + time[0], first + time[1]
    if m[8]:
        hours, minutes = int(m[8][1:3]), int(m[8][3:5])
        offset = (hours * 60 + minutes) * 60_000_000 * (-1 if m[8][0] == "-" else 1)
        if minutes > 59 or not -12 * 3_600_000_000 <= offset <= 14 * 3_600_000_000:
            return None
        lo, hi = lo - offset, hi - offset
    return lo, hi


_PARSERS: dict[str, Callable[[str], Interval | None]] = {
    "DA": parse_da,
    "TM": parse_tm,
    "DT": parse_dt,
}


def _parse_stored(vr: str, value: Any) -> Interval | None:
    """Lenient parse of a stored DA/TM/DT (accepts the old ``.`` and ``:`` forms)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if vr == "DA" and len(text) == 10:
        text = text.replace(".", "")
    elif vr == "TM":
        text = text.replace(":", "")
    return _PARSERS[vr](text)


def split_range(vr: str, value: str) -> tuple[str, str] | None:
    """``(low, high)`` when ``value`` is a valid range of ``vr`` (either side may be '').

    None when it is not a range. A DT value that is valid as a single value with a
    negative UTC offset (``20240101-0500``) is taken as a single value.
    """
    parse = _PARSERS[vr]
    if "-" not in value or (vr == "DT" and parse(value) is not None):
        return None
    positions = [i for i, ch in enumerate(value) if ch == "-"]
    if vr != "DT" and len(positions) != 1:
        return None
    for i in positions:
        low, high = value[:i], value[i + 1 :]
        if (low or high) and all(not s or parse(s) is not None for s in (low, high)):
            return low, high
    return None


def key_interval(vr: str, value: str) -> Interval | None:
    """The period a DA/TM/DT key value (single or range) stands for, or None if invalid."""
    parse = _PARSERS[vr]
    bounds = split_range(vr, value)
    if bounds is None:
        return parse(value)
    low, high = (parse(s) if s else None for s in bounds)
    return (low[0] if low else _NEG_INF, high[1] if high else _POS_INF)


# --- key value checks shared with the query parser ----------------------------------


def normalize_value(vr: str, value: str) -> str:
    """Drop insignificant padding (PS3.5 6.2) from a key or stored string value."""
    if vr == "UI":
        return value.strip("\0 ")
    if vr in TEXT_VRS:
        return value.rstrip(" ")
    return value.strip(" ")


def check_key_value(vr: str, value: str) -> str | None:
    """Why ``value`` is not a usable C-FIND key value for ``vr``, or None when it is."""
    if value in UNIVERSAL:
        return None
    if "\\" in value and vr not in TEXT_VRS:
        return "a backslash (multiple values) is only allowed for List of UID matching"
    if vr in DATE_TIME_VRS:
        return None if key_interval(vr, value) else f"not a valid {vr} value or {vr} range"
    if vr == "UI":
        ok = len(value) <= 64 and _UID_RE.fullmatch(value)
        return None if ok else "not a valid UID"
    if vr == "AT":
        return None if _AT_RE.fullmatch(value) else "not a tag (8 hex digits)"
    if vr in NUMERIC_VRS:
        try:
            number = Decimal(value)
        except InvalidOperation:
            return f"not a valid {vr} number"
        if not number.is_finite() or (vr in INTEGER_VRS and number != number.to_integral()):
            return f"not a valid {vr} number"
    return None


# --- value matchers -----------------------------------------------------------------


def wildcard_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """``*``/``?`` pattern as a regex over Unicode characters (use ``fullmatch``)."""
    parts: list[str] = []
    for ch in pattern:
        if ch == "*":
            if not parts or parts[-1] != ".*":
                parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _string_matcher(vr: str, key: str) -> ValueMatcher:
    if vr in WILDCARD_VRS and ("*" in key or "?" in key):
        regex = wildcard_regex(key)
        return lambda v: isinstance(v, str) and regex.fullmatch(normalize_value(vr, v)) is not None
    if vr in TEXT_VRS or vr == "UI":
        return lambda v: isinstance(v, str) and normalize_value(vr, v) == key
    return lambda v: v == key or (v.__class__ is str and v.strip(" ") == key)


def _pn_group_matcher(key: str, ignore_case: bool) -> Callable[[str], bool]:
    key = key.strip(" ").rstrip("^")
    if "*" in key or "?" in key:
        regex = wildcard_regex(key, ignore_case=ignore_case)

        def wildcard(stored: str) -> bool:
            stored = stored.strip(" ").rstrip("^")
            if regex.fullmatch(stored):
                return True
            parts = stored.split("^")  # "DOE^JOHN^*" must match "DOE^JOHN"
            padded = "^".join(parts + [""] * (5 - len(parts)))
            return len(parts) < 5 and regex.fullmatch(padded) is not None

        return wildcard
    if ignore_case:
        folded = key.casefold()
        return lambda stored: stored.strip(" ").rstrip("^").casefold() == folded
    return lambda stored: stored.strip(" ").rstrip("^") == key


def _pn_matcher(key: str, ignore_case: bool) -> ValueMatcher:
    checks = [
        (name, _pn_group_matcher(group, ignore_case))
        for name, group in zip(_PN_GROUPS, key.split("="), strict=False)
        if group.strip(" ") not in UNIVERSAL
    ]

    def match(value: Any) -> bool:
        if isinstance(value, str):  # tolerated non-standard JSON form
            value = dict(zip(_PN_GROUPS, value.split("="), strict=False))
        if not isinstance(value, dict):
            return False
        for name, check in checks:
            stored = value.get(name)
            if not isinstance(stored, str) or not check(stored):
                return False
        return True

    return match


def _to_decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(value.strip() if isinstance(value, str) else str(value))
    except (InvalidOperation, ValueError):
        return None


def value_matcher(vr: str, key: str, *, case_insensitive_pn: bool = False) -> ValueMatcher:
    """A test of one stored value against one non-universal key value."""
    if vr == "PN":
        return _pn_matcher(key, case_insensitive_pn)
    if vr in DATE_TIME_VRS:
        interval = key_interval(vr, key)
        if interval is None:
            raise ValueError(f"not a valid {vr} key value")
        lo, hi = interval

        def in_period(value: Any) -> bool:
            stored = _parse_stored(vr, value)
            return stored is not None and stored[0] <= hi and stored[1] >= lo

        return in_period
    if vr in NUMERIC_VRS:
        number = _to_decimal(key)
        return lambda v: v is not None and _to_decimal(v) == number
    if vr == "AT":
        upper = key.upper()
        return lambda v: isinstance(v, str) and v.strip().upper() == upper
    return _string_matcher(vr, normalize_value(vr, key))


def element_matcher(
    vr: str, values: Iterable[str], *, case_insensitive_pn: bool = False
) -> Callable[[Any], bool]:
    """A test of one JSON element (or None when absent) against a key's values."""
    keys = [v for v in values if v not in UNIVERSAL]
    if vr == "UI":
        uids = frozenset(normalize_value("UI", v) for v in keys)
        checks: list[ValueMatcher] = [
            lambda v: isinstance(v, str) and normalize_value("UI", v) in uids
        ]
    else:
        checks = [value_matcher(vr, k, case_insensitive_pn=case_insensitive_pn) for k in keys]
    check = checks[0] if len(checks) == 1 else lambda v: any(c(v) for c in checks)

    def match(element: Any) -> bool:
        stored = element.get("Value") if element.__class__ is dict else None
        if stored:  # else K.2.2.1.1.1: a zero-length value never matches
            for value in stored:
                if value is not None and check(value):
                    return True
        return False

    return match


# --- compiling a whole query --------------------------------------------------------


class KeyLike(Protocol):
    """What the matcher needs of a query key (``gateway.model.query.QueryKey``)."""

    @property
    def path(self) -> TagPath: ...
    @property
    def vr(self) -> str: ...
    @property
    def values(self) -> tuple[str, ...]: ...


@dataclass
class _Node:
    vr: str
    values: tuple[str, ...] = ()
    children: dict[int, _Node] = field(default_factory=dict)


def _tree(keys: Iterable[KeyLike]) -> dict[int, _Node]:
    root: dict[int, _Node] = {}
    for key in sorted(keys, key=lambda k: k.path):
        level = root
        for tag in key.path[:-1]:
            level = level.setdefault(tag, _Node("SQ")).children
        node = level.setdefault(key.path[-1], _Node(key.vr))
        node.vr, node.values = key.vr, key.values
    return root


def _matchable(path: TagPath) -> bool:
    """Keys with Matching Key Type '-' (incl. K.6-1a) are never matched, only returned."""
    try:
        return mwl_keys.lookup(path).matching != "-"
    except KeyError:
        return True


def _keyword(path: TagPath) -> str:
    try:
        return mwl_keys.lookup(path).keyword
    except KeyError:
        return ""


def _is_range(vr: str, values: tuple[str, ...]) -> bool:
    return len(values) == 1 and split_range(vr, values[0]) is not None


class CompiledMatcher:
    """All matching keys of one query, compiled once; call :meth:`matches` per item."""

    def __init__(self, keys: Iterable[KeyLike], *, case_insensitive_pn: bool = False) -> None:
        self._ci = case_insensitive_pn
        self.sequence_filters: dict[TagPath, ItemMatcher] = {}
        """Item tests of sequences with nested matching keys (to keep matching items)."""
        self._root = self._level(_tree(keys), ())

    def matches(self, item: JsonDataset) -> bool:
        """True when ``item`` satisfies every matching key."""
        return self._root is None or self._root(item)

    @property
    def universal(self) -> bool:
        """True when no key constrains: every item matches (a store may skip decoding)."""
        return self._root is None

    def _level(self, level: dict[int, _Node], parent: TagPath) -> ItemMatcher | None:
        checks: list[tuple[str, Callable[[Any], bool]]] = []
        whole: list[ItemMatcher] = []
        paired = self._combined_pairs(level, parent, whole)
        for tag, node in level.items():
            path = (*parent, tag)
            if node.vr == "SQ":
                inner = self._level(node.children, path)
                if inner is not None:
                    self.sequence_filters[path] = inner
                    checks.append((tag_key(tag), _sequence_check(inner)))
            elif tag not in paired and _is_constraint(node, path):
                test = element_matcher(node.vr, node.values, case_insensitive_pn=self._ci)
                checks.append((tag_key(tag), test))
        if not checks and not whole:
            return None
        checks.sort(key=lambda check: level[int(check[0], 16)].vr == "SQ")  # cheap tests first

        def match(item: JsonDataset) -> bool:
            for key, check in checks:
                if not check(item.get(key)):
                    return False
            return all(test(item) for test in whole)

        return match

    @staticmethod
    def _combined_pairs(
        level: dict[int, _Node], parent: TagPath, out: list[ItemMatcher]
    ) -> set[int]:
        """Find ``xxxDate``/``xxxTime`` range pairs; add one DT-period test for each."""
        paired: set[int] = set()
        by_keyword = {_keyword((*parent, tag)): tag for tag in level}
        for keyword, date_tag in by_keyword.items():
            time_tag = by_keyword.get(keyword[:-4] + "Time") if keyword.endswith("Date") else None
            if time_tag is None:
                continue
            date, time = level[date_tag], level[time_tag]
            if date.vr != "DA" or time.vr != "TM":
                continue
            if not (_is_range("DA", date.values) and _is_range("TM", time.values)):
                continue
            if not (_matchable((*parent, date_tag)) and _matchable((*parent, time_tag))):
                continue
            out.append(_combined_check(date_tag, date.values[0], time_tag, time.values[0]))
            paired |= {date_tag, time_tag}
        return paired


def _is_constraint(node: _Node, path: TagPath) -> bool:
    """A non-universal key on a matchable attribute (binary VRs cannot be matched)."""
    universal = all(v in UNIVERSAL for v in node.values)
    return not universal and node.vr not in BINARY_VRS and _matchable(path)


def _sequence_check(inner: ItemMatcher) -> Callable[[Any], bool]:
    def match(element: Any) -> bool:
        items = element.get("Value") if isinstance(element, dict) else None
        return any(isinstance(it, dict) and inner(it) for it in items or ())

    return match


def combined_interval(date_key: str, time_key: str) -> Interval:
    """One period from a DA range and a TM range (C.2.2.2.5.3): d1 t1 to d2 t2."""
    date_bounds, time_bounds = split_range("DA", date_key), split_range("TM", time_key)
    if date_bounds is None or time_bounds is None:
        raise ValueError("combined date-time matching needs two ranges")
    (d_lo, d_hi), (t_lo, t_hi) = date_bounds, time_bounds
    lo, hi = _NEG_INF, _POS_INF
    if d_lo:
        day = parse_da(d_lo)
        start = parse_tm(t_lo) if t_lo else None
        lo = (day[0] if day else 0) + (start[0] if start else 0)
    if d_hi:
        day = parse_da(d_hi)
        end = parse_tm(t_hi) if t_hi else None
        hi = (day[0] if day else 0) + (end[1] if end else _DAY_US - 1)
    return lo, hi


def _combined_check(date_tag: int, date_key: str, time_tag: int, time_key: str) -> ItemMatcher:
    lo, hi = combined_interval(date_key, time_key)
    date_k, time_k = tag_key(date_tag), tag_key(time_tag)

    def match(item: JsonDataset) -> bool:
        dates, times = item.get(date_k) or {}, item.get(time_k) or {}
        for d in dates.get("Value") or ():
            day = _parse_stored("DA", d)
            if day is None:
                continue
            for t in times.get("Value") or ():
                period = _parse_stored("TM", t)
                if period and day[0] + period[0] <= hi and day[0] + period[1] >= lo:
                    return True
        return False

    return match
