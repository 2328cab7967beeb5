"""MPPS towards a DIMSE RIS: N-CREATE, N-SET and N-GET on a leased association.

Each function blocks and runs in a worker thread. It returns the RIS's attribute list and
the Warning text of a success with warnings, or raises the gateway error for the outcome
(``status-mapping.md`` §4.1). pynetdicom's empty status (timeout, abort, invalid answer)
is told apart by how long the call took: a write that timed out has an unknown outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom.association import Association

from gateway.backends.dimse import outcomes
from gateway.model.mpps import MPPS_RETRIEVE_SOP_CLASS_UID, MPPS_SOP_CLASS_UID
from gateway.model.status import DimseStatus, Operation


@dataclass(frozen=True)
class NResult:
    """A performed N-* operation: what the RIS sent back and its warning, if any."""

    attributes: Dataset | None
    warning: str | None = None


class NotNegotiated(Exception):
    """The RIS did not accept the presentation context this operation needs."""

    def __init__(self, sop_class: str) -> None:
        super().__init__(sop_class)
        self.sop_class = sop_class


def n_create(
    assoc: Association, uid: str, attributes: Dataset, *, msg_id: int, timeout_s: float
) -> NResult:
    """N-CREATE with ``uid`` as Affected SOP Instance UID (F.7.2.1.2)."""
    _require_context(assoc, MPPS_SOP_CLASS_UID)
    return _call(
        Operation.CREATE,
        timeout_s,
        lambda: assoc.send_n_create(attributes, MPPS_SOP_CLASS_UID, uid, msg_id=msg_id),
    )


def n_set(
    assoc: Association, uid: str, changes: Dataset, *, msg_id: int, timeout_s: float
) -> NResult:
    """N-SET of the modification list ``changes`` on the MPPS ``uid``."""
    _require_context(assoc, MPPS_SOP_CLASS_UID)
    return _call(
        Operation.UPDATE,
        timeout_s,
        lambda: assoc.send_n_set(changes, MPPS_SOP_CLASS_UID, uid, msg_id=msg_id),
    )


def n_get(
    assoc: Association, uid: str, tags: Sequence[int] | None, *, msg_id: int, timeout_s: float
) -> NResult:
    """N-GET (MPPS Retrieve SOP Class, F.8) of top-level ``tags``; ``None`` asks for all."""
    _require_context(assoc, MPPS_RETRIEVE_SOP_CLASS_UID)
    identifiers = [Tag(tag) for tag in tags] if tags else []
    return _call(
        Operation.RETRIEVE,
        timeout_s,
        lambda: assoc.send_n_get(identifiers, MPPS_RETRIEVE_SOP_CLASS_UID, uid, msg_id=msg_id),
    )


def accepts(assoc: Association, sop_class: str) -> bool:
    """True when ``assoc`` has an accepted presentation context for ``sop_class``."""
    return any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts)


def _require_context(assoc: Association, sop_class: str) -> None:
    if not accepts(assoc, sop_class):
        raise NotNegotiated(sop_class)


def _call(
    operation: Operation,
    timeout_s: float,
    send: Callable[[], tuple[Dataset, Dataset | None]],
) -> NResult:
    started = time.monotonic()
    try:
        status, attributes = send()
    except RuntimeError as exc:  # not established any more: nothing was sent
        raise outcomes.AssociationLost(
            "the association to the RIS was lost", upstream_detail=str(exc)
        ) from exc
    code = outcomes.status_code(status)
    if code is None:
        elapsed = time.monotonic() - started
        raise outcomes.no_response(operation, elapsed_s=elapsed, timeout_s=timeout_s)
    if outcomes.is_warning(code):
        return NResult(attributes, outcomes.warning_text(operation, status))
    if code != DimseStatus.SUCCESS:
        raise outcomes.failure(operation, status)
    return NResult(attributes)
