"""Verification SCP (C-ECHO, PS3.4 Annex A): answers Success without touching the backend.

C-ECHO is how a modality checks the connection; it must work even while the backend is
slow or the gateway is draining, so it deliberately does not go through the bridge.
"""

from __future__ import annotations

from pynetdicom import evt

from gateway.dimse.association import calling_ae
from gateway.logging import get_logger
from gateway.model.status import DimseStatus

log = get_logger("dimse.echo")


def handle_echo(event: evt.Event) -> int:
    """EVT_C_ECHO: always Success."""
    log.debug("C-ECHO", calling_ae=calling_ae(event.assoc))
    return int(DimseStatus.SUCCESS)
