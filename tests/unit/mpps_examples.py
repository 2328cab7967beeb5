"""Realistic MPPS datasets (DICOM JSON Model) for tests, after the spec's worked example.

Values follow ``dicomweb-modality-services.md`` §9 and ``json-xml-models.md`` §1.6/§3: a CT
head step of patient Doe^Sally on station CTSCANNER. Every builder returns a fresh dict,
so a test may mutate it freely.

* :func:`minimal_create` — what a conformant modality sends in the N-CREATE: every
  Type 1/2 attribute, and the sequences it will fill later created empty (Note 5).
* :func:`series_update` — an N-SET reporting the series acquired so far.
* :func:`completed_update` — the N-SET completing the step (json-xml-models §3).
* :func:`discontinued_update` — the N-SET discontinuing it with a reason.
* :func:`full_create` — a valid N-CREATE holding every attribute path of Table F.7.2-1
  (for tests that walk the table).
"""

from __future__ import annotations

from typing import Any

from gateway.model.types import JsonDataset

MPPS_UID = "1.2.250.1.59.40211.12345678.987654"
STUDY_UID = "1.2.250.1.59.40211.30000008090412501082300000004"
SERIES_UID = "1.2.250.1.59.40211.197132.30000020040718322840300000007"
IMAGE_UID = "1.2.250.1.59.40211.197132.3000002004071832284030000520"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.22"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
DETACHED_PATIENT_MANAGEMENT = "1.2.840.10008.3.1.2.1.1"
SPS_ID = "PS-ID-23"


def attr(vr: str, *values: Any) -> dict[str, Any]:
    """One DICOM JSON attribute; no values gives the empty (zero-length) form."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def pn(name: str) -> dict[str, Any]:
    """A PN attribute with one Alphabetic value."""
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def sq(*items: JsonDataset) -> dict[str, Any]:
    """A sequence; no items gives the empty sequence."""
    return attr("SQ", *items)


def code(value: str, scheme: str, meaning: str) -> JsonDataset:
    """One item of a code sequence (Code Value, Coding Scheme Designator, Code Meaning)."""
    return {
        "00080100": attr("SH", value),
        "00080102": attr("SH", scheme),
        "00080104": attr("LO", meaning),
    }


def minimal_create() -> JsonDataset:
    """A complete, minimal N-CREATE for an IN PROGRESS CT step (keys in tag order)."""
    return {
        "00080060": attr("CS", "CT"),
        "00081032": sq(code("24727-0", "LN", "CT Head")),
        "00081120": sq(),
        "00100010": pn("Doe^Sally"),
        "00100020": attr("LO", "P-4711"),
        "00100030": attr("DA"),
        "00100040": attr("CS", "F"),
        "00200010": attr("SH", "S-0815"),
        "00400241": attr("AE", "CTSCANNER"),
        "00400242": attr("SH", "CT01"),
        "00400243": attr("SH", "CT room 1"),
        "00400244": attr("DA", "20250101"),
        "00400245": attr("TM", "0930"),
        "00400250": attr("DA"),
        "00400251": attr("TM"),
        "00400252": attr("CS", "IN PROGRESS"),
        "00400253": attr("SH", "PPS-0001"),
        "00400254": attr("LO", "CT Head with contrast"),
        "00400255": attr("LO"),
        "00400260": sq(),
        "00400270": sq(
            {
                "00080050": attr("SH", "ACC-0007"),
                "00081110": sq(
                    {
                        "00081150": attr("UI", DETACHED_STUDY_MANAGEMENT),
                        "00081155": attr("UI", STUDY_UID),
                    }
                ),
                "0020000D": attr("UI", STUDY_UID),
                "00321060": attr("LO", "CT Head"),
                "00400007": attr("LO", "Specials^04a_HeadCTA"),
                "00400008": sq(code("HEADCTA", "99LOCAL", "Head CTA protocol")),
                "00400009": attr("SH", SPS_ID),
                "00401001": attr("SH", "P-ID-22"),
            }
        ),
        # Created empty so they can be set later (Note 5 of Table F.7.2-1).
        "00400281": sq(),
        "00400340": sq(),
    }


def series_item() -> JsonDataset:
    """The one Performed Series Sequence item of the json-xml-models §3 example."""
    return {
        "00080054": attr("AE", "ARCHIVE"),
        "0008103E": attr("LO", "Head 1.50 Hr64 ax"),
        "00081050": pn("House^Gregory"),
        "00081070": attr("PN"),
        "00081140": sq(
            {
                "00081150": attr("UI", CT_IMAGE_STORAGE),
                "00081155": attr("UI", IMAGE_UID),
            }
        ),
        "00181030": attr("LO", "Special^99a_HeadCTA"),
        "0020000E": attr("UI", SERIES_UID),
        "00400220": sq(),
    }


def series_update() -> JsonDataset:
    """An N-SET that reports the series acquired so far (status stays IN PROGRESS)."""
    return {"00400340": sq(series_item())}


def completed_update() -> JsonDataset:
    """The completing N-SET of json-xml-models.md §3 (end date/time, COMPLETED, series)."""
    return {
        "00400250": attr("DA", "20250101"),
        "00400251": attr("TM", "1300"),
        "00400252": attr("CS", "COMPLETED"),
        "00400340": sq(series_item()),
    }


def discontinued_update() -> JsonDataset:
    """An N-SET discontinuing the step with a reason (CID 9300 style code)."""
    return {
        "00400250": attr("DA", "20250101"),
        "00400251": attr("TM", "0945"),
        "00400252": attr("CS", "DISCONTINUED"),
        "00400281": sq(code("110514", "DCM", "Incorrect worklist entry selected")),
        "00400340": sq(series_item()),
    }


def _entity_ids(local: str, universal: str) -> JsonDataset:
    return {
        "00400031": attr("UT", local),
        "00400032": attr("UT", universal),
        "00400033": attr("CS", "ISO"),
    }


def _full_code(value: str, scheme: str, meaning: str) -> JsonDataset:
    """A code item with every simple-macro attribute and one equivalent code."""
    item = {
        **code(value, scheme, meaning),
        "00080103": attr("SH", "1.0"),
        "00080105": attr("CS", "DCMR"),
        "00080106": attr("DT", "20240101"),
        "00080107": attr("DT", "20240102"),
        "0008010B": attr("CS", "N"),
        "0008010D": attr("UI", "1.2.3.4"),
        "00080118": attr("UI", "1.2.840.10008.8.1.1"),
        "00080119": attr("UC", f"{value}-long"),
        "00080120": attr("UR", f"urn:example:{value}"),
    }
    item["00080121"] = sq(dict(item))
    return item


def full_create() -> JsonDataset:
    """A valid N-CREATE in which every attribute path of Table F.7.2-1 occurs."""
    dataset = minimal_create()
    ssas = dataset["00400270"]["Value"][0]
    ssas.update(
        {
            "00080051": sq(_entity_ids("HOSP", "1.2.3.100")),
            "00321064": sq(_full_code("24727-0", "LN", "CT Head")),
            "00400008": sq(_full_code("HEADCTA", "99LOCAL", "Head CTA protocol")),
            "00400026": sq(_entity_ids("RIS", "1.2.3.101")),
            "00400027": sq(_entity_ids("PACS", "1.2.3.102")),
            "00402016": attr("LO", "PL-1"),
            "00402017": attr("LO", "FL-1"),
        }
    )
    qualifiers = {
        "00400032": attr("UT", "1.2.3.103"),
        "00400033": attr("CS", "ISO"),
        "00400035": attr("CS", "MR"),  # Identifier Type Code, one of the "all other"
    }
    dataset.update(
        {
            "00080005": attr("CS", "ISO_IR 192"),
            "00081032": sq(_full_code("24727-0", "LN", "CT Head")),
            "00081120": sq(
                {
                    "00081150": attr("UI", DETACHED_PATIENT_MANAGEMENT),
                    "00081155": attr("UI", "1.2.3.104"),
                }
            ),
            "00100021": attr("LO", "HOSP"),
            "00100024": sq(qualifiers),
            "00101002": sq(
                {
                    "00100020": attr("LO", "OTHER-1"),
                    "00100021": attr("LO", "OTHERHOSP"),
                    "00100022": attr("CS", "TEXT"),
                    "00100024": sq(dict(qualifiers)),
                }
            ),
            "00380010": attr("LO", "ADM-1"),
            "00380014": sq(_entity_ids("ADT", "1.2.3.105")),
            "00380060": attr("LO", "EP-1"),
            "00380062": attr("LO", "Outpatient episode"),
            "00380064": sq(_entity_ids("ADT", "1.2.3.106")),
            "00400260": sq(_full_code("HEADCTA", "99LOCAL", "Head CTA protocol")),
            "00400280": attr("ST", "Patient cooperative"),
            "00400281": sq(_full_code("110514", "DCM", "Incorrect worklist entry selected")),
            "00401012": sq(_full_code("R51", "I10", "Headache")),
            "00400340": sq(full_series_item()),
        }
    )
    return dict(sorted(dataset.items()))


def full_series_item() -> JsonDataset:
    """A series item with every attribute path of the Performed Series Sequence rows."""
    item = series_item()
    item["0040A494"] = attr("CS", "YES")
    item["00081140"]["Value"][0].update(
        {
            "00400512": attr("LO", "CONT-1"),
            "00400560": sq(
                {
                    "00400551": attr("LO", "SPEC-1"),
                    "00400554": attr("UI", "1.2.3.107"),
                }
            ),
        }
    )
    item["00400220"] = sq(
        {
            "00081150": attr("UI", SR_STORAGE),
            "00081155": attr("UI", "1.2.3.108"),
        }
    )
    return item
