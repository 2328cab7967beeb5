"""The DIMSE front: a pynetdicom Application Entity serving MWL and MPPS.

Threads: pynetdicom accepts on its own server thread and runs each association's handlers
on that association's thread. Handlers reach the async backend only through
:class:`gateway.dimse.bridge.Bridge`, i.e. the application's BlockingPortal.

:meth:`DimseFront.start` and :meth:`DimseFront.stop` are plain blocking methods; the
composition root calls them with ``anyio.to_thread.run_sync`` (never on the event loop,
since ``stop`` waits for operations that themselves need the event loop).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from anyio.from_thread import BlockingPortal
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from gateway import dicom_wire
from gateway.backends.base import Backend
from gateway.dicom_net import SOCKET_TUNING
from gateway.dimse.association import configure_ae, lifecycle_handlers
from gateway.dimse.bridge import Bridge
from gateway.dimse.charset import CharsetPolicy, check_peer_charsets
from gateway.dimse.handlers_echo import handle_echo
from gateway.dimse.handlers_find import CancelRegistry, FindService
from gateway.dimse.handlers_mpps import MppsService
from gateway.errors import UpstreamTimeout
from gateway.logging import get_logger
from gateway.settings import Settings

log = get_logger("dimse.server")

_AFTER_CANCEL_S = 5.0
"""How long handlers get to send their final status once the grace period ran out."""
_SEND_POLL_S = 0.01


class DimseFront:
    """MWL C-FIND, MPPS N-CREATE/N-SET/N-GET and C-ECHO over one backend.

    Raises :class:`gateway.errors.ConfigError` for a peer character set it cannot use.
    """

    def __init__(self, settings: Settings, backend: Backend, portal: BlockingPortal) -> None:
        self._settings = settings
        self._dimse = settings.dimse
        check_peer_charsets(settings.dimse.peers)
        self._bridge = Bridge(portal, settings.dimse.operation_timeout_s)
        charsets = CharsetPolicy(settings.dimse.peers)
        self._cancels = CancelRegistry()
        self._find = FindService(backend, self._bridge, charsets, self._cancels)
        self._mpps = MppsService(backend, self._bridge, charsets)
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        """The bound TCP port while running."""
        server = self._server
        return None if server is None else int(server.server_address[1])

    def _handlers(self) -> list[Any]:
        return [
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_FIND, self._find.handle),
            (evt.EVT_N_CREATE, self._mpps.handle_create),
            (evt.EVT_N_SET, self._mpps.handle_set),
            (evt.EVT_N_GET, self._mpps.handle_get),
            (evt.EVT_DIMSE_RECV, self._cancels.on_dimse_recv),
            (evt.EVT_DIMSE_SENT, self._mpps.on_sent),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            *SOCKET_TUNING,
            *lifecycle_handlers(),
        ]

    def _on_closed(self, event: evt.Event) -> None:
        """EVT_CONN_CLOSE: forget the association's cancels and unanswered operations."""
        self._cancels.on_closed(event)
        self._bridge.end_association(id(event.assoc))

    def start(self) -> int:
        """Bind and start accepting associations; returns the bound port (blocking)."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the DIMSE front is already running")
            dicom_wire.install()
            ae = AE(ae_title=self._dimse.ae_title)
            configure_ae(ae, self._dimse)
            server = ae.start_server(
                (self._dimse.host, self._dimse.port),
                block=False,
                evt_handlers=self._handlers(),
            )
            if server is None:  # pragma: no cover - only with block=True
                raise RuntimeError("pynetdicom did not return a server")
            self._ae, self._server = ae, server
        port = int(server.server_address[1])
        log.info(
            "DIMSE front started",
            host=self._dimse.host,
            port=port,
            ae_title=self._dimse.ae_title,
            called_ae_policy=self._dimse.called_ae_policy,
            max_associations=self._dimse.max_associations,
        )
        return port

    def stop(self, grace_s: float) -> None:
        """Stop accepting, let operations in flight finish within ``grace_s``, then close.

        1. the listening socket closes (peers now get "connection refused");
        2. operations in flight run to their final status; new requests on open
           associations are refused with Busy (A700 / 0213);
        3. peers get the rest of the grace period to release their associations;
        4. at the deadline, backend calls still running are cancelled (their operations
           answer with a failure: outcome unknown for writes) and every remaining
           association is aborted once its last response has left.

        Blocking (call it from a worker thread); idempotent.
        """
        with self._lock:
            ae, server = self._ae, self._server
            self._ae = self._server = None
        if ae is None or server is None:
            return
        started = time.monotonic()
        deadline = started + grace_s
        server.shutdown()
        drained = self._bridge.drain(max(0.0, deadline - time.monotonic()))
        if not drained:
            cancelled = self._bridge.cancel_all(
                lambda: UpstreamTimeout("shutdown grace period ended")
            )
            log.warning("grace period ended", cancelled_calls=cancelled)
            self._bridge.drain(_AFTER_CANCEL_S)
        for assoc in ae.active_associations:  # peers releasing on their own
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
        leftovers = ae.active_associations
        for assoc in leftovers:
            _wait_sent(assoc, _AFTER_CANCEL_S)
            assoc.abort(block=False)  # A-ABORT goes out after anything still queued
        for assoc in leftovers:
            assoc.join(timeout=_AFTER_CANCEL_S)
        ae.shutdown()  # kills whatever did not go away
        log.info(
            "DIMSE front stopped",
            drained=drained,
            aborted_associations=len(leftovers),
            duration_ms=round((time.monotonic() - started) * 1000),
        )


def _wait_sent(assoc: Association, timeout_s: float) -> None:
    """Wait until the association's outgoing PDU queue is empty (bounded).

    pynetdicom has no notification for this; polling only happens during shutdown.
    """
    deadline = time.monotonic() + timeout_s
    while not assoc.dul.to_provider_queue.empty() and time.monotonic() < deadline:
        time.sleep(_SEND_POLL_S)
