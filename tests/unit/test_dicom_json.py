"""DICOM JSON Model (PS3.18 Annex F): pydicom conversion, strict body parsing, canonical form."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite
from pydicom.valuerep import PersonName

from gateway.errors import InvalidAttributeValue, InvalidPayload, PayloadTooLarge
from gateway.model.dicom_json import (
    _quick_parse,
    _strict_parse,
    _validate,
    dataset_to_json,
    dumps_json,
    dumps_stored,
    format_ds,
    json_depth,
    json_to_dataset,
    loads_stored,
    normalize_json,
    parse_json_body,
)
from gateway.model.types import JsonDataset
from tests.unit.mpps_examples import minimal_create, series_update

DATA = Path(__file__).resolve().parent.parent / "data"
JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def load(name: str) -> list[JsonDataset]:
    return parse_json_body((DATA / name).read_bytes())


def encode_and_read(ds: Dataset) -> Dataset:
    """Write ``ds`` as explicit VR little endian and read it back (raw elements, decoded lazily)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return dcmread(io.BytesIO(buffer.getvalue()), force=True)


def encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


# ---------------------------------------------------------------- Dataset -> JSON


def test_dataset_to_json_fixes_pydicom_pitfalls() -> None:
    ds = Dataset()
    ds.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    ds.ScheduledProcedureStepSequence[0].Modality = "CT"
    ds.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName = ""
    ds.PatientID = "P-4711"  # inserted after the sequence: output must still be sorted
    ds.AccessionNumber = "ACC-0007"
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.OtherPatientNames = ["Doe^Sally", "", "=山田^花子"]
    ds.PatientBirthDate = ""
    ds.PatientWeight = "72.50"
    ds.PatientSize = "1.8"
    ds.add_new(0x00201208, "IS", "02")
    ds.ReferencedImageSequence = []
    ds.add_new(0x00100000, "UL", 42)  # group length: must disappear
    ds.add_new(0x00209165, "AT", [0x00100010, 0x0020000D])
    ds.add_new(0x00280010, "US", 512)
    ds.add_new(0x00189087, "FD", 1.5)
    ds.add_new(0x00420011, "OB", b"\x00\x01\x02\x03")

    result = dataset_to_json(ds)

    assert list(result) == sorted(result)
    assert "00100000" not in result
    assert result["00080050"] == {"vr": "SH", "Value": ["ACC-0007"]}
    assert result["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}
    assert result["00101001"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Doe^Sally"}, None, {"Ideographic": "山田^花子"}],
    }
    assert result["00100030"] == {"vr": "DA"}
    assert result["00101030"] == {"vr": "DS", "Value": [72.5]}
    assert result["00101020"] == {"vr": "DS", "Value": [1.8]}
    assert result["00201208"] == {"vr": "IS", "Value": [2]}
    assert result["00081140"] == {"vr": "SQ"}
    assert result["00209165"] == {"vr": "AT", "Value": ["00100010", "0020000D"]}
    assert result["00280010"] == {"vr": "US", "Value": [512]}
    assert result["00189087"] == {"vr": "FD", "Value": [1.5]}
    assert result["00420011"] == {"vr": "OB", "InlineBinary": "AAECAw=="}
    assert result["00400100"] == {
        "vr": "SQ",
        "Value": [{"00080060": {"vr": "CS", "Value": ["CT"]}, "00400006": {"vr": "PN"}}, {}],
    }


def test_pn_with_three_groups_keeps_only_non_empty_groups() -> None:
    ds = Dataset()
    ds.PatientName = JAPANESE
    ds.OtherPatientNames = ["Doe^Sally^^^", "==やまだ"]
    result = dataset_to_json(ds)
    assert result["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    assert result["00101001"]["Value"] == [{"Alphabetic": "Doe^Sally"}, {"Phonetic": "やまだ"}]


def test_latin1_dataset_is_decoded_and_round_trips() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientComments = "Größe gemessen, Gewicht geschätzt"
    raw = encoded(ds)
    assert b"M\xfcller^J\xfcrgen" in raw  # really Latin-1 on the wire, not UTF-8

    as_json = dataset_to_json(dcmread(io.BytesIO(raw), force=True))
    assert as_json["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]}
    assert as_json["00104000"]["Value"] == ["Größe gemessen, Gewicht geschätzt"]
    assert as_json["00080005"] == {"vr": "CS", "Value": ["ISO_IR 100"]}

    back = json_to_dataset(as_json)
    assert str(back.PatientName) == "Müller^Jürgen"
    back.SpecificCharacterSet = "ISO_IR 192"  # the caller picks the repertoire when encoding
    reread = encode_and_read(back)
    assert "Müller^Jürgen".encode() in encoded(back)
    assert dataset_to_json(reread)["00100010"] == as_json["00100010"]


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 192", "Иванов^Иван"),
        ("ISO_IR 192", JAPANESE),
        ("ISO_IR 144", "Иванов^Иван"),  # Latin/Cyrillic, one byte per character
        (["", "ISO 2022 IR 87"], JAPANESE),  # PS3.5 H.3.1 style, with escape sequences
    ],
)
def test_non_latin_names_survive_dataset_json_dataset(charset: str | list[str], name: str) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = "ID-1"
    as_json = dataset_to_json(encode_and_read(ds))
    assert (
        PersonName(name).components
        == tuple(
            as_json["00100010"]["Value"][0].get(group, "")
            for group in ("Alphabetic", "Ideographic", "Phonetic")
        )[: len(PersonName(name).components)]
    )

    back = json_to_dataset(as_json)
    assert str(back.PatientName) == name
    back.SpecificCharacterSet = "ISO_IR 192"
    assert dataset_to_json(encode_and_read(back))["00100010"] == as_json["00100010"]


def test_dcmtk_example_worklist_round_trips(dcmtk_worklist: Path) -> None:
    files = sorted((dcmtk_worklist / "OFFIS").glob("*.wl"))
    assert files
    for path in files:
        as_json = dataset_to_json(dcmread(path, force=True))
        assert as_json["00400100"]["vr"] == "SQ"
        again = dataset_to_json(encode_and_read(json_to_dataset(as_json)))
        assert normalize_json(again) == normalize_json(as_json), path.name


# ---------------------------------------------------------------- JSON -> Dataset


@pytest.mark.parametrize("name", ["json_mwl_result.json", "json_mpps_update.json"])
def test_spec_examples_round_trip_through_pydicom(name: str) -> None:
    for obj in load(name):
        ds = json_to_dataset(obj)
        assert dataset_to_json(ds) == normalize_json(obj)
        assert dataset_to_json(encode_and_read(ds)) == normalize_json(obj)


def test_json_to_dataset_values() -> None:
    obj: JsonDataset = {
        "00080008": {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]},
        "00090010": {"vr": "LO", "Value": ["ACME 1.0"]},
        "00091001": {"vr": "LO", "Value": ["private"]},
        "00100010": {"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]},
        "00100030": {"vr": "DA"},
        "00101030": {"vr": "DS", "Value": [0.1 + 0.2]},
        "00101020": {"vr": "DS", "Value": ["1.80"]},
        "00201208": {"vr": "IS", "Value": [3.0]},
        "00209165": {"vr": "AT", "Value": ["0010002a"]},
        "00280010": {"vr": "US", "Value": [512]},
        "00420011": {"vr": "OB", "InlineBinary": "AAECAw=="},
        "00191001": {"vr": "UN", "InlineBinary": "AQI="},
        "00400100": {"vr": "SQ", "Value": [{}, {"00080060": {"vr": "CS", "Value": ["MR"]}}]},
        "00081140": {"vr": "SQ"},
    }
    ds = json_to_dataset(obj)
    assert list(ds.ImageType) == ["ORIGINAL", "", "AXIAL"]
    assert ds[0x00091001].private_creator == "ACME 1.0"
    assert str(ds.PatientName) == "=山田^太郎"
    assert ds.PatientBirthDate == ""
    assert str(ds.PatientWeight) == "0.3"  # legal DS, not 0.30000000000000004
    assert str(ds.PatientSize) == "1.80"
    assert ds[0x00201208].value == 3
    assert ds[0x00209165].value == 0x0010002A
    assert ds.Rows == 512
    assert ds[0x00420011].value == b"\x00\x01\x02\x03"
    assert ds[0x00191001].VR == "UN"
    assert len(ds.ScheduledProcedureStepSequence) == 2
    assert ds.ScheduledProcedureStepSequence[1].Modality == "MR"
    assert len(ds.ReferencedImageSequence) == 0


@pytest.mark.parametrize(
    ("attr", "error"),
    [
        ({"vr": "IS", "Value": [1.5]}, InvalidAttributeValue),
        ({"vr": "IS", "Value": ["12a"]}, InvalidAttributeValue),
        ({"vr": "DS", "Value": ["seventy"]}, InvalidAttributeValue),
        ({"vr": "US", "Value": [1, None]}, InvalidAttributeValue),
        ({"vr": "OB", "BulkDataURI": "http://example.org/bulk/1"}, InvalidPayload),
        ({"vr": "LO", "Value": "not a list"}, InvalidPayload),
    ],
)
def test_json_to_dataset_rejects_bad_values(attr: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        json_to_dataset({"00400100": {"vr": "SQ", "Value": [{"00101030": attr}]}})
    assert "00400100 > item 1 > 00101030" in str(info.value)
    assert info.value.offending == (0x00400100,)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0.1 + 0.2, "0.3"),
        (72.5, "72.5"),
        (2.0, "2"),
        (7, "7"),
        (1e-20, "1e-20"),
        (1234567890123456.0, "1234567890123456"),
        (0.1234567890123456, "0.12345678901235"),
    ],
)
def test_format_ds_gives_legal_ds(number: float, text: str) -> None:
    assert format_ds(number) == text
    assert len(text) <= 16


# ---------------------------------------------------------------- parse_json_body


def test_parse_accepts_object_and_array() -> None:
    one = b'{"00100020": {"vr": "LO", "Value": ["P1"]}}'
    assert parse_json_body(one) == [{"00100020": {"vr": "LO", "Value": ["P1"]}}]
    assert parse_json_body(b"[" + one + b"," + one + b"]") == parse_json_body(one) * 2
    assert parse_json_body(b"[]") == []
    assert parse_json_body(b'\xef\xbb\xbf{"0020000d": {"vr": "UI"}}') == [
        {"0020000D": {"vr": "UI"}}
    ]


BAD_BODIES = [
    (b"", "malformed JSON"),
    (b'{"00100020": {"vr": "LO", "Value": ["P1"]}', "malformed JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"42", "object or an array"),
    (b"[1]", "must be a JSON object"),
    (b'{"PatientName": {"vr": "PN"}}', "not 8 hex digits"),
    (b'{"0010001": {"vr": "PN"}}', "not 8 hex digits"),
    (b'{"00100010": {"Value": [{"Alphabetic": "Doe^Sally"}]}}', "'vr' is missing"),
    (b'{"00100010": {"vr": "XX"}}', "unknown VR"),
    (b'{"00100010": ["vr", "PN"]}', "must be a JSON object"),
    (b'{"00100020": {"vr": "LO", "Value": "P1"}}', "must be an array"),
    (b'{"00100020": {"vr": "LO", "value": ["P1"]}}', "unexpected member 'value'"),
    (b'{"00100010": {"vr": "PN", "Value": ["Doe^Sally"]}}', "wrong JSON type for VR PN"),
    (b'{"00100010": {"vr": "PN", "Value": [{"Alpha": "Doe"}]}}', "wrong JSON type"),
    (b'{"00280010": {"vr": "US", "Value": ["512"]}}', "wrong JSON type for VR US"),
    (b'{"00280010": {"vr": "US", "Value": [true]}}', "wrong JSON type for VR US"),
    (b'{"00209165": {"vr": "AT", "Value": ["(0010,0010)"]}}', "wrong JSON type for VR AT"),
    (b'{"00400100": {"vr": "SQ", "Value": [null]}}', "wrong JSON type for VR SQ"),
    (b'{"00420011": {"vr": "OB", "Value": [1]}}', "InlineBinary or BulkDataURI"),
    (b'{"00420011": {"vr": "OB", "InlineBinary": "***"}}', "not valid base64"),
    (b'{"00100020": {"vr": "LO", "InlineBinary": "AA=="}}', "InlineBinary is not allowed"),
    (b'{"00400100": {"vr": "SQ", "BulkDataURI": "x"}}', "BulkDataURI is not allowed"),
    (b'{"00101030": {"vr": "DS", "Value": [1], "BulkDataURI": "x"}}', "only one of"),
    (b'{"00101030": {"vr": "DS", "Value": [NaN]}}', "NaN is not valid JSON"),
    (b'{"00101030": {"vr": "DS", "Value": [1e400]}}', "out of range"),
    (b'{"00100020": {"vr": "LO"}, "00100020": {"vr": "LO"}}', "duplicate member"),
    (b'{"0010002a": {"vr": "LO"}, "0010002A": {"vr": "LO"}}', "duplicate member"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES)
def test_parse_refuses_malformed_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_json_body(body)
    assert reason in str(info.value)


def test_parse_error_names_the_place_but_no_values() -> None:
    body = json.dumps(
        [
            {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Sally"}]}},
            {
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Sally"}]},
                "00400100": {"vr": "SQ", "Value": [{"00400006": {"vr": "PN", "Value": ["Doe"]}}]},
            },
        ]
    ).encode()
    with pytest.raises(InvalidPayload) as info:
        parse_json_body(body)
    message = str(info.value)
    assert message.startswith("dataset 2 > 00400100 > item 1 > 00400006")
    assert "Doe" not in message
    assert info.value.offending == (0x00400100,)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10000 + b"]" * 10000,
        b'{"a":' * 10000 + b"{}" + b"}" * 10000,
        b"[" * 100000,  # not even well-formed
        b'{"00400100":{"vr":"SQ","Value":[' * 12 + b"{}" + b"]}}" * 12,
    ],
)
def test_parse_refuses_deep_nesting_without_recursing(body: bytes) -> None:
    with pytest.raises(InvalidPayload, match="nesting depth"):
        parse_json_body(body)


def test_depth_scan_ignores_brackets_in_strings_and_is_linear() -> None:
    assert json_depth(b'{"a": "[[[{{{\\"[["}') == 1
    assert json_depth(b'[[], {"x": [1]}]') == 3
    start = time.perf_counter()
    with pytest.raises(InvalidPayload):  # unterminated string full of escaped quotes
        parse_json_body(b'["' + b'\\"' * 500_000)
    assert time.perf_counter() - start < 2.0


def test_nesting_within_limit_is_accepted() -> None:
    body = b'{"00400100":{"vr":"SQ","Value":[' * 9 + b"{}" + b"]}}" * 9
    assert json_depth(body) == 28
    assert parse_json_body(body)[0]["00400100"]["vr"] == "SQ"


QUICK_AND_STRICT = [
    json.dumps([minimal_create(), series_update()]).encode(),
    b'{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe", "Alphabetic": "Roe"}]}}',
    b'{"00100020": {"vr": "LO", "Value": ["a:b"]}, "00100020": {"vr": "LO"}}',  # ":" in text
    b'{"0040A30A": {"vr": "DS", "Value": [18446744073709551616, -9223372036854775809]}}',
    b'{"0040A30A": {"vr": "DS", "Value": [9223372036854775807, 1e19, -0, -0.0, 0.1]}}',
    b'{"00100020": {"vr": "LO", "Value": ["\\ud800"]}}',
    b"\xef\xbb\xbf\xef\xbb\xbf{}",
    b'{"00100020": {"vr": "LO", "Value": ["\x01"]}}',
    b'{"00100020": {"vr": "LO", "Value": ["caf\xc3\xa9", "\\u00e9\\ud83d\\ude00"]}}',
    b' [ {} , {"00100020" : {"vr":"LO"}} ] ',
    b"[" * 32 + b"]" * 32,
    b"[" * 33 + b"]" * 33,
    b"1e400",
    b"18446744073709551616",
    b'"\xff"',
]


@pytest.mark.parametrize("body", QUICK_AND_STRICT)
def test_quick_parse_equals_the_strict_parse_or_steps_aside(body: bytes) -> None:
    """orjson's tree is used only where it is exactly what Python's json gives (the depth
    limit is parse_json_body's duty, tested below)."""
    quick = _quick_parse(body, 32)
    try:
        strict = _strict_parse(body, 1000)
    except InvalidPayload:
        assert quick is None
        return
    if quick is not None:
        assert repr(quick) == repr(strict)  # repr: int vs float and member order count too


def _strict_route(body: bytes) -> list[Any]:
    """What parse_json_body did before it had a quick way: strict parse, then the check."""
    parsed = _strict_parse(body, 32)
    if isinstance(parsed, dict):
        datasets, first = [parsed], 1
    elif isinstance(parsed, list):
        datasets, first = parsed, 2
    else:
        raise InvalidPayload("JSON body must be an object or an array of objects")
    _validate(datasets, first_depth=first, max_depth=32, max_items=10000, repair=True)
    return datasets


def _sequences(levels: int, innermost: bytes) -> bytes:
    return b'{"00400100":{"vr":"SQ","Value":[' * levels + innermost + b"]}}" * levels


DICOM_BODIES = [
    *QUICK_AND_STRICT,
    b'[{"00100020": {"vr": "LO", "Value": ["x"]}, "00100020": {"vr": "LO"}}]',
    b'{"00080018": {"vr": "UI", "Value": ["1.2"]}, "00080018": {"vr": "XX"}}',
    b'{"00420010": {"vr": "LO", "BulkDataURI": "http://h:8080/x"}}',  # ":" in a string
    b'{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "D:e"}]}}',
    b'{"00101030": {"vr": "DS", "Value": [1e16, 99999999999999999999]}}',
    b'{"00101030": {"vr": "DS", "Value": ["1e+20"]}, "00100020": {"vr": "LO"}}',
    b'{"00100020": {"vr": "LO", "Value": ["\\u003a"]}, "00100020": {"vr": "LO"}}',
    b'{"00100020": {"vr": "LO", "Value": ["\\u003a"]}}',
    b'{"0010002a": {"vr": "LO"}, "0010002A": {"vr": "SH"}}',
    b'{"00100020": {"vr": "LO", "Value": ["x"], "vr": "SH"}}',
    _sequences(10, b'{"00100010":{"vr":"PN","Value":[{"Alphabetic":"D"}]}}'),  # depth 34
    _sequences(10, b'{"00100020":{"vr":"LO"}}'),  # depth 32: the walk decides
    _sequences(9, b'{"00100010":{"vr":"PN","Value":[{"Alphabetic":"D"}]}}'),  # depth 31
    _sequences(11, b"{}"),  # a dataset at depth 34
]


@pytest.mark.parametrize("body", DICOM_BODIES)
def test_parse_json_body_equals_the_strict_route(body: bytes) -> None:
    """Same datasets, or the same refusal in the same words, as the strict route."""
    try:
        expected = _strict_route(body)
    except (InvalidPayload, PayloadTooLarge) as exc:
        with pytest.raises(type(exc)) as info:
            parse_json_body(body)
        assert str(info.value) == str(exc)
        return
    assert repr(parse_json_body(body)) == repr(expected)


def test_parse_json_body_bounds_the_depth_under_datasets() -> None:
    """A PN object three levels below the deepest dataset counts towards the limit."""
    with pytest.raises(InvalidPayload, match="nesting depth 34 exceeds"):
        parse_json_body(_sequences(10, b'{"00100010":{"vr":"PN","Value":[{"Alphabetic":"D"}]}}'))
    assert parse_json_body(_sequences(10, b'{"00100020":{"vr":"LO"}}'))


def test_quick_parse_takes_the_common_body() -> None:
    body = json.dumps([minimal_create()]).encode()
    assert _quick_parse(body, 32) == json.loads(body)


def test_parse_limits_items() -> None:
    body = json.dumps([{}] * 11).encode()
    assert len(parse_json_body(body, max_items=11)) == 11
    with pytest.raises(PayloadTooLarge):
        parse_json_body(body, max_items=10)
    nested = {"00400100": {"vr": "SQ", "Value": [{}] * 20}}
    with pytest.raises(PayloadTooLarge):
        parse_json_body(json.dumps(nested).encode(), max_items=20)


# ---------------------------------------------------------------- normalize / dumps


def test_normalize_json_canonical_form() -> None:
    obj: JsonDataset = {
        "00400100": {
            "vr": "SQ",
            "Value": [{"00400002": {"vr": "DA", "Value": [""]}, "00080060": {"vr": "CS"}}],
        },
        "0010001a": {"vr": "LO", "Value": []},
        "00100000": {"vr": "UL", "Value": [8]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Sally^^", "Phonetic": ""}]},
        "00101030": {"vr": "DS", "Value": ["72.50", 0.1 + 0.2, 3.0, None]},
        "00201208": {"vr": "IS", "Value": ["02"]},
        "00080008": {"vr": "CS", "Value": ["ORIGINAL ", "", "AXIAL"]},
        "00209165": {"vr": "AT", "Value": ["0010002a"]},
        "00081140": {"vr": "SQ", "Value": []},
        "00420011": {"vr": "OB", "InlineBinary": ""},
    }
    assert normalize_json(obj) == {
        "00080008": {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]},
        "00081140": {"vr": "SQ"},
        "0010001A": {"vr": "LO"},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Sally"}]},
        "00101030": {"vr": "DS", "Value": [72.5, 0.3, 3, None]},
        "00201208": {"vr": "IS", "Value": [2]},
        "00209165": {"vr": "AT", "Value": ["0010002A"]},
        "00400100": {
            "vr": "SQ",
            "Value": [{"00080060": {"vr": "CS"}, "00400002": {"vr": "DA"}}],
        },
        "00420011": {"vr": "OB"},
    }
    assert list(normalize_json(obj)) == sorted(normalize_json(obj))
    assert normalize_json(normalize_json(obj)) == normalize_json(obj)


def test_dumps_json_is_compact_sorted_utf8() -> None:
    obj: JsonDataset = {
        "00400100": {"vr": "SQ", "Value": [{"00400002": {"vr": "DA"}, "00080060": {"vr": "CS"}}]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]},
    }
    out = dumps_json([obj])
    assert (
        out
        == (
            '[{"00100010":{"Value":[{"Alphabetic":"Müller^Jürgen"}],"vr":"PN"},'
            '"00400100":{"Value":[{"00080060":{"vr":"CS"},"00400002":{"vr":"DA"}}],"vr":"SQ"}}]'
        ).encode()
    )
    assert parse_json_body(out) == [obj]
    assert dumps_json([]) == b"[]"


def test_spec_examples_are_canonical_already() -> None:
    for name in ("json_mwl_result.json", "json_mpps_update.json"):
        for obj in load(name):
            assert normalize_json(obj) == obj
            assert json.loads(dumps_json([obj])) == [obj]


def test_stored_text_reads_back_exactly() -> None:
    """orjson alone would read the integer written by the json fallback as a float."""
    plain: JsonDataset = {"00100020": {"vr": "LO", "Value": ["P1"]}}
    huge: JsonDataset = {"00181150": {"vr": "IS", "Value": [10**20, 1.5]}}
    nested: JsonDataset = {"00400100": {"vr": "SQ", "Value": [huge, plain]}}
    big_float: JsonDataset = {"00181150": {"vr": "FD", "Value": [1e16, -2.5e300, 9e15]}}
    text: JsonDataset = {"00081030": {"vr": "LO", "Value": ["7e+20", "e+"]}}
    for doc in (plain, huge, nested, big_float, text, minimal_create(), 2**64, [-(2**70)]):
        back = loads_stored(dumps_stored(doc))
        assert repr(back) == repr(doc)
