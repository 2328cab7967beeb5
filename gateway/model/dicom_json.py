"""DICOM JSON Model (PS3.18 Annex F) <-> pydicom, strict request-body parsing, canonical form.

pydicom's ``to_json_dict``/``from_json`` do not meet F.2 (spec digest json-xml-models.md
§4: insertion order, ``[]`` for empty sequences, ``""`` instead of ``null``, empty PN groups,
a crash on an empty PN inside a multi-valued element, DS numbers that are no legal DS,
warnings that quote values). So this module walks pydicom's data elements itself and uses
pydicom only for its element model and for Specific Character Set decoding on read.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any

import orjson
from pydicom import config as pydicom_config
from pydicom.datadict import keyword_dict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import format_number_as_ds

from gateway.errors import InvalidAttributeValue, InvalidPayload, PayloadTooLarge
from gateway.model.types import JsonDataset

# Table F.2.3-1, grouped by how values are written.
STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
INT_VRS = frozenset({"SL", "SS", "UL", "US"})
FLOAT_VRS = frozenset({"FL", "FD"})
BIG_INT_VRS = frozenset({"SV", "UV"})  # JSON number, or string beyond 2**53
DECIMAL_VRS = frozenset({"DS", "IS"})  # JSON number or string
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})  # InlineBinary only
BULK_DATA_VRS = frozenset(
    {"DS", "FL", "FD", "IS", "LT", "SL", "SS", "ST", "SV", "UC", "UL", "US", "UT", "UV"}
    | BINARY_VRS
)
KNOWN_VRS = STRING_VRS | INT_VRS | FLOAT_VRS | BIG_INT_VRS | DECIMAL_VRS | BINARY_VRS
KNOWN_VRS |= {"AT", "PN", "SQ"}
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""FL/FD values JSON numbers cannot hold; written as these strings (our convention)."""

_ATTR_MEMBERS = frozenset({"vr", "Value", "InlineBinary", "BulkDataURI"})
_KEY_RE = re.compile(r"[0-9A-F]{8}")
STANDARD_KEYS = frozenset(f"{tag:08X}" for tag in keyword_dict.values())
"""The keys of the standard's attributes: a set lookup decides most keys of a dataset."""


def is_tag_key(key: object) -> bool:
    """An attribute key of the DICOM JSON Model: 8 upper-case hex digits."""
    return key in STANDARD_KEYS or (isinstance(key, str) and _KEY_RE.fullmatch(key) is not None)


INTEGER_RE = re.compile(r"[+-]?[0-9]+")
DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SAFE_INT = 2**53  # beyond this JSON numbers lose precision in many consumers
# Spaces around these values are not significant (PS3.5 Table 6.2-1); others: trailing only.
_STRIP_BOTH = frozenset({"AE", "CS", "LO", "SH", "AS", "DA", "DT", "TM", "UI"})


# ---------------------------------------------------------------- numbers and names


def format_ds(number: float) -> str:
    """A legal DS string (at most 16 characters) for a JSON number (pitfall 7)."""
    if isinstance(number, int):
        text = str(number)
        if len(text) <= 16:
            return text
        number = float(number)
    if not math.isfinite(number):
        raise ValueError("DS cannot hold a non-finite number")
    integral = str(int(number)) if number.is_integer() and abs(number) < 1e16 else ""
    for text in (integral, repr(number), f"{number:.15g}"):
        if 0 < len(text) <= 16:
            return text
    return format_number_as_ds(number)


def _canonical_ds(number: float) -> int | float:
    value = float(format_ds(number))
    return int(value) if value.is_integer() and abs(value) < _SAFE_INT else value


def decimal_from_text(text: str, vr: str) -> int | float | str:
    """IS/DS text as a JSON number; text that is no legal number stays a (stripped) string."""
    text = text.strip(" ")
    if INTEGER_RE.fullmatch(text):
        number = int(text)
        return number if abs(number) < _SAFE_INT else text
    if DECIMAL_RE.fullmatch(text):  # for IS this is an invalid value, but still a number
        value = float(text)
        if math.isfinite(value):
            return _canonical_ds(value) if vr == "DS" else value
    return text


def decimal_text(number: float, vr: str) -> str:
    """The DICOM text of an IS/DS JSON number (what XML and binary DICOM carry)."""
    if vr == "DS":
        return format_ds(number)
    if isinstance(number, float):
        return str(int(number)) if number.is_integer() and abs(number) < _SAFE_INT else repr(number)
    return str(number)


def _canonical_decimal(value: Any, vr: str) -> Any:
    """Canonical JSON form of one IS/DS value: the number its DICOM text stands for."""
    if isinstance(value, str):
        return decimal_from_text(value, vr) if value.strip(" ") else None
    return decimal_from_text(decimal_text(value, vr), vr)


def clean_pn_group(group: str) -> str:
    """Drop insignificant trailing spaces and empty trailing components of a PN group."""
    return group.rstrip(" ").rstrip("^")


def pn_to_json(text: str) -> dict[str, str] | None:
    """``Yamada^Tarou=山田^太郎`` -> ``{"Alphabetic": ..., "Ideographic": ...}``; None if empty."""
    groups = (clean_pn_group(g) for g in text.split("=")[:3])
    result = {name: group for name, group in zip(PN_GROUPS, groups, strict=False) if group}
    return result or None


def pn_from_json(value: dict[str, Any]) -> str:
    """The DICOM string of a PN JSON object (trailing empty groups dropped)."""
    return "=".join(value.get(name) or "" for name in PN_GROUPS).rstrip("=")


# ---------------------------------------------------------------- Dataset -> JSON


def dataset_to_json(ds: Dataset) -> JsonDataset:
    """A pydicom Dataset as a canonical DICOM JSON object (sorted, no group lengths).

    Text values come out decoded (pydicom applies the dataset's Specific Character Set when
    it converts raw elements); (0008,0005) itself is kept as an ordinary attribute.
    """
    result: JsonDataset = {}
    for elem in ds:  # pydicom iterates in ascending tag order
        tag = int(elem.tag)
        if tag & 0xFFFF:  # group length elements are not allowed (F.2.2)
            result[f"{tag:08X}"] = _element_to_json(elem)
    return result


def _element_to_json(elem: DataElement) -> dict[str, Any]:
    vr = str(elem.VR)
    if " or " in vr:  # ambiguous VR pydicom could not resolve, e.g. "US or SS"
        vr = vr.split(" or ")[0]
    raw = elem.value
    if vr == "SQ":
        items = [dataset_to_json(item) for item in raw or ()]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if vr in BINARY_VRS or isinstance(raw, bytes | bytearray):
        if raw is not None and not isinstance(raw, bytes | bytearray):
            raise InvalidAttributeValue(
                f"({elem.tag.group:04X},{elem.tag.element:04X}) {vr}: value is not bytes",
                offending=[int(elem.tag)],
            )
        vr = vr if vr in BINARY_VRS else "UN"  # undecoded text: keep it faithful as UN
        return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode()} if raw else {"vr": vr}
    convert = _TO_JSON[vr]
    values = [
        None if v is None or v == "" else convert(v, vr)
        for v in (raw if isinstance(raw, MultiValue | list | tuple) else (raw,))
    ]
    if not values or values == [None]:
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _text_to_json(value: Any, vr: str) -> str | None:
    if isinstance(value, str):
        text = value
    elif isinstance(value, date | time):  # datetime_conversion is on
        text = getattr(value, "original_string", None) or _format_temporal(value)
    else:
        text = str(value)
    text = text.rstrip(" \x00")
    return text or None


def _format_temporal(value: date | time) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d%H%M%S.%f") + (value.strftime("%z") if value.tzinfo else "")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    return value.strftime("%H%M%S.%f")


def _float_to_json(value: Any, vr: str) -> float | str:
    number = float(value)
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def _big_int_to_json(value: Any, vr: str) -> int | str:
    number = int(value)
    return number if abs(number) < _SAFE_INT else str(number)


_TO_JSON: dict[str, Callable[[Any, str], Any]] = {
    **dict.fromkeys(STRING_VRS, _text_to_json),
    **dict.fromkeys(INT_VRS, lambda v, vr: int(v)),
    **dict.fromkeys(FLOAT_VRS, _float_to_json),
    **dict.fromkeys(BIG_INT_VRS, _big_int_to_json),
    **dict.fromkeys(DECIMAL_VRS, lambda v, vr: decimal_from_text(str(v), vr)),
    "PN": lambda v, vr: pn_to_json(str(v)),  # str() of a PersonName is decoded
    "AT": lambda v, vr: f"{int(v):08X}",
}


# ---------------------------------------------------------------- JSON -> Dataset


def json_to_dataset(obj: JsonDataset) -> Dataset:
    """A pydicom Dataset from a DICOM JSON object (shape-checked first).

    Values are Python str/numbers; no Specific Character Set is added (the encoder picks
    one). Values pydicom cannot hold raise InvalidAttributeValue; BulkDataURI raises
    InvalidPayload (MWL/MPPS need no bulk data). pydicom's value validation is off here:
    checking values is the job of the MWL/MPPS model, and pydicom's warnings quote values.
    """
    validate_json_dataset(obj)
    return _build_dataset(obj, ())


def _build_dataset(obj: JsonDataset, where: tuple[str, ...], top_tag: int = 0) -> Dataset:
    """Build one level; errors name the path and, as offending tag, the top-level one."""
    ds = Dataset()
    for key in sorted(obj):  # creators (gggg,00xx) before their private elements
        tag = int(key, 16)
        if not tag & 0xFFFF:
            continue
        offending = top_tag or tag
        attr = obj[key]
        vr = attr["vr"]
        if "BulkDataURI" in attr:
            raise InvalidPayload(
                f"{_where((*where, key))}: BulkDataURI is not supported", offending=[offending]
            )
        try:
            if vr == "SQ":
                items = attr.get("Value") or ()
                value: Any = Sequence(
                    [
                        _build_dataset(item, (*where, key, f"item {n}"), offending)
                        for n, item in enumerate(items, 1)
                    ]
                )
            else:
                value = pydicom_value(attr, vr)
            elem = DataElement(
                tag, vr, value, validation_mode=pydicom_config.IGNORE, already_converted=vr == "UN"
            )
        except (ValueError, TypeError, OverflowError) as exc:
            reason = exc.args[0] if isinstance(exc, _ValueProblem) else "value not valid for the VR"
            raise InvalidAttributeValue(
                f"{_where((*where, key))} ({vr}): {reason}", offending=[offending]
            ) from None
        elem.VR = vr  # pydicom swaps UN for the dictionary VR; keep what was sent
        ds.add(elem)
    return ds


class _ValueProblem(ValueError):
    """A value pydicom cannot take; args[0] says why without quoting the value."""


def pydicom_value(attr: dict[str, Any], vr: str) -> Any:
    """The value pydicom gets for a (non-sequence) attribute: str/number, list, or empty."""
    if "InlineBinary" in attr:
        return base64.b64decode(attr["InlineBinary"])
    values = attr.get("Value")
    if vr in BINARY_VRS or not values or values == [None]:
        return b"" if vr in BINARY_VRS else (None if vr in _NONE_EMPTY else "")
    convert = _FROM_JSON[vr]
    converted = [convert(v) for v in values]
    return converted[0] if len(converted) == 1 else converted


def _is_from_json(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = value.strip(" ")
        if text and not INTEGER_RE.fullmatch(text):
            raise _ValueProblem("IS value is not an integer")
        return text
    if isinstance(value, float) and not value.is_integer():
        raise _ValueProblem("IS value is not an integer")
    return str(int(value))


def _ds_from_json(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = value.strip(" ")
        if text and not DECIMAL_RE.fullmatch(text):
            raise _ValueProblem("DS value is not a decimal number")
        return text
    return format_ds(value)


def _number_from_json(value: Any, parse: Callable[[Any], Any]) -> Any:
    if value is None:
        raise _ValueProblem("empty value inside a multi-valued binary number")
    return parse(value)


def _float_from_json(value: Any) -> float:
    return NON_FINITE[value] if isinstance(value, str) else float(value)


_NONE_EMPTY = INT_VRS | FLOAT_VRS | BIG_INT_VRS | {"AT"}
_FROM_JSON: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(STRING_VRS, lambda v: v or ""),
    **dict.fromkeys(INT_VRS | BIG_INT_VRS, lambda v: _number_from_json(v, int)),
    **dict.fromkeys(FLOAT_VRS, lambda v: _number_from_json(v, _float_from_json)),
    "IS": _is_from_json,
    "DS": _ds_from_json,
    "PN": lambda v: pn_from_json(v) if v else "",
    "AT": lambda v: _number_from_json(v, lambda x: int(x, 16)),
}


# ---------------------------------------------------------------- parsing and shape checks


class _BadJson(ValueError):
    """Raised from json.loads hooks; the message names no values."""


# A JSON string, or an unterminated one running to the end; possessive, so never rescanned.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [0] * 256
_DEPTH_STEP[ord("[")] = _DEPTH_STEP[ord("{")] = 1
_DEPTH_STEP[ord("]")] = _DEPTH_STEP[ord("}")] = -1


def json_depth(body: bytes) -> int:
    """Deepest bracket nesting of a JSON text, found without recursion or parsing."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing duplicate members (RFC 8259 leaves them undefined)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                named = _KEY_RE.fullmatch(key) or key in _ATTR_MEMBERS
                raise _BadJson(f"duplicate member {key!r}" if named else "duplicate member")
            seen.add(key)
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJson("a JSON number is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not valid JSON")


_BIG_FLOAT = float(2**63)
_UTF8_BOM = b"\xef\xbb\xbf"


def _quick_parse(body: bytes, max_depth: int) -> Any:
    """orjson's parse if its members and numbers provably equal :func:`_strict_parse`'s.

    orjson keeps the last of duplicate members and reads integers beyond 64 bits as floats.
    Returns None (go the strict way) if a member was dropped; otherwise the tree, which the
    caller must still prove within ``max_depth`` (see :func:`parse_json_body`).

    The proof, in C where it can be: with no ``\\u`` escape in the body, every string
    keeps its characters, so orjson's own text of the tree has exactly the body's colons
    unless a member was dropped; and orjson writes every float of 1e16 or more with
    ``e+``, so without one no float stems from a huge integer. A body with escapes or
    such a float is counted in Python instead, as before.
    """
    try:
        parsed = orjson.loads(body.removeprefix(_UTF8_BOM))
    except orjson.JSONDecodeError:
        return None
    if type(parsed) is not dict and type(parsed) is not list:
        return None  # the strict way refuses it, in its words
    colons = body.count(b":")
    if b"\\u" not in body:
        text = orjson.dumps(parsed)
        if text.count(b":") != colons:
            return None
        if not _has_big_float(text):
            return parsed
    return parsed if _members(parsed, 1, max_depth) == colons else None


_BIG_EXPONENT = re.compile(rb"[0-9]e\+")
"""How orjson writes a float of 1e16 or more (smaller ones never carry an exponent)."""


def _has_big_float(orjson_text: bytes) -> bool:
    """True if orjson's text of a tree holds a float of 1e16 or more (or a string that looks
    like one, which only costs the caller a slower, exact way)."""
    return b"e+" in orjson_text and _BIG_EXPONENT.search(orjson_text) is not None


def _members(node: dict[str, Any] | list[Any], depth: int, max_depth: int) -> int:
    """Members of all objects in ``node``; -1 if deeper than ``max_depth`` or a float is huge."""
    if depth > max_depth:
        return -1
    if type(node) is dict:
        count = len(node)
        values: Any = node.values()
    else:
        count = 0
        values = node
    for value in values:
        kind = type(value)
        if kind is str:
            continue  # most leaves: nothing to count
        if kind is dict or kind is list:
            inner = _members(value, depth + 1, max_depth)
            if inner < 0:
                return -1
            count += inner
        elif kind is float and not -_BIG_FLOAT < value < _BIG_FLOAT:
            return -1
    return count


def _strict_parse(body: bytes, max_depth: int) -> Any:
    """The reference parse: Python's json with hooks that refuse what RFC 8259 leaves open."""
    depth = json_depth(body)
    if depth > max_depth:
        raise InvalidPayload(f"JSON nesting depth {depth} exceeds the limit of {max_depth}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"body is not valid UTF-8 (at byte {exc.start})") from None
    try:
        return json.loads(
            text.removeprefix("\ufeff"),
            object_pairs_hook=_object_pairs,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as exc:
        raise InvalidPayload(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except _BadJson as exc:
        raise InvalidPayload(f"malformed JSON: {exc}") from None
    except (ValueError, RecursionError):
        raise InvalidPayload("malformed JSON: a value cannot be represented") from None


def parse_json_body(
    body: bytes, *, max_depth: int = 32, max_items: int = 10000
) -> list[JsonDataset]:
    """Parse a body holding one DICOM JSON object or an array of them, shape-checked.

    ``max_depth`` limits JSON bracket nesting (a top-level array counts as one level, each
    sequence level adds three); ``max_items`` limits datasets (top-level objects plus
    sequence items). Keys are upper-cased; group-length keys are kept but ignored by every
    converter. Raises InvalidPayload (PayloadTooLarge for too many items).
    """
    parsed = _quick_parse(body, max_depth)
    if parsed is not None:
        datasets, first_depth = _datasets(parsed)
        try:
            deepest = _validate(
                datasets,
                first_depth=first_depth,
                max_depth=max_depth,
                max_items=max_items,
                repair=True,
            )
        except (InvalidPayload, PayloadTooLarge):
            pass  # refused: the strict way says why, in the same words as ever
        else:
            # Below a dataset the JSON nests at most three more levels (attribute, Value,
            # PN object): within the limit without a walk, else the walk decides.
            if deepest + 3 <= max_depth or _members(parsed, 1, max_depth) >= 0:
                return datasets
    datasets, first_depth = _datasets(_strict_parse(body, max_depth))
    _validate(
        datasets, first_depth=first_depth, max_depth=max_depth, max_items=max_items, repair=True
    )
    return datasets


def _datasets(parsed: Any) -> tuple[list[Any], int]:
    """The datasets of a parsed body and the JSON depth of the first one."""
    if isinstance(parsed, dict):
        return [parsed], 1
    if isinstance(parsed, list):
        return parsed, 2
    raise InvalidPayload("JSON body must be an object or an array of objects")


def validate_json_dataset(obj: Any, *, max_depth: int = 64, max_items: int = 100000) -> None:
    """Check the shape of one DICOM JSON object (see parse_json_body); raise InvalidPayload."""
    _validate([obj], first_depth=1, max_depth=max_depth, max_items=max_items)


def _where(parts: tuple[str, ...]) -> str:
    return " > ".join(parts)


def _validate(
    datasets: list[Any], *, first_depth: int, max_depth: int, max_items: int, repair: bool = False
) -> int:
    """Iterative shape check; with ``repair``, lower-case hex keys are upper-cased in place.

    Returns the JSON depth of the deepest dataset (``first_depth`` if none is nested).
    """
    multi = len(datasets) > 1
    stack = [
        (ds, (f"dataset {n}",) if multi else (), first_depth, 0)
        for n, ds in reversed(list(enumerate(datasets, 1)))
    ]
    count = 0
    deepest = first_depth
    while stack:
        ds, where, depth, top_tag = stack.pop()
        deepest = max(deepest, depth)
        count += 1
        if count > max_items:
            raise PayloadTooLarge(f"more than {max_items} datasets and sequence items")
        if not isinstance(ds, dict):
            raise InvalidPayload(f"{_where(where) or 'body'}: a dataset must be a JSON object")
        if depth > max_depth:
            raise InvalidPayload(f"{_where(where)}: sequences nested too deeply")
        lower_keys = False
        for n, (key, attr) in enumerate(ds.items(), 1):
            if not is_tag_key(key):
                if not (repair and _KEY_RE.fullmatch(key.upper())):
                    raise InvalidPayload(
                        f"{_where(where) or 'dataset'}: key of member {n} is not 8 hex digits"
                    )
                lower_keys = True
            # Most attributes are a VR alone or string values of a string VR: decided
            # here without a call; anything else gets the full check.
            vr = attr.get("vr") if type(attr) is dict else None
            if type(vr) is str:
                size = len(attr)
                if size == 1 and vr in KNOWN_VRS:
                    continue
                values = attr.get("Value")
                if size == 2 and type(values) is list and vr in STRING_VRS:
                    for value in values:
                        if type(value) is not str and value is not None:
                            break
                    else:
                        continue
            tag = top_tag or int(key, 16)
            items = _check_attribute(attr, where, key, tag)
            if items:
                here = (*where, key.upper())
                for i in range(len(items), 0, -1):
                    stack.append((items[i - 1], (*here, f"item {i}"), depth + 3, tag))
        if lower_keys:
            fixed = {key.upper(): attr for key, attr in ds.items()}
            if len(fixed) < len(ds):
                raise InvalidPayload(f"{_where(where) or 'dataset'}: duplicate member keys")
            ds.clear()
            ds.update(fixed)
    return deepest


def _fail(where: tuple[str, ...], key: str, tag: int, reason: str) -> InvalidPayload:
    return InvalidPayload(f"{_where((*where, key.upper()))}: {reason}", offending=[tag])


def _check_attribute(attr: Any, where: tuple[str, ...], key: str, tag: int) -> list[Any]:
    """Check one attribute object; return its sequence items (empty if not SQ)."""
    if not isinstance(attr, dict):
        raise _fail(where, key, tag, "attribute must be a JSON object")
    vr = attr.get("vr")
    if type(vr) is not str or vr not in KNOWN_VRS:
        if vr is None:
            raise _fail(where, key, tag, "'vr' is missing")
        raise _fail(where, key, tag, f"unknown VR {str(vr)[:4]!r}")
    for member in attr:
        if member not in _ATTR_MEMBERS:
            raise _fail(where, key, tag, f"unexpected member {str(member)[:20]!r}")
    if len(attr) > 2:
        raise _fail(where, key, tag, "only one of Value, InlineBinary and BulkDataURI is allowed")
    values = attr.get("Value")
    if values is not None:
        if type(values) is not list:
            raise _fail(where, key, tag, "'Value' must be an array")
        if vr in BINARY_VRS:
            raise _fail(where, key, tag, f"{vr} values must be InlineBinary or BulkDataURI")
        check = _VALUE_CHECKS[vr]
        for n, value in enumerate(values, 1):
            if not check(value):
                raise _fail(where, key, tag, f"value {n} has the wrong JSON type for VR {vr}")
        return values if vr == "SQ" else []
    if "InlineBinary" in attr:
        data = attr["InlineBinary"]
        if vr not in BINARY_VRS:
            raise _fail(where, key, tag, f"InlineBinary is not allowed for VR {vr}")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _fail(where, key, tag, "'InlineBinary' is not valid base64") from None
    elif "BulkDataURI" in attr:
        if vr not in BULK_DATA_VRS:
            raise _fail(where, key, tag, f"BulkDataURI is not allowed for VR {vr}")
        if not isinstance(attr["BulkDataURI"], str) or not attr["BulkDataURI"]:
            raise _fail(where, key, tag, "'BulkDataURI' must be a non-empty string")
    elif "Value" in attr:
        raise _fail(where, key, tag, "'Value' must be an array")
    return []


def _is_number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, str) and value in NON_FINITE


def _is_int_text(value: Any) -> bool:
    return isinstance(value, str) and INTEGER_RE.fullmatch(value) is not None


_PN_GROUP_SET = frozenset(PN_GROUPS)


def _is_pn(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict) or not value.keys() <= _PN_GROUP_SET:
        return False
    return all(g is None or isinstance(g, str) for g in value.values())


_VALUE_CHECKS: dict[str, Callable[[Any], bool]] = {
    **dict.fromkeys(STRING_VRS, lambda v: v is None or isinstance(v, str)),
    **dict.fromkeys(INT_VRS, lambda v: v is None or type(v) is int),
    **dict.fromkeys(FLOAT_VRS, lambda v: v is None or _is_number(v) or _is_non_finite(v)),
    **dict.fromkeys(BIG_INT_VRS, lambda v: v is None or type(v) is int or _is_int_text(v)),
    **dict.fromkeys(DECIMAL_VRS, lambda v: v is None or _is_number(v) or isinstance(v, str)),
    "PN": _is_pn,
    "SQ": lambda v: isinstance(v, dict),
    "AT": lambda v: v is None or (isinstance(v, str) and bool(_KEY_RE.fullmatch(v.upper()))),
}


# ---------------------------------------------------------------- canonical form and output


def normalize_json(obj: JsonDataset) -> JsonDataset:
    """Canonical form for comparisons; expects a shape-valid object.

    Keys upper-cased and sorted, group lengths dropped, empty strings -> null, a lone null
    (or no value) -> attribute without "Value", IS/DS as numbers (DS at legal precision),
    PN groups without trailing empty components, AT upper-case, InlineBinary re-encoded.
    """
    result: JsonDataset = {}
    for key in sorted(obj, key=str.upper):
        tag_key = key.upper()
        if tag_key.endswith("0000"):
            continue
        attr = obj[key]
        vr = attr["vr"]
        out: dict[str, Any] = {"vr": vr}
        if "Value" in attr and vr not in BINARY_VRS:
            values = [_normalize_value(v, vr) for v in attr["Value"]]
            if values and values != [None]:
                out["Value"] = values
        elif attr.get("InlineBinary"):
            data = base64.b64decode(attr["InlineBinary"])
            if data:
                out["InlineBinary"] = base64.b64encode(data).decode()
        elif "BulkDataURI" in attr:
            out["BulkDataURI"] = attr["BulkDataURI"]
        result[tag_key] = out
    return result


def _normalize_value(value: Any, vr: str) -> Any:
    if value is None:
        return None
    if vr == "SQ":
        return normalize_json(value)
    if vr == "PN":
        return pn_to_json(value) if isinstance(value, str) else pn_to_json(pn_from_json(value))
    if vr in DECIMAL_VRS:
        return _canonical_decimal(value, vr)
    if vr in STRING_VRS:
        text = value.strip(" \x00") if vr in _STRIP_BOTH else value.rstrip(" \x00")
        return text or None
    if vr == "AT":
        return value.upper()
    if vr in BIG_INT_VRS:
        return _big_int_to_json(int(value), vr)
    return value


def dumps_stored(doc: JsonDataset) -> str:
    """Compact JSON text of a dataset as the stores keep it (orjson: ~10x the json module).

    orjson refuses what the json module still writes (integers beyond 64 bits, lone
    surrogates); those rare documents take the json module.
    """
    try:
        return orjson.dumps(doc).decode()
    except orjson.JSONEncodeError:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def loads_stored(text: str | bytes) -> Any:
    """What :func:`dumps_stored` wrote, exactly.

    orjson reads an integer beyond 64 bits as a float without complaint. Such a float
    (any of 1e16 or more) shows as ``e+`` in orjson's own text of the tree, so a tree
    with one (or anything orjson refuses) is read again by the json module.
    """
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if type(parsed) is float or type(parsed) is dict or type(parsed) is list:
        again = orjson.dumps(parsed)
        if _has_big_float(again):
            return json.loads(text)
    return parsed


def dumps_json(datasets: list[JsonDataset]) -> bytes:
    """A compact UTF-8 JSON array (F.2.1), tag keys sorted at every level.

    orjson writes it ~10x faster than the json module (a 50-result Search body is ~65 KB);
    it sorts every object's keys, so ``"Value"`` comes before ``"vr"`` (JSON objects are
    unordered; F.2 imposes no order). Non-finite numbers never reach it: the model holds
    them as "NaN"/"Infinity" strings.
    """
    return orjson.dumps(datasets, option=orjson.OPT_SORT_KEYS)
