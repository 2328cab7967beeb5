"""PS3.4 C.2.2.2 matching as used by the Modality Worklist (K.2.2.2), on DICOM JSON items."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.model import matching
from gateway.model.query import QueryKey, WorklistQuery
from gateway.model.types import JsonDataset

SPS = "00400100"


def el(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON element; no values means zero length."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def pn(alphabetic: str | None = None, ideographic: str | None = None) -> dict[str, str]:
    value = {"Alphabetic": alphabetic, "Ideographic": ideographic}
    return {k: v for k, v in value.items() if v is not None}


def sps(**elements: dict[str, Any]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": [dict(elements)]}


def query(*params: tuple[str, str]) -> WorklistQuery:
    return WorklistQuery.from_query_params(list(params))


def matches(q: WorklistQuery, item: JsonDataset, **kwargs: bool) -> bool:
    return q.matches(item, **kwargs)


# --- universal and single value matching --------------------------------------------


def test_universal_matching_matches_absent_and_empty_attributes() -> None:
    for q in (query(("PatientID", "")), query(("PatientID", "*")), query()):
        assert matches(q, {})
        assert matches(q, {"00100020": el("LO")})
        assert matches(q, {"00100020": el("LO", "X")})


def test_single_value_matching_is_exact_and_case_sensitive() -> None:
    q = query(("PatientID", "AV35674"))
    assert matches(q, {"00100020": el("LO", "AV35674")})
    assert matches(q, {"00100020": el("LO", " AV35674 ")})  # padding is not significant
    assert not matches(q, {"00100020": el("LO", "av35674")})
    assert not matches(q, {"00100020": el("LO", "AV3567")})
    modality = query(("ScheduledProcedureStepSequence.Modality", "CT"))
    assert matches(modality, {SPS: sps(**{"00080060": el("CS", "CT")})})
    assert not matches(modality, {SPS: sps(**{"00080060": el("CS", "ct")})})


@pytest.mark.parametrize(
    "stored",
    [None, el("LO"), el("LO", None), el("LO", ""), {"vr": "LO", "Value": []}],
)
def test_zero_length_stored_value_never_matches_a_non_universal_key(stored: Any) -> None:
    """K.2.2.1.1.1, stricter than Query/Retrieve: unknown values do not match."""
    item = {} if stored is None else {"00100020": stored}
    for value in ("AV1", "A*", "?*"):
        assert not matches(query(("PatientID", value)), item)
    assert matches(query(("PatientID", "*")), item)  # `*` alone is universal


def test_numbers_match_by_value() -> None:
    weight = query(("PatientWeight", "72.5"))
    assert matches(weight, {"00101030": el("DS", 72.5)})
    assert matches(weight, {"00101030": el("DS", "72.50")})
    assert not matches(weight, {"00101030": el("DS", 72.0)})
    assert not matches(weight, {"00101030": el("DS", "heavy")})
    pregnancy = query(("PregnancyStatus", "4"))
    assert matches(pregnancy, {"001021C0": el("US", 4)})
    assert not matches(pregnancy, {"001021C0": el("US", 2)})


# --- person names -------------------------------------------------------------------


def test_pn_matches_the_alphabetic_group_case_sensitively_by_default() -> None:
    q = query(("PatientName", "DOE^JOHN"))
    assert matches(q, {"00100010": el("PN", pn("DOE^JOHN"))})
    assert matches(q, {"00100010": el("PN", pn("DOE^JOHN^^^"))})  # trailing empty components
    assert not matches(q, {"00100010": el("PN", pn("Doe^John"))})
    assert not matches(q, {"00100010": el("PN", pn(ideographic="DOE^JOHN"))})


def test_pn_case_insensitive_option() -> None:
    q = query(("PatientName", "doe^john"))
    item = {"00100010": el("PN", pn("DOE^JOHN"))}
    assert not matches(q, item)
    assert matches(q, item, case_insensitive_pn=True)
    wild = query(("PatientName", "doe*"))
    assert matches(wild, item, case_insensitive_pn=True)
    assert not matches(wild, item)
    # Both compiled variants are cached independently.
    assert matches(q, item, case_insensitive_pn=True) and not matches(q, item)


def test_pn_component_groups_are_matched_separately() -> None:
    item = {"00100010": el("PN", pn("Yamada^Tarou", "山田^太郎"))}
    assert matches(query(("PatientName", "Yamada^Tarou=山田^太郎")), item)
    assert matches(query(("PatientName", "=山田*")), item)
    assert matches(query(("PatientName", "*=山田^太郎")), item)
    assert not matches(query(("PatientName", "=山本*")), item)
    assert not matches(query(("PatientName", "Yamada^Tarou=*=やまだ*")), item)  # no phonetic


def test_pn_tolerates_the_plain_string_form() -> None:
    assert matches(query(("PatientName", "DOE*")), {"00100010": el("PN", "DOE^JOHN")})


# --- wild cards ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "stored", "expected"),
    [
        ("VIV*", "VIVALDI^ANTONIO", True),
        ("*^ANTONIO", "VIVALDI^ANTONIO", True),
        ("VIVALDI^ANTONI?", "VIVALDI^ANTONIO", True),
        ("VIVALDI^ANTON?", "VIVALDI^ANTONIO", False),
        ("V*L*I^*", "VIVALDI^ANTONIO", True),
        ("MOZART^WOLFGANG^*", "MOZART^WOLFGANG", True),  # empty trailing components
        ("ИВАНОВ^ИВА?", "ИВАНОВ^ИВАН", True),  # `?` is one Unicode character, not a byte
        ("ИВАНОВ^ИВА?", "ИВАНОВ^ИВ", False),
        ("ИВАНОВ^ИВА?", "ИВАНОВ^ИВАНА", False),
        ("ИВАНОВ^??АН", "ИВАНОВ^ИВАН", True),
        ("山田^?郎", "山田^太郎", True),
        ("D.E*", "DOE", False),  # regex metacharacters are literal
        ("D(E*", "D(E^JOHN", True),
        ("**", "ANY", True),
    ],
)
def test_pn_wildcards(key: str, stored: str, expected: bool) -> None:
    assert matches(query(("PatientName", key)), {"00100010": el("PN", pn(stored))}) is expected


def test_wildcards_on_other_string_vrs() -> None:
    desc = query(("RequestedProcedureDescription", "EXAM?"))
    assert matches(desc, {"00321060": el("LO", "EXAM6")})
    assert not matches(desc, {"00321060": el("LO", "EXAM66")})
    assert not matches(
        query(("RequestedProcedureDescription", "exam*")), {"00321060": el("LO", "EXAM6")}
    )
    station = query(("ScheduledProcedureStepSequence.ScheduledStationAETitle", "AA*"))
    assert matches(station, {SPS: sps(**{"00400001": el("AE", "AB1", "AA32")})})


def test_wildcard_regex_is_unicode_and_collapses_stars() -> None:
    regex = matching.wildcard_regex("a***?b")
    assert regex.pattern.count(".*") == 1
    assert regex.fullmatch("aéb") and regex.fullmatch("axyzéb") and not regex.fullmatch("ab")
    assert matching.wildcard_regex("x\n*").fullmatch("x\nline\nbreak")


# --- multiple values ----------------------------------------------------------------


def test_any_value_of_a_multi_valued_stored_attribute_matches() -> None:
    q = query(("ScheduledProcedureStepSequence.ScheduledStationAETitle", "AA33"))
    assert matches(q, {SPS: sps(**{"00400001": el("AE", "AA32", "AA33")})})
    assert not matches(q, {SPS: sps(**{"00400001": el("AE", "AA32", None)})})
    alerts = query(("MedicalAlerts", "LATEX"))
    assert matches(alerts, {"00102000": el("LO", None, "LATEX")})


def test_list_of_uid_matching() -> None:
    q = query(("StudyInstanceUID", "1.2.3,1.2.4"))
    assert q.keys[0].values == ("1.2.3", "1.2.4")
    assert matches(q, {"0020000D": el("UI", "1.2.4")})
    assert matches(q, {"0020000D": el("UI", "1.2.3\0")})  # UI padding
    assert not matches(q, {"0020000D": el("UI", "1.2.5")})
    assert not matches(q, {"0020000D": el("UI", "1.2")})
    assert not matches(q, {})


# --- dates and times ----------------------------------------------------------------

DATE = "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate"
TIME = "ScheduledProcedureStepSequence.ScheduledProcedureStepStartTime"


def when(date: str | None, time: str | None = None) -> JsonDataset:
    elements: dict[str, Any] = {}
    if date is not None:
        elements["00400002"] = el("DA", date)
    if time is not None:
        elements["00400003"] = el("TM", time)
    return {SPS: sps(**elements)}


@pytest.mark.parametrize(
    ("key", "stored", "expected"),
    [
        ("20240101", "20240101", True),
        ("20240101", "20240102", False),
        ("20240101-20240131", "20240101", True),
        ("20240101-20240131", "20240131", True),
        ("20240101-20240131", "20240201", False),
        ("20240101-20240131", "20231231", False),
        ("-20240101", "19991231", True),
        ("-20240101", "20240101", True),
        ("-20240101", "20240102", False),
        ("20240101-", "20991231", True),
        ("20240101-", "20231231", False),
        ("20240101", "2024.01.01", True),  # ACR-NEMA style stored value
        ("20240101", "garbage", False),
        ("20240201-20240101", "20240115", False),  # reversed range: empty period
    ],
)
def test_date_single_and_range_matching(key: str, stored: str, expected: bool) -> None:
    assert matches(query((DATE, key)), when(stored)) is expected


@pytest.mark.parametrize(
    ("key", "stored", "expected"),
    [
        ("1030", "1030", True),
        ("1030", "103000", True),  # matched by meaning: 1030 = 103000
        ("103000", "1030", True),
        ("1030", "103015.5", True),  # partial precision stands for its whole minute
        ("1030", "1031", False),
        ("10", "105959.999999", True),
        ("10", "110000", False),
        ("-1030", "103059", True),  # an open range ends with the end of its precision
        ("-1030", "103100", False),
        ("1030-", "102959.999999", False),
        ("1030-", "235959", True),
        ("103000.5-103000.7", "103000.6", True),
        ("103000.5-103000.7", "103000.8", False),
        ("103000.5-103000.7", "103000", True),  # the stored second overlaps the range
        ("0800-1200", "10:30:00", True),  # old colon form of a stored value
        ("2300-0100", "2330", False),  # ranges do not cross midnight
        ("2300-0100", "0030", False),
    ],
)
def test_time_matching(key: str, stored: str, expected: bool) -> None:
    assert matches(query((TIME, key)), when(None, stored)) is expected


def test_combined_date_time_range_is_one_continuous_period() -> None:
    """K.6-1: July 5 10:00 to July 7 18:00, not 10:00-18:00 on each day."""
    q = query((DATE, "20240705-20240707"), (TIME, "1000-1800"))
    assert not matches(q, when("20240705", "0900"))
    assert matches(q, when("20240705", "1000"))
    assert matches(q, when("20240705", "2300"))
    assert matches(q, when("20240706", "0300"))  # separate matching would reject this
    assert matches(q, when("20240707", "1800"))
    assert not matches(q, when("20240707", "1801"))
    assert not matches(q, when("20240705", None))  # no time: not a match (K.2.2.1.1.1)
    assert not matches(q, when(None, "1200"))


def test_combined_date_time_with_open_ranges() -> None:
    assert matches(query((DATE, "20240705-"), (TIME, "1000-")), when("20300101", "0000"))
    assert not matches(query((DATE, "20240705-"), (TIME, "1000-")), when("20240705", "0959"))
    assert matches(query((DATE, "-20240705"), (TIME, "-1000")), when("19990101", "2300"))
    assert not matches(query((DATE, "-20240705"), (TIME, "-1000")), when("20240705", "1001"))
    upto = query((DATE, "20240701-20240705"), (TIME, "-1000"))
    assert matches(upto, when("20240701", "0000"))
    period = matching.combined_interval("20240705-20240707", "1800-1000")
    assert period[0] < period[1]  # time1 > time2 is fine across days


def test_date_single_with_time_range_matches_separately() -> None:
    q = query((DATE, "20240705"), (TIME, "1000-1200"))
    assert matches(q, when("20240705", "1100"))
    assert not matches(q, when("20240705", "1300"))
    assert not matches(q, when("20240706", "1100"))


def test_combined_matching_applies_to_other_date_time_pairs() -> None:
    q = query(("StudyDate", "20240101-20240102"), ("StudyTime", "2200-0200"))
    item = {"00080020": el("DA", "20240101"), "00080030": el("TM", "2300")}
    assert matches(q, item)


@pytest.mark.parametrize(
    ("key", "stored", "expected"),
    [
        ("20240101120000+0100", "20240101110000+0000", True),  # offsets are honoured
        ("20240101120000+0100", "20240101120000+0000", False),
        ("20240101-0500", "20240101050000+0000", True),  # one value with a negative offset
        ("20240101-0500", "20240102050000+0000", False),
        ("2024", "20241231235959", True),  # partial precision: the whole year
        ("202402", "20240229", True),
        ("2023-2024", "20240615", True),
        ("20240101-", "20231231235959.999999", False),
        ("-20240101", "20240101235959", True),
    ],
)
def test_datetime_matching(key: str, stored: str, expected: bool) -> None:
    q = WorklistQuery(keys=(QueryKey((0x0040A120,), "DT", (key,)),))
    assert matches(q, {"0040A120": el("DT", stored)}) is expected


def test_interval_parsers() -> None:
    assert matching.parse_tm("10") == (36_000_000_000, 39_599_999_999)
    assert matching.parse_tm("24") is None
    assert matching.parse_tm("1060") is None
    assert matching.parse_tm("10.5") is None
    assert matching.parse_da("20240230") is None
    assert matching.parse_dt("2024123") is None
    assert matching.parse_dt("20240101+1500") is None  # offsets end at +1400
    assert matching.split_range("DA", "20240101-20240102") == ("20240101", "20240102")
    assert matching.split_range("DA", "20240101") is None
    assert matching.split_range("DT", "20240101-0500") is None
    assert matching.split_range("TM", "-") is None


# --- sequences ----------------------------------------------------------------------


def test_sequence_matching_needs_all_nested_keys_in_one_item() -> None:
    item = {
        SPS: {
            "vr": "SQ",
            "Value": [
                {"00080060": el("CS", "CT"), "00400001": el("AE", "CT1")},
                {"00080060": el("CS", "MR"), "00400001": el("AE", "MR1")},
            ],
        }
    }
    station = "ScheduledProcedureStepSequence.ScheduledStationAETitle"
    modality = "ScheduledProcedureStepSequence.Modality"
    assert matches(query((modality, "MR"), (station, "MR1")), item)  # any item may match
    assert matches(query((modality, "CT"), (station, "CT1")), item)
    assert not matches(query((modality, "CT"), (station, "MR1")), item)
    assert not matches(query((modality, "CT")), {SPS: el("SQ")})
    assert not matches(query((modality, "CT")), {})


def test_sequence_without_nested_keys_is_universal() -> None:
    q = query(("includefield", "ScheduledProcedureStepSequence"))
    assert matches(q, {}) and matches(q, {SPS: el("SQ")})
    returns_only = query(("includefield", "ScheduledProcedureStepSequence.Modality"))
    assert matches(returns_only, {})


def test_nested_sequence_matching() -> None:
    code = "ScheduledProcedureStepSequence.ScheduledProtocolCodeSequence.CodeValue"
    q = query((code, "P1"))
    protocol = {"vr": "SQ", "Value": [{"00080100": el("SH", "P0")}, {"00080100": el("SH", "P1")}]}
    assert matches(q, {SPS: sps(**{"00400008": protocol})})
    assert not matches(query((code, "P2")), {SPS: sps(**{"00400008": protocol})})


def test_keys_that_may_not_be_matched_are_only_returned() -> None:
    """Matching Key Type '-' (e.g. Pertinent Documents items, K.6-1a) never constrains."""
    q = query(
        ("PertinentDocumentsSequence.ReferencedSOPClassUID", "1.2.3"),
        ("TimezoneOffsetFromUTC", "+0100"),
    )
    assert matches(q, {})


def test_binary_vr_keys_never_constrain() -> None:
    q = WorklistQuery(keys=(QueryKey((0x00091010,), "UN", ("abc",)),))
    assert matches(q, {})


def test_compiled_matcher_is_built_once_per_query() -> None:
    q = query(("PatientID", "X"))
    assert q.compiled() is q.compiled()
    assert q.compiled(case_insensitive_pn=True) is not q.compiled()


def test_matcher_on_many_items() -> None:
    q = query(("PatientName", "DOE*"), ("ScheduledProcedureStepSequence.Modality", "CT"))
    items = [
        {
            "00100010": el("PN", pn(f"{'DOE' if i % 3 == 0 else 'ROE'}^{i}")),
            SPS: sps(**{"00080060": el("CS", "CT" if i % 2 == 0 else "MR")}),
        }
        for i in range(3000)
    ]
    assert sum(q.matches(it) for it in items) == 500  # i % 6 == 0


def test_check_key_value() -> None:
    assert matching.check_key_value("DA", "2024") is not None
    assert matching.check_key_value("DA", "20240101-20240102") is None
    assert matching.check_key_value("TM", "1000+0100") is not None  # no offset in TM
    assert matching.check_key_value("UI", "1.2.x") is not None
    assert matching.check_key_value("UI", "1." + "2" * 63) is not None  # > 64 characters
    assert matching.check_key_value("US", "1.5") is not None
    assert matching.check_key_value("DS", "1.5") is None
    assert matching.check_key_value("DS", "NaN") is not None
    assert matching.check_key_value("AT", "0010001") is not None
    assert matching.check_key_value("LO", "A\\B") is not None
    assert matching.check_key_value("LT", "A\\B") is None
    assert matching.check_key_value("DA", "*") is None
