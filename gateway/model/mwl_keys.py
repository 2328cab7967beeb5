"""The Modality Worklist key catalogue: PS3.4 Tables K.6-1 and K.6-1a as data.

One place that knows, for every key of the worklist information model, its tag path, VR,
Matching Key Type (R/O/-) and Return Key Type (1/1C/2/2C/3), so the query parser, the
matcher, the fronts and the DIMSE upstream client agree on them. Keys outside the tables
(any public tag, Note 1 of K.6-1) are described from pydicom's data dictionary.
Source: ``docs/spec/mwl-attributes.md`` sections 2, 3 and 2.7 (2020c table).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeAlias

from pydicom import datadict

from gateway.model.types import TagPath

MatchingKeyType: TypeAlias = Literal["R", "O", "-"]
ReturnKeyType: TypeAlias = Literal["1", "1C", "2", "2C", "3"]
KeySource: TypeAlias = Literal["K.6-1", "K.6-1a", "dictionary"]

SPECIFIC_CHARACTER_SET = 0x00080005
TIMEZONE_OFFSET_FROM_UTC = 0x00080201
SCHEDULED_PROCEDURE_STEP_SEQUENCE = 0x00400100


@dataclass(frozen=True)
class MwlKey:
    """One key of the worklist model (or a dictionary attribute used as an extra key).

    ``item_matching`` is the Matching Key Type of attributes *inside* this sequence's
    items that the table does not list ("All other attributes of ..." rows);
    ``code_sequence`` marks sequences whose items follow the Code Sequence Macro.
    """

    path: TagPath
    keyword: str
    vr: str
    matching: MatchingKeyType
    return_type: ReturnKeyType
    source: KeySource = "K.6-1"
    item_matching: MatchingKeyType = "O"
    code_sequence: bool = False  # its items follow the Code Sequence Macro

    @property
    def tag(self) -> int:
        """The last tag of the path."""
        return self.path[-1]

    @property
    def always_returned(self) -> bool:
        """Return Key Type 1, 1C, 2 or 2C (PS3.18 14.4.2 items 1 and 2)."""
        return self.return_type != "3"


@dataclass(frozen=True)
class _Row:
    tag: int
    matching: MatchingKeyType
    return_type: ReturnKeyType
    children: tuple[_Row, ...] = ()
    code: bool = False  # the item includes the Code Sequence Macro (PS3.3 Table 8.8-1)
    other: MatchingKeyType | None = None  # matching type of unlisted item attributes


def _r(
    tag: int,
    matching: MatchingKeyType,
    return_type: ReturnKeyType,
    *children: _Row,
    code: bool = False,
    other: MatchingKeyType | None = None,
) -> _Row:
    return _Row(tag, matching, return_type, children, code, other)


def _ref_sop(matching: MatchingKeyType = "O") -> tuple[_Row, _Row]:
    return (_r(0x00081150, matching, "1"), _r(0x00081155, matching, "1"))


# Basic Code Sequence Macro (PS3.3 Table 8.8-1): tag, return type.
_CODE_MACRO: tuple[tuple[int, ReturnKeyType], ...] = (
    (0x00080100, "1C"),  # CodeValue
    (0x00080102, "1C"),  # CodingSchemeDesignator
    (0x00080103, "1C"),  # CodingSchemeVersion
    (0x00080104, "1"),  # CodeMeaning
    (0x00080119, "1C"),  # LongCodeValue
    (0x00080120, "1C"),  # URNCodeValue
)

_K6_1: tuple[_Row, ...] = (
    # Scheduled Procedure Step
    _r(
        0x00400100, "R", "1",  # ScheduledProcedureStepSequence
        _r(0x00400001, "R", "1"),  # ScheduledStationAETitle
        _r(0x00400002, "R", "1"),  # ScheduledProcedureStepStartDate
        _r(0x00400003, "R", "1"),  # ScheduledProcedureStepStartTime
        _r(0x00080060, "R", "1"),  # Modality
        _r(0x00400006, "R", "2"),  # ScheduledPerformingPhysicianName
        _r(0x00400007, "O", "1C"),  # ScheduledProcedureStepDescription
        _r(0x00400010, "O", "2"),  # ScheduledStationName
        _r(0x00400011, "O", "2"),  # ScheduledProcedureStepLocation
        _r(0x0018990C, "O", "3", *_ref_sop()),  # ReferencedDefinedProtocolSequence
        _r(0x0018990D, "O", "3", *_ref_sop()),  # ReferencedPerformedProtocolSequence
        _r(
            0x00400008, "O", "1C",  # ScheduledProtocolCodeSequence
            _r(
                0x00400440, "-", "3",  # ProtocolContextSequence
                _r(0x0040A040, "-", "1"),  # ValueType
                _r(0x0040A043, "-", "1", code=True),  # ConceptNameCodeSequence
                _r(0x0040A120, "-", "1C"),  # DateTime
                _r(0x0040A123, "-", "1C"),  # PersonName
                _r(0x0040A160, "-", "1C"),  # TextValue
                _r(0x0040A168, "-", "1C", code=True),  # ConceptCodeSequence
                _r(0x0040A30A, "-", "1C"),  # NumericValue
                _r(0x004008EA, "-", "1C", code=True),  # MeasurementUnitsCodeSequence
            ),
            code=True,
        ),
        _r(0x00400012, "O", "2C"),  # PreMedication
        _r(0x00400009, "O", "1"),  # ScheduledProcedureStepID
        _r(0x00321070, "O", "2C"),  # RequestedContrastAgent
        _r(0x00400020, "O", "3"),  # ScheduledProcedureStepStatus
    ),
    _r(
        0x00400500, "O", "3",  # ScheduledSpecimenSequence
        _r(0x00400512, "O", "1"),  # ContainerIdentifier
        _r(0x00400518, "-", "2", code=True),  # ContainerTypeCodeSequence
        _r(
            0x00400560, "O", "1",  # SpecimenDescriptionSequence
            _r(0x00400551, "O", "1"),  # SpecimenIdentifier
            _r(0x00400554, "O", "1"),  # SpecimenUID
        ),
    ),
    _r(0x22000005, "O", "3"),  # BarcodeValue
    # Requested Procedure
    _r(0x00401001, "O", "1"),  # RequestedProcedureID
    _r(0x00321060, "O", "1C"),  # RequestedProcedureDescription
    _r(0x00321064, "O", "1C", code=True),  # RequestedProcedureCodeSequence
    _r(0x0020000D, "O", "1"),  # StudyInstanceUID
    _r(0x00080020, "O", "3"),  # StudyDate
    _r(0x00080030, "O", "3"),  # StudyTime
    _r(0x00081110, "O", "2", *_ref_sop()),  # ReferencedStudySequence
    _r(0x00401003, "O", "2"),  # RequestedProcedurePriority
    _r(0x00401004, "O", "2"),  # PatientTransportArrangements
    # Imaging Service Request
    _r(0x00080050, "O", "2"),  # AccessionNumber
    _r(0x00080051, "O", "3"),  # IssuerOfAccessionNumberSequence
    _r(0x00321032, "O", "2"),  # RequestingPhysician
    _r(0x00080090, "O", "2"),  # ReferringPhysicianName
    # Visit
    _r(0x00380010, "O", "2"),  # AdmissionID
    _r(0x00380014, "O", "3"),  # IssuerOfAdmissionIDSequence
    _r(0x00380300, "O", "2"),  # CurrentPatientLocation
    _r(0x00081120, "O", "2", *_ref_sop()),  # ReferencedPatientSequence
    # Patient
    _r(0x00100010, "R", "1"),  # PatientName
    _r(0x00100020, "R", "1"),  # PatientID
    _r(0x00100021, "O", "3"),  # IssuerOfPatientID
    _r(0x00100024, "O", "3"),  # IssuerOfPatientIDQualifiersSequence
    _r(0x00101002, "O", "3"),  # OtherPatientIDsSequence
    _r(0x00100030, "O", "2"),  # PatientBirthDate
    _r(0x00100040, "O", "2"),  # PatientSex
    _r(
        0x00100101, "O", "3",  # PatientPrimaryLanguageCodeSequence
        _r(0x00100102, "O", "3", code=True),  # PatientPrimaryLanguageModifierCodeSequence
        code=True,
    ),
    _r(0x00101030, "O", "2"),  # PatientWeight
    _r(0x00101020, "O", "3"),  # PatientSize
    _r(0x00403001, "O", "2"),  # ConfidentialityConstraintOnPatientDataDescription
    _r(0x00380500, "O", "2"),  # PatientState
    _r(0x001021C0, "O", "2"),  # PregnancyStatus
    _r(0x00102000, "O", "2"),  # MedicalAlerts
    _r(0x00102110, "O", "2"),  # Allergies
    _r(0x00380050, "O", "2"),  # SpecialNeeds
    _r(
        0x00380100, "O", "3",  # PertinentDocumentsSequence (Universal Matching only)
        *_ref_sop("-"),
        _r(0x0040A170, "-", "2", code=True),  # PurposeOfReferenceCodeSequence
        _r(0x00420010, "-", "2"),  # DocumentTitle
        other="-",
    ),
)  # fmt: skip

_K6_1A: tuple[_Row, ...] = (
    _r(SPECIFIC_CHARACTER_SET, "-", "1C"),
    _r(TIMEZONE_OFFSET_FROM_UTC, "-", "1C"),
    _r(
        0x0040A390, "-", "1C",  # HL7StructuredDocumentReferenceSequence
        *_ref_sop("-"),
        _r(0x0040E001, "-", "1"),  # HL7InstanceIdentifier
        _r(0x0040E010, "-", "3"),  # RetrieveURI
        other="-",
    ),
)  # fmt: skip


def describe_tag(tag: int) -> tuple[str, str]:
    """(keyword, VR) of any dataset attribute; raise ``KeyError`` for unknown tags.

    Private creators are LO, other private elements UN (their VR depends on the creator).
    Command (0000), file meta (0002) and item delimitation (FFFE) tags are not attributes.
    """
    group, elem = tag >> 16, tag & 0xFFFF
    if group in (0x0000, 0x0002, 0xFFFE) or not 0 <= tag <= 0xFFFFFFFF:
        raise KeyError(f"({group:04X},{elem:04X}) is not a dataset attribute")
    if group % 2:
        return "", "LO" if 0x0010 <= elem <= 0x00FF else "UN"
    try:
        vr = datadict.dictionary_VR(tag)
    except KeyError:
        raise KeyError(f"({group:04X},{elem:04X}) is not in the DICOM dictionary") from None
    return datadict.keyword_for_tag(tag), vr.split(" or ")[0]


def _expand(
    rows: tuple[_Row, ...], parent: TagPath, source: KeySource
) -> list[tuple[TagPath, MwlKey]]:
    out: list[tuple[TagPath, MwlKey]] = []
    for row in rows:
        path = (*parent, row.tag)
        keyword, vr = describe_tag(row.tag)
        other = row.other or ("-" if row.matching == "-" else "O")
        key = MwlKey(path, keyword, vr, row.matching, row.return_type, source, other, row.code)
        out.append((path, key))
        if row.code:
            macro_matching: MatchingKeyType = "-" if row.matching == "-" else "O"
            macro = tuple(_r(tag, macro_matching, ret) for tag, ret in _CODE_MACRO)
            out.extend(_expand(macro, path, source))
        out.extend(_expand(row.children, path, source))
    return out


def _build() -> dict[TagPath, MwlKey]:
    entries = _expand(_K6_1, (), "K.6-1") + _expand(_K6_1A, (), "K.6-1a")
    return dict(sorted(entries))


MWL_KEYS: Mapping[TagPath, MwlKey] = MappingProxyType(_build())
"""Every row of Tables K.6-1 and K.6-1a (Code Sequence Macros expanded), by path."""


def _required_return_keys() -> tuple[TagPath, ...]:
    """PS3.18 14.4.2: Type 1/2 (and 1C/2C) keys of K.6-1, with their sequence structure.

    Code sequences are listed without nested keys, so they are returned whole.
    """
    out: list[TagPath] = []
    for path, key in MWL_KEYS.items():
        if key.source != "K.6-1" or not key.always_returned:
            continue
        ancestors = [path[:i] for i in range(1, len(path))]
        if any(a not in out or MWL_KEYS[a].code_sequence for a in ancestors):
            continue
        out.append(path)
    return tuple(out)


DICOMWEB_REQUIRED_RETURN_KEYS: tuple[TagPath, ...] = _required_return_keys()
"""Keys every DICOMweb Search result must carry (``mwl-attributes.md`` section 2.7)."""


@functools.lru_cache(maxsize=4096)
def lookup(path: TagPath) -> MwlKey:
    """The key at ``path``: its K.6-1/K.6-1a row, or a dictionary-based O/3 extra key.

    Raise ``KeyError`` for an empty path or a tag that is not a known attribute.
    """
    if not path:
        raise KeyError("empty attribute path")
    entry = MWL_KEYS.get(path)
    if entry is not None:
        return entry
    keyword, vr = describe_tag(path[-1])
    matching: MatchingKeyType = "O"
    for depth in range(len(path) - 1, 0, -1):
        ancestor = MWL_KEYS.get(path[:depth])
        if ancestor is not None:
            matching = ancestor.item_matching
            break
    return MwlKey(path, keyword, vr, matching, "3", "dictionary", matching)


_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def parse_attribute_id(text: str) -> int:
    """One ``attribute-id`` of PS3.18 8.3.4.1 (keyword or 8 hex digits) as a tag.

    Raise ``ValueError`` naming what is wrong.
    """
    if _HEX_TAG.fullmatch(text):
        return int(text, 16)
    if text[:1].isdigit():
        raise ValueError(f"invalid tag {text!r} (expected 8 hex digits)")
    if not _KEYWORD.fullmatch(text):
        raise ValueError(f"invalid attribute name {text!r}")
    tag = datadict.tag_for_keyword(text)
    if tag is None:
        raise ValueError(f"unknown attribute keyword {text!r}")
    return tag


def keyword_to_path(text: str) -> TagPath:
    """A dotted attribute path (keywords and/or 8-hex tags) as a :data:`TagPath`.

    Every component but the last must be a sequence (SQ). Raise ``ValueError``.
    """
    path = tuple(parse_attribute_id(part) for part in text.split("."))
    for depth in range(1, len(path) + 1):
        try:
            key = lookup(path[:depth])
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        if depth < len(path) and key.vr != "SQ":
            name = key.keyword or f"{key.tag:08X}"
            raise ValueError(f"{name} is not a sequence, so it cannot have nested attributes")
    return path


def path_to_keyword(path: TagPath) -> str:
    """The dotted keyword form of ``path`` (8 hex digits where there is no keyword)."""
    parts = []
    for tag in path:
        try:
            keyword = describe_tag(tag)[0]
        except KeyError:
            keyword = ""
        parts.append(keyword or f"{tag:08X}")
    return ".".join(parts)


def path_to_tags(path: TagPath) -> str:
    """The dotted 8-hex form of ``path`` used on the wire (``00400100.00080060``)."""
    return ".".join(f"{tag:08X}" for tag in path)


def describe_path(path: TagPath) -> str:
    """Human-readable name for error messages: ``A>B (gggg,eeee)``."""
    tag = path[-1]
    return f"{path_to_keyword(path).replace('.', '>')} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
