"""Modality Worklist C-FIND SCP (PS3.4 K.4.1.3, PS3.7 9.1.2, 9.3.2.3).

One pending response (FF00) per item, as the backend yields it, carrying exactly the
requested keys (``WorklistQuery.project``) plus Specific Character Set; then Success.
A C-CANCEL stops the backend stream and ends with Cancel (FE00). Any failure, expected or
not, ends with a status from the one table (A900/A700/Cxxx), never a dropped association.
FF01 is never sent: every key of the query is matched or returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_CANCEL_RQ
from pynetdicom.dimse_primitives import C_FIND

from gateway.backends.base import Backend
from gateway.dimse.association import calling_ae
from gateway.dimse.bridge import BackendStream, Bridge, Cancelled
from gateway.dimse.charset import CharsetPolicy, decode_dataset, received_dataset
from gateway.dimse.identifier import identifier_dataset
from gateway.dimse.responses import error_dataset, status_dataset, status_hex, unexpected
from gateway.errors import BadQuery, Busy, GatewayError, UpstreamBadResponse
from gateway.logging import get_logger
from gateway.model.query import WorklistQuery
from gateway.model.status import DimseStatus, Operation
from gateway.model.types import JsonDataset

log = get_logger("dimse.find")

FindResponse = tuple[int | Dataset, Dataset | None]

_MAX_EARLY_CANCELS = 64


@dataclass
class CancelRegistry:
    """Routes C-CANCEL-FIND-RQs (seen on the DUL thread) to the C-FIND they cancel.

    pynetdicom only records a C-CANCEL for polling; reacting to EVT_DIMSE_RECV instead
    lets a cancel interrupt a backend that is still waiting for its next result.
    """

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _streams: dict[tuple[int, int], BackendStream[JsonDataset]] = field(default_factory=dict)
    _early: set[tuple[int, int]] = field(default_factory=set)

    def on_dimse_recv(self, event: evt.Event) -> None:
        """EVT_DIMSE_RECV handler (DUL thread): cancel the matching C-FIND's stream."""
        message = event.message
        if not isinstance(message, C_CANCEL_RQ):
            return
        msg_id = int(message.command_set.MessageIDBeingRespondedTo)
        key = (id(event.assoc), msg_id)
        with self._lock:
            stream = self._streams.get(key)
            if stream is None and len(self._early) < _MAX_EARLY_CANCELS:
                self._early.add(key)  # the C-FIND handler has not started yet
        if stream is not None:
            stream.cancel()

    def on_closed(self, event: evt.Event) -> None:
        """EVT_CONN_CLOSE handler: forget what belonged to that association."""
        owner = id(event.assoc)
        with self._lock:
            self._early = {key for key in self._early if key[0] != owner}

    @contextmanager
    def watch(
        self, assoc: Association, msg_id: int, stream: BackendStream[JsonDataset]
    ) -> Iterator[None]:
        """Let C-CANCELs for ``msg_id`` on ``assoc`` cancel ``stream`` while inside."""
        key = (id(assoc), msg_id)
        with self._lock:
            early = key in self._early
            self._early.discard(key)
            self._streams[key] = stream
        if early:
            stream.cancel()
        try:
            yield
        finally:
            with self._lock:
                self._streams.pop(key, None)
                self._early.discard(key)


@dataclass(frozen=True)
class FindService:
    """EVT_C_FIND for the Modality Worklist Information Model - FIND."""

    backend: Backend
    bridge: Bridge
    charsets: CharsetPolicy
    cancels: CancelRegistry

    def handle(self, event: evt.Event) -> Iterator[FindResponse]:
        """Generator of (status, identifier) pairs, as pynetdicom expects.

        The operation counts as in flight until pynetdicom has taken the final status
        and dropped this generator, so a graceful stop never cuts that answer off.
        """
        msg_id = int(cast(C_FIND, event.request).MessageID or 0)
        key = (id(event.assoc), msg_id)
        try:
            self.bridge.begin(key)
        except Busy as exc:
            refused = self._failure(exc, calling_ae(event.assoc))
            log.info(
                "C-FIND",
                calling_ae=calling_ae(event.assoc),
                status=status_hex(int(refused.Status)),
                reason=refused.ErrorComment,
            )
            yield refused, None
            return
        try:
            yield from self._find(event, msg_id)
        finally:
            self.bridge.end(key)

    def _find(self, event: evt.Event, msg_id: int) -> Iterator[FindResponse]:
        assoc = event.assoc
        peer = calling_ae(assoc)
        started = time.monotonic()
        count = replaced = 0
        stream: BackendStream[JsonDataset] | None = None
        final: Dataset
        try:
            identifier = received_dataset(lambda: event.identifier, BadQuery)
            requested = decode_dataset(identifier, BadQuery)
            query = WorklistQuery.from_identifier(identifier)
            syntax = event.context.transfer_syntax
            encoding = (bool(syntax.is_implicit_VR), bool(syntax.is_little_endian))
            stream = self.bridge.open_stream(lambda: self.backend.search_worklist(query))
            with self.cancels.watch(assoc, msg_id, stream):
                for item in stream:
                    response, lossy = self._response(query, item, peer, requested, encoding)
                    count += 1
                    replaced += lossy
                    yield int(DimseStatus.PENDING), response
                    if event.is_cancelled:  # a cancel that raced the last response
                        raise Cancelled()
            final = status_dataset(DimseStatus.SUCCESS)
        except Cancelled:
            final = status_dataset(DimseStatus.CANCEL)
        except Exception as exc:
            final = self._failure(exc, peer)
        finally:
            if stream is not None:
                stream.close()  # the backend's generator is closed before the final status
        log.info(
            "C-FIND",
            calling_ae=peer,
            status=status_hex(int(final.Status)),
            results=count,
            duration_ms=round((time.monotonic() - started) * 1000),
            **({"reason": final.ErrorComment} if "ErrorComment" in final else {}),
            **({"replaced_values": replaced} if replaced else {}),
        )
        yield final, None

    @staticmethod
    def _failure(exc: Exception, peer: str) -> Dataset:
        final, _ = error_dataset(exc, Operation.FIND)
        if not isinstance(exc, GatewayError):
            log.error("C-FIND failed unexpectedly", calling_ae=peer, **unexpected(exc))
        return final

    def _response(
        self,
        query: WorklistQuery,
        item: JsonDataset,
        peer: str,
        requested: tuple[str, ...],
        encoding: tuple[bool, bool],
    ) -> tuple[Dataset, int]:
        """One pending identifier, and how many values lost characters to a peer charset.

        ``encoding`` (implicit VR, little endian) is the context's transfer syntax.
        """
        try:
            answer = self.charsets.answer(query.project(item), calling_ae=peer, requested=requested)
            implicit, little = encoding
            identifier = identifier_dataset(
                answer.item, answer.charset, implicit_vr=implicit, little_endian=little
            )
            return identifier, answer.replaced
        except GatewayError as exc:  # the backend's item, not the request, is at fault
            raise UpstreamBadResponse(f"a result cannot be encoded: {exc.message}") from exc
