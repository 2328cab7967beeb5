"""HTTP outcomes of an upstream DICOMweb origin server turned into gateway errors.

Every non-2xx answer, transport failure and unusable body becomes one
:class:`gateway.errors.GatewayError` whose kind comes from the one status table
(:func:`gateway.model.status.kind_for_http_status`). The origin's Status Report
(PS3.18 8.6.3) travels in ``upstream_detail`` and the HTTP status in ``upstream_status`` so
the modality's Error Comment says what the origin said (``status-mapping.md`` §1.3, §4.2).
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import http
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway import errors
from gateway.errors import ErrorKind, GatewayError, error_of_kind
from gateway.model.status import (
    HttpStatus,
    Operation,
    kind_for_dimse_status,
    kind_for_http_status,
)
from gateway.model.types import tag_key

MAX_DETAIL_CHARS = 200
"""Longest Status Report text kept; the DIMSE Error Comment only shows 64 characters."""

# Command-group keys of a DICOM JSON Status Report (PS3.7 Annex C, as our front sends it).
_STATUS = tag_key(0x00000900)
_OFFENDING = tag_key(0x00000901)
_ERROR_COMMENT = tag_key(0x00000902)
_ERROR_ID = tag_key(0x00000903)
_STATUS_COMMENT = tag_key(0x00080418)  # Transaction Status Comment: the full text
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
_HEX_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_WRITES = (Operation.CREATE, Operation.UPDATE)


def is_success(status: int) -> bool:
    """Any 2xx is success (PS3.18 B.37 itself answers a Create with 200, not 201)."""
    return HttpStatus.OK <= status < http.HTTPStatus.MULTIPLE_CHOICES


@dataclass(frozen=True)
class UpstreamReport:
    """What an origin's Status Report says, in whichever form it came."""

    text: str | None = None
    offending: tuple[int, ...] = ()
    dimse_status: int | None = None  # a gateway-style report names the DIMSE twin
    error_id: int | None = None


def error_for_status(
    status: int,
    operation: Operation,
    *,
    body: bytes = b"",
    content_type: str = "",
    headers: Mapping[str, str] | None = None,
) -> GatewayError:
    """The gateway error for a non-2xx answer, carrying the origin's own explanation."""
    report = status_report(body, content_type)
    kind = refine_kind(kind_for_http_status(status, operation), status, operation, report)
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    message = f"HTTP {status}" if report.text else f"HTTP {status} {phrase}"
    return error_of_kind(
        kind,
        message,
        offending=report.offending,
        upstream_status=status,
        upstream_detail=report.text,
        retry_after_s=parse_retry_after((headers or {}).get("Retry-After")),
    )


_PRECISE_REQUEST_ERRORS = frozenset(
    {
        ErrorKind.MISSING_ATTRIBUTE,
        ErrorKind.MISSING_ATTRIBUTE_VALUE,
        ErrorKind.INVALID_ATTRIBUTE_VALUE,
        ErrorKind.NOT_ALLOWED_ATTRIBUTE,
        ErrorKind.INVALID_INSTANCE_UID,
    }
)


def refine_kind(
    kind: ErrorKind, status: int, operation: Operation, report: UpstreamReport
) -> ErrorKind:
    """Use what a gateway-style Status Report adds to the bare HTTP status.

    * 409 on Update whose report carries Error ID A710: the MPPS is final (0110 + A710).
    * 400 on an MPPS request whose report names a precise DIMSE request error (0105, 0106,
      0117, 0120, 0121): pass that on instead of the generic 0110, so a chain of gateways
      answers the modality exactly as the last one would.
    """
    if report.dimse_status is None:
        return kind
    precise = kind_for_dimse_status(report.dimse_status, error_id=report.error_id)
    if kind is ErrorKind.INCOMPATIBLE_UPDATE and precise is ErrorKind.FINAL_STATE:
        return precise
    if (
        status == HttpStatus.BAD_REQUEST
        and operation is not Operation.FIND
        and precise in _PRECISE_REQUEST_ERRORS
    ):
        return precise
    return kind


def error_for_exception(exc: BaseException, operation: Operation, timeout_s: float) -> GatewayError:
    """The gateway error for a transport failure (no usable HTTP answer at all)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return errors.UpstreamTimeout(f"no answer within {timeout_s:g} s")
    if isinstance(exc, aiohttp.ClientSSLError):
        # Same row as "unreachable" in status-mapping §2: not performed, an operator must act.
        return errors.UpstreamUnavailable("TLS failure", upstream_detail=_describe(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Nothing was sent: "not performed" is true even for a write.
        return errors.UpstreamUnavailable(
            "upstream unreachable", upstream_detail=_describe(exc.os_error)
        )
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        if operation in _WRITES:
            # The request may have reached the origin: never promise "not performed".
            return errors.UpstreamFailure(
                "connection lost - outcome unknown", upstream_detail=_describe(exc)
            )
        return errors.UpstreamUnavailable("connection lost", upstream_detail=_describe(exc))
    if isinstance(exc, aiohttp.ClientResponseError):
        return errors.UpstreamBadResponse("invalid HTTP response", upstream_detail=_describe(exc))
    return errors.UpstreamFailure("upstream request failed", upstream_detail=_describe(exc))


def bad_response(reason: str) -> GatewayError:
    """The origin answered 2xx with something the gateway cannot use."""
    return errors.UpstreamBadResponse(f"unusable answer: {reason}")


def is_retryable(exc: BaseException) -> bool:
    """Connection failures an idempotent GET may retry; TLS and timeouts are not retried."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return False
    return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(
        exc, aiohttp.ServerTimeoutError
    )


def status_report(body: bytes, content_type: str) -> UpstreamReport:
    """A short text, offending tags and DIMSE twin from a Status Report body (PS3.18 8.6.3).

    Understands the DICOM JSON report (Status, Offending Element, Error Comment, Error ID,
    Transaction Status Comment), the ``application/json`` object of status-mapping §6, and
    otherwise reduces HTML or text to its first meaningful line.
    """
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return UpstreamReport()
    if "json" in content_type or text[:1] in "{[":
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and len(parsed) == 1:
            parsed = parsed[0]
        if isinstance(parsed, dict):
            if any(_HEX_TAG_RE.match(key) for key in parsed):
                return _from_dicom_report(parsed)
            return _from_json_report(parsed)
    if "html" in content_type or text.startswith("<"):
        text = html.unescape(_TAG_RE.sub("\n", text))
    for line in text.splitlines():
        line = _SPACE_RE.sub(" ", line).strip()
        if line:
            return UpstreamReport(_short(line))
    return UpstreamReport()


def _from_json_report(report: dict[str, Any]) -> UpstreamReport:
    parts: list[str] = []
    for key in ("errorComment", "detail", "message", "error", "title"):
        value = report.get(key)
        if isinstance(value, str) and value.strip() and value.strip() not in parts:
            parts.append(value.strip())
    elements = report.get("offendingElements")
    offending = _tags(elements if isinstance(elements, list) else [])
    return UpstreamReport(
        text=_short(_SPACE_RE.sub(" ", parts[0])) if parts else None,
        offending=offending,
        dimse_status=_hex(report.get("dimseStatus")),
        error_id=_hex(report.get("errorId")),
    )


def _from_dicom_report(report: dict[str, Any]) -> UpstreamReport:
    def values(tag: str) -> list[Any]:
        attr = report.get(tag)
        found = attr.get("Value") if isinstance(attr, dict) else None
        return found if isinstance(found, list) else []

    texts = [v for tag in (_ERROR_COMMENT, _STATUS_COMMENT) for v in values(tag)]
    text = next((t.strip() for t in texts if isinstance(t, str) and t.strip()), None)
    status = next((v for v in values(_STATUS) if isinstance(v, int)), None)
    error_id = next((v for v in values(_ERROR_ID) if isinstance(v, int)), None)
    return UpstreamReport(
        text=_short(_SPACE_RE.sub(" ", text)) if text else None,
        offending=_tags(values(_OFFENDING)),
        dimse_status=status,
        error_id=error_id,
    )


def _tags(values: list[Any]) -> tuple[int, ...]:
    return tuple(int(v, 16) for v in values if isinstance(v, str) and _HEX_TAG_RE.match(v))


def _hex(value: Any) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{4}", value):
        return int(value, 16)
    return None


def parse_retry_after(value: str | None) -> int | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), if valid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() - time.time()))


def _describe(exc: BaseException) -> str:
    """A transport error as text without the request URL (its query holds patient data)."""
    if isinstance(exc, aiohttp.InvalidURL):
        return type(exc).__name__
    if isinstance(exc, aiohttp.ClientResponseError):
        return _short(f"{type(exc).__name__}: {exc.message}")
    return _short(str(exc) or type(exc).__name__)


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."
