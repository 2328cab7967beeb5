"""MPPS SCP (PS3.4 F.7: N-CREATE, N-SET) and MPPS Retrieve SCP (F.8: N-GET).

The MPPS rules live in :mod:`gateway.model.mpps` and the backend; this module decodes the
request, calls the backend through the bridge and answers with the status the one table
gives: 0106/0111/0112/0117/0120/0121, 0110 + Error ID A710 after a final state, 0116 for a
success the backend reports with warnings, 0001 when N-GET asked for attributes the MPPS
does not hold. An unexpected exception answers 0110; the association always survives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_messages import N_CREATE_RSP, N_GET_RSP, N_SET_RSP
from pynetdicom.dimse_primitives import N_CREATE, N_GET, N_SET

from gateway.backends.base import Backend, MppsResult
from gateway.dimse.association import calling_ae
from gateway.dimse.bridge import Bridge, OperationKey
from gateway.dimse.charset import (
    SPECIFIC_CHARACTER_SET,
    SPECIFIC_CHARACTER_SET_KEY,
    CharsetPolicy,
    apply_charset,
    charset_terms,
    decode_dataset,
    received_dataset,
)
from gateway.dimse.responses import error_dataset, status_dataset, status_hex, unexpected
from gateway.errors import GatewayError, InvalidAttributeValue
from gateway.logging import get_logger
from gateway.model.dicom_json import dataset_to_json, json_to_dataset
from gateway.model.mpps import missing_requested, select_attributes
from gateway.model.status import DimseStatus, Operation
from gateway.model.types import JsonDataset
from gateway.model.uids import generate_uid, validate_uid

log = get_logger("dimse.mpps")

NResponse = tuple[Dataset, Dataset | None]


def _warning_status(result: MppsResult) -> Dataset:
    """Success, or 0116 with the backend's first warning as comment."""
    if result.warnings:
        return status_dataset(DimseStatus.ATTRIBUTE_VALUE_OUT_OF_RANGE, result.warnings[0])
    return status_dataset(DimseStatus.SUCCESS)


def _attributes(read: Callable[[], Dataset | None]) -> JsonDataset:
    """A request's data set as DICOM JSON, decoded by its own Specific Character Set."""
    ds = received_dataset(read, InvalidAttributeValue)
    decode_dataset(ds, InvalidAttributeValue)
    return dataset_to_json(ds)


_RESPONSES = (N_CREATE_RSP, N_SET_RSP, N_GET_RSP)


def operation_key(event: evt.Event) -> OperationKey:
    """The in-flight key of the N-* request ``event`` handles."""
    return (id(event.assoc), int(cast(N_CREATE | N_SET | N_GET, event.request).MessageID or 0))


@dataclass(frozen=True)
class MppsService:
    """EVT_N_CREATE, EVT_N_SET and EVT_N_GET handlers over one backend."""

    backend: Backend
    bridge: Bridge
    charsets: CharsetPolicy

    def on_sent(self, event: evt.Event) -> None:
        """EVT_DIMSE_SENT: an N-* response went to the DUL, the operation has answered.

        Ending the operation here rather than when a handler returns keeps a graceful stop
        from aborting the association between the handler and pynetdicom's send.
        """
        message = event.message
        if isinstance(message, _RESPONSES):
            responded_to = int(message.command_set.MessageIDBeingRespondedTo)
            self.bridge.end((id(event.assoc), responded_to))

    def handle_create(self, event: evt.Event) -> NResponse:
        """N-CREATE; a missing Affected SOP Instance UID is generated and returned."""
        started = time.monotonic()
        requested_uid = cast(N_CREATE, event.request).AffectedSOPInstanceUID
        uid = str(requested_uid) if requested_uid else generate_uid()
        reply: Dataset | None = None
        try:
            self.bridge.begin(operation_key(event))
            attributes = _attributes(lambda: event.attribute_list)
            # No pre-check here: every backend checks a create with the same rules
            # (gateway.model.mpps) before any work, so the statuses are as precise, and
            # checking twice cost as much as the rest of the request.
            result = self.bridge.call(self.backend.create_mpps, uid, attributes)
            status = _warning_status(result)
        except Exception as exc:
            status = self._failure(exc, Operation.CREATE, "N-CREATE", event, uid)
        code = int(status.Status)
        if not requested_uid and code in (
            DimseStatus.SUCCESS,
            DimseStatus.ATTRIBUTE_VALUE_OUT_OF_RANGE,
        ):
            # PS3.7 10.1.5.1.4: the SCP-assigned UID goes back in the response.
            status.AffectedSOPInstanceUID = uid
            if code == DimseStatus.SUCCESS:
                reply = Dataset()
                reply.AffectedSOPInstanceUID = uid  # pynetdicom moves it to the command
        self._log("N-CREATE", event, uid, status, started, generated_uid=not requested_uid)
        return status, reply

    def handle_set(self, event: evt.Event) -> NResponse:
        """N-SET of the MPPS named by Requested SOP Instance UID."""
        started = time.monotonic()
        uid = str(cast(N_SET, event.request).RequestedSOPInstanceUID or "")
        try:
            self.bridge.begin(operation_key(event))
            validate_uid(uid)
            changes = _attributes(lambda: event.modification_list)
            result = self.bridge.call(self.backend.update_mpps, uid, changes)
            status = _warning_status(result)
        except Exception as exc:
            status = self._failure(exc, Operation.UPDATE, "N-SET", event, uid)
        self._log("N-SET", event, uid, status, started)
        return status, None

    def handle_get(self, event: evt.Event) -> NResponse:
        """N-GET honouring the Attribute Identifier List (empty = all attributes)."""
        started = time.monotonic()
        uid = str(cast(N_GET, event.request).RequestedSOPInstanceUID or "")
        reply: Dataset | None = None
        try:
            self.bridge.begin(operation_key(event))
            validate_uid(uid)
            wanted = [int(tag) for tag in event.attribute_identifiers]
            # (0008,0005) is ours to set; the stored one is needed to choose it.
            tags = [t for t in wanted if t != SPECIFIC_CHARACTER_SET] if wanted else None
            backend_tags = None if tags is None else [*tags, SPECIFIC_CHARACTER_SET]
            result = self.bridge.call(self.backend.retrieve_mpps, uid, backend_tags)
            stored = result.dataset
            dataset = select_attributes(stored, tags)
            missing = missing_requested(stored, tags)
            reply = self._encode(dataset, stored, calling_ae(event.assoc))
            if missing:
                status = status_dataset(DimseStatus.ATTRIBUTE_NOT_SUPPORTED_WARNING)
            else:
                status = status_dataset(DimseStatus.SUCCESS)
        except Exception as exc:
            reply = None
            status = self._failure(exc, Operation.RETRIEVE, "N-GET", event, uid)
        self._log("N-GET", event, uid, status, started)
        return status, reply

    def _encode(self, dataset: JsonDataset, stored: JsonDataset, peer: str) -> Dataset:
        """The N-GET attribute list in the peer's or the stored character set, else UTF-8."""
        stored_charset = stored.get(SPECIFIC_CHARACTER_SET_KEY, {}).get("Value")
        answer = self.charsets.answer(
            dataset, calling_ae=peer, requested=charset_terms(stored_charset)
        )
        if answer.replaced:
            log.info(
                "characters replaced for peer charset", calling_ae=peer, values=answer.replaced
            )
        return apply_charset(json_to_dataset(answer.item), answer.charset)

    def _failure(
        self, exc: Exception, operation: Operation, name: str, event: evt.Event, uid: str
    ) -> Dataset:
        status, _ = error_dataset(exc, operation)
        if not isinstance(exc, GatewayError):
            details = {"calling_ae": calling_ae(event.assoc), "mpps_uid": uid}
            log.error(f"{name} failed unexpectedly", **details, **unexpected(exc))
        return status

    def _log(
        self,
        name: str,
        event: evt.Event,
        uid: str,
        status: Dataset,
        started: float,
        **extra: Any,
    ) -> None:
        if "ErrorComment" in status:
            extra["reason"] = status.ErrorComment
        log.info(
            name,
            calling_ae=calling_ae(event.assoc),
            mpps_uid=uid,
            status=status_hex(int(status.Status)),
            duration_ms=round((time.monotonic() - started) * 1000),
            **extra,
        )
