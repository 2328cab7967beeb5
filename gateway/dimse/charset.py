"""Character sets at the DIMSE edge (PS3.5 6.1, PS3.4 K.4.1.1.3 / Table K.6-1a).

Inside the gateway every text value is Unicode (DICOM JSON). This module is the only place
that turns a received dataset's bytes into Unicode and picks the Specific Character Set
(0008,0005) an answer is encoded in:

* an incoming identifier / attribute list is decoded by its own (0008,0005); a term pydicom
  has no codec for is refused instead of being silently read as Latin-1;
* an answer goes out in the requester's character set when every value fits in it, else in
  ISO_IR 192 (UTF-8);
* a peer configured with ``[dimse.peers.<AE>] charset`` always gets that character set;
  a character that does not fit is replaced by ``?`` (documented in ``docs/dimse.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.charset import STAND_ALONE_ENCODINGS, custom_encoders, python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from gateway.errors import BadQuery, ConfigError, GatewayError
from gateway.model.types import JsonDataset, tag_key
from gateway.settings import PeerSettings

SPECIFIC_CHARACTER_SET = 0x00080005
SPECIFIC_CHARACTER_SET_KEY = tag_key(SPECIFIC_CHARACTER_SET)

Charset = tuple[str, ...]
"""The terms of a Specific Character Set; ``()`` is the default repertoire (no element)."""

DEFAULT_REPERTOIRE: Charset = ()
UTF8: Charset = ("ISO_IR 192",)
REPLACEMENT = "?"
"""Stands in for a character the peer's configured character set cannot represent."""

# VRs whose values are encoded with (0008,0005); all others are default repertoire.
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
# Terms meaning the default repertoire: strictly ASCII (pydicom would read it as Latin-1).
_ASCII_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})


def charset_terms(value: object) -> Charset:
    """Normalise a (0008,0005) value (str, list, MultiValue or None) to its terms."""
    if value is None:
        return DEFAULT_REPERTOIRE
    if isinstance(value, str):
        terms: list[str] = [t.strip() for t in value.split("\\")]
    elif isinstance(value, MultiValue | list | tuple):
        terms = [str(t).strip() for t in value]
    else:
        terms = [str(value).strip()]
    if all(t in ("", "ISO_IR 6") for t in terms):
        return DEFAULT_REPERTOIRE
    return tuple(terms)


def check_supported(terms: Charset, error: type[GatewayError]) -> None:
    """Raise ``error`` (naming (0008,0005)) unless pydicom can decode every term."""
    for term in terms:
        if term not in python_encoding:
            raise error(
                f"unsupported Specific Character Set term {term!r}",
                offending=(SPECIFIC_CHARACTER_SET,),
            )
    if len(terms) > 1 and any(t in STAND_ALONE_ENCODINGS for t in terms):
        raise error(
            "Specific Character Set combines a stand-alone character set with others",
            offending=(SPECIFIC_CHARACTER_SET,),
        )


def check_peer_charsets(peers: Mapping[str, PeerSettings]) -> None:
    """Raise :class:`ConfigError` for a ``[dimse.peers.<AE>] charset`` we cannot encode."""
    for ae, peer in peers.items():
        if peer.charset is None:
            continue
        key = f"dimse.peers.{ae}.charset"
        terms = charset_terms(peer.charset)
        try:
            check_supported(terms, BadQuery)
        except BadQuery as exc:
            raise ConfigError(key, exc.message) from None


def received_dataset(read: Callable[[], Dataset | None], error: type[GatewayError]) -> Dataset:
    """The request's data set from pynetdicom's lazy decoder, or ``error`` if unreadable."""
    try:
        ds = read()
    except Exception as exc:
        raise error(f"data set cannot be decoded ({type(exc).__name__})") from exc
    return Dataset() if ds is None else ds


def decode_dataset(ds: Dataset, error: type[GatewayError]) -> Charset:
    """Decode every text value of ``ds`` in place by its Specific Character Set.

    Returns the dataset's terms. Raises ``error`` for an unsupported character set or a
    dataset pydicom cannot parse (the message never contains values).
    """
    try:
        element = ds.get(SPECIFIC_CHARACTER_SET)
        terms = charset_terms(None if element is None else element.value)
    except Exception as exc:
        raise error(
            "Specific Character Set cannot be read", offending=(SPECIFIC_CHARACTER_SET,)
        ) from exc
    check_supported(terms, error)
    try:
        ds.decode()
        for _ in ds.iterall():  # force conversion of every raw element, nested ones too
            pass
    except Exception as exc:
        raise error(f"dataset cannot be decoded ({type(exc).__name__})") from exc
    return terms


Encoder = Callable[[str], object]


def _ascii(text: str) -> object:
    return text.encode("ascii")


def _python_codec(codec: str) -> Encoder:
    def encode(text: str) -> object:
        return text.encode(codec)

    return encode


def _pydicom_codec(custom: Callable[..., bytes]) -> Encoder:
    def encode(text: str) -> object:
        return custom(text, errors="strict")

    return encode


def _codecs(terms: Charset) -> list[Encoder]:
    """One strict encoder per term (the default repertoire is plain ASCII)."""
    encoders: list[Encoder] = []
    for term in terms or ("",):
        if term in _ASCII_TERMS:
            encoders.append(_ascii)
            continue
        codec = python_encoding[term]
        custom = custom_encoders.get(codec)
        encoders.append(_python_codec(codec) if custom is None else _pydicom_codec(custom))
    return encoders


def _encodable(text: str, encoders: Sequence[Encoder]) -> bool:
    for encode in encoders:
        try:
            encode(text)
        except (UnicodeError, ValueError):
            continue
        return True
    return False


def _fits(text: str, encoders: Sequence[Encoder]) -> bool:
    """True when ``text`` can be written with these encoders (ISO 2022: char by char)."""
    if text.isascii() or _encodable(text, encoders):
        return True
    return len(encoders) > 1 and all(_encodable(ch, encoders) for ch in text)


def _replace(text: str, encoders: Sequence[Encoder]) -> str:
    if _fits(text, encoders):
        return text
    return "".join(ch if _encodable(ch, encoders) else REPLACEMENT for ch in text)


def _map_text(item: JsonDataset, fn: Callable[[str], str]) -> JsonDataset:
    """A copy of ``item`` with ``fn`` applied to every character-set dependent string."""
    out: JsonDataset = {}
    for key, element in item.items():
        if not isinstance(element, Mapping):
            out[key] = element
            continue
        vr = element.get("vr")
        values = element.get("Value")
        if not isinstance(values, list) or (vr not in _TEXT_VRS and vr != "SQ"):
            out[key] = element
            continue
        new: list[Any] = []
        for value in values:
            if vr == "SQ" and isinstance(value, Mapping):
                new.append(_map_text(dict(value), fn))
            elif vr == "PN" and isinstance(value, Mapping):
                new.append(
                    {
                        g: fn(v) if isinstance(v, str) and g in _PN_GROUPS else v
                        for g, v in value.items()
                    }
                )
            elif isinstance(value, str):
                new.append(fn(value))
            else:
                new.append(value)
        out[key] = {**element, "Value": new}
    return out


def _texts(item: JsonDataset) -> Iterable[str]:
    """Every character-set dependent string of ``item``, nested sequences included."""
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text

    _map_text(item, collect)
    return found


def fits(item: JsonDataset, terms: Charset) -> bool:
    """True when every text value of ``item`` can be encoded in ``terms``."""
    encoders = _codecs(terms)
    return all(_fits(text, encoders) for text in _texts(item))


@dataclass(frozen=True)
class Answer:
    """A dataset ready to encode, with the character set it must be written in."""

    item: JsonDataset
    charset: Charset
    replaced: int = 0  # values that lost characters to the peer override


@dataclass(frozen=True)
class CharsetPolicy:
    """Which character set each answer is written in (see the module docstring)."""

    peers: Mapping[str, PeerSettings]

    def override_for(self, calling_ae: str) -> Charset | None:
        """The configured character set of this calling AE, if any."""
        peer = self.peers.get(calling_ae.strip())
        if peer is None or peer.charset is None:
            return None
        return charset_terms(peer.charset)

    def answer(self, item: JsonDataset, *, calling_ae: str, requested: Charset) -> Answer:
        """Choose the answer's character set; drop any stored (0008,0005) from ``item``."""
        body = {k: v for k, v in item.items() if k != SPECIFIC_CHARACTER_SET_KEY}
        override = self.override_for(calling_ae)
        if override is not None:
            encoders = _codecs(override)
            replaced = sum(1 for text in _texts(body) if not _fits(text, encoders))
            if replaced:
                body = _map_text(body, lambda text: _replace(text, encoders))
            return Answer(body, override, replaced)
        if fits(body, requested):
            return Answer(body, requested)
        return Answer(body, UTF8)


def apply_charset(ds: Dataset, terms: Charset) -> Dataset:
    """Set (0008,0005) on an answer dataset (removed for the default repertoire)."""
    if SPECIFIC_CHARACTER_SET in ds:
        del ds[SPECIFIC_CHARACTER_SET]
    if terms:
        ds.SpecificCharacterSet = terms[0] if len(terms) == 1 else list(terms)
    return ds
