"""UID syntax (PS3.5 9.1) for the SOP Instance UIDs the gateway accepts and makes.

A malformed MPPS UID is refused before anything is stored or forwarded, so a bad UID
never reaches an upstream (DIMSE 0117 / HTTP 400 via :class:`InvalidInstanceUID`).
"""

from __future__ import annotations

import re

from pydicom.uid import generate_uid as _pydicom_generate_uid

from gateway.errors import InvalidInstanceUID

MAX_UID_LENGTH = 64
_COMPONENT = re.compile(r"0|[1-9][0-9]*")
_VALID_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def validate_uid(uid: str) -> None:
    """Raise :class:`InvalidInstanceUID` unless ``uid`` follows PS3.5 9.1.

    At most 64 characters, only digits and dots, no empty component and no leading zero in
    a component of more than one digit. The message names the rule, not the UID.
    """
    if type(uid) is str and len(uid) <= MAX_UID_LENGTH and _VALID_UID.fullmatch(uid):
        return  # the usual case, in one match; the checks below only name the broken rule
    if not isinstance(uid, str) or not uid:
        raise InvalidInstanceUID("SOP Instance UID is empty")
    if len(uid) > MAX_UID_LENGTH:
        raise InvalidInstanceUID(f"SOP Instance UID is longer than {MAX_UID_LENGTH} characters")
    for component in uid.split("."):
        if not component:
            raise InvalidInstanceUID("SOP Instance UID has an empty component")
        if not component.isascii() or not component.isdigit():
            raise InvalidInstanceUID("SOP Instance UID may only contain digits and dots")
        if not _COMPONENT.fullmatch(component):
            raise InvalidInstanceUID("SOP Instance UID component has a leading zero")


def is_valid_uid(uid: str) -> bool:
    """True when :func:`validate_uid` accepts ``uid``."""
    try:
        validate_uid(uid)
    except InvalidInstanceUID:
        return False
    return True


def generate_uid() -> str:
    """A new UID under the ``2.25`` root (UUID-derived, PS3.5 B.2): no registered root needed."""
    return str(_pydicom_generate_uid(prefix=None))
