"""``serve --demo``: a handful of realistic steps for today, so a newcomer can query at once.

Stations ``CT01``, ``MR01`` and ``US01``; one patient has a Latin-1 name (Müller^Jürgen)
to show character set handling on the DIMSE side. Seeding happens only into an empty
store, so restarting with ``--demo`` never duplicates or overwrites real data.
"""

from __future__ import annotations

from datetime import date

from gateway.backends.base import Backend
from gateway.model.types import JsonDataset
from gateway.model.uids import generate_uid

# (patient name, patient id, birth date, sex, station, modality, time, description, code)
_STEPS: tuple[tuple[str, str, str, str, str, str, str, str, str], ...] = (
    ("Müller^Jürgen", "PAT-1001", "19580312", "M", "CT01", "CT", "0800", "CT Thorax", "CTCHEST"),
    ("Smith^Anna", "PAT-1002", "19790704", "F", "CT01", "CT", "0930", "CT Abdomen", "CTABD"),
    ("Dupont^Pierre", "PAT-1003", "19650101", "M", "CT01", "CT", "1100", "CT Head", "CTHEAD"),
    ("Rossi^Giulia", "PAT-1004", "19881122", "F", "MR01", "MR", "0815", "MR Knee", "MRKNEE"),
    ("Nakamura^Kenji", "PAT-1005", "19720815", "M", "MR01", "MR", "1000", "MR Brain", "MRBRAIN"),
    ("Smith^Anna", "PAT-1002", "19790704", "F", "MR01", "MR", "1330", "MR Spine", "MRSPINE"),
    ("Novak^Eva", "PAT-1006", "19930209", "F", "US01", "US", "0900", "US Abdomen", "USABD"),
)


def _text(vr: str, value: str) -> dict[str, object]:
    return {"vr": vr, "Value": [value]} if value else {"vr": vr}


def _code(value: str, meaning: str) -> dict[str, object]:
    item = {
        "00080100": _text("SH", value),
        "00080102": _text("SH", "99DEMO"),
        "00080104": _text("LO", meaning),
    }
    return {"vr": "SQ", "Value": [item]}


def demo_items(today: date) -> list[JsonDataset]:
    """The demo steps, scheduled on ``today``."""
    day = today.strftime("%Y%m%d")
    items: list[JsonDataset] = []
    for n, (name, pid, birth, sex, station, modality, tm, desc, code) in enumerate(_STEPS, 1):
        sps = {
            "00080060": _text("CS", modality),
            "00400001": _text("AE", station),
            "00400002": _text("DA", day),
            "00400003": _text("TM", tm),
            "00400006": {"vr": "PN", "Value": [{"Alphabetic": "Radiologist^Demo"}]},
            "00400007": _text("LO", desc),
            "00400008": _code(code, desc),
            "00400009": _text("SH", f"SPS-{n:04d}"),
            "00400010": _text("SH", f"{station} room"),
            "00400011": _text("SH", "Radiology"),
            "00400020": _text("CS", "SCHEDULED"),
        }
        items.append(
            {
                "00080050": _text("SH", f"ACC-{day}-{n:03d}"),
                "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Referrer^Demo"}]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
                "00100020": _text("LO", pid),
                "00100030": _text("DA", birth),
                "00100040": _text("CS", sex),
                "0020000D": _text("UI", generate_uid()),
                "00321032": {"vr": "PN", "Value": [{"Alphabetic": "Referrer^Demo"}]},
                "00321060": _text("LO", desc),
                "00321064": _code(code, desc),
                "00400100": {"vr": "SQ", "Value": [sps]},
                "00401001": _text("SH", f"RP-{n:04d}"),
                "00401003": _text("SH", "ROUTINE"),
            }
        )
    return items


async def seed_demo(backend: Backend, today: date | None = None) -> int:
    """Seed the demo steps when the local store is empty; the number of steps added."""
    from gateway.backends.local.backend import LocalBackend

    if not isinstance(backend, LocalBackend):
        raise TypeError("demo data can only be seeded into the local backend")
    if await backend.count_worklist_items():
        return 0
    report = await backend.upsert_worklist_items(demo_items(today or date.today()))
    return report.inserted
