"""The ``dimse`` backend: DICOMweb requests served by an upstream DIMSE RIS (we are its SCU)."""

from gateway.backends.dimse.backend import DimseBackend

__all__ = ["DimseBackend"]
