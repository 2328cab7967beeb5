"""The Table K.6-1 / K.6-1a catalogue and the attribute-path helpers."""

from __future__ import annotations

import pytest
from pydicom import datadict

from gateway.model import mwl_keys
from gateway.model.mwl_keys import (
    DICOMWEB_REQUIRED_RETURN_KEYS,
    MWL_KEYS,
    describe_path,
    keyword_to_path,
    lookup,
    path_to_keyword,
    path_to_tags,
)

SPS = 0x00400100


def test_every_row_agrees_with_the_data_dictionary() -> None:
    for path, key in MWL_KEYS.items():
        assert key.path == path
        assert key.keyword == datadict.keyword_for_tag(key.tag)
        assert key.vr == datadict.dictionary_VR(key.tag).split(" or ")[0]
        assert key.matching in ("R", "O", "-")
        assert key.return_type in ("1", "1C", "2", "2C", "3")
        for depth in range(1, len(path)):
            assert MWL_KEYS[path[:depth]].vr == "SQ", "every parent row is a sequence"


@pytest.mark.parametrize(
    ("path", "matching", "return_type"),
    [
        ((SPS,), "R", "1"),
        ((SPS, 0x00400001), "R", "1"),  # Scheduled Station AE Title
        ((SPS, 0x00400002), "R", "1"),
        ((SPS, 0x00400003), "R", "1"),
        ((SPS, 0x00080060), "R", "1"),
        ((SPS, 0x00400006), "R", "2"),  # Scheduled Performing Physician's Name
        ((SPS, 0x00400007), "O", "1C"),
        ((SPS, 0x00400012), "O", "2C"),  # Pre-Medication
        ((SPS, 0x00400020), "O", "3"),  # SPS Status
        ((SPS, 0x00400008, 0x00400440), "-", "3"),  # Protocol Context Sequence
        ((SPS, 0x00400008, 0x00400440, 0x0040A040), "-", "1"),
        ((0x00100010,), "R", "1"),
        ((0x00100020,), "R", "1"),
        ((0x0020000D,), "O", "1"),
        ((0x00081110, 0x00081155), "O", "1"),
        ((0x00380100,), "O", "3"),  # Pertinent Documents Sequence
        ((0x00380100, 0x00081150), "-", "1"),
        ((0x00400500, 0x00400560, 0x00400554), "O", "1"),  # Specimen UID
        ((0x22000005,), "O", "3"),  # Barcode Value
    ],
)
def test_table_rows(path: tuple[int, ...], matching: str, return_type: str) -> None:
    key = MWL_KEYS[path]
    assert (key.matching, key.return_type, key.source) == (matching, return_type, "K.6-1")


def test_code_sequence_macro_is_expanded_with_the_parents_matching_type() -> None:
    code_seq = (SPS, 0x00400008)
    assert MWL_KEYS[code_seq].code_sequence
    assert MWL_KEYS[(*code_seq, 0x00080104)].return_type == "1"  # Code Meaning
    assert MWL_KEYS[(*code_seq, 0x00080100)].return_type == "1C"  # Code Value
    assert MWL_KEYS[(*code_seq, 0x00080100)].matching == "O"
    concept = (SPS, 0x00400008, 0x00400440, 0x0040A043)  # inside Protocol Context
    assert MWL_KEYS[(*concept, 0x00080100)].matching == "-"
    assert (0x00321064, 0x00080102) in MWL_KEYS  # Requested Procedure Code Sequence


def test_table_k6_1a_keys() -> None:
    for tag in (0x00080005, 0x00080201, 0x0040A390):
        key = MWL_KEYS[(tag,)]
        assert (key.source, key.matching, key.return_type) == ("K.6-1a", "-", "1C")
    assert MWL_KEYS[(0x0040A390, 0x0040E001)].return_type == "1"


def test_dicomweb_required_return_keys_are_section_2_7() -> None:
    top = {
        0x00400100, 0x00401001, 0x00321060, 0x00321064, 0x0020000D, 0x00081110,
        0x00401003, 0x00401004, 0x00080050, 0x00321032, 0x00080090, 0x00380010,
        0x00380300, 0x00081120, 0x00100010, 0x00100020, 0x00100030, 0x00100040,
        0x00101030, 0x00403001, 0x00380500, 0x001021C0, 0x00102000, 0x00102110,
        0x00380050,
    }  # fmt: skip
    sps_item = {
        0x00400001, 0x00400002, 0x00400003, 0x00080060, 0x00400006, 0x00400007,
        0x00400008, 0x00400010, 0x00400011, 0x00400012, 0x00400009, 0x00321070,
    }  # fmt: skip
    expected = {(t,) for t in top} | {(SPS, t) for t in sps_item}
    for seq in (0x00081110, 0x00081120):
        expected |= {(seq, 0x00081150), (seq, 0x00081155)}
    assert set(DICOMWEB_REQUIRED_RETURN_KEYS) == expected
    assert list(DICOMWEB_REQUIRED_RETURN_KEYS) == sorted(expected)
    assert len(DICOMWEB_REQUIRED_RETURN_KEYS) == len(expected)


def test_lookup_of_attributes_outside_the_table() -> None:
    comments = lookup((SPS, 0x00400400))  # "All other attributes of the SPS Sequence"
    assert (comments.keyword, comments.vr, comments.matching, comments.return_type) == (
        "CommentsOnTheScheduledProcedureStep",
        "LT",
        "O",
        "3",
    )
    assert comments.source == "dictionary"
    assert lookup((0x00081030,)).matching == "O"  # Study Description, an extra key
    assert lookup((0x00380100, 0x00081199)).matching == "-"  # Pertinent Documents: universal
    assert lookup((SPS, 0x00400008, 0x00400440, 0x0040A121)).matching == "-"
    assert lookup((0x00280106,)).vr == "US"  # "US or SS" resolves to the first VR
    assert lookup((0x00090010,)).vr == "LO"  # private creator
    assert lookup((0x00091001,)).vr == "UN"  # private element: VR unknown without creator
    assert lookup((0x00090010,)).keyword == ""
    assert lookup((SPS,)) is MWL_KEYS[(SPS,)]


@pytest.mark.parametrize("path", [(), (0x00101234,), (0x00000100,), (0x00020010,), (0xFFFEE000,)])
def test_lookup_rejects_non_attributes(path: tuple[int, ...]) -> None:
    with pytest.raises(KeyError):
        lookup(path)


def test_keyword_to_path_accepts_keywords_tags_and_dotted_paths() -> None:
    assert keyword_to_path("PatientName") == (0x00100010,)
    assert keyword_to_path("00100010") == (0x00100010,)
    assert keyword_to_path("0020000d") == (0x0020000D,)
    assert keyword_to_path("ScheduledProcedureStepSequence.Modality") == (SPS, 0x00080060)
    assert keyword_to_path("00400100.00080060") == (SPS, 0x00080060)
    assert keyword_to_path("ScheduledProcedureStepSequence.00080060") == (SPS, 0x00080060)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PatientNmae", "unknown attribute keyword 'PatientNmae'"),
        ("0010001", "invalid tag '0010001'"),
        ("0010001G", "invalid tag"),
        ("PatientName.PatientID", "PatientName is not a sequence"),
        ("00101234", "not in the DICOM dictionary"),
        ("00000100", "not a dataset attribute"),
        ("ScheduledProcedureStepSequence.", "invalid attribute name ''"),
        ("Patient Name", "invalid attribute name"),
    ],
)
def test_keyword_to_path_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        keyword_to_path(text)


def test_path_renderings() -> None:
    path = (SPS, 0x00080060)
    assert path_to_keyword(path) == "ScheduledProcedureStepSequence.Modality"
    assert path_to_tags(path) == "00400100.00080060"
    assert describe_path(path) == "ScheduledProcedureStepSequence>Modality (0008,0060)"
    assert path_to_keyword((0x00091001,)) == "00091001"


def test_constants_match_the_catalogue() -> None:
    assert MWL_KEYS[(mwl_keys.SPECIFIC_CHARACTER_SET,)].keyword == "SpecificCharacterSet"
    assert MWL_KEYS[(mwl_keys.TIMEZONE_OFFSET_FROM_UTC,)].keyword == "TimezoneOffsetFromUTC"
    assert MWL_KEYS[(mwl_keys.SCHEDULED_PROCEDURE_STEP_SEQUENCE,)].keyword == (
        "ScheduledProcedureStepSequence"
    )
