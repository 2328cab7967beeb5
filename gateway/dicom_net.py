"""Socket tuning shared by every pynetdicom association the gateway makes or accepts.

DIMSE sends a command set and a data set as separate writes and then waits for the answer:
with Nagle's algorithm on, the second write waits for the peer's delayed ACK (~40 ms on
Linux), which made each N-CREATE/N-SET take ~70 ms on loopback instead of ~20 ms.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from pynetdicom import evt


def _set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: send small PDUs at once (TCP_NODELAY)."""
    transport = getattr(event.assoc.dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # the peer may already be gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLER: tuple[evt.NotificationEvent, Callable[[evt.Event], None]] = (
    evt.EVT_CONN_OPEN,
    _set_nodelay,
)
"""Add to ``evt_handlers`` of ``AE.start_server()`` and ``AE.associate()``."""
