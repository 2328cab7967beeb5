"""Character sets through C-FIND: decoding identifiers, choosing the answer's charset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from anyio.from_thread import start_blocking_portal
from pydicom.dataset import Dataset

from gateway.backends.base import Backend
from gateway.dimse import DimseFront
from gateway.dimse.charset import UTF8, CharsetPolicy, check_supported
from gateway.errors import BadQuery, ConfigError
from gateway.model.status import DimseStatus
from gateway.settings import PeerSettings
from tests.integration import dimse_fixtures as fx
from tests.integration.dimse_fixtures import (
    DimseHarness,
    FindResult,
    c_find,
    dimse_settings,
    worklist_item,
)

dimse = fx.dimse
dimse_factory = fx.dimse_factory

S = DimseStatus
LATIN = "Müller^Jörg"
GREEK = "Παπαδόπουλος^Σοφία"
JAPANESE = "山田^太郎"


def _find(
    harness: DimseHarness, name: str, charset: str | list[str] | None, calling_ae: str = "SCU"
) -> FindResult:
    identifier = Dataset()
    if charset is not None:
        identifier.SpecificCharacterSet = charset
    identifier.PatientName = name
    identifier.PatientID = ""
    assoc = harness.associate(calling_ae)
    assert assoc.is_established
    try:
        return c_find(assoc, identifier)
    finally:
        assoc.release()


def _load(harness: DimseHarness, *names: str) -> None:
    harness.load_worklist(worklist_item(n, patient_name=name) for n, name in enumerate(names))


def _charset(ds: Dataset) -> object:
    return ds.get("SpecificCharacterSet")


def test_latin1_name_round_trips_in_iso_ir_100(dimse: DimseHarness) -> None:
    _load(dimse, LATIN, "DOE^JOHN")
    result = _find(dimse, "Müller*", "ISO_IR 100")
    assert result.status == S.SUCCESS
    (found,) = result.identifiers
    assert _charset(found) == "ISO_IR 100"
    assert str(found.PatientName) == LATIN
    assert found.PatientID == "PID00000"


def test_utf8_name_round_trips_in_iso_ir_192(dimse: DimseHarness) -> None:
    _load(dimse, GREEK, JAPANESE)
    result = _find(dimse, GREEK, "ISO_IR 192")
    (found,) = result.identifiers
    assert _charset(found) == "ISO_IR 192"
    assert str(found.PatientName) == GREEK


def test_iso_2022_identifier_is_decoded_and_answered_in_kind(dimse: DimseHarness) -> None:
    _load(dimse, JAPANESE, GREEK)
    result = _find(dimse, JAPANESE, ["", "ISO 2022 IR 87"])
    (found,) = result.identifiers
    assert list(_charset(found)) == ["", "ISO 2022 IR 87"]  # type: ignore[call-overload]
    assert str(found.PatientName) == JAPANESE


def test_answer_falls_back_to_utf8_when_a_value_does_not_fit(dimse: DimseHarness) -> None:
    _load(dimse, GREEK, "DOE^JOHN")
    latin_requester = _find(dimse, "", "ISO_IR 100")
    default_requester = _find(dimse, "", None)
    for result in (latin_requester, default_requester):
        by_id = {ds.PatientID: ds for ds in result.identifiers}
        assert _charset(by_id["PID00000"]) == "ISO_IR 192"
        assert str(by_id["PID00000"].PatientName) == GREEK
    # Values that fit keep the requester's character set (none = default repertoire).
    assert _charset(next(d for d in latin_requester.identifiers if d.PatientID == "PID00001")) == (
        "ISO_IR 100"
    )
    assert "SpecificCharacterSet" not in next(
        d for d in default_requester.identifiers if d.PatientID == "PID00001"
    )


def test_peer_configured_for_iso_ir_100_always_receives_iso_ir_100(
    dimse_factory: Callable[..., DimseHarness],
) -> None:
    harness = dimse_factory(peers={"LEGACY_CT": {"charset": "ISO_IR 100"}})
    _load(harness, LATIN, "Ωmega^Ülrich")
    result = _find(harness, "", "ISO_IR 192", calling_ae="LEGACY_CT")
    names = {ds.PatientID: (_charset(ds), str(ds.PatientName)) for ds in result.identifiers}
    assert names == {
        "PID00000": ("ISO_IR 100", LATIN),
        "PID00001": ("ISO_IR 100", "?mega^Ülrich"),  # the documented fallback
    }
    # Another modality on the same gateway still gets UTF-8 where needed.
    other = _find(harness, "Ωmega*", "ISO_IR 192", calling_ae="MODERN_MR")
    assert [(_charset(ds), str(ds.PatientName)) for ds in other.identifiers] == [
        ("ISO_IR 192", "Ωmega^Ülrich")
    ]


def test_charset_rules_without_a_network() -> None:
    """The pure rules behind the tests above, for the cases a modality rarely sends."""
    item = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": JAPANESE, "Ideographic": GREEK}]}}
    policy = CharsetPolicy({"JP_CT": PeerSettings(charset="\\ISO 2022 IR 87")})
    answer = policy.answer(item, calling_ae="JP_CT", requested=UTF8)
    assert answer.charset == ("", "ISO 2022 IR 87")
    # JIS X 0208 has the Greek letters but not the accented ones (nor final sigma).
    assert answer.item["00100010"]["Value"] == [
        {"Alphabetic": JAPANESE, "Ideographic": "Παπαδ?πουλο?^Σοφ?α"}
    ]
    assert answer.replaced == 1
    for bad in (("ISO_IR 192", "ISO 2022 IR 87"), ("ISO_IR 999",)):
        with pytest.raises(BadQuery) as raised:
            check_supported(bad, BadQuery)
        assert raised.value.offending == (0x00080005,)


def test_an_unusable_peer_charset_is_a_configuration_error(tmp_path: Path) -> None:
    settings = dimse_settings(tmp_path / "gw.sqlite3", peers={"OLD_CT": {"charset": "LATIN-1"}})
    with start_blocking_portal() as portal, pytest.raises(ConfigError) as raised:
        DimseFront(settings, cast(Backend, None), portal)
    assert raised.value.key == "dimse.peers.OLD_CT.charset"
