"""The one status table: neutral errors to DIMSE statuses and HTTP codes, and back.

This module is the only place that knows status codes. Sources: PS3.7 Annex C, PS3.4
K.4-1, F.7.2-2, F.8.2-2 and PS3.18 14.4.3.1/15.x.3.1; where the standard fixes no pair the
choice follows ``docs/status-mapping.md`` (our design, derived from the spec digest).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.errors import ErrorKind, GatewayError


class Operation(enum.Enum):
    """The four transactions both fronts serve."""

    FIND = "find"  # C-FIND MWL / Search
    CREATE = "create"  # N-CREATE / Create
    UPDATE = "update"  # N-SET / Update
    RETRIEVE = "retrieve"  # N-GET / Retrieve


class DimseStatus(enum.IntEnum):
    """DIMSE status codes the gateway sends or interprets, by name."""

    SUCCESS = 0x0000
    ATTRIBUTE_NOT_SUPPORTED_WARNING = 0x0001  # N-GET: requested optional attrs unsupported
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    ATTRIBUTE_LIST_ERROR = 0x0107  # warning
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116  # warning
    INVALID_SOP_INSTANCE = 0x0117
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
    RESOURCE_LIMITATION = 0x0213
    OUT_OF_RESOURCES = 0xA700  # C-FIND refused
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000
    UNABLE_TO_PROCESS_BAD_REQUEST = 0xC400  # our "C + HTTP status" convention
    UNABLE_TO_PROCESS_UNAUTHORIZED = 0xC401
    UNABLE_TO_PROCESS_FORBIDDEN = 0xC403
    UNABLE_TO_PROCESS_NOT_ACCEPTABLE = 0xC406
    UNABLE_TO_PROCESS_UNSUPPORTED_MEDIA = 0xC415
    UNABLE_TO_PROCESS_UPSTREAM_ERROR = 0xC500
    UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE = 0xC502
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01  # optional keys not supported; use sparingly


class ErrorId(enum.IntEnum):
    """Implementation Error IDs (0000,0903) defined by the standard."""

    MPPS_MAY_NO_LONGER_BE_UPDATED = 0xA710


MPPS_FINAL_COMMENT = "Performed Procedure Step Object may no longer be updated"
"""The Error Comment Table F.7.2-2 gives for Error ID A710."""


class HttpStatus(enum.IntEnum):
    """HTTP status codes used by the DICOMweb side."""

    OK = 200
    CREATED = 201
    NO_CONTENT = 204
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405
    NOT_ACCEPTABLE = 406
    CONFLICT = 409
    GONE = 410
    PAYLOAD_TOO_LARGE = 413
    UNSUPPORTED_MEDIA_TYPE = 415
    TOO_MANY_REQUESTS = 429
    INTERNAL_SERVER_ERROR = 500
    NOT_IMPLEMENTED = 501
    BAD_GATEWAY = 502
    SERVICE_UNAVAILABLE = 503
    GATEWAY_TIMEOUT = 504


@dataclass(frozen=True)
class DimseFailure:
    """What a DIMSE front puts in a failure response for one error."""

    status: DimseStatus
    error_comment: str
    error_id: ErrorId | None = None
    offending: tuple[int, ...] = ()


_F = Operation.FIND
_C = Operation.CREATE
_U = Operation.UPDATE
_R = Operation.RETRIEVE
_ALL = (_F, _C, _U, _R)
_N = (_C, _U, _R)

S = DimseStatus
H = HttpStatus


def _rows(
    kind: ErrorKind, ops: tuple[Operation, ...], dimse: DimseStatus, http: HttpStatus
) -> dict[tuple[ErrorKind, Operation], tuple[DimseStatus, HttpStatus]]:
    return {(kind, op): (dimse, http) for op in ops}


K = ErrorKind
# (error kind, operation) -> (DIMSE status towards a DIMSE SCU, HTTP status towards a UA).
STATUS_TABLE: dict[tuple[ErrorKind, Operation], tuple[DimseStatus, HttpStatus]] = {
    **_rows(K.BAD_QUERY, (_F,), S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, H.BAD_REQUEST),
    **_rows(K.BAD_QUERY, _N, S.INVALID_ATTRIBUTE_VALUE, H.BAD_REQUEST),
    **_rows(K.MISSING_ATTRIBUTE, (_F,), S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, H.BAD_REQUEST),
    **_rows(K.MISSING_ATTRIBUTE, _N, S.MISSING_ATTRIBUTE, H.BAD_REQUEST),
    **_rows(K.MISSING_ATTRIBUTE_VALUE, (_F,), S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, H.BAD_REQUEST),
    **_rows(K.MISSING_ATTRIBUTE_VALUE, _N, S.MISSING_ATTRIBUTE_VALUE, H.BAD_REQUEST),
    **_rows(K.INVALID_ATTRIBUTE_VALUE, (_F,), S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, H.BAD_REQUEST),
    **_rows(K.INVALID_ATTRIBUTE_VALUE, _N, S.INVALID_ATTRIBUTE_VALUE, H.BAD_REQUEST),
    **_rows(K.NOT_ALLOWED_ATTRIBUTE, (_F,), S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, H.BAD_REQUEST),
    **_rows(K.NOT_ALLOWED_ATTRIBUTE, _N, S.NO_SUCH_ATTRIBUTE, H.BAD_REQUEST),
    **_rows(K.INVALID_INSTANCE_UID, _ALL, S.INVALID_SOP_INSTANCE, H.BAD_REQUEST),
    **_rows(K.INVALID_PAYLOAD, (_F,), S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, H.BAD_REQUEST),
    **_rows(K.INVALID_PAYLOAD, _N, S.PROCESSING_FAILURE, H.BAD_REQUEST),
    **_rows(K.DUPLICATE_INSTANCE, _ALL, S.DUPLICATE_SOP_INSTANCE, H.CONFLICT),
    **_rows(K.NO_SUCH_INSTANCE, _ALL, S.NO_SUCH_SOP_INSTANCE, H.NOT_FOUND),
    **_rows(K.INSTANCE_GONE, _ALL, S.NO_SUCH_SOP_INSTANCE, H.GONE),
    **_rows(K.FINAL_STATE, _ALL, S.PROCESSING_FAILURE, H.CONFLICT),
    **_rows(K.INCOMPATIBLE_UPDATE, _ALL, S.PROCESSING_FAILURE, H.CONFLICT),
    **_rows(K.PAYLOAD_TOO_LARGE, (_F,), S.OUT_OF_RESOURCES, H.PAYLOAD_TOO_LARGE),
    **_rows(K.PAYLOAD_TOO_LARGE, _N, S.RESOURCE_LIMITATION, H.PAYLOAD_TOO_LARGE),
    **_rows(K.NOT_SUPPORTED, (_F,), S.SOP_CLASS_NOT_SUPPORTED, H.NOT_IMPLEMENTED),
    **_rows(K.NOT_SUPPORTED, _N, S.PROCESSING_FAILURE, H.NOT_IMPLEMENTED),
    **_rows(K.BUSY, (_F,), S.OUT_OF_RESOURCES, H.SERVICE_UNAVAILABLE),
    **_rows(K.BUSY, _N, S.RESOURCE_LIMITATION, H.SERVICE_UNAVAILABLE),
    **_rows(K.UPSTREAM_UNAVAILABLE, (_F,), S.OUT_OF_RESOURCES, H.SERVICE_UNAVAILABLE),
    **_rows(K.UPSTREAM_UNAVAILABLE, _N, S.RESOURCE_LIMITATION, H.SERVICE_UNAVAILABLE),
    **_rows(K.UPSTREAM_TIMEOUT, (_F,), S.OUT_OF_RESOURCES, H.GATEWAY_TIMEOUT),
    # A write that timed out may have happened: never claim "not performed" (0213).
    **_rows(K.UPSTREAM_TIMEOUT, (_C, _U), S.PROCESSING_FAILURE, H.GATEWAY_TIMEOUT),
    **_rows(K.UPSTREAM_TIMEOUT, (_R,), S.RESOURCE_LIMITATION, H.GATEWAY_TIMEOUT),
    **_rows(
        K.UPSTREAM_BAD_RESPONSE, (_F,), S.UNABLE_TO_PROCESS_BAD_UPSTREAM_RESPONSE, H.BAD_GATEWAY
    ),
    **_rows(K.UPSTREAM_BAD_RESPONSE, _N, S.PROCESSING_FAILURE, H.BAD_GATEWAY),
    **_rows(K.UPSTREAM_REFUSED, (_F,), S.UNABLE_TO_PROCESS_FORBIDDEN, H.BAD_GATEWAY),
    **_rows(K.UPSTREAM_REFUSED, _N, S.NOT_AUTHORIZED, H.BAD_GATEWAY),
    **_rows(K.UPSTREAM_FAILURE, (_F,), S.UNABLE_TO_PROCESS_UPSTREAM_ERROR, H.INTERNAL_SERVER_ERROR),
    **_rows(K.UPSTREAM_FAILURE, _N, S.PROCESSING_FAILURE, H.INTERNAL_SERVER_ERROR),
    **_rows(K.INTERNAL, (_F,), S.UNABLE_TO_PROCESS, H.INTERNAL_SERVER_ERROR),
    **_rows(K.INTERNAL, _N, S.PROCESSING_FAILURE, H.INTERNAL_SERVER_ERROR),
}

_STRICT_HTTP = {
    # strict_status_codes = true keeps to the codes the PS3.18 transaction tables list.
    (K.UPSTREAM_TIMEOUT, H.GATEWAY_TIMEOUT): H.SERVICE_UNAVAILABLE,
    (K.UPSTREAM_BAD_RESPONSE, H.BAD_GATEWAY): H.INTERNAL_SERVER_ERROR,
    (K.UPSTREAM_REFUSED, H.BAD_GATEWAY): H.SERVICE_UNAVAILABLE,
}

_MAX_COMMENT = 64  # Error Comment (0000,0902) is LO


def _comment(error: GatewayError) -> str:
    """An ASCII Error Comment of at most 64 characters (LO)."""
    if error.kind is ErrorKind.FINAL_STATE:
        return MPPS_FINAL_COMMENT
    if error.kind is ErrorKind.UPSTREAM_TIMEOUT:
        text = f"upstream timeout - outcome unknown: {error.message}"
    else:
        text = error.message
    if error.upstream_detail:
        text = f"{text}: {error.upstream_detail}"
    ascii_text = text.encode("ascii", "replace").decode("ascii").replace("\\", "/")
    return ascii_text[:_MAX_COMMENT]


def dimse_failure(error: GatewayError, operation: Operation) -> DimseFailure:
    """The DIMSE response for ``error`` raised during ``operation``."""
    status, _ = STATUS_TABLE[(error.kind, operation)]
    error_id = ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED if error.kind is K.FINAL_STATE else None
    return DimseFailure(status, _comment(error), error_id, error.offending)


def http_status(error: GatewayError, operation: Operation, *, strict: bool = False) -> HttpStatus:
    """The HTTP status for ``error`` raised during ``operation``."""
    _, code = STATUS_TABLE[(error.kind, operation)]
    if strict:
        code = _STRICT_HTTP.get((error.kind, code), code)
    return code


# --- Upstream outcomes back into neutral errors -------------------------------------------

_DIMSE_TO_KIND: dict[int, ErrorKind] = {
    S.NO_SUCH_ATTRIBUTE: K.NOT_ALLOWED_ATTRIBUTE,
    S.INVALID_ATTRIBUTE_VALUE: K.INVALID_ATTRIBUTE_VALUE,
    S.DUPLICATE_SOP_INSTANCE: K.DUPLICATE_INSTANCE,
    S.NO_SUCH_SOP_INSTANCE: K.NO_SUCH_INSTANCE,
    S.CLASS_INSTANCE_CONFLICT: K.NO_SUCH_INSTANCE,
    S.INVALID_SOP_INSTANCE: K.INVALID_INSTANCE_UID,
    S.MISSING_ATTRIBUTE: K.MISSING_ATTRIBUTE,
    S.MISSING_ATTRIBUTE_VALUE: K.MISSING_ATTRIBUTE_VALUE,
    S.NO_SUCH_SOP_CLASS: K.NOT_SUPPORTED,
    S.SOP_CLASS_NOT_SUPPORTED: K.NOT_SUPPORTED,
    S.NOT_AUTHORIZED: K.UPSTREAM_REFUSED,
    S.RESOURCE_LIMITATION: K.UPSTREAM_UNAVAILABLE,
    S.OUT_OF_RESOURCES: K.UPSTREAM_UNAVAILABLE,
    S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: K.BAD_QUERY,
}


def is_dimse_success(status: int) -> bool:
    """Success or a warning class: the operation was performed (PS3.7 Annex C)."""
    return status in (0x0000, 0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF


def kind_for_dimse_status(status: int, *, error_id: int | None = None) -> ErrorKind:
    """The neutral error for a failure status an upstream DIMSE SCP returned."""
    if status == S.PROCESSING_FAILURE and error_id == ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED:
        return K.FINAL_STATE
    return _DIMSE_TO_KIND.get(status, K.UPSTREAM_FAILURE)


_HTTP_TO_KIND: dict[tuple[int, Operation | None], ErrorKind] = {
    (H.BAD_REQUEST, None): K.UPSTREAM_FAILURE,
    (H.BAD_REQUEST, _F): K.BAD_QUERY,
    (H.UNAUTHORIZED, None): K.UPSTREAM_REFUSED,
    (H.FORBIDDEN, None): K.UPSTREAM_REFUSED,
    (H.NOT_FOUND, None): K.NO_SUCH_INSTANCE,
    (H.NOT_FOUND, _F): K.NOT_SUPPORTED,
    (H.NOT_FOUND, _C): K.NOT_SUPPORTED,  # Create on a missing collection: no MPPS service
    (H.METHOD_NOT_ALLOWED, None): K.NOT_SUPPORTED,
    (H.NOT_IMPLEMENTED, None): K.NOT_SUPPORTED,
    (H.CONFLICT, None): K.INCOMPATIBLE_UPDATE,
    (H.CONFLICT, _C): K.DUPLICATE_INSTANCE,
    (H.GONE, None): K.INSTANCE_GONE,
    (H.PAYLOAD_TOO_LARGE, None): K.UPSTREAM_UNAVAILABLE,
    (H.NOT_ACCEPTABLE, None): K.UPSTREAM_BAD_RESPONSE,
    (H.UNSUPPORTED_MEDIA_TYPE, None): K.UPSTREAM_BAD_RESPONSE,
    (H.TOO_MANY_REQUESTS, None): K.UPSTREAM_UNAVAILABLE,
    (H.BAD_GATEWAY, None): K.UPSTREAM_UNAVAILABLE,
    (H.SERVICE_UNAVAILABLE, None): K.UPSTREAM_UNAVAILABLE,
    (H.GATEWAY_TIMEOUT, None): K.UPSTREAM_TIMEOUT,
}


def kind_for_http_status(status: int, operation: Operation) -> ErrorKind:
    """The neutral error for a non-2xx answer of an upstream DICOMweb origin server."""
    found = _HTTP_TO_KIND.get((status, operation)) or _HTTP_TO_KIND.get((status, None))
    if found is not None:
        return found
    return K.UPSTREAM_FAILURE


def render_markdown_table() -> str:
    """The status table as Markdown, embedded in ``docs/status-mapping.md`` (a test checks)."""
    lines = [
        "| Error kind | Operation | DIMSE status | HTTP status |",
        "|---|---|---|---|",
    ]
    for (kind, op), (dimse, http) in STATUS_TABLE.items():
        extra = " + Error ID A710" if kind is K.FINAL_STATE else ""
        lines.append(
            f"| {kind.value} | {op.value} | {dimse.value:04X} {dimse.name}{extra} "
            f"| {http.value} {http.name} |"
        )
    return "\n".join(lines) + "\n"
