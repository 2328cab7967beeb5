"""The one neutral error family of the gateway core.

Backends and the shared model raise these; each front turns them into a DIMSE status or
an HTTP status through the single table in :mod:`gateway.model.status`. An error says
*what* went wrong (its :class:`ErrorKind`), never which status code that is.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class ErrorKind(enum.Enum):
    """What went wrong, in protocol-neutral terms (see ``docs/status-mapping.md``)."""

    BAD_QUERY = "bad-query"  # a search key or parameter is malformed
    MISSING_ATTRIBUTE = "missing-attribute"  # a required attribute is absent
    MISSING_ATTRIBUTE_VALUE = "missing-attribute-value"  # a Type 1 attribute is empty
    INVALID_ATTRIBUTE_VALUE = "invalid-attribute-value"  # a value is not allowed
    NOT_ALLOWED_ATTRIBUTE = "not-allowed-attribute"  # attribute may not be sent here
    INVALID_INSTANCE_UID = "invalid-instance-uid"  # the SOP Instance UID breaks UID rules
    INVALID_PAYLOAD = "invalid-payload"  # body cannot be parsed at all
    DUPLICATE_INSTANCE = "duplicate-instance"  # the UID is already in use
    NO_SUCH_INSTANCE = "no-such-instance"  # unknown UID
    INSTANCE_GONE = "instance-gone"  # known to have existed, now deleted
    FINAL_STATE = "final-state"  # the MPPS is COMPLETED/DISCONTINUED
    INCOMPATIBLE_UPDATE = "incompatible-update"  # e.g. final state requirements unmet
    PAYLOAD_TOO_LARGE = "payload-too-large"
    NOT_SUPPORTED = "not-supported"  # the service or SOP class is not offered
    BUSY = "busy"  # our own resources are exhausted or we are shutting down
    UPSTREAM_UNAVAILABLE = "upstream-unavailable"  # not performed; may work later
    UPSTREAM_TIMEOUT = "upstream-timeout"  # no answer in time; a write's outcome is unknown
    UPSTREAM_BAD_RESPONSE = "upstream-bad-response"  # the upstream answered garbage
    UPSTREAM_REFUSED = "upstream-refused"  # the upstream refuses the gateway itself
    UPSTREAM_FAILURE = "upstream-failure"  # the upstream failed for its own reasons
    INTERNAL = "internal"  # our own bug


class GatewayError(Exception):
    """Base of every error the core raises on purpose.

    ``offending`` holds attribute tags (as ints) the error is about, so both the DIMSE
    Offending Element / Attribute Identifier List and the HTTP Status Report can name them.
    ``upstream_status`` carries the original DIMSE status (int) or HTTP status of an
    upstream, so the detail is never lost on the way back.
    """

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        offending: Iterable[int] = (),
        upstream_status: int | None = None,
        upstream_detail: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.offending: tuple[int, ...] = tuple(offending)
        self.upstream_status = upstream_status
        self.upstream_detail = upstream_detail
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.message


class BadQuery(GatewayError):
    """A search key or query parameter has an invalid value."""

    kind = ErrorKind.BAD_QUERY


class MissingAttribute(GatewayError):
    """A required attribute is absent (DIMSE 0120)."""

    kind = ErrorKind.MISSING_ATTRIBUTE


class MissingAttributeValue(GatewayError):
    """A Type 1 attribute is present but empty (DIMSE 0121)."""

    kind = ErrorKind.MISSING_ATTRIBUTE_VALUE


class InvalidAttributeValue(GatewayError):
    """An attribute value is not allowed (DIMSE 0106)."""

    kind = ErrorKind.INVALID_ATTRIBUTE_VALUE


class NotAllowedAttribute(GatewayError):
    """An attribute may not be sent in this operation (DIMSE 0105 for N-SET)."""

    kind = ErrorKind.NOT_ALLOWED_ATTRIBUTE


class InvalidInstanceUID(GatewayError):
    """The SOP Instance UID violates the UID rules (DIMSE 0117)."""

    kind = ErrorKind.INVALID_INSTANCE_UID


class InvalidPayload(GatewayError):
    """A request body (JSON or XML) cannot be parsed or has the wrong shape."""

    kind = ErrorKind.INVALID_PAYLOAD


class DuplicateInstance(GatewayError):
    """The SOP Instance UID is already in use (DIMSE 0111, HTTP 409)."""

    kind = ErrorKind.DUPLICATE_INSTANCE


class NoSuchInstance(GatewayError):
    """No instance with that UID (DIMSE 0112, HTTP 404)."""

    kind = ErrorKind.NO_SUCH_INSTANCE


class InstanceGone(GatewayError):
    """The instance existed and was deleted (DIMSE 0112, HTTP 410)."""

    kind = ErrorKind.INSTANCE_GONE


class FinalStateViolation(GatewayError):
    """The MPPS is final and may no longer be updated (DIMSE 0110/A710, HTTP 409)."""

    kind = ErrorKind.FINAL_STATE


class IncompatibleUpdate(GatewayError):
    """The update conflicts with the stored MPPS, e.g. final state requirements unmet."""

    kind = ErrorKind.INCOMPATIBLE_UPDATE


class PayloadTooLarge(GatewayError):
    """A request or result exceeds a configured size limit."""

    kind = ErrorKind.PAYLOAD_TOO_LARGE


class NotSupported(GatewayError):
    """The requested service is not offered (by us or by the upstream)."""

    kind = ErrorKind.NOT_SUPPORTED


class Busy(GatewayError):
    """The gateway itself is out of resources or shutting down; try later."""

    kind = ErrorKind.BUSY


class UpstreamUnavailable(GatewayError):
    """The upstream could not be reached or refused for now; nothing was performed."""

    kind = ErrorKind.UPSTREAM_UNAVAILABLE


class UpstreamTimeout(GatewayError):
    """The upstream did not answer in time; for writes the outcome is unknown."""

    kind = ErrorKind.UPSTREAM_TIMEOUT


class UpstreamBadResponse(GatewayError):
    """The upstream answered something the gateway cannot use."""

    kind = ErrorKind.UPSTREAM_BAD_RESPONSE


class UpstreamRefused(GatewayError):
    """The upstream refuses the gateway's own identity or credentials."""

    kind = ErrorKind.UPSTREAM_REFUSED


class UpstreamFailure(GatewayError):
    """The upstream failed for a reason of its own."""

    kind = ErrorKind.UPSTREAM_FAILURE


class InternalError(GatewayError):
    """An unexpected failure inside the gateway (a bug)."""

    kind = ErrorKind.INTERNAL


class ConfigError(Exception):
    """The configuration is invalid; ``key`` names the offending dotted key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def error_of_kind(
    kind: ErrorKind,
    message: str,
    *,
    offending: Iterable[int] = (),
    upstream_status: int | None = None,
    upstream_detail: str | None = None,
    retry_after_s: int | None = None,
) -> GatewayError:
    """An instance of the error class that stands for ``kind`` (for translated upstream
    outcomes, which arrive as a kind from :mod:`gateway.model.status`)."""
    cls = _CLASS_OF_KIND.get(kind, UpstreamFailure)
    return cls(
        message,
        offending=offending,
        upstream_status=upstream_status,
        upstream_detail=upstream_detail,
        retry_after_s=retry_after_s,
    )


_CLASS_OF_KIND: dict[ErrorKind, type[GatewayError]] = {
    cls.kind: cls
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, GatewayError) and cls is not GatewayError
}
