"""DIMSE outcomes of an upstream RIS turned into gateway errors (``status-mapping.md`` §2-§4.1).

Every failure status, association rejection, abort, timeout and unreachable peer becomes
one :class:`gateway.errors.GatewayError`. Failure statuses are classified only by
:func:`gateway.model.status.kind_for_dimse_status`; this module adds what the status table
cannot know: how the association ended, and the RIS's own words (Error Comment, Offending
Element) in ``upstream_detail``/``offending`` so the HTTP Status Report keeps them.
"""

from __future__ import annotations

import enum
import threading
import warnings
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.association import Association

from gateway import errors
from gateway.errors import GatewayError, error_of_kind
from gateway.model.dicom_json import dataset_to_json
from gateway.model.status import (
    DimseStatus,
    Operation,
    is_dimse_success,
    kind_for_dimse_status,
)
from gateway.model.types import JsonDataset

_OPERATION_NAMES = {
    Operation.FIND: "C-FIND",
    Operation.CREATE: "N-CREATE",
    Operation.UPDATE: "N-SET",
    Operation.RETRIEVE: "N-GET",
}

_TIMEOUT_MARGIN = 0.9  # an empty status after this share of the timeout is a timeout
_QUICK_S = 1.0

_WARNING_TEXTS = {
    Operation.CREATE: "The MPPS was created with modifications",
    Operation.UPDATE: "The MPPS was updated with modifications",
    Operation.RETRIEVE: "Requested optional Attributes are not supported.",
}


class RejectResult(enum.IntEnum):
    """A-ASSOCIATE-RJ Result (PS3.8 9.3.4)."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(enum.IntEnum):
    """A-ASSOCIATE-RJ Source (PS3.8 9.3.4)."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class UserRejectReason(enum.IntEnum):
    """A-ASSOCIATE-RJ Reason/Diag. when the source is the service user (PS3.8 9.3.4)."""

    NO_REASON = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7


class AssociationLost(errors.UpstreamUnavailable):
    """The association was found dead before the request went out: nothing was sent."""


class AssociationDropped(errors.UpstreamUnavailable):
    """The RIS aborted (or closed) the association before answering a read.

    ``quick`` says it happened at once, the sign of an idle association the RIS had
    already dropped; such a read is retried once on a fresh association.
    """

    def __init__(self, message: str, *, quick: bool, **details: Any) -> None:
        super().__init__(message, **details)
        self.quick = quick


def association_failure(assoc: Association, where: str) -> GatewayError:
    """Why ``assoc`` did not come up: rejected, aborted, unreachable or ACSE timeout.

    Transient rejections and an unknown called AE title are "not performed, may work
    later" (503, logged as a configuration problem); a RIS that does not know *our*
    calling AE title refuses the gateway itself (502, §2).
    """
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        result = getattr(primitive, "result", None)
        source = getattr(primitive, "result_source", None)
        reason = getattr(primitive, "diagnostic", None)
        detail = (
            f"association rejected by {where}: result={getattr(primitive, 'result_str', result)},"
            f" source={getattr(primitive, 'source_str', source)},"
            f" reason={getattr(primitive, 'reason_str', reason)}"
        )
        if (
            result == RejectResult.PERMANENT
            and source == RejectSource.SERVICE_USER
            and reason == UserRejectReason.CALLING_AE_NOT_RECOGNIZED
        ):
            return errors.UpstreamRefused(
                "the RIS does not accept the gateway's calling AE title", upstream_detail=detail
            )
        return errors.UpstreamUnavailable(
            "the RIS rejected the association", upstream_detail=detail
        )
    if assoc.is_aborted:
        return errors.UpstreamUnavailable(
            "the RIS aborted the association request", upstream_detail=f"A-ABORT from {where}"
        )
    return errors.UpstreamUnavailable(
        "the RIS cannot be reached", upstream_detail=f"no association with {where}"
    )


def not_negotiated(operation: Operation, sop_class: str) -> GatewayError:
    """The RIS accepted the association but not the presentation context we need (501)."""
    return errors.NotSupported(
        f"the RIS does not offer {_OPERATION_NAMES[operation]} for this service",
        upstream_detail=f"presentation context for {sop_class} not accepted",
    )


def no_response(operation: Operation, *, elapsed_s: float, timeout_s: float) -> GatewayError:
    """pynetdicom's empty status: the RIS timed out, aborted or answered invalidly (§2).

    pynetdicom does not say which; the time the wait took does. A timeout on a write
    means its outcome is unknown (504), never "not performed".
    """
    name = _OPERATION_NAMES[operation]
    if elapsed_s >= timeout_s * _TIMEOUT_MARGIN:
        return errors.UpstreamTimeout(
            f"no {name} response from the RIS within {timeout_s:g} s",
            upstream_detail="DIMSE timeout; the association was aborted",
        )
    if operation in (Operation.CREATE, Operation.UPDATE):
        return errors.UpstreamTimeout(
            f"the association ended before the {name} response - outcome unknown",
            upstream_detail="A-ABORT or invalid response while waiting",
        )
    return AssociationDropped(
        f"the RIS aborted the association during {name}",
        quick=elapsed_s < min(_QUICK_S, timeout_s / 4),
        upstream_detail="A-ABORT or invalid response while waiting",
    )


def status_code(status: Dataset) -> int | None:
    """The Status (0000,0900) of a response status dataset; ``None`` when it is empty."""
    value = getattr(status, "Status", None)
    return None if value is None else int(value)


def failure(operation: Operation, status: Dataset) -> GatewayError:
    """The gateway error for a failure status the RIS sent, with its own explanation."""
    code = status_code(status)
    assert code is not None
    error_id = _optional_int(status, "ErrorID")
    kind = kind_for_dimse_status(code, error_id=error_id)
    comment = str(getattr(status, "ErrorComment", "") or "").strip()
    detail = f"DIMSE status {code:04X}"
    if error_id is not None:
        detail += f", Error ID {error_id:04X}"
    if comment:
        detail += f": {comment}"
    return error_of_kind(
        kind,
        f"the RIS answered {_OPERATION_NAMES[operation]} with status {code:04X}",
        offending=_offending(status),
        upstream_status=code,
        upstream_detail=detail,
    )


def is_warning(code: int) -> bool:
    """A success-class status other than plain Success (0001, 0107, 0116, Bxxx)."""
    return is_dimse_success(code) and code != DimseStatus.SUCCESS


def warning_text(operation: Operation, status: Dataset) -> str:
    """The Warning text for a success with warnings (``status-mapping.md`` §4.1)."""
    code = status_code(status)
    comment = str(getattr(status, "ErrorComment", "") or "").strip()
    base = _WARNING_TEXTS.get(operation, "The RIS answered with a warning")
    detail = f"DIMSE status {code:04X}" + (f": {comment}" if comment else "")
    if operation is Operation.RETRIEVE:
        return f"{base} ({detail})"
    return f"{base} ({detail})."


def _optional_int(status: Dataset, keyword: str) -> int | None:
    value = getattr(status, keyword, None)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _offending(status: Dataset) -> tuple[int, ...]:
    tags: list[int] = []
    for keyword in ("OffendingElement", "AttributeIdentifierList"):
        value = getattr(status, keyword, None)
        if value is None:
            continue
        values = value if isinstance(value, MultiValue | list | tuple) else [value]
        try:
            tags.extend(int(tag) for tag in values)
        except (TypeError, ValueError):
            continue
    return tuple(dict.fromkeys(tags))


_DECODE_LOCK = threading.Lock()


def response_to_json(ds: Dataset, what: str) -> JsonDataset:
    """A dataset the RIS sent, as DICOM JSON, decoded by its Specific Character Set.

    What the RIS sends is passed on as it is: pydicom's value checks on reading (a value
    longer than its VR allows, an odd date) would only warn, and their texts may quote
    patient data, so they are silenced here. ``warnings.catch_warnings`` is process-wide
    state, hence the lock around it (conversions are CPU-bound: serialising them costs
    little). Anything that cannot be represented at all is an unusable answer (502).
    """
    try:
        with _DECODE_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dataset_to_json(ds)
    except (GatewayError, ValueError, TypeError, LookupError, AttributeError) as exc:
        raise errors.UpstreamBadResponse(
            f"the RIS sent {what} that cannot be represented",
            upstream_detail=type(exc).__name__,
        ) from exc
