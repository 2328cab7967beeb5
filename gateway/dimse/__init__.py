"""The DIMSE front: MWL C-FIND, MPPS N-CREATE/N-SET/N-GET and C-ECHO for modalities.

See ``docs/dimse.md``. The composition root builds :class:`DimseFront` with the settings,
the configured backend and the application's BlockingPortal.
"""

from gateway.dimse.server import DimseFront

__all__ = ["DimseFront"]
