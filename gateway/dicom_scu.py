"""Associations the gateway requests, kept from losing responses to a pynetdicom race.

In pynetdicom 3.0.4 a requestor association reads one message queue from two threads:
the thread in ``send_*()`` waiting for its answer, and the association's reactor, which
takes whatever it finds while it believes no ``send_*()`` is running and drops responses
as "unexpected". Its pause handshake (``_reactor_checkpoint`` / ``_is_paused``) has a gap
between back-to-back operations: the reactor, woken by the end of the previous
``send_*()`` but starved of the GIL, can run its one poll after the next ``send_*()`` has
sent its request. If the answer is already queued, the reactor takes it and the waiting
thread times out (an N-CREATE/N-SET "outcome unknown", a C-FIND pending response silently
missing). Seen under load about once in a few thousand operations; pynetdicom issue #875
reports the same symptom for C-FIND.

:func:`guard_responses` makes the reactor's non-blocking poll leave responses in the queue
while a ``send_*()`` waits for them (the checkpoint is cleared); the check and the take
happen under the queue's own lock, so they cannot interleave with the response's arrival.
Requests from the peer, and everything outside a ``send_*()``, are handled as before.
``tests/integration/test_dicom_scu.py`` forces the interleaving and checks pynetdicom still
has the internals used here.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.association import Association

_GUARDED = "_gateway_guarded"


def guard_responses(assoc: Association) -> Association:
    """Keep ``assoc``'s reactor from taking a response a ``send_*()`` waits for (idempotent)."""
    dimse = assoc.dimse
    if getattr(dimse, _GUARDED, False):
        return assoc
    waiting = dimse.get_msg
    pending = dimse.msg_queue

    def get_msg(block: bool = False) -> Any:
        if block:  # a send_*() waiting for its response
            return waiting(block=True)
        with pending.mutex:  # atomic with the DUL thread's put() of the response
            if not pending.queue:
                return None, None
            _, head = pending.queue[0]
            is_response = getattr(head, "MessageIDBeingRespondedTo", None) is not None
            if is_response and not assoc._reactor_checkpoint.is_set():
                return None, None  # the send_*() in progress takes it
            item = pending.queue.popleft()
            pending.not_full.notify()
            return item

    dimse.get_msg = get_msg  # type: ignore[method-assign]
    setattr(dimse, _GUARDED, True)
    return assoc
