"""WorklistQuery: building from identifiers and query parameters, rendering, projection."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import config as pydicom_config
from pydicom import datadict, dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from gateway.errors import BadQuery, ErrorKind
from gateway.model.mwl_keys import DICOMWEB_REQUIRED_RETURN_KEYS
from gateway.model.query import QueryKey, WorklistQuery

SPS = 0x00400100
DUMP2DCM = Path("/usr/bin/dump2dcm")
WLISTQRY = Path("/usr/share/doc/dcmtk/examples/wlistqry")


def identifier(**elements: Any) -> Dataset:
    """A dataset built without pydicom's value validation (queries carry wildcards)."""
    ds = Dataset()
    for keyword, value in elements.items():
        tag = datadict.tag_for_keyword(keyword)
        assert tag is not None
        vr = datadict.dictionary_VR(tag)
        ds.add(DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE))
    return ds


def sps_identifier(**elements: Any) -> Dataset:
    ds = identifier(PatientName="")
    ds.ScheduledProcedureStepSequence = Sequence([identifier(**elements)])
    return ds


def params(q: WorklistQuery) -> dict[str, str]:
    return dict(q.to_query_params())


# --- from_identifier ----------------------------------------------------------------


def test_from_identifier_walks_nested_sequences() -> None:
    ds = sps_identifier(Modality="CT", ScheduledProcedureStepStartDate="20240101-")
    ds.PatientID = "AV35674"
    ds.add_new(0x00000100, "US", 0x0020)  # a stray command element is skipped
    q = WorklistQuery.from_identifier(ds)
    assert q.keys == (
        QueryKey((0x00100010,), "PN"),
        QueryKey((0x00100020,), "LO", ("AV35674",)),
        QueryKey((SPS,), "SQ"),
        QueryKey((SPS, 0x00080060), "CS", ("CT",)),
        QueryKey((SPS, 0x00400002), "DA", ("20240101-",)),
    )
    assert [k.is_matching for k in q.keys] == [False, True, False, True, True]
    assert q.specific_character_set is None


def test_from_identifier_takes_specific_character_set_aside() -> None:
    ds = identifier(SpecificCharacterSet=["", "ISO 2022 IR 87"], PatientName="山田*")
    q = WorklistQuery.from_identifier(ds)
    assert q.specific_character_set == "\\ISO 2022 IR 87"
    assert [k.path for k in q.keys] == [(0x00100010,)]
    assert q.to_identifier().SpecificCharacterSet == ["", "ISO 2022 IR 87"]
    assert WorklistQuery.from_identifier(identifier(SpecificCharacterSet="")).keys == ()


def test_from_identifier_keeps_uid_lists_and_normalizes_universal_values() -> None:
    ds = identifier(StudyInstanceUID=["1.2.3", "1.2.4"], PatientBirthDate="*", PatientID="  ")
    q = WorklistQuery.from_identifier(ds)
    assert q.keys == (
        QueryKey((0x00100020,), "LO"),
        QueryKey((0x00100030,), "DA"),  # `*` on a DA is universal matching
        QueryKey((0x0020000D,), "UI", ("1.2.3", "1.2.4")),
    )


def test_from_identifier_sequence_with_zero_or_one_empty_item_is_universal() -> None:
    zero = identifier(ScheduledProcedureStepSequence=Sequence())
    one = identifier(ScheduledProcedureStepSequence=Sequence([Dataset()]))
    assert WorklistQuery.from_identifier(zero) == WorklistQuery.from_identifier(one)
    assert WorklistQuery.from_identifier(zero).keys == (QueryKey((SPS,), "SQ"),)


def test_from_identifier_keeps_binary_keys_as_return_keys() -> None:
    ds = Dataset()
    ds.add_new(0x00091010, "UN", b"\x01\x02")
    assert WorklistQuery.from_identifier(ds).keys == (QueryKey((0x00091010,), "UN"),)


START_DATE = "ScheduledProcedureStepSequence>ScheduledProcedureStepStartDate (0040,0002)"
START_TIME = "ScheduledProcedureStepSequence>ScheduledProcedureStepStartTime (0040,0003)"


@pytest.mark.parametrize(
    ("ds", "name", "tag"),
    [
        (identifier(PatientBirthDate="2024-13-01"), "PatientBirthDate (0010,0030)", 0x00100030),
        (sps_identifier(ScheduledProcedureStepStartDate="20240230"), START_DATE, 0x00400002),
        (sps_identifier(ScheduledProcedureStepStartDate="-"), START_DATE, 0x00400002),
        (sps_identifier(ScheduledProcedureStepStartTime="25"), START_TIME, 0x00400003),
        (sps_identifier(ScheduledProcedureStepStartTime="10-12-13"), START_TIME, 0x00400003),
        (identifier(StudyInstanceUID="1.2.abc"), "StudyInstanceUID", 0x0020000D),
        (identifier(StudyInstanceUID=["1.2", ""]), "StudyInstanceUID", 0x0020000D),
        (identifier(PatientID=["A", "B"]), "PatientID", 0x00100020),
    ],
)
def test_from_identifier_rejects_bad_values(ds: Dataset, name: str, tag: int) -> None:
    with pytest.raises(BadQuery) as info:
        WorklistQuery.from_identifier(ds)
    assert name in info.value.message
    assert info.value.offending == (tag,)
    assert info.value.kind is ErrorKind.BAD_QUERY


def test_from_identifier_rejects_sequence_with_two_items() -> None:
    ds = identifier(ScheduledProcedureStepSequence=Sequence([Dataset(), Dataset()]))
    with pytest.raises(BadQuery, match="ScheduledProcedureStepSequence") as info:
        WorklistQuery.from_identifier(ds)
    assert info.value.offending == (SPS,)


def test_error_messages_do_not_echo_values() -> None:
    with pytest.raises(BadQuery) as info:
        WorklistQuery.from_identifier(identifier(PatientBirthDate="DOE^JOHN"))
    assert "DOE" not in str(info.value)


# --- from_query_params --------------------------------------------------------------


def test_keyword_and_tag_forms_are_equivalent() -> None:
    by_keyword = WorklistQuery.from_query_params(
        [("PatientID", "X1"), ("ScheduledProcedureStepSequence.Modality", "CT")]
    )
    by_tag = WorklistQuery.from_query_params([("00100020", "X1"), ("00400100.00080060", "CT")])
    mixed = WorklistQuery.from_query_params(
        [("ScheduledProcedureStepSequence.00080060", "CT"), ("00100020", "X1")]
    )
    assert by_keyword == by_tag == mixed
    assert by_tag.keys[1] == QueryKey((SPS,), "SQ")  # the parent sequence is implied


def test_uid_list_and_includefield() -> None:
    q = WorklistQuery.from_query_params(
        [
            ("StudyInstanceUID", "1.2.3,1.2.4"),
            ("includefield", "PatientName,00100020"),
            ("includefield", "ScheduledProcedureStepSequence.Modality"),
            ("includefield", "StudyInstanceUID,PatientName"),  # duplicates are merged
            ("includefield", "ReferencedStudySequence"),
        ]
    )
    assert q.keys == (
        QueryKey((0x00081110,), "SQ"),
        QueryKey((0x00100010,), "PN"),
        QueryKey((0x00100020,), "LO"),
        QueryKey((0x0020000D,), "UI", ("1.2.3", "1.2.4")),
        QueryKey((SPS,), "SQ"),
        QueryKey((SPS, 0x00080060), "CS"),
    )
    assert not q.include_all


def test_flags_and_paging() -> None:
    q = WorklistQuery.from_query_params(
        [("includefield", "all"), ("fuzzymatching", "true"), ("offset", "10"), ("limit", "5")]
    )
    assert (q.include_all, q.fuzzy, q.offset, q.limit) == (True, True, 10, 5)
    plain = WorklistQuery.from_query_params([("fuzzymatching", "false")])
    assert (plain.include_all, plain.fuzzy, plain.offset, plain.limit) == (False, False, 0, None)


def test_limit_above_the_server_maximum_is_capped_not_refused() -> None:
    """PS3.18 8.3.4.4: results = min(matches - offset, maxResults, limit)."""
    capped = WorklistQuery.from_query_params([("limit", "500")], max_limit=100)
    assert capped.limit == 100
    assert WorklistQuery.from_query_params([("limit", "50")], max_limit=100).limit == 50
    assert WorklistQuery.from_query_params([], max_limit=100).limit == 100
    assert WorklistQuery.from_query_params([("limit", "500")]).limit == 500


def test_unknown_parameters_are_ignored() -> None:
    q = WorklistQuery.from_query_params(
        [
            ("accept", "application/dicom+json"),
            ("charset", "utf-8"),
            ("requestid", "7"),
            ("_", "1"),
            ("emptyvaluematching", "true"),
            ("multiplevaluematching", "false"),
        ]
    )
    assert q == WorklistQuery()


def test_specific_character_set_parameter_is_not_a_key() -> None:
    q = WorklistQuery.from_query_params([("SpecificCharacterSet", "ISO_IR 192")])
    assert q.keys == () and q.specific_character_set == "ISO_IR 192"


@pytest.mark.parametrize(
    ("param", "named"),
    [
        (("PatientNmae", "X"), "'PatientNmae'"),
        (("0010001", "X"), "'0010001'"),
        (("0010001G", "X"), "'0010001G'"),
        (("PatientName.PatientID", "X"), "'PatientName.PatientID'"),
        (("00101234", "X"), "'00101234'"),
        (("ScheduledProcedureStepSequence", "CT"), "'ScheduledProcedureStepSequence'"),
        (("PatientBirthDate", "2024-01-01"), "'PatientBirthDate'"),
        (("00400100.00400003", "1000+0100"), "'00400100.00400003'"),
        (("StudyInstanceUID", "1.2.3,,1.2.4"), "'StudyInstanceUID'"),
        (("StudyInstanceUID", "1.2.3.x"), "'StudyInstanceUID'"),
        (("PatientID", "A\\B"), "'PatientID'"),
        (("PregnancyStatus", "two"), "'PregnancyStatus'"),
        (("includefield", "PatientNmae"), "'includefield'"),
        (("includefield", "PatientName,,PatientID"), "'includefield'"),
        (("fuzzymatching", "yes"), "'fuzzymatching'"),
        (("emptyvaluematching", "1"), "'emptyvaluematching'"),
        (("offset", "-1"), "'offset'"),
        (("offset", "1.5"), "'offset'"),
        (("limit", "0"), "'limit'"),
        (("limit", "ten"), "'limit'"),
    ],
)
def test_parameter_errors_name_the_parameter(param: tuple[str, str], named: str) -> None:
    with pytest.raises(BadQuery) as info:
        WorklistQuery.from_query_params([param])
    assert named in info.value.message


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ([("PatientID", "A"), ("00100020", "B")], "'00100020'"),
        ([("PatientID", "A"), ("PatientID", "A")], "'PatientID'"),
        ([("StudyInstanceUID", "1.2"), ("StudyInstanceUID", "1.3")], "'StudyInstanceUID'"),
        ([("limit", "1"), ("limit", "2")], "'limit'"),
        ([("fuzzymatching", "true"), ("fuzzymatching", "true")], "'fuzzymatching'"),
        ([("includefield", "all"), ("includefield", "PatientID")], "'includefield'"),
        ([("includefield", "all,PatientID")], "'includefield'"),
    ],
)
def test_duplicates_and_conflicts_are_refused(params: list[tuple[str, str]], named: str) -> None:
    with pytest.raises(BadQuery) as info:
        WorklistQuery.from_query_params(params)
    assert named in info.value.message


def test_parameter_errors_carry_the_offending_tag() -> None:
    with pytest.raises(BadQuery) as info:
        WorklistQuery.from_query_params([("00400100.00400002", "yesterday")])
    assert info.value.offending == (0x00400002,)


# --- rendering and round trips ------------------------------------------------------


def test_to_identifier_renders_matching_values_and_zero_length_return_keys() -> None:
    q = WorklistQuery.from_query_params(
        [
            ("PatientName", "DOE*"),
            ("StudyInstanceUID", "1.2.3,1.2.4"),
            ("ScheduledProcedureStepSequence.Modality", "C?"),
            ("PregnancyStatus", "4"),
            ("includefield", "ScheduledProcedureStepSequence.ScheduledStationAETitle"),
            ("includefield", "ReferencedStudySequence,PatientWeight"),
        ]
    )
    ds = q.to_identifier()
    assert ds.PatientName == "DOE*"
    assert list(ds.StudyInstanceUID) == ["1.2.3", "1.2.4"]
    assert ds.PregnancyStatus == 4
    assert ds.PatientWeight is None or ds.PatientWeight == ""
    assert len(ds.ReferencedStudySequence) == 1 and len(ds.ReferencedStudySequence[0]) == 0
    (item,) = ds.ScheduledProcedureStepSequence
    assert item.Modality == "C?"
    assert item.ScheduledStationAETitle == ""
    assert "SpecificCharacterSet" not in ds


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO_IR 192", "ИВАНОВ^ИВА?"), ("ISO_IR 144", "ИВАНОВ^ИВА?"), ("ISO_IR 100", "MÜLLER^*")],
)
def test_identifier_round_trip_through_bytes(charset: str, name: str) -> None:
    """Encoded in the SCU's character set and decoded again, the query is unchanged."""
    q = WorklistQuery.from_query_params(
        [
            ("PatientName", name),
            ("ScheduledProcedureStepSequence.ScheduledPerformingPhysicianName", name),
            ("StudyInstanceUID", "1.2.3,1.2.4"),
            ("ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate", "20240101-"),
            ("includefield", "ScheduledProcedureStepSequence.ScheduledProtocolCodeSequence"),
            ("includefield", "PatientWeight,PregnancyStatus"),
        ]
    )
    ds = q.to_identifier()
    ds.SpecificCharacterSet = charset
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    decoded = WorklistQuery.from_identifier(read_dataset(io.BytesIO(fp.getvalue()), True, True))
    assert decoded.keys == q.keys
    assert decoded.specific_character_set == charset


ROUND_TRIP_PARAMS = [
    [("PatientName", "DOE*")],
    [("PatientID", "X"), ("includefield", "all"), ("limit", "3"), ("offset", "2")],
    [("00400100.00400002", "20240101-20240102"), ("00400100.00400003", "1000-1200")],
    [("StudyInstanceUID", "1.2.3,1.2.4"), ("fuzzymatching", "true")],
    [("includefield", "00400100.00400008,00081110.00081150")],
    [("TimezoneOffsetFromUTC", "+0100"), ("PatientWeight", "72.5")],
    [("RequestedProcedureDescription", "A,B")],  # a literal comma in a non-UID value
]


@pytest.mark.parametrize("request_params", ROUND_TRIP_PARAMS)
def test_query_params_round_trip(request_params: list[tuple[str, str]]) -> None:
    q = WorklistQuery.from_query_params(request_params)
    assert WorklistQuery.from_query_params(q.to_query_params()) == q


@pytest.mark.parametrize("request_params", ROUND_TRIP_PARAMS)
def test_identifier_round_trip(request_params: list[tuple[str, str]]) -> None:
    q = WorklistQuery.from_query_params(request_params)
    identity = WorklistQuery(keys=q.keys)  # the parts an identifier can carry
    assert WorklistQuery.from_identifier(identity.to_identifier()) == identity


def test_to_query_params_layout() -> None:
    ds = sps_identifier(ScheduledStationAETitle="AA2", Modality="")
    ds.StudyInstanceUID = ["1.2.3", "1.2.4"]
    q = WorklistQuery.from_identifier(ds)
    assert q.to_query_params() == [
        ("0020000D", "1.2.3,1.2.4"),
        ("00400100.00400001", "AA2"),
        ("includefield", "00100010,00400100.00080060"),
    ]
    paged = WorklistQuery(keys=q.keys, include_all=True, fuzzy=True, offset=4, limit=2)
    assert params(paged)["includefield"] == "all"
    assert paged.to_query_params()[-3:] == [
        ("fuzzymatching", "true"),
        ("offset", "4"),
        ("limit", "2"),
    ]


def test_charset_is_not_sent_as_a_web_parameter() -> None:
    q = WorklistQuery.from_identifier(identifier(SpecificCharacterSet="ISO_IR 100", PatientID=""))
    assert q.to_query_params() == [("includefield", "00100020")]


# --- DCMTK example queries ----------------------------------------------------------


@pytest.fixture(scope="module")
def dcmtk_queries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """DCMTK's wlistqry examples converted with dump2dcm (skip only outside CI)."""
    if not DUMP2DCM.exists() or not any(WLISTQRY.glob("*.dump")):
        if os.environ.get("CI"):
            pytest.fail("DCMTK (dump2dcm and the wlistqry examples) is required in CI")
        pytest.skip("DCMTK dump2dcm or its wlistqry examples are not installed")
    out = tmp_path_factory.mktemp("wlistqry")
    files = []
    for dump in sorted(WLISTQRY.glob("*.dump")):
        target = out / f"{dump.stem}.dcm"
        subprocess.run([str(DUMP2DCM), "-q", str(dump), str(target)], check=True)
        files.append(target)
    yield files
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.dcmtk
def test_dcmtk_example_queries_round_trip(dcmtk_queries: list[Path]) -> None:
    assert len(dcmtk_queries) >= 10
    for path in dcmtk_queries:
        q = WorklistQuery.from_identifier(dcmread(path))
        assert q.keys, path.name
        assert WorklistQuery.from_query_params(q.to_query_params()) == q, path.name
        assert WorklistQuery.from_identifier(q.to_identifier()) == q, path.name


@pytest.mark.dcmtk
def test_dcmtk_example_query_contents(dcmtk_queries: list[Path]) -> None:
    by_name = {p.stem: WorklistQuery.from_identifier(dcmread(p)) for p in dcmtk_queries}
    assert dict(by_name["wlistqry5"].to_query_params())["00400100.00400003"] == "120000-"
    q12 = by_name["wlistqry12"]
    comments = next(k for k in q12.keys if k.path == (SPS, 0x00400400))
    assert comments.values == ("*",) and not comments.is_matching


# --- with_return_keys, value semantics ----------------------------------------------


def test_with_return_keys_adds_required_keys_once() -> None:
    q = WorklistQuery.from_query_params([("ScheduledProcedureStepSequence.Modality", "CT")])
    full = q.with_return_keys(DICOMWEB_REQUIRED_RETURN_KEYS)
    paths = [k.path for k in full.keys]
    assert len(paths) == len(set(paths))
    assert set(DICOMWEB_REQUIRED_RETURN_KEYS) <= set(paths)
    assert next(k for k in full.keys if k.path == (SPS, 0x00080060)).values == ("CT",)
    assert full.with_return_keys(DICOMWEB_REQUIRED_RETURN_KEYS) == full
    assert q.with_return_keys([]) is q


def test_with_return_keys_keeps_whole_sequences_whole() -> None:
    q = WorklistQuery.from_query_params([("includefield", "ScheduledProcedureStepSequence")])
    full = q.with_return_keys(DICOMWEB_REQUIRED_RETURN_KEYS)
    assert not any(len(k.path) > 1 and k.path[0] == SPS for k in full.keys)


def test_with_return_keys_rejects_unknown_paths() -> None:
    with pytest.raises(KeyError):
        WorklistQuery().with_return_keys([(0x00101234,)])


def test_queries_are_hashable_values() -> None:
    a = WorklistQuery(
        keys=(QueryKey((SPS, 0x00080060), "CS", ("CT",)), QueryKey((0x00100010,), "PN"))
    )
    b = WorklistQuery(
        keys=(QueryKey((0x00100010,), "PN"), QueryKey((SPS, 0x00080060), "CS", ("CT",)))
    )
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.keys[1] == QueryKey((SPS,), "SQ")  # implied parent
    assert a.matches({}) is False  # builds the cached matcher
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.deepcopy(a) == a
    with pytest.raises(AttributeError):
        a.offset = 3  # type: ignore[misc]


def test_invalid_construction_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        WorklistQuery(keys=(QueryKey((0x00100010,), "PN", ("A",)), QueryKey((0x00100010,), "PN")))
    with pytest.raises(ValueError):
        WorklistQuery(keys=(QueryKey((0x00100010,), "PN"), QueryKey((0x00100010, 1), "CS")))
    with pytest.raises(ValueError):
        WorklistQuery(limit=0)


# --- project ------------------------------------------------------------------------


def el(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


STORED: dict[str, Any] = {
    "00080050": el("SH", "ACC1"),
    "00100010": el("PN", {"Alphabetic": "DOE^JOHN"}),
    "00100020": el("LO", "P1"),
    "00081110": el("SQ", {"00081150": el("UI", "1.2.3.1"), "00081155": el("UI", "1.2.9")}),
    "00400100": el(
        "SQ",
        {
            "00080060": el("CS", "CT"),
            "00400001": el("AE", "CT1", "CT2"),
            "00400008": el("SQ", {"00080100": el("SH", "P1"), "00080104": el("LO", "Head")}),
        },
    ),
}  # fmt: skip


def test_project_trims_to_the_return_keys() -> None:
    q = WorklistQuery.from_query_params(
        [
            ("PatientName", "DOE*"),
            ("ScheduledProcedureStepSequence.Modality", "CT"),
            ("includefield", "ScheduledProcedureStepSequence.ScheduledStationName"),
            ("includefield", "00081110,PatientBirthDate,TimezoneOffsetFromUTC"),
        ]
    )
    assert q.project(STORED) == {
        "00081110": STORED["00081110"],  # asked without nested keys: whole
        "00100010": STORED["00100010"],
        "00100030": {"vr": "DA"},  # missing: zero length
        "00400100": {
            "vr": "SQ",
            "Value": [{"00080060": el("CS", "CT"), "00400010": {"vr": "SH"}}],
        },
    }  # Timezone Offset From UTC is never added empty
    assert list(q.project(STORED)) == sorted(q.project(STORED))


def test_project_keeps_every_value_and_leaves_the_item_alone() -> None:
    before = json.loads(json.dumps(STORED))
    q = WorklistQuery.from_query_params([("includefield", "00400100.00400001,00081110")])
    out = q.project(STORED)
    assert out["00400100"]["Value"][0]["00400001"] == el("AE", "CT1", "CT2")
    assert out["00081110"] == STORED["00081110"]
    assert before == STORED


def test_project_keeps_only_matching_sequence_items() -> None:
    stored = {
        "00400100": {
            "vr": "SQ",
            "Value": [
                {"00080060": el("CS", "MR"), "00400001": el("AE", "MR1")},
                {"00080060": el("CS", "CT"), "00400001": el("AE", "CT1")},
            ],
        }
    }
    q = WorklistQuery.from_query_params(
        [("00400100.00080060", "CT"), ("includefield", "00400100.00400001")]
    )
    assert q.matches(stored)
    assert q.project(stored)["00400100"]["Value"] == [
        {"00080060": el("CS", "CT"), "00400001": el("AE", "CT1")}
    ]
    ci = WorklistQuery.from_query_params([("00400100.00400006", "smith")])
    named = {"00400100": el("SQ", {"00400006": el("PN", {"Alphabetic": "SMITH"})})}
    assert ci.project(named, case_insensitive_pn=True)["00400100"]["Value"]
    assert ci.project(named)["00400100"] == {"vr": "SQ"}


def test_project_with_include_all_keeps_everything() -> None:
    q = WorklistQuery.from_query_params([("includefield", "all"), ("PatientBirthDate", "")])
    out = q.project(STORED)
    assert out == {**STORED, "00100030": {"vr": "DA"}}
    assert "00100030" not in STORED
