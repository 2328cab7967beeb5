"""Association policy: who may associate, with what, and for how long.

Negotiation itself is pynetdicom's (PS3.8 7.1, 9.3.4): this module only configures the
Application Entity from ``[dimse]`` so that refusals carry the proper A-ASSOCIATE-RJ
result/source/reason, and logs every accept, reject, release and abort by AE title.

=====================================  ==========================================
Condition                              A-ASSOCIATE-RJ (result, source, reason)
=====================================  ==========================================
calling AE not in allowed list         rejected-permanent, service user, 3
called AE is not ours (``strict``)     rejected-permanent, service user, 7
``max_associations`` already active    rejected-transient, provider (presentation), 2
=====================================  ==========================================

A requested SOP Class we do not serve is refused per presentation context (result 3,
abstract syntax not supported), not by rejecting the association.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from gateway.logging import get_logger
from gateway.model.mpps import MPPS_RETRIEVE_SOP_CLASS_UID, MPPS_SOP_CLASS_UID
from gateway.settings import DimseSettings

log = get_logger("dimse.association")

TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
"""Explicit VR Little Endian first: preferred when an SCU offers both."""

VERIFICATION = UID("1.2.840.10008.1.1")
WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")  # Modality Worklist Information Model - FIND
MPPS = UID(MPPS_SOP_CLASS_UID)
MPPS_RETRIEVE = UID(MPPS_RETRIEVE_SOP_CLASS_UID)


def configure_ae(ae: AE, settings: DimseSettings) -> None:
    """Apply titles, timeouts, limits and the supported presentation contexts."""
    ae.ae_title = settings.ae_title
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.maximum_associations = settings.max_associations
    ae.require_called_aet = settings.called_ae_policy == "strict"
    ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    ae.add_supported_context(VERIFICATION, TRANSFER_SYNTAXES)
    ae.add_supported_context(WORKLIST_FIND, TRANSFER_SYNTAXES)
    # PS3.4 F.2.1: an MPPS SCU may propose role selection; accept it as SCU only.
    for sop_class in (MPPS, MPPS_RETRIEVE):
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES, scu_role=True, scp_role=False)


def calling_ae(assoc: Association) -> str:
    """The peer's AE title, stripped (what ``[dimse.peers.<AE>]`` is keyed by)."""
    return str(assoc.requestor.ae_title).strip()


def _peer(assoc: Association) -> dict[str, Any]:
    return {
        "calling_ae": calling_ae(assoc),
        "called_ae": str(assoc.acceptor.ae_title).strip(),
        "peer_address": assoc.requestor.address,
    }


def _on_accepted(event: evt.Event) -> None:
    assoc = event.assoc
    log.info(
        "association accepted",
        **_peer(assoc),
        contexts=len(assoc.accepted_contexts),
        refused_contexts=len(assoc.rejected_contexts),
    )


def _on_rejected(event: evt.Event) -> None:
    assoc = event.assoc
    primitive = assoc.acceptor.primitive
    requested = assoc.requestor.primitive
    details: dict[str, Any] = {"peer_address": assoc.requestor.address}
    if requested is not None:
        details["calling_ae"] = str(requested.calling_ae_title).strip()
        details["called_ae"] = str(requested.called_ae_title).strip()
    if primitive is not None:
        details.update(
            result=primitive.result_str,
            source=primitive.source_str,
            reason=primitive.reason_str,
        )
    log.warning("association rejected", **details)


def _on_released(event: evt.Event) -> None:
    log.info("association released", **_peer(event.assoc))


def _on_aborted(event: evt.Event) -> None:
    log.info("association aborted", **_peer(event.assoc))


def lifecycle_handlers() -> list[tuple[evt.EventType, Callable[..., Any]]]:
    """Notification handlers that log the association lifecycle."""
    return [
        (evt.EVT_ACCEPTED, _on_accepted),
        (evt.EVT_REJECTED, _on_rejected),
        (evt.EVT_RELEASED, _on_released),
        (evt.EVT_ABORTED, _on_aborted),
    ]
