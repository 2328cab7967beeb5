"""Encodings pynetdicom would work out again and again, handed over ready-made.

pynetdicom encodes every DIMSE message with pydicom's writer: the identifier of each C-FIND
pending response once, and its command set twice (first only to learn the group length).
For a 50-result worklist query that was about half of the DIMSE front's CPU.

:func:`install` points the name ``encode`` that pynetdicom's service classes and DIMSE
messages imported at :func:`_encode`, which returns

* the bytes :func:`attach` put on a dataset (``gateway.dimse.identifier`` writes C-FIND
  identifiers itself and proves them equal to pydicom's), and
* the remembered encoding of a command set seen before: a handful of elements, the same for
  every pending response of one query;

and hands everything else to pynetdicom's own ``encode``. This and ``dicom_scu.py`` are
the only places where the gateway reaches inside pynetdicom;
``tests/unit/test_dicom_wire.py`` checks that pynetdicom still calls the names replaced
here.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import dimse_messages, dsutils, service_class

_PYNETDICOM_ENCODE = dsutils.encode
_WIRE = "_gateway_wire"
_COMMAND_SETS: dict[Hashable, bytes] = {}
_COMMAND_SET_LIMIT = 512  # ~50 bytes each; cleared when full (keys hold message IDs)
_installed = threading.Lock()


def install() -> None:
    """Route pynetdicom's message encoding through :func:`_encode` (idempotent)."""
    with _installed:
        service_class.encode = _encode  # type: ignore[attr-defined]
        dimse_messages.encode = _encode  # type: ignore[attr-defined]


def attach(ds: Dataset, *, implicit_vr: bool, little_endian: bool, data: bytes) -> Dataset:
    """Record that ``ds`` encodes to ``data`` in the given transfer syntax."""
    object.__setattr__(ds, _WIRE, (implicit_vr, little_endian, data))
    return ds


def attached(ds: Dataset, *, implicit_vr: bool, little_endian: bool) -> bytes | None:
    """The bytes :func:`attach` recorded for ``ds`` in this transfer syntax, if any."""
    known = ds.__dict__.get(_WIRE)
    if known is not None and known[0] == implicit_vr and known[1] == little_endian:
        data: bytes = known[2]
        return data
    return None


def _encode(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """pynetdicom's ``encode``, skipping work whose result is already known."""
    if not deflated:
        known = attached(ds, implicit_vr=is_implicit_vr, little_endian=is_little_endian)
        if known is not None:
            return known
        key = _command_set_key(ds, is_implicit_vr, is_little_endian)
        if key is not None:
            cached = _COMMAND_SETS.get(key)
            if cached is None:
                cached = _PYNETDICOM_ENCODE(ds, is_implicit_vr, is_little_endian, deflated)
                if cached is None:
                    return None
                if len(_COMMAND_SETS) >= _COMMAND_SET_LIMIT:
                    _COMMAND_SETS.clear()
                _COMMAND_SETS[key] = cached
            return cached
    encoded: bytes | None = _PYNETDICOM_ENCODE(ds, is_implicit_vr, is_little_endian, deflated)
    return encoded


def _command_set_key(ds: Dataset, implicit_vr: bool, little_endian: bool) -> Hashable | None:
    """What a command set's encoding depends on, or None for anything else.

    Only group 0000 elements whose values are plain strings and numbers qualify; a list
    value (an Attribute Identifier List) makes the set go the usual way.
    """
    parts: list[Any] = [implicit_vr, little_endian]
    for elem in ds.values():
        if elem.tag >> 16 or type(elem.value) not in _PLAIN:
            return None
        parts.append((type(elem), elem.tag, elem.VR, elem.value))
    return tuple(parts)


_PLAIN = frozenset({str, UID, int, type(None), bytes})
