"""Content negotiation for the DICOMweb front (PS3.18 8.3.3, 8.4.1, 8.7, 8.8).

Selects the response media type from the ``accept`` query parameter and the ``Accept``
header (q-values, ``type/*`` and ``*/*`` wildcards), checks ``Accept-Charset`` and the
``charset`` query parameter, and classifies request bodies by ``Content-Type``. Failures
that are not request-parameter errors (406, 415) raise :class:`NegotiationFailure`;
invalid parameter values raise :class:`gateway.errors.BadQuery` (400).
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.errors import BadQuery
from gateway.model.status import HttpStatus

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
MULTIPART_XML = 'multipart/related; type="application/dicom+xml"'
MULTIPART_JSON = 'multipart/related; type="application/dicom+json"'
WADL = "application/vnd.sun.wadl+xml"
PLAIN_JSON = "application/json"
TEXT_PLAIN = "text/plain"

UTF8 = "utf-8"
SUPPORTED_CHARSETS = ("UTF-8",)
"""Charsets we produce (IANA names), as declared in Retrieve Capabilities."""

_UTF8_NAMES = frozenset({"utf-8", "utf8", "iso_ir 192", "iso-ir-192"})
_RENDERED = frozenset(
    {"text/html", "text/plain", "text/rtf", "text/xml", "application/pdf", "application/xhtml+xml"}
)
_RENDERED_TYPES = frozenset({"image", "video"})
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_QVALUE = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")


class NegotiationFailure(Exception):
    """No acceptable response type (406) or an unsupported request body type (415)."""

    def __init__(self, status: HttpStatus, message: str, available: Sequence[str]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.available = tuple(available)


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept list (or a Content-Type): type, subtype, params, q."""

    type: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()
    q: float = 1.0

    def param(self, name: str) -> str | None:
        """The value of parameter ``name`` (names are case-insensitive)."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def essence(self) -> str:
        """``type/subtype`` in lower case."""
        return f"{self.type}/{self.subtype}"

    @property
    def is_wildcard(self) -> bool:
        return self.type == "*" or self.subtype == "*"

    @property
    def canonical(self) -> str:
        """Our canonical spelling: the essence, plus ``type`` for multipart/related."""
        if self.essence == "multipart/related":
            root = self.param("type")
            return f'multipart/related; type="{root}"' if root else "multipart/related"
        return self.essence

    @property
    def is_dicom(self) -> bool:
        """A DICOM media type (PS3.18 8.7.3): dicom, dicom+json/xml, multipart of those."""
        if self.essence == "multipart/related":
            return (self.param("type") or "").startswith("application/dicom")
        return self.essence.startswith("application/dicom")

    @property
    def is_rendered(self) -> bool:
        """A rendered media type (PS3.18 8.7.4), which may not be mixed with DICOM types."""
        return self.type in _RENDERED_TYPES or self.essence in _RENDERED


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise ValueError("unbalanced quotes")
    parts.append("".join(current))
    return parts


def parse_media_range(text: str) -> MediaRange:
    """Parse one media range with parameters; raise ValueError if malformed."""
    pieces = _split_outside_quotes(text, ";")
    essence = pieces[0].strip().lower()
    type_, slash, subtype = essence.partition("/")
    if not slash or not _TOKEN.match(type_) or not _TOKEN.match(subtype):
        raise ValueError(f"not a media type: {essence!r}")
    if type_ == "*" and subtype != "*":
        raise ValueError("*/subtype is not a media range")
    params: list[tuple[str, str]] = []
    q = 1.0
    for piece in pieces[1:]:
        if not piece.strip():
            continue
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if not eq or not _TOKEN.match(name):
            raise ValueError(f"malformed parameter {piece.strip()!r}")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"')
        if name == "q":
            if not _QVALUE.match(value):
                raise ValueError(f"malformed q-value {value!r}")
            q = float(value)
        else:
            params.append((name, value.lower() if name == "charset" else value))
    return MediaRange(type_, subtype, tuple(params), q)


def parse_accept(header: str) -> list[MediaRange]:
    """The valid ranges of an Accept value; invalid elements are ignored (8.7.5)."""
    ranges: list[MediaRange] = []
    try:
        elements = _split_outside_quotes(header, ",")
    except ValueError:
        return ranges
    for element in elements:
        if not element.strip():
            continue
        try:
            ranges.append(parse_media_range(element))
        except ValueError:
            continue
    return ranges


def is_utf8(name: str) -> bool:
    """True for the IANA names and DICOM Defined Term of UTF-8."""
    return name.strip().strip('"').lower() in _UTF8_NAMES


def _charset_ok(media: MediaRange) -> bool:
    charset = media.param("charset")
    return charset is None or is_utf8(charset)


def _matches(media: MediaRange, offer: MediaRange) -> bool:
    """Does a non-wildcard ``media`` range name the ``offer``?"""
    if media.essence != offer.essence:
        return False
    if offer.essence == "multipart/related":
        root = media.param("type")
        # A multipart/related without its mandatory type parameter: assume the XML root.
        return (root or DICOM_XML) == offer.param("type")
    return True


def _wildcard_covers(media: MediaRange, offer: MediaRange) -> bool:
    return media.type == "*" or (media.subtype == "*" and media.type == offer.type)


@dataclass(frozen=True)
class Choice:
    """A negotiated response: one of the route's offered media types, always UTF-8."""

    media_type: str
    charset: str = UTF8


def _offers(offered: Sequence[str]) -> list[MediaRange]:
    return [parse_media_range(text) for text in offered]


def check_not_mixed(ranges: Iterable[MediaRange]) -> None:
    """Acceptable Media Types may not mix DICOM and rendered types (8.7.5) → 400."""
    explicit = [r for r in ranges if r.q > 0 and not r.is_wildcard]
    if any(r.is_dicom for r in explicit) and any(r.is_rendered for r in explicit):
        raise BadQuery("accept: DICOM and rendered media types may not be mixed")


def accept_param_ranges(values: Sequence[str]) -> list[MediaRange]:
    """The ``accept`` query parameter: like Accept, but no wildcards; malformed → 400."""
    ranges: list[MediaRange] = []
    for value in values:
        # An unencoded "+" in a query arrives as a space; media types never contain one.
        value = value.replace(" ", "+") if "/" in value else value
        try:
            elements = _split_outside_quotes(value, ",")
            for element in elements:
                if not element.strip():
                    raise ValueError("empty media type")
                media = parse_media_range(element)
                if media.is_wildcard:
                    raise ValueError("wildcards are not allowed in the accept parameter")
                ranges.append(media)
        except ValueError as exc:
            raise BadQuery(f"accept: {exc}") from None
    return ranges


def select_media_type(
    header: str | None,
    accept_param: Sequence[str],
    offered: Sequence[str],
    *,
    require_accept: bool = True,
) -> Choice:
    """Select the response type per PS3.18 8.7.8.1; ``offered[0]`` is the default.

    Order: the ``accept`` parameter, then the Accept header (highest q first, ties go to
    the order we offer), then a wildcard falling back to the default; else 406. A missing
    Accept header is a 406 unless ``require_accept`` is false (Create/Update, whose only
    possible payload is a Status Report).
    """
    return _select_media_type(header, tuple(accept_param), tuple(offered), require_accept)


@functools.lru_cache(maxsize=256)
def _select_media_type(
    header: str | None,
    accept_param: tuple[str, ...],
    offered: tuple[str, ...],
    require_accept: bool,
) -> Choice:
    """:func:`select_media_type`, once per distinct Accept (a client sends the same one
    every time; parsing it was 2.5 % of a 50-result Search's instructions). At most 256
    entries, each bounded by aiohttp's header size limit."""
    offers = _offers(offered)
    param_ranges = accept_param_ranges(accept_param)
    header_ranges = parse_accept(header) if header is not None else []
    check_not_mixed([*param_ranges, *header_ranges])
    excluded = {
        offer.canonical
        for offer in offers
        for media in header_ranges
        if media.q == 0 and not media.is_wildcard and _matches(media, offer)
    }
    for ranges in (param_ranges, header_ranges):
        best = _best_explicit(ranges, offers, excluded)
        if best is not None:
            return Choice(best)
    if header is None and not require_accept:
        return Choice(offers[0].canonical)
    for media in sorted(header_ranges, key=lambda r: -r.q):
        if media.q <= 0 or not media.is_wildcard or not _charset_ok(media):
            continue
        covered = [o for o in offers if _wildcard_covers(media, o) and o.canonical not in excluded]
        if covered:
            return Choice(covered[0].canonical)
    if header is None:
        reason = "the request has no Accept header"
    else:
        reason = "none of the Acceptable Media Types is supported"
    raise NegotiationFailure(HttpStatus.NOT_ACCEPTABLE, reason, offered)


def _best_explicit(
    ranges: Sequence[MediaRange], offers: Sequence[MediaRange], excluded: set[str]
) -> str | None:
    candidates: list[tuple[float, int, str]] = []
    for media in ranges:
        if media.q <= 0 or media.is_wildcard or not _charset_ok(media):
            continue
        for rank, offer in enumerate(offers):
            if _matches(media, offer) and offer.canonical not in excluded:
                candidates.append((-media.q, rank, offer.canonical))
    return min(candidates)[2] if candidates else None


# --- charsets (8.8) ------------------------------------------------------------------


def _parse_accept_charset(header: str) -> list[tuple[str, float]]:
    """Parse Accept-Charset; a syntactically invalid header is a 400 (8.8.4)."""
    result: list[tuple[str, float]] = []
    try:
        elements = _split_outside_quotes(header, ",")
    except ValueError:
        raise BadQuery("Accept-Charset: unbalanced quotes") from None
    for element in elements:
        if not element.strip():
            continue
        name, _, rest = element.partition(";")
        name = name.strip().strip('"')
        q = 1.0
        if rest.strip():
            key, eq, value = rest.partition("=")
            if key.strip().lower() != "q" or not eq or not _QVALUE.match(value.strip()):
                raise BadQuery(f"Accept-Charset: malformed element {element.strip()!r}")
            q = float(value)
        if not name or not (name == "*" or re.match(r"^[A-Za-z0-9 _.:()+-]+$", name)):
            raise BadQuery(f"Accept-Charset: malformed charset {name!r}")
        result.append((name, q))
    return result


def check_charset(header: str | None, charset_param: Sequence[str]) -> str:
    """Return the response charset (always UTF-8) or fail as 8.8 prescribes.

    The ``charset`` query parameter must name at least one supported charset (400
    otherwise); an Accept-Charset that excludes UTF-8 (no ``*``) is a 406.
    """
    if charset_param:
        names = [n.strip() for value in charset_param for n in value.split(",")]
        if any(not n or n == "*" for n in names):
            raise BadQuery("charset: empty value or wildcard")
        if not any(is_utf8(n) for n in names):
            raise BadQuery(f"charset: none of {', '.join(names)} is supported (only UTF-8)")
        return UTF8
    if header is None or not header.strip():
        return UTF8
    entries = _parse_accept_charset(header)
    utf8 = [q for name, q in entries if is_utf8(name)]
    star = [q for name, q in entries if name == "*"]
    if (utf8 and utf8[0] > 0) or (not utf8 and star and star[0] > 0):
        return UTF8
    raise NegotiationFailure(
        HttpStatus.NOT_ACCEPTABLE,
        "no acceptable charset: responses are available in UTF-8 only",
        [f"charset={c}" for c in SUPPORTED_CHARSETS],
    )


# --- request bodies ------------------------------------------------------------------

REQUEST_JSON = (DICOM_JSON, PLAIN_JSON)
REQUEST_XML = (DICOM_XML,)
REQUEST_TYPES = (DICOM_JSON, DICOM_XML)


@dataclass(frozen=True)
class BodyType:
    """How to parse a request body: ``json`` or ``xml``, and its declared charset."""

    kind: str
    charset: str | None


def classify_body(content_type: str | None) -> BodyType:
    """Classify a request ``Content-Type``; anything but DICOM JSON/XML is a 415.

    ``application/json`` is taken as DICOM JSON (forgiving); a JSON body in a charset
    other than UTF-8 is accepted if Python knows the codec.
    """
    if content_type is None or not content_type.strip():
        raise NegotiationFailure(
            HttpStatus.UNSUPPORTED_MEDIA_TYPE, "the request has no Content-Type", REQUEST_TYPES
        )
    try:
        media = parse_media_range(content_type)
    except ValueError:
        raise NegotiationFailure(
            HttpStatus.UNSUPPORTED_MEDIA_TYPE, "malformed Content-Type", REQUEST_TYPES
        ) from None
    charset = media.param("charset")
    if media.essence in REQUEST_JSON:
        if charset is not None and not is_utf8(charset):
            try:
                codecs.lookup(charset)
            except LookupError:
                raise NegotiationFailure(
                    HttpStatus.UNSUPPORTED_MEDIA_TYPE,
                    f"unsupported charset {charset!r}",
                    REQUEST_TYPES,
                ) from None
        return BodyType("json", charset)
    if media.essence in REQUEST_XML:
        return BodyType("xml", charset)
    raise NegotiationFailure(
        HttpStatus.UNSUPPORTED_MEDIA_TYPE,
        f"unsupported request media type {media.essence!r}",
        REQUEST_TYPES,
    )
