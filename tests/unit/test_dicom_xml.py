"""Native DICOM Model XML (PS3.19 A.1): writer, safe reader, and JSON <-> XML identity."""

from __future__ import annotations

import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from gateway.errors import InvalidPayload, PayloadTooLarge
from gateway.model.dicom_json import normalize_json, parse_json_body
from gateway.model.dicom_xml import NATIVE_DICOM_NS, json_to_xml, xml_to_json
from gateway.model.types import JsonDataset

DATA = Path(__file__).resolve().parent.parent / "data"
NS = {"d": NATIVE_DICOM_NS}

RICH: JsonDataset = {
    "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
    "00080008": {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]},
    "00090010": {"vr": "LO", "Value": ["ACME 1.0"]},
    "00090011": {"vr": "LO", "Value": ["OTHER & <CO>"]},
    "00091001": {"vr": "LO", "Value": ["private in block 10"]},
    "00091101": {"vr": "DS", "Value": [1.25]},
    "000B1001": {"vr": "SH", "Value": ["creator missing"]},
    "00100010": {
        "vr": "PN",
        "Value": [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ],
    },
    "00100020": {"vr": "LO", "Value": ["P-4711"]},
    "00100030": {"vr": "DA"},
    "00101001": {
        "vr": "PN",
        "Value": [{"Alphabetic": "Doe^^Middle^Dr^Jr"}, None, {"Phonetic": "x"}],
    },
    "00101030": {"vr": "DS", "Value": [72.5, 0.3, 100]},
    "00104000": {"vr": "LT", "Value": ['  line 1\r\nline 2\ttab & <b>"quoted"</b>']},
    "00189087": {"vr": "FD", "Value": [0.1, -2.5e-300, "NaN", "Infinity"]},
    "00189089": {"vr": "FL", "Value": [3]},
    "00201208": {"vr": "IS", "Value": [2, -7]},
    "0020000D": {"vr": "UI", "Value": ["1.2.250.1.59.40211.30000008090412501082300000004"]},
    "00209165": {"vr": "AT", "Value": ["00100010", "0020000D"]},
    "00280010": {"vr": "US", "Value": [512]},
    "00186020": {"vr": "SL", "Value": [-1, 2]},
    "00080301": {"vr": "US"},
    "0072007C": {"vr": "SV", "Value": [-(2**60), "9223372036854775807"]},
    "00420011": {"vr": "OB", "InlineBinary": "AAECAwQ="},
    "7FE00010": {"vr": "OW", "BulkDataURI": "http://example.org/bulk?a=1&b=2"},
    "00081140": {"vr": "SQ"},
    "00400100": {
        "vr": "SQ",
        "Value": [
            {
                "00080060": {"vr": "CS", "Value": ["CT"]},
                "00400002": {"vr": "DA", "Value": ["20250101"]},
                "00400003": {"vr": "TM", "Value": ["0930"]},
                "00400006": {"vr": "PN"},
                "00400008": {
                    "vr": "SQ",
                    "Value": [{}, {"00080100": {"vr": "SH", "Value": ["X-1"]}}],
                },
            },
            {},
        ],
    },
}


def spec_json(name: str) -> list[JsonDataset]:
    return parse_json_body((DATA / name).read_bytes())


def round_trip(obj: JsonDataset) -> JsonDataset:
    return xml_to_json(json_to_xml(obj))


# ---------------------------------------------------------------- identity


@pytest.mark.parametrize(
    "obj",
    [
        *spec_json("json_mwl_result.json"),
        *spec_json("json_mpps_update.json"),
        RICH,
        {},
        {"00400100": {"vr": "SQ", "Value": [{}, {}, {}]}},
        {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Sally^^^"}, {}, None]}},
        {"00101030": {"vr": "DS", "Value": ["72.50", "  1e3 ", None, "bogus"]}},
        {"00201208": {"vr": "IS", "Value": ["007", 3.0]}},
        {"00100020": {"vr": "LO", "Value": [""]}, "00100021": {"vr": "LO", "Value": []}},
    ],
    ids=lambda o: ",".join(list(o)[:3]) or "empty",
)
def test_json_xml_json_is_identity(obj: JsonDataset) -> None:
    assert normalize_json(round_trip(obj)) == normalize_json(obj)
    assert round_trip(obj) == normalize_json(round_trip(obj))  # reader output is canonical


def test_spec_xml_example_reads_as_the_spec_json() -> None:
    from_xml = xml_to_json((DATA / "xml_mpps_update.xml").read_bytes())
    assert from_xml == normalize_json(spec_json("json_mpps_update.json")[0])


def test_spec_mwl_xml_example() -> None:
    result = xml_to_json((DATA / "xml_mwl_result.xml").read_bytes())
    assert result["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Sally"}]}
    assert result["00100030"] == {"vr": "DA"}
    assert result["00101030"] == {"vr": "DS", "Value": [72.5]}
    step = result["00400100"]["Value"][0]
    assert step["00400006"] == {"vr": "PN"}
    assert step["00080060"] == {"vr": "CS", "Value": ["CT"]}


# ---------------------------------------------------------------- writer


def test_document_structure() -> None:
    data = json_to_xml(RICH)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<NativeDicomModel xmlns=')
    root = ElementTree.fromstring(data)
    assert root.tag == f"{{{NATIVE_DICOM_NS}}}NativeDicomModel"
    assert root.get("{http://www.w3.org/XML/1998/namespace}space") == "preserve"

    def attr(tag: str) -> ElementTree.Element:
        found = root.find(f"d:DicomAttribute[@tag='{tag}']", NS)
        assert found is not None, tag
        return found

    assert attr("00100020").get("keyword") == "PatientID"
    assert attr("00100020").findtext("d:Value[@number='1']", namespaces=NS) == "P-4711"
    image_type = attr("00080008").findall("d:Value", NS)
    assert [(v.get("number"), v.text) for v in image_type] == [
        ("1", "ORIGINAL"),
        ("2", None),
        ("3", "AXIAL"),
    ]
    assert list(attr("00100030")) == []  # empty attribute: no children
    name = attr("00100010").find("d:PersonName[@number='1']", NS)
    assert name is not None
    assert name.findtext("d:Ideographic/d:FamilyName", namespaces=NS) == "山田"
    assert name.findtext("d:Phonetic/d:GivenName", namespaces=NS) == "たろう"
    other = attr("00101001").find("d:PersonName[@number='1']/d:Alphabetic", NS)
    assert other is not None
    assert [c.tag.split("}")[1] for c in other] == [
        "FamilyName",
        "MiddleName",
        "NamePrefix",
        "NameSuffix",
    ]
    # private elements: gggg00ee + privateCreator, no keyword; the creator stays as itself
    private = root.findall("d:DicomAttribute[@tag='00090001']", NS)
    assert [(p.get("privateCreator"), p.get("keyword")) for p in private] == [
        ("ACME 1.0", None),
        ("OTHER & <CO>", None),
    ]
    assert attr("00090010").findtext("d:Value", namespaces=NS) == "ACME 1.0"
    assert attr("000B1001").get("privateCreator") is None  # no creator to name
    assert attr("00420011").findtext("d:InlineBinary", namespaces=NS) == "AAECAwQ="
    bulk = attr("7FE00010").find("d:BulkData", NS)
    assert bulk is not None and bulk.get("uri") == "http://example.org/bulk?a=1&b=2"
    items = attr("00400100").findall("d:Item", NS)
    assert [i.get("number") for i in items] == ["1", "2"] and list(items[1]) == []
    assert attr("00101030").findtext("d:Value[@number='2']", namespaces=NS) == "0.3"


def test_characters_xml_cannot_carry_are_replaced() -> None:
    data = json_to_xml({"00104000": {"vr": "LT", "Value": ["a\x0cb\x00c"]}})
    assert xml_to_json(data)["00104000"]["Value"] == ["a\ufffdb\ufffdc"]


def test_ds_numbers_are_written_as_legal_ds() -> None:
    data = json_to_xml({"00101030": {"vr": "DS", "Value": [0.1 + 0.2, 1234567890123456.0]}})
    assert b">0.3<" in data and b">1234567890123456<" in data


def test_writer_refuses_bad_json_shapes() -> None:
    with pytest.raises(InvalidPayload, match="wrong JSON type for VR PN"):
        json_to_xml({"00100010": {"vr": "PN", "Value": ["Doe^Sally"]}})


# ---------------------------------------------------------------- lenient reading


def test_reader_accepts_no_namespace_missing_vr_any_order_and_whitespace() -> None:
    data = b"""<?xml version="1.0"?>
    <NativeDicomModel xml:space="preserve">
      <!-- comment -->
      <DicomAttribute tag="00080008" vr="CS">
        <Value number="2">B</Value>
        <Value number="1">A</Value>
      </DicomAttribute>
      <DicomAttribute tag="00100021">
        <Value number="1">lower-case tag, VR from the dictionary</Value>
      </DicomAttribute>
    </NativeDicomModel>"""
    assert xml_to_json(data) == {
        "00080008": {"vr": "CS", "Value": ["A", "B"]},
        "00100021": {"vr": "LO", "Value": ["lower-case tag, VR from the dictionary"]},
    }


def test_reader_assigns_private_blocks() -> None:
    data = f"""<NativeDicomModel xmlns="{NATIVE_DICOM_NS}">
      <DicomAttribute tag="00090010" vr="LO"><Value number="1">KNOWN</Value></DicomAttribute>
      <DicomAttribute tag="00090001" vr="SH" privateCreator="NEW"><Value number="1">b</Value>
      </DicomAttribute>
      <DicomAttribute tag="00090002" vr="SH" privateCreator="KNOWN"><Value number="1">a</Value>
      </DicomAttribute>
    </NativeDicomModel>""".encode()
    assert xml_to_json(data) == {
        "00090010": {"vr": "LO", "Value": ["KNOWN"]},
        "00090011": {"vr": "LO", "Value": ["NEW"]},
        "00091002": {"vr": "SH", "Value": ["a"]},
        "00091101": {"vr": "SH", "Value": ["b"]},
    }


# ---------------------------------------------------------------- hostile and malformed input

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<NativeDicomModel><DicomAttribute tag="00100020" vr="LO"><Value number="1">&lol9;</Value>
</DicomAttribute></NativeDicomModel>"""

DA = '<DicomAttribute tag="00100020" vr="LO">'
HOSTILE = [
    (BILLION_LAUGHS, "DOCTYPE"),
    (
        b'<!DOCTYPE NativeDicomModel SYSTEM "http://example.org/x.dtd"><NativeDicomModel/>',
        "DOCTYPE",
    ),
    (b"<!DOCTYPE NativeDicomModel><NativeDicomModel/>", "DOCTYPE"),
    (b"", "not well-formed"),
    (b"<NativeDicomModel>", "not well-formed"),
    (b"<NativeDicomModel><DicomAttribute></NativeDicomModel>", "not well-formed"),
    (b"<NativeDicomModel>&undefined;</NativeDicomModel>", "not well-formed"),
    (b"not xml at all", "not well-formed"),
    (b"<NativeDicomModel></NativeDicomModel><x/>", "not well-formed"),
    (b"<DicomAttribute/>", "root element must be NativeDicomModel"),
    (b'<NativeDicomModel xmlns="urn:other"/>', "unknown namespace"),
    (b"<NativeDicomModel><Value/></NativeDicomModel>", "only DicomAttribute"),
    (b"<NativeDicomModel>text</NativeDicomModel>", "unexpected text"),
    (b'<NativeDicomModel><DicomAttribute tag="0010002" vr="LO"/></NativeDicomModel>', "8 hex"),
    (b'<NativeDicomModel><DicomAttribute vr="LO"/></NativeDicomModel>', "8 hex"),
    (b'<NativeDicomModel><DicomAttribute tag="00100020" vr="XX"/></NativeDicomModel>', "VR"),
    (b'<NativeDicomModel><DicomAttribute tag="00990010"/></NativeDicomModel>', "'vr' is missing"),
    (f"<NativeDicomModel>{DA}</DicomAttribute>{DA}</DicomAttribute></NativeDicomModel>", "twice"),
    (
        f'<NativeDicomModel>{DA}<Value number="1">a</Value><Item number="1"/></DicomAttribute>'
        "</NativeDicomModel>",
        "one known kind",
    ),
    (
        f'<NativeDicomModel>{DA}<Item number="1"/></DicomAttribute></NativeDicomModel>',
        "Item is not allowed for VR LO",
    ),
    (
        f'<NativeDicomModel>{DA}<Value number="2">a</Value></DicomAttribute></NativeDicomModel>',
        "without gaps",
    ),
    (
        f"<NativeDicomModel>{DA}<Value>a</Value></DicomAttribute></NativeDicomModel>",
        "positive integer",
    ),
    (
        f'<NativeDicomModel>{DA}<Value number="1"><b/></Value></DicomAttribute></NativeDicomModel>',
        "must not contain elements",
    ),
    (
        b'<NativeDicomModel><DicomAttribute tag="00280010" vr="US"><Value number="1">12x</Value>'
        b"</DicomAttribute></NativeDicomModel>",
        "not valid for VR US",
    ),
    (
        b'<NativeDicomModel><DicomAttribute tag="00209165" vr="AT"><Value number="1">(0010,0010)'
        b"</Value></DicomAttribute></NativeDicomModel>",
        "not valid for VR AT",
    ),
    (
        b'<NativeDicomModel><DicomAttribute tag="00420011" vr="OB"><InlineBinary>***'
        b"</InlineBinary></DicomAttribute></NativeDicomModel>",
        "not valid base64",
    ),
    (
        b'<NativeDicomModel><DicomAttribute tag="00420011" vr="OB"><BulkData uuid="x"/>'
        b"</DicomAttribute></NativeDicomModel>",
        "'uuid' is not supported",
    ),
    (
        b'<NativeDicomModel><DicomAttribute tag="00100010" vr="PN"><PersonName number="1">'
        b"<Alphabetic><Surname>x</Surname></Alphabetic></PersonName></DicomAttribute>"
        b"</NativeDicomModel>",
        "'Surname'",
    ),
    (
        b'<NativeDicomModel><DicomAttribute tag="00100020" vr="LO" privateCreator="X"/>'
        b"</NativeDicomModel>",
        "non-private",
    ),
    (
        b'<NativeDicomModel><DicomAttribute tag="00100020" vr="LO" colour="red"/>'
        b"</NativeDicomModel>",
        "unexpected XML attribute",
    ),
]


@pytest.mark.parametrize(("data", "reason"), HOSTILE)
def test_reader_refuses_hostile_and_malformed_xml(data: bytes | str, reason: str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    start = time.perf_counter()
    with pytest.raises(InvalidPayload) as info:
        xml_to_json(raw)
    assert reason in str(info.value)
    assert time.perf_counter() - start < 1.0  # refused, never expanded


def test_reader_errors_name_place_not_values() -> None:
    data = b"""<NativeDicomModel><DicomAttribute tag="00400100" vr="SQ"><Item number="1">
      <DicomAttribute tag="00100010" vr="PN"><PersonName number="1"><Alphabetic>
      <FamilyName>Doe</FamilyName><FamilyName>Sally</FamilyName></Alphabetic></PersonName>
      </DicomAttribute></Item></DicomAttribute></NativeDicomModel>"""
    with pytest.raises(InvalidPayload) as info:
        xml_to_json(data)
    message = str(info.value)
    assert message.startswith("00400100 > Item 1 > 00100010 > PersonName 1")
    assert "Doe" not in message and "Sally" not in message


def test_reader_refuses_deep_nesting_without_recursing() -> None:
    depth = 10000
    data = (
        b"<NativeDicomModel>"
        + b'<DicomAttribute tag="00400100" vr="SQ"><Item number="1">' * depth
        + b"</Item></DicomAttribute>" * depth
        + b"</NativeDicomModel>"
    )
    with pytest.raises(InvalidPayload, match="nested deeper than 32"):
        xml_to_json(data)
    shallow = data.replace(b"</NativeDicomModel>", b"")  # also refused before it is complete
    with pytest.raises(InvalidPayload, match="nested deeper"):
        xml_to_json(shallow)


def test_reader_limits_items() -> None:
    items = "".join(f'<Item number="{n}"/>' for n in range(1, 12))
    data = f'<NativeDicomModel><DicomAttribute tag="00400100" vr="SQ">{items}</DicomAttribute>'
    data += "</NativeDicomModel>"
    assert len(xml_to_json(data.encode(), max_items=11)["00400100"]["Value"]) == 11
    with pytest.raises(PayloadTooLarge):
        xml_to_json(data.encode(), max_items=10)
