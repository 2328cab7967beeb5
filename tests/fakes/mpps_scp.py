"""RIS stand-ins for the ``dimse`` backend's tests: a pynetdicom SCP and DCMTK's wlmscpfs.

:class:`FakeRis` is a pynetdicom MPPS (N-CREATE/N-SET), MPPS Retrieve (N-GET) and MWL
C-FIND SCP. :class:`Wlmscpfs` runs ``/usr/bin/wlmscpfs``; :func:`findscu` queries it
directly for reference answers.

Plays a well-behaved MPPS SCP by default (0111 for a duplicate, 0112 for an unknown UID,
0110 + A710 for an update of a final MPPS) and can be told to misbehave, for fault tests:

* ``statuses[op] = status`` answers ``op`` ("create", "set", "get", "find") with that
  status (an int, or a status Dataset carrying Error Comment / Error ID);
* ``hold(op)`` makes ``op`` wait until :meth:`release` (a RIS slower than the timeout);
* ``abort_after[op] = n`` aborts the association after ``n`` pending C-FIND responses
  (or at once for N-* operations);
* ``worklist`` lists the Datasets C-FIND returns (no matching: fault tests only), each
  with ``pending_status``;
* ``network_timeout_s`` drops idle associations, like a RIS with an idle timeout.

Every request is recorded in :attr:`received` so tests can check what reached the RIS.
Bound to 127.0.0.1 port 0; :attr:`port` is the real one.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.dimse_primitives import N_CREATE, N_GET, N_SET
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityPerformedProcedureStepRetrieve,
    ModalityWorklistInformationFind,
    Verification,
)

from gateway.model.status import MPPS_FINAL_COMMENT, DimseStatus, ErrorId

FINAL_STATES = ("COMPLETED", "DISCONTINUED")

Status = int | Dataset


@dataclass
class Received:
    """One request as the RIS saw it."""

    op: str
    uid: str | None
    dataset: Dataset | None
    tags: list[int] = field(default_factory=list)
    calling_ae: str = ""


def status_dataset(
    status: int, *, comment: str | None = None, error_id: int | None = None
) -> Dataset:
    """A status Dataset with optional Error Comment (0000,0902) and Error ID (0000,0903)."""
    ds = Dataset()
    ds.Status = status
    if comment is not None:
        ds.ErrorComment = comment
    if error_id is not None:
        ds.ErrorID = error_id
    return ds


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom's value checks warn on reading test data as it is; a RIS just keeps it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class FakeRis:
    """The SCP; use as a context manager or call :meth:`start`/:meth:`stop`."""

    def __init__(
        self,
        ae_title: str = "FAKE_RIS",
        *,
        offer_retrieve: bool = True,
        offer_mpps: bool = True,
        offer_find: bool = True,
        network_timeout_s: float | None = None,
        require_calling_aet: tuple[str, ...] = (),
    ) -> None:
        self.ae_title = ae_title
        self.pending_status: int = DimseStatus.PENDING  # FF01 to say "keys not supported"
        self.store: dict[str, Dataset] = {}
        self.received: list[Received] = []
        self.statuses: dict[str, Status] = {}
        self.abort_after: dict[str, int] = {}
        self.worklist: list[Dataset] = []
        self.cancels = 0
        self.associations = 0
        self._held: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = list(require_calling_aet)
        ae.maximum_associations = 64
        ae.network_timeout = network_timeout_s
        ae.dimse_timeout = 30
        contexts = [Verification]
        if offer_mpps:
            contexts.append(ModalityPerformedProcedureStep)
        if offer_retrieve:
            contexts.append(ModalityPerformedProcedureStepRetrieve)
        if offer_find:
            contexts.append(ModalityWorklistInformationFind)
        for uid in contexts:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        self._ae = ae
        self._server: Any = None
        self.port = 0

    # -- control ---------------------------------------------------------------------------

    def start(self) -> FakeRis:
        handlers: list[Any] = [
            (evt.EVT_N_CREATE, self._on_create),
            (evt.EVT_N_SET, self._on_set),
            (evt.EVT_N_GET, self._on_get),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_ECHO, lambda event: DimseStatus.SUCCESS),
            (evt.EVT_ESTABLISHED, self._on_established),
        ]
        self._server = self._ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> FakeRis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold(self, op: str) -> None:
        """Make ``op`` wait until :meth:`release`."""
        self._held[op] = threading.Event()

    def release(self) -> None:
        """Let every held operation go on."""
        for event in self._held.values():
            event.set()
        self._held.clear()

    def ops(self, op: str) -> list[Received]:
        """The received requests of kind ``op``."""
        with self._lock:
            return [r for r in self.received if r.op == op]

    # -- handlers (pynetdicom's association threads) ------------------------------------------

    def _on_established(self, event: Event) -> None:
        with self._lock:
            self.associations += 1

    def _record(
        self, event: Event, op: str, uid: str | None, ds: Dataset | None, **kw: Any
    ) -> None:
        with self._lock:
            self.received.append(
                Received(op, uid, ds, calling_ae=event.assoc.requestor.ae_title, **kw)
            )

    def _gate(self, event: Event, op: str) -> bool:
        """Wait while held; abort if told to. False means: do not answer."""
        held = self._held.get(op)
        if held is not None:
            held.wait(60)
        if self.abort_after.get(op) == 0:
            event.assoc.abort()
            return False
        return True

    def _on_create(self, event: Event) -> tuple[Status, Dataset | None]:
        req = cast(N_CREATE, event.request)
        uid = str(req.AffectedSOPInstanceUID)
        ds = event.attribute_list
        self._record(event, "create", uid, ds)
        if not self._gate(event, "create"):
            return DimseStatus.PROCESSING_FAILURE, None
        if "create" in self.statuses:
            return self.statuses["create"], None
        with self._lock:
            if uid in self.store:
                return DimseStatus.DUPLICATE_SOP_INSTANCE, None
            self.store[uid] = copy.deepcopy(ds)  # N-SETs change the copy, not the record
        return DimseStatus.SUCCESS, ds

    def _on_set(self, event: Event) -> tuple[Status, Dataset | None]:
        req = cast(N_SET, event.request)
        uid = str(req.RequestedSOPInstanceUID)
        mods = event.modification_list
        self._record(event, "set", uid, mods)
        if not self._gate(event, "set"):
            return DimseStatus.PROCESSING_FAILURE, None
        if "set" in self.statuses:
            return self.statuses["set"], None
        with self._lock, quiet_pydicom():
            stored = self.store.get(uid)
            if stored is None:
                return DimseStatus.NO_SUCH_SOP_INSTANCE, None
            if str(stored.get("PerformedProcedureStepStatus", "")) in FINAL_STATES:
                return status_dataset(
                    DimseStatus.PROCESSING_FAILURE,
                    comment=MPPS_FINAL_COMMENT,
                    error_id=ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED,
                ), None
            for elem in mods:
                stored[elem.tag] = elem
        return DimseStatus.SUCCESS, mods

    def _on_get(self, event: Event) -> tuple[Status, Dataset | None]:
        req = cast(N_GET, event.request)
        uid = str(req.RequestedSOPInstanceUID)
        listed = req.AttributeIdentifierList
        if listed is None:
            tags: list[int] = []
        elif isinstance(listed, int):  # pynetdicom makes a one-tag list a single tag
            tags = [int(listed)]
        else:
            tags = [int(t) for t in listed]
        self._record(event, "get", uid, None, tags=tags)
        if not self._gate(event, "get"):
            return DimseStatus.PROCESSING_FAILURE, None
        if "get" in self.statuses:
            return self.statuses["get"], None
        with self._lock, quiet_pydicom():
            stored = self.store.get(uid)
            if stored is None:
                return DimseStatus.NO_SUCH_SOP_INSTANCE, None
            out = Dataset()
            for elem in stored:
                if not tags or int(elem.tag) in tags:
                    out.add(elem)
            if "SpecificCharacterSet" in stored:
                out.SpecificCharacterSet = stored.SpecificCharacterSet
        return DimseStatus.SUCCESS, out

    def _on_find(self, event: Event) -> Iterator[tuple[Status, Dataset | None]]:
        self._record(event, "find", None, event.identifier)
        held = self._held.get("find")
        if held is not None:
            held.wait(60)
        if "find" in self.statuses:
            yield self.statuses["find"], None
            return
        limit = self.abort_after.get("find")
        for sent, item in enumerate(self.worklist):
            if limit is not None and sent >= limit:
                event.assoc.abort()
                return
            if event.is_cancelled:
                with self._lock:
                    self.cancels += 1
                yield DimseStatus.CANCEL, None
                return
            yield self.pending_status, item
        if limit is not None:
            event.assoc.abort()
            return
        yield DimseStatus.SUCCESS, None


# wlmscpfs helpers live in tests/fakes/dcmtk.py; re-exported for existing imports.
from tests.fakes.dcmtk import (  # noqa: E402
    WLMSCPFS_MATCHING_KEYS,
    Wlmscpfs,
    findscu,
    free_port,
    wait_listening,
    write_big_worklist,
)

__all__ = [
    "WLMSCPFS_MATCHING_KEYS",
    "FakeRis",
    "Wlmscpfs",
    "findscu",
    "free_port",
    "status_dataset",
    "wait_listening",
    "write_big_worklist",
]
