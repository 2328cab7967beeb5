"""Native DICOM Model XML (PS3.19 A.1) <-> DICOM JSON Model (PS3.18 F.3.1).

pydicom has no XML support, so both directions live here. Output uses the RELAX NG
namespace ``http://dicom.nema.org/PS3.19/models/NativeDICOM`` (as dcm4che does); input is
accepted with that namespace or none. Input is parsed with defusedxml: any DOCTYPE (and so
any entity definition, e.g. a "billion laughs" bomb) is refused, never expanded.

Private elements follow A.1.5/F.3.1: XML writes ``gggg00ee`` plus ``privateCreator``; JSON
keeps the real tag ``ggggxxee`` and the creator element (gggg,00xx). The writer also emits
the creator elements as ordinary attributes so the reader finds the original block again;
a creator missing from the XML gets the lowest free block.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from typing import Any
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from pydicom.datadict import dictionary_VR, keyword_for_tag

from gateway.errors import InvalidPayload, PayloadTooLarge
from gateway.model.dicom_json import (
    BIG_INT_VRS,
    BINARY_VRS,
    BULK_DATA_VRS,
    DECIMAL_RE,
    DECIMAL_VRS,
    FLOAT_VRS,
    INT_VRS,
    INTEGER_RE,
    KNOWN_VRS,
    NON_FINITE,
    PN_GROUPS,
    STRING_VRS,
    clean_pn_group,
    decimal_from_text,
    decimal_text,
    validate_json_dataset,
)
from gateway.model.types import JsonDataset

NATIVE_DICOM_NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_ROOT_OPEN = f'<NativeDicomModel xmlns="{NATIVE_DICOM_NS}" xml:space="preserve">'
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")
_NUMBER = re.compile(r"[1-9][0-9]{0,8}")
# Characters XML 1.0 cannot carry at all; they become U+FFFD (DICOM text rarely has them).
_NOT_XML = "[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]"
_TEXT_SPECIAL = re.compile(f"[&<>\r]|{_NOT_XML}")
_ATTR_SPECIAL = re.compile(f'[&<>"\r\n\t]|{_NOT_XML}')
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_ESCAPES |= {"\r": "&#13;", "\n": "&#10;", "\t": "&#9;"}


# ---------------------------------------------------------------- JSON -> XML


def json_to_xml(obj: JsonDataset) -> bytes:
    """One complete Native DICOM Model document (UTF-8) for one DICOM JSON dataset."""
    validate_json_dataset(obj)
    parts = [_DECLARATION, _ROOT_OPEN]
    _write_dataset(obj, parts)
    parts.append("</NativeDicomModel>\n")
    return "".join(parts).encode("utf-8")


def _escape(text: str, pattern: re.Pattern[str] = _TEXT_SPECIAL) -> str:
    if not pattern.search(text):
        return text
    return pattern.sub(lambda m: _ESCAPES.get(m.group(), "\ufffd"), text)


def _write_dataset(obj: JsonDataset, parts: list[str]) -> None:
    for key in sorted(obj):
        tag = int(key, 16)
        if not tag & 0xFFFF:
            continue
        attr = obj[key]
        vr = attr["vr"]
        xml_tag, names = key, ""
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1:
            creator = _creator_of(obj, group, element)
            if creator is not None:
                xml_tag = f"{group:04X}00{element & 0xFF:02X}"
                names = f' privateCreator="{_escape(creator, _ATTR_SPECIAL)}"'
        else:
            keyword = keyword_for_tag(tag)
            names = f' keyword="{keyword}"' if keyword else ""
        head = f'<DicomAttribute tag="{xml_tag}" vr="{vr}"{names}'
        if "InlineBinary" in attr:
            parts.append(f"{head}><InlineBinary>{attr['InlineBinary']}</InlineBinary>")
        elif "BulkDataURI" in attr:
            uri = _escape(attr["BulkDataURI"], _ATTR_SPECIAL)
            parts.append(f'{head}><BulkData uri="{uri}"/>')
        elif attr.get("Value"):
            parts.append(head + ">")
            _write_values(attr["Value"], vr, parts)
        else:
            parts.append(head + "/>")
            continue
        parts.append("</DicomAttribute>")


def _creator_of(obj: JsonDataset, group: int, element: int) -> str | None:
    """The Private Creator owning a private data element, if present in the same dataset."""
    if element < 0x1000:
        return None
    creator = obj.get(f"{group:04X}00{element >> 8:02X}")
    values = creator.get("Value") if isinstance(creator, dict) else None
    return values[0] if values and isinstance(values[0], str) and values[0] else None


def _write_values(values: list[Any], vr: str, parts: list[str]) -> None:
    for number, value in enumerate(values, 1):
        if vr == "SQ":
            if value:
                parts.append(f'<Item number="{number}">')
                _write_dataset(value, parts)
                parts.append("</Item>")
            else:
                parts.append(f'<Item number="{number}"/>')
        elif vr == "PN":
            _write_person_name(value, number, parts)
        elif value is None:
            parts.append(f'<Value number="{number}"/>')
        else:
            parts.append(f'<Value number="{number}">{_escape(_value_text(value, vr))}</Value>')


def _value_text(value: Any, vr: str) -> str:
    if isinstance(value, str):
        return value
    if vr in DECIMAL_VRS:
        return decimal_text(value, vr)
    return repr(value) if isinstance(value, float) else str(value)


def _write_person_name(value: dict[str, Any] | None, number: int, parts: list[str]) -> None:
    groups = []
    for name in PN_GROUPS:
        components = clean_pn_group((value or {}).get(name) or "").split("^")
        if len(components) > 5:  # keep the surplus (invalid, but lossless) in NameSuffix
            components[4:] = ["^".join(components[4:])]
        inner = "".join(
            f"<{tag}>{_escape(text)}</{tag}>"
            for tag, text in zip(PN_COMPONENTS, components, strict=False)
            if text
        )
        if inner:
            groups.append(f"<{name}>{inner}</{name}>")
    if groups:
        parts.append(f'<PersonName number="{number}">{"".join(groups)}</PersonName>')
    else:
        parts.append(f'<PersonName number="{number}"/>')


# ---------------------------------------------------------------- XML -> JSON


class _DepthLimitedBuilder(TreeBuilder):
    """A TreeBuilder that stops the parse once elements nest deeper than the limit."""

    def __init__(self, max_depth: int) -> None:
        super().__init__()
        self._depth = 0
        self._max_depth = max_depth

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        self._depth += 1
        if self._depth > self._max_depth:
            raise InvalidPayload(f"XML elements nested deeper than {self._max_depth}")
        return super().start(tag, attrs)

    def end(self, tag: str) -> Element:
        self._depth -= 1
        return super().end(tag)


def xml_to_json(data: bytes, *, max_depth: int = 32, max_items: int = 10000) -> JsonDataset:
    """Parse one Native DICOM Model document into a DICOM JSON dataset (keys sorted).

    ``max_depth`` limits XML element nesting (each sequence level adds two, a PN value
    three); ``max_items`` limits sequence items. Raises InvalidPayload (PayloadTooLarge for
    too many items) with a message that names elements and tags, never values.
    """
    parser = DefusedXMLParser(
        target=_DepthLimitedBuilder(max_depth),
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException:
        raise InvalidPayload("XML with a DOCTYPE or entity declarations is refused") from None
    except LookupError:
        raise InvalidPayload("XML declares an unknown encoding") from None
    except ParseError as exc:
        line, column = exc.position
        raise InvalidPayload(f"XML not well-formed at line {line} column {column}") from None
    if _local_name(root, "document") != "NativeDicomModel":
        raise InvalidPayload("XML root element must be NativeDicomModel")
    reader = _Reader(max_items)
    return reader.dataset(root, ())


def _local_name(element: Element, where: str) -> str:
    tag = element.tag
    if tag.startswith("{"):
        namespace, _, tag = tag[1:].partition("}")
        if namespace != NATIVE_DICOM_NS:
            raise InvalidPayload(f"{where}: element {tag[:40]!r} is in an unknown namespace")
    return tag


def _no_text(text: str | None, where: str) -> None:
    if text and not text.isspace():
        raise InvalidPayload(f"{where}: unexpected text content")


class _Reader:
    """Converts a parsed tree; counts sequence items across the whole document."""

    def __init__(self, max_items: int) -> None:
        self.items = 0
        self.max_items = max_items

    def dataset(self, parent: Element, where: tuple[str, ...]) -> JsonDataset:
        place = " > ".join(where) or "NativeDicomModel"
        _no_text(parent.text, place)
        plain: dict[int, dict[str, Any]] = {}
        private: list[tuple[int, str, dict[str, Any]]] = []
        for child in parent:
            _no_text(child.tail, place)
            if _local_name(child, place) != "DicomAttribute":
                raise InvalidPayload(f"{place}: only DicomAttribute elements are allowed here")
            tag, creator, attr = self.attribute(child, where)
            if creator is None:
                if tag in plain:
                    raise InvalidPayload(f"{place}: attribute {tag:08X} appears twice")
                plain[tag] = attr
            else:
                private.append((tag, creator, attr))
        if private:
            _place_private(plain, private, place)
        return {f"{tag:08X}": plain[tag] for tag in sorted(plain) if tag & 0xFFFF}

    def attribute(
        self, element: Element, where: tuple[str, ...]
    ) -> tuple[int, str | None, dict[str, Any]]:
        tag_text = element.get("tag", "")
        if not _HEX8.fullmatch(tag_text):
            raise InvalidPayload(f"{' > '.join(where) or 'dataset'}: a tag is not 8 hex digits")
        tag = int(tag_text, 16)
        where = (*where, f"{tag:08X}")
        place = " > ".join(where)
        unexpected = [a for a in element.attrib if a not in _ATTRIBUTES and not a.startswith("{")]
        if unexpected:
            raise InvalidPayload(f"{place}: unexpected XML attribute {unexpected[0][:40]!r}")
        vr = element.get("vr") or _dictionary_vr(tag, place)
        if vr not in KNOWN_VRS:
            raise InvalidPayload(f"{place}: unknown VR {vr[:4]!r}")
        creator = element.get("privateCreator")
        if creator is not None and not tag >> 16 & 1:
            raise InvalidPayload(f"{place}: privateCreator on a non-private tag")
        _no_text(element.text, place)
        children = list(element)
        attr: dict[str, Any] = {"vr": vr}
        if not children:
            return tag, creator, attr
        kinds = set()
        for child in children:
            kinds.add(_local_name(child, place))
            _no_text(child.tail, place)
        kind = kinds.pop()
        if kinds or kind not in _CHILD_VRS:
            raise InvalidPayload(f"{place}: DicomAttribute children must be of one known kind")
        if vr not in _CHILD_VRS[kind]:
            raise InvalidPayload(f"{place}: {kind} is not allowed for VR {vr}")
        if kind in ("InlineBinary", "BulkData"):
            if len(children) > 1:
                raise InvalidPayload(f"{place}: more than one {kind} element")
            attr.update(_binary(children[0], kind, place))
        else:
            values = [
                self.value(child, kind, vr, (*where, f"{kind} {n}"))
                for n, child in enumerate(_in_number_order(children, place), 1)
            ]
            if values != [None]:  # one empty value is an empty attribute (F.2.5)
                attr["Value"] = values
        return tag, creator, attr

    def value(self, element: Element, kind: str, vr: str, where: tuple[str, ...]) -> Any:
        place = " > ".join(where)
        if kind == "Item":
            self.items += 1
            if self.items > self.max_items:
                raise PayloadTooLarge(f"more than {self.max_items} sequence items")
            return self.dataset(element, where)
        if kind == "PersonName":
            return _person_name(element, place)
        if len(element):
            raise InvalidPayload(f"{place}: Value must not contain elements")
        text = element.text or ""
        if not text:
            return None
        try:
            return _PARSE[vr](text)
        except (ValueError, KeyError):
            raise InvalidPayload(f"{place}: value is not valid for VR {vr}") from None


_ATTRIBUTES = frozenset({"tag", "vr", "keyword", "privateCreator"})
_CHILD_VRS = {
    "Value": KNOWN_VRS - BINARY_VRS - {"PN", "SQ"},
    "PersonName": frozenset({"PN"}),
    "Item": frozenset({"SQ"}),
    "InlineBinary": BINARY_VRS,
    "BulkData": BULK_DATA_VRS,
}


def _dictionary_vr(tag: int, place: str) -> str:
    """VR for a DicomAttribute without ``vr`` (the A.1.5 table allows leaving it out)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = ""
    if vr not in KNOWN_VRS:
        raise InvalidPayload(f"{place}: 'vr' is missing and cannot be looked up")
    return vr


def _in_number_order(children: list[Element], place: str) -> list[Element]:
    numbered = {}
    for child in children:
        number = child.get("number", "")
        if not _NUMBER.fullmatch(number):
            raise InvalidPayload(f"{place}: 'number' must be a positive integer")
        numbered[int(number)] = child
    if sorted(numbered) != list(range(1, len(children) + 1)):
        raise InvalidPayload(f"{place}: 'number' attributes must run 1..n without gaps")
    return [numbered[n] for n in range(1, len(children) + 1)]


def _binary(element: Element, kind: str, place: str) -> dict[str, str]:
    if len(element):
        raise InvalidPayload(f"{place}: {kind} must not contain elements")
    if kind == "BulkData":
        uri = element.get("uri")
        if not uri:
            raise InvalidPayload(f"{place}: BulkData needs a 'uri' ('uuid' is not supported)")
        return {"BulkDataURI": uri}
    text = "".join((element.text or "").split())
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPayload(f"{place}: InlineBinary is not valid base64") from None
    return {"InlineBinary": base64.b64encode(data).decode()} if data else {}


def _person_name(element: Element, place: str) -> dict[str, str] | None:
    _no_text(element.text, place)
    result: dict[str, str] = {}
    for group in element:
        _no_text(group.tail, place)
        name = _local_name(group, place)
        if name not in PN_GROUPS or name in result:
            raise InvalidPayload(f"{place}: unexpected or repeated element {name[:40]!r}")
        _no_text(group.text, place)
        components = dict.fromkeys(PN_COMPONENTS, "")
        seen = set()
        for component in group:
            _no_text(component.tail, place)
            part = _local_name(component, place)
            if part not in components or part in seen or len(component):
                raise InvalidPayload(f"{place}: unexpected or repeated element {part[:40]!r}")
            seen.add(part)
            components[part] = component.text or ""
        result[name] = clean_pn_group("^".join(components.values()))
    return {name: text for name, text in result.items() if text} or None


def _parse_int(text: str) -> int:
    if not INTEGER_RE.fullmatch(text.strip()):
        raise ValueError("not an integer")
    return int(text)


def _parse_float(text: str) -> float | str:
    text = text.strip()
    if text in NON_FINITE:
        return text
    if not DECIMAL_RE.fullmatch(text):
        raise ValueError("not a number")
    value = float(text)
    if math.isfinite(value):
        return value
    return "Infinity" if value > 0 else "-Infinity"


def _parse_at(text: str) -> str:
    if not _HEX8.fullmatch(text.strip()):
        raise ValueError("AT value is not 8 hex digits")
    return text.strip().upper()


def _parse_big_int(text: str) -> int | str:
    number = _parse_int(text)
    return number if abs(number) < 2**53 else str(number)


_PARSE: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(STRING_VRS, lambda text: text),
    **dict.fromkeys(INT_VRS, _parse_int),
    **dict.fromkeys(BIG_INT_VRS, _parse_big_int),
    **dict.fromkeys(FLOAT_VRS, _parse_float),
    "IS": lambda text: decimal_from_text(text, "IS"),
    "DS": lambda text: decimal_from_text(text, "DS"),
    "AT": _parse_at,
}


def _place_private(
    plain: dict[int, dict[str, Any]], private: list[tuple[int, str, dict[str, Any]]], place: str
) -> None:
    """Give private elements written as gggg00ee + privateCreator their block (PS3.5 7.8.1)."""
    blocks: dict[tuple[int, str], int] = {}
    used: set[tuple[int, int]] = set()
    for tag, attr in plain.items():
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1 and 0x10 <= element <= 0xFF:
            used.add((group, element))
            values = attr.get("Value")
            if values and isinstance(values[0], str):
                blocks.setdefault((group, values[0]), element)
    for tag, creator, attr in private:
        group = tag >> 16
        block = blocks.get((group, creator))
        if block is None:
            block = next((b for b in range(0x10, 0x100) if (group, b) not in used), None)
            if block is None:
                raise InvalidPayload(f"{place}: no free private block in group {group:04X}")
            used.add((group, block))
            blocks[(group, creator)] = block
            plain[group << 16 | block] = {"vr": "LO", "Value": [creator]}
        real = group << 16 | block << 8 | tag & 0xFF
        if real in plain:
            raise InvalidPayload(f"{place}: private attribute {real:08X} appears twice")
        plain[real] = attr
