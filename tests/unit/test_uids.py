"""UID syntax (PS3.5 9.1): what the gateway accepts as an MPPS SOP Instance UID."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidInstanceUID
from gateway.model.status import DimseStatus, HttpStatus, Operation, dimse_failure, http_status
from gateway.model.uids import generate_uid, is_valid_uid, validate_uid


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.3.1.2.3.3",
        "1.2.250.1.59.40211.12345678.987654",
        "0.0",
        "2.25.212499239828501131532554788883182349969",
        "1",
        "1." + "2" * 62,  # exactly 64 characters
        "1.0.2.10",
    ],
)
def test_valid_uids_pass(uid: str) -> None:
    validate_uid(uid)
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    ("uid", "rule"),
    [
        ("", "empty"),
        ("1." + "2" * 63, "longer than 64"),
        ("1..2", "empty component"),
        (".1.2", "empty component"),
        ("1.2.", "empty component"),
        ("1.02", "leading zero"),
        ("01.2", "leading zero"),
        ("1.00", "leading zero"),
        ("1.2a", "digits and dots"),
        ("1.2 ", "digits and dots"),
        (" 1.2", "digits and dots"),
        ("1.2-3", "digits and dots"),
        ("1,2", "digits and dots"),
        ("1.\uff12", "digits and dots"),  # fullwidth digit: isdigit() but not ASCII
        ("1.\u0663", "digits and dots"),  # Arabic-Indic digit three
        ("1.2\x00", "digits and dots"),
    ],
)
def test_invalid_uids_are_refused_with_0117(uid: str, rule: str) -> None:
    with pytest.raises(InvalidInstanceUID) as caught:
        validate_uid(uid)
    assert rule in caught.value.message
    assert not is_valid_uid(uid)
    for op in (Operation.CREATE, Operation.UPDATE, Operation.RETRIEVE):
        status: int = dimse_failure(caught.value, op).status
        assert status == DimseStatus.INVALID_SOP_INSTANCE
        assert status == 0x0117
        assert http_status(caught.value, op) == HttpStatus.BAD_REQUEST


def test_message_does_not_echo_the_uid() -> None:
    with pytest.raises(InvalidInstanceUID) as caught:
        validate_uid("1.2.0999")
    assert "0999" not in str(caught.value)


def test_generated_uids_are_valid_and_unique() -> None:
    uids = {generate_uid() for _ in range(200)}
    assert len(uids) == 200
    for uid in uids:
        validate_uid(uid)
        assert uid.startswith("2.25.")
        assert type(uid) is str
