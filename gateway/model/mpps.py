"""MPPS rules of PS3.4 Annex F, Table F.7.2-1: create, update, final state.

Pure functions over DICOM JSON datasets; violations raise the typed errors of
:mod:`gateway.errors` carrying the offending tags, so every backend and front gives the
same verdict. The table itself is data in :mod:`gateway.model.mpps_table`.

``offending`` always names the attribute's own tag, also for an attribute nested in a
sequence (the error message spells out the full path), because a DIMSE Attribute
Identifier List can only hold plain tags.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import (
    BadQuery,
    FinalStateViolation,
    IncompatibleUpdate,
    InternalError,
    InvalidAttributeValue,
    InvalidPayload,
    MissingAttribute,
    MissingAttributeValue,
    NotAllowedAttribute,
)
from gateway.model import mpps_table as table
from gateway.model.dicom_json import STANDARD_KEYS
from gateway.model.types import JsonDataset, TagPath, copy_json, tag_key
from gateway.model.uids import validate_uid

MPPS_SOP_CLASS_UID = "1.2.840.10008.3.1.2.3.3"
MPPS_RETRIEVE_SOP_CLASS_UID = "1.2.840.10008.3.1.2.3.4"

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
UNICODE_CHARSET = "ISO_IR 192"


class PpsStatus(enum.Enum):
    """Performed Procedure Step Status (0040,0252)."""

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"

    @property
    def is_final(self) -> bool:
        """COMPLETED and DISCONTINUED end the step: no further N-SET (F.1.5)."""
        return self is not PpsStatus.IN_PROGRESS


# --- Public API -----------------------------------------------------------------------------


def validate_create(uid: str, attributes: JsonDataset) -> JsonDataset:
    """Check an N-CREATE / Create and return the dataset to store (with SOP UIDs).

    Order of checks: UID syntax (0117), SOP Class/Instance UID in the data set must agree
    (0106), SCU-mandatory attributes present (0120, all listed), Type 1 values not empty
    (0121), enumerated values and status ``IN PROGRESS`` (0106, F.7.2.1.3). Attributes the
    table does not name are kept as sent: a proxy must not drop what an SCP may maintain.
    """
    validate_uid(uid)
    dataset = _canonical(attributes)
    _take_sop_uids(dataset, uid)
    found = _Findings()
    _walk(dataset, (), _PLANS[_Op.CREATE], found)
    found.raise_request_errors()
    if status_of(dataset) is not PpsStatus.IN_PROGRESS:
        raise InvalidAttributeValue(
            "Performed Procedure Step Status must be IN PROGRESS in a create",
            offending=(table.PPS_STATUS,),
        )
    dataset[tag_key(SOP_CLASS_UID)] = {"vr": "UI", "Value": [MPPS_SOP_CLASS_UID]}
    dataset[tag_key(SOP_INSTANCE_UID)] = {"vr": "UI", "Value": [uid]}
    return _sorted(dataset)


def apply_update(stored: JsonDataset, changes: JsonDataset) -> JsonDataset:
    """Check an N-SET / Update against the stored MPPS and return the new stored dataset.

    * The stored status must be IN PROGRESS, else :class:`FinalStateViolation`
      (0110 + A710, HTTP 409) whatever the request holds.
    * Request errors next (HTTP 400): "Not allowed" attributes (0105, all listed),
      attributes missing or empty inside the sequences sent (0120/0121, sequences are
      replaced whole so each item must be complete), bad status values (0106).
    * Note 5 / F.7.2.2.1: the SCU may set only attributes the N-CREATE created. Setting
      another top-level attribute is refused with :class:`IncompatibleUpdate` (409 as the
      Note under PS3.18 Table 15.5.3-1 allows, DIMSE 0110): the request is well-formed but
      does not fit the stored instance. Specific Character Set is exempt (it is not a
      value being set but describes the values sent).
    * When the merged status is COMPLETED or DISCONTINUED, the Final State column must
      hold on the merged result, else :class:`IncompatibleUpdate` naming the attributes.

    A differing Specific Character Set does not replace the stored one (F.7.2.2.3): the
    result says ``ISO_IR 192``, which represents the old and the new values alike.

    Neither input is changed. The result shares the attributes the update leaves alone
    with ``stored``; what the update sets is a copy.
    """
    current = status_of(stored)
    if current is None:
        raise InternalError("stored MPPS has no valid Performed Procedure Step Status")
    if current.is_final:
        raise FinalStateViolation(
            f"MPPS is {current.value}; it may no longer be updated",
            offending=(table.PPS_STATUS,),
        )
    update = _canonical(changes)
    _take_sop_uids(update, _first_string(stored.get(tag_key(SOP_INSTANCE_UID))))
    found = _Findings()
    _walk(update, (), _PLANS[_Op.SET], found)
    found.raise_request_errors()
    charset_key = tag_key(table.SPECIFIC_CHARACTER_SET)
    not_created = [int(key, 16) for key in update if key not in stored and key != charset_key]
    if not_created:
        raise IncompatibleUpdate(
            "attributes not created by the create cannot be set: "
            + ", ".join(_tag_text(tag) for tag in not_created),
            offending=not_created,
        )
    # Unchanged attributes are shared with ``stored``, not copied (the model's convention:
    # code that changes a dataset in place copies it first); ``update`` is already a copy.
    merged = dict(stored)
    new_charset = update.pop(charset_key, None)
    if new_charset is not None:
        merged[charset_key] = _merge_charset(merged.get(charset_key), new_charset)
    merged.update(update)
    new_status = status_of(merged)
    if new_status is not None and new_status.is_final:
        final = _Findings()
        _walk(merged, (), _PLANS[_Op.FINAL], final)
        problems = final.missing + final.empty + final.invalid
        if problems:
            raise IncompatibleUpdate(
                f"final state requirements for {new_status.value} not met: "
                + _paths_text(problems),
                offending=_leaf_tags(problems),
            )
    return _sorted(merged)


def status_of(mpps: JsonDataset) -> PpsStatus | None:
    """The Performed Procedure Step Status of a stored MPPS, if valid."""
    values = _strings(mpps.get(tag_key(table.PPS_STATUS)))
    if len(values) != 1 or values[0] is None:
        return None
    try:
        return PpsStatus(values[0].strip())
    except ValueError:
        return None


def referenced_steps(mpps: JsonDataset) -> list[tuple[str, str]]:
    """(Study Instance UID, Scheduled Procedure Step ID) per Scheduled Step Attributes item.

    Items without either value (the unscheduled case, F.7.2.1.2) name no worklist step
    and are skipped; duplicates are listed once, in item order.
    """
    attr = mpps.get(tag_key(table.SCHEDULED_STEP_ATTRIBUTES_SEQUENCE))
    pairs: dict[tuple[str, str], None] = {}
    for item in _items(attr):
        study = (_first_string(item.get(tag_key(table.STUDY_INSTANCE_UID))) or "").strip()
        step = (_first_string(item.get(tag_key(table.SCHEDULED_PROCEDURE_STEP_ID))) or "").strip()
        if study and step:
            pairs[(study, step)] = None
    return list(pairs)


def select_attributes(mpps: JsonDataset, tags: Sequence[int] | None) -> JsonDataset:
    """The top-level attributes ``tags`` of ``mpps`` (N-GET / Retrieve); ``None`` = all.

    Tags the MPPS lacks are left out (see :func:`missing_requested`); the result is a copy
    in ascending tag order (PS3.18 F.2).
    """
    if tags is None:
        return _sorted(copy_json(mpps))
    wanted = {tag_key(tag) for tag in _checked_tags(tags)}
    return _sorted({key: copy_json(attr) for key, attr in mpps.items() if key in wanted})


def missing_requested(mpps: JsonDataset, tags: Sequence[int] | None) -> tuple[int, ...]:
    """Requested tags ``mpps`` does not hold (N-GET warning 0001, Table F.8.2-2)."""
    if tags is None:
        return ()
    return tuple(tag for tag in dict.fromkeys(_checked_tags(tags)) if tag_key(tag) not in mpps)


# --- The table walk -------------------------------------------------------------------------


class _Op(enum.Enum):
    CREATE = "N-CREATE"
    SET = "N-SET"
    FINAL = "Final State"


@dataclass
class _Findings:
    """Paths that break a rule, collected over a whole dataset so errors list them all."""

    missing: list[TagPath] = field(default_factory=list)
    empty: list[TagPath] = field(default_factory=list)
    invalid: list[TagPath] = field(default_factory=list)
    not_allowed: list[TagPath] = field(default_factory=list)

    def raise_request_errors(self) -> None:
        """Raise the first kind of request error found, naming all its attributes."""
        for paths, error, text in (
            (self.not_allowed, NotAllowedAttribute, "attributes not allowed in an update"),
            (self.missing, MissingAttribute, "missing required attributes"),
            (self.empty, MissingAttributeValue, "required attributes are empty"),
            (self.invalid, InvalidAttributeValue, "invalid attribute values"),
        ):
            if paths:
                raise error(f"{text}: {_paths_text(paths)}", offending=_leaf_tags(paths))


def _has(item: JsonDataset, key: str) -> bool:
    attr = item.get(key)
    return attr is not None and _has_value(attr)


_UNIVERSAL_ID, _LOCAL_ID = tag_key(0x00400032), tag_key(0x00400031)
_CODE_VALUE, _LONG_CODE_VALUE, _URN_CODE_VALUE = (
    tag_key(0x00080100),
    tag_key(0x00080119),
    tag_key(0x00080120),
)

Requirement = bool | Callable[[JsonDataset], bool]
"""Always (True), never (False), or when the function says so for the item at hand."""

_CONDITIONS: dict[table.Condition, Callable[[JsonDataset], bool]] = {
    # "Extended character set used" cannot be seen in the DICOM JSON Model (always
    # Unicode) and "designator ambiguous" needs coding-scheme knowledge: both are left
    # to the SCU.
    table.Condition.EXTENDED_CHARSET: lambda item: False,
    table.Condition.SCHEME_AMBIGUOUS: lambda item: False,
    table.Condition.UNIVERSAL_ID_ABSENT: lambda item: not _has(item, _UNIVERSAL_ID),
    table.Condition.LOCAL_ID_ABSENT: lambda item: not _has(item, _LOCAL_ID),
    table.Condition.UNIVERSAL_ID_PRESENT: lambda item: _has(item, _UNIVERSAL_ID),
    table.Condition.SHORT_CODE: lambda item: (
        not (_has(item, _LONG_CODE_VALUE) or _has(item, _URN_CODE_VALUE))
    ),
    table.Condition.LONG_CODE: lambda item: (
        not (_has(item, _CODE_VALUE) or _has(item, _URN_CODE_VALUE))
    ),
    table.Condition.URN_CODE: lambda item: (
        not (_has(item, _CODE_VALUE) or _has(item, _LONG_CODE_VALUE))
    ),
    table.Condition.CODE_VALUE_PRESENT: lambda item: (
        _has(item, _CODE_VALUE) or _has(item, _LONG_CODE_VALUE)
    ),
}


def _holds(requirement: Requirement, item: JsonDataset) -> bool:
    """A requirement of a :class:`_Check` for this item."""
    return requirement is True or (requirement is not False and requirement(item))


@dataclass(frozen=True, slots=True)
class _Check:
    """One table row as one operation sees it, worked out once at import time.

    ``present`` / ``nonempty``: when the attribute must be present / hold a value (the
    function of a Condition is looked up here, not on every check).
    """

    key: str
    path: TagPath
    present: Requirement
    nonempty: Requirement
    refused: bool
    enumerated: tuple[str, ...]
    nested: bool


def _requirement(kind: str, condition: table.Condition | None) -> Requirement:
    """``1``/``2`` -> always; ``1C``/``2C`` -> when ``condition`` holds (no condition: always).

    Conditions no dataset can show count as false.
    """
    if kind in ("1", "2"):
        return True
    if kind in ("1C", "2C"):
        return True if condition is None else _CONDITIONS[condition]
    return False


def _check(row: table.Row, op: _Op) -> _Check:
    if op is _Op.CREATE:
        kind = table.scu_type(row.create)
    elif op is _Op.SET:
        kind = table.scu_type(row.set)
    else:
        kind = row.final_type
    # Zero length allowed? (PS3.4 5.4.2.1) Specific Character Set sent empty still says
    # something well defined (the default repertoire), which real SCUs do: accepted.
    nonempty: Requirement
    if row.condition is table.Condition.EXTENDED_CHARSET:
        nonempty = False
    elif op is _Op.FINAL:
        nonempty = _requirement(kind, row.condition) if kind in ("1", "1C") else False
    else:
        cell = row.create if op is _Op.CREATE else row.set
        nonempty = table.scu_type(cell).startswith("1") or table.scp_type(cell).startswith("1")
    return _Check(
        key=tag_key(row.tag),
        path=row.path,
        present=_requirement(kind, row.condition),
        nonempty=nonempty,
        refused=op is _Op.SET and not row.set_allowed,
        enumerated=row.enumerated,
        nested=row.path in table.CHILDREN,
    )


_Plan = dict[TagPath, tuple[_Check, ...]]

_PLANS: dict[_Op, _Plan] = {
    op: {parent: tuple(_check(row, op) for row in rows) for parent, rows in table.CHILDREN.items()}
    for op in _Op
}


def _walk(item: JsonDataset, parent: TagPath, plan: _Plan, found: _Findings) -> None:
    """Check ``item`` (a dataset or a sequence item at ``parent``) against the table rows."""
    for check in plan.get(parent, ()):
        attr = item.get(check.key)
        if attr is None:
            if _holds(check.present, item):
                found.missing.append(check.path)
            continue
        if check.refused:
            found.not_allowed.append(check.path)
            continue
        value = attr.get("Value") if type(attr) is dict else None
        # A first value that is a non-empty string decides "has a value" here, without a
        # call: most attributes are that.
        plain = type(value) is list and value and type(value[0]) is str and value[0]
        if not plain and not _has_value(attr):
            if _holds(check.nonempty, item):
                found.empty.append(check.path)
            continue
        if check.enumerated and not _is_enumerated(attr, check.enumerated):
            found.invalid.append(check.path)
        if check.nested:
            if attr.get("vr") != "SQ":
                found.invalid.append(check.path)
                continue
            for sub in _items(attr):
                _walk(sub, check.path, plan, found)


def _is_enumerated(attr: Any, allowed: tuple[str, ...]) -> bool:
    """One value, and one of ``allowed`` (the only enumerated row, the status, has VM 1)."""
    values = _strings(attr)
    return len(values) == 1 and values[0] is not None and values[0].strip() in allowed


# --- DICOM JSON helpers ---------------------------------------------------------------------

_KEY = re.compile(r"[0-9A-Fa-f]{8}")


def _canonical(dataset: Any) -> JsonDataset:
    """A deep copy with uppercase keys in ascending order; shape errors -> InvalidPayload."""
    if not isinstance(dataset, dict):
        raise InvalidPayload("a dataset must be a JSON object")
    out: JsonDataset = {}
    for key, attr in dataset.items():
        if key in STANDARD_KEYS:
            upper = key  # upper-case 8 hex digits already: no pattern, no upper()
        elif isinstance(key, str) and _KEY.fullmatch(key):
            upper = key.upper()
        else:
            raise InvalidPayload("attribute keys must be 8 hexadecimal digits")
        if upper in out:
            raise InvalidPayload(f"attribute {upper} appears twice")
        vr = attr.get("vr") if type(attr) is dict else None
        if type(vr) is not str:
            raise InvalidPayload(f"attribute {upper} is not an object with a vr")
        value = attr.get("Value")
        if value is None:
            out[upper] = {"vr": vr} if len(attr) == 1 else copy_json(attr)
        elif type(value) is not list:
            raise InvalidPayload(f"attribute {upper}: Value must be an array")
        elif vr == "SQ":
            out[upper] = {**attr, "Value": [_canonical(sub) for sub in value]}
        elif len(attr) == 2:  # {"vr", "Value"}: most values are strings, taken as they are
            out[upper] = {"vr": vr, "Value": [v if type(v) is str else copy_json(v) for v in value]}
        else:
            out[upper] = copy_json(attr)
    return out if _in_order(out) else _sorted(out)


def _in_order(dataset: JsonDataset) -> bool:
    keys = list(dataset)
    return all(a < b for a, b in itertools.pairwise(keys))


def _sorted(dataset: JsonDataset) -> JsonDataset:
    return dict(sorted(dataset.items()))


def _has_value(attr: Any) -> bool:
    """Not zero length: a value, a bulk data reference, or at least one sequence item."""
    if not isinstance(attr, dict):
        return False
    value = attr.get("Value")
    if isinstance(value, list) and value:
        first = value[0]
        if type(first) is str and first:  # the common case, decided without a loop
            return True
        if attr.get("vr") == "SQ" or any(_is_value(v) for v in value):
            return True
    return "BulkDataURI" in attr or "InlineBinary" in attr


def _is_value(value: Any) -> bool:
    """A non-empty single value; a PN object needs at least one non-empty group."""
    if isinstance(value, dict):
        return any(value.values())
    return value not in (None, "")


def _strings(attr: Any) -> list[str | None]:
    """The values of a string attribute; anything not a string is ``None``."""
    if not isinstance(attr, dict) or not isinstance(attr.get("Value"), list):
        return []
    return [v if isinstance(v, str) else None for v in attr["Value"]]


def _first_string(attr: Any) -> str | None:
    values = _strings(attr)
    return values[0] if values else None


def _items(attr: Any) -> Iterable[JsonDataset]:
    if not isinstance(attr, dict) or not isinstance(attr.get("Value"), list):
        return []
    return [item for item in attr["Value"] if isinstance(item, dict)]


def _take_sop_uids(dataset: JsonDataset, instance_uid: str | None) -> None:
    """Remove SOP Class/Instance UID from the data set after checking they agree.

    They travel outside the data set in DIMSE (PS3.4 5.4.2.3) and in the URL on the web;
    the gateway sets them itself on the stored MPPS.
    """
    sop_class = dataset.pop(tag_key(SOP_CLASS_UID), None)
    if sop_class is not None and _strings(sop_class) != [MPPS_SOP_CLASS_UID]:
        raise InvalidAttributeValue(
            "SOP Class UID in the data set is not the MPPS SOP Class", offending=(SOP_CLASS_UID,)
        )
    sop_instance = dataset.pop(tag_key(SOP_INSTANCE_UID), None)
    if (
        sop_instance is not None
        and instance_uid is not None
        and _strings(sop_instance) != [instance_uid]
    ):
        raise InvalidAttributeValue(
            "SOP Instance UID in the data set differs from the MPPS UID",
            offending=(SOP_INSTANCE_UID,),
        )


def _merge_charset(old: Any, new: Any) -> Any:
    """Stored charset unless the update declares a different one; then Unicode."""
    if not _has_value(new) or _strings(new) == _strings(old):
        return old if old is not None else new
    if old is None or not _has_value(old):
        return new
    return {"vr": "CS", "Value": [UNICODE_CHARSET]}


def _checked_tags(tags: Sequence[int]) -> list[int]:
    for tag in tags:
        if not isinstance(tag, int) or not 0 <= tag <= 0xFFFFFFFF:
            raise BadQuery("requested attribute is not a valid tag")
    return list(tags)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _path_text(path: TagPath) -> str:
    parts = []
    for depth in range(1, len(path) + 1):
        row = table.BY_PATH.get(path[:depth])
        parts.append(row.keyword if row is not None else _tag_text(path[depth - 1]))
    return ">".join(parts) + f" {_tag_text(path[-1])}"


def _paths_text(paths: Iterable[TagPath]) -> str:
    return ", ".join(dict.fromkeys(_path_text(path) for path in sorted(set(paths))))


def _leaf_tags(paths: Iterable[TagPath]) -> tuple[int, ...]:
    """The attributes' own tags, in path order, each once."""
    return tuple(dict.fromkeys(path[-1] for path in sorted(set(paths))))
