"""PS3.4 Table F.7.2-1 (MPPS N-CREATE, N-SET and Final State attributes) as data.

Transcribed from the spec digest (``mpps-attributes.md`` §3-§4, checked there against the
PS3.4 2020c source). Each row keeps the standard's own ``SCU/SCP`` notation so the data
can be compared with the table cell by cell; :mod:`gateway.model.mpps` interprets it.
The code-value macros F.7.2-1a…f are expanded into ordinary rows at import time, so every
nested path a dataset can have is one lookup away.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.model.types import TagPath

NOT_ALLOWED = "Not allowed"
"""The N-SET cell of attributes the SCU must not send in an N-SET."""


class Condition(enum.Enum):
    """When a ``1C`` attribute is required (the conditions the table's rows state)."""

    EXTENDED_CHARSET = "an extended or replacement character set is used"
    UNIVERSAL_ID_ABSENT = "Universal Entity ID (0040,0032) is absent"
    LOCAL_ID_ABSENT = "Local Namespace Entity ID (0040,0031) is absent"
    UNIVERSAL_ID_PRESENT = "Universal Entity ID (0040,0032) is present"
    SHORT_CODE = "the code is at most 16 characters and not a URN/URL"
    LONG_CODE = "Code Value is absent and the code is not a URN/URL"
    URN_CODE = "Code Value is absent and the code is a URN/URL"
    CODE_VALUE_PRESENT = "Code Value or Long Code Value is present"
    SCHEME_AMBIGUOUS = "the Coding Scheme Designator alone is ambiguous"


def scu_type(cell: str) -> str:
    """The SCU half of a ``SCU/SCP`` cell (``"1C/1C"`` -> ``"1C"``); ``""`` if not allowed."""
    return "" if cell == NOT_ALLOWED else cell.split("/")[0]


def scp_type(cell: str) -> str:
    """The SCP half of a ``SCU/SCP`` cell (``"3/1"`` -> ``"1"``); ``""`` if not allowed."""
    return "" if cell == NOT_ALLOWED else cell.split("/")[-1]


@dataclass(frozen=True)
class Row:
    """One attribute of Table F.7.2-1 at one nesting path.

    ``create``/``set`` hold the table's ``SCU/SCP`` cells (or :data:`NOT_ALLOWED`).
    ``final`` is the Final State column; ``None`` where the table leaves it blank, which
    per Note 1 means "the same as the N-CREATE SCP type".
    """

    path: TagPath
    keyword: str
    create: str
    set: str
    final: str | None = None
    condition: Condition | None = None
    enumerated: tuple[str, ...] = ()

    @property
    def tag(self) -> int:
        """The attribute's own tag (last element of the path)."""
        return self.path[-1]

    @property
    def parent(self) -> TagPath:
        """The path of the sequence holding this attribute; ``()`` at the top level."""
        return self.path[:-1]

    @property
    def set_allowed(self) -> bool:
        """True unless the SCU is forbidden to send the attribute in an N-SET."""
        return self.set != NOT_ALLOWED

    @property
    def final_type(self) -> str:
        """The requirement once the status is COMPLETED or DISCONTINUED."""
        return self.final if self.final is not None else scp_type(self.create)


@dataclass(frozen=True)
class OtherAttributes:
    """An "All other attributes of …" row: anything else inside ``parent`` is allowed."""

    parent: TagPath
    name: str
    create: str
    set: str
    known_tags: tuple[int, ...] = ()


# --- Building blocks ------------------------------------------------------------------------

_NA = NOT_ALLOWED
_C = Condition

SCHEDULED_STEP_ATTRIBUTES_SEQUENCE = 0x00400270
PERFORMED_SERIES_SEQUENCE = 0x00400340
PPS_STATUS = 0x00400252
STUDY_INSTANCE_UID = 0x0020000D
SCHEDULED_PROCEDURE_STEP_ID = 0x00400009
SPECIFIC_CHARACTER_SET = 0x00080005
DISCONTINUATION_REASON_CODE_SEQUENCE = 0x00400281
EQUIVALENT_CODE_SEQUENCE = 0x00080121


def _rows(parent: TagPath, *specs: tuple[int, str, str, str]) -> list[Row]:
    """Plain rows under ``parent`` from (tag, keyword, N-CREATE, N-SET)."""
    return [Row((*parent, tag), kw, create, nset) for tag, kw, create, nset in specs]


def _entity_ids(parent: TagPath) -> list[Row]:
    """The Local/Universal Entity ID triplet (HL7v2 hierarchic designator), all 1C."""
    return [
        Row((*parent, 0x00400031), "LocalNamespaceEntityID", "1C/1C", _NA,
            condition=_C.UNIVERSAL_ID_ABSENT),
        Row((*parent, 0x00400032), "UniversalEntityID", "1C/1C", _NA,
            condition=_C.LOCAL_ID_ABSENT),
        Row((*parent, 0x00400033), "UniversalEntityIDType", "1C/1C", _NA,
            condition=_C.UNIVERSAL_ID_PRESENT),
    ]  # fmt: skip


class Macro(enum.Enum):
    """The three Enhanced Code Value macros of F.7.2-1a/c/e (on simple 1b/d/f)."""

    NO_SET = "F.7.2-1a"  # no N-SET
    SET_MANDATORY = "F.7.2-1c"  # N-SET, mandatory meaning
    SET_OPTIONAL = "F.7.2-1e"  # N-SET, optional meaning


# (tag, keyword, condition, cells for 1b, 1d, 1f as (N-CREATE, N-SET)).
_SIMPLE_CODE_MACRO: tuple[
    tuple[int, str, Condition | None, tuple[tuple[str, str], tuple[str, str], tuple[str, str]]],
    ...,
] = (
    (0x00080100, "CodeValue", _C.SHORT_CODE,
     (("1C/1C", _NA), ("1C/1C", "3/1C"), ("1C/1C", "3/1C"))),
    (0x00080102, "CodingSchemeDesignator", _C.CODE_VALUE_PRESENT,
     (("1C/1C", _NA), ("1C/1C", "1C/1C"), ("1C/1C", "1C/1C"))),
    (0x00080103, "CodingSchemeVersion", _C.SCHEME_AMBIGUOUS,
     (("1C/1C", _NA), ("1C/1C", "1C/1C"), ("1C/1C", "1C/1C"))),
    (0x00080104, "CodeMeaning", None,
     (("1/1", _NA), ("1/1", "1/1"), ("3/3", "3/3"))),
    (0x00080119, "LongCodeValue", _C.LONG_CODE,
     (("1C/1C", _NA), ("1C/1C", "3/1C"), ("1C/1C", "3/1C"))),
    (0x00080120, "URNCodeValue", _C.URN_CODE,
     (("1C/1C", _NA), ("1C/1C", "3/1C"), ("1C/1C", "3/1C"))),
    (0x00080105, "MappingResource", None,
     (("3/3", _NA), ("3/3", "3/3"), ("3/3", "3/3"))),
    (0x00080118, "MappingResourceUID", None,
     (("3/3", _NA), ("3/3", "3/3"), ("3/3", "3/3"))),
    # The 2020c text prints (0008,0118) here; Context Group Version is (0008,0106).
    (0x00080106, "ContextGroupVersion", None,
     (("3/3", _NA), ("3/3", "3/3"), ("3/3", "3/3"))),
    (0x0008010B, "ContextGroupExtensionFlag", None,
     (("3/3", _NA), ("3/3", "3/3"), ("3/3", "3/3"))),
    (0x00080107, "ContextGroupLocalVersion", None,
     (("3/3", _NA), ("3/3", "3/3"), ("3/3", "3/3"))),
    (0x0008010D, "ContextGroupExtensionCreatorUID", None,
     (("3/3", _NA), ("3/3", "3/3"), ("3/3", "3/3"))),
)  # fmt: skip

_MACRO_COLUMN = {Macro.NO_SET: 0, Macro.SET_MANDATORY: 1, Macro.SET_OPTIONAL: 2}


def _simple_code(parent: TagPath, macro: Macro) -> list[Row]:
    column = _MACRO_COLUMN[macro]
    return [
        Row((*parent, tag), kw, cells[column][0], cells[column][1], condition=cond)
        for tag, kw, cond, cells in _SIMPLE_CODE_MACRO
    ]


def _code_items(parent: TagPath, macro: Macro) -> list[Row]:
    """Rows for the items of a code sequence at ``parent`` using an Enhanced macro."""
    equivalent = (*parent, EQUIVALENT_CODE_SEQUENCE)
    eq_set = _NA if macro is Macro.NO_SET else "3/3"
    return [
        *_simple_code(parent, macro),
        Row(equivalent, "EquivalentCodeSequence", "3/3", eq_set),
        *_simple_code(equivalent, macro),
    ]


# --- Table F.7.2-1 --------------------------------------------------------------------------

_SSAS: TagPath = (SCHEDULED_STEP_ATTRIBUTES_SEQUENCE,)
_PSS: TagPath = (PERFORMED_SERIES_SEQUENCE,)
_RIS: TagPath = (*_PSS, 0x00081140)
_NON_IMAGE: TagPath = (*_PSS, 0x00400220)
_ISSUER_QUALIFIERS: TagPath = (0x00100024,)
_OTHER_PATIENT_IDS: TagPath = (0x00101002,)

ROWS: tuple[Row, ...] = (
    # SOP Common
    Row((SPECIFIC_CHARACTER_SET,), "SpecificCharacterSet", "1C/1C", "1C/1C",
        condition=_C.EXTENDED_CHARSET),
    # Performed Procedure Step Relationship
    Row(_SSAS, "ScheduledStepAttributesSequence", "1/1", _NA),
    *_rows(_SSAS,
           (STUDY_INSTANCE_UID, "StudyInstanceUID", "1/1", _NA),
           (0x00081110, "ReferencedStudySequence", "2/2", _NA)),
    *_rows((*_SSAS, 0x00081110),
           (0x00081150, "ReferencedSOPClassUID", "1/1", _NA),
           (0x00081155, "ReferencedSOPInstanceUID", "1/1", _NA)),
    *_rows(_SSAS,
           (0x00080050, "AccessionNumber", "2/2", _NA),
           (0x00080051, "IssuerOfAccessionNumberSequence", "3/3", _NA)),
    *_entity_ids((*_SSAS, 0x00080051)),
    *_rows(_SSAS,
           (0x00402016, "PlacerOrderNumberImagingServiceRequest", "3/3", _NA),
           (0x00400026, "OrderPlacerIdentifierSequence", "3/3", _NA)),
    *_entity_ids((*_SSAS, 0x00400026)),
    *_rows(_SSAS,
           (0x00402017, "FillerOrderNumberImagingServiceRequest", "3/3", _NA),
           (0x00400027, "OrderFillerIdentifierSequence", "3/3", _NA)),
    *_entity_ids((*_SSAS, 0x00400027)),
    *_rows(_SSAS,
           (0x00401001, "RequestedProcedureID", "2/2", _NA),
           (0x00321064, "RequestedProcedureCodeSequence", "3/3", _NA)),
    *_code_items((*_SSAS, 0x00321064), Macro.NO_SET),
    *_rows(_SSAS,
           (0x00321060, "RequestedProcedureDescription", "2/2", _NA),
           (SCHEDULED_PROCEDURE_STEP_ID, "ScheduledProcedureStepID", "2/2", _NA),
           (0x00400007, "ScheduledProcedureStepDescription", "2/2", _NA),
           (0x00400008, "ScheduledProtocolCodeSequence", "2/2", _NA)),
    *_code_items((*_SSAS, 0x00400008), Macro.NO_SET),
    *_rows((),
           (0x00100010, "PatientName", "2/2", _NA),
           (0x00100020, "PatientID", "2/2", _NA),
           (0x00100021, "IssuerOfPatientID", "3/3", _NA),
           (0x00100024, "IssuerOfPatientIDQualifiersSequence", "3/3", _NA)),
    Row((*_ISSUER_QUALIFIERS, 0x00400032), "UniversalEntityID", "3/3", _NA),
    Row((*_ISSUER_QUALIFIERS, 0x00400033), "UniversalEntityIDType", "1C/1C", _NA,
        condition=_C.UNIVERSAL_ID_PRESENT),
    Row(_OTHER_PATIENT_IDS, "OtherPatientIDsSequence", "3/3", _NA),
    *_rows(_OTHER_PATIENT_IDS,
           (0x00100020, "PatientID", "3/3", _NA),
           (0x00100021, "IssuerOfPatientID", "3/3", _NA),
           (0x00100024, "IssuerOfPatientIDQualifiersSequence", "3/3", _NA),
           (0x00100022, "TypeOfPatientID", "3/3", _NA)),
    *_rows((),
           (0x00100030, "PatientBirthDate", "2/2", _NA),
           (0x00100040, "PatientSex", "2/2", _NA),
           (0x00081120, "ReferencedPatientSequence", "2/2", _NA)),
    *_rows((0x00081120,),
           (0x00081150, "ReferencedSOPClassUID", "1/1", _NA),
           (0x00081155, "ReferencedSOPInstanceUID", "1/1", _NA)),
    *_rows((),
           (0x00380010, "AdmissionID", "3/3", _NA),
           (0x00380014, "IssuerOfAdmissionIDSequence", "3/3", _NA)),
    *_entity_ids((0x00380014,)),
    *_rows((),
           (0x00380060, "ServiceEpisodeID", "3/3", _NA),
           (0x00380064, "IssuerOfServiceEpisodeIDSequence", "3/3", _NA)),
    *_entity_ids((0x00380064,)),
    Row((0x00380062,), "ServiceEpisodeDescription", "3/3", _NA),
    # Performed Procedure Step Information
    *_rows((),
           (0x00400253, "PerformedProcedureStepID", "1/1", _NA),
           (0x00400241, "PerformedStationAETitle", "1/1", _NA),
           (0x00400242, "PerformedStationName", "2/2", _NA),
           (0x00400243, "PerformedLocation", "2/2", _NA),
           (0x00400244, "PerformedProcedureStepStartDate", "1/1", _NA),
           (0x00400245, "PerformedProcedureStepStartTime", "1/1", _NA)),
    Row((PPS_STATUS,), "PerformedProcedureStepStatus", "1/1", "3/1",
        enumerated=("IN PROGRESS", "DISCONTINUED", "COMPLETED")),
    *_rows((),
           (0x00400254, "PerformedProcedureStepDescription", "2/2", "3/2"),
           (0x00400255, "PerformedProcedureTypeDescription", "2/2", "3/2"),
           (0x00081032, "ProcedureCodeSequence", "2/2", "3/2")),
    *_code_items((0x00081032,), Macro.SET_OPTIONAL),
    Row((0x00401012,), "ReasonForPerformedProcedureCodeSequence", "3/3", "3/3"),
    *_code_items((0x00401012,), Macro.SET_MANDATORY),
    Row((0x00400250,), "PerformedProcedureStepEndDate", "2/2", "3/1", final="1"),
    Row((0x00400251,), "PerformedProcedureStepEndTime", "2/2", "3/1", final="1"),
    Row((0x00400280,), "CommentsOnThePerformedProcedureStep", "3/3", "3/3"),
    Row((DISCONTINUATION_REASON_CODE_SEQUENCE,),
        "PerformedProcedureStepDiscontinuationReasonCodeSequence", "3/3", "3/3"),
    *_code_items((DISCONTINUATION_REASON_CODE_SEQUENCE,), Macro.SET_MANDATORY),
    # Image Acquisition Results
    *_rows((),
           (0x00080060, "Modality", "1/1", _NA),
           (0x00200010, "StudyID", "2/2", _NA),
           (0x00400260, "PerformedProtocolCodeSequence", "2/2", "3/2")),
    *_code_items((0x00400260,), Macro.SET_OPTIONAL),
    # Note 2: at least one series item once COMPLETED/DISCONTINUED.
    Row(_PSS, "PerformedSeriesSequence", "2/2", "3/1", final="1"),
    Row((*_PSS, 0x00081050), "PerformingPhysicianName", "2/2", "2/2", final="2"),
    Row((*_PSS, 0x00181030), "ProtocolName", "1/1", "1/1", final="1"),
    Row((*_PSS, 0x00081070), "OperatorsName", "2/2", "2/2", final="2"),
    Row((*_PSS, 0x0020000E), "SeriesInstanceUID", "1/1", "1/1", final="1"),
    Row((*_PSS, 0x0008103E), "SeriesDescription", "2/2", "2/2", final="2"),
    Row((*_PSS, 0x00080054), "RetrieveAETitle", "2/2", "2/2", final="2"),
    Row((*_PSS, 0x0040A494), "ArchiveRequested", "3/3", "3/3"),
    Row(_RIS, "ReferencedImageSequence", "2/2", "2/2"),
    *_rows(_RIS,
           (0x00081150, "ReferencedSOPClassUID", "1/1", "1/1"),
           (0x00081155, "ReferencedSOPInstanceUID", "1/1", "1/1"),
           (0x00400512, "ContainerIdentifier", "3/3", "3/3"),
           (0x00400560, "SpecimenDescriptionSequence", "3/3", "3/3")),
    *_rows((*_RIS, 0x00400560),
           (0x00400551, "SpecimenIdentifier", "1/1", "1/1"),
           (0x00400554, "SpecimenUID", "1/1", "1/1")),
    Row(_NON_IMAGE, "ReferencedNonImageCompositeSOPInstanceSequence", "2/2", "2/2"),
    *_rows(_NON_IMAGE,
           (0x00081150, "ReferencedSOPClassUID", "1/1", "1/1"),
           (0x00081155, "ReferencedSOPInstanceUID", "1/1", "1/1")),
)  # fmt: skip

OTHER_ATTRIBUTES: tuple[OtherAttributes, ...] = (
    OtherAttributes(_ISSUER_QUALIFIERS, "Issuer of Patient ID Qualifiers Sequence", "3/3", _NA),
    OtherAttributes(
        (*_OTHER_PATIENT_IDS, 0x00100024), "Issuer of Patient ID Qualifiers Sequence", "3/3", _NA
    ),
    OtherAttributes(_PSS, "Performed Series Sequence", "3/3", "3/3"),
    # PS3.3 _C.4.17: Billing Procedure Step, Film Consumption, Billing Supplies and Devices.
    OtherAttributes(
        (),
        "Billing and Material Management Code Module",
        "3/3",
        "3/3",
        known_tags=(0x00400320, 0x00400321, 0x00400324),
    ),
)
"""The table's "All other attributes of …" rows (nothing to check beyond N-SET use)."""

BY_PATH: dict[TagPath, Row] = {row.path: row for row in ROWS}
"""Every row by its full path."""


def _children() -> dict[TagPath, tuple[Row, ...]]:
    found: dict[TagPath, list[Row]] = {}
    for row in ROWS:
        found.setdefault(row.parent, []).append(row)
    return {parent: tuple(rows) for parent, rows in found.items()}


CHILDREN: dict[TagPath, tuple[Row, ...]] = _children()
"""Rows grouped by the path of the sequence that holds them (``()`` = top level)."""

TOP_LEVEL: dict[int, Row] = {row.tag: row for row in CHILDREN[()]}
"""Top-level rows by tag."""
