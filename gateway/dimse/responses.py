"""Status datasets for pynetdicom handlers, built from :mod:`gateway.model.status` only.

pynetdicom copies every element of a returned status dataset onto the response primitive
by keyword, so this module decides which optional status fields (PS3.7 Annex C) each
response carries: Error Comment always on failures, Error ID (0000,0903) when the table
gives one, Offending Element (0000,0901) for C-FIND A900/Cxxx, Attribute Identifier List
(0000,1005) for N-SET/N-GET 0105/0120.
"""

from __future__ import annotations

import enum
import traceback
from pathlib import Path

from pydicom.dataset import Dataset

from gateway.errors import GatewayError, InternalError
from gateway.model.status import DimseFailure, DimseStatus, Operation, dimse_failure

_MAX_COMMENT = 64  # Error Comment (0000,0902) is LO

# Responses whose primitive has an Attribute Identifier List in pynetdicom (N-SET, N-GET;
# its N-CREATE-RSP has none) and the statuses for which Annex C defines that field.
_ATTRIBUTE_LIST_OPERATIONS = frozenset({Operation.UPDATE, Operation.RETRIEVE})
_ATTRIBUTE_LIST_STATUSES = frozenset({DimseStatus.NO_SUCH_ATTRIBUTE, DimseStatus.MISSING_ATTRIBUTE})


class Outcome(enum.Enum):
    """How a handler's operation ended, for logging without patient data."""

    SUCCESS = "success"
    WARNING = "warning"
    CANCEL = "cancel"
    FAILURE = "failure"


def is_unable_to_process(status: int) -> bool:
    """C-FIND ``Cxxx``: the implementation specific "unable to process" range."""
    return status >> 12 == DimseStatus.UNABLE_TO_PROCESS >> 12


def ascii_comment(text: str) -> str:
    """An Error Comment: ASCII, no backslash, at most 64 characters."""
    clean = text.encode("ascii", "replace").decode("ascii").replace("\\", "/")
    return clean[:_MAX_COMMENT]


def status_dataset(status: DimseStatus, comment: str | None = None) -> Dataset:
    """A plain status, optionally with an Error Comment."""
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = ascii_comment(comment)
    return ds


def failure_dataset(failure: DimseFailure, operation: Operation) -> Dataset:
    """The status dataset of a failed operation, with the fields its status allows."""
    ds = status_dataset(failure.status, failure.error_comment)
    if failure.error_id is not None:
        ds.ErrorID = int(failure.error_id)
    if failure.offending:
        tags = list(failure.offending)
        if operation is Operation.FIND and (
            failure.status == DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
            or is_unable_to_process(failure.status)
        ):
            ds.OffendingElement = tags
        elif operation in _ATTRIBUTE_LIST_OPERATIONS and failure.status in _ATTRIBUTE_LIST_STATUSES:
            ds.AttributeIdentifierList = tags
    return ds


def error_dataset(error: BaseException, operation: Operation) -> tuple[Dataset, DimseFailure]:
    """Map any exception through the one status table; non-gateway errors are internal."""
    if not isinstance(error, GatewayError):
        error = InternalError(f"unexpected {type(error).__name__}")
    failure = dimse_failure(error, operation)
    return failure_dataset(failure, operation), failure


def unexpected(error: BaseException) -> dict[str, str]:
    """Log fields for a bug: exception type and where it was raised, never its message.

    Messages of library exceptions may quote data set values (patient data); the type
    and the innermost frame are enough to find the bug.
    """
    fields = {"error": type(error).__name__}
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        fields["raised_at"] = f"{Path(last.filename).name}:{last.lineno} in {last.name}"
    return fields


def status_hex(status: int) -> str:
    """``"0xA900"`` style text for logs."""
    return f"0x{status:04X}"
