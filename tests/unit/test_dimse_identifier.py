"""The fast C-FIND identifier encoder writes exactly the bytes of the pydicom path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from gateway.dicom_wire import attached
from gateway.dimse.charset import Charset, apply_charset
from gateway.dimse.identifier import identifier_dataset
from gateway.errors import InvalidAttributeValue
from gateway.model.dicom_json import dataset_to_json, json_to_dataset
from gateway.model.types import JsonDataset


def v(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


ITEMS: list[JsonDataset] = [
    {  # a typical worklist answer: odd lengths, empty keys, one SPS item
        "00080050": v("SH", "ACC1"),
        "00100010": v("PN", {"Alphabetic": "MÜLLER^JÜRGEN"}),
        "00100020": v("LO", "PID001"),
        "00100030": v("DA"),
        "00100040": v("CS", "O"),
        "0020000D": v("UI", "1.2.3.45"),
        "00321060": v("LO", "CT HEAD"),
        "00400100": v(
            "SQ",
            {
                "00080060": v("CS", "CT"),
                "00400001": v("AE", "CT01"),
                "00400002": v("DA", "20261123"),
                "00400003": v("TM", "081500"),
                "00400007": v("LO"),
                "00400008": v("SQ"),
            },
        ),
    },
    {  # multiple values, numbers as strings, every name group, nested sequences
        "00080060": v("CS", "CT", "MR"),
        "00081080": v("LO", "Diagnosis one", "Diagnosis two"),
        "00101010": v("AS", "045Y"),
        "00101020": v("DS", 1.75),
        "00101030": v("DS", 70.5),
        "00102000": v("LO", "Allergy"),
        "00104000": v("LT", "first line\r\nsecond line"),
        "00200010": v("SH"),
        "00321032": v("PN", {"Alphabetic": "Smith^Ann", "Phonetic": "smith^an"}),
        "00380010": v("LO", "ADM1"),
        "00400100": v(
            "SQ",
            {"00080060": v("CS", "MR"), "00400009": v("SH", "SPS1")},
            {"00080060": v("CS", "CT"), "00400009": v("SH", "SPS2")},
        ),
        "00401002": v("LO"),
        "00400007": v("LO", "x" * 63),
        "0032000A": v("CS"),
        "00081110": v(
            "SQ",
            {"00081150": v("UI", "1.2.840.10008.3.1.2.3.1"), "00081155": v("UI", "1.2.3")},
        ),
        "00100021": v("LO", "ISSUER"),
        "00401400": v("LT", "comment"),
        "00400006": v("PN"),
        "00081030": v("LO", "Study"),
        "00201200": v("IS", 4),
    },
    {  # attributes the fast path leaves to pydicom: numbers, binary, AT, a nested US
        "00100010": v("PN", {"Alphabetic": "Doe^John"}),
        "00280010": v("US", 512),
        "00189087": v("FD", 0.25),
        "00020001": {"vr": "OB", "InlineBinary": "AAE="},
        "00209165": v("AT", "00100020"),
        "00400100": v("SQ", {"00280011": v("US", 256), "00080060": v("CS", "MR")}),
    },
]

JAPANESE: JsonDataset = {
    "00100010": v(
        "PN",
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
    ),
    "00321060": v("LO", "頭部 CT"),
}

CHARSETS: list[Charset] = [(), ("ISO_IR 100",), ("ISO_IR 192",)]
SYNTAXES = [pytest.param(True, id="implicit"), pytest.param(False, id="explicit")]


def reference(item: JsonDataset, charset: Charset) -> Dataset:
    return apply_charset(json_to_dataset(item), charset)


def assert_same_bytes(item: JsonDataset, charset: Charset, implicit: bool) -> None:
    fast = identifier_dataset(item, charset, implicit_vr=implicit, little_endian=True)
    expected = encode(reference(item, charset), implicit, True)
    assert expected is not None
    assert encode(fast, implicit, True) == expected
    wire = attached(fast, implicit_vr=implicit, little_endian=True)
    assert wire in (None, expected)  # what pynetdicom sends without encoding again


def fully_raw(item: JsonDataset, charset: Charset, implicit: bool) -> bool:
    fast = identifier_dataset(item, charset, implicit_vr=implicit, little_endian=True)
    return attached(fast, implicit_vr=implicit, little_endian=True) is not None


@pytest.mark.parametrize("implicit", SYNTAXES)
@pytest.mark.parametrize("charset", CHARSETS, ids=lambda c: "/".join(c) or "default")
@pytest.mark.parametrize("index", range(len(ITEMS)))
def test_same_bytes_as_the_pydicom_path(index: int, charset: Charset, implicit: bool) -> None:
    if charset == () and index == 0:
        pytest.skip("Ü is not in the default repertoire; the charset policy never asks that")
    assert_same_bytes(ITEMS[index], charset, implicit)


@pytest.mark.parametrize("implicit", SYNTAXES)
@pytest.mark.parametrize("charset", [("ISO_IR 192",), ("", "ISO 2022 IR 87")], ids=str)
def test_same_bytes_for_japanese_names(charset: Charset, implicit: bool) -> None:
    assert_same_bytes(JAPANESE, charset, implicit)


@pytest.mark.parametrize("implicit", SYNTAXES)
def test_whole_encoding_is_attached_when_every_attribute_is_raw(implicit: bool) -> None:
    assert fully_raw(ITEMS[0], ("ISO_IR 192",), implicit)
    assert fully_raw(ITEMS[1], (), implicit)
    assert fully_raw(JAPANESE, ("", "ISO 2022 IR 87"), implicit)
    assert not fully_raw(ITEMS[2], ("ISO_IR 100",), implicit)  # US, FD, OB, AT: pydicom's
    fast = identifier_dataset(ITEMS[0], (), implicit_vr=implicit, little_endian=True)
    assert attached(fast, implicit_vr=not implicit, little_endian=True) is None


def test_raw_values_are_written_as_they_are() -> None:
    """The dataset claims the encoding it is written in, so pydicom copies raw values."""
    fast = identifier_dataset(ITEMS[0], ("ISO_IR 192",), implicit_vr=True, little_endian=True)
    assert fast.get_item(0x00100020).is_raw
    assert fast.original_encoding == (True, True)
    assert fast.original_character_set == fast._character_set


def test_big_endian_uses_the_pydicom_path() -> None:
    fast = identifier_dataset(ITEMS[1], ("ISO_IR 100",), implicit_vr=False, little_endian=False)
    assert encode(fast, False, False) == encode(reference(ITEMS[1], ("ISO_IR 100",)), False, False)


def test_invalid_values_are_refused_as_before() -> None:
    bad = {"00100020": v("LO", "ok"), "00201200": v("IS", "1.5")}
    with pytest.raises(InvalidAttributeValue):
        identifier_dataset(bad, (), implicit_vr=True, little_endian=True)


@pytest.mark.dcmtk
@pytest.mark.parametrize("implicit", SYNTAXES)
def test_same_bytes_for_dcmtk_example_worklist(dcmtk_worklist: Path, implicit: bool) -> None:
    for path in sorted((dcmtk_worklist / "OFFIS").glob("*.wl")):
        item = dataset_to_json(pydicom.dcmread(path))
        item.pop("00080005", None)
        for charset in (("ISO_IR 100",), ("ISO_IR 192",)):
            assert_same_bytes(item, charset, implicit)
